//! CUDA backend against the CPU reference (f64): cosine cost, MaxSim, Sinkhorn from a cost
//! and the fused cost + Sinkhorn, on seeded inputs with awkward shapes (1, tile ± 1, 17×29,
//! 113×203, 512×512), zero weights, zero vectors, outliers and ε = 0.01.
//!
//! Each comparison prints the CUDA error next to the error of the CPU fast path (the naive
//! same-precision implementation, f32) before asserting; the tolerance is a multiple of
//! that baseline plus a small floor.
//!
//! Without a CUDA device every test prints why and passes; with `OPTICAL_REQUIRE_CUDA=1`
//! (as `scripts/gpu-check.sh` sets it) a missing device is a failure.
#![cfg(feature = "cuda")]

mod common;

use optical::backend::cuda::{
    CostKernel, CudaBackend, FusedCost, FusedThreads, MaxsimRoute, SinkhornLse, SinkhornSplit,
    Staging, WgmmaStages,
};
use optical::backend::{Backend, BackendKind, CpuFast, CpuReference};
use optical::ot::problem::{CostBatch, Embeddings, PackedDocs, Problem, SinkhornParams};
use optical::ot::sinkhorn::{self, SinkhornOutput};
use optical::rng::SplitMix64;
use optical::Error;

/// The CUDA backend, or `None` (with the reason printed) when this machine has no device.
fn cuda() -> Option<Backend> {
    let required = std::env::var("OPTICAL_REQUIRE_CUDA").is_ok_and(|v| v == "1");
    match Backend::new(BackendKind::Cuda) {
        Ok(b) => Some(b),
        Err(Error::BackendUnavailable { reason, .. }) if !required => {
            eprintln!("SKIPPED: no CUDA device ({reason}); set OPTICAL_REQUIRE_CUDA=1 to fail");
            None
        }
        Err(e) => panic!("CUDA backend required (OPTICAL_REQUIRE_CUDA=1) or broken: {e}"),
    }
}

/// Seeded embeddings with lengths drawn in `1..=n` (all `n` when `full`), a zero row and
/// rows scaled by 1e3 / 1e-3 (outliers in norm; the cosine must not care).
fn embeddings(seed: u64, b: usize, n: usize, d: usize, full: bool) -> Embeddings {
    let mut rng = SplitMix64::new(seed);
    let mut data = rng.normals_f32(b * n * d);
    let lengths: Vec<usize> = (0..b)
        .map(|_| if full { n } else { rng.range(1, n) })
        .collect();
    for (p, &len) in lengths.iter().enumerate() {
        let row = |i: usize| (p * n + i) * d..(p * n + i + 1) * d;
        if len > 2 {
            data[row(1)].iter_mut().for_each(|v| *v = 0.0);
            data[row(2)].iter_mut().for_each(|v| *v *= 1e3);
        }
        if len > 3 {
            data[row(3)].iter_mut().for_each(|v| *v *= 1e-3);
        }
    }
    Embeddings::new("test", b, n, d, data, Some(lengths)).unwrap()
}

struct Diff {
    max_abs: f64,
    max_rel: f64,
    first: Vec<String>,
}

fn diff<A: Copy + Into<f64>, B: Copy + Into<f64>>(got: &[A], want: &[B]) -> Diff {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let mut d = Diff {
        max_abs: 0.0,
        max_rel: 0.0,
        first: vec![],
    };
    let scale = want
        .iter()
        .map(|&w| w.into().abs())
        .fold(0.0f64, f64::max)
        .max(1e-300);
    for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (g, w) = (g.into(), w.into());
        let e = if g.is_nan() || w.is_nan() {
            f64::INFINITY
        } else {
            (g - w).abs()
        };
        if e > d.max_abs {
            d.max_abs = e;
        }
        d.max_rel = d.max_rel.max(e / scale);
        if e > 1e-6 * scale.max(1.0) && d.first.len() < 5 {
            d.first.push(format!("[{k}] got {g} want {w}"));
        }
    }
    d
}

fn check(what: &str, cuda: &Diff, baseline: &Diff, floor: f64, factor: f64) {
    let tol = floor + factor * baseline.max_abs;
    eprintln!(
        "{what}: cuda max abs {:.3e} (rel {:.3e}); cpu f32 max abs {:.3e}; tolerance {tol:.3e}",
        cuda.max_abs, cuda.max_rel, baseline.max_abs
    );
    assert!(
        cuda.max_abs <= tol,
        "{what}: max abs error {:.3e} > {tol:.3e}; first mismatches: {:?}",
        cuda.max_abs,
        cuda.first
    );
}

/// Runs `run` on every case even after one fails, then fails listing all of them: GPU time
/// is scarce, and one failing shape must not hide how the others did.
fn every_case<T>(cases: impl IntoIterator<Item = T>, run: impl Fn(T)) {
    let failures: Vec<String> = cases
        .into_iter()
        .filter_map(|case| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(case)))
                .err()
                .map(|e| {
                    e.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panic".into())
                })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Below this L1 marginal error f32 cannot tell errors apart: a stopping decision may differ
/// from the f64 reference's when an error lies this close to the threshold.
const F32_ERROR_FLOOR: f64 = 1e-6;

/// The plan's error floor in f32. Each entry is a_i b_j exp((f_i + g_j - C_ij) / ε), so a few
/// f32 roundings of the exponent's terms (|f|, |g| and C <= 2 for the entries that carry
/// mass) come out multiplied by 1/ε, relative to the entry. An implementation that is
/// otherwise exact misses by about this much: 1.06e-6 on the 1×1 problem (plan entry 1,
/// ε = 0.05) on an H200, where this floor is about 1.6e-5.
fn plan_floor(want: &SinkhornOutput, eps: f64) -> f64 {
    let max = |v: &[f64]| v.iter().fold(0.0f64, |a, &x| a.max(x.abs()));
    let exponent = max(&want.f) + max(&want.g) + 2.0;
    1e-6f64.max(2.0 * f64::from(f32::EPSILON) * exponent / eps * max(&want.plan))
}

/// Each module is JIT-compiled when a launch first needs one of its kernels; `optical info`
/// compiles them all and reports the time each took. Every module that runs on any device
/// must load (the sm_90a one only on compute capability 9.0, and a failure there only
/// disables the wgmma cost kernel).
#[test]
fn every_kernel_module_loads() {
    if cuda().is_none() {
        return;
    }
    let (available, _, note) = optical::backend::cuda::probe();
    eprintln!("{note}");
    assert!(available, "{note}");
    for module in optical::backend::cuda::ptx::MODULES {
        if module.target == "sm_80" {
            assert!(
                note.contains(&format!("{} ", module.file)) && note.contains(" ms"),
                "{note}"
            );
        }
    }
}

