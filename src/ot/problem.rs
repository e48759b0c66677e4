//! Validated inputs of the kernels: embedding batches, packed document sets, cost batches
//! and entropic OT problems.
//!
//! Every constructor checks shapes and values and returns an [`Error`] that says what was
//! expected and what was found; once built, these types are trusted by every backend.

use rayon::prelude::*;

use crate::error::{Error, Result};

/// A batch of `b` token-embedding sets, each padded to `n` rows of dimension `d`
/// (row-major `(b, n, d)`), with the number of real rows of each set in `lengths`.
#[derive(Clone, Debug)]
pub struct Embeddings {
    pub(crate) b: usize,
    pub(crate) n: usize,
    pub(crate) d: usize,
    pub(crate) data: Vec<f32>,
    pub(crate) lengths: Vec<usize>,
}

impl Embeddings {
    /// Validate a `(b, n, d)` batch; `lengths` defaults to `n` for every set.
    pub fn new(
        name: &str,
        b: usize,
        n: usize,
        d: usize,
        data: Vec<f32>,
        lengths: Option<Vec<usize>>,
    ) -> Result<Self> {
        if b == 0 || n == 0 || d == 0 {
            return Err(Error::shape(
                name,
                "a non-empty (b, n, d) array",
                format!("({b}, {n}, {d})"),
            ));
        }
        // The product in u128: a wrapped usize product could match the data's length.
        let want = b as u128 * n as u128 * d as u128;
        if data.len() as u128 != want {
            return Err(Error::shape(
                name,
                format!("{want} values for ({b}, {n}, {d})"),
                format!("{} values", data.len()),
            ));
        }
        let lengths = lengths.unwrap_or_else(|| vec![n; b]);
        if lengths.len() != b {
            return Err(Error::shape(
                format!("{name} lengths"),
                format!("({b},), one length per set"),
                format!("({},)", lengths.len()),
            ));
        }
        for (p, &len) in lengths.iter().enumerate() {
            if len == 0 || len > n {
                return Err(Error::value(
                    format!("{name} lengths"),
                    format!("set {p} has length {len}; expected 1..={n} (empty sets have no mass)"),
                ));
            }
        }
        // Every entry finite; the norms of real rows only (padding is never read as a vector).
        check_rows(
            name,
            &data,
            d,
            |r| r % n < lengths[r / n],
            |r| format!("set {}, row {}", r / n, r % n),
        )?;
        Ok(Embeddings {
            b,
            n,
            d,
            data,
            lengths,
        })
    }

    /// Number of sets.
    pub fn b(&self) -> usize {
        self.b
    }

    /// Rows of each set, padding included.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Dimension of each row.
    pub fn d(&self) -> usize {
        self.d
    }

    /// The rows, row-major `(b, n, d)`.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// The number of real rows of each set (`1..=n`).
    pub fn lengths(&self) -> &[usize] {
        &self.lengths
    }

    /// Row `i` of set `p`.
    #[inline]
    pub fn row(&self, p: usize, i: usize) -> &[f32] {
        let o = (p * self.n + i) * self.d;
        &self.data[o..o + self.d]
    }
}

/// Document token embeddings packed back to back: `(total_tokens, d)` plus the token count
/// of each document. Document `k` occupies rows `offsets[k] .. offsets[k] + lengths[k]`.
#[derive(Clone, Debug)]
pub struct PackedDocs {
    pub(crate) d: usize,
    pub(crate) data: Vec<f32>,
    pub(crate) lengths: Vec<usize>,
    pub(crate) offsets: Vec<usize>,
}

impl PackedDocs {
    pub fn new(name: &str, d: usize, data: Vec<f32>, lengths: Vec<usize>) -> Result<Self> {
        if d == 0 || data.is_empty() {
            return Err(Error::shape(
                name,
                "a non-empty (tokens, d) array",
                format!("{} values with d = {d}", data.len()),
            ));
        }
        if lengths.is_empty() {
            return Err(Error::value(
                format!("{name} lengths"),
                "expected at least one document, found none",
            ));
        }
        let total_rows = data.len() / d;
        let mut offsets = Vec::with_capacity(lengths.len());
        // Summed wide: lengths read from a file may overflow a usize sum.
        let mut acc = 0u128;
        for (k, &len) in lengths.iter().enumerate() {
            if len == 0 {
                return Err(Error::value(
                    format!("{name} lengths"),
                    format!("document {k} has no tokens; expected at least one"),
                ));
            }
            offsets.push(acc as usize);
            acc += len as u128;
        }
        if acc != total_rows as u128 || !data.len().is_multiple_of(d) {
            return Err(Error::shape(
                name,
                format!("({acc}, {d}): the lengths sum to {acc} tokens"),
                format!("({total_rows}, {d})"),
            ));
        }
        check_rows(name, &data, d, |_| true, |r| format!("token {r}"))?;
        Ok(PackedDocs {
            d,
            data,
            lengths,
            offsets,
        })
    }

