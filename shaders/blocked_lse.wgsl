// Register-blocked log-sum-exp passes, shared by the register-blocked kernels of
// fused_sinkhorn.wgsl and sinkhorn.wgsl: the host appends this file to both (WGSL has no
// includes). It uses the including module's workgroup arrays hf (row potentials + log2 a)
// and hg (column potentials + log2 b), each at least 8G long, its override WG (= G·G in the
// blocked kernels), and, for sum_partial (which any kernel of either module may call), its
// workgroup array partial of WG floats. Not only the blocked kernels use it: the split kernel
// of sinkhorn.wgsl (sinkhorn_half_split_f32) merges its partials with combine(…, MODE_LSE),
// and sinkhorn.wgsl pads with NEG, so a change to either changes that path too.
//
// A pair's K (at most 8G × 8G) lives in registers: invocation t = G·ri + cj holds
// K(ri + G·a, cj + G·b), a, b < 8 (padding: NEG), row a in the private vectors k<a>l
// (b < 4) and k<a>h (b ≥ 4). Named vectors rather than an indexed array, so that every
// access has a constant index: NVIDIA's Vulkan driver kept the register blocks of the cost
// and MaxSim kernels in local memory while they were loop-indexed arrays (4× and 2× slower;
// docs/PERFORMANCE.md). One half-iteration:
//   1. row_partials: for each own row, (max, Σ exp2(v − max)) over its 8 own columns of
//      v = K_ij + hg_j: 64 exp2 with no dependence between them;
//   2. level1: invocation t merges 8 of the G partials of line t / (G/8);
//   3. level2: the line's owner (invocation i for row i) merges the G/8 level-1 results.
// Merges are (m, s) ⊕ (m', s') = (max, s·2^(m − max) + s'·2^(m' − max)) in a fixed order, so
// results are bit-identical from run to run. The column update is the transpose
// (col_partials over the own rows of K_ij + hf_i). An iteration is row_update, then
// finish_iteration (publish hf, column update, publish hg).
//
// Fast path (the update of the CPU fast path and of the PTX passes; compiled in with the
// override SHIFTED): when the lines have at least SHORT_LINE entries, the terms are shifted by
// the line's current potential instead of their maximum,
// F_new = F_old − log2 Σ_j 2^(K_ij + hg_j + F_old) (sf holds F_old of every row, sg G_old of
// every column). Once the iterate settles every term is near 2^0, so the sum is safe: no
// maximum, no rescaling exp2 in the merges (they become plain sums in the same fixed order),
// 64 exp2 per invocation and half-iteration instead of 72. The sum is accepted when it lies in
// [2^-60, 2^60]: nothing overflowed, and terms flushed below 2^-126 change it by at most
// 2^-59 of itself. If any line of the pair fails that (early iterations at small ε, a
// non-finite potential), the whole workgroup redoes the half-iteration the max-subtracted way
// (`redo`, read uniformly). Lines shorter than SHORT_LINE always take the max-subtracted form:
// there the sum is one or two terms and the round trip log2(2^x) through the two
// approximations is the whole update, where the maximum makes the largest term exactly 2^0.

// Invocation grid side: G × G invocations (the includer's WG must be G·G), pairs up to
// 8G × 8G. 16, or 8 for pairs of at most 64 × 64.
override G: u32 = 16u;
// Rows (and columns) of K per invocation.
const B: u32 = 8u;
// K of padding entries, and the maximum of an all-padding partial: exp2 of it against any
// real maximum is 0.
const NEG: f32 = -3.0e38;
const MODE_LSE: u32 = 0u;
const MODE_MIN: u32 = 1u;

// Partials of line L (a row or a column) from slot s at L·(G + 1) + s (row stride G + 1 so
// that the column update's writes do not collide in banks).
var<workgroup> pmax: array<f32, B * G * (G + 1u)>;
var<workgroup> psum: array<f32, B * G * (G + 1u)>;
var<workgroup> lvl1: array<vec2<f32>, G * G>;
// Current potentials of the rows (sf) and columns (sg), the fast path's shifts; 0 past the
// support. Written by the lines' owners (publish_start, finish_iteration).
var<workgroup> sf: array<f32, B * G>;
var<workgroup> sg: array<f32, B * G>;
// Set by an owner whose shifted sum left [2^-60, 2^60]; read uniformly after the merge.
var<workgroup> redo: atomic<u32>;

