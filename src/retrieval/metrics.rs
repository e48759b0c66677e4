//! Retrieval measures with trec_eval's semantics (checked against pytrec_eval fixtures in
//! `tests/metrics_trec.rs`).
//!
//! What trec_eval does, and so what this module does:
//!
//! - a query's documents are ranked by score descending, ties broken by docno
//!   descending (byte-wise); the rank column of a run file is ignored and every retrieved
//!   document counts (no cut at 1,000);
//! - a document is relevant when its qrels level is ≥ 1; unjudged documents and levels
//!   ≤ 0 are non-relevant; `ndcg` gains are the levels, negative levels count as 0;
//! - a query is evaluated when it is in the run and has a qrels entry; one whose qrels
//!   has no relevant document scores 0 on every measure and still counts in the mean;
//! - `map` = Σ_{relevant retrieved at rank r} P@r / R (R = relevant in qrels),
//!   `map_cut_k` the same over ranks ≤ k, `P_k` = relevant in top k / k,
//!   `recall_k` = relevant in top k / R, `recip_rank` = 1 / rank of the first relevant,
//!   `ndcg_cut_k` = DCG@k / ideal DCG@k with DCG = Σ gain / log2(rank + 1).
//!
//! All measures only need the ranks and levels of the relevant retrieved documents, so a
//! search over a full pool can evaluate exactly without writing the whole ranking.

use std::collections::BTreeMap;
use std::fmt;

use super::trec::{Qrels, Run};
use crate::error::{Error, Result};

/// trec_eval's default cutoffs for `P`, `recall`, `map_cut`, `ndcg_cut` given without one.
pub const DEFAULT_CUTOFFS: [usize; 9] = [5, 10, 15, 20, 30, 100, 200, 500, 1000];

/// One measure, named as trec_eval names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Measure {
    Map,
    MapCut(usize),
    NdcgCut(usize),
    RecipRank,
    Recall(usize),
    P(usize),
}

impl fmt::Display for Measure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Measure::Map => write!(f, "map"),
            Measure::MapCut(k) => write!(f, "map_cut_{k}"),
            Measure::NdcgCut(k) => write!(f, "ndcg_cut_{k}"),
            Measure::RecipRank => write!(f, "recip_rank"),
            Measure::Recall(k) => write!(f, "recall_{k}"),
            Measure::P(k) => write!(f, "P_{k}"),
        }
    }
}

impl Measure {
    /// Parse a comma-separated list: `map`, `recip_rank`, `P_1`, `recall_100`,
    /// `map_cut_10`, `ndcg_cut_10`, or trec_eval's `P.1,5` form; a family without a cutoff
    /// (`P`, `recall`, `map_cut`, `ndcg_cut`) expands to [`DEFAULT_CUTOFFS`].
    pub fn parse_list(s: &str) -> Result<Vec<Measure>> {
        let mut out = Vec::new();
        // trec_eval's `P.1,5` form: a family with a dot takes the following numbers.
        let mut family: Option<&str> = None;
        for item in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if let (Some(fam), Ok(k)) = (family, item.parse::<usize>()) {
                out.push(Measure::with_cutoff(fam, k, item)?);
                continue;
            }
            family = None;
            if let Some((fam, k)) = item.split_once('.') {
                let k = parse_cutoff(k, item)?;
                out.push(Measure::with_cutoff(fam, k, item)?);
                family = Some(fam);
                continue;
            }
            match item {
                "map" => out.push(Measure::Map),
                "recip_rank" => out.push(Measure::RecipRank),
                "P" | "recall" | "map_cut" | "ndcg_cut" => {
                    for k in DEFAULT_CUTOFFS {
                        out.push(Measure::with_cutoff(item, k, item)?);
                    }
                }
                _ => {
                    let (fam, k) = item.rsplit_once('_').ok_or_else(|| unknown(item))?;
                    let k = parse_cutoff(k, item)?;
                    out.push(Measure::with_cutoff(fam, k, item)?);
                }
            }
        }
        if out.is_empty() {
            return Err(Error::parameter("metrics", "at least one measure", s));
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    fn with_cutoff(family: &str, k: usize, item: &str) -> Result<Measure> {
        if k == 0 {
            return Err(Error::parameter("metrics", "a cutoff ≥ 1", item));
        }
        Ok(match family {
            "P" => Measure::P(k),
            "recall" => Measure::Recall(k),
            "map_cut" => Measure::MapCut(k),
            "ndcg_cut" => Measure::NdcgCut(k),
            _ => return Err(unknown(item)),
        })
    }
}

fn parse_cutoff(k: &str, item: &str) -> Result<usize> {
    k.parse().map_err(|_| unknown(item))
}

fn unknown(item: &str) -> Error {
    Error::parameter(
        "metrics",
        "map, recip_rank, P_k, recall_k, map_cut_k or ndcg_cut_k",
        item,
    )
}

/// What the measures need from one ranked query: the number of relevant documents in the
/// qrels, the qrels levels (for the ideal DCG), and the rank (1-based) and level of every
/// retrieved document whose level is positive, by increasing rank.
#[derive(Clone, Debug, Default)]
pub struct RankedQuery {
    pub num_rel: usize,
    /// Positive qrels levels, largest first.
    pub ideal: Vec<i64>,
    pub hits: Vec<(usize, i64)>,
}

impl RankedQuery {
    /// A query with binary judgements: `ranks` of its relevant documents (any order) and
    /// `num_rel` relevant documents in all.
    pub fn binary(num_rel: usize, ranks: &[usize]) -> RankedQuery {
        let mut hits: Vec<(usize, i64)> = ranks.iter().map(|&r| (r, 1)).collect();
        hits.sort_unstable();
        RankedQuery {
            num_rel,
            ideal: vec![1; num_rel],
            hits,
        }
    }