    pub fn len(&self) -> usize {
        self.lengths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lengths.is_empty()
    }

    /// Dimension of each token row.
    pub fn d(&self) -> usize {
        self.d
    }

    /// The token rows of every document, back to back, row-major `(total_tokens, d)`.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// The number of tokens of each document (each at least 1).
    pub fn lengths(&self) -> &[usize] {
        &self.lengths
    }

    /// The first row of each document.
    pub fn offsets(&self) -> &[usize] {
        &self.offsets
    }

    /// The token rows of document `k`, row-major `(lengths[k], d)`.
    #[inline]
    pub fn doc(&self, k: usize) -> &[f32] {
        let o = self.offsets[k] * self.d;
        &self.data[o..o + self.lengths[k] * self.d]
    }
}

/// A batch of `b` cost matrices `(b, n, m)`, row-major.
#[derive(Clone, Debug)]
pub struct CostBatch {
    pub b: usize,
    pub n: usize,
    pub m: usize,
    pub data: Vec<f32>,
}

/// A batch of entropic OT problems in the log domain's terms: costs `(b, n, m)` and
/// marginals `a (b, n)`, `b (b, m)`, each pair's marginals normalised to mass 1. A zero
/// weight marks padding: that row or column gets no mass and does not enter the solve.
#[derive(Clone, Debug)]
pub struct Problem {
    pub(crate) pairs: usize,
    pub(crate) n: usize,
    pub(crate) m: usize,
    pub(crate) cost: Vec<f64>,
    pub(crate) a: Vec<f64>,
    pub(crate) b: Vec<f64>,
    /// The smallest and largest cost over the pairs' supports (real rows and columns;
    /// see [`check_cost_resolution`]).
    support_range: (f64, f64),
    /// The largest spread (largest − smallest entry) of one pair's cost over its support.
    max_spread: f64,
}

/// The largest ratio of a cost's magnitude to ε that a solve accepts: 2⁴².
///
/// Every backend forms `C_ij − f_i − g_j` (or the scaled form's shifts) in `f64`, which
/// resolves a cost of magnitude |C| only to |C|·2⁻⁵², and a plan entry moves by the factor
/// `exp(δ/ε)` for an error δ there. Up to this ratio δ stays below ε/1024; beyond it the
/// solve has no meaning (a column of 1e17 beside costs of order 1 at ε = 0.05 gave the `f32`
/// backends a uniform plan that passed their marginal check, and the `f64` reference no
/// convergence), so it is refused on every backend instead.
pub const MAX_COST_OVER_EPSILON: f64 = (1u64 << 42) as f64;

/// An error when costs up to `max_abs_cost` are too large for `epsilon` to be resolved (see
/// [`MAX_COST_OVER_EPSILON`]).
pub fn check_cost_resolution(max_abs_cost: f64, epsilon: f64) -> Result<()> {
    if max_abs_cost / epsilon > MAX_COST_OVER_EPSILON {
        return Err(Error::parameter(
            "epsilon",
            format!(
                "at least {:.3e} for costs up to {max_abs_cost:.3e}: f64 resolves such costs \
                 only to {:.1e}, and the solve needs them to ε/1024 (rescale the cost, or raise \
                 epsilon)",
                max_abs_cost / MAX_COST_OVER_EPSILON,
                max_abs_cost * f64::EPSILON / 2.0,
            ),
            // Plain decimals for ordinary values; 1e-320 would print as 320 digits.
            if (1e-4..1e6).contains(&epsilon) {
                epsilon.to_string()
            } else {
                format!("{epsilon:e}")
            },
        ));
    }
    Ok(())
}

