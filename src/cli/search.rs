//! `optical search`: exact top-k search over precomputed embeddings, written as a TREC run.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;

use crate::backend::{Backend, BackendKind};
use crate::error::{Error, Result};
use crate::io::npy;
use crate::ot::problem::{narrow_rows, Embeddings, PackedDocs};
use crate::retrieval::evaluate::Scoring;
use crate::retrieval::search::{search, DenseVectors, Pool, Scorer, DEFAULT_BLOCK};
use crate::retrieval::trec::RunWriter;

/// Exact top-k search of queries against a corpus of precomputed embeddings.
///
/// Dense: --queries (n,d) and --corpus (m,d) pooled vectors, scored by cosine.
/// MaxSim: --queries (n,L,d) token vectors with optional integer --query-lengths (n,),
/// --corpus (T,d) packed token vectors with integer --corpus-lengths (m,) summing to T.
/// Ids come from --query-ids / --corpus-ids (one per line) or default to 0, 1, ….
/// Ties are ranked as trec_eval ranks them (docno descending). Prints a JSON summary.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct SearchArgs {
    /// Query embeddings (.npy): (n, d) pooled vectors for dense scoring, (n, L, d) token
    /// vectors for MaxSim.
    #[arg(long)]
    pub queries: PathBuf,
    /// Corpus embeddings (.npy): (m, d) pooled vectors for dense scoring, (T, d) packed
    /// token vectors for MaxSim.
    #[arg(long)]
    pub corpus: PathBuf,
    /// Documents kept per query.
    #[arg(long, default_value_t = 100)]
    pub k: usize,
    /// TREC run written here.
    #[arg(long)]
    pub out: PathBuf,
    /// dense or maxsim.
    #[arg(long, default_value = "dense")]
    pub scoring: String,
    /// MaxSim: each query's token count (.npy, integers, (n,)); rows past it are padding.
    /// Default: every query has L tokens.
    #[arg(long)]
    pub query_lengths: Option<PathBuf>,
    /// MaxSim: each document's token count (.npy, integers, (m,), summing to T).
    #[arg(long)]
    pub corpus_lengths: Option<PathBuf>,
    /// Query ids, one per line (default: 0, 1, …).
    #[arg(long)]
    pub query_ids: Option<PathBuf>,
    /// Document ids, one per line (default: 0, 1, …).
    #[arg(long)]
    pub corpus_ids: Option<PathBuf>,
    /// Run tag (last column of the run file).
    #[arg(long, default_value = "optical")]
    pub tag: String,
    /// Queries scored per block.
    #[arg(long, default_value_t = DEFAULT_BLOCK)]
    pub block: usize,
    /// Backend of the MaxSim kernel: cpu (default), cpu-reference, wgpu or cuda (dense
    /// search runs on the CPU).
    #[arg(long)]
    pub backend: Option<String>,
}

fn read_ids(path: Option<&Path>, n: usize, what: &str) -> Result<Vec<String>> {
    match path {
        None => Ok((0..n).map(|i| i.to_string()).collect()),
        Some(p) => {
            let text = crate::data::read_text(p)?;
            // ASCII whitespace only, as the TREC files are split: a no-break space may be
            // part of an id.
            let mut ids: Vec<String> = text
                .lines()
                .map(|l| {
                    l.trim_matches(|c: char| c.is_ascii_whitespace())
                        .to_string()
                })
                .collect();
            // Blank lines at the end are an editor's, not ids.
            while ids.last().is_some_and(|s| s.is_empty()) {
                ids.pop();
            }
            if ids.len() != n {
                return Err(crate::data::format_error(
                    p,
                    format!("expected {n} {what} ids, one per line, found {}", ids.len()),
                ));
            }
            if let Some(i) = ids
                .iter()
                .position(|s| s.is_empty() || s.contains(|c: char| c.is_ascii_whitespace()))
            {
                return Err(crate::data::format_error(
                    p,
                    format!(
                        "line {}: expected an id without whitespace, found {:?}",
                        i + 1,
                        ids[i]
                    ),
                ));
            }
            // A run with a repeated query id would list its documents twice under one id
            // (`optical eval trec` rejects such a run).
            let mut seen = std::collections::HashMap::with_capacity(ids.len());
            for (i, id) in ids.iter().enumerate() {
                if let Some(first) = seen.insert(id.as_str(), i) {
                    return Err(crate::data::format_error(
                        p,
                        format!(
                            "line {}: expected unique {what} ids, found {id:?} again (first on \
                             line {})",
                            i + 1,
                            first + 1
                        ),
                    ));
                }
            }
            Ok(ids)
        }
    }
}

