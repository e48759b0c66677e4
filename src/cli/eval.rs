//! `optical eval`: evaluate models on a dataset and write results, tables and plots; and
//! `optical eval trec`: trec_eval's measures for any pair of TREC files.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::backend::{Backend, BackendKind};
use crate::data::{self, DatasetName};
use crate::error::{Error, Result};
use crate::report::{EvalReport, EvalSettings, ModelResults};
use crate::retrieval::encoder;
use crate::retrieval::evaluate::{run_task, Scoring, TaskSettings};
use crate::retrieval::metrics::{self, Measure};
use crate::retrieval::trec;

/// Evaluate retrieval models on a dataset (LAReQA: mAP over the full multilingual pool;
/// bitext: P@1 of translation retrieval in both directions). Writes results.json,
/// report.md, per_language.svg, heatmaps and one TREC run per model and task into --out.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EvalArgs {
    #[command(subcommand)]
    pub command: Option<EvalCommand>,
    #[command(flatten)]
    pub dataset: EvalDatasetArgs,
}

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Evaluate a TREC run against TREC qrels with trec_eval's semantics; prints one JSON
    /// object measure → mean (with --per-query, also qid → measure → value).
    Trec(TrecArgs),
}

#[derive(Debug, Args)]
pub struct TrecArgs {
    /// Qrels file: `qid iteration docno relevance`.
    #[arg(long)]
    pub qrels: PathBuf,
    /// Run file: `qid Q0 docno rank score tag`.
    #[arg(long)]
    pub run: PathBuf,
    /// Comma-separated trec_eval measure names (`P` / `recall` / `map_cut` / `ndcg_cut`
    /// alone expand to trec_eval's default cutoffs).
    #[arg(long, default_value = "map,recip_rank,P_1,recall_100,ndcg_cut_10")]
    pub metrics: String,
    /// Also print every query's values: the output is then {"mean": {measure: value},
    /// "per_query": {qid: {measure: value}}} instead of {measure: mean}.
    #[arg(long)]
    pub per_query: bool,
}