#[test]
fn cosine_cost_matches_reference() {
    let Some(gpu) = cuda() else { return };
    every_case([CostKernel::Tf32x3, CostKernel::Fp32], |kernel| {
        cosine_cost_cases(&with_cost_kernel(&gpu, kernel), kernel)
    });
}

/// The same CUDA device computing cosine costs (standalone and in the fused kernel's cost
/// phase) with `kernel`.
fn with_cost_kernel(gpu: &Backend, kernel: CostKernel) -> Backend {
    eprintln!("cost kernel {}", kernel.name());
    Backend::Cuda(cuda_of(gpu).clone().with_cost_kernel(kernel))
}

/// The CUDA backend inside `gpu` (every backend these tests build from [`cuda`] is one).
fn cuda_of(gpu: &Backend) -> &CudaBackend {
    match gpu {
        Backend::Cuda(c) => c,
        _ => unreachable!("cuda() returns the CUDA backend"),
    }
}

fn cosine_cost_cases(gpu: &Backend, kernel: CostKernel) {
    // (b, n, m, d): 1, tile ± 1, tile, 17×29, 113×203, 512×512; d not a multiple of 4 too.
    let shapes = [
        (1, 1, 1, 1),
        (2, 63, 65, 7),
        (2, 64, 64, 384),
        (3, 65, 127, 33),
        (4, 17, 29, 64),
        (2, 113, 203, 130),
        (1, 512, 512, 64),
    ];
    let cases = shapes
        .iter()
        .enumerate()
        .flat_map(|(s, &shape)| [true, false].map(|full| (s, shape, full)));
    every_case(cases, |(s, (b, n, m, d), full)| {
        let x = embeddings(10 + s as u64, b, n, d, full);
        let y = embeddings(20 + s as u64, b, m, d, full);
        let what = format!(
            "cosine cost ({}) b={b} n={n} m={m} d={d} full={full}",
            kernel.name()
        );
        let got = cost_matches_reference(gpu, &x, &y, &what);
        assert_eq!((got.b, got.n, got.m), (b, n, m));
        // Padding is exactly 0.
        for p in 0..b {
            for i in 0..n {
                for j in 0..m {
                    if i >= x.lengths()[p] || j >= y.lengths()[p] {
                        assert_eq!(got.data[(p * n + i) * m + j], 0.0, "{what}: padding");
                    }
                }
            }
        }
    });
    // Rows rescaled to just inside the norm bounds, every row real (tiles past the first
    // included): no f32 square, dot product or split half of this kernel under- or
    // overflows. (norm_bounds_match_reference runs the default choice only.)
    let bounds = [(2, 17, 29, 33), (1, 130, 136, 384)];
    every_case(bounds.iter().enumerate(), |(s, &(b, n, m, d))| {
        let x = common::rescaled_to_norm_bounds(&embeddings(180 + s as u64, b, n, d, true));
        let y = common::rescaled_to_norm_bounds(&embeddings(190 + s as u64, b, m, d, true));
        cost_matches_reference(
            gpu,
            &x,
            &y,
            &format!(
                "cosine cost ({}) at the norm bounds b={b} n={n} m={m} d={d}",
                kernel.name()
            ),
        );
    });
}

/// The default cost kernel choice (`auto`) picks by the problem's size: 3xTF32 on 64 × 64
/// tiles for a batch too small to fill the GPU with 128 × 128 tiles, and on compute
/// capability 9.0 the wgmma kernel from two such tiles per SM. Both answers match the
/// reference.
#[test]
fn auto_cost_kernel_picks_by_size_and_matches_reference() {
    let Some(gpu) = cuda() else { return };
    let gpu = with_cost_kernel(&gpu, CostKernel::Auto);
    let c = cuda_of(&gpu);
    assert_eq!(c.cost_kernel_for(2, 64, 64, 384), CostKernel::Tf32x3);
    // 300 pairs of 17 × 29: 300 tiles, at least 2 per SM on every GPU with up to 150 SMs.
    let (b, n, m, d) = (300, 17, 29, 33);
    let big = c.cost_kernel_for(b, n, m, d);
    let want_big = if c.compute_capability() == (9, 0) && c.multiprocessors() * 2 <= b {
        CostKernel::Wgmma
    } else {
        CostKernel::Tf32x3
    };
    assert_eq!(big, want_big);
    for (seed, (b, n, m, d)) in [(2, 64, 64, 384), (b, n, m, d)].into_iter().enumerate() {
        let x = embeddings(70 + seed as u64, b, n, d, false);
        let y = embeddings(80 + seed as u64, b, m, d, false);
        let what = format!(
            "cosine cost (auto: {}) b={b} n={n} m={m} d={d}",
            c.cost_kernel_for(b, n, m, d).name()
        );
        cost_matches_reference(&gpu, &x, &y, &what);
    }
}

/// `gpu`'s cosine cost of `x` against `y`, checked against the CPU reference (within 2e-5,
/// and at most 4× the CPU fast path's error); returns it for further checks.
fn cost_matches_reference(gpu: &Backend, x: &Embeddings, y: &Embeddings, what: &str) -> CostBatch {
    let want = CpuReference.cosine_cost(x, y).unwrap();
    let fast = CpuFast.cosine_cost(x, y).unwrap();
    let got = gpu.cosine_cost(x, y).unwrap();
    check(
        what,
        &diff(&got.data, &want.data),
        &diff(&fast.data, &want.data),
        2e-5,
        4.0,
    );
    got
}

/// The 128 × 128-tile cost kernel (`OPTICAL_CUDA_COST_KERNEL=tf32x3w`): its own test, which
/// sorts after the others, so that a fault in it (a CUDA error is sticky for the process's
/// context) cannot hide how the other kernels did.
#[test]
fn wide_cost_kernel_matches_reference() {
    let Some(gpu) = cuda() else { return };
    let kernel = CostKernel::Tf32x3Wide;
    cosine_cost_cases(&with_cost_kernel(&gpu, kernel), kernel);
    maxsim_cases(&gpu, &[(MaxsimRoute::Tiled, kernel)]);
}

