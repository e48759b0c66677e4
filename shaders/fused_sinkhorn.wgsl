// Fused cosine cost + log-domain Sinkhorn: the cost of a pair is computed from its
// embeddings on-chip and never written to global memory. Two kernels, one contract: the
// tile kernel keeps K in workgroup memory, the register-blocked kernel in registers.
//
// Entry points
//   fused_sinkhorn_f32      (tile) and
//   fused_blocked_f32       (register-blocked): run iterations params.start ..
//                           min(params.start + params.iterations, params.max_iterations) of
//                           every pair still active, testing each pair's convergence on the
//                           device every params.check_every iterations and at
//                           params.max_iterations; a pair whose error is ≤ threshold (or not
//                           finite) stops and records its state.
//   fused_plan_f32          (tile) and
//   fused_blocked_plan_f32  (register-blocked): the plan (b, n, m), potentials f, g and
//                           transport cost ⟨P, C⟩ of the current iterate, padding 0.
//
// Marginals: uniform mass on the real rows and columns (log2 a_i = −log2 nr, log2 b_j =
// −log2 nc for a pair of nr × nc real tokens); there is no weights binding.
// The host takes these kernels only when the padded n and m are at most 512, ε is a normal
// f32, and (on llvmpipe) the iterations of a dispatch stay within its loop cap; otherwise
// the materialised path (cosine_cost + sinkhorn.wgsl) solves the batch.
//
// Bindings (group 0), chunk-relative
//   0 uniform  params   {pairs, n, m, d, start, iterations, max_iterations, check_every,
//                        epsilon, threshold}
//   1 storage  x        f32 (pairs, n, d) row-major
//   2 storage  y        f32 (pairs, m, d)
//   3 storage  lengths  array<vec2<u32>> (pairs): real rows of x and of y (the support)
//   4 storage  f        f32 (pairs, n) read_write: shifted F_i = (f_i − α_i)·log2(e)/ε
//   5 storage  g        f32 (pairs, m) read_write: G_j = (g_j − β_j)·log2(e)/ε
//   6 storage  status   array<vec4<u32>> (pairs) read_write: (iterations done, state,
//                       bitcast error, 0); state 0 = running, 1 = converged, 2 = stopped
//                       (non-finite error)
//   7 storage  out      f32, written by the plan entry points only: plan (pairs, n, m), then
//                       the cost (pairs), then f (pairs, n), then g (pairs, m)
//
// Numerics (both kernels): C_ij = 1 − clamp(⟨x_i, y_j⟩·‖x_i‖⁻¹·‖y_j‖⁻¹, −1, 1) (a zero vector
// has inverse norm 0, so cos 0), dot products and squared norms accumulated by fma in f32 in
// dimension order. α_i = min_j C_ij, β_j = min_i (C_ij − α_i); K_ij = −(C_ij − α_i − β_j)·
// log2(e)/ε ≤ 0, by the same operations in both kernels, so their K are bit-identical. K, α
// and β are rebuilt identically at the start of every dispatch, so splitting the iterations
// over dispatches does not change a bit. g = 0 at the start means G_j = −β_j·log2(e)/ε. The
// row update computed by a convergence check is the next iteration's row update, so it is
// kept instead of recomputed. The error is tree-reduced in a fixed order.
//
// ---- Tile kernel (fused_sinkhorn_f32, fused_plan_f32)
// Geometry: one workgroup of WG invocations per pair (WG = 256, or 64 when every pair of the
// dispatch is at most 64 × 64: a pipeline-overridable constant), dispatch (pairs, 1, 1),
// pairs ≤ 65535. Invocation t owns rows t, t+WG, … and columns t, t+WG, ….
// Workgroup memory: hf, hg (512 f32 each; they hold the inverse norms while the cost is
// built), partial sums (WG f32), the pair's status (wstatus, one vec4), and the cost tile, TILE_CAPACITY f32 (overridden by the
// host from maxComputeWorkgroupStorageSize) with odd row stride s = nc|1. The host uses this
// kernel when every pair satisfies nr·s ≤ TILE_CAPACITY and the register-blocked kernel does
// not take the batch; otherwise it falls back to the materialised path (cosine_cost +
// sinkhorn.wgsl). LSE as in sinkhorn.wgsl (single-pass max-subtracted, sequential).
//
// ---- Register-blocked kernel (fused_blocked_f32, fused_blocked_plan_f32; its passes are in
// blocked_lse.wgsl, which the host appends to this file)
// Each invocation keeps an 8 × 8 block of the pair's K in registers (16 named vec4s, see
// blocked_lse.wgsl; while the cost is built they hold its dot products), so every invocation works
// on every row and column update and workgroup memory holds only potentials and partial
// reductions (25,620 B whatever the pair, within the 32 KiB that Metal and many Vulkan
// drivers allow).
// Geometry: one workgroup of G × G invocations per pair (G = 16, or 8 when every pair of the
// dispatch is at most 64 × 64; pipeline-overridable, with WG = G·G), dispatch (pairs, 1, 1).
// Every pair must have at most 8·G real rows and columns (the host checks). Invocation
// t = G·ri + cj owns rows ri + G·a and columns cj + G·b for a, b < 8: its block is strided,
// so a ragged pair keeps all invocations about equally busy.
// One half-iteration (the row update; the column update is its transpose):
//   1. every invocation folds its 8 columns of each of its 8 rows into a partial (max, sum of
//      exp2(v − max)) over v = K_ij + G_j + log2 b_j: 64 exp2, independent of each other
//      (two passes over registers, max then sum, so no exp2 waits on another);
//   2. level 1: invocation t merges 8 of the G partials of row t / (G/8);
//   3. level 2: invocation i (the row's owner) merges the G/8 level-1 results and writes
//      F_i + log2 a_i to workgroup memory.
// Three barriers per half-iteration; exp2 count 2·(8G)²·(1 + 1/8 − 1/(8G)) per iteration for a
// full 8G × 8G pair (the merges add an eighth). Merges are (m, s) ⊕ (m', s') =
// (max, s·2^(m − max) + s'·2^(m' − max)) in a fixed order: deterministic. Padding entries of
// K hold −3e38, whose exp2 against any real maximum is 0.
// Lines of 16 entries or more first take the fast path of blocked_lse.wgsl: terms shifted by
// the line's current potential instead of their maximum, merges that are plain sums, 2·(8G)²
// exp2 per iteration, four barriers per half-iteration (the fourth reads uniformly whether
// every sum stayed in range; if not, the half-iteration is redone as above).
// Workgroup memory (G = 16): hf, hg (512 f32 each, 8G used), partial sums (WG f32), partials
// 2 × 128 × 17 f32 (row stride G + 1, so that the column update's writes do not collide in
// banks; before the iterations they stage the cost build's embeddings, x in pmax and y in
// psum, 8G rows × G dimensions per step), level-1 results 256 vec2, the potentials' copies
// sf and sg (128 f32 each), the fast path's redo flag (one u32) and the pair's status
// (wstatus, one vec4): 25,620 B.
// Workgroup variables count only in the entry points that use them, so neither kernel pays
// for the other's.

