// MaxSim late-interaction scoring of queries against a packed corpus of documents:
// S[q, k] = Σ_{i < len_q} max_{j ∈ doc k} cos(q_i, d_kj).
//
// Entry points
//   inv_norms_f32   inverse L2 norm of every query row and document token (0 for a zero row
//                   and for query padding rows).
//   maxsim_f32      one score per (query, document).
//   maxsim_tile_f32 the same, 16 × 16 blocks, one dot product per invocation (see below).
//
// Bindings (group 0), the documents chunk-relative
//   0 uniform  params    {queries, nq, d4, docs, doc_tokens}; nq = padded query length,
//                        d4 = ⌈d/4⌉
//   1 storage  q         vec4<f32> (queries, nq, d4) row-major, rows zero-padded to 4·d4
//   2 storage  q_len     u32 (queries): real tokens of each query
//   3 storage  docs      vec4<f32> (doc_tokens, d4): the chunk's document tokens, back to
//                        back
//   4 storage  doc_info  array<vec2<u32>> (docs): (first token in the chunk, tokens)
//   5 storage  inv_q     f32 (queries, nq) read_write
//   6 storage  inv_doc   f32 (doc_tokens) read_write
//   7 storage  scores    f32 (queries, docs) read_write
//
// Geometry
//   inv_norms_f32: 256 invocations, one row each; dispatch (ceil(rows/256), 1, 1).
//   maxsim_f32: 16×16 invocations per (query, document), dispatch (docs, queries, 1), docs ≤
//   65535 per chunk. The workgroup computes the query-token × document-token dot products
//   in 32 × 64 blocks (a small matrix product), a 2 × 4 register block per invocation
//   (query tokens i0 + y + 16a, document tokens j0 + x + 16b), so each vec4 staged in
//   workgroup memory feeds 2 or 4 dot products; invocation (x, y) keeps the running maximum
//   of its two query tokens over its document tokens, then 16 maxima per query token are
//   reduced through workgroup memory.
//
// Workgroup memory: query and document panels of 32 and 64 rows × 16 dims (row stride 5
// vec4, so the 8 lanes of a 128-bit load phase hit distinct banks), 7.5 KiB, plus 512 + 32
// f32 for the reductions. Query length, document length and d have no kernel limit (the
// loops are blocked).
//
// Numerics: f32, 4-wide dot products accumulated in dimension order; the maximum is over
// cosines (dot × inverse norms, a zero vector has cosine 0); the sum over query tokens is
// sequential in token order, so scores are bit-identical from run to run.