fn read_lengths(path: &Path) -> Result<Vec<usize>> {
    let arr = npy::read(path)?;
    if arr.shape.len() != 1 {
        return Err(Error::shape(
            path.display().to_string(),
            "(count,) integers",
            format!("{:?}", arr.shape),
        ));
    }
    arr.to_i64(path)?
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            usize::try_from(v).map_err(|_| {
                Error::value(
                    path.display().to_string(),
                    format!("entry {i} is {v}; expected ≥ 0"),
                )
            })
        })
        .collect()
}

/// The array's rows of `d` values as `f32`. An `f64` file is narrowed with the checks of
/// `optical ot` (a value beyond f32's range, or a real row whose entries would all
/// underflow to a zero vector, is an error naming the file), so that a row does not
/// silently change meaning on the way to the kernels.
fn rows_f32(
    name: &str,
    arr: &npy::NpyArray,
    path: &Path,
    d: usize,
    set_rows: Option<usize>,
    is_real: impl Fn(usize) -> bool,
) -> Result<Vec<f32>> {
    if arr.dtype == npy::Dtype::F32 {
        return Ok(arr.to_f32());
    }
    narrow_rows(name, &arr.to_f64(), d, set_rows, is_real).map_err(|e| e.in_file(path))
}

/// An error naming the corpus file when its vectors' dimension is not the queries'.
fn same_dimension(a: &SearchArgs, d: usize, dc: usize) -> Result<()> {
    if d == dc {
        return Ok(());
    }
    Err(Error::shape(
        a.corpus.display().to_string(),
        format!("vectors of d = {d}, as in {}", a.queries.display()),
        format!("d = {dc}"),
    ))
}