/// The wgmma cost kernels (`OPTICAL_CUDA_COST_KERNEL=wgmma` and `wgmma-rs`, compute
/// capability 9.0 only), sorting last of all. Elsewhere each must refuse with one clear
/// error instead of launching.
fn wgmma_cost_kernel_matches_reference(kernel: CostKernel, stages: WgmmaStages) {
    let Some(gpu) = cuda() else { return };
    let gpu = with_cost_kernel(&gpu, kernel);
    eprintln!("wgmma stages: {}", stages.name());
    let gpu = Backend::Cuda(cuda_of(&gpu).clone().with_wgmma_stages(stages));
    if cuda_of(&gpu).compute_capability() != (9, 0) {
        let x = embeddings(1, 1, 3, 8, true);
        let e = gpu.cosine_cost(&x, &x).unwrap_err().to_string();
        assert!(
            e.contains("OPTICAL_CUDA_COST_KERNEL") && e.contains("9.0"),
            "{e}"
        );
        eprintln!(
            "{}: not a compute capability 9.0 device, refused: {e}",
            kernel.name()
        );
        return;
    }
    cosine_cost_cases(&gpu, kernel);
    maxsim_cases(&gpu, &[(MaxsimRoute::Tiled, kernel)]);
}

#[test]
fn wide_wgmma_cost_kernel_matches_reference() {
    wgmma_cost_kernel_matches_reference(CostKernel::Wgmma, WgmmaStages::Two);
}

/// Three stages (`OPTICAL_CUDA_WGMMA_STAGES=3`): one `wgmma` group stays in flight across
/// each chunk's barrier, so a stage rewritten too early would show here.
#[test]
fn wide_wgmma_three_stage_cost_kernel_matches_reference() {
    wgmma_cost_kernel_matches_reference(CostKernel::Wgmma, WgmmaStages::Three);
}

/// The A operand from registers: the k order inside each chunk is the kernel's own, so a
/// mismatch between its x fragments and its y layout would show on every case here.
#[test]
fn wide_wgmma_rs_cost_kernel_matches_reference() {
    wgmma_cost_kernel_matches_reference(CostKernel::WgmmaRs, WgmmaStages::Two);
}

/// Rows rescaled to just inside the norm bounds (1.5e-12, 6.7e11, 1), with the default
/// kernels: the cost, MaxSim (both routes) and the fused Sinkhorn keep the reference's
/// cosines, so no `f32` square or dot product (nor a 3xTF32 split half) under- or overflows.
#[test]
fn norm_bounds_match_reference() {
    let Some(gpu) = cuda() else { return };
    let reference = Backend::new(BackendKind::CpuReference).unwrap();
    let cpu = Backend::new(BackendKind::Cpu).unwrap();
    for (s, &(b, n, m, d)) in [(1, 1, 1, 1), (2, 17, 29, 33), (2, 65, 127, 384)]
        .iter()
        .enumerate()
    {
        let x = common::rescaled_to_norm_bounds(&embeddings(80 + s as u64, b, n, d, false));
        let y = common::rescaled_to_norm_bounds(&embeddings(90 + s as u64, b, m, d, false));
        let what = format!("at the norm bounds b={b} n={n} m={m} d={d}");
        let want = CpuReference.cosine_cost(&x, &y).unwrap();
        let fast = CpuFast.cosine_cost(&x, &y).unwrap();
        let got = gpu.cosine_cost(&x, &y).unwrap();
        check(
            &format!("cosine cost {what}"),
            &diff(&got.data, &want.data),
            &diff(&fast.data, &want.data),
            2e-5,
            4.0,
        );
        let docs = PackedDocs::new("docs", d, y.data().to_vec(), vec![m; b]).unwrap();
        let want = CpuReference.maxsim(&x, &docs).unwrap();
        let fast = CpuFast.maxsim(&x, &docs).unwrap();
        for route in [MaxsimRoute::Direct, MaxsimRoute::Tiled] {
            let got = Backend::Cuda(cuda_of(&gpu).clone().with_maxsim(route))
                .maxsim(&x, &docs)
                .unwrap();
            check(
                &format!("maxsim {} {what}", route.name()),
                &diff(&got, &want),
                &diff(&fast, &want),
                1e-5 * n as f64,
                4.0,
            );
        }
        let params = SinkhornParams {
            epsilon: 0.05,
            max_iterations: 30,
            threshold: 0.0,
            check_every: 10,
        };
        let want = reference.sinkhorn_embeddings(&x, &y, &params).unwrap();
        let fast = cpu.sinkhorn_embeddings(&x, &y, &params).unwrap();
        let got = gpu.sinkhorn_embeddings(&x, &y, &params).unwrap();
        compare_solutions(
            &format!("fused {what}"),
            &got,
            &want,
            &fast,
            &params,
            |p, i, j| i >= x.lengths()[p] || j >= y.lengths()[p],
        );
    }
}

#[test]
fn device_timing_refuses_bad_jobs() {
    let Some(gpu) = cuda() else { return };
    common::device_timing_refuses_bad_jobs(&gpu);
    // ε = 1e39 passes the shared checks (a solve takes the materialised path there), but
    // the fused kernel's f32 scale −log2(e)/ε is subnormal: its timing is refused.
    let x = embeddings(7, 2, 8, 16, true);
    let params = SinkhornParams {
        epsilon: 1e39,
        max_iterations: 10,
        threshold: 0.0,
        check_every: 10,
    };
    let err = gpu
        .device_seconds(
            optical::backend::DeviceJob::SinkhornFused(&x, &x, &params),
            0.0,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("is a normal f32"), "{err}");
}

#[test]
fn padding_values_change_nothing() {
    let Some(gpu) = cuda() else { return };
    common::padding_values_change_nothing(&gpu);
}

#[test]
fn maxsim_matches_reference() {
    let Some(gpu) = cuda() else { return };
    // Both routes: maxsim_f32, and a cost kernel + maxsim_reduce_f32, with the cost kernels
    // proven on a GPU (the others run in the wide_* tests, which sort last).
    maxsim_cases(
        &gpu,
        &[
            (MaxsimRoute::Direct, CostKernel::default()),
            (MaxsimRoute::Tiled, CostKernel::Fp32),
            (MaxsimRoute::Tiled, CostKernel::Tf32x3),
        ],
    );
}