struct Params {
    queries: u32,
    nq: u32,
    d4: u32,
    docs: u32,
    doc_tokens: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const T: u32 = 16u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> q_len: array<u32>;
@group(0) @binding(3) var<storage, read> docs: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> doc_info: array<vec2<u32>>;
@group(0) @binding(5) var<storage, read_write> inv_q: array<f32>;
@group(0) @binding(6) var<storage, read_write> inv_doc: array<f32>;
@group(0) @binding(7) var<storage, read_write> scores: array<f32>;

// Query tokens (2 per invocation) and document tokens (4 per invocation) per block, vec4 per
// staging step, panel row stride (vec4).
const RA: u32 = 2u;
const RB: u32 = 4u;
const QB: u32 = 32u; // 16 · RA
const DB: u32 = 64u; // 16 · RB
const BK: u32 = 4u;
const BKP: u32 = 5u;

var<workgroup> qs: array<vec4<f32>, 160>; // QB × BKP
var<workgroup> ds: array<vec4<f32>, 320>; // DB × BKP
var<workgroup> red: array<f32, 512>; // QB × T
var<workgroup> rowmax: array<f32, 32>;

@compute @workgroup_size(256)
fn inv_norms_f32(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x;
    let d = params.d4;
    let qrows = params.queries * params.nq;
    if r < qrows {
        let qi = r / params.nq;
        var ss = 0.0;
        if r - qi * params.nq < q_len[qi] {
            for (var k = 0u; k < d; k++) {
                let v = q[r * d + k];
                ss += dot(v, v);
            }
        }
        inv_q[r] = select(inverseSqrt(ss), 0.0, ss == 0.0);
    } else if r < qrows + params.doc_tokens {
        let t = r - qrows;
        var ss = 0.0;
        for (var k = 0u; k < d; k++) {
            let v = docs[t * d + k];
            ss += dot(v, v);
        }
        inv_doc[t] = select(inverseSqrt(ss), 0.0, ss == 0.0);
    }
}

// best, with document token j's dot products with the two query tokens (dot0, dot1) scaled
// by its inverse norm, if j is one of the document's ld tokens (first at `first`).
fn fold_max(best: vec2<f32>, j: u32, ld: u32, first: u32, dot0: f32, dot1: f32) -> vec2<f32> {
    if j < ld {
        return max(best, vec2<f32>(dot0, dot1) * inv_doc[first + j]);
    }
    return best;
}

// Both kernels' reductions. The maximum of row `row` of red (its T lanes' running maxima of
// one query token), times the query token's inverse norm `inv`: cos = dot · ‖q‖⁻¹ · ‖d‖⁻¹ and
// ‖q‖⁻¹ ≥ 0, so it factors out of the max.
fn red_row_max(row: u32, inv: f32) -> f32 {
    var m = red[row * T];
    for (var l = 1u; l < T; l++) {
        m = max(m, red[row * T + l]);
    }
    return m * inv;
}

// `total` plus rowmax[0 .. count), added one at a time in order.
fn add_rowmax(total: f32, count: u32) -> f32 {
    var s = total;
    for (var r = 0u; r < count; r++) {
        s += rowmax[r];
    }
    return s;
}

@compute @workgroup_size(16, 16)
fn maxsim_f32(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let k = wid.x;
    let qi = wid.y;
    let d = params.d4;
    let info = doc_info[k];
    let lq = q_len[qi];
    let ld = info.y;
    let t = lid.y * T + lid.x;
    var total = 0.0;
    for (var i0 = 0u; i0 < lq; i0 += QB) {
        // Running max, over this lane's document tokens, of query tokens i0 + lid.y (x) and
        // i0 + lid.y + 16 (y). Named vectors, not indexed arrays, which a driver may keep in
        // memory instead of registers.
        var best = vec2<f32>(-3.0e38);
        for (var j0 = 0u; j0 < ld; j0 += DB) {
            // Query token a (acc0, acc1) against document tokens j0 + lid.x + 16b (b = 0..3).
            var acc0 = vec4<f32>();
            var acc1 = vec4<f32>();
            for (var k0 = 0u; k0 < d; k0 += BK) {
                // Stage query rows i0 .. i0 + 32 and document rows j0 .. j0 + 64, dims
                // k0 .. k0 + BK (zero past the lengths and past d).
                for (var e = t; e < (QB + DB) * BK; e += 256u) {
                    let r = e / BK;
                    let c = e - r * BK;
                    let kk = k0 + c;
                    var v = vec4<f32>();
                    if r < QB {
                        if i0 + r < lq && kk < d {
                            v = q[(qi * params.nq + i0 + r) * d + kk];
                        }
                        qs[r * BKP + c] = v;
                    } else {
                        let rd = r - QB;
                        if j0 + rd < ld && kk < d {
                            v = docs[(info.x + j0 + rd) * d + kk];
                        }
                        ds[rd * BKP + c] = v;
                    }
                }
                workgroupBarrier();
                for (var kk = 0u; kk < BK; kk++) {
                    // Columns b of dv are document tokens j0 + lid.x + 16b.
                    let dv = mat4x4<f32>(
                        ds[lid.x * BKP + kk],
                        ds[(lid.x + 16u) * BKP + kk],
                        ds[(lid.x + 32u) * BKP + kk],
                        ds[(lid.x + 48u) * BKP + kk],
                    );
                    acc0 += qs[lid.y * BKP + kk] * dv;
                    acc1 += qs[(lid.y + 16u) * BKP + kk] * dv;
                }
                workgroupBarrier();
            }
            best = fold_max(best, j0 + lid.x, ld, info.x, acc0.x, acc1.x);
            best = fold_max(best, j0 + lid.x + 16u, ld, info.x, acc0.y, acc1.y);
            best = fold_max(best, j0 + lid.x + 32u, ld, info.x, acc0.z, acc1.z);
            best = fold_max(best, j0 + lid.x + 48u, ld, info.x, acc0.w, acc1.w);
        }
        red[lid.y * T + lid.x] = best.x;
        red[(lid.y + 16u) * T + lid.x] = best.y;
        workgroupBarrier();
        if lid.x == 0u {
            for (var a = 0u; a < RA; a++) {
                let i = lid.y + 16u * a;
                if i0 + i < lq {
                    rowmax[i] = red_row_max(i, inv_q[qi * params.nq + i0 + i]);
                }
            }
        }
        workgroupBarrier();
        if t == 0u {
            total = add_rowmax(total, min(QB, lq - i0));
        }
        workgroupBarrier();
    }
    if t == 0u {
        scores[qi * params.docs + k] = total;
    }
}

// maxsim_tile_f32: the same scores from 16 × 16 blocks of query × document tokens, one dot
// product per invocation, d walked 64 dims at a time (two 16 × 17 vec4 panels, 8.5 KiB);
// dispatch (docs, queries, 1) as maxsim_f32. On NVIDIA's Vulkan driver it ran the standard
// problem in 916 µs against 1.32 ms for maxsim_f32 (H200); on lavapipe maxsim_f32 is faster.
const TP: u32 = 17u;
var<workgroup> tqs: array<vec4<f32>, 272>; // T × TP
var<workgroup> tds: array<vec4<f32>, 272>;

@compute @workgroup_size(16, 16)
fn maxsim_tile_f32(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let k = wid.x;
    let qi = wid.y;
    let d = params.d4;
    let info = doc_info[k];
    let lq = q_len[qi];
    let ld = info.y;
    let t = lid.y * T + lid.x;
    var total = 0.0;
    for (var i0 = 0u; i0 < lq; i0 += T) {
        // Running max over this lane's document tokens of query token i0 + lid.y.
        var best = -3.0e38;
        for (var j0 = 0u; j0 < ld; j0 += T) {
            var acc = 0.0;
            for (var k0 = 0u; k0 < d; k0 += T) {
                let e = k0 + lid.x;
                var vq = vec4<f32>();
                if i0 + lid.y < lq && e < d {
                    vq = q[(qi * params.nq + i0 + lid.y) * d + e];
                }
                var vd = vec4<f32>();
                if j0 + lid.y < ld && e < d {
                    vd = docs[(info.x + j0 + lid.y) * d + e];
                }
                tqs[lid.y * TP + lid.x] = vq;
                tds[lid.y * TP + lid.x] = vd;
                workgroupBarrier();
                for (var kk = 0u; kk < T; kk++) {
                    acc += dot(tqs[lid.y * TP + kk], tds[lid.x * TP + kk]);
                }
                workgroupBarrier();
            }
            if j0 + lid.x < ld {
                best = max(best, acc * inv_doc[info.x + j0 + lid.x]);
            }
        }
        red[t] = best;
        workgroupBarrier();
        if lid.x == 0u && i0 + lid.y < lq {
            rowmax[lid.y] = red_row_max(lid.y, inv_q[qi * params.nq + i0 + lid.y]);
        }
        workgroupBarrier();
        if t == 0u {
            total = add_rowmax(total, min(T, lq - i0));
        }
        workgroupBarrier();
    }
    if t == 0u {
        scores[qi * params.docs + k] = total;
    }
}
