//! Exact search over a candidate pool: dense cosine over pooled vectors (blocked matrix
//! products, query blocks spread over threads) and late-interaction MaxSim through
//! [`Backend::maxsim`].
//!
//! Every query is scored against every candidate, so besides the top `k` the search
//! knows the exact rank of each relevant candidate in the full pool — which is what
//! LAReQA's mAP over the pool needs — and its rank among the candidates of its own
//! group (language), for the query-language × candidate-language breakdown. Ranks use
//! trec_eval's order (score descending, then docno descending), so a run written from
//! the top `k` and evaluated by trec_eval agrees with the measures computed here.

use rayon::prelude::*;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::ot::problem::{Embeddings, PackedDocs};

/// Queries scored per block: bounds the score buffer to `block × m` floats per thread.
pub const DEFAULT_BLOCK: usize = 64;

/// Queries per MaxSim block against `m` candidates, each query taking `query_bytes` of
/// (padded) token embeddings: about 16 M scores (64 MB) per block, so that the per-call
/// work of the backends (normalising, or uploading, the candidates' tokens) is amortised
/// over many queries; at least [`DEFAULT_BLOCK`] and at most 4096 queries, but never more
/// than 64 MiB of query embeddings (half of wgpu's default storage-binding limit).
pub fn maxsim_block(m: usize, query_bytes: usize) -> usize {
    let by_scores = (16usize << 20) / m.max(1);
    let by_queries = (64usize << 20) / query_bytes.max(1);
    by_scores.clamp(DEFAULT_BLOCK, 4096).min(by_queries).max(1)
}

/// The candidates' identity: docnos (for ties and output) and an optional group
/// (language) per candidate.
#[derive(Clone, Debug)]
pub struct Pool {
    pub ids: Vec<String>,
    /// Position of each docno in byte-wise ascending order: a larger key wins a tie.
    tie_key: Vec<u32>,
    pub group: Vec<u16>,
    pub group_names: Vec<String>,
}

impl Pool {
    /// A pool from docnos and the group name of each candidate (e.g. its language).
    pub fn new(ids: Vec<String>, groups: &[&str]) -> Result<Pool> {
        if ids.is_empty() {
            return Err(Error::value(
                "candidate pool",
                "expected at least one candidate, found none",
            ));
        }
        if groups.len() != ids.len() {
            return Err(Error::shape(
                "candidate groups",
                format!("({},), one per candidate", ids.len()),
                format!("({},)", groups.len()),
            ));
        }
        // Candidates are numbered in 32 bits (tie keys), groups in 16.
        if u32::try_from(ids.len()).is_err() {
            return Err(Error::value(
                "candidate pool",
                format!(
                    "expected at most {} candidates, found {}",
                    u32::MAX,
                    ids.len()
                ),
            ));
        }
        let mut order: Vec<u32> = (0..ids.len() as u32).collect();
        order.sort_by(|&a, &b| ids[a as usize].as_bytes().cmp(ids[b as usize].as_bytes()));
        for w in order.windows(2) {
            if ids[w[0] as usize] == ids[w[1] as usize] {
                return Err(Error::value(
                    "candidate pool",
                    format!(
                        "docno {:?} is used twice; expected unique docnos",
                        ids[w[0] as usize]
                    ),
                ));
            }
        }
        let mut tie_key = vec![0u32; ids.len()];
        for (pos, &i) in order.iter().enumerate() {
            tie_key[i as usize] = pos as u32;
        }
        let mut group_names: Vec<String> = Vec::new();
        let mut index: std::collections::HashMap<&str, u16> = std::collections::HashMap::new();
        let mut group = Vec::with_capacity(ids.len());
        for &g in groups {
            let k = match index.get(g) {
                Some(&k) => k,
                None => {
                    let Ok(k) = u16::try_from(group_names.len()) else {
                        let distinct = groups
                            .iter()
                            .collect::<std::collections::HashSet<_>>()
                            .len();
                        return Err(Error::value(
                            "candidate groups",
                            format!(
                                "expected at most {} distinct groups (languages), found {distinct}",
                                u16::MAX as usize + 1
                            ),
                        ));
                    };
                    group_names.push(g.to_string());
                    index.insert(g, k);
                    k
                }
            };
            group.push(k);
        }
        Ok(Pool {
            ids,
            tie_key,
            group,
            group_names,
        })
    }