struct Params {
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
    _pad0: u32,
    _pad1: u32,
}

// The register-blocked kernels' fast path (blocked_lse.wgsl, SHIFTED there).
override SHIFTED: bool = false;

// Invocations per workgroup: 256, or 64 for batches whose pairs are all ≤ 64 × 64 (fewer
// idle invocations); the host picks the pipeline.
override WG: u32 = 256u;
const MAX_N: u32 = 512u;
const MAX_PER_THREAD: u32 = 8u; // MAX_N / smallest WG
const LOG2E: f32 = 1.4426950408889634;

override TILE_CAPACITY: u32 = 1u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read> lengths: array<vec2<u32>>;
@group(0) @binding(4) var<storage, read_write> f: array<f32>;
@group(0) @binding(5) var<storage, read_write> g: array<f32>;
@group(0) @binding(6) var<storage, read_write> status: array<vec4<u32>>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;

var<workgroup> hf: array<f32, MAX_N>;
var<workgroup> hg: array<f32, MAX_N>;
var<workgroup> partial: array<f32, WG>;
var<workgroup> tile: array<f32, TILE_CAPACITY>;
var<workgroup> wstatus: vec4<u32>;


// The state after a check with error e: 1 converged, 2 stopped (not finite), 0 running.
fn check_state(e: f32) -> u32 {
    if e <= params.threshold {
        return 1u;
    }
    // NaN or ±∞ by its exponent bits, as sinkhorn_retire.wgsl and the host decide it (a
    // comparison would class the largest finite floats with them, and a NaN test may be
    // folded away by a compiler that assumes no NaN).
    if (bitcast<u32>(e) & 0x7f800000u) == 0x7f800000u {
        return 2u;
    }
    return 0u;
}

// The status of pair p, loaded uniformly: it decides whether the whole workgroup works.
fn load_status(p: u32, t: u32) -> vec4<u32> {
    if t == 0u {
        wstatus = status[p];
    }
    return workgroupUniformLoad(&wstatus);
}

// The plan entry points' potentials, f_i = F_i·ε/log2(e) + α_i and g_j likewise (padding 0),
// from hf = α and hg = β.
fn write_potentials(p: u32, t: u32, nr: u32, nc: u32) {
    let n = params.n;
    let m = params.m;
    let unscale = params.epsilon / LOG2E;
    let f0 = params.pairs * n * m + params.pairs;
    let g0 = f0 + params.pairs * n;
    for (var i = t; i < n; i += WG) {
        var v = 0.0;
        if i < nr {
            v = f[p * n + i] * unscale + hf[i];
        }
        out[f0 + p * n + i] = v;
    }
    for (var j = t; j < m; j += WG) {
        var v = 0.0;
        if j < nc {
            v = g[p * m + j] * unscale + hg[j];
        }
        out[g0 + p * m + j] = v;
    }
}