// SHIFTED (an override of the including module, declared before its other overrides: naga 30
// panicked in its override processing when this file declared it, after them) says whether the fast path is compiled in (the host's BlockedLse setting). Off,
// the passes are exactly the max-subtracted ones: on lavapipe the fast path's branches around
// barriers cost more than its exponentials save (docs/PERFORMANCE.md).
// Lines with fewer entries than this take the max-subtracted form (see the header).
const SHORT_LINE: u32 = 16u;
const SAFE_LO: f32 = 0x1p-60f;
const SAFE_HI: f32 = 0x1p60f;

// Sum of partial[0 .. WG) by a fixed tree; every invocation gets the total. Starts with a
// barrier (the callers have just written partial[t]).
fn sum_partial(t: u32) -> f32 {
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if t < half {
            partial[t] += partial[t + half];
        }
        workgroupBarrier();
    }
    return workgroupUniformLoad(&partial[0]);
}

fn combine(p: vec2<f32>, q: vec2<f32>, mode: u32) -> vec2<f32> {
    if mode == MODE_MIN {
        return vec2<f32>(min(p.x, q.x), 0.0);
    }
    let hi = max(p.x, q.x);
    let lo = min(p.x, q.x);
    let s_hi = select(p.y, q.y, q.x > p.x);
    let s_lo = select(q.y, p.y, q.x > p.x);
    return vec2<f32>(hi, fma(s_lo, exp2(lo - hi), s_hi));
}

// Level 1: invocation t merges slots [8k, 8k + 8) of line t / (G/8), k = t mod (G/8).
fn level1(t: u32, mode: u32) {
    let seg = G / B;
    let line = t / seg;
    let base = line * (G + 1u) + (t - line * seg) * B;
    var acc = vec2<f32>(pmax[base], psum[base]);
    for (var s = 1u; s < B; s++) {
        acc = combine(acc, vec2<f32>(pmax[base + s], psum[base + s]), mode);
    }
    lvl1[t] = acc;
}

// Level 2, by the line's owner: the merge of its G/8 level-1 results.
fn level2(line: u32, mode: u32) -> vec2<f32> {
    let seg = G / B;
    var acc = lvl1[line * seg];
    for (var s = 1u; s < seg; s++) {
        acc = combine(acc, lvl1[line * seg + s], mode);
    }
    return acc;
}

// Level 1 of the fast path: invocation t adds slots [8k, 8k + 8) of line t / (G/8) in order.
fn level1_sum(t: u32) {
    let seg = G / B;
    let line = t / seg;
    let base = line * (G + 1u) + (t - line * seg) * B;
    var acc = psum[base];
    for (var s = 1u; s < B; s++) {
        acc += psum[base + s];
    }
    lvl1[t] = vec2<f32>(0.0, acc);
}

// Level 2 of the fast path, by the line's owner: the sum of its G/8 level-1 sums in order.
fn level2_sum(line: u32) -> f32 {
    let seg = G / B;
    var acc = lvl1[line * seg].y;
    for (var s = 1u; s < seg; s++) {
        acc += lvl1[line * seg + s].y;
    }
    return acc;
}

// The invocation's K block (see the header), set by the including kernel before the first
// half-iteration.
var<private> k0l: vec4<f32>;
var<private> k0h: vec4<f32>;
var<private> k1l: vec4<f32>;
var<private> k1h: vec4<f32>;
var<private> k2l: vec4<f32>;
var<private> k2h: vec4<f32>;
var<private> k3l: vec4<f32>;
var<private> k3h: vec4<f32>;
var<private> k4l: vec4<f32>;
var<private> k4h: vec4<f32>;
var<private> k5l: vec4<f32>;
var<private> k5h: vec4<f32>;
var<private> k6l: vec4<f32>;
var<private> k6h: vec4<f32>;
var<private> k7l: vec4<f32>;
var<private> k7h: vec4<f32>;

// hf[o], hf[o + G], hf[o + 2G], hf[o + 3G] (and the same of hg): four of an invocation's
// lines.
fn hf4(o: u32) -> vec4<f32> {
    return vec4<f32>(hf[o], hf[o + G], hf[o + 2u * G], hf[o + 3u * G]);
}
fn hg4(o: u32) -> vec4<f32> {
    return vec4<f32>(hg[o], hg[o + G], hg[o + 2u * G], hg[o + 3u * G]);
}

