// Batched log-domain Sinkhorn on a materialised cost (the `SinkhornKernels` primitives).
//
// Entry points
//   sinkhorn_iterate_f32   `params.iterations` full iterations (row update, then column
//                          update) of every active pair, without leaving the dispatch.
//   sinkhorn_iterate_blocked_f32
//                          the same, register-blocked (blocked_lse.wgsl, appended by the
//                          host): one workgroup of G × G invocations per pair (WG = G·G,
//                          G = 16, or 8 when every pair is at most 64 × 64), K in registers,
//                          8 × 8 per invocation, loaded once per dispatch; for dispatches
//                          whose pairs all have at most 8G support rows and columns.
//   sinkhorn_half_split_f32
//                          one half-iteration (the row update, or with SPLIT_COLS the column
//                          update) of every active pair, a pair spread over many workgroups
//                          (16 lines each, ⌈n/16⌉ or ⌈m/16⌉ of them per pair from the padded
//                          sizes; the surplus ones return at once): the host dispatches them
//                          alternately, 2 per iteration, always for chunks with more than
//                          MAX_N padded rows or columns (no other kernel takes them), and on
//                          GPU adapters under the default kernel choice (blocked) for chunks
//                          where not every pair fits the blocked kernel and no pair fits the
//                          tile, so that a few large pairs still fill the device. (A chunk
//                          where some pairs fit the tile runs sinkhorn_iterate_f32, which
//                          streams K from global memory for the others.)
//   sinkhorn_errors_f32    L1 row-marginal error of every active pair -> err[p]; the iterate
//                          is not changed.
//   sinkhorn_split_errors_f32
//                          the same error for the batches that take the split: each pair's
//                          sum of the row terms the split row pipeline wrote with SPLIT_TERMS
//                          (err holds pairs·(1 + n) floats: the errors, then the terms).
//
// Bindings (group 0), one dispatch covers one chunk of pairs, all arrays chunk-relative
//   0 uniform  params       {pairs, n, m, iterations}; n, m = padded row/column strides
//   1 storage  pair_info    array<vec4<u32>> (pairs): (nr, nc, active, 0), nr/nc = support
//   2 storage  kmat         f32, per pair 2·n·m values at p·2·n·m:
//                             K   (nr, nc) row-major at +0        (row-major, stride nc)
//                             K^T (nc, nr) row-major at +n·m     (stride nr)
//                           K_ij = −(C_ij − α_i − β_j)·log2(e)/ε on the compacted support
//                           (α row minima, β column minima of the rest, so K ≤ 0 and the
//                           potentials stay small in f32)
//   3 storage  log_a        f32 (pairs, n): log2 a_i of the support rows, compacted
//   4 storage  log_b        f32 (pairs, m): log2 b_j
//   5 storage  f            f32 (pairs, n) read_write: F_i = (f_i − α_i)·log2(e)/ε
//   6 storage  g            f32 (pairs, m) read_write: G_j = (g_j − β_j)·log2(e)/ε
//   7 storage  err          f32 (pairs) read_write; then, for batches that take the split,
//                           each row's error term (pairs, n) at +pairs
//
// Geometry: one workgroup of WG invocations per pair (WG = 256, or 64 when every pair of the
// dispatch is at most 64 × 64: a pipeline-overridable constant), dispatch (pairs, 1, 1),
// pairs ≤ 65535 (the host chunks larger batches). Invocation t owns rows t, t+WG, … and
// columns t, t+WG, … (n, m ≤ 512), keeping their F, G, log a, log b in registers.
//
// Workgroup memory (sinkhorn_iterate_f32 and the error kernels): hf = F + log a (512 f32),
// hg = G + log b (512 f32), partial sums (WG f32), and `tile`, TILE_CAPACITY f32 (a pipeline-overridable constant sized by the host from
// the device's maxComputeWorkgroupStorageSize). When nr·(nc|1) ≤ TILE_CAPACITY the pair's K is
// copied into `tile` once per dispatch (row stride nc|1, odd, so the row-update reads of 32
// consecutive invocations fall in 32 different banks) and every iteration reads it from
// there; otherwise both updates stream K from global memory: the row update reads K^T and the
// column update K, so consecutive invocations always read consecutive addresses.
// sinkhorn_half_split_f32 adds lane_part (256 vec2, 2 KiB); sinkhorn_iterate_blocked_f32
// takes hf, hg and blocked_lse.wgsl's arrays (pmax, psum, lvl1, sf, sg, redo) and no tile:
// 24,580 B at G = 16. Workgroup variables count only in the entry points that use them.
//
// Numerics: base-2 log domain, f32. Each LSE is a single pass with a running maximum
// (max-subtracted: with e = 2^−|v−m|, s ← s·e + 1 and m ← v when a new maximum arrives, else
// s ← s + e; a select, not a branch, so lanes never diverge), one exp2 per element, summed
// sequentially in index order by one invocation, so results are
// bit-identical from run to run. The error of a row is a_i·|2^(F_i − F_i^new) − 1|, where
// F^new is the next row update (Σ_j P_ij = a_i·2^(F_i − F_i^new)); the per-row terms are
// reduced in a fixed tree order.