    /// A pool with docnos `0 .. m-1` in one group.
    pub fn numbered(m: usize) -> Result<Pool> {
        let ids: Vec<String> = (0..m).map(|i| i.to_string()).collect();
        Pool::new(ids, &vec![""; m])
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Row-normalised dense vectors `(n, d)`: the dot product of two rows is their cosine
/// (a zero vector stays zero, so its cosine with anything is 0). Built by
/// [`DenseVectors::new`] only, which checks the shape and the values: a search reads
/// `data` as `n × d` values without checking again.
#[derive(Clone, Debug)]
pub struct DenseVectors {
    n: usize,
    d: usize,
    data: Vec<f32>,
}

impl DenseVectors {
    pub fn new(name: &str, n: usize, d: usize, mut data: Vec<f32>) -> Result<DenseVectors> {
        if n == 0 || d == 0 {
            return Err(Error::shape(
                name,
                "a non-empty (n, d) array (n ≥ 1 vectors of d ≥ 1 values)",
                format!("({n}, {d})"),
            ));
        }
        if n.checked_mul(d) != Some(data.len()) {
            return Err(Error::shape(
                name,
                format!(
                    "an (n, d) = ({n}, {d}) array of {} values",
                    n as u128 * d as u128
                ),
                format!("{} values", data.len()),
            ));
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(Error::value(
                name,
                format!("row {} has a non-finite value {}", i / d, data[i]),
            ));
        }
        data.par_chunks_mut(d).for_each(|row| {
            let norm = row
                .iter()
                .map(|&v| (v as f64) * (v as f64))
                .sum::<f64>()
                .sqrt();
            // Divided in f64: an f32 inverse overflows for norms below about 3e-39 (the
            // row became NaN and infinities) and loses precision for norms near f32's top.
            if norm > 0.0 {
                row.iter_mut()
                    .for_each(|v| *v = (f64::from(*v) / norm) as f32);
            }
        });
        Ok(DenseVectors { n, d, data })
    }

    /// Number of vectors.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Dimension of each vector.
    pub fn d(&self) -> usize {
        self.d
    }

    /// The normalised vectors, row-major `(n, d)`.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// Vector `i` (panics when `i ≥ n`, as slice indexing does).
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.d..(i + 1) * self.d]
    }
}

/// What is scored: pooled vectors by cosine, or token vectors by MaxSim.
pub enum Scorer<'a> {
    Dense {
        queries: &'a DenseVectors,
        corpus: &'a DenseVectors,
    },
    MaxSim {
        backend: &'a Backend,
        queries: &'a Embeddings,
        corpus: &'a PackedDocs,
    },
}

impl Scorer<'_> {
    pub fn num_queries(&self) -> usize {
        match self {
            Scorer::Dense { queries, .. } => queries.n,
            Scorer::MaxSim { queries, .. } => queries.b,
        }
    }

    pub fn num_candidates(&self) -> usize {
        match self {
            Scorer::Dense { corpus, .. } => corpus.n,
            Scorer::MaxSim { corpus, .. } => corpus.len(),
        }
    }

    fn check(&self) -> Result<()> {
        let (dq, dc) = match self {
            Scorer::Dense { queries, corpus } => (queries.d, corpus.d),
            Scorer::MaxSim {
                queries, corpus, ..
            } => (queries.d, corpus.d),
        };
        if dq != dc {
            return Err(Error::shape(
                "corpus embeddings",
                format!("dimension {dq}, the queries' dimension"),
                format!("dimension {dc}"),
            ));
        }
        Ok(())
    }

    /// Scores of queries `q0 .. q0 + rows` against every candidate, row-major.
    fn score_block(&self, q0: usize, rows: usize, out: &mut [f32]) -> Result<()> {
        match self {
            Scorer::Dense { queries, corpus } => {
                let (m, d) = (corpus.n, corpus.d);
                debug_assert_eq!(out.len(), rows * m);
                let a = &queries.data[q0 * d..(q0 + rows) * d];
                // SAFETY: `a` holds `rows × d` values (row stride d), `corpus.data` holds
                // `m × d` values read as the transposed `d × m` operand (row stride 1,
                // column stride d), and `out` holds `rows × m` values (row stride m);
                // all three are live, distinct allocations for the whole call.
                unsafe {
                    matrixmultiply::sgemm(
                        rows,
                        d,
                        m,
                        1.0,
                        a.as_ptr(),
                        d as isize,
                        1,
                        corpus.data.as_ptr(),
                        1,
                        d as isize,
                        0.0,
                        out.as_mut_ptr(),
                        m as isize,
                        1,
                    );
                }
                Ok(())
            }
            Scorer::MaxSim {
                backend,
                queries,
                corpus,
            } => {
                let (n, d) = (queries.n, queries.d);
                let block = Embeddings {
                    b: rows,
                    n,
                    d,
                    data: queries.data[q0 * n * d..(q0 + rows) * n * d].to_vec(),
                    lengths: queries.lengths[q0..q0 + rows].to_vec(),
                };
                let scores = backend.maxsim(&block, corpus)?;
                out.copy_from_slice(&scores);
                Ok(())
            }
        }
    }
}

