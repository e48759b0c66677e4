//! What every model of the study is evaluated on, and the evaluation itself.
//!
//! Each group has evaluation sets: the LAReQA benchmarks (XQuAD-R, MLQA-R: one
//! multilingual pool, mAP, out of domain for every group), and the group's bitext sets, in
//! domain or out of domain, each giving an x→en and an en→x task (P@1 and MRR). The sets
//! are built once per invocation from the data files and the budget's slices
//! ([`crate::data::lareqa::Lareqa::subset`], [`crate::data::bitext::Bitext::evenly_spaced`]),
//! so every model of a group sees exactly the same queries and pools — which the paired
//! tests of [`super::stats`] rely on.
//!
//! A model's evaluation goes through [`crate::retrieval::evaluate`] (dense cosine over
//! mean-pooled vectors, ranks over the full pool) and the embedding cache, and keeps per
//! query the measure the tests compare (AP for LAReQA, P@1 and reciprocal rank for
//! bitext) and, for LAReQA, the share of each query's top-k candidates in its own language
//! (k = the number of languages in the pool: 11 on XQuAD-R).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::{EvalBudget, Group, RunSpec, StudyConfig};
use super::split::{split_group, write_train_files};
use crate::backend::{Backend, BackendKind};
use crate::data::bitext::{self, Bitext};
use crate::data::lareqa::Lareqa;
use crate::data::{DatasetName, RetrievalTask};
use crate::error::{Error, Result};
use crate::retrieval::encoder::TextRole;
use crate::retrieval::evaluate::{
    evaluate_hits, own_language_share, per_query, search_task, Scoring, TaskResult, TaskSettings,
};
use crate::retrieval::{Encoder, Measure};

/// In domain (the training distribution) or out of domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    InDomain,
    OutOfDomain,
}

/// What an evaluation set is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SetInfo {
    /// `xquad-r`, `mlqa-r`, `tatoeba-heldout`, `mafand-test`, `bible`, `tatoeba`, or the
    /// name given to explicit files.
    pub benchmark: String,
    /// The language of the set (`all` for LAReQA).
    pub language: String,
    pub role: Role,
    pub lareqa: bool,
}

/// One evaluation set: one LAReQA task, or the two directions of a bitext.
#[derive(Clone, Debug)]
pub struct EvalSet {
    pub info: SetInfo,
    pub tasks: Vec<RetrievalTask>,
}

impl EvalSet {
    /// Distinct texts a model encodes for this set (a bitext's directions share theirs).
    pub fn texts(&self) -> usize {
        match self.tasks.first() {
            Some(t) => t.queries.len() + t.candidates.len(),
            None => 0,
        }
    }
}

/// How a group's Tatoeba split came out, per language.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SplitSummary {
    pub language: String,
    pub pairs: usize,
    pub train: usize,
    pub heldout: usize,
    pub dropped: usize,
}

/// A group ready to run: distillation sources and evaluation sets.
#[derive(Clone, Debug)]
pub struct GroupData {
    pub name: String,
    /// Sources in `optical distill` syntax.
    pub sources: Vec<String>,
    pub sets: Vec<EvalSet>,
    pub split: Vec<SplitSummary>,
    /// The usable training pairs the sources give (blank pairs left out).
    pub pairs: usize,
}

fn bitext_set(benchmark: &str, role: Role, b: &Bitext, pairs: Option<usize>) -> EvalSet {
    let b = match pairs {
        Some(n) => b.evenly_spaced(n),
        None => b.clone(),
    };
    let tasks = b
        .tasks()
        .into_iter()
        .map(|mut t| {
            t.name = format!("{benchmark}:{}", t.name);
            t
        })
        .collect();
    EvalSet {
        info: SetInfo {
            benchmark: benchmark.to_string(),
            language: b.source_language.clone(),
            role,
            lareqa: false,
        },
        tasks,
    }
}

/// The LAReQA sets of the study, sliced by the budget.
pub fn lareqa_sets(
    config: &StudyConfig,
    eval: &EvalBudget,
    data_dir: &Path,
) -> Result<Vec<EvalSet>> {
    config
        .lareqa
        .iter()
        .map(|name| {
            let dataset: DatasetName = name.parse()?;
            let all = match dataset {
                DatasetName::XquadR => crate::data::lareqa::XQUAD_R_LANGUAGES.as_slice(),
                _ => crate::data::lareqa::MLQA_R_LANGUAGES.as_slice(),
            };
            // A budget's language list applies to each dataset as far as it has them.
            let languages: Vec<String> = if eval.lareqa_languages.is_empty() {
                Vec::new()
            } else {
                eval.lareqa_languages
                    .iter()
                    .filter(|l| all.contains(&l.as_str()))
                    .cloned()
                    .collect()
            };
            if !eval.lareqa_languages.is_empty() && languages.len() < 2 {
                return Err(Error::parameter(
                    "lareqa_languages",
                    format!("at least two languages of {name} ({})", all.join(",")),
                    eval.lareqa_languages.join(","),
                ));
            }
            let data = Lareqa::load(data_dir, dataset, &languages)?;
            let data = match eval.lareqa_questions.get(name) {
                Some(&n) => data.subset(n),
                None => data,
            };
            Ok(EvalSet {
                info: SetInfo {
                    benchmark: name.clone(),
                    language: "all".into(),
                    role: Role::OutOfDomain,
                    lareqa: true,
                },
                tasks: vec![data.task()],
            })
        })
        .collect()
}