impl Problem {
    /// Validate and normalise. `a`/`b` default to uniform weights over all rows/columns.
    pub fn new(
        pairs: usize,
        n: usize,
        m: usize,
        cost: Vec<f64>,
        a: Option<Vec<f64>>,
        b: Option<Vec<f64>>,
    ) -> Result<Self> {
        if pairs == 0 || n == 0 || m == 0 {
            return Err(Error::shape(
                "cost",
                "a non-empty (b, n, m) array",
                format!("({pairs}, {n}, {m})"),
            ));
        }
        let want = pairs as u128 * n as u128 * m as u128;
        if cost.len() as u128 != want {
            return Err(Error::shape(
                "cost",
                format!("{want} values for ({pairs}, {n}, {m})"),
                format!("{} values", cost.len()),
            ));
        }
        check_finite("cost", &cost, |i| {
            format!("pair {}, entry ({}, {})", i / (n * m), (i / m) % n, i % m)
        })?;
        let a = normalise_weights("a", a, pairs, n)?;
        let b = normalise_weights("b", b, pairs, m)?;
        // Over the supports only: padding's costs never enter a solve.
        let widen = |(lo, hi): (f64, f64), (l, h): (f64, f64)| (lo.min(l), hi.max(h));
        let empty = (f64::INFINITY, f64::NEG_INFINITY);
        let ranges: Vec<(f64, f64)> = cost
            .par_chunks(n * m)
            .enumerate()
            .map(|(p, c)| {
                let cols: Vec<usize> = (0..m).filter(|&j| b[p * m + j] > 0.0).collect();
                c.chunks(m)
                    .enumerate()
                    .filter(|&(i, _)| a[p * n + i] > 0.0)
                    .flat_map(|(_, row)| cols.iter().map(move |&j| (row[j], row[j])))
                    .fold(empty, widen)
            })
            .collect();
        // The solvers shift each row and column of a pair by its extreme; a pair whose range
        // is past f64's made those shifts infinite (a wrong plan on the CPU, NaN on the GPU)
        // whatever ε is. Pairs are solved apart: only each one's own range counts.
        if let Some((p, (lo, hi))) = ranges
            .iter()
            .enumerate()
            .find(|(_, &(lo, hi))| (hi - lo).is_infinite())
        {
            return Err(Error::value(
                "cost",
                format!(
                    "pair {p}: the entries over its support span {lo:e} to {hi:e}, a range \
                     beyond f64's largest number; expected a range below {:e} (rescale the \
                     cost, and ε with it)",
                    f64::MAX
                ),
            ));
        }
        let support_range = ranges.iter().copied().fold(empty, widen);
        let max_spread = ranges.iter().map(|&(lo, hi)| hi - lo).fold(0.0, f64::max);
        Ok(Problem {
            pairs,
            n,
            m,
            cost,
            a,
            b,
            support_range,
            max_spread,
        })
    }

    /// Number of pairs.
    pub fn pairs(&self) -> usize {
        self.pairs
    }

    /// Rows of each cost matrix.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Columns of each cost matrix.
    pub fn m(&self) -> usize {
        self.m
    }

    /// The costs, row-major `(pairs, n, m)`.
    pub fn cost(&self) -> &[f64] {
        &self.cost
    }

    /// The row marginals `(pairs, n)`, each pair's summing to 1 (0 on padding).
    pub fn a(&self) -> &[f64] {
        &self.a
    }

    /// The column marginals `(pairs, m)`, each pair's summing to 1 (0 on padding).
    pub fn b(&self) -> &[f64] {
        &self.b
    }

    /// The largest |cost| over the pairs' supports (real rows and columns), as computed
    /// when the problem was built.
    pub fn max_abs_cost(&self) -> f64 {
        let (lo, hi) = self.support_range;
        lo.abs().max(hi.abs()).max(0.0)
    }

    /// How far one pair's cost spreads over its support (largest − smallest entry), the
    /// largest over the pairs: Sinkhorn's iteration count grows with this spread over ε.
    pub fn cost_spread(&self) -> f64 {
        self.max_spread
    }