/// The tiled route splits the documents into blocks when query rows × document tokens pass
/// its scratch budget (2^26 floats): 4 × 32 query tokens against 600 documents of 1,000
/// tokens is two blocks, so the second block's offsets into the tokens are exercised on the
/// GPU, as real corpora do.
#[test]
fn maxsim_beyond_one_block_matches_reference() {
    let Some(gpu) = cuda() else { return };
    let (nq, qn, nd, len, d) = (4, 32, 600, 1000, 4);
    let q = embeddings(45, nq, qn, d, true);
    let mut rng = SplitMix64::new(46);
    let docs = PackedDocs::new("docs", d, rng.normals_f32(nd * len * d), vec![len; nd]).unwrap();
    let want = CpuReference.maxsim(&q, &docs).unwrap();
    let fast = CpuFast.maxsim(&q, &docs).unwrap();
    let cuda = cuda_of(&gpu).clone().with_maxsim(MaxsimRoute::Tiled);
    let got = Backend::Cuda(cuda).maxsim(&q, &docs).unwrap();
    check(
        &format!("maxsim tiled, two blocks: nq={nq} qn={qn} nd={nd}x{len} d={d}"),
        &diff(&got, &want),
        &diff(&fast, &want),
        1e-5 * qn as f64,
        4.0,
    );
}

fn maxsim_cases(gpu: &Backend, routes: &[(MaxsimRoute, CostKernel)]) {
    for (s, &(nq, qn, nd, d)) in [(1, 1, 1, 1), (3, 17, 40, 7), (5, 32, 300, 128)]
        .iter()
        .enumerate()
    {
        let q = embeddings(30 + s as u64, nq, qn, d, false);
        let mut rng = SplitMix64::new(40 + s as u64);
        // Document lengths 1..=70: some longer than a warp, one with a zero token.
        let lengths: Vec<usize> = (0..nd).map(|_| rng.range(1, 70)).collect();
        let total: usize = lengths.iter().sum();
        let mut data = rng.normals_f32(total * d);
        data[..d].iter_mut().for_each(|v| *v = 0.0);
        let docs = PackedDocs::new("docs", d, data, lengths).unwrap();
        let want = CpuReference.maxsim(&q, &docs).unwrap();
        let fast = CpuFast.maxsim(&q, &docs).unwrap();
        for &(route, kernel) in routes {
            let cuda = cuda_of(gpu)
                .clone()
                .with_maxsim(route)
                .with_cost_kernel(kernel);
            let got = Backend::Cuda(cuda).maxsim(&q, &docs).unwrap();
            check(
                &format!(
                    "maxsim {} ({}) nq={nq} qn={qn} nd={nd} d={d}",
                    route.name(),
                    kernel.name()
                ),
                &diff(&got, &want),
                &diff(&fast, &want),
                1e-5 * qn as f64,
                4.0,
            );
        }
    }
}

/// A batch of cosine-cost problems with optional zero weights and outlier costs.
fn problem(seed: u64, b: usize, n: usize, m: usize, zero_weights: bool, outliers: bool) -> Problem {
    let x = embeddings(seed, b, n, 16, true);
    let y = embeddings(seed + 1, b, m, 16, true);
    let mut cost: Vec<f64> = CpuReference
        .cosine_cost(&x, &y)
        .unwrap()
        .data
        .iter()
        .map(|&v| v as f64)
        .collect();
    let mut rng = SplitMix64::new(seed + 2);
    if outliers {
        for _ in 0..(b * n * m / 50).max(1) {
            let k = rng.range(0, b * n * m - 1);
            cost[k] = 20.0 + 30.0 * rng.uniform();
        }
    }
    let weights = |len: usize, rng: &mut SplitMix64| -> Vec<f64> {
        (0..b * len)
            .map(|k| {
                // Zero weights in the middle of the support, never the whole pair.
                if zero_weights && k % len != 0 && rng.uniform() < 0.3 {
                    0.0
                } else {
                    0.5 + rng.uniform()
                }
            })
            .collect()
    };
    let a = weights(n, &mut rng);
    let bw = weights(m, &mut rng);
    Problem::new(b, n, m, cost, Some(a), Some(bw)).unwrap()
}

/// One array of a Sinkhorn solution.
type Field = fn(&SinkhornOutput) -> &[f64];

/// [`check`] of one array of the CUDA solution `got` against the reference `want`, with the
/// CPU fast path `fast` as the baseline: tolerance `floor` + 4 × the baseline's error.
fn check_field(
    what: &str,
    name: &str,
    field: Field,
    [got, want, fast]: [&SinkhornOutput; 3],
    floor: f64,
) {
    check(
        &format!("{what}: {name}"),
        &diff(field(got), field(want)),
        &diff(field(fast), field(want)),
        floor,
        4.0,
    );
}

/// Compare a CUDA solution with the reference; `padding(p, i, j)` says which plan entries
/// must be exactly zero.
fn compare_solutions(
    what: &str,
    got: &SinkhornOutput,
    want: &SinkhornOutput,
    fast: &SinkhornOutput,
    params: &SinkhornParams,
    padding: impl Fn(usize, usize, usize) -> bool,
) {
    let (eps, threshold) = (params.epsilon, params.threshold);
    let fields: [(&str, Field, f64); 4] = [
        ("plan", |s| &s.plan, plan_floor(want, eps)),
        ("f", |s| &s.f, 1e-4 * eps),
        ("g", |s| &s.g, 1e-4 * eps),
        ("transport cost", |s| &s.cost, 1e-5),
    ];
    for (name, field, floor) in fields {
        check_field(what, name, field, [got, want, fast], floor);
    }
    // The same stopping iteration as the reference, except where f32 reaches an error the
    // f64 reference cannot: on a well-conditioned pair (random 384-d embeddings: costs all
    // near 1) the f32 row marginals can come out exact, error 0, which meets threshold 0
    // and stops the pair at its next check (seen on an H200 with the tensor-core cost
    // phase: iterations [30, 10] against [30, 30], values within tolerance).
    for p in 0..got.pairs {
        if got.iterations[p] != want.iterations[p] {
            let (e, w) = (got.marginal_error[p], want.marginal_error[p]);
            assert!(
                e.min(w) <= threshold + F32_ERROR_FLOOR,
                "{what}: pair {p}: iterations {} vs {} (reference), errors {e:e} vs {w:e}",
                got.iterations[p],
                want.iterations[p],
            );
            eprintln!(
                "{what}: pair {p} stopped at {} (reference {}) with error {e:e} (reference \
                 {w:e}), at the f32 error floor",
                got.iterations[p], want.iterations[p]
            );
        }
    }
    // Padding: exactly zero plan rows / columns and potentials.
    let (n, m) = (got.n, got.m);
    for (k, &pg) in got.plan.iter().enumerate() {
        let (p, i, j) = (k / (n * m), (k / m) % n, k % m);
        if padding(p, i, j) {
            assert_eq!(pg, 0.0, "{what}: plan entry ({p}, {i}, {j}) is padding");
        }
    }
    for p in 0..got.pairs {
        for i in 0..n {
            if (0..m).all(|j| padding(p, i, j)) {
                assert_eq!(got.f[p * n + i], 0.0, "{what}: f of padding row ({p}, {i})");
            }
        }
        for j in 0..m {
            if (0..n).all(|i| padding(p, i, j)) {
                assert_eq!(
                    got.g[p * m + j],
                    0.0,
                    "{what}: g of padding column ({p}, {j})"
                );
            }
        }
    }
}