struct Params {
    pairs: u32,
    n: u32,
    m: u32,
    iterations: u32,
}

// The register-blocked kernels' fast path (blocked_lse.wgsl, SHIFTED there).
override SHIFTED: bool = false;

// Invocations per workgroup: 256, or 64 for batches whose pairs are all ≤ 64 × 64 (fewer
// idle invocations); the host picks the pipeline.
override WG: u32 = 256u;
const MAX_N: u32 = 512u;
const MAX_PER_THREAD: u32 = 8u; // MAX_N / smallest WG

override TILE_CAPACITY: u32 = 1u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> pair_info: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> kmat: array<f32>;
@group(0) @binding(3) var<storage, read> log_a: array<f32>;
@group(0) @binding(4) var<storage, read> log_b: array<f32>;
@group(0) @binding(5) var<storage, read_write> f: array<f32>;
@group(0) @binding(6) var<storage, read_write> g: array<f32>;
@group(0) @binding(7) var<storage, read_write> err: array<f32>;

var<workgroup> hf: array<f32, MAX_N>;
var<workgroup> hg: array<f32, MAX_N>;
var<workgroup> partial: array<f32, WG>;
var<workgroup> tile: array<f32, TILE_CAPACITY>;

// Add one term to a running (max, scaled sum) pair.
fn lse_push(acc: vec2<f32>, v: f32) -> vec2<f32> {
    let diff = v - acc.x;
    let e = exp2(-abs(diff));
    return select(vec2<f32>(acc.x, acc.y + e), vec2<f32>(v, fma(acc.y, e, 1.0)), diff > 0.0);
}

// log2 Σ_j 2^(K_ij + hg_j), K from the tile (stride s).
fn row_lse_tile(i: u32, nc: u32, s: u32) -> f32 {
    var acc = vec2<f32>(tile[i * s] + hg[0], 1.0);
    for (var j = 1u; j < nc; j++) {
        acc = lse_push(acc, tile[i * s + j] + hg[j]);
    }
    return acc.x + log2(acc.y);
}

// log2 Σ_j 2^(K_ij + hg_j), K^T streamed from global memory.
fn row_lse_global(kt: u32, i: u32, nr: u32, nc: u32) -> f32 {
    var acc = vec2<f32>(kmat[kt + i] + hg[0], 1.0);
    for (var j = 1u; j < nc; j++) {
        acc = lse_push(acc, kmat[kt + j * nr + i] + hg[j]);
    }
    return acc.x + log2(acc.y);
}

// The same with G_j + log2 b_j read from global memory (pair p): for pairs with more than
// MAX_N columns, whose potentials hg cannot stage.
fn row_lse_unstaged(p: u32, kt: u32, i: u32, nr: u32, nc: u32) -> f32 {
    let gb = p * params.m;
    var acc = vec2<f32>(kmat[kt + i] + g[gb] + log_b[gb], 1.0);
    for (var j = 1u; j < nc; j++) {
        acc = lse_push(acc, kmat[kt + j * nr + i] + g[gb + j] + log_b[gb + j]);
    }
    return acc.x + log2(acc.y);
}

// log2 Σ_i 2^(K_ij + hf_i), K from the tile (stride s).
fn col_lse_tile(j: u32, nr: u32, s: u32) -> f32 {
    var acc = vec2<f32>(tile[j] + hf[0], 1.0);
    for (var i = 1u; i < nr; i++) {
        acc = lse_push(acc, tile[i * s + j] + hf[i]);
    }
    return acc.x + log2(acc.y);
}