fn english_bible(config: &StudyConfig) -> PathBuf {
    config
        .english_bible
        .clone()
        .unwrap_or_else(bitext::default_english_bible)
}

fn load_eval_bitext(
    config: &StudyConfig,
    spec: &str,
    data_dir: &Path,
    heldout: &BTreeMap<String, Bitext>,
) -> Result<(String, Bitext)> {
    // At most five fields, as `check_spec` counts them: the English path may hold ':'.
    let parts: Vec<&str> = spec.splitn(5, ':').collect();
    let bitext = match parts.as_slice() {
        ["tatoeba-heldout", lang] => heldout.get(*lang).cloned().ok_or_else(|| {
            Error::parameter("evaluation set", "a language of the group's split", spec)
        })?,
        ["tatoeba", lang] => bitext::tatoeba(data_dir, lang)?,
        ["mafand-test", lang] => bitext::mafand(data_dir, lang, "test")?,
        ["mafand-dev", lang] => bitext::mafand(data_dir, lang, "dev")?,
        ["bible", lang] => bitext::bible(data_dir, lang, &english_bible(config))?,
        ["files", set, lang, other, english] => bitext::read_aligned(
            set,
            lang,
            Path::new(other),
            bitext::ENGLISH,
            Path::new(english),
            bitext::BlankLines::Refuse,
        )?,
        _ => return Err(Error::parameter("evaluation set", "a data spec", spec)),
    };
    // The name the report pools the set under, as the config's role check derives it.
    Ok((super::config::benchmark_of(spec).to_string(), bitext))
}

/// Split the group's Tatoeba sources (writing the training parts under
/// `out/data/<group>/`), resolve its training sources, and build its evaluation sets
/// (after `lareqa`, which every group shares).
pub fn prepare_group(
    config: &StudyConfig,
    group: &Group,
    eval: &EvalBudget,
    data_dir: &Path,
    out: &Path,
    lareqa: &[EvalSet],
) -> Result<GroupData> {
    let tatoeba_langs: Vec<&str> = group
        .train
        .iter()
        .filter_map(|s| s.strip_prefix("tatoeba-train:"))
        .collect();
    let bitexts = tatoeba_langs
        .iter()
        .map(|l| bitext::tatoeba(data_dir, l))
        .collect::<Result<Vec<_>>>()?;
    let splits = split_group(&bitexts, config.split.heldout_percent);
    let dir = out.join("data").join(&group.name);
    let mut heldout = BTreeMap::new();
    let mut summary = Vec::new();
    let mut written = BTreeMap::new();
    for (b, s) in bitexts.iter().zip(&splits) {
        let lang = b.source_language.clone();
        if s.train.is_empty() || s.heldout.is_empty() {
            return Err(Error::value(
                format!("Tatoeba split of {lang}"),
                format!(
                    "expected pairs on both sides of the split, found {} training and {} held-out pairs of {}",
                    s.train.len(),
                    s.heldout.len(),
                    b.len()
                ),
            ));
        }
        let (other, english) = write_train_files(s, &dir)?;
        let abs = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
        written.insert(lang.clone(), (abs(other), abs(english)));
        summary.push(SplitSummary {
            language: lang.clone(),
            pairs: b.len(),
            train: s.train.len(),
            heldout: s.heldout.len(),
            dropped: s.dropped,
        });
        heldout.insert(lang, s.heldout.clone());
    }
    let sources = group
        .train
        .iter()
        .map(|s| match s.strip_prefix("tatoeba-train:") {
            Some(lang) => {
                let (o, e) = &written[lang];
                format!("files:{lang}:{}:{}", o.display(), e.display())
            }
            None => s.clone(),
        })
        .collect::<Vec<String>>();
    // The training sources load now (a few hundred ms), so that a misspelt language fails
    // the plan instead of the group's first training run, hours into a study.
    let pairs = crate::distill::data::load_sources(&sources, data_dir, &english_bible(config))
        .map_err(|e| {
            Error::value(
                format!("group {} training sources", group.name),
                e.to_string(),
            )
        })?
        .len();
    let mut sets: Vec<EvalSet> = lareqa.to_vec();
    for (role, specs) in [
        (Role::InDomain, &group.in_domain),
        (Role::OutOfDomain, &group.out_of_domain),
    ] {
        for spec in specs {
            let (benchmark, b) = load_eval_bitext(config, spec, data_dir, &heldout)?;
            sets.push(bitext_set(&benchmark, role, &b, eval.bitext_pairs));
        }
    }
    Ok(GroupData {
        name: group.name.clone(),
        sources,
        sets,
        split: summary,
        pairs,
    })
}