#[test]
fn sinkhorn_matches_reference() {
    let Some(gpu) = cuda() else { return };
    sinkhorn_cases(cuda_of(&gpu), SinkhornLse::Shifted);
}

/// The absorbed log-sum-exps (`OPTICAL_CUDA_LSE=absorbed`) in `sinkhorn_iterate_f32`, not
/// yet proven on a GPU: its own test, on the same cases (ε = 0.01 among them, and the pairs
/// streamed from global memory, where the mode does not apply).
#[test]
fn sinkhorn_absorbed_lse_matches_reference() {
    let Some(gpu) = cuda() else { return };
    sinkhorn_cases(cuda_of(&gpu), SinkhornLse::Absorbed);
}

/// The scaled passes (`OPTICAL_CUDA_LSE=scaled`) for a solve from a cost: the fused kernel
/// continuing from K (cost_mode 4) in place of `sinkhorn_iterate_f32` for pairs that fit on
/// chip, not yet proven on a GPU; the same cases (the streamed pairs run as before).
#[test]
fn sinkhorn_scaled_lse_matches_reference() {
    let Some(gpu) = cuda() else { return };
    sinkhorn_cases(cuda_of(&gpu), SinkhornLse::Scaled);
}

fn sinkhorn_cases(gpu: &CudaBackend, lse: SinkhornLse) {
    let cases = [
        // (b, n, m, zero weights, outliers, ε)
        (1, 1, 1, false, false, 0.05),
        (2, 1, 37, false, true, 0.05),
        (2, 37, 1, true, false, 0.05),
        (3, 63, 65, false, false, 0.05),
        (2, 64, 64, true, false, 0.05),
        (4, 17, 29, true, true, 0.05),
        (2, 113, 203, false, true, 0.05),
        (2, 17, 29, false, false, 0.01),
        (2, 113, 203, true, true, 0.01),
        // K does not fit in shared memory: streamed, by default in split half-iterations
        (1, 512, 512, false, false, 0.05),
        (3, 300, 257, true, true, 0.05),
        (2, 257, 300, false, false, 0.01),
    ];
    // Each case with and without the split half-iterations (the same kernels for pairs whose
    // K fits in shared memory).
    let runs = cases
        .iter()
        .enumerate()
        .flat_map(|c| SinkhornSplit::ALL.map(|split| (c, split)));
    every_case(runs, |((s, &(b, n, m, zeros, outliers, eps)), split)| {
        let gpu = Backend::Cuda(gpu.clone().with_split(split).with_lse(lse));
        let prob = problem(100 + s as u64, b, n, m, zeros, outliers);
        // Fixed iteration count: the same iterate on every backend.
        let params = SinkhornParams {
            epsilon: eps,
            max_iterations: 60,
            threshold: 0.0,
            check_every: 20,
        };
        let want = sinkhorn::solve(&CpuReference, &prob, &params).unwrap();
        let fast = sinkhorn::solve(&CpuFast, &prob, &params).unwrap();
        let got = gpu.sinkhorn(&prob, &params).unwrap();
        let what = format!(
            "sinkhorn b={b} n={n} m={m} zeros={zeros} outliers={outliers} eps={eps} \
                 split={} lse={}",
            split.name(),
            lse.name()
        );
        compare_solutions(&what, &got, &want, &fast, &params, |p, i, j| {
            prob.a()[p * n + i] == 0.0 || prob.b()[p * m + j] == 0.0
        });
        let marginal_error: Field = |s| &s.marginal_error;
        check_field(
            &what,
            "marginal error",
            marginal_error,
            [&got, &want, &fast],
            1e-5,
        );
    });
}

#[test]
fn sinkhorn_beyond_shared_memory_runs_split() {
    let Some(gpu) = cuda() else { return };
    // 20,000 x 40: even the potentials (12 B per row and column) exceed the 227 KB of shared
    // memory of an H100/H200 (163 KB on an A100), so only the split kernels can run it.
    let (b, n, m) = (1, 20_000, 40);
    let prob = problem(300, b, n, m, true, true);
    let params = SinkhornParams {
        epsilon: 0.05,
        max_iterations: 20,
        threshold: 0.0,
        check_every: 10,
    };
    let want = sinkhorn::solve(&CpuReference, &prob, &params).unwrap();
    let fast = sinkhorn::solve(&CpuFast, &prob, &params).unwrap();
    let split = Backend::Cuda(cuda_of(&gpu).clone().with_split(SinkhornSplit::On));
    let got = split.sinkhorn(&prob, &params).unwrap();
    compare_solutions(
        &format!("sinkhorn b={b} n={n} m={m} split=on"),
        &got,
        &want,
        &fast,
        &params,
        |p, i, j| prob.a()[p * n + i] == 0.0 || prob.b()[p * m + j] == 0.0,
    );
    let one_cta = Backend::Cuda(cuda_of(&gpu).clone().with_split(SinkhornSplit::Off));
    let e = one_cta.sinkhorn(&prob, &params).unwrap_err().to_string();
    assert!(
        e.contains("potentials that fit") && e.contains("OPTICAL_CUDA_SINKHORN_SPLIT=on"),
        "{e}"
    );
}