// log2 Σ_i 2^(K_ij + hf_i), K streamed from global memory.
fn col_lse_global(k: u32, j: u32, nr: u32, nc: u32) -> f32 {
    var acc = vec2<f32>(kmat[k + j] + hf[0], 1.0);
    for (var i = 1u; i < nr; i++) {
        acc = lse_push(acc, kmat[k + i * nc + j] + hf[i]);
    }
    return acc.x + log2(acc.y);
}

@compute @workgroup_size(WG)
fn sinkhorn_iterate_f32(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let p = wid.x;
    if p >= params.pairs {
        return;
    }
    let info = pair_info[p];
    let nr = info.x;
    let nc = info.y;
    if info.z == 0u {
        return;
    }
    let k0 = p * 2u * params.n * params.m;
    let kt0 = k0 + params.n * params.m;
    let s = nc | 1u;
    let on_chip = nr * s <= TILE_CAPACITY;

    var fr: array<f32, MAX_PER_THREAD>;
    var la: array<f32, MAX_PER_THREAD>;
    var gc: array<f32, MAX_PER_THREAD>;
    var lb: array<f32, MAX_PER_THREAD>;
    for (var r = 0u; r < MAX_N / WG; r++) {
        let i = t + r * WG;
        if i < nr {
            fr[r] = f[p * params.n + i];
            la[r] = log_a[p * params.n + i];
        }
        let j = t + r * WG;
        if j < nc {
            gc[r] = g[p * params.m + j];
            lb[r] = log_b[p * params.m + j];
            hg[j] = gc[r] + lb[r];
        }
    }
    if on_chip {
        for (var e = t; e < nr * nc; e += WG) {
            let i = e / nc;
            tile[i * s + (e - i * nc)] = kmat[k0 + e];
        }
    }
    workgroupBarrier();

    for (var it = 0u; it < params.iterations; it++) {
        for (var r = 0u; r < MAX_N / WG; r++) {
            let i = t + r * WG;
            if i < nr {
                if on_chip {
                    fr[r] = -row_lse_tile(i, nc, s);
                } else {
                    fr[r] = -row_lse_global(kt0, i, nr, nc);
                }
                hf[i] = fr[r] + la[r];
            }
        }
        workgroupBarrier();
        for (var c = 0u; c < MAX_N / WG; c++) {
            let j = t + c * WG;
            if j < nc {
                if on_chip {
                    gc[c] = -col_lse_tile(j, nr, s);
                } else {
                    gc[c] = -col_lse_global(k0, j, nr, nc);
                }
            }
        }
        // Every read of hg by this iteration's row update happened before the barrier above.
        for (var c = 0u; c < MAX_N / WG; c++) {
            let j = t + c * WG;
            if j < nc {
                hg[j] = gc[c] + lb[c];
            }
        }
        workgroupBarrier();
    }

    for (var r = 0u; r < MAX_N / WG; r++) {
        let i = t + r * WG;
        if i < nr {
            f[p * params.n + i] = fr[r];
        }
        let j = t + r * WG;
        if j < nc {
            g[p * params.m + j] = gc[r];
        }
    }
}

// The register-blocked iterations (the passes of blocked_lse.wgsl, which the host appends):
// K of the pair in registers, loaded once per dispatch; every pair of the dispatch has at
// most 8G rows and columns of support (the host checks). Same contract as
// sinkhorn_iterate_f32.
// K(i, j) of the pair at kmat[k0] for the four columns j, NEG outside the nr × nc support.
fn k_row4(k0: u32, i: u32, j: vec4<u32>, nr: u32, nc: u32) -> vec4<f32> {
    var v = vec4<f32>(NEG);
    if i < nr {
        if j.x < nc {
            v.x = kmat[k0 + i * nc + j.x];
        }
        if j.y < nc {
            v.y = kmat[k0 + i * nc + j.y];
        }
        if j.z < nc {
            v.z = kmat[k0 + i * nc + j.z];
        }
        if j.w < nc {
            v.w = kmat[k0 + i * nc + j.w];
        }
    }
    return v;
}

