// MaxSim late-interaction scoring of queries against a packed corpus of documents:
// S[q, k] = Σ_{i < len_q} max_{j ∈ doc k} cos(q_i, d_kj).
//
// Entry points
//   inv_norms_f32   inverse L2 norm of every query row and document token (0 for a zero row
//                   and for query padding rows).
//   maxsim_f32      one score per (query, document).
//
// Bindings (group 0), the documents chunk-relative
//   0 uniform  params    {queries, nq, d, docs, doc_tokens}; nq = padded query length
//   1 storage  q         f32 (queries, nq, d) row-major
//   2 storage  q_len     u32 (queries): real tokens of each query
//   3 storage  docs      f32 (doc_tokens, d): the chunk's document tokens, back to back
//   4 storage  doc_info  array<vec2<u32>> (docs): (first token in the chunk, tokens)
//   5 storage  inv_q     f32 (queries, nq) read_write
//   6 storage  inv_doc   f32 (doc_tokens) read_write
//   7 storage  scores    f32 (queries, docs) read_write
//
// Geometry
//   inv_norms_f32: 256 invocations, one row each; dispatch (ceil(rows/256), 1, 1).
//   maxsim_f32: 64 invocations per (query, document), dispatch (docs, queries, 1), docs ≤
//   65535 per chunk. Invocation t owns query tokens t, t+64, … (up to 8, so nq ≤ 512) and
//   keeps their running maxima in registers.
//
// Workgroup memory: one normalised document token (d ≤ 1024 f32, 4 KiB), loaded
// cooperatively for each token of the document and then read by every query token; 64 f32
// for the final sum.
//
// Numerics: f32, dot products with fma in dimension order; the maximum is over cosines
// (dot × inverse norms, a zero vector has cosine 0); the sum over query tokens is a fixed
// tree, so scores are bit-identical from run to run.

struct Params {
    queries: u32,
    nq: u32,
    d: u32,
    docs: u32,
    doc_tokens: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const WG: u32 = 64u;
const PER_THREAD: u32 = 8u; // 512 / WG
const MAX_D: u32 = 1024u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> q_len: array<u32>;
@group(0) @binding(3) var<storage, read> docs: array<f32>;
@group(0) @binding(4) var<storage, read> doc_info: array<vec2<u32>>;
@group(0) @binding(5) var<storage, read_write> inv_q: array<f32>;
@group(0) @binding(6) var<storage, read_write> inv_doc: array<f32>;
@group(0) @binding(7) var<storage, read_write> scores: array<f32>;

var<workgroup> token: array<f32, MAX_D>;
var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(256)
fn inv_norms_f32(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x;
    let d = params.d;
    let qrows = params.queries * params.nq;
    if r < qrows {
        let qi = r / params.nq;
        var ss = 0.0;
        if r - qi * params.nq < q_len[qi] {
            for (var k = 0u; k < d; k++) {
                let v = q[r * d + k];
                ss = fma(v, v, ss);
            }
        }
        inv_q[r] = select(inverseSqrt(ss), 0.0, ss == 0.0);
    } else if r < qrows + params.doc_tokens {
        let t = r - qrows;
        var ss = 0.0;
        for (var k = 0u; k < d; k++) {
            let v = docs[t * d + k];
            ss = fma(v, v, ss);
        }
        inv_doc[t] = select(inverseSqrt(ss), 0.0, ss == 0.0);
    }
}

@compute @workgroup_size(64)
fn maxsim_f32(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let k = wid.x;
    let qi = wid.y;
    let d = params.d;
    let info = doc_info[k];
    let lq = q_len[qi];
    var best: array<f32, PER_THREAD>;
    for (var r = 0u; r < PER_THREAD; r++) {
        best[r] = -2.0; // below every cosine
    }
    for (var j = 0u; j < info.y; j++) {
        let tok = info.x + j;
        let s = inv_doc[tok];
        for (var e = t; e < d; e += WG) {
            token[e] = docs[tok * d + e] * s;
        }
        workgroupBarrier();
        for (var r = 0u; r < PER_THREAD; r++) {
            let i = t + r * WG;
            if i < lq {
                let base = (qi * params.nq + i) * d;
                var dot = 0.0;
                for (var e = 0u; e < d; e++) {
                    dot = fma(q[base + e], token[e], dot);
                }
                best[r] = max(best[r], dot * inv_q[qi * params.nq + i]);
            }
        }
        workgroupBarrier();
    }
    var total = 0.0;
    for (var r = 0u; r < PER_THREAD; r++) {
        if t + r * WG < lq {
            total += best[r];
        }
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
        scores[qi * params.docs + k] = partial[0];
    }
}