/// The stopping rule on the device (`sinkhorn_retire_f32`, the default) decides exactly as
/// the host does after every check: the same iterations, flags, errors, potentials and
/// plans, bit for bit, with K in shared memory, streamed, split, and after the fused
/// launch's first interval; and a NaN solve fails the same way.
#[test]
fn device_checks_decide_as_host_checks() {
    use optical::backend::cuda::SolverChecks;
    let Some(gpu) = cuda() else { return };
    let with = |checks: SolverChecks, split: SinkhornSplit| {
        Backend::Cuda(
            cuda_of(&gpu)
                .clone()
                .with_solver_checks(checks)
                .with_split(split),
        )
    };
    let params = |threshold, check_every, max_iterations| SinkhornParams {
        epsilon: 0.05,
        max_iterations,
        threshold,
        check_every,
    };
    let cases = [
        (
            "K in shared memory",
            problem(210, 6, 23, 31, true, true),
            params(1e-4, 3, 400),
            SinkhornSplit::On,
        ),
        (
            "one check per iteration",
            problem(211, 3, 9, 12, false, false),
            params(1e-5, 1, 120),
            SinkhornSplit::On,
        ),
        (
            "last interval cut short",
            problem(212, 4, 17, 29, true, false),
            params(1e-6, 7, 100),
            SinkhornSplit::On,
        ),
        (
            "K streamed",
            problem(213, 3, 300, 257, false, false),
            params(1e-4, 10, 300),
            SinkhornSplit::Off,
        ),
        (
            "split",
            problem(214, 3, 300, 257, false, false),
            params(1e-4, 10, 300),
            SinkhornSplit::On,
        ),
    ];
    for (what, prob, params, split) in cases {
        let host = with(SolverChecks::Host, split)
            .sinkhorn(&prob, &params)
            .unwrap();
        let device = with(SolverChecks::Device, split)
            .sinkhorn(&prob, &params)
            .unwrap();
        common::assert_same_solution(what, &host, &device);
    }
    // The fused path: its launch runs the first interval, the rounds go on from there.
    let x = embeddings(215, 5, 20, 16, false);
    let y = embeddings(216, 5, 27, 16, false);
    let p = params(1e-5, 4, 300);
    let host = with(SolverChecks::Host, SinkhornSplit::On)
        .sinkhorn_embeddings(&x, &y, &p)
        .unwrap();
    let device = with(SolverChecks::Device, SinkhornSplit::On)
        .sinkhorn_embeddings(&x, &y, &p)
        .unwrap();
    common::assert_same_solution("fused", &host, &device);
    // ε far too small: both stop the pair at the same check and fail naming it.
    let prob = problem(217, 2, 5, 6, false, false);
    let tiny = SinkhornParams {
        epsilon: 1e-300,
        ..params(1e-6, 2, 20)
    };
    let e_host = with(SolverChecks::Host, SinkhornSplit::On)
        .sinkhorn(&prob, &tiny)
        .unwrap_err()
        .to_string();
    let e_device = with(SolverChecks::Device, SinkhornSplit::On)
        .sinkhorn(&prob, &tiny)
        .unwrap_err()
        .to_string();
    assert_eq!(e_host, e_device);
}

#[test]
fn sinkhorn_stops_converged_pairs_like_the_reference() {
    let Some(gpu) = cuda() else { return };
    // K in shared memory (40x50), and streamed from global memory (300x257) with and without
    // the split half-iterations: stopped pairs must stay stopped on every path.
    let runs = [
        (40, 50, SinkhornSplit::On),
        (300, 257, SinkhornSplit::On),
        (300, 257, SinkhornSplit::Off),
    ];
    every_case(runs, |(n, m, split)| {
        let gpu = Backend::Cuda(cuda_of(&gpu).clone().with_split(split));
        // Pair 0 is 1x1 (converged at the first check); the others need different counts.
        let base = problem(200, 3, n, m, false, false);
        let (mut a, mut b) = (base.a().to_vec(), base.b().to_vec());
        for w in &mut b[1..m] {
            *w = 0.0;
        }
        for w in &mut a[1..n] {
            *w = 0.0;
        }
        a[0] = 1.0;
        b[0] = 1.0;
        let prob = Problem::new(3, n, m, base.cost().to_vec(), Some(a), Some(b)).unwrap();
        let params = SinkhornParams {
            epsilon: 0.05,
            max_iterations: 500,
            threshold: 1e-4,
            check_every: 10,
        };
        let want = sinkhorn::solve(&CpuReference, &prob, &params).unwrap();
        let got = gpu.sinkhorn(&prob, &params).unwrap();
        let what = format!("early stop {n}x{m} split={}", split.name());
        eprintln!(
            "{what}: cuda iterations {:?} converged {:?}; reference {:?} {:?}",
            got.iterations, got.converged, want.iterations, want.converged
        );
        assert_eq!(got.converged, want.converged, "{what}");
        assert_eq!(
            got.iterations[0], 10,
            "{what}: the 1x1 pair stops at the first check"
        );
        for p in 0..3 {
            let d = got.iterations[p] as i64 - want.iterations[p] as i64;
            assert!(
                d.abs() <= params.check_every as i64,
                "{what}: pair {p}: {} iterations vs {} for the reference",
                got.iterations[p],
                want.iterations[p]
            );
        }
    });
}

#[test]
fn fused_sinkhorn_matches_reference() {
    let Some(gpu) = cuda() else { return };
    // The fused kernel has two cost phases (the wide cost kernel maps to the 3xTF32 one) and
    // two block sizes: the default (512 or 256 threads by shape), and each block for every
    // shape.
    every_case(
        [
            (CostKernel::Tf32x3, FusedThreads::Auto),
            (CostKernel::Fp32, FusedThreads::Threads512),
            (CostKernel::Tf32x3, FusedThreads::Threads256),
        ],
        |(kernel, threads)| {
            let with_kernel = with_cost_kernel(&gpu, kernel);
            let gpu = Backend::Cuda(cuda_of(&with_kernel).clone().with_fused_threads(threads));
            fused_cases(&gpu, kernel, threads)
        },
    );
}

/// The producer-warp cost phase (`OPTICAL_CUDA_FUSED_COST=pipelined`, cost_mode 2), not yet
/// proven on a GPU: its own test, so that a fault in it cannot hide how the others did.
/// Every shape of the fused cases, with the default block (512 threads from 65 rows or
/// columns, where the pipelined phase runs; 256 below, where the serial one does) and with
/// 512 threads for every shape.
#[test]
fn fused_sinkhorn_pipelined_cost_phase_matches_reference() {
    let Some(gpu) = cuda() else { return };
    for threads in [FusedThreads::Auto, FusedThreads::Threads512] {
        let with_kernel = with_cost_kernel(&gpu, CostKernel::Tf32x3);
        eprintln!("fused cost phase: pipelined");
        let gpu = Backend::Cuda(
            cuda_of(&with_kernel)
                .clone()
                .with_fused_threads(threads)
                .with_fused_cost(FusedCost::Pipelined),
        );
        fused_cases(&gpu, CostKernel::Tf32x3, threads);
    }
}

