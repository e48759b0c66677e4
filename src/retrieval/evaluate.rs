//! One retrieval task end to end: encode, search the full pool, write the top-k run,
//! and compute the measures over the full pool (overall, per query language, and for
//! multilingual pools the query-language × candidate-language breakdown). The pieces are
//! public for callers that need more than the means: [`search_task`] gives the hits,
//! [`per_query`] each query's value of a measure (for paired tests), and
//! [`own_language_share`] the same-language share of each query's top candidates.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use super::encoder::{encode_pooled_cached, Encoder, TextRole};
use super::metrics::{mean_measures, Measure, RankedQuery};
use super::search::{maxsim_block, search, DenseVectors, Pool, QueryHits, Scorer, DEFAULT_BLOCK};
use super::trec::{self, RunWriter};
use crate::backend::Backend;
use crate::data::RetrievalTask;
use crate::error::{Error, Result};
use crate::ot::problem::{Embeddings, PackedDocs};

/// How candidates are scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scoring {
    /// Cosine of pooled vectors.
    Dense,
    /// Late interaction: Σ over query tokens of the best cosine with a candidate token.
    MaxSim,
}

impl std::str::FromStr for Scoring {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "dense" => Ok(Scoring::Dense),
            "maxsim" => Ok(Scoring::MaxSim),
            _ => Err(Error::parameter("scoring", "dense or maxsim", s)),
        }
    }
}

/// mAP of queries of one language over the candidates of one language.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Breakdown {
    pub query_languages: Vec<String>,
    pub candidate_languages: Vec<String>,
    /// `map[q][c]`; `None` where no query of language q has a relevant candidate in c.
    pub map: Vec<Vec<Option<f64>>>,
}

/// The measures of one task for one model.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TaskResult {
    pub task: String,
    pub queries: usize,
    pub candidates: usize,
    /// measure → mean over all queries (ranks over the full pool).
    pub metrics: BTreeMap<String, f64>,
    /// query language → measure → mean over that language's queries.
    pub per_language: BTreeMap<String, BTreeMap<String, f64>>,
    /// For pools with several candidate languages.
    pub breakdown: Option<Breakdown>,
    pub encode_seconds: f64,
    pub search_seconds: f64,
}

/// Settings of [`run_task`].
pub struct TaskSettings<'a> {
    pub scoring: Scoring,
    pub backend: &'a Backend,
    pub measures: &'a [Measure],
    /// Documents per query written to the run file.
    pub k: usize,
    pub batch: usize,
    /// Where pooled vectors are cached (`None`: no cache).
    pub cache: Option<&'a Path>,
    /// Encode each candidate as its sentence followed by its paragraph context (LAReQA).
    pub candidate_context: bool,
    /// The role of an asymmetric task's candidates (LAReQA answer sentences): `Passage`, as
    /// e5's model card says for question answering; `Query` reproduces evaluations made
    /// before the role was passed (both sides with e5's `query: ` prefix). Symmetric tasks
    /// (bitext) encode both sides as queries either way.
    pub asymmetric_candidates: TextRole,
}

impl TaskSettings<'_> {
    /// The role `task`'s candidates are encoded in.
    pub fn candidate_role(&self, task: &RetrievalTask) -> TextRole {
        if task.asymmetric {
            self.asymmetric_candidates
        } else {
            TextRole::Query
        }
    }
}

/// The ranked lists of one task: its pool, every query's hits (top `k` and the ranks of
/// its relevant candidates over the full pool) and the time spent.
pub struct TaskHits {
    pub pool: Pool,
    pub hits: Vec<QueryHits>,
    pub encode_seconds: f64,
    pub search_seconds: f64,
}

/// Encode, search and evaluate one task; write the top-`k` run to `run_file` if given.
pub fn run_task(
    task: &RetrievalTask,
    encoder: &dyn Encoder,
    settings: &TaskSettings<'_>,
    run_file: Option<&Path>,
) -> Result<TaskResult> {
    let TaskHits {
        pool,
        hits,
        encode_seconds,
        search_seconds,
    } = search_task(task, encoder, settings)?;
    if let Some(path) = run_file {
        write_run(
            path,
            &trec::tag_from_name(encoder.name()),
            task,
            &pool,
            &hits,
        )?;
    }
    let mut result = evaluate_hits(task, &pool, &hits, settings.measures);
    result.encode_seconds = encode_seconds;
    result.search_seconds = search_seconds;
    Ok(result)
}