/// Every training run keeps training pairs after its `dev_pairs` are held out: checked
/// with the plan, not when the run starts (hours into a study).
pub fn check_dev_pairs(runs: &[RunSpec], groups: &[GroupData]) -> Result<()> {
    for run in runs {
        let (Some(d), Some(g)) = (&run.distill, groups.iter().find(|g| g.name == run.group)) else {
            continue;
        };
        if d.dev_pairs >= g.pairs {
            return Err(Error::parameter(
                "dev_pairs",
                format!(
                    "fewer than the {} training pairs of group {} (the rest train run {})",
                    g.pairs,
                    g.name,
                    run.name()
                ),
                d.dev_pairs,
            ));
        }
    }
    Ok(())
}

/// The share of top-k candidates in the query's own language, for LAReQA.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OwnLanguage {
    pub k: usize,
    /// Mean over queries.
    pub share: f64,
    /// Mean over each query language's queries.
    pub per_language: BTreeMap<String, f64>,
}

/// One task's evaluation of one model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskOutcome {
    pub set: SetInfo,
    /// `x→en`, `en→x`, or empty for LAReQA.
    pub direction: String,
    pub result: TaskResult,
    /// measure → each query's value, in query order.
    pub per_query: BTreeMap<String, Vec<f64>>,
    /// The queries' ids, in the same order (absent in results written before they were
    /// kept: the report then takes them from the evaluation sets).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_ids: Vec<String>,
    pub own_language: Option<OwnLanguage>,
}

/// A task's direction as [`TaskOutcome::direction`] names it: empty for LAReQA, else
/// `en→x` when the queries are English and `x→en` otherwise.
pub fn direction_of(info: &SetInfo, task: &RetrievalTask) -> String {
    match task.queries.first() {
        _ if info.lareqa => String::new(),
        Some(q) if q.language == bitext::ENGLISH => "en→x".into(),
        _ => "x→en".into(),
    }
}

/// The cluster of dependent queries that query `id` of a task of set `info` belongs to: a
/// LAReQA question (ids `<language>-<question id>`) with its translations, or a bitext pair
/// (ids `<language>-<index>`) in both directions.
pub fn query_cluster(info: &SetInfo, id: &str) -> String {
    if info.lareqa {
        id.split_once('-').map_or(id, |(_, q)| q).to_string()
    } else {
        let pair = id.rsplit_once('-').map_or(id, |(_, i)| i);
        format!("{}:{pair}", info.language)
    }
}

/// Evaluate `encoder` on every set; `cache` is the embedding cache directory. Returns
/// `None` when `stop()` turns true (checked between tasks).
pub fn evaluate_model(
    encoder: &dyn Encoder,
    sets: &[EvalSet],
    batch: usize,
    cache: Option<&Path>,
    lareqa_candidates: TextRole,
    stop: &dyn Fn() -> bool,
) -> Result<Option<Vec<TaskOutcome>>> {
    let backend = Backend::new(BackendKind::Cpu)?;
    let lareqa_measures = [Measure::Map, Measure::RecipRank, Measure::P(1)];
    let bitext_measures = [Measure::P(1), Measure::RecipRank];
    let mut out = Vec::new();
    for set in sets {
        for task in &set.tasks {
            if stop() {
                return Ok(None);
            }
            let languages = task.candidate_languages().len();
            let (measures, kept, k): (&[Measure], &[Measure], usize) = if set.info.lareqa {
                (&lareqa_measures, &[Measure::Map], languages.max(1))
            } else {
                (&bitext_measures, &bitext_measures, 1)
            };
            let settings = TaskSettings {
                scoring: Scoring::Dense,
                backend: &backend,
                measures,
                k,
                batch,
                cache,
                candidate_context: false,
                asymmetric_candidates: lareqa_candidates,
            };
            let hits = search_task(task, encoder, &settings)?;
            let mut result = evaluate_hits(task, &hits.pool, &hits.hits, measures);
            result.encode_seconds = hits.encode_seconds;
            result.search_seconds = hits.search_seconds;
            let per_query_values = kept
                .iter()
                .map(|&m| (m.to_string(), per_query(task, &hits.hits, m)))
                .collect();
            let own_language = set.info.lareqa.then(|| {
                let shares = own_language_share(task, &hits.hits, k);
                let mut per_language: BTreeMap<String, (f64, usize)> = BTreeMap::new();
                for (q, s) in task.queries.iter().zip(&shares) {
                    let e = per_language.entry(q.language.clone()).or_default();
                    e.0 += s;
                    e.1 += 1;
                }
                OwnLanguage {
                    k,
                    share: shares.iter().sum::<f64>() / shares.len().max(1) as f64,
                    per_language: per_language
                        .into_iter()
                        .map(|(l, (s, n))| (l, s / n as f64))
                        .collect(),
                }
            });
            out.push(TaskOutcome {
                set: set.info.clone(),
                direction: direction_of(&set.info, task),
                result,
                per_query: per_query_values,
                query_ids: task.queries.iter().map(|q| q.id.clone()).collect(),
                own_language,
            });
        }
    }
    Ok(Some(out))
}
