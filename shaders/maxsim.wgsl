// MaxSim late-interaction scoring of queries against a packed corpus of documents:
// S[q, k] = Σ_{i < len_q} max_{j ∈ doc k} cos(q_i, d_kj).
//
// Entry points
//   inv_norms_f32   inverse L2 norm of every query row and document token (0 for a zero row
//                   and for query padding rows).
//   maxsim_f32      one score per (query, document).
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
//   in 16 × 16 blocks (a small matrix product); invocation (x, y) keeps the running maximum
//   of query token i0 + y over document tokens j0 + x, then 16 maxima per query token are
//   reduced through workgroup memory.
//
// Workgroup memory: two 16×17 vec4<f32> panels (query rows, document rows; 64 dims at a
// time, stride 17 against bank conflicts), 8.5 KiB, plus 256 + 16 f32 for the reductions.
// Query length, document length and d have no kernel limit (the loops are blocked).
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
const TP: u32 = 17u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> q_len: array<u32>;
@group(0) @binding(3) var<storage, read> docs: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> doc_info: array<vec2<u32>>;
@group(0) @binding(5) var<storage, read_write> inv_q: array<f32>;
@group(0) @binding(6) var<storage, read_write> inv_doc: array<f32>;
@group(0) @binding(7) var<storage, read_write> scores: array<f32>;

var<workgroup> qs: array<vec4<f32>, 272>; // T × TP
var<workgroup> ds: array<vec4<f32>, 272>;
var<workgroup> red: array<f32, 256>;
var<workgroup> rowmax: array<f32, 16>;

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
                qs[lid.y * TP + lid.x] = vq;
                ds[lid.y * TP + lid.x] = vd;
                workgroupBarrier();
                for (var kk = 0u; kk < T; kk++) {
                    acc += dot(qs[lid.y * TP + kk], ds[lid.x * TP + kk]);
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
            var m = red[t];
            for (var l = 1u; l < T; l++) {
                m = max(m, red[t + l]);
            }
            // cos = dot · ‖q‖⁻¹ · ‖d‖⁻¹ and ‖q‖⁻¹ ≥ 0, so it factors out of the max.
            rowmax[lid.y] = m * inv_q[qi * params.nq + i0 + lid.y];
        }
        workgroupBarrier();
        if t == 0u {
            for (var r = 0u; r < min(T, lq - i0); r++) {
                total += rowmax[r];
            }
        }
        workgroupBarrier();
    }
    if t == 0u {
        scores[qi * params.docs + k] = total;
    }
}