/// Encode the task's texts (through the cache for dense scoring) and search the full pool.
pub fn search_task(
    task: &RetrievalTask,
    encoder: &dyn Encoder,
    settings: &TaskSettings<'_>,
) -> Result<TaskHits> {
    let q_texts: Vec<&str> = task.queries.iter().map(|t| t.text.as_str()).collect();
    let with_context: Vec<String>;
    let c_texts: Vec<&str> = if settings.candidate_context {
        with_context = task
            .candidates
            .iter()
            .map(|t| match &t.context {
                Some(c) => format!("{}\n{c}", t.text),
                None => t.text.clone(),
            })
            .collect();
        with_context.iter().map(String::as_str).collect()
    } else {
        task.candidates.iter().map(|t| t.text.as_str()).collect()
    };
    let groups: Vec<&str> = task
        .candidates
        .iter()
        .map(|t| t.language.as_str())
        .collect();
    let pool = Pool::new(
        task.candidates.iter().map(|t| t.id.clone()).collect(),
        &groups,
    )?;
    let d = encoder.dim();
    let t0 = Instant::now();
    let hits = match settings.scoring {
        Scoring::Dense => {
            let label_q = format!("{} queries", task.name);
            let label_c = format!("{} candidates", task.name);
            let q = encode_pooled_cached(
                encoder,
                &q_texts,
                TextRole::Query,
                settings.batch,
                settings.cache,
                &label_q,
            )?;
            let c = encode_pooled_cached(
                encoder,
                &c_texts,
                settings.candidate_role(task),
                settings.batch,
                settings.cache,
                &label_c,
            )?;
            let q = DenseVectors::new("query vectors", q_texts.len(), d, q)?;
            let c = DenseVectors::new("candidate vectors", c_texts.len(), d, c)?;
            let encode = t0.elapsed().as_secs_f64();
            let t1 = Instant::now();
            let scorer = Scorer::Dense {
                queries: &q,
                corpus: &c,
            };
            let hits = search(&scorer, &pool, &task.relevant, settings.k, DEFAULT_BLOCK)?;
            (hits, encode, t1.elapsed().as_secs_f64())
        }
        Scoring::MaxSim => {
            let q = encoder.encode_tokens(&q_texts, TextRole::Query)?;
            let c = encoder.encode_tokens(&c_texts, settings.candidate_role(task))?;
            let n = q.lengths.iter().copied().max().unwrap_or(1);
            let mut padded = vec![0.0f32; q.lengths.len() * n * d];
            let mut off = 0;
            for (i, &len) in q.lengths.iter().enumerate() {
                padded[i * n * d..(i * n + len) * d].copy_from_slice(&q.data[off..off + len * d]);
                off += len * d;
            }
            let q = Embeddings::new(
                "query tokens",
                q.lengths.len(),
                n,
                d,
                padded,
                Some(q.lengths),
            )?;
            let c = PackedDocs::new("candidate tokens", d, c.data, c.lengths)?;
            let encode = t0.elapsed().as_secs_f64();
            let t1 = Instant::now();
            let scorer = Scorer::MaxSim {
                backend: settings.backend,
                queries: &q,
                corpus: &c,
            };
            let block = maxsim_block(c.len(), n * d * std::mem::size_of::<f32>());
            let hits = search(&scorer, &pool, &task.relevant, settings.k, block)?;
            (hits, encode, t1.elapsed().as_secs_f64())
        }
    };
    let (hits, encode_seconds, search_seconds) = hits;
    Ok(TaskHits {
        pool,
        hits,
        encode_seconds,
        search_seconds,
    })
}

/// Write the top hits of every query as a TREC run, whole or not at all (a failed write
/// leaves the previous run as it was).
pub fn write_run(
    path: &Path,
    tag: &str,
    task: &RetrievalTask,
    pool: &Pool,
    hits: &[QueryHits],
) -> Result<()> {
    crate::io::write_through_temp(path, |tmp| {
        let mut w = RunWriter::create(tmp, tag)?;
        for (q, h) in task.queries.iter().zip(hits) {
            w.query(
                &q.id,
                h.top
                    .iter()
                    .map(|&(c, s)| (pool.ids[c as usize].as_str(), s)),
            )?;
        }
        w.finish()
    })
}

/// The measures from the ranks found by [`search`].
pub fn evaluate_hits(
    task: &RetrievalTask,
    pool: &Pool,
    hits: &[QueryHits],
    measures: &[Measure],
) -> TaskResult {
    let ranked: Vec<RankedQuery> = task
        .relevant
        .iter()
        .zip(hits)
        .map(|(rel, h)| RankedQuery::binary(rel.len(), &h.relevant_ranks))
        .collect();
    let all: Vec<&RankedQuery> = ranked.iter().collect();
    let metrics = mean_measures(&all, measures);
    let q_langs = task.query_languages();
    let per_language = q_langs
        .iter()
        .map(|l| {
            let qs: Vec<&RankedQuery> = task
                .queries
                .iter()
                .zip(&ranked)
                .filter(|(q, _)| &q.language == l)
                .map(|(_, r)| r)
                .collect();
            (l.clone(), mean_measures(&qs, measures))
        })
        .collect();
    let breakdown = (pool.group_names.len() > 1).then(|| {
        let groups = &pool.group_names;
        let map = q_langs
            .iter()
            .map(|ql| {
                (0..groups.len())
                    .map(|g| {
                        let aps: Vec<f64> = task
                            .queries
                            .iter()
                            .zip(&task.relevant)
                            .zip(hits)
                            .filter(|((q, _), _)| &q.language == ql)
                            .filter_map(|((_, rel), h)| {
                                let ranks: Vec<usize> = rel
                                    .iter()
                                    .zip(&h.relevant_group_ranks)
                                    .filter(|(&c, _)| pool.group[c] as usize == g)
                                    .map(|(_, &r)| r)
                                    .collect();
                                (!ranks.is_empty()).then(|| {
                                    RankedQuery::binary(ranks.len(), &ranks).measure(Measure::Map)
                                })
                            })
                            .collect();
                        (!aps.is_empty()).then(|| aps.iter().sum::<f64>() / aps.len() as f64)
                    })
                    .collect()
            })
            .collect();
        Breakdown {
            query_languages: q_langs.clone(),
            candidate_languages: groups.clone(),
            map,
        }
    });
    TaskResult {
        task: task.name.clone(),
        queries: task.queries.len(),
        candidates: task.candidates.len(),
        metrics,
        per_language,
        breakdown,
        encode_seconds: 0.0,
        search_seconds: 0.0,
    }
}

