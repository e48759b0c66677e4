//! `optical ot …`: the kernels on `.npy` files.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, Subcommand};

use crate::backend::{Backend, BackendKind};
use crate::error::{Error, Result};
use crate::io::npy;
use crate::ot::problem::{narrow_rows, Embeddings, PackedDocs, Problem, SinkhornParams};
use crate::ot::sinkhorn::SinkhornOutput;

#[derive(Debug, Args)]
pub struct OtArgs {
    #[command(subcommand)]
    pub command: OtCommand,
}

// No doc comments on the variants: each subcommand's help is its arguments' struct's (clap
// takes a variant's doc over the struct's, and would hide the files and shapes).
#[derive(Debug, Subcommand)]
pub enum OtCommand {
    Solve(SolveArgs),
    Cost(CostArgs),
    Maxsim(MaxsimArgs),
}

#[derive(Debug, Args)]
pub struct BackendArg {
    /// Backend: cpu (fast path), cpu-reference (f64), wgpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub backend: String,
}

impl BackendArg {
    fn open(&self) -> Result<Backend> {
        Backend::new(self.backend.parse::<BackendKind>()?)
    }
}

/// Solve batched entropic OT (log-domain Sinkhorn) from a cost or from embeddings.
///
/// Give either a cost (--cost, shape (b,n,m) or (n,m), f32 or f64, with optional weights
/// --a (b,n)/(n,) and --b (b,m)/(m,), uniform when omitted; zero weight = padding), or
/// embeddings (--x (b,n,d)/(n,d) and --y (b,m,d)/(m,d), with optional integer
/// --x-lengths/--y-lengths (b,); the cost is 1 − cos and the weights uniform over real
/// tokens). Writes plan.npy (f32, the cost's rank), f.npy, g.npy, cost.npy,
/// iterations.npy, converged.npy and marginal_error.npy into --out, then prints a one-line
/// JSON summary.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct SolveArgs {
    /// Cost matrices, (b,n,m) or (n,m).
    #[arg(long, conflicts_with_all = ["x", "y"], required_unless_present_any = ["x", "y"])]
    pub cost: Option<PathBuf>,
    /// Row weights, (b,n) or (n,); uniform when omitted. Each pair's weights are scaled to
    /// sum to 1 (as --b's: the plan's mass is 1 whatever the two sums were); 0 marks
    /// padding.
    #[arg(long, requires = "cost", conflicts_with_all = ["x", "y"])]
    pub a: Option<PathBuf>,
    /// Column weights, (b,m) or (m,); uniform when omitted; scaled to sum 1 per pair.
    #[arg(long, requires = "cost", conflicts_with_all = ["x", "y"])]
    pub b: Option<PathBuf>,
    /// Row embeddings, (b,n,d) or (n,d).
    #[arg(long, requires = "y")]
    pub x: Option<PathBuf>,
    /// Column embeddings, (b,m,d) or (m,d).
    #[arg(long, requires = "x")]
    pub y: Option<PathBuf>,
    /// Real rows per pair, integer (b,); rows past it are padding (ignored, but like every
    /// row they must be finite: a NaN anywhere in the file is an error).
    #[arg(long, requires = "x", conflicts_with = "cost")]
    pub x_lengths: Option<PathBuf>,
    /// Real columns per pair, integer (b,).
    #[arg(long, requires = "y", conflicts_with = "cost")]
    pub y_lengths: Option<PathBuf>,
    /// Entropic regularisation ε (> 0).
    #[arg(long, default_value_t = 0.05, allow_negative_numbers = true)]
    pub epsilon: f64,
    /// Iteration cap per pair.
    #[arg(long, default_value_t = 1000, allow_negative_numbers = true)]
    pub max_iterations: usize,
    /// Convergence threshold on the L1 row-marginal error.
    #[arg(long, default_value_t = 1e-6, allow_negative_numbers = true)]
    pub threshold: f64,
    /// Test convergence every this many iterations.
    #[arg(long, default_value_t = 10, allow_negative_numbers = true)]
    pub check_every: usize,
    #[command(flatten)]
    pub backend: BackendArg,
    /// Also time the host-side phases of the solve (copies to and from the device, waits,
    /// solver steps, the f64 plan; they nest) into `host_phases` of the summary line.
    #[arg(long)]
    pub phases: bool,
    /// Output directory (created; files in it are replaced).
    #[arg(long)]
    pub out: PathBuf,
}

