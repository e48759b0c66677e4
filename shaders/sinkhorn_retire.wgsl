// The Sinkhorn solver's stopping rule on the device (`SinkhornKernels::iterate_checked`),
// so that a solve runs many check intervals between two read-backs.
//
// Entry point
//   sinkhorn_retire_f32    after a check (`sinkhorn_errors_f32`, or the split check): every
//                          active pair counts the check, keeps its error, and is made
//                          inactive when the error is at most the threshold (converged) or
//                          not finite (stopped): what the host solver does after each check.
//
// Bindings (group 0), one dispatch covers one chunk of pairs, as sinkhorn.wgsl's
//   0 uniform  params     {pairs, threshold_bits, 0, 0}: threshold_bits = the bits of the
//                         largest f32 not above the solver's f64 threshold
//   1 storage  pair_info  array<vec4<u32>> (pairs) read_write: (nr, nc, active, 0), the same
//                         buffer sinkhorn.wgsl reads; `active` is set to 0 here
//   2 storage  err        f32 (pairs): the check's errors (sinkhorn.wgsl's `err`)
//   3 storage  status     array<vec4<u32>> (pairs) read_write: (checks, error bits, stop,
//                         0), zeroed by the host before the first round; stop: 0 running,
//                         1 converged, 2 not finite
//
// Geometry: workgroups of 64 invocations, one pair each, dispatch (⌈pairs / 64⌉, 1, 1).
//
// Numerics: none. The host compares `err as f64 <= threshold`; for an error e ≥ 0 that is
// `e <= largest f32 ≤ threshold`, and the bits of non-negative f32s are ordered as their
// values, so the comparison is on the bits (no float compare, whose NaN handling a shader
// compiler may assume away). Values with the sign bit (−0; negative errors cannot occur) are
// below any threshold, as on the host, unless NaN; a NaN's bits exceed every threshold's, and
// an exponent of all ones marks NaN and +∞ (checked after convergence, as the host does).

struct RetireParams {
    pairs: u32,
    threshold_bits: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: RetireParams;
@group(0) @binding(1) var<storage, read_write> pair_info: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> err: array<f32>;
@group(0) @binding(3) var<storage, read_write> status: array<vec4<u32>>;

const STOP_CONVERGED: u32 = 1u;
const STOP_NOT_FINITE: u32 = 2u;
const EXPONENT: u32 = 0x7f800000u;
const SIGN: u32 = 0x80000000u;

@compute @workgroup_size(64)
fn sinkhorn_retire_f32(@builtin(global_invocation_id) id: vec3<u32>) {
    let p = id.x;
    if p >= params.pairs || pair_info[p].z == 0u {
        return;
    }
    let bits = bitcast<u32>(err[p]);
    // −0, negative numbers and −∞ are below any threshold (≥ 0), as on the host.
    let below_zero = (bits & SIGN) != 0u && (bits & ~SIGN) <= EXPONENT;
    var s = status[p];
    s.x += 1u;
    s.y = bits;
    if below_zero || bits <= params.threshold_bits {
        s.z = STOP_CONVERGED;
        pair_info[p].z = 0u;
    } else if (bits & EXPONENT) == EXPONENT {
        s.z = STOP_NOT_FINITE;
        pair_info[p].z = 0u;
    }
    status[p] = s;
}
