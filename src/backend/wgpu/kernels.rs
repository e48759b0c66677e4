//! Host side of the cosine-cost, MaxSim and fused cost + Sinkhorn kernels: validation,
//! chunking, upload, dispatch, read-back.

use bytemuck::{Pod, Zeroable};
use rayon::prelude::*;

use super::context::{
    BlockedLse, CostTiling, MaxsimTiling, SinkhornKernel, WgpuContext, BACKEND, COSINE_BLOCKED_MIN,
    COSINE_COST, COSINE_COST_BLOCKED, COSINE_NORMS, FUSED_NARROW, FUSED_PLAN, FUSED_SOLVE,
    LLVMPIPE_LOOP_PASSES, LOOP_PASS_BUDGET, MAXSIM_NORMS, MAXSIM_SCORES, MAXSIM_SCORES_TILE,
    NARROW_LEN, PEAK_EX2,
};
use crate::backend::cpu::{check_maxsim, check_pair_batch};
use crate::backend::Exp2Peak;
use crate::error::{Error, Result};
use crate::ot::problem::{CostBatch, Embeddings, PackedDocs, SinkhornParams};
use crate::ot::sinkhorn::SinkhornOutput;

/// Largest padded set length of the Sinkhorn kernels (`MAX_N` in the shaders).
pub(crate) const MAX_LEN: usize = 512;
/// Iterations per fused dispatch (rounded up to a multiple of `check_every`): few enough that
/// one dispatch stays well under a display driver's watchdog, many enough that rebuilding the
/// cost tile (`2·nr·nc·d` flops) and reading the per-pair status between dispatches are
/// small next to the iterations. Pairs that converge leave the dispatch early.
const FUSED_ITERATIONS_PER_DISPATCH: usize = 512;

/// Upper bounds of the loop passes one invocation of the Sinkhorn kernels makes, for
/// adapters that cap them (llvmpipe: [`super::context::LLVMPIPE_LOOP_PASSES`]). They follow
/// the shaders' loops; what lavapipe (Mesa 22.3) counted is in the comments. `n`, `m`: the
/// padded set lengths; `narrow`: the 64-invocation variants (pairs of at most 64 × 64).
pub(crate) mod passes {
    use super::BlockedLse;

    fn wg(narrow: bool) -> u64 {
        if narrow {
            64
        } else {
            256
        }
    }

    /// One iteration of the row kernels (tile, streamed, fused tile): an invocation's rows'
    /// log-sum-exp over the columns (twice: a check's row update comes on top) and its
    /// columns' over the rows. Counted: 167 for 130 × 20, 368 for 200 × 150, 541 for
    /// 500 × 10 (bounds 214, 414, 604).
    pub fn rows_iteration(n: usize, m: usize, narrow: bool) -> u64 {
        let (n, m, w) = (n as u64, m as u64, wg(narrow));
        2 * n.div_ceil(w) * m + m.div_ceil(w) * n + 64
    }

    /// One iteration of the register-blocked kernels, whose loops over an invocation's 8 × 8
    /// block are unrolled. Counted: 19–21 from 64 × 64 to 128 × 128 with
    /// [`BlockedLse::Max`]. [`BlockedLse::Shifted`] adds its own merge loops (8 passes a
    /// half-iteration) and, where a sum leaves its range, runs the max-subtracted ones too:
    /// at most ≈ 2× the count.
    pub fn blocked_iteration(lse: BlockedLse) -> u64 {
        match lse {
            BlockedLse::Max => 32,
            BlockedLse::Shifted => 64,
        }
    }

    /// Loading a pair into the iterate kernels (K into the tile, the potentials).
    pub fn rows_setup(n: usize, m: usize, narrow: bool) -> u64 {
        ((n * m) as u64).div_ceil(wg(narrow)) + 64
    }

    /// The fused tile kernel's cost build (its plan kernel builds it again): the norms and
    /// the dot products over `d`, the minima, the scaling.
    pub fn tile_build(n: usize, m: usize, d: usize, narrow: bool) -> u64 {
        let (n, m, d, w) = (n as u64, m as u64, d as u64, wg(narrow));
        let entries = (n * m).div_ceil(w);
        (n.div_ceil(w) + m.div_ceil(w) + entries) * (d + 1)
            + n.div_ceil(w) * m
            + m.div_ceil(w) * n
            + entries
            + 64
    }