/// Pairwise cosine cost 1 − cos(x_i, y_j) of embedding batches.
///
/// C[p,i,j] = 1 − cos(x[p,i], y[p,j]), 0 on padding. Inputs (b,n,d)/(b,m,d) or
/// (n,d)/(m,d); output f32 (b,n,m) or (n,m).
#[derive(Debug, Args)]
pub struct CostArgs {
    /// Row embeddings, (b,n,d) or (n,d), f32 or f64.
    #[arg(long)]
    pub x: PathBuf,
    /// Column embeddings, (b,m,d) or (m,d).
    #[arg(long)]
    pub y: PathBuf,
    /// Real rows per pair, integer (b,); rows past it are padding (cost 0; like every row
    /// they must be finite).
    #[arg(long)]
    pub x_lengths: Option<PathBuf>,
    /// Real columns per pair, integer (b,).
    #[arg(long)]
    pub y_lengths: Option<PathBuf>,
    #[command(flatten)]
    pub backend: BackendArg,
    /// Output .npy file.
    #[arg(long)]
    pub out: PathBuf,
}

/// MaxSim late-interaction scores of queries against packed documents.
///
/// For each query and document, the sum over query tokens of the best
/// cosine against the document's tokens. Queries (q,n,d) or (n,d) with optional lengths;
/// documents packed as (tokens,d) with integer --doc-lengths (documents,). Output f32
/// (q, documents) or (documents,).
#[derive(Debug, Args)]
pub struct MaxsimArgs {
    /// Query token embeddings, (q,n,d) or (n,d), f32 or f64.
    #[arg(long)]
    pub queries: PathBuf,
    /// Real tokens per query, integer (q,); tokens past it are padding.
    #[arg(long)]
    pub query_lengths: Option<PathBuf>,
    /// Document token embeddings packed one document after another, (tokens,d).
    #[arg(long)]
    pub docs: PathBuf,
    /// Tokens per document, integer (documents,), summing to the rows of --docs.
    #[arg(long)]
    pub doc_lengths: PathBuf,
    #[command(flatten)]
    pub backend: BackendArg,
    /// Output .npy file.
    #[arg(long)]
    pub out: PathBuf,
}

/// The files `ot solve` writes into its output directory.
const SOLVE_OUTPUTS: [&str; 7] = [
    "plan.npy",
    "f.npy",
    "g.npy",
    "cost.npy",
    "iterations.npy",
    "converged.npy",
    "marginal_error.npy",
];

pub fn run(args: OtArgs) -> Result<()> {
    match args.command {
        OtCommand::Solve(a) => solve(a),
        OtCommand::Cost(a) => cost(a),
        OtCommand::Maxsim(a) => maxsim(a),
    }
}

/// A float array and whether it had the batch axis.
struct Loaded {
    shape: Vec<usize>,
    values: Vec<f64>,
}

fn load(path: &Path, ranks: &[usize], what: &str) -> Result<Loaded> {
    let arr = npy::read(path)?;
    if !ranks.contains(&arr.shape.len()) {
        return Err(Error::shape(
            path.display().to_string(),
            what.to_string(),
            format!("{:?} (rank {})", arr.shape, arr.shape.len()),
        ));
    }
    // The values in f64, beside the file's bytes.
    crate::backend::check_output_memory(
        &path.display().to_string(),
        &format!("{:?} in f64", arr.shape),
        [arr.shape.iter().product(), 8, 1, 1],
    )?;
    Ok(Loaded {
        values: arr.to_f64(),
        shape: arr.shape,
    })
}