// One line's partial over the invocation's 8 entries of it, v = (lo, hi) + (h_lo, h_hi):
// (max, Σ exp2(v − max)), or with `shifted` (the fast path) Σ exp2(v + shift) alone, the sum
// in entry order; a line past `len` gets (NEG, 0). Padding entries (NEG) give 0 either way.
// Written to slot `slot` of line `line` (pmax only without `shifted`).
fn line_partial(
    line: u32,
    slot: u32,
    len: u32,
    lo: vec4<f32>,
    hi: vec4<f32>,
    h_lo: vec4<f32>,
    h_hi: vec4<f32>,
    shift: f32,
    shifted: bool,
) {
    var mx = NEG;
    var s = 0.0;
    if line < len {
        let vl = lo + h_lo;
        let vh = hi + h_hi;
        var el: vec4<f32>;
        var eh: vec4<f32>;
        if shifted {
            el = exp2(vl + shift);
            eh = exp2(vh + shift);
        } else {
            mx = max(mx, max(max(max(vl.x, vl.y), max(vl.z, vl.w)), max(max(vh.x, vh.y), max(vh.z, vh.w))));
            el = exp2(vl - mx);
            eh = exp2(vh - mx);
        }
        s = el.x + el.y + el.z + el.w + eh.x + eh.y + eh.z + eh.w;
    }
    if !shifted {
        pmax[line * (G + 1u) + slot] = mx;
    }
    psum[line * (G + 1u) + slot] = s;
}

// Partials of the row update: for each own row, its partial over the own columns of
// v = K_ij + hg_j (with `shifted`, shifted by the row's F_old, sf). Rows past nr write (NEG, 0).
fn row_partials(ri: u32, cj: u32, nr: u32, shifted: bool) {
    let hl = hg4(cj);
    let hh = hg4(cj + 4u * G);
    line_partial(ri, cj, nr, k0l, k0h, hl, hh, sf[ri], shifted);
    line_partial(ri + G, cj, nr, k1l, k1h, hl, hh, sf[ri + G], shifted);
    line_partial(ri + 2u * G, cj, nr, k2l, k2h, hl, hh, sf[ri + 2u * G], shifted);
    line_partial(ri + 3u * G, cj, nr, k3l, k3h, hl, hh, sf[ri + 3u * G], shifted);
    line_partial(ri + 4u * G, cj, nr, k4l, k4h, hl, hh, sf[ri + 4u * G], shifted);
    line_partial(ri + 5u * G, cj, nr, k5l, k5h, hl, hh, sf[ri + 5u * G], shifted);
    line_partial(ri + 6u * G, cj, nr, k6l, k6h, hl, hh, sf[ri + 6u * G], shifted);
    line_partial(ri + 7u * G, cj, nr, k7l, k7h, hl, hh, sf[ri + 7u * G], shifted);
}

// Partials of the column update, over the own rows of v = K_ij + hf_i (with `shifted`,
// shifted by the column's G_old, sg): column b of the block is column b of the transposed
// 4 × 4 quarters.
fn col_partials(ri: u32, cj: u32, nc: u32, shifted: bool) {
    let hl = hf4(ri);
    let hh = hf4(ri + 4u * G);
    let top_l = transpose(mat4x4<f32>(k0l, k1l, k2l, k3l));
    let bot_l = transpose(mat4x4<f32>(k4l, k5l, k6l, k7l));
    let top_h = transpose(mat4x4<f32>(k0h, k1h, k2h, k3h));
    let bot_h = transpose(mat4x4<f32>(k4h, k5h, k6h, k7h));
    line_partial(cj, ri, nc, top_l[0], bot_l[0], hl, hh, sg[cj], shifted);
    line_partial(cj + G, ri, nc, top_l[1], bot_l[1], hl, hh, sg[cj + G], shifted);
    line_partial(cj + 2u * G, ri, nc, top_l[2], bot_l[2], hl, hh, sg[cj + 2u * G], shifted);
    line_partial(cj + 3u * G, ri, nc, top_l[3], bot_l[3], hl, hh, sg[cj + 3u * G], shifted);
    line_partial(cj + 4u * G, ri, nc, top_h[0], bot_h[0], hl, hh, sg[cj + 4u * G], shifted);
    line_partial(cj + 5u * G, ri, nc, top_h[1], bot_h[1], hl, hh, sg[cj + 5u * G], shifted);
    line_partial(cj + 6u * G, ri, nc, top_h[2], bot_h[2], hl, hh, sg[cj + 6u * G], shifted);
    line_partial(cj + 7u * G, ri, nc, top_h[3], bot_h[3], hl, hh, sg[cj + 7u * G], shifted);
}