    /// Build from embeddings: the cosine cost computed elsewhere plus uniform weights over
    /// each set's real tokens (`x_lengths`: one per pair, each `1..=n`; `y_lengths`:
    /// `1..=m`).
    pub fn from_cost_and_lengths(
        cost: &CostBatch,
        x_lengths: &[usize],
        y_lengths: &[usize],
    ) -> Result<Self> {
        let _phase = crate::phases::phase("problem (f64 cost)");
        for (name, lengths, width) in [
            ("x lengths", x_lengths, cost.n),
            ("y lengths", y_lengths, cost.m),
        ] {
            if lengths.len() != cost.b {
                return Err(Error::shape(
                    name,
                    format!("({},), one length per pair", cost.b),
                    format!("({},)", lengths.len()),
                ));
            }
            if let Some((p, &len)) = lengths
                .iter()
                .enumerate()
                .find(|&(_, &l)| l == 0 || l > width)
            {
                return Err(Error::value(
                    name,
                    format!("pair {p} has length {len}; expected 1..={width}"),
                ));
            }
        }
        let uniform = |lengths: &[usize], width: usize| -> Vec<f64> {
            lengths
                .iter()
                .flat_map(|&len| (0..width).map(move |i| if i < len { 1.0 } else { 0.0 }))
                .collect()
        };
        Problem::new(
            cost.b,
            cost.n,
            cost.m,
            cost.data.par_iter().map(|&v| v as f64).collect(),
            Some(uniform(x_lengths, cost.n)),
            Some(uniform(y_lengths, cost.m)),
        )
    }

    /// Cost matrix of pair `p`, `(n, m)` row-major.
    #[inline]
    pub fn cost_of(&self, p: usize) -> &[f64] {
        &self.cost[p * self.n * self.m..(p + 1) * self.n * self.m]
    }

    /// The support of pair `p`: indices of the rows and columns with positive weight.
    pub fn support(&self, p: usize) -> (Vec<usize>, Vec<usize>) {
        let rows = (0..self.n)
            .filter(|&i| self.a[p * self.n + i] > 0.0)
            .collect();
        let cols = (0..self.m)
            .filter(|&j| self.b[p * self.m + j] > 0.0)
            .collect();
        (rows, cols)
    }
}

fn normalise_weights(
    name: &'static str,
    w: Option<Vec<f64>>,
    pairs: usize,
    len: usize,
) -> Result<Vec<f64>> {
    let mut w = match w {
        None => return Ok(vec![1.0 / len as f64; pairs * len]),
        Some(w) => w,
    };
    if w.len() != pairs * len {
        return Err(Error::shape(
            name,
            format!("({pairs}, {len}) to match the cost"),
            format!("{} values", w.len()),
        ));
    }
    for (p, chunk) in w.chunks_mut(len).enumerate() {
        let mut total = 0.0;
        for (i, &v) in chunk.iter().enumerate() {
            if !v.is_finite() || v < 0.0 {
                return Err(Error::value(
                    name,
                    format!(
                        "pair {p}, index {i}: expected a finite non-negative weight, found {v}"
                    ),
                ));
            }
            total += v;
        }
        if total.is_infinite() {
            // Finite weights whose sum overflows: only their ratios matter, so scale them
            // by the largest first (every weight is then at most 1, the sum at most len).
            let max = chunk.iter().copied().fold(0.0, f64::max);
            chunk.iter_mut().for_each(|v| *v /= max);
            total = chunk.iter().sum();
        }
        if total <= 0.0 {
            return Err(Error::value(
                name,
                format!("pair {p} has zero total mass; expected at least one positive weight"),
            ));
        }
        chunk.iter_mut().for_each(|v| *v /= total);
    }
    Ok(w)
}

fn check_finite<T: Copy + Into<f64> + Sync>(
    name: &str,
    data: &[T],
    locate: impl Fn(usize) -> String,
) -> Result<()> {
    // In parallel over blocks (costs and embeddings run to millions of values); the first
    // bad value in index order is the one reported, whatever the thread count.
    const BLOCK: usize = 1 << 16;
    let bad = |v: &T| !(*v).into().is_finite();
    let first = data
        .par_chunks(BLOCK)
        .position_first(|c| c.iter().any(bad))
        .and_then(|k| {
            let at = data[k * BLOCK..].iter().position(bad)?;
            Some(k * BLOCK + at)
        });
    if let Some(i) = first {
        let v: f64 = data[i].into();
        return Err(Error::value(
            name,
            format!("{}: expected a finite number, found {v}", locate(i)),
        ));
    }
    Ok(())
}

