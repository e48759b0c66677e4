// Pairwise cosine cost of a batch: (b, n, d) × (b, m, d) → (b, n, m).
//
// Entry points
//   inv_norms_f32        inverse L2 norm of every row of x and of y (0 for a zero row and for
//                        padding rows), computed once per call.
//   cosine_cost_f32      C[p, i, j] = 1 − clamp(⟨x_pi, y_pj⟩·ix_pi·iy_pj, −1, 1) for i < lx_p,
//                        j < ly_p; 0 on padding.
//   cosine_cost_blocked_f32
//                        the same contract, 64 × 64 blocks of C with a 4 × 4 register block
//                        per invocation: the host's choice when n and m are both at least 64,
//                        unless OPTICAL_WGPU_COST=tile asks for cosine_cost_f32 (Geometry).
//
// Bindings (group 0), chunk-relative
//   0 uniform  params    {pairs, n, m, d4}; d4 = ⌈d/4⌉
//   1 storage  x         vec4<f32> (pairs, n, d4) row-major, rows zero-padded to 4·d4
//   2 storage  y         vec4<f32> (pairs, m, d4)
//   3 storage  lengths   array<vec2<u32>> (pairs): real rows (lx, ly)
//   4 storage  inv_x     f32 (pairs, n) read_write
//   5 storage  inv_y     f32 (pairs, m) read_write
//   6 storage  cost      f32 (pairs, n, m) read_write
//
// Geometry
//   inv_norms_f32: 256 invocations, one row each; dispatch (ceil(pairs·(n+m)/256), 1, 1)
//   (the host keeps pairs·(n+m) ≤ 256·65535 per chunk).
//   cosine_cost_f32: 16×16 invocations compute a 16×16 block of C, one entry each; dispatch
//   (ceil(m/16), ceil(n/16), pairs), pairs ≤ 65535.
//   cosine_cost_blocked_f32: 16×16 invocations compute a 64×64 block of C, a 4×4 register
//   block each (rows i0 + ly + 16a, columns j0 + lx + 16b, a, b < 4: consecutive invocations
//   write consecutive columns); dispatch (ceil(m/64), ceil(n/64), pairs). The host uses it
//   when n and m are both at least 64 (and OPTICAL_WGPU_COST is not tile): every value staged in workgroup memory then feeds 4
//   dot products instead of 1 (16 FMAs per vec4 load instead of 4), the layout of the PTX
//   cost kernel's FP32 path.
//
// Workgroup memory (cosine_cost_f32): two 16×17 vec4<f32> panels (x rows and y rows for 64
// dims at a time, row stride 17 so the column reads of 16 invocations spread over the
// banks), 8.5 KiB; d is walked 64 at a time, so each global value is read once per block
// instead of once per output. vec4 loads quarter the load instructions (on lavapipe every
// lane's storage load is a separate bounds-checked access, so this is most of its time).
//
// Workgroup memory (cosine_cost_blocked_f32): two 64×5 vec4<f32> panels (64 rows of x and
// of y, 16 dims at a time, row stride 5 vec4 so that the 8 lanes of a 128-bit load phase hit
// distinct banks), 10 KiB.
//
// Numerics: f32, 4-wide dot products accumulated in dimension order (deterministic); the
// norms are computed once by inv_norms_f32. A zero vector has inverse norm 0, so its cosine
// is 0 and its cost 1 (never NaN), as in the CPU reference. Both cost entry points add the
// same vec4 dot products in the same order.

struct Params {
    pairs: u32,
    n: u32,
    m: u32,
    d4: u32,
}

const T: u32 = 16u;
const TP: u32 = 17u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> y: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> lengths: array<vec2<u32>>;
@group(0) @binding(4) var<storage, read_write> inv_x: array<f32>;
@group(0) @binding(5) var<storage, read_write> inv_y: array<f32>;
@group(0) @binding(6) var<storage, read_write> cost: array<f32>;

var<workgroup> xs: array<vec4<f32>, 272>; // T × TP
var<workgroup> ys: array<vec4<f32>, 272>;

// cosine_cost_blocked_f32: block side, register block side, vec4 per staging step, panel
// row stride (vec4).
const BT: u32 = 64u;
const BK: u32 = 4u;
const BKP: u32 = 5u;
var<workgroup> bxs: array<vec4<f32>, 320>; // BT × BKP
var<workgroup> bys: array<vec4<f32>, 320>;

@compute @workgroup_size(256)
fn inv_norms_f32(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x;
    let d = params.d4;
    let xrows = params.pairs * params.n;
    if r < xrows {
        let p = r / params.n;
        var ss = 0.0;
        if r - p * params.n < lengths[p].x {
            for (var k = 0u; k < d; k++) {
                let v = x[r * d + k];
                ss += dot(v, v);
            }
        }
        inv_x[r] = select(inverseSqrt(ss), 0.0, ss == 0.0);
    } else if r < xrows + params.pairs * params.m {
        let ry = r - xrows;
        let p = ry / params.m;
        var ss = 0.0;
        if ry - p * params.m < lengths[p].y {
            for (var k = 0u; k < d; k++) {
                let v = y[ry * d + k];
                ss += dot(v, v);
            }
        }
        inv_y[ry] = select(inverseSqrt(ss), 0.0, ss == 0.0);
    }
}