    /// The register-blocked kernels' cost build (also in their plan kernel). lavapipe ran a
    /// 128 × 128 pair whole at d = 4096 and cut it at d = 8192: 8–16 passes per dimension.
    pub fn blocked_build(d: usize) -> u64 {
        16 * d as u64 + 64
    }

    /// The cosine-cost kernels and the row norms (`cosine_cost.wgsl`, MaxSim's norms), `d4`
    /// vec4s per row. lavapipe counted 1.3–2.2 passes per vec4 (whole at d = 120,000 and
    /// 131,072, cut at d = 140,000 and 200,000).
    pub fn cost(d4: usize) -> u64 {
        3 * d4 as u64 + 64
    }

    /// The largest dimension [`cost`] keeps within `budget` passes.
    pub fn cost_max_d(budget: u64) -> u64 {
        4 * (budget.saturating_sub(64) / 3)
    }

    /// `maxsim_f32` for a query of `lq` tokens against a document of `ld` tokens: blocks of
    /// 32 query × 64 document tokens, 4 vec4s per staging step. lavapipe counted 8–16
    /// passes per step (32 query tokens, d = 1024: whole at 4,000 document tokens, cut at
    /// 8,000).
    pub fn maxsim(lq: usize, ld: usize, d4: usize) -> u64 {
        let (lq, ld, d4) = (lq as u64, ld as u64, d4 as u64);
        lq.div_ceil(32) * (ld.div_ceil(64) * (16 * d4.div_ceil(4) + 16) + 64) + 64
    }

    /// `maxsim_tile_f32`: blocks of 16 × 16 tokens, 16 vec4s per staging step and 16 dot
    /// products per step, the same per-step count as [`maxsim`] on 4× as many blocks.
    pub fn maxsim_tile(lq: usize, ld: usize, d4: usize) -> u64 {
        let (lq, ld, d4) = (lq as u64, ld as u64, d4 as u64);
        lq.div_ceil(16) * (ld.div_ceil(16) * (20 * d4.div_ceil(16) + 16) + 64) + 64
    }
}

/// Refuse a cost over more dimensions than an invocation's loops may make passes for on
/// this adapter (llvmpipe).
fn check_cost_dimensions(ctx: &WgpuContext, what: &'static str, d: usize) -> Result<()> {
    if ctx.loops_fit(passes::cost(d.div_ceil(4))) {
        return Ok(());
    }
    Err(Error::shape(
        what,
        format!(
            "d ≤ {} on {} (it ends a shader's loops after {} passes; use another backend \
             for more)",
            passes::cost_max_d(LOOP_PASS_BUDGET),
            ctx.adapter_name(),
            LLVMPIPE_LOOP_PASSES
        ),
        format!("d = {d}"),
    ))
}