/// The L2 norms a non-zero embedding row may have. The kernels form squares and dot
/// products of the entries in `f32`, whose range ends near 3.4e38 and whose normal numbers
/// start near 1.2e-38: a row of norm 1e20 squares to infinity there (its cosine became 0
/// on the `f32` backends and stayed right on the `f64` reference), and a row of norm 1e-22
/// loses its digits to underflow. Inside these bounds every backend computes the same
/// cosine; the cosine does not depend on scale, so such vectors only need rescaling.
pub const MIN_ROW_NORM: f64 = 1e-12;
/// See [`MIN_ROW_NORM`].
pub const MAX_ROW_NORM: f64 = 1e12;

/// One pass over embedding rows: an error naming the first row (in order) with an entry that
/// is not finite (any row), or, among real rows, the first whose L2 norm is outside
/// [`MIN_ROW_NORM`]`..=`[`MAX_ROW_NORM`] and not exactly 0 (a zero row is allowed: its
/// cosine with anything is 0).
///
/// The sum of squares runs in `f32` over eight lanes first; only a row whose `f32` sum is
/// not clearly inside the bounds (or is 0, or not finite) is summed again in `f64` to
/// decide. On the 2-core machine that keeps the check of 25 M values (b = 512, 128 rows,
/// d = 384) to about one read of the data.
fn check_rows(
    name: &str,
    data: &[f32],
    d: usize,
    is_real: impl Fn(usize) -> bool + Sync,
    locate: impl Fn(usize) -> String,
) -> Result<()> {
    let sumsq_f64 = |row: &[f32]| row.iter().map(|&v| v as f64 * v as f64).sum::<f64>();
    // Squared bounds with a margin for the f32 sum's rounding.
    let (lo, hi) = (
        (MIN_ROW_NORM * MIN_ROW_NORM * 1.001) as f32,
        (MAX_ROW_NORM * MAX_ROW_NORM * 0.999) as f32,
    );
    let row_ok = |r: usize, row: &[f32]| {
        let mut acc = [0.0f32; 8];
        let mut chunks = row.chunks_exact(8);
        for c in &mut chunks {
            for (a, &v) in acc.iter_mut().zip(c) {
                *a += v * v;
            }
        }
        for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
            *a += v * v;
        }
        let s: f32 = acc.iter().sum();
        if s > lo && s < hi {
            return true;
        }
        let s = sumsq_f64(row);
        if !s.is_finite() {
            return false;
        }
        !is_real(r) || s == 0.0 || (MIN_ROW_NORM..=MAX_ROW_NORM).contains(&s.sqrt())
    };
    let Some(r) = data
        .par_chunks(d)
        .enumerate()
        .position_first(|(r, row)| !row_ok(r, row))
    else {
        return Ok(());
    };
    let row = &data[r * d..(r + 1) * d];
    if let Some(v) = row.iter().find(|v| !v.is_finite()) {
        return Err(Error::value(
            name,
            format!("{}: expected a finite number, found {v}", locate(r)),
        ));
    }
    Err(norm_error(name, &locate(r), sumsq_f64(row).sqrt()))
}

/// A real row whose L2 norm `norm` is outside the bounds the `f32` kernels need.
fn norm_error(name: &str, location: &str, norm: f64) -> Error {
    // Four digits, unless they would round onto the bound it misses (an f64 row of norm 1e-12
    // becomes 9.9999998e-13 in f32): then every digit.
    let short = format!("{norm:.3e}");
    let norm = match short.parse::<f64>() {
        Ok(v) if (MIN_ROW_NORM..=MAX_ROW_NORM).contains(&v) => format!("{norm:e}"),
        _ => short,
    };
    Error::value(
        name,
        format!(
            "{location}: L2 norm {norm}; expected 0 or a norm in [{MIN_ROW_NORM:e}, \
             {MAX_ROW_NORM:e}] (the f32 kernels square the entries; the cosine does not depend \
             on scale, so rescale the vectors)"
        ),
    )
}