/// The cost given (`OPTICAL_CUDA_FUSED_COST=standalone`, cost_mode 3): the standalone cost
/// kernel, then the fused kernel loading its output. Not yet proven on a GPU either: its own
/// test. With the default cost kernel (64 x 64 tiles, or wgmma on Hopper for large batches)
/// and the default block, and with 256 threads; on compute capability 9.0 also with each
/// wgmma kernel.
#[test]
fn fused_sinkhorn_given_cost_matches_reference() {
    let Some(gpu) = cuda() else { return };
    let two = WgmmaStages::Two;
    let mut runs = vec![
        (CostKernel::Auto, FusedThreads::Auto, two),
        (CostKernel::Tf32x3, FusedThreads::Threads256, two),
    ];
    if cuda_of(&gpu).compute_capability() == (9, 0) {
        runs.push((CostKernel::Wgmma, FusedThreads::Auto, two));
        runs.push((CostKernel::Wgmma, FusedThreads::Auto, WgmmaStages::Three));
        runs.push((CostKernel::WgmmaRs, FusedThreads::Auto, two));
    }
    for (kernel, threads, stages) in runs {
        eprintln!(
            "fused cost phase: standalone {} ({} wgmma stages)",
            kernel.name(),
            stages.name()
        );
        let with_kernel = with_cost_kernel(&gpu, kernel);
        let gpu = Backend::Cuda(
            cuda_of(&with_kernel)
                .clone()
                .with_fused_threads(threads)
                .with_fused_cost(FusedCost::Standalone)
                .with_wgmma_stages(stages),
        );
        fused_cases(&gpu, kernel, threads);
    }
}

/// The absorbed log-sum-exps (`OPTICAL_CUDA_LSE=absorbed`, lse_mode 1), not yet proven
/// on a GPU: its own test. Every shape of the fused cases (ε = 0.01 and 0.005 among them,
/// where the first passes fall back and the kernel absorbs the potentials into K″), with
/// the serial cost phase and the default block, with 256 threads, and with the cost given.
#[test]
fn fused_sinkhorn_absorbed_lse_matches_reference() {
    let Some(gpu) = cuda() else { return };
    fused_lse_cases(&gpu, SinkhornLse::Absorbed);
}

/// The scaled passes (`OPTICAL_CUDA_LSE=scaled`, lse_mode 2: Q = 2^K″ on chip, products
/// instead of `ex2`, Q rebuilt from K in global memory when a pass's sums leave range), not
/// yet proven on a GPU: its own test, on the same shapes and settings (at ε = 0.01 and 0.005
/// the first passes rebuild along both rows and columns).
#[test]
fn fused_sinkhorn_scaled_lse_matches_reference() {
    let Some(gpu) = cuda() else { return };
    fused_lse_cases(&gpu, SinkhornLse::Scaled);
}

fn fused_lse_cases(gpu: &Backend, lse: SinkhornLse) {
    for (threads, cost) in [
        (FusedThreads::Auto, FusedCost::Serial),
        (FusedThreads::Threads256, FusedCost::Serial),
        (FusedThreads::Auto, FusedCost::Standalone),
    ] {
        eprintln!(
            "fused log-sum-exps: {} ({} threads, {} cost phase)",
            lse.name(),
            threads.name(),
            cost.name()
        );
        let with_kernel = with_cost_kernel(gpu, CostKernel::Tf32x3);
        let gpu = Backend::Cuda(
            cuda_of(&with_kernel)
                .clone()
                .with_fused_threads(threads)
                .with_fused_cost(cost)
                .with_lse(lse),
        );
        fused_cases(&gpu, CostKernel::Tf32x3, threads);
    }
}

fn fused_cases(gpu: &Backend, kernel: CostKernel, threads: FusedThreads) {
    // (b, n, m, d, ε, check_every): one chunk (all in the fused launch), several chunks
    // (fused launch, then the iterate kernel), a shape too large for the fused kernel; the
    // issue's pair shape; more rows, then more columns, than one round of the kernel's
    // four-lanes-per-row passes (128 rows at 512 threads); more rows than the 256 threads of
    // the cost phase; ε = 0.005 (the default), where the first passes leave the fast
    // (potential-shifted) sums for the online-maximum fallback.
    let cases = [
        (1, 1, 1, 4, 0.05, 30),
        (2, 1, 37, 9, 0.05, 30),
        (3, 17, 29, 33, 0.05, 30),
        (2, 63, 65, 384, 0.05, 10),
        (2, 113, 203, 64, 0.01, 10),
        (1, 512, 512, 32, 0.05, 30),
        (2, 128, 128, 384, 0.05, 30),
        (1, 140, 3, 8, 0.05, 30),
        (1, 3, 133, 8, 0.05, 30),
        (1, 300, 40, 8, 0.05, 30),
        (2, 40, 30, 16, 0.005, 30),
    ];
    let reference = Backend::new(BackendKind::CpuReference).unwrap();
    let cpu = Backend::new(BackendKind::Cpu).unwrap();
    // Each shape with every row real too: the kernel loops over the real lengths, so only
    // full pairs reach its boundaries (rounds of rows, the cost phase's row tiles, 128 x 128).
    let cases = cases
        .iter()
        .enumerate()
        .flat_map(|(s, &case)| [false, true].map(|full| (s, case, full)));
    every_case(cases, |(s, (b, n, m, d, eps, check_every), full)| {
        let x = embeddings(300 + s as u64, b, n, d, full);
        let y = embeddings(400 + s as u64, b, m, d, full);
        let params = SinkhornParams {
            epsilon: eps,
            max_iterations: 30,
            threshold: 0.0,
            check_every,
        };
        let want = reference.sinkhorn_embeddings(&x, &y, &params).unwrap();
        let fast = cpu.sinkhorn_embeddings(&x, &y, &params).unwrap();
        let got = gpu.sinkhorn_embeddings(&x, &y, &params).unwrap();
        let what = format!(
            "fused ({}, {} threads) b={b} n={n} m={m} d={d} eps={eps} check_every={check_every} \
                 full={full}",
            kernel.name(),
            threads.name()
        );
        compare_solutions(&what, &got, &want, &fast, &params, |p, i, j| {
            i >= x.lengths()[p] || j >= y.lengths()[p]
        });
    });
}