fn lse_push(acc: vec2<f32>, v: f32) -> vec2<f32> {
    let diff = v - acc.x;
    let e = exp2(-abs(diff));
    return select(vec2<f32>(acc.x, acc.y + e), vec2<f32>(v, fma(acc.y, e, 1.0)), diff > 0.0);
}

fn row_lse(i: u32, nc: u32, s: u32) -> f32 {
    var acc = vec2<f32>(tile[i * s] + hg[0], 1.0);
    for (var j = 1u; j < nc; j++) {
        acc = lse_push(acc, tile[i * s + j] + hg[j]);
    }
    return acc.x + log2(acc.y);
}

fn col_lse(j: u32, nr: u32, s: u32) -> f32 {
    var acc = vec2<f32>(tile[j] + hf[0], 1.0);
    for (var i = 1u; i < nr; i++) {
        acc = lse_push(acc, tile[i * s + j] + hf[i]);
    }
    return acc.x + log2(acc.y);
}

// Build the pair's cost C in the tile (stride s), then α and β, and turn the tile into K.
// On return hf[i] = α_i, hg[j] = β_j, tile = K. Ends with a barrier.
fn build_tile(p: u32, t: u32, nr: u32, nc: u32, s: u32) {
    let d = params.d;
    let xb = p * params.n * d;
    let yb = p * params.m * d;
    for (var i = t; i < nr; i += WG) {
        var ss = 0.0;
        for (var k = 0u; k < d; k++) {
            ss = fma(x[xb + i * d + k], x[xb + i * d + k], ss);
        }
        hf[i] = select(inverseSqrt(ss), 0.0, ss == 0.0);
    }
    for (var j = t; j < nc; j += WG) {
        var ss = 0.0;
        for (var k = 0u; k < d; k++) {
            ss = fma(y[yb + j * d + k], y[yb + j * d + k], ss);
        }
        hg[j] = select(inverseSqrt(ss), 0.0, ss == 0.0);
    }
    workgroupBarrier();
    for (var e = t; e < nr * nc; e += WG) {
        let i = e / nc;
        let j = e - i * nc;
        var dot = 0.0;
        for (var k = 0u; k < d; k++) {
            dot = fma(x[xb + i * d + k], y[yb + j * d + k], dot);
        }
        tile[i * s + j] = 1.0 - clamp(dot * hf[i] * hg[j], -1.0, 1.0);
    }
    workgroupBarrier();
    for (var i = t; i < nr; i += WG) {
        var lo = tile[i * s];
        for (var j = 1u; j < nc; j++) {
            lo = min(lo, tile[i * s + j]);
        }
        hf[i] = lo;
    }
    workgroupBarrier();
    for (var j = t; j < nc; j += WG) {
        var lo = tile[j] - hf[0];
        for (var i = 1u; i < nr; i++) {
            lo = min(lo, tile[i * s + j] - hf[i]);
        }
        hg[j] = lo;
    }
    workgroupBarrier();
    let scale = -LOG2E / params.epsilon;
    for (var e = t; e < nr * nc; e += WG) {
        let i = e / nc;
        let j = e - i * nc;
        tile[i * s + j] = (tile[i * s + j] - hf[i] - hg[j]) * scale;
    }
    workgroupBarrier();
}