/// Rows of `d` values read as `f64` (an f64 file) as the `f32` that [`Embeddings::new`] and
/// [`PackedDocs::new`] take, refusing what the narrowing would change unseen: a finite value
/// beyond f32's range (it would become ±inf, reported as such), and a real row (`is_real`)
/// whose norm is below [`MIN_ROW_NORM`] but whose entries underflow in `f32` (it would
/// become a zero row, which is allowed). Those constructors check the rest on the `f32` rows.
///
/// `set_rows`: rows per set of a batch `(b, n, d)`, so that errors say `set 1, row 2` as
/// [`Embeddings::new`] does; `None` for flat rows (`row 5`).
pub fn narrow_rows(
    name: &str,
    values: &[f64],
    d: usize,
    set_rows: Option<usize>,
    is_real: impl Fn(usize) -> bool,
) -> Result<Vec<f32>> {
    let location = |r: usize| match set_rows {
        Some(n) if n > 0 => format!("set {}, row {}", r / n, r % n),
        _ => format!("row {r}"),
    };
    let out: Vec<f32> = values.iter().map(|&v| v as f32).collect();
    for (r, (row, narrowed)) in values
        .chunks(d.max(1))
        .zip(out.chunks(d.max(1)))
        .enumerate()
    {
        let mut underflow = false;
        for (&v, &w) in row.iter().zip(narrowed) {
            if v.is_finite() && w.is_infinite() {
                return Err(Error::value(
                    name,
                    format!(
                        "{}: {v:e} is beyond the range of the f32 the kernels compute in \
                         (±3.4e38); the cosine does not depend on scale, so rescale the vectors",
                        location(r)
                    ),
                ));
            }
            underflow |= v != 0.0 && w.abs() < f32::MIN_POSITIVE;
        }
        if underflow && is_real(r) {
            // Scaled by the largest entry: the squares of such entries underflow in f64 too.
            let big = row.iter().fold(0.0f64, |acc, v| acc.max(v.abs()));
            let norm = big * row.iter().map(|v| (v / big).powi(2)).sum::<f64>().sqrt();
            if norm < MIN_ROW_NORM {
                return Err(norm_error(name, &location(r), norm));
            }
        }
    }
    Ok(out)
}

/// Parameters of the Sinkhorn solver (the problem is separate, see [`Problem`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SinkhornParams {
    /// Entropic regularisation ε (> 0), in the units of the cost.
    pub epsilon: f64,
    /// Iteration cap per pair; a pair that reaches it unconverged is flagged, not an error.
    pub max_iterations: usize,
    /// Convergence threshold on the L1 error of the row marginal (columns are exact after
    /// each iteration's column update).
    pub threshold: f64,
    /// Convergence is tested every `check_every` iterations (and at `max_iterations`).
    pub check_every: usize,
}

impl Default for SinkhornParams {
    fn default() -> Self {
        SinkhornParams {
            epsilon: 0.05,
            max_iterations: 1000,
            threshold: 1e-6,
            check_every: 10,
        }
    }
}

/// The most iterations (and the longest check interval) a solve may ask for: `i32::MAX`.
pub const MAX_ITERATIONS: usize = i32::MAX as usize;