#[test]
fn fused_sinkhorn_converges_like_the_reference() {
    let Some(gpu) = cuda() else { return };
    let x = embeddings(500, 4, 40, 64, false);
    let y = embeddings(501, 4, 50, 64, false);
    let params = SinkhornParams {
        epsilon: 0.05,
        max_iterations: 1000,
        threshold: 1e-4,
        check_every: 10,
    };
    let reference = Backend::new(BackendKind::CpuReference).unwrap();
    let want = reference.sinkhorn_embeddings(&x, &y, &params).unwrap();
    let fused = gpu.sinkhorn_embeddings(&x, &y, &params).unwrap();
    let cost = gpu.cosine_cost(&x, &y).unwrap();
    let prob = Problem::from_cost_and_lengths(&cost, x.lengths(), y.lengths()).unwrap();
    let materialised = gpu.sinkhorn(&prob, &params).unwrap();
    eprintln!(
        "iterations: reference {:?}, fused {:?}, materialised {:?}",
        want.iterations, fused.iterations, materialised.iterations
    );
    for got in [&fused, &materialised] {
        assert_eq!(got.converged, want.converged);
        for p in 0..4 {
            let d = got.iterations[p] as i64 - want.iterations[p] as i64;
            assert!(
                d.abs() <= params.check_every as i64,
                "pair {p}: {:?} vs reference {:?}",
                got.iterations,
                want.iterations
            );
        }
    }
}

/// Host ↔ device copies, both ways, bit for bit: below the staging threshold (1 MiB), at
/// it, one float either side of the 8 MiB chunk, and three chunks with a partial last one,
/// through the staging buffers and through the driver's pageable path.
#[test]
fn copies_round_trip_exactly() {
    let Some(gpu) = cuda() else { return };
    const MIB_FLOATS: usize = (1 << 20) / 4;
    let sizes = [
        1,
        MIB_FLOATS - 1,
        MIB_FLOATS,
        8 * MIB_FLOATS - 1,
        8 * MIB_FLOATS + 1,
        16 * MIB_FLOATS + 12_345,
    ];
    let mut rng = SplitMix64::new(41);
    for staging in Staging::ALL {
        let cuda = cuda_of(&gpu).clone().with_staging(staging);
        for &len in &sizes {
            let data = rng.normals_f32(len);
            let back = cuda.round_trip(&data).unwrap();
            let first_bad = data
                .iter()
                .zip(&back)
                .position(|(a, b)| a.to_bits() != b.to_bits());
            assert!(
                back.len() == len && first_bad.is_none(),
                "{} copy of {len} floats: {} back, first difference at {first_bad:?}",
                staging.name(),
                back.len()
            );
        }
        eprintln!("{}: round trips exact for {sizes:?} floats", staging.name());
    }
}

#[test]
fn cuda_rejects_bad_input_without_panicking() {
    let Some(gpu) = cuda() else { return };
    let x = embeddings(600, 2, 5, 8, true);
    let y = embeddings(601, 3, 5, 8, true);
    assert!(matches!(gpu.cosine_cost(&x, &y), Err(Error::Shape { .. })));
    let bad = SinkhornParams {
        epsilon: 0.0,
        ..SinkhornParams::default()
    };
    let y2 = embeddings(602, 2, 5, 8, true);
    assert!(matches!(
        gpu.sinkhorn_embeddings(&x, &y2, &bad),
        Err(Error::Parameter { .. })
    ));
}

/// The exp2 throughput probe (kernels/peak.ptx) runs its chains on every thread of the
/// device: each lane's sum is the f64 reference's to ex2.approx accuracy, from the starting
/// values through convergence (`optical bench --kernels exp2-peak` times it).
#[test]
fn exp2_probe_runs_every_chain() {
    use optical::backend::peak::{CHAINS, MIN_ROUNDS, STEPS};
    let Some(gpu) = cuda() else { return };
    let sms = cuda_of(&gpu).multiprocessors();
    for min_exps in [0u64, 1 << 26] {
        let peak = gpu.exp2_peak(min_exps).expect("exp2 probe");
        assert_eq!(peak.lanes, sms * 2048);
        assert_eq!(peak.sums.len(), peak.lanes);
        let per_round = (peak.lanes * CHAINS * STEPS) as u64;
        assert_eq!(
            peak.rounds as u64,
            min_exps.div_ceil(per_round).max(MIN_ROUNDS as u64)
        );
        let worst = peak.max_error();
        eprintln!(
            "exp2 probe: {} lanes x {} rounds, max error {worst:e}",
            peak.lanes, peak.rounds
        );
        assert!(worst < 1e-5, "max error {worst} against the f64 reference");
    }
}

/// Every standard bench job has a device time; a Sinkhorn job with a stopping rule times
/// the checked solve (checks and read-backs included) and leaves the backend solving as
/// before.
#[test]
fn every_bench_job_has_a_device_time() {
    use optical::backend::DeviceJob;
    let Some(gpu) = cuda() else { return };
    let x = embeddings(700, 3, 17, 40, true);
    let y = embeddings(701, 3, 29, 40, true);
    let pr = problem(702, 3, 17, 29, false, false);
    let fixed = SinkhornParams {
        epsilon: 0.05,
        max_iterations: 20,
        threshold: 0.0,
        check_every: 20,
    };
    let checked = SinkhornParams {
        epsilon: 0.05,
        max_iterations: 500,
        threshold: 1e-3,
        check_every: 5,
    };
    let jobs = [
        ("cosine cost", DeviceJob::CosineCost(&x, &y)),
        ("sinkhorn", DeviceJob::Sinkhorn(&pr, &fixed)),
        ("sinkhorn, checked", DeviceJob::Sinkhorn(&pr, &checked)),
        ("fused", DeviceJob::SinkhornFused(&x, &y, &fixed)),
    ];
    for (what, job) in jobs {
        let (s, calls) = gpu
            .device_seconds(job, 0.0)
            .unwrap()
            .unwrap_or_else(|| panic!("{what}: no device time"));
        println!("{what}: {s:.3e} s on the device (median of {calls})");
        assert!(s > 0.0 && s.is_finite(), "{what}: {s}");
        assert!(calls >= 3, "{what}: {calls} calls");
    }
    let want = sinkhorn::solve(&CpuReference, &pr, &checked).unwrap();
    let got = gpu.sinkhorn(&pr, &checked).unwrap();
    assert_eq!(got.converged, want.converged);
}
