// Roofline probe: the rate at which this adapter evaluates exp2 with nothing else to do (the
// same probe as kernels/peak.ptx and the CPU's, src/backend/peak.rs). The Sinkhorn kernels'
// floors are stated against an exponential rate; this measures it through the Vulkan (Metal,
// DX12) driver at hand, whose exp2 need not be the bare hardware instruction.
//
// Entry point
//   ex2_peak_f32   every invocation runs 8 independent chains v <- exp2(-v) (two vec4s,
//                  chain c from (c + 1) / 16), params.rounds rounds of 8 steps each, and
//                  writes the sum of its chains' last values, in chain order, to
//                  sums[global invocation index]. The map contracts toward its fixed point
//                  v* = 2^(-v*) = 0.64118574..., so every sum ends near 8 v* whatever the
//                  precision of exp2 (the host checks it).
//
// Bindings (group 0)
//   0 uniform  params  {rounds}
//   1 storage  sums    f32 (invocations) read_write
//
// Geometry: 256 invocations per workgroup, dispatch (invocations / 256, 1, 1). One loop, of
// params.rounds passes (llvmpipe's cap on loop passes applies to it); the steps are written
// out, so an invocation evaluates 64 exp2 per pass and nothing else but the loop counter.

struct Params {
    rounds: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> sums: array<f32>;

@compute @workgroup_size(256)
fn ex2_peak_f32(@builtin(global_invocation_id) gid: vec3<u32>) {
    var lo = vec4<f32>(1.0, 2.0, 3.0, 4.0) / 16.0;
    var hi = vec4<f32>(5.0, 6.0, 7.0, 8.0) / 16.0;
    for (var r = 0u; r < params.rounds; r++) {
        lo = exp2(-lo);
        hi = exp2(-hi);
        lo = exp2(-lo);
        hi = exp2(-hi);
        lo = exp2(-lo);
        hi = exp2(-hi);
        lo = exp2(-lo);
        hi = exp2(-hi);
        lo = exp2(-lo);
        hi = exp2(-hi);
        lo = exp2(-lo);
        hi = exp2(-hi);
        lo = exp2(-lo);
        hi = exp2(-hi);
        lo = exp2(-lo);
        hi = exp2(-hi);
    }
    sums[gid.x] = lo.x + lo.y + lo.z + lo.w + hi.x + hi.y + hi.z + hi.w;
}