#[derive(Debug, Args)]
pub struct EvalDatasetArgs {
    /// xquad-r, mlqa-r, tatoeba, mafand or bible.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Comma-separated languages (default: all of the dataset's).
    #[arg(long, value_delimiter = ',')]
    pub languages: Vec<String>,
    /// Comma-separated models, reported side by side: hash (a bag-of-words baseline),
    /// minilm, e5-small, or a path to a Hugging Face model directory or an E5S1 file.
    #[arg(long, value_delimiter = ',')]
    pub model: Vec<String>,
    /// dense (pooled cosine) or maxsim (late interaction through the backend's kernel).
    #[arg(long, default_value = "dense")]
    pub scoring: String,
    /// Output directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Measures (trec_eval names); default depends on the dataset.
    #[arg(long)]
    pub metrics: Option<String>,
    /// Documents per query in the written TREC runs (measures use the full pool).
    #[arg(long, default_value_t = 100)]
    pub k: usize,
    /// Texts per encoder call: sorted by length within a call, so a larger one pads less
    /// (a transformer runs a call in forward batches of --forward-batch texts).
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Texts per forward pass of the transformer encoders (a GPU is kept busier by more;
    /// at most --batch of them come from one call).
    #[arg(long, default_value_t = crate::retrieval::encoder::FORWARD_BATCH)]
    pub forward_batch: usize,
    /// Backend for the transformer encoders and MaxSim: cpu, cpu-reference, wgpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub backend: String,
    /// MAFAND split: dev (default) or test.
    #[arg(long)]
    pub split: Option<String>,
    /// English Bible (default: bible/t_web.csv.gz in $OPTICAL_CACHE, else in ~/.cache/optical).
    #[arg(long)]
    pub english_bible: Option<PathBuf>,
    /// Encode each LAReQA candidate as its sentence followed by its paragraph context.
    #[arg(long)]
    pub candidate_context: bool,
    /// How LAReQA's answer sentences are encoded: passage (e5's `passage: ` prefix, as its
    /// model card says for question answering) or query (its `query: ` prefix, as on the
    /// questions); default passage. Bitext sets encode both sides as queries.
    #[arg(long)]
    pub lareqa_candidates: Option<crate::retrieval::encoder::TextRole>,
    /// Keep only the first N pairs of each bitext (file order); LAReQA pools are never cut.
    #[arg(long)]
    pub max_pairs: Option<usize>,
    /// Truncate every text to N tokens, specials included (default: the model's limit).
    #[arg(long)]
    pub max_length: Option<usize>,
    /// Do not read or write the embedding cache ($OPTICAL_CACHE/embeddings). Its entries are
    /// keyed by model, device, role and texts (another backend encodes again: its vectors
    /// differ in the last bits), so use this flag to time a backend's encoding.
    #[arg(long)]
    pub no_cache: bool,
    /// Data directory (default: $OPTICAL_DATA_DIR, else ../shared/data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

pub fn run(args: EvalArgs) -> Result<()> {
    match args.command {
        Some(EvalCommand::Trec(t)) => trec_eval(t),
        None => eval_dataset(args.dataset),
    }
}

fn trec_eval(a: TrecArgs) -> Result<()> {
    let measures = Measure::parse_list(&a.metrics)?;
    let qrels = trec::read_qrels(&a.qrels)?;
    let run = trec::read_run(&a.run)?;
    // A run none of whose queries is judged scores 0 on every measure, which reads like a
    // result; it is almost always the wrong qrels file (trec_eval stops there too: "No queries with both results and relevance info").
    if !run.keys().any(|q| qrels.contains_key(q)) {
        return Err(Error::value(
            format!("{} against {}", a.run.display(), a.qrels.display()),
            format!(
                "expected at least one query of the run judged in the qrels; found none \
                 (the run has {} queries, the qrels {})",
                run.len(),
                qrels.len()
            ),
        ));
    }
    // Averaged over the queries both judged and in the run (trec_eval's default); say how
    // many, and how many judged queries the run lacks (a qid mismatch, a crashed query),
    // which trec_eval's -c would count as 0.
    let evaluated = run.keys().filter(|q| qrels.contains_key(*q)).count();
    let missing = qrels.keys().filter(|q| !run.contains_key(*q)).count();
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    errln!(
        "eval trec: {} evaluated{}",
        plural(evaluated, "query", "queries"),
        if missing > 0 {
            format!(
                "; {} no results in the run and {} left out of the means (trec_eval -c would \
                 count {} as 0)",
                plural(missing, "judged query has", "judged queries have"),
                if missing == 1 { "is" } else { "are" },
                if missing == 1 { "it" } else { "them" }
            )
        } else {
            String::new()
        }
    );
    let ev = metrics::evaluate(&qrels, &run, &measures);
    let out = if a.per_query {
        serde_json::json!({"mean": ev.mean, "per_query": ev.per_query})
    } else {
        serde_json::to_value(&ev.mean).unwrap_or_default()
    };
    outln!("{out}");
    Ok(())
}

fn eval_dataset(a: EvalDatasetArgs) -> Result<()> {
    let dataset: DatasetName = a
        .dataset
        .as_deref()
        .ok_or_else(|| {
            Error::parameter("dataset", "--dataset NAME (or a subcommand: trec)", "none")
        })?
        .parse()?;
    let out = a
        .out
        .clone()
        .ok_or_else(|| Error::parameter("out", "--out DIR", "none"))?;
    // Before any model loads: a file in the directory's place.
    if out.exists() && !out.is_dir() {
        return Err(Error::parameter(
            "out",
            "an output directory (new or existing)",
            format!("{}, a file", out.display()),
        ));
    }
    if a.model.is_empty() {
        return Err(Error::parameter("model", "--model NAME[,NAME…]", "none"));
    }
    // Each model's run files and plots are named by its slug: two models with one slug
    // would overwrite each other's files and repeat a column of the report.
    for (i, m) in a.model.iter().enumerate() {
        let slug = crate::report::slug(m);
        if let Some(other) = a.model[..i].iter().find(|o| crate::report::slug(o) == slug) {
            return Err(Error::parameter(
                "model",
                "models whose names differ in letters, digits, '-' or '_' (their files are \
                 named by them)",
                if other == m {
                    format!("{m} twice")
                } else {
                    format!("{other} and {m}, both {slug}")
                },
            ));
        }
    }
    let scoring: Scoring = a.scoring.parse()?;
    let lareqa = matches!(dataset, DatasetName::XquadR | DatasetName::MlqaR);
    // Settings of another dataset are refused, not silently ignored, and the counts are
    // checked before any text is encoded.
    let [split, bible] = super::loader_flags(dataset, a.split.is_some(), a.english_bible.is_some());
    super::refuse_misplaced_flags(
        dataset,
        &[
            split,
            bible,
            (
                "candidate-context",
                a.candidate_context && !lareqa,
                "xquad-r and mlqa-r",
            ),
            (
                "lareqa-candidates",
                a.lareqa_candidates.is_some() && !lareqa,
                "xquad-r and mlqa-r",
            ),
            (
                "max-pairs",
                a.max_pairs.is_some() && lareqa,
                "the bitext datasets (LAReQA pools are never cut)",
            ),
        ],
    )?;
    for (name, value) in [
        ("k", a.k),
        ("batch", a.batch),
        ("forward_batch", a.forward_batch),
    ] {
        if value == 0 {
            return Err(Error::parameter(name, "at least 1", value));
        }
    }
    // Checked for every model (the hashing baseline ignores it; the encoders need their two
    // special tokens).
    if let Some(len) = a.max_length.filter(|&l| l < 2) {
        return Err(Error::parameter(
            "max_length",
            "at least 2 (the special tokens)",
            len,
        ));
    }
    let main_metric = if lareqa { "map" } else { "P_1" };
    let default_metrics = "map,recip_rank,P_1,recall_10,recall_100,ndcg_cut_10,map_cut_10";
    let measures = Measure::parse_list(a.metrics.as_deref().unwrap_or(default_metrics))?;
    if !measures.iter().any(|m| m.to_string() == main_metric) {
        return Err(Error::parameter(
            "metrics",
            format!("a list that includes {main_metric} (the report's main measure)"),
            a.metrics.as_deref().unwrap_or(""),
        ));
    }
    let kind = a.backend.parse::<BackendKind>()?;
    // The kernels' backend scores MaxSim only: dense scoring never calls it, so a backend
    // this machine lacks (no CUDA driver) is no reason to refuse a dense evaluation (the
    // encoders' device is checked when they load).
    let backend = match Backend::new(kind) {
        Err(Error::BackendUnavailable { .. }) if matches!(scoring, Scoring::Dense) => {
            Backend::new(BackendKind::Cpu)?
        }
        other => other?,
    };
    // The model names and the data first: a misspelt model or language, or a missing
    // file, fails in milliseconds, not after the models have loaded.
    for m in &a.model {
        encoder::check_model_name(m)?;
    }
    let dir = data::data_dir(a.data_dir.as_deref());
    let tasks = data::load_tasks(
        dataset,
        &dir,
        &data::LoadOptions {
            languages: a.languages.clone(),
            split: a.split.clone(),
            english_bible: a.english_bible.clone(),
            max_pairs: a.max_pairs,
        },
    )?;
    // Held until the evaluation returns: its runs, qrels, results and report are written
    // one by one, and another evaluation into the same directory would mix them.
    let _lock = crate::io::DirLock::acquire(&out, "an evaluation directory")?;
    let encoders = load_models(&a.model, a.max_length, a.forward_batch, kind)?;
    let cache = (!a.no_cache).then(|| data::cache_dir().join("embeddings"));
    let runs = out.join("runs");
    std::fs::create_dir_all(&runs).map_err(|e| Error::io(&runs, "create", e))?;
    for t in &tasks {
        let qrels = runs.join(format!("{}.qrels", t.name));
        crate::io::write_through_temp(&qrels, |tmp| trec::write_qrels(tmp, t.qrels()))?;
    }
    let settings = TaskSettings {
        scoring,
        backend: &backend,
        measures: &measures,
        k: a.k,
        batch: a.batch,
        cache: cache.as_deref(),
        candidate_context: a.candidate_context,
        asymmetric_candidates: a
            .lareqa_candidates
            .unwrap_or(crate::retrieval::encoder::TextRole::Passage),
    };
    let mut models = Vec::new();
    for (name, enc) in a.model.iter().zip(&encoders) {
        let memo = encoder::Memoized::new(enc.as_ref());
        let mut results = Vec::new();
        for t in &tasks {
            let run_file = runs.join(format!("{}.{}.trec", crate::report::slug(name), t.name));
            let r = run_task(t, &memo, &settings, Some(&run_file))?;
            errln!(
                "{name} {}: {} = {:.4} (encode {:.1} s, search {:.1} s)",
                t.name,
                main_metric,
                r.metrics.get(main_metric).copied().unwrap_or(f64::NAN),
                r.encode_seconds,
                r.search_seconds
            );
            results.push(r);
        }
        models.push(ModelResults {
            model: name.clone(),
            tasks: results,
        });
    }
    let split_name = matches!(dataset, DatasetName::Mafand).then(|| {
        a.split
            .clone()
            .unwrap_or_else(|| data::bitext::MAFAND_EVAL_SPLITS[0].to_string())
    });
    let report = EvalReport {
        dataset: dataset.name().to_string(),
        scoring,
        main_metric: main_metric.to_string(),
        lareqa_candidates: lareqa.then_some(settings.asymmetric_candidates),
        settings: EvalSettings {
            languages: data::first_seen(
                tasks
                    .iter()
                    .flat_map(|t| t.queries.iter().map(|q| q.language.as_str())),
            ),
            backend: a.backend.clone(),
            max_length: a.max_length,
            k: a.k,
            candidate_context: a.candidate_context,
            split: split_name,
            max_pairs: a.max_pairs,
        },
        models,
    };
    let written = report.write(&out)?;

    let summary: serde_json::Map<String, serde_json::Value> = report
        .models
        .iter()
        .map(|m| {
            let v: serde_json::Map<String, serde_json::Value> = m
                .tasks
                .iter()
                .map(|t| {
                    (
                        t.task.clone(),
                        serde_json::json!(t.metrics.get(main_metric)),
                    )
                })
                .collect();
            (m.model.clone(), serde_json::Value::Object(v))
        })
        .collect();
    outln!(
        "{}",
        serde_json::json!({
            "dataset": dataset.name(),
            "metric": main_metric,
            // How LAReQA's answer sentences were encoded (null for bitext).
            "lareqa_candidates": report.lareqa_candidates,
            "results": summary,
            // As displayed: a path that is not UTF-8 cannot be a JSON string.
            "files": written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        })
    );
    Ok(())
}

/// Memory for the states after a prefix that several models of one `optical eval` share
/// (a distilled student and the model it started from: ≈ 230 MB for 10,000 texts of 40
/// tokens at hidden size 384; past the limit states are computed, not kept).
#[cfg(feature = "encoder")]
const SHARED_PREFIX_BYTES: usize = 1 << 30;

/// The models of the command. Transformers, when there are several, share the states after
/// the deepest prefix each has in common with another (a student and its base model: the
/// layers it kept frozen), so that those layers run once per text
/// ([`crate::encoder::prefix`]); the results are the same bits either way.
fn load_models(
    names: &[String],
    max_length: Option<usize>,
    forward_batch: usize,
    kind: BackendKind,
) -> Result<Vec<Box<dyn encoder::Encoder>>> {
    #[cfg(feature = "encoder")]
    if names.len() > 1 {
        use crate::encoder::prefix::{PrefixStates, SharedPrefix};
        let shared = SharedPrefix {
            states: PrefixStates::new(SHARED_PREFIX_BYTES),
            layers: None,
        };
        return names
            .iter()
            .map(|m| {
                encoder::builtin_sharing(m, max_length, forward_batch, kind, Some(shared.clone()))
            })
            .collect();
    }
    names
        .iter()
        .map(|m| encoder::builtin_with(m, max_length, forward_batch, kind))
        .collect()
}