@compute @workgroup_size(WG)
fn sinkhorn_iterate_blocked_f32(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let p = wid.x;
    if p >= params.pairs {
        return;
    }
    let info = pair_info[p];
    let nr = info.x;
    let nc = info.y;
    if info.z == 0u {
        return;
    }
    let k0 = p * 2u * params.n * params.m;
    let ri = t / G;
    let cj = t - ri * G;
    let ci = vec4<u32>(cj, cj + G, cj + 2u * G, cj + 3u * G);
    let ch = ci + 4u * G;
    k0l = k_row4(k0, ri, ci, nr, nc);
    k0h = k_row4(k0, ri, ch, nr, nc);
    k1l = k_row4(k0, ri + G, ci, nr, nc);
    k1h = k_row4(k0, ri + G, ch, nr, nc);
    k2l = k_row4(k0, ri + 2u * G, ci, nr, nc);
    k2h = k_row4(k0, ri + 2u * G, ch, nr, nc);
    k3l = k_row4(k0, ri + 3u * G, ci, nr, nc);
    k3h = k_row4(k0, ri + 3u * G, ch, nr, nc);
    k4l = k_row4(k0, ri + 4u * G, ci, nr, nc);
    k4h = k_row4(k0, ri + 4u * G, ch, nr, nc);
    k5l = k_row4(k0, ri + 5u * G, ci, nr, nc);
    k5h = k_row4(k0, ri + 5u * G, ch, nr, nc);
    k6l = k_row4(k0, ri + 6u * G, ci, nr, nc);
    k6h = k_row4(k0, ri + 6u * G, ch, nr, nc);
    k7l = k_row4(k0, ri + 7u * G, ci, nr, nc);
    k7h = k_row4(k0, ri + 7u * G, ch, nr, nc);
    // The owner of row t keeps F_t and log2 a_t, of column t G_t and log2 b_t; past the
    // support hf and hg hold 0.
    let lines = B * G;
    var fr = 0.0;
    var la = 0.0;
    var gc = 0.0;
    var lb = 0.0;
    if t < nr {
        fr = f[p * params.n + t];
        la = log_a[p * params.n + t];
    }
    if t < nc {
        gc = g[p * params.m + t];
        lb = log_b[p * params.m + t];
    }
    if t < lines {
        hg[t] = select(0.0, gc + lb, t < nc);
    }
    publish_start(t, nr, nc, fr, gc);
    workgroupBarrier();

    for (var it = 0u; it < params.iterations; it++) {
        fr = row_update(t, ri, cj, nr, nc, fr);
        gc = finish_iteration(t, ri, cj, nr, nc, fr, la, gc, lb);
    }

    if t < nr {
        f[p * params.n + t] = fr;
    }
    if t < nc {
        g[p * params.m + t] = gc;
    }
}

// The split half-iterations: for pairs too large for one workgroup's registers or tile, one
// dispatch per half-iteration spreads a pair over ceil(lines / 16) workgroups of 256
// invocations, 16 lanes per line (a row of K, or a row of Kᵀ for the column update), reading
// the line's K from global memory in consecutive addresses. The potentials of the other side
// (+ their log weights) are staged in workgroup memory when there are at most MAX_N of them,
// else read from global memory (so the split has no size limit of its own; it is the only
// kernel for pairs with more than MAX_N rows or columns). A lane folds every 16th element
// into a running (max, sum), then the line's first lane merges the 16 partials in lane
// order: deterministic. Dispatch (ceil(n / 16), pairs) for rows, (ceil(m / 16), pairs) for
// columns; lines past a pair's support do nothing.
var<workgroup> lane_part: array<vec2<f32>, 256>;

// The other side's potential + log weight k of pair p for the split's half: staged in hg,
// or from global memory.
fn split_other(p: u32, k: u32, staged: bool) -> f32 {
    if staged {
        return hg[k];
    }
    if SPLIT_COLS {
        return f[p * params.n + k] + log_a[p * params.n + k];
    }
    return g[p * params.m + k] + log_b[p * params.m + k];
}

// −log2 Σ_k 2^(kmat[base + line·len + k] + other_k) over k < len for line wid.x·16 + t/16 of
// pair p (other_k: the other side's potentials + log weights, staged in hg by the caller
// whichever half it runs when `staged`), or 0 for lanes past `lines`. Returns the value on
// the line's first lane (t % 16 == 0).
fn split_line_lse(p: u32, line: u32, lane: u32, t: u32, lines: u32, base: u32, len: u32, staged: bool) -> f32 {
    var acc = vec2<f32>(-3.0e38, 0.0);
    if line < lines {
        for (var k = lane; k < len; k += 16u) {
            acc = lse_push(acc, kmat[base + line * len + k] + split_other(p, k, staged));
        }
    }
    lane_part[t] = acc;
    workgroupBarrier();
    var r = vec2<f32>(0.0, 1.0);
    if lane == 0u && line < lines {
        r = lane_part[t];
        for (var l = 1u; l < 16u; l++) {
            r = combine(r, lane_part[t + l], MODE_LSE);
        }
    }
    return -(r.x + log2(r.y));
}