@compute @workgroup_size(WG)
fn fused_sinkhorn_f32(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let p = wid.x;
    if p >= params.pairs {
        return;
    }
    let st = load_status(p, t);
    if st.y != 0u {
        return;
    }
    let len = lengths[p];
    let nr = len.x;
    let nc = len.y;
    let s = nc | 1u;
    build_tile(p, t, nr, nc, s);

    let first = st.x == 0u;
    let la = -log2(f32(nr));
    let lb = -log2(f32(nc));
    let scale = LOG2E / params.epsilon;
    var fr: array<f32, MAX_PER_THREAD>;
    var fkeep: array<f32, MAX_PER_THREAD>;
    var gc: array<f32, MAX_PER_THREAD>;
    for (var r = 0u; r < MAX_N / WG; r++) {
        let i = t + r * WG;
        if i < nr {
            fr[r] = f[p * params.n + i];
        }
        let j = t + r * WG;
        if j < nc {
            if first {
                gc[r] = -hg[j] * scale;
            } else {
                gc[r] = g[p * params.m + j];
            }
        }
    }
    workgroupBarrier();
    for (var r = 0u; r < MAX_N / WG; r++) {
        let j = t + r * WG;
        if j < nc {
            hg[j] = gc[r] + lb;
        }
    }
    workgroupBarrier();

    let end = min(params.start + params.iterations, params.max_iterations);
    var done = params.start;
    var state_out = 0u;
    var error_out = bitcast<f32>(st.z);
    var have_next = false;
    while done < end {
        // Row update (or the one the last check already computed).
        if !have_next {
            for (var r = 0u; r < MAX_N / WG; r++) {
                let i = t + r * WG;
                if i < nr {
                    fr[r] = -row_lse(i, nc, s);
                }
            }
        }
        have_next = false;
        for (var r = 0u; r < MAX_N / WG; r++) {
            let i = t + r * WG;
            if i < nr {
                hf[i] = fr[r] + la;
            }
        }
        workgroupBarrier();
        for (var c = 0u; c < MAX_N / WG; c++) {
            let j = t + c * WG;
            if j < nc {
                gc[c] = -col_lse(j, nr, s);
            }
        }
        for (var c = 0u; c < MAX_N / WG; c++) {
            let j = t + c * WG;
            if j < nc {
                hg[j] = gc[c] + lb;
            }
        }
        workgroupBarrier();
        done += 1u;

        if done % params.check_every == 0u || done == params.max_iterations {
            var total = 0.0;
            for (var r = 0u; r < MAX_N / WG; r++) {
                let i = t + r * WG;
                if i < nr {
                    let f_new = -row_lse(i, nc, s);
                    total += exp2(la) * abs(exp2(fr[r] - f_new) - 1.0);
                    fkeep[r] = fr[r];
                    fr[r] = f_new;
                }
            }
            have_next = true;
            partial[t] = total;
            let e = sum_partial(t);
            error_out = e;
            state_out = check_state(e);
            if state_out != 0u {
                break;
            }
        }
    }
    // After a check fr holds F^new, half an iteration ahead; the iterate is fkeep.
    if have_next {
        fr = fkeep;
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
    if t == 0u {
        status[p] = vec4<u32>(done, state_out, bitcast<u32>(error_out), 0u);
    }
}

@compute @workgroup_size(WG)
fn fused_plan_f32(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let p = wid.x;
    if p >= params.pairs {
        return;
    }
    let len = lengths[p];
    let nr = len.x;
    let nc = len.y;
    let s = nc | 1u;
    let n = params.n;
    let m = params.m;
    build_tile(p, t, nr, nc, s);
    // hf = α, hg = β, tile = K now.
    let la = -log2(f32(nr));
    let lb = -log2(f32(nc));
    let unscale = params.epsilon / LOG2E;
    let nm = n * m;
    let cost0 = params.pairs * nm;
    var total = 0.0;
    for (var e = t; e < nm; e += WG) {
        let i = e / m;
        let j = e - i * m;
        var v = 0.0;
        if i < nr && j < nc {
            let k = tile[i * s + j];
            v = exp2(k + f[p * n + i] + g[p * m + j] + la + lb);
            // C_ij = α_i + β_j − K_ij·ε/log2(e)
            total += v * (hf[i] + hg[j] - k * unscale);
        }
        out[p * nm + e] = v;
    }
    write_potentials(p, t, nr, nc);
    partial[t] = total;
    let c = sum_partial(t);
    if t == 0u {
        out[cost0 + p] = c;
    }
}

// ---- Register-blocked kernel

// Inverse norms from sums of squares, 0 for a zero vector.
fn inv_norm4(ss: vec4<f32>) -> vec4<f32> {
    return select(inverseSqrt(ss), vec4<f32>(0.0), ss == vec4<f32>(0.0));
}

// Four entries of one row of C from their dot products, the row's and the columns'
// inverse norms; NEG where `real` is false.
fn cost4(dots: vec4<f32>, ix: f32, iy: vec4<f32>, real: vec4<bool>) -> vec4<f32> {
    let c = 1.0 - clamp(dots * ix * iy, vec4<f32>(-1.0), vec4<f32>(1.0));
    return select(vec4<f32>(NEG), c, real);
}

// The smallest of the entries where `real` is true, −NEG if none.
fn min_real(v: vec4<f32>, real: vec4<bool>) -> f32 {
    let w = select(vec4<f32>(-NEG), v, real);
    return min(min(w.x, w.y), min(w.z, w.w));
}

// Four entries of row i of the block with α_i (`a`) and their β (`b`) taken off, scaled to K;
// NEG outside the support.
fn to_k4(v: vec4<f32>, a: f32, b: vec4<f32>, scale: f32, real: vec4<bool>) -> vec4<f32> {
    return select(vec4<f32>(NEG), (v - a - b) * scale, real);
}

// G_j of pair p for the four columns j (p's G at g[base]), 0 past nc.
fn g4(base: u32, cols: vec4<u32>, nc: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if cols.x < nc {
        v.x = g[base + cols.x];
    }
    if cols.y < nc {
        v.y = g[base + cols.y];
    }
    if cols.z < nc {
        v.z = g[base + cols.z];
    }
    if cols.w < nc {
        v.w = g[base + cols.w];
    }
    return v;
}

// Build the pair's K in the invocation's block k<a>l/k<a>h (blocked_lse.wgsl; padding NEG).
// On return hf[i] = α_i, hg[j] = β_j (0 past the lengths, up to 8G). Ends with a barrier.
// The block's vectors accumulate the dot products first (each entry one fma per dimension,
// in dimension order), then hold C, then K.
fn build_blocked(p: u32, t: u32, ri: u32, cj: u32, nr: u32, nc: u32) {
    let d = params.d;
    let xb = p * params.n * d;
    let yb = p * params.m * d;
    let lines = B * G;
    k0l = vec4<f32>(0.0);
    k0h = vec4<f32>(0.0);
    k1l = vec4<f32>(0.0);
    k1h = vec4<f32>(0.0);
    k2l = vec4<f32>(0.0);
    k2h = vec4<f32>(0.0);
    k3l = vec4<f32>(0.0);
    k3h = vec4<f32>(0.0);
    k4l = vec4<f32>(0.0);
    k4h = vec4<f32>(0.0);
    k5l = vec4<f32>(0.0);
    k5h = vec4<f32>(0.0);
    k6l = vec4<f32>(0.0);
    k6h = vec4<f32>(0.0);
    k7l = vec4<f32>(0.0);
    k7h = vec4<f32>(0.0);
    // Sums of squares of the own rows of x (rows ri + G·a: a < 4 in _l, a ≥ 4 in _h) and y.
    var ssx_l = vec4<f32>(0.0);
    var ssx_h = vec4<f32>(0.0);
    var ssy_l = vec4<f32>(0.0);
    var ssy_h = vec4<f32>(0.0);
    // G dimensions of all 8G rows of x and of y per step, staged in pmax (x) and psum (y),
    // which the iterations only use afterwards: 8G rows of G + 1 floats is exactly their
    // size, and the odd stride keeps the reads below in distinct banks.
    let kc = G;
    let kcp = G + 1u;
    let gs = G * kcp;
    let xo = ri * kcp;
    let yo = cj * kcp;
    for (var k0 = 0u; k0 < d; k0 += kc) {
        for (var e = t; e < lines * kc; e += WG) {
            let r = e / kc;
            let c = e - r * kc;
            let kk = k0 + c;
            var vx = 0.0;
            if r < nr && kk < d {
                vx = x[xb + r * d + kk];
            }
            var vy = 0.0;
            if r < nc && kk < d {
                vy = y[yb + r * d + kk];
            }
            pmax[r * kcp + c] = vx;
            psum[r * kcp + c] = vy;
        }
        workgroupBarrier();
        for (var c = 0u; c < kc; c++) {
            let o = xo + c;
            let x_l = vec4<f32>(pmax[o], pmax[o + gs], pmax[o + 2u * gs], pmax[o + 3u * gs]);
            let x_h = vec4<f32>(pmax[o + 4u * gs], pmax[o + 5u * gs], pmax[o + 6u * gs], pmax[o + 7u * gs]);
            let q = yo + c;
            let y_l = vec4<f32>(psum[q], psum[q + gs], psum[q + 2u * gs], psum[q + 3u * gs]);
            let y_h = vec4<f32>(psum[q + 4u * gs], psum[q + 5u * gs], psum[q + 6u * gs], psum[q + 7u * gs]);
            ssx_l = fma(x_l, x_l, ssx_l);
            ssx_h = fma(x_h, x_h, ssx_h);
            ssy_l = fma(y_l, y_l, ssy_l);
            ssy_h = fma(y_h, y_h, ssy_h);
            k0l = fma(vec4<f32>(x_l.x), y_l, k0l);
            k0h = fma(vec4<f32>(x_l.x), y_h, k0h);
            k1l = fma(vec4<f32>(x_l.y), y_l, k1l);
            k1h = fma(vec4<f32>(x_l.y), y_h, k1h);
            k2l = fma(vec4<f32>(x_l.z), y_l, k2l);
            k2h = fma(vec4<f32>(x_l.z), y_h, k2h);
            k3l = fma(vec4<f32>(x_l.w), y_l, k3l);
            k3h = fma(vec4<f32>(x_l.w), y_h, k3h);
            k4l = fma(vec4<f32>(x_h.x), y_l, k4l);
            k4h = fma(vec4<f32>(x_h.x), y_h, k4h);
            k5l = fma(vec4<f32>(x_h.y), y_l, k5l);
            k5h = fma(vec4<f32>(x_h.y), y_h, k5h);
            k6l = fma(vec4<f32>(x_h.z), y_l, k6l);
            k6h = fma(vec4<f32>(x_h.z), y_h, k6h);
            k7l = fma(vec4<f32>(x_h.w), y_l, k7l);
            k7h = fma(vec4<f32>(x_h.w), y_h, k7h);
        }
        workgroupBarrier();
    }
    // C, and the row partial minima (α).
    let ix_l = inv_norm4(ssx_l);
    let ix_h = inv_norm4(ssx_h);
    let iy_l = inv_norm4(ssy_l);
    let iy_h = inv_norm4(ssy_h);
    let cols_l = vec4<u32>(cj, cj + G, cj + 2u * G, cj + 3u * G) < vec4<u32>(nc);
    let cols_h = vec4<u32>(cj + 4u * G, cj + 5u * G, cj + 6u * G, cj + 7u * G) < vec4<u32>(nc);
    let rows_l = vec4<u32>(ri, ri + G, ri + 2u * G, ri + 3u * G) < vec4<u32>(nr);
    let rows_h = vec4<u32>(ri + 4u * G, ri + 5u * G, ri + 6u * G, ri + 7u * G) < vec4<u32>(nr);
    // real_<a>: the row's mask (a < 4 from rows_l, else rows_h) and the columns'.
    let r0l = cols_l & vec4<bool>(rows_l.x);
    let r0h = cols_h & vec4<bool>(rows_l.x);
    let r1l = cols_l & vec4<bool>(rows_l.y);
    let r1h = cols_h & vec4<bool>(rows_l.y);
    let r2l = cols_l & vec4<bool>(rows_l.z);
    let r2h = cols_h & vec4<bool>(rows_l.z);
    let r3l = cols_l & vec4<bool>(rows_l.w);
    let r3h = cols_h & vec4<bool>(rows_l.w);
    let r4l = cols_l & vec4<bool>(rows_h.x);
    let r4h = cols_h & vec4<bool>(rows_h.x);
    let r5l = cols_l & vec4<bool>(rows_h.y);
    let r5h = cols_h & vec4<bool>(rows_h.y);
    let r6l = cols_l & vec4<bool>(rows_h.z);
    let r6h = cols_h & vec4<bool>(rows_h.z);
    let r7l = cols_l & vec4<bool>(rows_h.w);
    let r7h = cols_h & vec4<bool>(rows_h.w);
    k0l = cost4(k0l, ix_l.x, iy_l, r0l);
    k0h = cost4(k0h, ix_l.x, iy_h, r0h);
    k1l = cost4(k1l, ix_l.y, iy_l, r1l);
    k1h = cost4(k1h, ix_l.y, iy_h, r1h);
    k2l = cost4(k2l, ix_l.z, iy_l, r2l);
    k2h = cost4(k2h, ix_l.z, iy_h, r2h);
    k3l = cost4(k3l, ix_l.w, iy_l, r3l);
    k3h = cost4(k3h, ix_l.w, iy_h, r3h);
    k4l = cost4(k4l, ix_h.x, iy_l, r4l);
    k4h = cost4(k4h, ix_h.x, iy_h, r4h);
    k5l = cost4(k5l, ix_h.y, iy_l, r5l);
    k5h = cost4(k5h, ix_h.y, iy_h, r5h);
    k6l = cost4(k6l, ix_h.z, iy_l, r6l);
    k6h = cost4(k6h, ix_h.z, iy_h, r6h);
    k7l = cost4(k7l, ix_h.w, iy_l, r7l);
    k7h = cost4(k7h, ix_h.w, iy_h, r7h);
    let ps = G + 1u;
    pmax[ri * ps + cj] = min(-NEG, min(min_real(k0l, r0l), min_real(k0h, r0h)));
    pmax[(ri + G) * ps + cj] = min(-NEG, min(min_real(k1l, r1l), min_real(k1h, r1h)));
    pmax[(ri + 2u * G) * ps + cj] = min(-NEG, min(min_real(k2l, r2l), min_real(k2h, r2h)));
    pmax[(ri + 3u * G) * ps + cj] = min(-NEG, min(min_real(k3l, r3l), min_real(k3h, r3h)));
    pmax[(ri + 4u * G) * ps + cj] = min(-NEG, min(min_real(k4l, r4l), min_real(k4h, r4h)));
    pmax[(ri + 5u * G) * ps + cj] = min(-NEG, min(min_real(k5l, r5l), min_real(k5h, r5h)));
    pmax[(ri + 6u * G) * ps + cj] = min(-NEG, min(min_real(k6l, r6l), min_real(k6h, r6h)));
    pmax[(ri + 7u * G) * ps + cj] = min(-NEG, min(min_real(k7l, r7l), min_real(k7h, r7h)));
    workgroupBarrier();
    level1(t, MODE_MIN);
    workgroupBarrier();
    if t < lines {
        hf[t] = select(0.0, level2(t, MODE_MIN).x, t < nr);
    }
    workgroupBarrier();
    // β: column partial minima of C − α over the own rows.
    let al = hf4(ri);
    let ah = hf4(ri + 4u * G);
    let big = vec4<f32>(-NEG);
    var lo_l = big;
    var lo_h = big;
    lo_l = min(lo_l, select(big, k0l - al.x, r0l));
    lo_h = min(lo_h, select(big, k0h - al.x, r0h));
    lo_l = min(lo_l, select(big, k1l - al.y, r1l));
    lo_h = min(lo_h, select(big, k1h - al.y, r1h));
    lo_l = min(lo_l, select(big, k2l - al.z, r2l));
    lo_h = min(lo_h, select(big, k2h - al.z, r2h));
    lo_l = min(lo_l, select(big, k3l - al.w, r3l));
    lo_h = min(lo_h, select(big, k3h - al.w, r3h));
    lo_l = min(lo_l, select(big, k4l - ah.x, r4l));
    lo_h = min(lo_h, select(big, k4h - ah.x, r4h));
    lo_l = min(lo_l, select(big, k5l - ah.y, r5l));
    lo_h = min(lo_h, select(big, k5h - ah.y, r5h));
    lo_l = min(lo_l, select(big, k6l - ah.z, r6l));
    lo_h = min(lo_h, select(big, k6h - ah.z, r6h));
    lo_l = min(lo_l, select(big, k7l - ah.w, r7l));
    lo_h = min(lo_h, select(big, k7h - ah.w, r7h));
    pmax[cj * ps + ri] = lo_l.x;
    pmax[(cj + G) * ps + ri] = lo_l.y;
    pmax[(cj + 2u * G) * ps + ri] = lo_l.z;
    pmax[(cj + 3u * G) * ps + ri] = lo_l.w;
    pmax[(cj + 4u * G) * ps + ri] = lo_h.x;
    pmax[(cj + 5u * G) * ps + ri] = lo_h.y;
    pmax[(cj + 6u * G) * ps + ri] = lo_h.z;
    pmax[(cj + 7u * G) * ps + ri] = lo_h.w;
    workgroupBarrier();
    level1(t, MODE_MIN);
    workgroupBarrier();
    if t < lines {
        hg[t] = select(0.0, level2(t, MODE_MIN).x, t < nc);
    }
    workgroupBarrier();
    let scale = -LOG2E / params.epsilon;
    let bl = hg4(cj);
    let bh = hg4(cj + 4u * G);
    k0l = to_k4(k0l, al.x, bl, scale, r0l);
    k0h = to_k4(k0h, al.x, bh, scale, r0h);
    k1l = to_k4(k1l, al.y, bl, scale, r1l);
    k1h = to_k4(k1h, al.y, bh, scale, r1h);
    k2l = to_k4(k2l, al.z, bl, scale, r2l);
    k2h = to_k4(k2h, al.z, bh, scale, r2h);
    k3l = to_k4(k3l, al.w, bl, scale, r3l);
    k3h = to_k4(k3h, al.w, bh, scale, r3h);
    k4l = to_k4(k4l, ah.x, bl, scale, r4l);
    k4h = to_k4(k4h, ah.x, bh, scale, r4h);
    k5l = to_k4(k5l, ah.y, bl, scale, r5l);
    k5h = to_k4(k5h, ah.y, bh, scale, r5h);
    k6l = to_k4(k6l, ah.z, bl, scale, r6l);
    k6h = to_k4(k6h, ah.z, bh, scale, r6h);
    k7l = to_k4(k7l, ah.w, bl, scale, r7l);
    k7h = to_k4(k7h, ah.w, bh, scale, r7h);
    workgroupBarrier();
}

@compute @workgroup_size(WG)
fn fused_blocked_f32(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let p = wid.x;
    if p >= params.pairs {
        return;
    }
    let st = load_status(p, t);
    if st.y != 0u {
        return;
    }
    let len = lengths[p];
    let nr = len.x;
    let nc = len.y;
    let ri = t / G;
    let cj = t - ri * G;
    build_blocked(p, t, ri, cj, nr, nc);

    let first = st.x == 0u;
    let la = -log2(f32(nr));
    let lb = -log2(f32(nc));
    let scale = LOG2E / params.epsilon;
    let lines = B * G;
    // The owner of row t keeps F_t, of column t keeps G_t. A first dispatch starts from
    // F = 0 (f is not initialised then; F is also the first row update's shift).
    var fr = 0.0;
    var fkeep = 0.0;
    var gc = 0.0;
    if t < nr && !first {
        fr = f[p * params.n + t];
    }
    if t < nc {
        if first {
            gc = -hg[t] * scale;
        } else {
            gc = g[p * params.m + t];
        }
    }
    workgroupBarrier();
    if t < lines {
        hg[t] = select(0.0, gc + lb, t < nc);
    }
    publish_start(t, nr, nc, fr, gc);
    workgroupBarrier();

    let end = min(params.start + params.iterations, params.max_iterations);
    var done = params.start;
    var state_out = 0u;
    var error_out = bitcast<f32>(st.z);
    var have_next = false;
    while done < end {
        // Row update (or the one the last check already computed).
        if !have_next {
            fr = row_update(t, ri, cj, nr, nc, fr);
        }
        have_next = false;
        gc = finish_iteration(t, ri, cj, nr, nc, fr, la, gc, lb);
        done += 1u;

        if done % params.check_every == 0u || done == params.max_iterations {
            let f_new = row_update(t, ri, cj, nr, nc, fr);
            var term = 0.0;
            if t < nr {
                term = exp2(la) * abs(exp2(fr - f_new) - 1.0);
                fkeep = fr;
                fr = f_new;
            }
            have_next = true;
            partial[t] = term;
            let e = sum_partial(t);
            error_out = e;
            state_out = check_state(e);
            if state_out != 0u {
                break;
            }
        }
    }
    // After a check fr holds F^new, half an iteration ahead; the iterate is fkeep.
    if have_next {
        fr = fkeep;
    }
    if t < nr {
        f[p * params.n + t] = fr;
    }
    if t < nc {
        g[p * params.m + t] = gc;
    }
    if t == 0u {
        status[p] = vec4<u32>(done, state_out, bitcast<u32>(error_out), 0u);
    }
}

// One entry of the plan at out[o]: written when `real`, and its term added to `total`.
fn plan_entry(o: u32, real: bool, v: f32, term: f32, total: f32) -> f32 {
    if real {
        out[o] = v;
        return total + term;
    }
    return total;
}

// Four entries of a plan row (row offset o, columns `cols`), in column order.
fn plan_entries(o: u32, cols: vec4<u32>, nc: u32, v: vec4<f32>, term: vec4<f32>, total: f32) -> f32 {
    var s = plan_entry(o + cols.x, cols.x < nc, v.x, term.x, total);
    s = plan_entry(o + cols.y, cols.y < nc, v.y, term.y, s);
    s = plan_entry(o + cols.z, cols.z < nc, v.z, term.z, s);
    return plan_entry(o + cols.w, cols.w < nc, v.w, term.w, s);
}

// Row i of pair p's block (K in lo, hi; columns cols_l, cols_h with their G in g_l, g_h and
// β in b_l, b_h): P_ij = 2^(K_ij + F_i + G_j + log2 a + log2 b) into the plan, and `total` plus
// Σ_j P_ij·C_ij over the row's real entries in column order, C_ij = α_i + β_j − K_ij·ε/log2(e).
fn plan_row(
    p: u32,
    i: u32,
    nr: u32,
    nc: u32,
    lo: vec4<f32>,
    hi: vec4<f32>,
    cols_l: vec4<u32>,
    cols_h: vec4<u32>,
    g_l: vec4<f32>,
    g_h: vec4<f32>,
    b_l: vec4<f32>,
    b_h: vec4<f32>,
    la: f32,
    lb: f32,
    unscale: f32,
    total: f32,
) -> f32 {
    if i >= nr {
        return total;
    }
    let fi = f[p * params.n + i];
    let ai = hf[i];
    let v_l = exp2(lo + fi + g_l + la + lb);
    let v_h = exp2(hi + fi + g_h + la + lb);
    let o = p * params.n * params.m + i * params.m;
    let s = plan_entries(o, cols_l, nc, v_l, v_l * (ai + b_l - lo * unscale), total);
    return plan_entries(o, cols_h, nc, v_h, v_h * (ai + b_h - hi * unscale), s);
}

@compute @workgroup_size(WG)
fn fused_blocked_plan_f32(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let p = wid.x;
    if p >= params.pairs {
        return;
    }
    let len = lengths[p];
    let nr = len.x;
    let nc = len.y;
    let n = params.n;
    let m = params.m;
    let ri = t / G;
    let cj = t - ri * G;
    build_blocked(p, t, ri, cj, nr, nc);
    // hf = α, hg = β, the block = K now.
    let la = -log2(f32(nr));
    let lb = -log2(f32(nc));
    let unscale = params.epsilon / LOG2E;
    let nm = n * m;
    let cost0 = params.pairs * nm;
    // Padding entries of the plan.
    for (var e = t; e < nm; e += WG) {
        let i = e / m;
        let j = e - i * m;
        if i >= nr || j >= nc {
            out[p * nm + e] = 0.0;
        }
    }
    let cl = vec4<u32>(cj, cj + G, cj + 2u * G, cj + 3u * G);
    let ch = cl + 4u * G;
    let g_l = g4(p * m, cl, nc);
    let g_h = g4(p * m, ch, nc);
    let b_l = hg4(cj);
    let b_h = hg4(cj + 4u * G);
    var total = 0.0;
    total = plan_row(p, ri, nr, nc, k0l, k0h, cl, ch, g_l, g_h, b_l, b_h, la, lb, unscale, total);
    total = plan_row(p, ri + G, nr, nc, k1l, k1h, cl, ch, g_l, g_h, b_l, b_h, la, lb, unscale, total);
    total = plan_row(p, ri + 2u * G, nr, nc, k2l, k2h, cl, ch, g_l, g_h, b_l, b_h, la, lb, unscale, total);
    total = plan_row(p, ri + 3u * G, nr, nc, k3l, k3h, cl, ch, g_l, g_h, b_l, b_h, la, lb, unscale, total);
    total = plan_row(p, ri + 4u * G, nr, nc, k4l, k4h, cl, ch, g_l, g_h, b_l, b_h, la, lb, unscale, total);
    total = plan_row(p, ri + 5u * G, nr, nc, k5l, k5h, cl, ch, g_l, g_h, b_l, b_h, la, lb, unscale, total);
    total = plan_row(p, ri + 6u * G, nr, nc, k6l, k6h, cl, ch, g_l, g_h, b_l, b_h, la, lb, unscale, total);
    total = plan_row(p, ri + 7u * G, nr, nc, k7l, k7h, cl, ch, g_l, g_h, b_l, b_h, la, lb, unscale, total);
    write_potentials(p, t, nr, nc);
    partial[t] = total;
    let c = sum_partial(t);
    if t == 0u {
        out[cost0 + p] = c;
    }
}