/// The result of one query.
#[derive(Clone, Debug, Default)]
pub struct QueryHits {
    /// The best `k` candidates, best first: (candidate index, score).
    pub top: Vec<(u32, f32)>,
    /// The 1-based rank in the full pool of each relevant candidate (in the order given).
    pub relevant_ranks: Vec<usize>,
    /// The 1-based rank of each relevant candidate among the candidates of its group.
    pub relevant_group_ranks: Vec<usize>,
}

/// Score every query against the pool; keep the top `k` and the ranks of `relevant[q]`
/// (pass an empty slice when there are no judgements). `block` queries are scored at a
/// time; dense blocks run in parallel, MaxSim blocks in turn (the kernel is parallel).
pub fn search(
    scorer: &Scorer<'_>,
    pool: &Pool,
    relevant: &[Vec<usize>],
    k: usize,
    block: usize,
) -> Result<Vec<QueryHits>> {
    scorer.check()?;
    let (n, m) = (scorer.num_queries(), scorer.num_candidates());
    if m != pool.len() {
        return Err(Error::shape(
            "candidate pool",
            format!("{} candidates (the docnos given)", pool.len()),
            format!("{m} candidate embeddings"),
        ));
    }
    if !relevant.is_empty() && relevant.len() != n {
        return Err(Error::shape(
            "relevance judgements",
            format!("one list per query ({n})"),
            format!("{} lists", relevant.len()),
        ));
    }
    if let Some((q, &c)) = relevant
        .iter()
        .enumerate()
        .flat_map(|(q, r)| r.iter().map(move |c| (q, c)))
        .find(|&(_, &c)| c >= m)
    {
        return Err(Error::value(
            "relevance judgements",
            format!("query {q} names candidate {c}; the pool has {m}"),
        ));
    }
    if k == 0 {
        return Err(Error::parameter("k", "k ≥ 1", k));
    }
    if block == 0 {
        return Err(Error::parameter("block", "block ≥ 1", block));
    }
    let starts: Vec<usize> = (0..n).step_by(block).collect();
    let run_block = |&q0: &usize| -> Result<Vec<QueryHits>> {
        let rows = block.min(n - q0);
        // A block's scores are rows × m floats: a block too large for memory is an error
        // that names the setting, not an abort.
        let mut scores: Vec<f32> = Vec::new();
        rows.checked_mul(m)
            .and_then(|len| scores.try_reserve_exact(len).ok().map(|()| len))
            .map(|len| scores.resize(len, 0.0))
            .ok_or_else(|| {
                Error::parameter(
                    "block",
                    format!("a block of scores that fits in memory ({rows} × {m} floats does not)"),
                    block,
                )
            })?;
        scorer.score_block(q0, rows, &mut scores)?;
        Ok(scores
            .chunks_exact(m)
            .enumerate()
            .map(|(i, row)| {
                let rel = relevant.get(q0 + i).map_or(&[][..], |r| &r[..]);
                rank_row(row, pool, rel, k)
            })
            .collect())
    };
    let blocks: Vec<Vec<QueryHits>> = match scorer {
        Scorer::Dense { .. } => starts.par_iter().map(run_block).collect::<Result<_>>()?,
        Scorer::MaxSim { .. } => starts.iter().map(run_block).collect::<Result<_>>()?,
    };
    Ok(blocks.into_iter().flatten().collect())
}