// C[p, i, j] from the dot product of rows i and j (0 on padding); nothing outside n × m.
fn store_cost(p: u32, i: u32, j: u32, len: vec2<u32>, dot_ij: f32) {
    let n = params.n;
    let m = params.m;
    if i < n && j < m {
        var c = 0.0;
        if i < len.x && j < len.y {
            let cosine = dot_ij * inv_x[p * n + i] * inv_y[p * m + j];
            c = 1.0 - clamp(cosine, -1.0, 1.0);
        }
        cost[(p * n + i) * m + j] = c;
    }
}

@compute @workgroup_size(16, 16)
fn cosine_cost_f32(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let p = wid.z;
    let n = params.n;
    let m = params.m;
    let d = params.d4;
    let len = lengths[p];
    let i0 = wid.y * T;
    let j0 = wid.x * T;
    // This invocation's output, and the rows it loads into the panels.
    let i = i0 + lid.y;
    let j = j0 + lid.x;
    let load_x = i0 + lid.y;
    let load_y = j0 + lid.y;
    var acc = 0.0;
    for (var k0 = 0u; k0 < d; k0 += T) {
        let k = k0 + lid.x;
        var vx = vec4<f32>();
        if load_x < len.x && k < d {
            vx = x[(p * n + load_x) * d + k];
        }
        var vy = vec4<f32>();
        if load_y < len.y && k < d {
            vy = y[(p * m + load_y) * d + k];
        }
        xs[lid.y * TP + lid.x] = vx;
        ys[lid.y * TP + lid.x] = vy;
        workgroupBarrier();
        for (var kk = 0u; kk < T; kk++) {
            acc += dot(xs[lid.y * TP + kk], ys[lid.x * TP + kk]);
        }
        workgroupBarrier();
    }
    store_cost(p, i, j, len, acc);
}

@compute @workgroup_size(16, 16)
fn cosine_cost_blocked_f32(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let p = wid.z;
    let n = params.n;
    let m = params.m;
    let d = params.d4;
    let len = lengths[p];
    let i0 = wid.y * BT;
    let j0 = wid.x * BT;
    // Row a of the register block is acc_a: its four columns b = 0..3 (named variables, not
    // an indexed array, which a driver may keep in memory instead of registers).
    var acc0 = vec4<f32>();
    var acc1 = vec4<f32>();
    var acc2 = vec4<f32>();
    var acc3 = vec4<f32>();
    for (var k0 = 0u; k0 < d; k0 += BK) {
        // Stage rows i0 .. i0 + 64 of x and j0 .. j0 + 64 of y, dims k0 .. k0 + BK (zero past
        // the lengths and past d): 256 vec4 each, one per invocation.
        let r = t / BK;
        let c = t - r * BK;
        let k = k0 + c;
        var vx = vec4<f32>();
        if i0 + r < len.x && k < d {
            vx = x[(p * n + i0 + r) * d + k];
        }
        var vy = vec4<f32>();
        if j0 + r < len.y && k < d {
            vy = y[(p * m + j0 + r) * d + k];
        }
        bxs[r * BKP + c] = vx;
        bys[r * BKP + c] = vy;
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            // Columns b of yv are y rows j0 + lid.x + 16b; xa · yv is the four dot products
            // of x row i0 + lid.y + 16a with them, each a dot() in dimension order.
            let yv = mat4x4<f32>(
                bys[lid.x * BKP + kk],
                bys[(lid.x + 16u) * BKP + kk],
                bys[(lid.x + 32u) * BKP + kk],
                bys[(lid.x + 48u) * BKP + kk],
            );
            acc0 += bxs[lid.y * BKP + kk] * yv;
            acc1 += bxs[(lid.y + 16u) * BKP + kk] * yv;
            acc2 += bxs[(lid.y + 32u) * BKP + kk] * yv;
            acc3 += bxs[(lid.y + 48u) * BKP + kk] * yv;
        }
        workgroupBarrier();
    }
    store_block_row(p, i0 + lid.y, j0 + lid.x, len, acc0);
    store_block_row(p, i0 + lid.y + 16u, j0 + lid.x, len, acc1);
    store_block_row(p, i0 + lid.y + 32u, j0 + lid.x, len, acc2);
    store_block_row(p, i0 + lid.y + 48u, j0 + lid.x, len, acc3);
}

// Row i of a register block: columns j, j + 16, j + 32, j + 48 from the dot products in acc.
fn store_block_row(p: u32, i: u32, j: u32, len: vec2<u32>, acc: vec4<f32>) {
    store_cost(p, i, j, len, acc.x);
    store_cost(p, i, j + 16u, len, acc.y);
    store_cost(p, i, j + 32u, len, acc.z);
    store_cost(p, i, j + 48u, len, acc.w);
}