fn load_lengths(path: &Path, batch: usize, max: usize) -> Result<Vec<usize>> {
    let arr = npy::read(path)?;
    let ok_shape = match arr.shape.as_slice() {
        [b] => *b == batch,
        [] => batch == 1,
        _ => false,
    };
    if !ok_shape {
        return Err(Error::shape(
            path.display().to_string(),
            format!("({batch},), one length per set"),
            format!("{:?}", arr.shape),
        ));
    }
    arr.to_i64(path)?
        .into_iter()
        .enumerate()
        .map(|(p, v)| {
            if v < 1 || v as usize > max {
                Err(Error::value(
                    path.display().to_string(),
                    format!("set {p} has length {v}; expected 1..={max}"),
                ))
            } else {
                Ok(v as usize)
            }
        })
        .collect()
}

/// Both embedding files batched `(b, n, d)` or both single `(n, d)`.
fn check_same_rank(x: &Path, y: &Path, x_batched: bool, y_batched: bool) -> Result<()> {
    if x_batched == y_batched {
        return Ok(());
    }
    let rank = |batched: bool| if batched { "rank 3" } else { "rank 2" };
    Err(Error::shape(
        y.display().to_string(),
        format!("the same rank as {} ({})", x.display(), rank(x_batched)),
        rank(y_batched),
    ))
}

/// Embeddings from a (b,n,d) or (n,d) file; returns them and whether the batch axis was
/// present.
fn load_embeddings(path: &Path, lengths: Option<&Path>) -> Result<(Embeddings, bool)> {
    let arr = load(path, &[2, 3], "(b, n, d) or (n, d)")?;
    let batched = arr.shape.len() == 3;
    let (b, n, d) = if batched {
        (arr.shape[0], arr.shape[1], arr.shape[2])
    } else {
        (1, arr.shape[0], arr.shape[1])
    };
    if b == 0 || n == 0 || d == 0 {
        // Before the lengths: a length file cannot be right for an empty array, and the
        // complaint belongs to the embeddings.
        return Err(Error::shape(
            path.display().to_string(),
            "(b, n, d) or (n, d) with every dimension at least 1",
            format!("{:?}", arr.shape),
        ));
    }
    let lengths = lengths.map(|p| load_lengths(p, b, n)).transpose()?;
    let real = |r: usize| lengths.as_ref().is_none_or(|l| r % n < l[r / n]);
    let values = narrow_rows("embeddings", &arr.values, d, batched.then_some(n), real)
        .map_err(|e| e.in_file(path))?;
    let e = Embeddings::new("embeddings", b, n, d, values, lengths).map_err(|e| e.in_file(path))?;
    Ok((e, batched))
}