fn groups(items: usize, per_group: usize) -> u32 {
    items.div_ceil(per_group) as u32
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct PeakParams {
    rounds: u32,
    _pad: [u32; 3],
}

/// Invocations of the exp2 probe, in workgroups of 256: four full waves of a 132-SM GPU at
/// 2,048 threads per SM (an H100 SXM or H200); elsewhere the last wave may be partly empty,
/// a few per cent of the time at most. (wgpu does not say how many compute units there are.)
const PEAK_LANES: usize = 4 * 132 * 2048;

/// The exp2 throughput probe (`shaders/peak.wgsl`; see [`crate::backend::peak`]).
pub(crate) fn exp2_peak(ctx: &WgpuContext, min_exps: u64) -> Result<Exp2Peak> {
    let rounds = Exp2Peak::rounds_for(min_exps, PEAK_LANES)?;
    if !ctx.loops_fit(rounds as u64) {
        return Err(Error::parameter(
            "exp2 probe size",
            format!(
                "at most {} rounds of {} exponentials on {} (it ends a shader's loops after \
                 {LLVMPIPE_LOOP_PASSES} passes)",
                LOOP_PASS_BUDGET,
                PEAK_LANES * crate::backend::peak::CHAINS * crate::backend::peak::STEPS,
                ctx.adapter_name()
            ),
            format!("{min_exps} exponentials ({rounds} rounds)"),
        ));
    }
    let family = &ctx.pipelines.peak;
    let params = ctx.uniform(&PeakParams {
        rounds,
        _pad: [0; 3],
    });
    let sums = ctx.storage((PEAK_LANES * 4) as u64);
    let group = ctx.bind_group(family, &[&params, &sums]);
    let mut enc = ctx.encoder();
    ctx.encode(
        &mut enc,
        &[(
            family.pipeline(PEAK_EX2)?,
            &group,
            [groups(PEAK_LANES, 256), 1, 1],
        )],
    );
    let mut out = ctx.submit_and_read::<f32>("exp2_peak", enc, &[(&sums, PEAK_LANES)])?;
    ctx.recycle([sums]);
    Ok(Exp2Peak {
        lanes: PEAK_LANES,
        rounds,
        sums: out.pop().unwrap_or_default(),
    })
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct CosineParams {
    pairs: u32,
    n: u32,
    m: u32,
    d4: u32,
}

/// Rows of `data` (row length `d`) zero-padded to a multiple of 4, so the shaders can load
/// `vec4`s; borrowed unchanged when `d` already is one. Zeros change no dot product or norm.
pub(crate) fn pad_rows(data: &[f32], d: usize) -> std::borrow::Cow<'_, [f32]> {
    let d4 = d.div_ceil(4) * 4;
    if d4 == d {
        return std::borrow::Cow::Borrowed(data);
    }
    let mut out = vec![0.0f32; data.len() / d * d4];
    for (o, r) in out.chunks_exact_mut(d4).zip(data.chunks_exact(d)) {
        o[..d].copy_from_slice(r);
    }
    std::borrow::Cow::Owned(out)
}

pub(crate) fn cosine_cost(ctx: &WgpuContext, x: &Embeddings, y: &Embeddings) -> Result<CostBatch> {
    check_pair_batch(x, y)?;
    check_cost_dimensions(ctx, "wgpu cosine cost", x.d)?;
    let (b, n, m) = (x.b, x.n, y.n);
    // Rows padded to whole vec4s.
    let d = x.d.div_ceil(4) * 4;
    let (xd, yd) = (pad_rows(&x.data, x.d), pad_rows(&y.data, y.d));
    let per_pair = [
        (n * d * 4) as u64,
        (m * d * 4) as u64,
        (n * m * 4) as u64,
        (n * 4) as u64,
        (m * 4) as u64,
    ];
    // inv_norms_f32 runs one invocation per row, in at most 65,535 workgroups of 256.
    let grid_rows = ctx.limits.max_compute_workgroups_per_dimension as usize * 256;
    let chunk = ctx
        .chunk_len("cosine_cost", &per_pair, b)?
        .min((grid_rows / (n + m)).max(1));
    if n.div_ceil(16) > ctx.limits.max_compute_workgroups_per_dimension as usize
        || m.div_ceil(16) > ctx.limits.max_compute_workgroups_per_dimension as usize
        || n + m > grid_rows
    {
        let side = 16 * ctx.limits.max_compute_workgroups_per_dimension as usize;
        return Err(Error::shape(
            "wgpu cosine cost",
            format!("n, m ≤ {side} (16 rows per workgroup) and n + m ≤ {grid_rows}"),
            format!("n = {n}, m = {m}"),
        ));
    }
    let pipes = &ctx.pipelines.cosine;
    let blocked = ctx.cost_tiling() == CostTiling::Blocked
        && n >= COSINE_BLOCKED_MIN
        && m >= COSINE_BLOCKED_MIN;
    let mut data = vec![0.0f32; b * n * m];
    for start in (0..b).step_by(chunk) {
        let c = chunk.min(b - start);
        let lengths: Vec<[u32; 2]> = (start..start + c)
            .map(|p| [x.lengths[p] as u32, y.lengths[p] as u32])
            .collect();
        let params = ctx.uniform(&CosineParams {
            pairs: c as u32,
            n: n as u32,
            m: m as u32,
            d4: (d / 4) as u32,
        });
        let bufs = [
            ctx.upload(&xd[start * n * d..(start + c) * n * d]),
            ctx.upload(&yd[start * m * d..(start + c) * m * d]),
            ctx.upload(&lengths),
            ctx.storage((c * n * 4) as u64),
            ctx.storage((c * m * 4) as u64),
            ctx.storage((c * n * m * 4) as u64),
        ];
        let group = ctx.bind_group(
            pipes,
            &[
                &params, &bufs[0], &bufs[1], &bufs[2], &bufs[3], &bufs[4], &bufs[5],
            ],
        );
        let mut enc = ctx.encoder();
        ctx.encode(
            &mut enc,
            &[
                (
                    pipes.pipeline(COSINE_NORMS)?,
                    &group,
                    [groups(c * (n + m), 256), 1, 1],
                ),
                if blocked {
                    (
                        pipes.pipeline(COSINE_COST_BLOCKED)?,
                        &group,
                        [groups(m, 64), groups(n, 64), c as u32],
                    )
                } else {
                    (
                        pipes.pipeline(COSINE_COST)?,
                        &group,
                        [groups(m, 16), groups(n, 16), c as u32],
                    )
                },
            ],
        );
        let out = ctx.submit_and_read::<f32>("cosine_cost", enc, &[(&bufs[5], c * n * m)])?;
        data[start * n * m..(start + c) * n * m].copy_from_slice(&out[0]);
        ctx.recycle(bufs);
    }
    Ok(CostBatch { b, n, m, data })
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct MaxsimParams {
    queries: u32,
    nq: u32,
    d4: u32,
    docs: u32,
    doc_tokens: u32,
    _pad: [u32; 3],
}

pub(crate) fn maxsim(
    ctx: &WgpuContext,
    queries: &Embeddings,
    docs: &PackedDocs,
) -> Result<Vec<f32>> {
    check_maxsim(queries, docs)?;
    check_cost_dimensions(ctx, "wgpu maxsim", queries.d)?;
    let (nqueries, nq, d) = (queries.b, queries.n, queries.d);
    // On llvmpipe, the longest query against the longest document must fit an invocation's
    // loop passes.
    let longest_query = queries.lengths.iter().copied().max().unwrap_or(0);
    let longest_doc = docs.lengths.iter().copied().max().unwrap_or(0);
    let tile = ctx.maxsim_tiling() == MaxsimTiling::Tile;
    let needed = if tile {
        passes::maxsim_tile(longest_query, longest_doc, d.div_ceil(4))
    } else {
        passes::maxsim(longest_query, longest_doc, d.div_ceil(4))
    };
    if !ctx.loops_fit(needed) {
        return Err(Error::shape(
            "wgpu maxsim",
            format!(
                "query tokens × document tokens × d within the loop passes {} lets a \
                 shader make ({}; use another backend)",
                ctx.adapter_name(),
                LLVMPIPE_LOOP_PASSES
            ),
            format!("a query of {longest_query} tokens, a document of {longest_doc}, d = {d}"),
        ));
    }
    // Queries in slices, each a dispatch's: at most a grid dimension of them (the scores
    // grid's y), their embeddings within one binding, and their tokens within half the norm
    // grid (the other half for documents). Scores are query-major, so a slice's are a
    // contiguous block of the output.
    let d4 = d.div_ceil(4);
    let max_groups = ctx.limits.max_compute_workgroups_per_dimension as usize;
    let per_query = (nq * d4 * 16) as u64;
    let slice = max_groups
        .min((ctx.max_binding() / per_query.max(1)) as usize)
        .min(max_groups * 256 / 2 / nq.max(1));
    if slice == 0 {
        return Err(Error::shape(
            "wgpu maxsim queries",
            format!(
                "a query within one binding ({} B) and half the norm grid ({} tokens)",
                ctx.max_binding(),
                max_groups * 256 / 2
            ),
            format!("{nq} tokens of d = {d} per query ({per_query} B)"),
        ));
    }
    let dd = pad_rows(&docs.data, d);
    if slice >= nqueries {
        return maxsim_slice(ctx, queries, docs, &dd, tile);
    }
    let mut out = Vec::with_capacity(nqueries * docs.len());
    for start in (0..nqueries).step_by(slice) {
        let c = slice.min(nqueries - start);
        let part = Embeddings {
            b: c,
            n: nq,
            d,
            data: queries.data[start * nq * d..(start + c) * nq * d].to_vec(),
            lengths: queries.lengths[start..start + c].to_vec(),
        };
        out.extend(maxsim_slice(ctx, &part, docs, &dd, tile)?);
    }
    Ok(out)
}

/// MaxSim of queries that fit one dispatch (see [`maxsim`]) against every document, the
/// documents in chunks; `dd` is the documents' rows padded to whole vec4s.
fn maxsim_slice(
    ctx: &WgpuContext,
    queries: &Embeddings,
    docs: &PackedDocs,
    dd: &[f32],
    tile: bool,
) -> Result<Vec<f32>> {
    let (nqueries, nq, d) = (queries.b, queries.n, queries.d);
    let qd = pad_rows(&queries.data, d);
    let d4 = d.div_ceil(4);
    let max_groups = ctx.limits.max_compute_workgroups_per_dimension as usize;
    let pipes = &ctx.pipelines.maxsim;
    let q_len: Vec<u32> = queries.lengths.iter().map(|&l| l as u32).collect();
    let q_buf = ctx.upload(&qd);
    let q_len_buf = ctx.upload(&q_len);
    let inv_q = ctx.storage((nqueries * nq * 4) as u64);
    // Documents in chunks: whole documents, tokens within one binding and the norm grid,
    // documents within the grid.
    let max_tokens = ((ctx.max_binding() / (d4 as u64 * 16)) as usize)
        .min((max_groups * 256).saturating_sub(nqueries * nq));
    if max_tokens == 0 {
        // The norm pass covers query and document tokens in one grid: queries that fill it
        // leave no room for any document.
        return Err(Error::shape(
            "wgpu maxsim queries",
            format!(
                "fewer than {} query token slots (queries × longest query) per call",
                max_groups * 256
            ),
            format!("{nqueries} × {nq}"),
        ));
    }
    let nd = docs.len();
    let mut out = vec![0.0f32; nqueries * nd];
    let chunks = maxsim_doc_chunks(
        &docs.lengths,
        nqueries,
        max_groups,
        ctx.max_binding() as usize,
        max_tokens,
    )?;
    for (k0, k1, tokens) in chunks {
        let first = docs.offsets[k0];
        let info: Vec<[u32; 2]> = (k0..k1)
            .map(|k| [(docs.offsets[k] - first) as u32, docs.lengths[k] as u32])
            .collect();
        let params = ctx.uniform(&MaxsimParams {
            queries: nqueries as u32,
            nq: nq as u32,
            d4: d4 as u32,
            docs: (k1 - k0) as u32,
            doc_tokens: tokens as u32,
            _pad: [0; 3],
        });
        let bufs = [
            ctx.upload(&dd[first * d4 * 4..(first + tokens) * d4 * 4]),
            ctx.upload(&info),
            ctx.storage((tokens * 4) as u64),
            ctx.storage((nqueries * (k1 - k0) * 4) as u64),
        ];
        let group = ctx.bind_group(
            pipes,
            &[
                &params, &q_buf, &q_len_buf, &bufs[0], &bufs[1], &inv_q, &bufs[2], &bufs[3],
            ],
        );
        let mut enc = ctx.encoder();
        ctx.encode(
            &mut enc,
            &[
                (
                    pipes.pipeline(MAXSIM_NORMS)?,
                    &group,
                    [groups(nqueries * nq + tokens, 256), 1, 1],
                ),
                (
                    pipes.pipeline(if tile {
                        MAXSIM_SCORES_TILE
                    } else {
                        MAXSIM_SCORES
                    })?,
                    &group,
                    [(k1 - k0) as u32, nqueries as u32, 1],
                ),
            ],
        );
        let scores =
            ctx.submit_and_read::<f32>("maxsim", enc, &[(&bufs[3], nqueries * (k1 - k0))])?;
        for q in 0..nqueries {
            out[q * nd + k0..q * nd + k1]
                .copy_from_slice(&scores[0][q * (k1 - k0)..(q + 1) * (k1 - k0)]);
        }
        ctx.recycle(bufs);
    }
    ctx.recycle([q_buf, q_len_buf, inv_q]);
    Ok(out)
}

/// MaxSim's documents cut into dispatches `(first, end, tokens)`: whole documents, at most
/// `max_tokens` tokens (one binding of embeddings, the norm grid), at most `max_groups`
/// documents (the grid), and scores (`queries` per document, f32) and offsets within one
/// binding of `max_binding` bytes.
fn maxsim_doc_chunks(
    lengths: &[usize],
    queries: usize,
    max_groups: usize,
    max_binding: usize,
    max_tokens: usize,
) -> Result<Vec<(usize, usize, usize)>> {
    let max_docs = max_groups.min(max_binding / (4 * queries.max(2))).max(1);
    let mut chunks = Vec::new();
    let mut k0 = 0;
    while k0 < lengths.len() {
        let mut k1 = k0;
        let mut tokens = 0;
        while k1 < lengths.len() && k1 - k0 < max_docs && tokens + lengths[k1] <= max_tokens {
            tokens += lengths[k1];
            k1 += 1;
        }
        if k1 == k0 {
            return Err(Error::shape(
                format!("wgpu maxsim document {k0}"),
                format!("at most {max_tokens} tokens per document"),
                format!("{} tokens", lengths[k0]),
            ));
        }
        chunks.push((k0, k1, tokens));
        k0 = k1;
    }
    Ok(chunks)
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct FusedParams {
    pairs: u32,
    n: u32,
    m: u32,
    d: u32,
    start: u32,
    iterations: u32,
    max_iterations: u32,
    check_every: u32,
    epsilon: f32,
    threshold: f32,
    _pad: [u32; 2],
}

/// The fused kernel that solves this batch: [`SinkhornKernel::Blocked`] (the register-blocked
/// kernel, when every pair fits its grid and it is chosen) or [`SinkhornKernel::Rows`] (the
/// tile kernel, when every pair's cost fits the tile), or `None` when neither takes every
/// pair (the caller then takes the materialised path).
pub(crate) fn fused_kernel_for(
    ctx: &WgpuContext,
    x: &Embeddings,
    y: &Embeddings,
) -> Option<SinkhornKernel> {
    if x.n > MAX_LEN || y.n > MAX_LEN {
        return None;
    }
    let pairs = 0..x.b.min(y.b);
    let cap = ctx.tile_capacity() as usize;
    let kernel = if pairs
        .clone()
        .all(|p| ctx.blocked_takes(x.lengths[p], y.lengths[p]))
    {
        SinkhornKernel::Blocked
    } else if pairs
        .clone()
        .all(|p| x.lengths[p] * (y.lengths[p] | 1) <= cap)
    {
        SinkhornKernel::Rows
    } else {
        return None;
    };
    // Where loops are capped (llvmpipe), the cost build and one iteration must fit a
    // dispatch, and the build and the plan the plan kernel's, with either workgroup size
    // (a chunk of short pairs takes the narrow one); else the materialised path.
    [false, true]
        .into_iter()
        .all(|narrow| {
            let (build, _) = fused_passes(kernel, ctx.blocked_lse(), x.n, y.n, x.d, narrow);
            let plan = build + passes::rows_setup(x.n, y.n, narrow);
            fused_iterations_per_dispatch(ctx, kernel, x.n, y.n, x.d, narrow, 1).is_some()
                && ctx.loops_fit(plan)
        })
        .then_some(kernel)
}

/// The fused kernels' loop passes ([`passes`]): the cost build, and one iteration.
fn fused_passes(
    kernel: SinkhornKernel,
    lse: BlockedLse,
    n: usize,
    m: usize,
    d: usize,
    narrow: bool,
) -> (u64, u64) {
    match kernel {
        SinkhornKernel::Blocked => (passes::blocked_build(d), passes::blocked_iteration(lse)),
        SinkhornKernel::Rows => (
            passes::tile_build(n, m, d, narrow),
            passes::rows_iteration(n, m, narrow),
        ),
    }
}

/// Iterations of one fused dispatch, of the `wanted`, within the adapter's loop cap.
fn fused_iterations_per_dispatch(
    ctx: &WgpuContext,
    kernel: SinkhornKernel,
    n: usize,
    m: usize,
    d: usize,
    narrow: bool,
    wanted: u32,
) -> Option<u32> {
    let (build, iteration) = fused_passes(kernel, ctx.blocked_lse(), n, m, d, narrow);
    ctx.iterations_per_dispatch(build, iteration, wanted)
}

/// The fused solve, or `None` when no fused kernel takes every pair (the caller then takes
/// the materialised path).
pub(crate) fn fused_sinkhorn(
    ctx: &WgpuContext,
    x: &Embeddings,
    y: &Embeddings,
    params: &SinkhornParams,
) -> Result<Option<SinkhornOutput>> {
    params.validate()?;
    check_pair_batch(x, y)?;
    // The fused kernels take ε as an f32; one that is not a normal f32 (ε = 1e39 became
    // infinite and the potentials NaN) goes to the materialised path, which scales the cost
    // in f64.
    if !(params.epsilon as f32).is_normal() {
        return Ok(None);
    }
    let (b, n, m, d) = (x.b, x.n, y.n, x.d);
    let kernel = fused_kernel_for(ctx, x, y);
    let pipes = match kernel {
        Some(SinkhornKernel::Blocked) => ctx.pipelines.fused_blocked.as_ref(),
        Some(_) => Some(&ctx.pipelines.fused),
        None => None,
    };
    let (Some(pipes), Some(kernel)) = (pipes, kernel) else {
        return Ok(None);
    };
    let to_u32 = |name: &'static str, v: usize| {
        u32::try_from(v).map_err(|_| Error::parameter(name, "at most 4294967295", v))
    };
    let max_iterations = to_u32("max_iterations", params.max_iterations)?;
    let check_every = to_u32("check_every", params.check_every)?;
    let per_dispatch = params.check_every
        * FUSED_ITERATIONS_PER_DISPATCH
            .div_ceil(params.check_every)
            .max(1);
    let out_per_pair = n * m + 1 + n + m;
    let per_pair = [
        (n * d * 4) as u64,
        (m * d * 4) as u64,
        (out_per_pair * 4) as u64,
    ];
    let chunk = ctx.chunk_len("fused sinkhorn", &per_pair, b)?;
    let mut out = SinkhornOutput {
        pairs: b,
        n,
        m,
        plan: vec![0.0; b * n * m],
        f: vec![0.0; b * n],
        g: vec![0.0; b * m],
        cost: vec![0.0; b],
        iterations: vec![0; b],
        converged: vec![false; b],
        marginal_error: vec![f64::INFINITY; b],
    };
    for start in (0..b).step_by(chunk) {
        let c = chunk.min(b - start);
        let lengths: Vec<[u32; 2]> = (start..start + c)
            .map(|p| [x.lengths[p] as u32, y.lengths[p] as u32])
            .collect();
        let status0: Vec<[u32; 4]> = vec![[0, 0, f32::INFINITY.to_bits(), 0]; c];
        let narrow =
            (start..start + c).all(|p| x.lengths[p] <= NARROW_LEN && y.lengths[p] <= NARROW_LEN);
        let variant = if narrow { FUSED_NARROW } else { 0 }
            + match kernel {
                SinkhornKernel::Blocked => ctx.blocked_lse_offset(true),
                SinkhornKernel::Rows => 0,
            };
        // Fewer iterations per dispatch where the adapter caps loop passes (llvmpipe).
        // fused_kernel_for checked that one fits with the widest variant.
        let per_dispatch = fused_iterations_per_dispatch(
            ctx,
            kernel,
            n,
            m,
            d,
            narrow,
            u32::try_from(per_dispatch).unwrap_or(u32::MAX),
        )
        .unwrap_or(1) as usize;
        let bufs = [
            ctx.upload(&x.data[start * n * d..(start + c) * n * d]),
            ctx.upload(&y.data[start * m * d..(start + c) * m * d]),
            ctx.upload(&lengths),
            ctx.storage((c * n * 4) as u64),
            ctx.storage((c * m * 4) as u64),
            ctx.upload(&status0),
            ctx.storage((c * out_per_pair * 4) as u64),
        ];
        let fused_params = |first: usize| FusedParams {
            pairs: c as u32,
            n: n as u32,
            m: m as u32,
            d: d as u32,
            start: first as u32,
            iterations: per_dispatch as u32,
            max_iterations,
            check_every,
            epsilon: params.epsilon as f32,
            // Rounded down, as the materialised path's check has it: a threshold that
            // rounded up to f32 would stop a pair the host's f64 check keeps going.
            threshold: crate::ot::sinkhorn::f32_floor(params.threshold),
            _pad: [0; 2],
        };
        let mut status = status0;
        let mut first = 0;
        while first < params.max_iterations {
            let u = ctx.uniform(&fused_params(first));
            let group = ctx.bind_group(
                pipes,
                &[
                    &u, &bufs[0], &bufs[1], &bufs[2], &bufs[3], &bufs[4], &bufs[5], &bufs[6],
                ],
            );
            let mut enc = ctx.encoder();
            ctx.encode(
                &mut enc,
                &[(
                    pipes.pipeline(FUSED_SOLVE + variant)?,
                    &group,
                    [c as u32, 1, 1],
                )],
            );
            status = ctx
                .submit_and_read::<[u32; 4]>("fused sinkhorn", enc, &[(&bufs[5], c)])?
                .remove(0);
            first += per_dispatch;
            // A running pair has done every iteration up to `first` (or the last): fewer
            // means the adapter ended the shader's loops early, and its state is garbage.
            let due = first.min(params.max_iterations);
            if let Some((k, s)) = status
                .iter()
                .enumerate()
                .find(|(_, s)| s[1] == 0 && (s[0] as usize) < due)
            {
                return Err(Error::Backend {
                    backend: BACKEND,
                    operation: "fused sinkhorn",
                    what: format!(
                        "pair {}: the dispatch ended after iteration {} of {due}: the adapter \
                         ({}) stopped the shader's loops early; use another backend",
                        start + k,
                        s[0],
                        ctx.adapter_name()
                    ),
                });
            }
            if status.iter().all(|s| s[1] != 0) {
                break;
            }
        }
        let u = ctx.uniform(&fused_params(first));
        let group = ctx.bind_group(
            pipes,
            &[
                &u, &bufs[0], &bufs[1], &bufs[2], &bufs[3], &bufs[4], &bufs[5], &bufs[6],
            ],
        );
        let mut enc = ctx.encoder();
        ctx.encode(
            &mut enc,
            &[(
                pipes.pipeline(FUSED_PLAN + variant)?,
                &group,
                [c as u32, 1, 1],
            )],
        );
        let res = ctx
            .submit_and_read::<f32>("fused sinkhorn plan", enc, &[(&bufs[6], c * out_per_pair)])?
            .remove(0);
        let (plan, rest) = res.split_at(c * n * m);
        let (cost, rest) = rest.split_at(c);
        let (f, g) = rest.split_at(c * n);
        // In parallel: the plan of the problem is 4.2 M values.
        let widen = |dst: &mut [f64], src: &[f32]| {
            dst.par_iter_mut()
                .zip(src.par_iter())
                .with_min_len(1 << 14)
                .for_each(|(o, &v)| *o = v as f64);
        };
        widen(&mut out.plan[start * n * m..(start + c) * n * m], plan);
        widen(&mut out.cost[start..start + c], cost);
        widen(&mut out.f[start * n..(start + c) * n], f);
        widen(&mut out.g[start * m..(start + c) * m], g);
        for (k, s) in status.iter().enumerate() {
            out.iterations[start + k] = s[0];
            out.converged[start + k] = s[1] == 1;
            out.marginal_error[start + k] = f32::from_bits(s[2]) as f64;
        }
        ctx.recycle(bufs);
    }
    // Uniform mass on each pair's real rows, as the fused kernels solve.
    let a: Vec<f64> = (0..b * n)
        .map(|k| {
            let len = x.lengths[k / n];
            if k % n < len {
                1.0 / len as f64
            } else {
                0.0
            }
        })
        .collect();
    out.include_plan_errors(&a);
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maxsim_chunks_keep_scores_tokens_and_documents_within_their_limits() {
        // 600 queries × 60,000 one-token documents: 144 MB of scores, past lavapipe's
        // 128 MiB binding though the tokens fit it easily.
        let binding = 128 << 20;
        let lengths = vec![1usize; 60_000];
        let chunks = maxsim_doc_chunks(&lengths, 600, 65_535, binding, 1 << 20).unwrap();
        assert!(chunks.len() >= 2, "{chunks:?}");
        let mut next = 0;
        for &(k0, k1, tokens) in &chunks {
            assert_eq!(k0, next, "chunks cover the documents in order");
            assert!(k1 > k0 && 600 * (k1 - k0) * 4 <= binding, "{k0}..{k1}");
            assert_eq!(tokens, k1 - k0);
            next = k1;
        }
        assert_eq!(next, lengths.len());
        // Tokens and the grid bind too.
        let chunks = maxsim_doc_chunks(&[3, 3, 3, 3, 3], 1, 2, binding, 7).unwrap();
        assert_eq!(chunks, [(0, 2, 6), (2, 4, 6), (4, 5, 3)]);
        let err = maxsim_doc_chunks(&[3, 9], 1, 2, binding, 7).unwrap_err();
        assert!(
            err.to_string()
                .contains("wgpu maxsim document 1: expected shape at most 7 tokens per document, found 9 tokens"),
            "{err}"
        );
    }
}
