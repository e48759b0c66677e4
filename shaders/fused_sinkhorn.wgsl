// Fused cosine cost + log-domain Sinkhorn: the cost of a pair is computed from its
// embeddings into workgroup memory and never written to global memory.
//
// Entry points
//   fused_sinkhorn_f32   run iterations params.start .. min(params.start + params.iterations,
//                        params.max_iterations) of every pair still active, testing each
//                        pair's convergence on the device every params.check_every iterations
//                        and at params.max_iterations; a pair whose error is ≤ threshold (or
//                        not finite) stops and records its state.
//   fused_plan_f32       the plan (b, n, m), potentials f, g and transport cost ⟨P, C⟩ of the
//                        current iterate, padding 0.
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
//   7 storage  out      f32, written by fused_plan_f32 only: plan (pairs, n, m), then the
//                       cost (pairs), then f (pairs, n), then g (pairs, m)
//
// Geometry: one workgroup of WG invocations per pair (WG = 256, or 64 when every pair of the
// dispatch is at most 64 × 64: a pipeline-overridable constant), dispatch (pairs, 1, 1),
// pairs ≤ 65535. Invocation t owns rows t, t+WG, … and columns t, t+WG, ….
//
// Workgroup memory: hf, hg (512 f32 each; they hold the inverse norms while the cost is
// built), partial sums (WG f32), and the cost tile, TILE_CAPACITY f32 (overridden by the
// host from maxComputeWorkgroupStorageSize) with odd row stride s = nc|1. The host only uses
// this kernel when every pair satisfies nr·s ≤ TILE_CAPACITY; otherwise it falls back to the
// materialised path (cosine_cost + sinkhorn.wgsl).
//
// Numerics: C_ij = 1 − clamp(⟨x_i, y_j⟩·‖x_i‖⁻¹·‖y_j‖⁻¹, −1, 1) (a zero vector has inverse norm
// 0, so cos 0), dot products accumulated in f32 in index order. α_i = min_j C_ij,
// β_j = min_i (C_ij − α_i); the tile holds K_ij = −(C_ij − α_i − β_j)·log2(e)/ε ≤ 0. The tile,
// α and β are rebuilt identically at the start of every dispatch, so splitting the iterations
// over dispatches does not change a bit. LSE and error as in sinkhorn.wgsl (single-pass
// max-subtracted, sequential, tree-reduced error); g = 0 at the start means G_j = −β_j·log2(e)/ε.
// The row update computed by a convergence check is the next iteration's row update, so it is
// kept instead of recomputed.

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
    if t == 0u {
        wstatus = status[p];
    }
    // The status decides whether the whole workgroup works: load it uniformly.
    let st = workgroupUniformLoad(&wstatus);
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
            workgroupBarrier();
            for (var half = WG / 2u; half > 0u; half /= 2u) {
                if t < half {
                    partial[t] += partial[t + half];
                }
                workgroupBarrier();
            }
            let e = workgroupUniformLoad(&partial[0]);
            error_out = e;
            if e <= params.threshold {
                state_out = 1u;
            } else if !(abs(e) <= 3.4e38) {
                state_out = 2u;
            }
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
    let f0 = cost0 + params.pairs;
    let g0 = f0 + params.pairs * n;
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
    partial[t] = total;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if t < half {
            partial[t] += partial[t + half];
        }
        workgroupBarrier();
    }
    if t == 0u {
        out[cost0 + p] = partial[0];
    }
}