/// Top `k` of one row and the ranks of its relevant candidates, in trec_eval's order
/// (`k = 0`: no top hits, ranks only). `pool` describes the row's candidates and
/// `relevant` holds indices into the row.
pub fn rank_row(row: &[f32], pool: &Pool, relevant: &[usize], k: usize) -> QueryHits {
    let key = &pool.tie_key;
    // `+ 0.0` makes -0 equal to 0, as the relevant ranks below (and trec_eval) compare.
    let better = |a: u32, b: u32| {
        let (a, b) = (a as usize, b as usize);
        (row[b] + 0.0)
            .total_cmp(&(row[a] + 0.0))
            .then(key[b].cmp(&key[a]))
    };
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    let k = k.min(row.len());
    if k == 0 {
        idx.clear();
    } else if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, |&a, &b| better(a, b));
        idx.truncate(k);
    }
    idx.sort_unstable_by(|&a, &b| better(a, b));
    let top = idx.into_iter().map(|i| (i, row[i as usize])).collect();

    let mut relevant_ranks = Vec::with_capacity(relevant.len());
    let mut relevant_group_ranks = Vec::with_capacity(relevant.len());
    for &r in relevant {
        let (s, t, g) = (row[r], key[r], pool.group[r]);
        let (mut above, mut above_in_group) = (0usize, 0usize);
        for ((&x, &kx), &gx) in row.iter().zip(key).zip(&pool.group) {
            let beats = (x > s) | ((x == s) & (kx > t));
            above += beats as usize;
            above_in_group += (beats & (gx == g)) as usize;
        }
        relevant_ranks.push(above + 1);
        relevant_group_ranks.push(above_in_group + 1);
    }
    QueryHits {
        top,
        relevant_ranks,
        relevant_group_ranks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_follow_score_then_docno_descending() {
        let pool = Pool::new(
            vec!["a".into(), "b".into(), "c".into(), "d".into()],
            &["x", "y", "x", "y"],
        )
        .unwrap();
        let row = [0.5, 0.9, 0.5, 0.1];
        let hits = rank_row(&row, &pool, &[0, 3], 3);
        // b (0.9), then c before a (tie, docno descending), then d.
        assert_eq!(
            hits.top.iter().map(|t| t.0).collect::<Vec<_>>(),
            vec![1, 2, 0]
        );
        assert_eq!(hits.relevant_ranks, vec![3, 4]);
        // Within group x: c then a; within group y: b then d.
        assert_eq!(hits.relevant_group_ranks, vec![2, 2]);
        // k = 0: no hits, the same ranks.
        let none = rank_row(&row, &pool, &[0, 3], 0);
        assert!(none.top.is_empty());
        assert_eq!(none.relevant_ranks, vec![3, 4]);
    }

    #[test]
    fn maxsim_blocks_bound_scores_and_query_bytes() {
        let row = 20 * 384 * 4; // 20 padded tokens of d = 384
        assert_eq!(maxsim_block(13_014, row), (16 << 20) / 13_014);
        assert_eq!(maxsim_block(1_000_000, row), DEFAULT_BLOCK);
        // A small pool would allow 4096 queries; their embeddings cap the block instead.
        assert_eq!(maxsim_block(1_180, row), (64 << 20) / row);
        assert!(maxsim_block(1_180, row) * row <= 64 << 20);
        assert_eq!(maxsim_block(10, 16), 4096);
        assert_eq!(maxsim_block(10, usize::MAX), 1);
    }

    #[test]
    fn tiny_and_huge_norms_normalise_like_the_rest() {
        let v = DenseVectors::new(
            "v",
            4,
            2,
            vec![1e-40, 0.0, 1e-41, -1e-41, 3e38, 3e38, 0.0, 0.0],
        )
        .unwrap();
        assert_eq!(v.row(0), &[1.0, 0.0]);
        let h = std::f32::consts::FRAC_1_SQRT_2;
        assert_eq!(v.row(1), &[h, -h]);
        assert_eq!(v.row(2), &[h, h]);
        assert_eq!(v.row(3), &[0.0, 0.0]);
        // Empty and wrong-length arrays say which.
        let empty = DenseVectors::new("q", 0, 2, vec![])
            .unwrap_err()
            .to_string();
        assert!(
            empty.contains("non-empty") && empty.contains("(0, 2)"),
            "{empty}"
        );
        let short = DenseVectors::new("q", 2, 2, vec![1.0; 3])
            .unwrap_err()
            .to_string();
        assert!(
            short.contains("4 values") && short.contains("found 3 values"),
            "{short}"
        );
    }

    #[test]
    fn negative_zero_ties_with_zero_in_top_hits_and_ranks() {
        let pool = Pool::new(vec!["a".into(), "b".into()], &["", ""]).unwrap();
        // a scores 0, b -0: a tie, so b (the larger docno) first, in both orders.
        let hits = rank_row(&[0.0, -0.0], &pool, &[0, 1], 2);
        assert_eq!(hits.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 0]);
        assert_eq!(hits.relevant_ranks, vec![2, 1]);
    }

    #[test]
    fn duplicate_docnos_are_rejected() {
        assert!(Pool::new(vec!["a".into(), "a".into()], &["", ""]).is_err());
    }
}