pub fn run(a: SearchArgs) -> Result<()> {
    let scoring: Scoring = a.scoring.parse()?;
    crate::retrieval::trec::check_run_tag(&a.tag)?;
    crate::io::check_output_file(&a.out)?;
    crate::io::check_not_input(
        &a.out,
        &[
            Some(&a.queries),
            Some(&a.corpus),
            a.query_lengths.as_deref(),
            a.corpus_lengths.as_deref(),
            a.query_ids.as_deref(),
            a.corpus_ids.as_deref(),
        ],
    )?;
    let q = npy::read(&a.queries)?;
    let c = npy::read(&a.corpus)?;
    let backend;
    let (dense_q, dense_c, maxsim_q, maxsim_c);
    let scorer = match scoring {
        Scoring::Dense => {
            // Lengths mask token vectors; pooled vectors have none to mask.
            for (flag, given) in [
                ("query-lengths", a.query_lengths.is_some()),
                ("corpus-lengths", a.corpus_lengths.is_some()),
            ] {
                if given {
                    return Err(Error::parameter(
                        flag,
                        "no lengths with --scoring dense (one pooled vector per row); lengths go with --scoring maxsim",
                        "a lengths file",
                    ));
                }
            }
            // `cpu` is where dense search runs anyway (and the flag's default): accepted.
            if let Some(b) = a.backend.as_ref().filter(|b| b.as_str() != "cpu") {
                return Err(Error::parameter(
                    "backend",
                    "no --backend with --scoring dense (dense search runs on the CPU; the backend picks the MaxSim kernel)",
                    b,
                ));
            }
            let shape2 = |arr: &npy::NpyArray, p: &Path| match arr.shape[..] {
                [n, d] => Ok((n, d)),
                _ => Err(Error::shape(
                    p.display().to_string(),
                    "(n, d)",
                    format!("{:?}", arr.shape),
                )),
            };
            let (n, d) = shape2(&q, &a.queries)?;
            let (m, dc) = shape2(&c, &a.corpus)?;
            same_dimension(&a, d, dc)?;
            dense_q = DenseVectors::new(
                "queries",
                n,
                d,
                rows_f32("queries", &q, &a.queries, d, None, |_| true)?,
            )
            .map_err(|e| e.in_file(&a.queries))?;
            dense_c = DenseVectors::new(
                "corpus",
                m,
                dc,
                rows_f32("corpus", &c, &a.corpus, dc, None, |_| true)?,
            )
            .map_err(|e| e.in_file(&a.corpus))?;
            Scorer::Dense {
                queries: &dense_q,
                corpus: &dense_c,
            }
        }
        Scoring::MaxSim => {
            let (n, l, d) = match q.shape[..] {
                [n, l, d] => (n, l, d),
                _ => {
                    return Err(Error::shape(
                        a.queries.display().to_string(),
                        "(n, L, d) token vectors",
                        format!("{:?}", q.shape),
                    ))
                }
            };
            let ql = a.query_lengths.as_deref().map(read_lengths).transpose()?;
            let real = |r: usize| {
                ql.as_ref()
                    .is_none_or(|ql| ql.get(r / l.max(1)).is_none_or(|&len| r % l < len))
            };
            let values = rows_f32("queries", &q, &a.queries, d, Some(l), real)?;
            maxsim_q = Embeddings::new("queries", n, l, d, values, ql).map_err(|e| {
                match a.query_lengths.as_deref() {
                    Some(lengths) => e.in_data_or_lengths_file(&a.queries, lengths),
                    None => e.in_file(&a.queries),
                }
            })?;
            let dc = match c.shape[..] {
                [_, dc] => dc,
                _ => {
                    return Err(Error::shape(
                        a.corpus.display().to_string(),
                        "(T, d) packed token vectors",
                        format!("{:?}", c.shape),
                    ))
                }
            };
            same_dimension(&a, d, dc)?;
            let cl = a.corpus_lengths.as_deref().ok_or_else(|| {
                Error::parameter(
                    "corpus-lengths",
                    "an integer (m,) array with --scoring maxsim",
                    "none",
                )
            })?;
            maxsim_c = PackedDocs::new(
                "corpus",
                dc,
                rows_f32("corpus", &c, &a.corpus, dc, None, |_| true)?,
                read_lengths(cl)?,
            )
            .map_err(|e| e.in_data_or_lengths_file(&a.corpus, cl))?;
            backend = Backend::new(
                a.backend
                    .as_deref()
                    .unwrap_or("cpu")
                    .parse::<BackendKind>()?,
            )?;
            Scorer::MaxSim {
                backend: &backend,
                queries: &maxsim_q,
                corpus: &maxsim_c,
            }
        }
    };
    let (n, m) = (scorer.num_queries(), scorer.num_candidates());
    let qids = read_ids(a.query_ids.as_deref(), n, "query")?;
    let docnos = read_ids(a.corpus_ids.as_deref(), m, "corpus")?;
    let pool = Pool::new(docnos, &vec![""; m])?;
    let t0 = Instant::now();
    let hits = search(&scorer, &pool, &[], a.k, a.block)?;
    let seconds = t0.elapsed().as_secs_f64();
    crate::io::write_through_temp(&a.out, |path| {
        let mut w = RunWriter::create(path, &a.tag)?;
        for (qid, h) in qids.iter().zip(&hits) {
            w.query(
                qid,
                h.top
                    .iter()
                    .map(|&(i, s)| (pool.ids[i as usize].as_str(), s)),
            )?;
        }
        w.finish()
    })?;
    outln!(
        "{}",
        serde_json::json!({
            "queries": n,
            "candidates": m,
            "k": a.k.min(m),
            "scoring": scoring,
            "search_seconds": seconds,
            "queries_per_second": n as f64 / seconds.max(1e-9),
            // As displayed: a path that is not UTF-8 cannot be a JSON string.
            "out": a.out.display().to_string(),
        })
    );
    Ok(())
}