    pub fn measure(&self, m: Measure) -> f64 {
        let rel = |k: usize| self.hits.iter().take_while(|h| h.0 <= k).count();
        let r = self.num_rel as f64;
        let value = match m {
            Measure::Map => self.average_precision(usize::MAX),
            Measure::MapCut(k) => self.average_precision(k),
            Measure::RecipRank => self
                .hits
                .first()
                .map_or(0.0, |&(rank, _)| 1.0 / rank as f64),
            Measure::P(k) => rel(k) as f64 / k as f64,
            Measure::Recall(k) => {
                if self.num_rel == 0 {
                    0.0
                } else {
                    rel(k) as f64 / r
                }
            }
            Measure::NdcgCut(k) => {
                let dcg: f64 = self
                    .hits
                    .iter()
                    .take_while(|h| h.0 <= k)
                    .map(|&(rank, g)| g as f64 / ((rank + 1) as f64).log2())
                    .sum();
                let ideal: f64 = self
                    .ideal
                    .iter()
                    .take(k)
                    .enumerate()
                    .map(|(i, &g)| g as f64 / ((i + 2) as f64).log2())
                    .sum();
                if ideal > 0.0 {
                    dcg / ideal
                } else {
                    0.0
                }
            }
        };
        // An empty f64 sum is -0.0 (no hit within the cut-off gave AP and nDCG -0, printed
        // "-0.0"): + 0.0 makes it 0.
        value + 0.0
    }

    fn average_precision(&self, cut: usize) -> f64 {
        if self.num_rel == 0 {
            return 0.0;
        }
        let sum: f64 = self
            .hits
            .iter()
            .take_while(|h| h.0 <= cut)
            .enumerate()
            .map(|(i, &(rank, _))| (i + 1) as f64 / rank as f64)
            .sum();
        sum / self.num_rel as f64
    }
}

/// Rank a run's query as trec_eval does and collect what the measures need.
pub fn rank_query(judged: &BTreeMap<String, i64>, retrieved: &[(String, f64)]) -> RankedQuery {
    // trec_eval 9.x (and pytrec_eval, which embeds it, and so the committed fixtures) keeps
    // scores as C `float`s and compares them with `<` (trec_eval 10 reads doubles): scores
    // that are equal in f32 (0.83123457123 and 0.83123456789; 1e40 and 1e39, both infinite)
    // tie, and so do -0 and 0 (adding 0.0 turns -0 into 0). Scores may be ±inf (they sort first and last,
    // and tie with each other); the run reader refuses NaN.
    let key = |s: f64| (s as f32) + 0.0;
    let mut order: Vec<usize> = (0..retrieved.len()).collect();
    order.sort_by(|&a, &b| {
        let (da, sa) = &retrieved[a];
        let (db, sb) = &retrieved[b];
        key(*sb)
            .total_cmp(&key(*sa))
            .then_with(|| db.as_bytes().cmp(da.as_bytes()))
    });
    let hits = order
        .iter()
        .enumerate()
        .filter_map(|(i, &d)| {
            let level = *judged.get(&retrieved[d].0)?;
            (level > 0).then_some((i + 1, level))
        })
        .collect();
    let mut ideal: Vec<i64> = judged.values().copied().filter(|&l| l > 0).collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    RankedQuery {
        num_rel: ideal.len(),
        ideal,
        hits,
    }
}

/// Per-query values and means of a run against qrels.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Evaluation {
    /// measure name → mean over the evaluated queries.
    pub mean: BTreeMap<String, f64>,
    /// qid → measure name → value.
    pub per_query: BTreeMap<String, BTreeMap<String, f64>>,
}