/// Each query's value of `measure` (ranks over the full pool), in query order: what a
/// paired significance test between two models needs.
pub fn per_query(task: &RetrievalTask, hits: &[QueryHits], measure: Measure) -> Vec<f64> {
    task.relevant
        .iter()
        .zip(hits)
        .map(|(rel, h)| RankedQuery::binary(rel.len(), &h.relevant_ranks).measure(measure))
        .collect()
}

/// For each query, the share of its top `k` candidates written in the query's own language
/// (LAReQA's same-language bias: a model that ignores language and has one relevant
/// candidate per language in the pool puts about 1/L of them there, a model that prefers
/// its own language up to 1). Needs hits searched with at least `k` candidates kept.
pub fn own_language_share(task: &RetrievalTask, hits: &[QueryHits], k: usize) -> Vec<f64> {
    task.queries
        .iter()
        .zip(hits)
        .map(|(q, h)| {
            let top = &h.top[..k.min(h.top.len())];
            if top.is_empty() {
                return 0.0;
            }
            let own = top
                .iter()
                .filter(|&&(c, _)| task.candidates[c as usize].language == q.language)
                .count();
            own as f64 / top.len() as f64
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Text;
    use crate::retrieval::encoder::tests::Recording;

    fn text(id: &str, lang: &str) -> Text {
        Text {
            id: id.into(),
            language: lang.into(),
            text: id.into(),
            context: None,
        }
    }

    #[test]
    fn asymmetric_tasks_encode_their_candidates_as_passages() {
        let backend = crate::backend::Backend::new(crate::backend::BackendKind::Cpu).unwrap();
        let measures = [Measure::Map];
        for scoring in [Scoring::Dense, Scoring::MaxSim] {
            for (asymmetric, setting, want) in [
                (true, TextRole::Passage, TextRole::Passage),
                (true, TextRole::Query, TextRole::Query),
                (false, TextRole::Passage, TextRole::Query),
            ] {
                let task = RetrievalTask {
                    name: "t".into(),
                    queries: vec![text("q1", "en"), text("q2", "de")],
                    candidates: vec![text("c1", "en"), text("c2", "de")],
                    relevant: vec![vec![0], vec![1]],
                    asymmetric,
                };
                let enc = Recording::default();
                let settings = TaskSettings {
                    scoring,
                    backend: &backend,
                    measures: &measures,
                    k: 2,
                    batch: 8,
                    cache: None,
                    candidate_context: false,
                    asymmetric_candidates: setting,
                };
                search_task(&task, &enc, &settings).unwrap();
                let role_of = |t: &str| enc.role_of(t).unwrap();
                assert_eq!(role_of("q1"), TextRole::Query);
                assert_eq!(role_of("c2"), want, "{asymmetric} {setting:?}");
            }
        }
    }

    #[test]
    fn per_query_values_and_own_language_share() {
        let task = RetrievalTask {
            name: "t".into(),
            queries: vec![text("q1", "en"), text("q2", "de")],
            candidates: vec![
                text("c1", "en"),
                text("c2", "de"),
                text("c3", "en"),
                text("c4", "de"),
            ],
            relevant: vec![vec![0, 1], vec![3]],
            asymmetric: true,
        };
        let hits = vec![
            QueryHits {
                top: vec![(0, 0.9), (2, 0.8), (1, 0.7)],
                relevant_ranks: vec![1, 3],
                relevant_group_ranks: vec![1, 1],
            },
            QueryHits {
                top: vec![(0, 0.9), (3, 0.8), (2, 0.1)],
                relevant_ranks: vec![2],
                relevant_group_ranks: vec![1],
            },
        ];
        let ap = per_query(&task, &hits, Measure::Map);
        assert!((ap[0] - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
        assert!((ap[1] - 0.5).abs() < 1e-12);
        assert_eq!(per_query(&task, &hits, Measure::P(1)), [1.0, 0.0]);
        // q1 (en): top 2 are c1, c3, both English; q2 (de): c1 (en), c4 (de).
        assert_eq!(own_language_share(&task, &hits, 2), [1.0, 0.5]);
        let three = own_language_share(&task, &hits, 3);
        assert!((three[0] - 2.0 / 3.0).abs() < 1e-12 && (three[1] - 1.0 / 3.0).abs() < 1e-12);
    }
}