impl SinkhornParams {
    pub fn validate(&self) -> Result<()> {
        // Normal, not subnormal: the solvers scale the cost by −log2(e)/ε, which is
        // infinite for ε below about 8e-309 (the f32 backends then found NaN and blamed ε
        // for the cost's range).
        if !(self.epsilon.is_finite() && self.epsilon >= f64::MIN_POSITIVE) {
            return Err(Error::parameter(
                "epsilon",
                format!(
                    "a finite number > 0, at least {:e} (f64's smallest normal number; \
                     rescale the cost and ε together)",
                    f64::MIN_POSITIVE
                ),
                // Plain decimals for ordinary values; 1e-320 would print as 320 digits.
                if self.epsilon == 0.0 || (1e-4..1e6).contains(&self.epsilon.abs()) {
                    self.epsilon.to_string()
                } else {
                    format!("{:e}", self.epsilon)
                },
            ));
        }
        // One range on every backend: the GPU kernels count iterations in 32 bits, and
        // iterations.npy stores them as int32.
        if !(1..=MAX_ITERATIONS).contains(&self.max_iterations) {
            return Err(Error::parameter(
                "max_iterations",
                format!("between 1 and {MAX_ITERATIONS}"),
                self.max_iterations,
            ));
        }
        if !(self.threshold.is_finite() && self.threshold >= 0.0) {
            return Err(Error::parameter(
                "threshold",
                "a finite number >= 0",
                self.threshold,
            ));
        }
        if !(1..=MAX_ITERATIONS).contains(&self.check_every) {
            return Err(Error::parameter(
                "check_every",
                format!("between 1 and {MAX_ITERATIONS}"),
                self.check_every,
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cost whose range overflows f64, and an ε whose scale −log2(e)/ε does, are refused
    /// on every backend (they gave a wrong plan on the CPU and NaN on the GPU).
    #[test]
    fn ranges_and_epsilons_past_f64_are_refused() {
        let e = Problem::new(1, 1, 2, vec![-1.7e308, 1.7e308], None, None).unwrap_err();
        assert!(
            e.to_string()
                .contains("pair 0: the entries over its support span"),
            "{e}"
        );
        // Pairs are solved apart: two whose own ranges fit are accepted together.
        let two = Problem::new(
            2,
            1,
            2,
            vec![-1.7e308, -1.6e308, 1.6e308, 1.7e308],
            None,
            None,
        );
        assert!(two.unwrap().cost_spread() < 1.1e307);
        // Padding's entries do not count.
        let padded = Problem::new(1, 1, 2, vec![-1.7e308, 1.7e308], None, Some(vec![1.0, 0.0]));
        assert!(padded.is_ok());
        let params = |epsilon| SinkhornParams {
            epsilon,
            ..SinkhornParams::default()
        };
        assert!(params(f64::MIN_POSITIVE).validate().is_ok());
        let e = params(5e-312).validate().unwrap_err().to_string();
        assert!(e.contains("at least 2.2250738585072014e-308"), "{e}");
    }

    /// Lengths that do not fit the cost are named as lengths, not clipped.
    #[test]
    fn lengths_that_do_not_fit_the_cost_are_refused() {
        let cost = CostBatch {
            b: 2,
            n: 3,
            m: 4,
            data: vec![0.5; 24],
        };
        let ok = Problem::from_cost_and_lengths(&cost, &[3, 1], &[4, 2]).unwrap();
        assert_eq!(ok.a()[3..6], [1.0, 0.0, 0.0]);
        let e = Problem::from_cost_and_lengths(&cost, &[3], &[4, 2]).unwrap_err();
        assert!(
            e.to_string()
                .contains("x lengths: expected shape (2,), one length per pair, found (1,)"),
            "{e}"
        );
        let e = Problem::from_cost_and_lengths(&cost, &[3, 3], &[4, 5]).unwrap_err();
        assert!(
            e.to_string()
                .contains("pair 1 has length 5; expected 1..=4"),
            "{e}"
        );
        assert!(Problem::from_cost_and_lengths(&cost, &[0, 3], &[4, 4]).is_err());
    }

    #[test]
    fn the_cost_resolution_counts_real_entries_only() {
        // Pair 0: a padded row and a padded column of 1e30; pair 1: a real entry of 3.
        let cost = vec![1.0, 1e30, 1e30, 1e30, -2.0, 0.5, 3.0, 0.0];
        let a = vec![1.0, 0.0, 1.0, 1.0];
        let b = vec![1.0, 0.0, 1.0, 1.0];
        let p = Problem::new(2, 2, 2, cost, Some(a), Some(b)).unwrap();
        assert_eq!(p.max_abs_cost(), 3.0);
        // The spread that the convergence warnings quote: the real entries' too.
        assert_eq!(p.cost_spread(), 5.0);
        let limit = 3.0 / MAX_COST_OVER_EPSILON;
        assert!(check_cost_resolution(p.max_abs_cost(), limit).is_ok());
        let e = check_cost_resolution(p.max_abs_cost(), limit / 2.0).unwrap_err();
        let e = e.to_string();
        assert!(
            e.contains("epsilon") && e.contains("at least 6.821e-13") && e.contains("3.000e0"),
            "{e}"
        );
        assert!(check_cost_resolution(2.0, 0.05).is_ok());
    }

    #[test]
    fn narrowing_refuses_what_f32_would_change_unseen() {
        // A real row whose norm is below the bound but would read as a zero row in f32.
        let tiny = narrow_rows(
            "embeddings",
            &[1e-200, 0.0, 0.0, 0.0, 1.0, 0.0],
            3,
            None,
            |_| true,
        )
        .unwrap_err();
        assert!(
            tiny.to_string().contains("row 0: L2 norm 1.000e-200"),
            "{tiny}"
        );
        // A finite value that would become infinite.
        let huge =
            narrow_rows("embeddings", &[1.0, 2.0, 1e200, 0.0], 2, None, |_| true).unwrap_err();
        assert!(
            huge.to_string().contains("row 1: 1e200 is beyond"),
            "{huge}"
        );
        // Padding rows are not checked; a tiny component of a row of ordinary norm is fine.
        let ok = narrow_rows("embeddings", &[1e-200, 0.0, 1e-60, 1.0], 2, None, |r| {
            r == 1
        })
        .unwrap();
        assert_eq!(ok, vec![0.0, 0.0, 0.0, 1.0]);
        // A zero row stays allowed.
        assert!(narrow_rows("embeddings", &[0.0; 4], 2, None, |_| true).is_ok());
        // In a batch, the set and the row within it, as Embeddings::new says them.
        let batched = narrow_rows(
            "embeddings",
            &[1.0, 0.0, 0.0, 1.0, 1.0, 1e200],
            2,
            Some(2),
            |_| true,
        )
        .unwrap_err()
        .to_string();
        assert!(batched.contains("set 1, row 0: 1e200"), "{batched}");
    }

    #[test]
    fn iteration_counts_fit_every_backend() {
        let ok = SinkhornParams {
            epsilon: 0.1,
            max_iterations: MAX_ITERATIONS,
            threshold: 0.0,
            check_every: MAX_ITERATIONS,
        };
        assert!(ok.validate().is_ok());
        for (max_iterations, check_every) in [(MAX_ITERATIONS + 1, 10), (10, MAX_ITERATIONS + 1)] {
            let e = SinkhornParams {
                max_iterations,
                check_every,
                ..ok
            }
            .validate()
            .unwrap_err()
            .to_string();
            assert!(e.contains("between 1 and 2147483647"), "{e}");
        }
    }

    #[test]
    fn the_first_non_finite_value_is_reported_across_blocks() {
        // Three blocks of the parallel check; bad values in the second and third: the
        // earlier one is named, whichever thread finds a bad block first.
        let (b, n, m) = (3, 256, 256);
        let mut cost = vec![0.5f64; b * n * m];
        cost[2 * n * m + 7] = f64::NAN;
        cost[n * m + 3 * m + 5] = f64::INFINITY;
        let e = Problem::new(b, n, m, cost, None, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("pair 1, entry (3, 5)") && e.contains("inf"),
            "{e}"
        );
        let fine = Problem::new(b, n, m, vec![0.5; b * n * m], None, None);
        assert!(fine.is_ok());
    }

    #[test]
    fn weights_whose_sum_overflows_keep_their_ratios() {
        let a = vec![1e308, 1e308, 0.0, 5e307];
        let p = Problem::new(1, 4, 2, vec![0.5; 8], Some(a), None).expect("finite weights");
        for (got, want) in p.a.iter().zip([0.4, 0.4, 0.0, 0.2]) {
            assert!((got - want).abs() < 1e-15, "{:?}", p.a);
        }
        assert_eq!(p.a[2], 0.0, "a zero weight stays padding");
    }

    #[test]
    fn document_lengths_past_the_rows_are_an_error_not_an_overflow() {
        for lengths in [
            vec![usize::MAX, usize::MAX, 3],
            vec![usize::MAX, 2],
            vec![1, 2],
        ] {
            let e = PackedDocs::new("docs", 2, vec![0.5; 2], lengths.clone())
                .unwrap_err()
                .to_string();
            assert!(e.contains("found (1, 2)"), "{lengths:?}: {e}");
        }
        assert!(PackedDocs::new("docs", 2, vec![0.5; 4], vec![1, 1]).is_ok());
    }

    #[test]
    fn shapes_whose_product_wraps_are_an_error() {
        // 2^32 · 2^32 · 1 wraps to 0 in a 64-bit usize: an empty data vector matched it, and
        // the default lengths then asked for 2^32 entries.
        let big = 1usize << 32;
        let e = Embeddings::new("x", big, big, 1, vec![], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("18446744073709551616 values for"), "{e}");
        let e = Problem::new(big, big, 1, vec![], None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("18446744073709551616 values for"), "{e}");
    }
}