// The fast path's merge, after the partials' barrier: for the owner of line t (t < len) the
// new potential old − log2(sum), `old` for everyone else. Whether every line's sum was in
// range is `redo` == 0, which the caller reads uniformly. Ends after level 1's barrier.
fn shifted_update(t: u32, len: u32, old: f32) -> f32 {
    workgroupBarrier();
    level1_sum(t);
    workgroupBarrier();
    var r = old;
    if t < len {
        let s = level2_sum(t);
        if s >= SAFE_LO && s <= SAFE_HI {
            r = old - log2(s);
        } else {
            atomicOr(&redo, 1u);
        }
    }
    return r;
}

// Publishes the starting potentials as the fast path's shifts: F_t for t < nr, G_t for
// t < nc, 0 for the other lines up to 8G. The caller puts a barrier after it.
fn publish_start(t: u32, nr: u32, nc: u32, fr: f32, gc: f32) {
    if t < B * G {
        sf[t] = select(0.0, fr, t < nr);
        sg[t] = select(0.0, gc, t < nc);
    }
}

// The row update's −LSE for the owner of row t (meaningful for t < nr), whose current F is
// `f_old`. Ends after a barrier; the caller writes hf (finish_iteration) and puts the barrier
// after it. Every invocation has passed a barrier since the last uniform read of `redo`
// (the end of finish_iteration, or the kernel's start-up barrier), so it is reset here.
fn row_update(t: u32, ri: u32, cj: u32, nr: u32, nc: u32, f_old: f32) -> f32 {
    // (Nested rather than `SHIFTED && …`: naga 30 panics on an override in a short-circuit.)
    if SHIFTED {
        if nc >= SHORT_LINE {
            if t == 0u {
                atomicStore(&redo, 0u);
            }
            row_partials(ri, cj, nr, true);
            let r = shifted_update(t, nr, f_old);
            if workgroupUniformLoad(&redo) == 0u {
                return r;
            }
        }
    }
    row_partials(ri, cj, nr, false);
    workgroupBarrier();
    level1(t, MODE_LSE);
    workgroupBarrier();
    var r = vec2<f32>(0.0, 1.0);
    if t < nr {
        r = level2(t, MODE_LSE);
    }
    return -(r.x + log2(r.y));
}

// The rest of an iteration after the row update: publishes hf_t = F_t + log2 a_t (F_t = `fr`,
// log2 a_t = `la`; 0 past nr) and the shift sf_t = F_t for the row owners, runs the column
// update, and publishes hg_t = G_t + log2 b_t and sg_t = G_t for the column owners. Returns
// the column owner's new G_t (`g_old` for other invocations). Ends with a barrier.
fn finish_iteration(
    t: u32,
    ri: u32,
    cj: u32,
    nr: u32,
    nc: u32,
    fr: f32,
    la: f32,
    g_old: f32,
    lb: f32,
) -> f32 {
    if t < B * G {
        hf[t] = select(0.0, fr + la, t < nr);
        sf[t] = select(0.0, fr, t < nr);
    }
    workgroupBarrier();
    var g_new = g_old;
    var fast = false;
    if SHIFTED {
        if nr >= SHORT_LINE {
            // The row update's uniform read of `redo` lies behind the barrier above.
            if t == 0u {
                atomicStore(&redo, 0u);
            }
            col_partials(ri, cj, nc, true);
            g_new = shifted_update(t, nc, g_old);
            fast = workgroupUniformLoad(&redo) == 0u;
        }
    }
    if !fast {
        col_partials(ri, cj, nc, false);
        workgroupBarrier();
        level1(t, MODE_LSE);
        workgroupBarrier();
        if t < nc {
            let r = level2(t, MODE_LSE);
            g_new = -(r.x + log2(r.y));
        }
    }
    if t < nc {
        hg[t] = g_new + lb;
        sg[t] = g_new;
    }
    workgroupBarrier();
    return g_new;
}