// Which half-iteration a split pipeline runs: the row update (false) or the column update.
override SPLIT_COLS: bool = false;
// The split convergence check (with SPLIT_COLS false): instead of F_i, write row i's error
// term a_i·|2^(F_i − F_i^new) − 1| to err[pairs + p·n + i], which sinkhorn_split_errors_f32
// sums per pair. The host sizes err to pairs·(1 + n) floats.
override SPLIT_TERMS: bool = false;

@compute @workgroup_size(256)
fn sinkhorn_half_split_f32(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let p = wid.y;
    if p >= params.pairs {
        return;
    }
    let info = pair_info[p];
    // Lines of this half (rows of K, or of Kᵀ) and their length.
    let lines = select(info.x, info.y, SPLIT_COLS);
    let len = select(info.y, info.x, SPLIT_COLS);
    if info.z == 0u || wid.x * 16u >= lines {
        return;
    }
    // The other side's potentials + log weights, in hg for either half when they fit.
    let staged = len <= MAX_N;
    if staged {
        for (var k = t; k < len; k += 256u) {
            if SPLIT_COLS {
                hg[k] = f[p * params.n + k] + log_a[p * params.n + k];
            } else {
                hg[k] = g[p * params.m + k] + log_b[p * params.m + k];
            }
        }
    }
    workgroupBarrier();
    let line = wid.x * 16u + t / 16u;
    let lane = t % 16u;
    let base = p * 2u * params.n * params.m + select(0u, params.n * params.m, SPLIT_COLS);
    let v = split_line_lse(p, line, lane, t, lines, base, len, staged);
    if lane == 0u && line < lines {
        if SPLIT_TERMS {
            let i = p * params.n + line;
            err[params.pairs + i] = exp2(log_a[i]) * abs(exp2(f[i] - v) - 1.0);
        } else if SPLIT_COLS {
            g[p * params.m + line] = v;
        } else {
            f[p * params.n + line] = v;
        }
    }
}

// Each active pair's L1 row-marginal error from the terms of the SPLIT_TERMS pipeline:
// err[p] = Σ_i err[pairs + p·n + i] over i < nr, in a fixed order (strided partial sums, then
// sum_partial's tree, as sinkhorn_errors_f32). Dispatch (pairs, 1, 1).
@compute @workgroup_size(WG)
fn sinkhorn_split_errors_f32(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let p = wid.x;
    if p >= params.pairs {
        return;
    }
    let info = pair_info[p];
    if info.z == 0u {
        return;
    }
    var total = 0.0;
    for (var i = t; i < info.x; i += WG) {
        total += err[params.pairs + p * params.n + i];
    }
    partial[t] = total;
    let e = sum_partial(t);
    if t == 0u {
        err[p] = e;
    }
}

@compute @workgroup_size(WG)
fn sinkhorn_errors_f32(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let p = wid.x;
    if p >= params.pairs {
        return;
    }
    let info = pair_info[p];
    let nr = info.x;
    let nc = info.y;
    if info.z == 0u {
        return;
    }
    let kt0 = p * 2u * params.n * params.m + params.n * params.m;
    // G + log2 b staged when it fits (pairs of more than MAX_N columns read it from global
    // memory).
    let staged = nc <= MAX_N;
    if staged {
        for (var j = t; j < nc; j += WG) {
            hg[j] = g[p * params.m + j] + log_b[p * params.m + j];
        }
    }
    workgroupBarrier();
    var total = 0.0;
    for (var i = t; i < nr; i += WG) {
        var f_new = 0.0;
        if staged {
            f_new = -row_lse_global(kt0, i, nr, nc);
        } else {
            f_new = -row_lse_unstaged(p, kt0, i, nr, nc);
        }
        let fi = f[p * params.n + i];
        total += exp2(log_a[p * params.n + i]) * abs(exp2(fi - f_new) - 1.0);
    }
    partial[t] = total;
    let e = sum_partial(t);
    if t == 0u {
        err[p] = e;
    }
}