fn solve(args: SolveArgs) -> Result<()> {
    let params = SinkhornParams {
        epsilon: args.epsilon,
        max_iterations: args.max_iterations,
        threshold: args.threshold,
        check_every: args.check_every,
    };
    params.validate()?;
    crate::io::check_output_dir(&args.out)?;
    let inputs = [
        args.cost.as_deref(),
        args.a.as_deref(),
        args.b.as_deref(),
        args.x.as_deref(),
        args.y.as_deref(),
        args.x_lengths.as_deref(),
        args.y_lengths.as_deref(),
    ];
    for name in SOLVE_OUTPUTS {
        crate::io::check_not_input(&args.out.join(name), &inputs)?;
    }
    let backend = args.backend.open()?;
    crate::phases::set_enabled(args.phases);
    // `seconds` in the summary times the solve (cost from embeddings included), not file I/O.
    let start: Instant;
    // The problem solved from a cost file, kept for the hint when pairs do not converge.
    let mut from_cost: Option<Problem> = None;
    let (out, batched) = match (&args.cost, &args.x, &args.y) {
        (Some(cost_path), _, _) => {
            let c = load(cost_path, &[2, 3], "(b, n, m) or (n, m)")?;
            let batched = c.shape.len() == 3;
            let (b, n, m) = if batched {
                (c.shape[0], c.shape[1], c.shape[2])
            } else {
                (1, c.shape[0], c.shape[1])
            };
            let weights = |path: &Option<PathBuf>, len: usize| -> Result<Option<Vec<f64>>> {
                let Some(path) = path else { return Ok(None) };
                let w = load(path, &[1, 2], "(b, len) or (len,)")?;
                let want: &[usize] = if batched { &[b, len] } else { &[len] };
                if w.shape != want {
                    return Err(Error::shape(
                        path.display().to_string(),
                        format!("{want:?} to match the cost {:?}", c.shape),
                        format!("{:?}", w.shape),
                    ));
                }
                Ok(Some(w.values))
            };
            let a = weights(&args.a, n)?;
            let bw = weights(&args.b, m)?;
            let problem = Problem::new(b, n, m, c.values, a, bw).map_err(|e| match &e {
                Error::Value { context, .. } if context == "a" => {
                    e.in_file(args.a.as_deref().unwrap_or(cost_path))
                }
                Error::Value { context, .. } if context == "b" => {
                    e.in_file(args.b.as_deref().unwrap_or(cost_path))
                }
                _ => e.in_file(cost_path),
            })?;
            start = Instant::now();
            let out = backend.sinkhorn(&problem, &params)?;
            from_cost = Some(problem);
            (out, batched)
        }
        (None, Some(xp), Some(yp)) => {
            let (x, bx) = load_embeddings(xp, args.x_lengths.as_deref())?;
            let (y, by) = load_embeddings(yp, args.y_lengths.as_deref())?;
            check_same_rank(xp, yp, bx, by)?;
            if x.b != y.b || x.d != y.d {
                return Err(Error::shape(
                    yp.display().to_string(),
                    format!(
                        "(b, m, d) with b = {} and d = {} to match {}",
                        x.b,
                        x.d,
                        xp.display()
                    ),
                    format!("batch {} and d = {}", y.b, y.d),
                ));
            }
            start = Instant::now();
            (backend.sinkhorn_embeddings(&x, &y, &params)?, bx)
        }
        _ => {
            return Err(Error::parameter(
                "input",
                "--cost, or both --x and --y",
                "neither",
            ))
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    // Loading the inputs ran no phase, so these are the solve's.
    let host_phases: Vec<serde_json::Value> = crate::phases::take()
        .into_iter()
        .map(|(phase, seconds)| serde_json::json!({"phase": phase, "seconds": seconds}))
        .collect();

    let (b, n, m) = (out.pairs, out.n, out.m);
    let lead: &[usize] = if batched { &[b] } else { &[] };
    let with = |tail: &[usize]| -> Vec<usize> { lead.iter().chain(tail).copied().collect() };
    let plan: Vec<f32> = out.plan.iter().map(|&v| v as f32).collect();
    let iterations: Vec<i32> = out.iterations.iter().map(|&v| v as i32).collect();
    // The files below are SOLVE_OUTPUTS.
    crate::io::write_dir(&args.out, |dir| {
        npy::write(&dir.join("plan.npy"), &with(&[n, m]), &plan)?;
        npy::write(&dir.join("f.npy"), &with(&[n]), &out.f)?;
        npy::write(&dir.join("g.npy"), &with(&[m]), &out.g)?;
        npy::write(&dir.join("cost.npy"), lead, &out.cost)?;
        npy::write(&dir.join("iterations.npy"), lead, &iterations)?;
        npy::write_bool(&dir.join("converged.npy"), lead, &out.converged)?;
        npy::write(&dir.join("marginal_error.npy"), lead, &out.marginal_error)?;
        Ok(())
    })?;
    let mut summary = serde_json::json!({
        "backend": backend.kind().name(),
        "pairs": b,
        "n": n,
        "m": m,
        "converged": out.converged_count(),
        "max_marginal_error": out.max_marginal_error(),
        "max_iterations_run": out.iterations.iter().max().copied().unwrap_or(0),
        "seconds": seconds,
        "out": args.out.display().to_string(),
    });
    if args.phases {
        summary["host_phases"] = serde_json::Value::Array(host_phases);
    }
    outln!("{summary}");
    // How far the cost's entries spread, read once for both warnings (1 − cos from
    // embeddings lies in [0, 2]).
    let spread = from_cost.as_ref().map_or(2.0, Problem::cost_spread);
    let from_embeddings = from_cost.is_none();
    if let Some(warning) =
        convergence_warning(&out, &params, spread, from_embeddings, backend.kind())
    {
        errln!("{warning}");
    }
    if let Some(warning) = potentials_warning(&params, spread, backend.kind()) {
        errln!("{warning}");
    }
    Ok(())
}

/// The `f32` backends keep the potentials in units of ε, so `f.npy` and `g.npy` carry an
/// absolute error of about ε · 6e-8: at an ε far above the cost's range that is more than
/// the range, and the potentials say nothing (the plan is fine). Said, not refused.
fn potentials_warning(
    params: &SinkhornParams,
    spread: f64,
    backend: BackendKind,
) -> Option<String> {
    if backend == BackendKind::CpuReference {
        return None;
    }
    let error = params.epsilon * f32::EPSILON as f64;
    (spread > 0.0 && error > 0.1 * spread).then(|| {
        format!(
            "warning: at ε = {:e} the potentials f.npy and g.npy of this f32 backend carry \
             errors of about {error:.1e} (ε × 1.2e-7), more than a tenth of the cost's range \
             ({spread:.3e}); the plan is unaffected. Use --backend cpu-reference for \
             meaningful potentials.",
            params.epsilon
        )
    })
}

/// What to tell a user whose pairs did not all converge (not an error: the plan is the
/// last iterate and `converged.npy` says which pairs), with the likely reasons: a cost that
/// spans many ε (Sinkhorn's iterations grow with that ratio), or a threshold below what
/// the `f32` backends can reach. `spread` is how far the solved cost's entries spread (2
/// for a cosine cost from embeddings, which is not measured).
fn convergence_warning(
    out: &SinkhornOutput,
    params: &SinkhornParams,
    spread: f64,
    from_embeddings: bool,
    backend: BackendKind,
) -> Option<String> {
    let missed = out.pairs - out.converged_count();
    if missed == 0 {
        return precision_warning(out, params);
    }
    let mut text = format!(
        "warning: {missed} of {} pairs did not converge in {} iterations (largest marginal \
         error {:.2e}, threshold {}); their plans are the last iterate (converged.npy \
         marks them).",
        out.pairs,
        params.max_iterations,
        out.max_marginal_error(),
        short_number(params.threshold)
    );
    let ratio = spread / params.epsilon;
    if params.threshold == 0.0 {
        text.push_str(
            " A --threshold of 0 asks for exact marginals, which rounding rarely gives: use a \
             small positive threshold (the default is 1e-6).",
        );
    } else if backend != BackendKind::CpuReference && params.threshold < 1e-7 {
        text.push_str(
            " The f32 backends cannot reach errors much below 1e-7 per unit mass: use \
             --backend cpu-reference for a tighter --threshold.",
        );
    } else if ratio > 100.0 {
        // From embeddings the cost is not measured here: its range is 1 − cos's, [0, 2].
        let span = if from_embeddings {
            "The cosine cost's entries span up to 2".to_string()
        } else {
            format!("The cost's entries span {spread:.3e}")
        };
        text.push_str(&format!(
            " {span}, {ratio:.1e} times ε ({:e}), and \
             Sinkhorn needs more iterations as that ratio grows: raise --max-iterations, \
             raise --epsilon (it is in the cost's units) or rescale the cost.",
            params.epsilon
        ));
    } else {
        text.push_str(" Raise --max-iterations or --epsilon.");
    }
    if let Some(more) = precision_warning(out, params) {
        text.push('\n');
        text.push_str(&more);
    }
    Some(text)
}

/// What to tell a user whose converged pairs came with plans above the threshold: the
/// `f32` backends' check met it, but their `f32` potentials cap how well the plan's rows
/// match (see `SinkhornOutput::marginal_error`).
fn precision_warning(out: &SinkhornOutput, params: &SinkhornParams) -> Option<String> {
    let (count, worst) = out
        .converged
        .iter()
        .zip(&out.marginal_error)
        .filter(|(&c, &e)| c && e > params.threshold)
        .fold((0, 0.0f64), |(k, w), (_, &e)| (k + 1, w.max(e)));
    (count > 0).then(|| {
        format!(
            "warning: {count} of {} pairs met the threshold ({}) in the backend's f32 \
             iterations, but their plans' marginal error is larger (up to {worst:.2e}): f32 \
             potentials round to about 6e-8 × (cost range / ε) in log units. Use --backend \
             cpu-reference, or a larger --epsilon, for tighter marginals.",
            out.pairs,
            short_number(params.threshold)
        )
    })
}

/// `1e-6` for 1e-6, `0` for 0: a threshold as a user types it.
fn short_number(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else {
        format!("{x:e}")
    }
}

fn cost(args: CostArgs) -> Result<()> {
    crate::io::check_output_file(&args.out)?;
    crate::io::check_not_input(
        &args.out,
        &[
            Some(&args.x),
            Some(&args.y),
            args.x_lengths.as_deref(),
            args.y_lengths.as_deref(),
        ],
    )?;
    let backend = args.backend.open()?;
    let (x, bx) = load_embeddings(&args.x, args.x_lengths.as_deref())?;
    let (y, by) = load_embeddings(&args.y, args.y_lengths.as_deref())?;
    check_same_rank(&args.x, &args.y, bx, by)?;
    let c = backend
        .cosine_cost(&x, &y)
        .map_err(|e| blame(e, &[("y", &args.y), ("x", &args.x)]))?;
    let shape: Vec<usize> = if bx {
        vec![c.b, c.n, c.m]
    } else {
        vec![c.n, c.m]
    };
    crate::io::write_through_temp(&args.out, |p| npy::write(p, &shape, &c.data))
}

fn maxsim(args: MaxsimArgs) -> Result<()> {
    crate::io::check_output_file(&args.out)?;
    crate::io::check_not_input(
        &args.out,
        &[
            Some(&args.queries),
            args.query_lengths.as_deref(),
            Some(&args.docs),
            Some(&args.doc_lengths),
        ],
    )?;
    let backend = args.backend.open()?;
    let (q, batched) = load_embeddings(&args.queries, args.query_lengths.as_deref())?;
    let docs = load(&args.docs, &[2], "(tokens, d)")?;
    let d = docs.shape[1];
    let lengths_arr = npy::read(&args.doc_lengths)?;
    if lengths_arr.shape.len() != 1 {
        return Err(Error::shape(
            args.doc_lengths.display().to_string(),
            "(documents,)",
            format!("{:?}", lengths_arr.shape),
        ));
    }
    let lengths = lengths_arr
        .to_i64(&args.doc_lengths)?
        .into_iter()
        .enumerate()
        .map(|(k, v)| {
            usize::try_from(v).map_err(|_| {
                Error::value(
                    args.doc_lengths.display().to_string(),
                    format!("document {k} has length {v}; expected a positive count"),
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let values = narrow_rows("embeddings", &docs.values, d, None, |_| true)
        .map_err(|e| e.in_file(&args.docs))?;
    let packed = PackedDocs::new("documents", d, values, lengths)
        .map_err(|e| e.in_data_or_lengths_file(&args.docs, &args.doc_lengths))?;
    let scores = backend
        .maxsim(&q, &packed)
        .map_err(|e| blame(e, &[("quer", &args.queries), ("document", &args.docs)]))?;
    let shape: Vec<usize> = if batched {
        vec![q.b, packed.len()]
    } else {
        vec![packed.len()]
    };
    crate::io::write_through_temp(&args.out, |p| npy::write(p, &shape, &scores))
}

/// Name the input file a backend's shape or value complaint is about: the first of
/// `files` whose key the error's context starts with or holds as a word (`y`, `wgpu maxsim
/// queries`); none when it is about the inputs together (`wgpu cosine cost`: n and m).
fn blame(e: Error, files: &[(&str, &std::path::Path)]) -> Error {
    let context = match &e {
        Error::Shape { context, .. } | Error::Value { context, .. } => context.clone(),
        _ => return e,
    };
    let words: Vec<&str> = context.split_whitespace().collect();
    match files
        .iter()
        .find(|(key, _)| context == *key || words.iter().any(|w| w.starts_with(key)))
    {
        Some((_, path)) => e.in_file(path),
        None => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rank_mismatch_says_both_ranks() {
        let e = check_same_rank(Path::new("x.npy"), Path::new("y.npy"), false, true).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("the same rank as x.npy (rank 2)") && text.contains("rank 3"),
            "{text}"
        );
        assert!(check_same_rank(Path::new("x"), Path::new("y"), true, true).is_ok());
    }
}