/// Evaluate every query of `run` that has a qrels entry.
pub fn evaluate(qrels: &Qrels, run: &Run, measures: &[Measure]) -> Evaluation {
    let ranked: Vec<(&String, RankedQuery)> = run
        .iter()
        .filter_map(|(qid, docs)| Some((qid, rank_query(qrels.get(qid)?, docs))))
        .collect();
    let per_query: BTreeMap<String, BTreeMap<String, f64>> = ranked
        .iter()
        .map(|(qid, rq)| {
            let values = measures
                .iter()
                .map(|&m| (m.to_string(), rq.measure(m)))
                .collect();
            (qid.to_string(), values)
        })
        .collect();
    let queries: Vec<&RankedQuery> = ranked.iter().map(|(_, r)| r).collect();
    Evaluation {
        mean: mean_measures(&queries, measures),
        per_query,
    }
}

/// measure name → mean over `queries` (0 when there are none; trec_eval stops with "No
/// queries with both results and relevance info" there, and so does `optical eval trec`).
pub fn mean_measures(queries: &[&RankedQuery], measures: &[Measure]) -> BTreeMap<String, f64> {
    measures
        .iter()
        .map(|&m| {
            let sum: f64 = queries.iter().map(|q| q.measure(m)).sum();
            let mean = if queries.is_empty() {
                0.0
            } else {
                sum / queries.len() as f64
            };
            (m.to_string(), mean)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_families_and_dot_lists() {
        let m =
            Measure::parse_list("map,P_1,recall_100,ndcg_cut_10,recip_rank,map_cut.3,7").unwrap();
        let names: Vec<String> = m.iter().map(|m| m.to_string()).collect();
        assert_eq!(
            names,
            [
                "map",
                "map_cut_3",
                "map_cut_7",
                "ndcg_cut_10",
                "recip_rank",
                "recall_100",
                "P_1"
            ]
        );
        assert_eq!(
            Measure::parse_list("P").unwrap().len(),
            DEFAULT_CUTOFFS.len()
        );
        assert!(Measure::parse_list("bpref").is_err());
        assert!(Measure::parse_list("P_0").is_err());
        assert!(Measure::parse_list("").is_err());
    }

    #[test]
    fn ties_are_broken_by_docno_descending() {
        // a and c tie; trec_eval puts c (the larger docno) first.
        let judged: BTreeMap<String, i64> = [("a".to_string(), 1), ("c".to_string(), 0)]
            .into_iter()
            .collect();
        let run = vec![("a".to_string(), 1.0), ("c".to_string(), 1.0)];
        let rq = rank_query(&judged, &run);
        assert_eq!(rq.hits, vec![(2, 1)]);
        assert!((rq.measure(Measure::RecipRank) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn a_query_with_no_hit_scores_positive_zero() {
        let judged: BTreeMap<String, i64> = [("a".to_string(), 1)].into_iter().collect();
        let rq = rank_query(&judged, &[("b".to_string(), 1.0)]);
        for m in Measure::parse_list("map,map_cut_5,recip_rank,P_1,recall_5,ndcg_cut_5").unwrap() {
            let v = rq.measure(m);
            assert!(v == 0.0 && v.is_sign_positive(), "{m}: {v:?}");
        }
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_first_qid() {
        let dir = tempfile::tempdir().unwrap();
        let (qrels, run) = (dir.path().join("qrels"), dir.path().join("run"));
        std::fs::write(&qrels, "\u{feff}q1 0 a 1\nq2 0 b 1\n").unwrap();
        std::fs::write(
            &run,
            "\u{feff}q1 Q0 c 1 2 t\nq1 Q0 a 2 1 t\nq2 Q0 b 1 1 t\n",
        )
        .unwrap();
        let qrels = crate::retrieval::trec::read_qrels(&qrels).unwrap();
        let run = crate::retrieval::trec::read_run(&run).unwrap();
        let e = evaluate(&qrels, &run, &[Measure::Map]);
        assert_eq!(e.per_query.len(), 2, "{:?}", e.per_query);
        assert!((e.mean["map"] - 0.75).abs() < 1e-12, "{:?}", e.mean);
    }

    #[test]
    fn scores_equal_in_f32_tie_as_in_trec_eval() {
        // trec_eval stores scores as C floats: each pair below ties there, and c (the
        // larger docno) comes first, so the relevant a is at rank 2.
        let judged: BTreeMap<String, i64> = [("a".to_string(), 1)].into_iter().collect();
        for (sa, sc) in [
            (0.8312345712345678, 0.8312345678901234),
            (0.0, -0.0),
            (1e40, 1e39),
        ] {
            let run = vec![("a".to_string(), sa), ("c".to_string(), sc)];
            assert_eq!(rank_query(&judged, &run).hits, vec![(2, 1)], "{sa} vs {sc}");
        }
        // Scores apart in f32 still order by score.
        let run = vec![("a".to_string(), 0.5f64.next_up()), ("c".to_string(), 0.5)];
        assert_eq!(rank_query(&judged, &run).hits, vec![(2, 1)]);
        let run = vec![("a".to_string(), 0.50000006), ("c".to_string(), 0.5)];
        assert_eq!(rank_query(&judged, &run).hits, vec![(1, 1)]);
    }
}
