//! Parity of every WGSL kernel with the f64 CPU reference, on awkward shapes, zero weights,
//! outliers and ε = 0.01; determinism; naga validation of the shader sources.
//!
//! These tests need a wgpu adapter (in CI: Mesa's lavapipe, installed by
//! `scripts/setup.d/20-vulkan.sh`). Without one they FAIL, unless `OPTICAL_SKIP_WGPU=1` is set.
#![cfg(feature = "wgpu")]

mod common;

use std::sync::{Arc, OnceLock};

use optical::backend::wgpu::{
    CostTiling, MaxsimTiling, SinkhornKernel, Wgpu, WgpuContext, BLOCKED_MAX_LEN, SHADERS,
};
use optical::backend::{Backend, CpuReference};
use optical::ot::problem::{Embeddings, PackedDocs, Problem, SinkhornParams};
use optical::ot::sinkhorn::{self, SinkhornOutput};
use optical::rng::SplitMix64;

/// Agreement required of plans (absolute, per entry).
const PLAN_TOL: f64 = 1e-5;

fn context() -> Option<Arc<WgpuContext>> {
    static CTX: OnceLock<Result<Arc<WgpuContext>, String>> = OnceLock::new();
    let ctx = CTX.get_or_init(|| WgpuContext::new().map(Arc::new).map_err(|e| e.to_string()));
    match ctx {
        Ok(c) => Some(c.clone()),
        Err(e) if std::env::var("OPTICAL_SKIP_WGPU").as_deref() == Ok("1") => {
            eprintln!("skipping: OPTICAL_SKIP_WGPU=1 and no wgpu adapter ({e})");
            None
        }
        Err(e) => panic!(
            "no wgpu adapter: {e}\n(install lavapipe with scripts/setup.d/20-vulkan.sh, or set \
             OPTICAL_SKIP_WGPU=1 to skip these tests explicitly)"
        ),
    }
}

fn wgpu_backend() -> Option<(Wgpu, Backend)> {
    let ctx = context()?;
    let w = Wgpu::with_context(ctx);
    Some((w.clone(), Backend::Wgpu(w)))
}

/// Max abs and max relative (to max(|reference|, floor)) error, printed, then asserted.
fn compare(what: &str, got: &[f64], want: &[f64], abs_tol: f64, floor: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let (mut max_abs, mut max_rel, mut first) = (0.0f64, 0.0f64, Vec::new());
    for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
        let e = (g - w).abs();
        let e = if e.is_nan() { f64::INFINITY } else { e };
        max_abs = max_abs.max(e);
        max_rel = max_rel.max(e / w.abs().max(floor));
        if e > abs_tol && first.len() < 5 {
            first.push(format!("[{k}] got {g:e} want {w:e}"));
        }
    }
    println!("{what}: max abs error {max_abs:.3e}, max rel error {max_rel:.3e} (tol {abs_tol:e})");
    assert!(
        max_abs <= abs_tol,
        "{what}: max abs error {max_abs:e} > {abs_tol:e}; first mismatches: {first:?}"
    );
}

/// Seeded `(b, n, d)` embeddings with ragged lengths, a zero row and a few outliers.
fn embeddings(seed: u64, b: usize, n: usize, d: usize, ragged: bool) -> Embeddings {
    let mut rng = SplitMix64::new(seed);
    let mut data = rng.normals_f32(b * n * d);
    // Outliers: a few values 1000× larger.
    for _ in 0..(b * n * d / 97).max(1) {
        let k = rng.range(0, b * n * d - 1);
        data[k] *= 1000.0;
    }
    let lengths: Vec<usize> = (0..b)
        .map(|p| {
            if ragged && p % 2 == 1 {
                rng.range(1, n)
            } else {
                n
            }
        })
        .collect();
    // A zero vector (cos 0 with everything) in the first set when it has two rows or more.
    if n > 1 && lengths[0] > 1 {
        data[d..2 * d].iter_mut().for_each(|v| *v = 0.0);
    }
    Embeddings::new("test", b, n, d, data, Some(lengths)).expect("valid test embeddings")
}

/// A batch of OT problems: cosine costs of random embeddings, some entries turned into
/// outliers, random weights with zeros (padding) in every other pair.
fn problem(seed: u64, b: usize, n: usize, m: usize) -> Problem {
    let x = embeddings(seed, b, n, 8, false);
    let y = embeddings(seed + 1, b, m, 8, false);
    let cost = CpuReference.cosine_cost(&x, &y).expect("valid");
    let mut rng = SplitMix64::new(seed + 2);
    let mut c: Vec<f64> = cost.data.iter().map(|&v| v as f64).collect();
    for _ in 0..(b * n * m / 53).max(1) {
        let k = rng.range(0, b * n * m - 1);
        c[k] = 5.0 + 20.0 * rng.uniform();
    }
    let weights = |rng: &mut SplitMix64, len: usize| -> Vec<f64> {
        (0..b * len)
            .map(|k| {
                let p = k / len;
                if p % 2 == 1 && len > 1 && rng.uniform() < 0.25 && k % len != 0 {
                    0.0
                } else {
                    0.5 + rng.uniform()
                }
            })
            .collect()
    };
    let a = weights(&mut rng, n);
    let bw = weights(&mut rng, m);
    Problem::new(b, n, m, c, Some(a), Some(bw)).expect("valid problem")
}

fn fixed(epsilon: f64, iterations: usize) -> SinkhornParams {
    SinkhornParams {
        epsilon,
        max_iterations: iterations,
        threshold: 0.0,
        check_every: iterations.min(7),
    }
}

/// The f64 reference of a fused solve: the cosine cost of the embeddings, uniform weights on
/// the real tokens, Sinkhorn.
fn fused_reference(x: &Embeddings, y: &Embeddings, params: &SinkhornParams) -> SinkhornOutput {
    CpuReference
        .cosine_cost(x, y)
        .and_then(|c| Problem::from_cost_and_lengths(&c, x.lengths(), y.lengths()))
        .and_then(|pr| sinkhorn::solve(&CpuReference, &pr, params))
        .expect("reference")
}

fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

#[test]
fn shaders_validate_with_naga() {
    for (name, source) in SHADERS {
        let module = naga::front::wgsl::parse_str(source)
            .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::default(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
        assert!(
            source.starts_with("// "),
            "{name}: must open with its header comment"
        );
    }
}

/// The register-blocked kernels keep their register blocks in named vectors. NVIDIA's Vulkan
/// driver kept loop-indexed function-local arrays in local memory (the blocked cost kernel
/// ran 4× slower with them; docs/PERFORMANCE.md), which no result on lavapipe shows: so no
/// function of these kernels may declare an array local, and no private variable may be an
/// array.
#[test]
fn register_blocked_kernels_hold_no_local_arrays() {
    const BLOCKED: [&str; 15] = [
        "cosine_cost_blocked_f32",
        "store_block_row",
        "maxsim_f32",
        "fold_max",
        "sinkhorn_iterate_blocked_f32",
        "k_row4",
        "fused_blocked_f32",
        "fused_blocked_plan_f32",
        "build_blocked",
        "plan_row",
        "line_partial",
        "row_partials",
        "col_partials",
        "row_update",
        "finish_iteration",
    ];
    let mut seen = std::collections::BTreeSet::new();
    for (name, source) in SHADERS {
        let module = naga::front::wgsl::parse_str(source)
            .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
        let is_array = |ty: naga::Handle<naga::Type>| {
            matches!(module.types[ty].inner, naga::TypeInner::Array { .. })
        };
        for (_, g) in module.global_variables.iter() {
            if g.space == naga::AddressSpace::Private {
                assert!(!is_array(g.ty), "{name}: private array {:?}", g.name);
            }
        }
        let functions = module
            .functions
            .iter()
            .map(|(_, f)| (f.name.clone().unwrap_or_default(), f))
            .chain(
                module
                    .entry_points
                    .iter()
                    .map(|e| (e.name.clone(), &e.function)),
            );
        for (fname, f) in functions {
            if !BLOCKED.contains(&fname.as_str()) {
                continue;
            }
            seen.insert(fname.clone());
            for (_, v) in f.local_variables.iter() {
                assert!(
                    !is_array(v.ty),
                    "{name}: {fname} declares the array {:?}",
                    v.name
                );
            }
        }
    }
    // A renamed kernel must not drop out of the check unnoticed.
    let missing: Vec<_> = BLOCKED.iter().filter(|f| !seen.contains(**f)).collect();
    assert!(
        missing.is_empty(),
        "functions not found in any shader: {missing:?}"
    );
}

/// Pipelines compile on first use; every one of them must compile on this adapter, and the
/// count must match the backend's table (a pipeline added or lost shows up here).
#[test]
fn every_pipeline_compiles() {
    let Some(ctx) = context() else { return };
    let count = ctx.compile_all().expect("compile every pipeline");
    let want = if ctx.has_blocked_kernel() { 34 } else { 22 };
    assert_eq!(count, want, "pipelines compiled");
    // A second call finds them compiled.
    assert_eq!(ctx.compile_all().expect("compiled pipelines"), want);
}

/// The exp2 throughput probe (shaders/peak.wgsl) runs its chains on every invocation:
/// each sum is the f64 reference's to the accuracy of the adapter's exp2, and a request too
/// large for llvmpipe's loop cap is an error, not a short run.
#[test]
fn exp2_probe_runs_every_chain() {
    use optical::backend::peak::{CHAINS, MIN_ROUNDS, STEPS};
    let Some((w, backend)) = wgpu_backend() else {
        return;
    };
    let peak = backend.exp2_peak(1 << 25).expect("exp2 probe");
    let per_round = (peak.lanes * CHAINS * STEPS) as u64;
    assert_eq!(peak.sums.len(), peak.lanes);
    assert_eq!(
        peak.rounds as u64,
        (1u64 << 25).div_ceil(per_round).max(MIN_ROUNDS as u64)
    );
    let worst = peak.max_error();
    eprintln!(
        "exp2 probe: {} lanes x {} rounds, max error {worst:e}",
        peak.lanes, peak.rounds
    );
    assert!(worst < 1e-5, "max error {worst} against the f64 reference");
    if w.context().loop_pass_cap().is_some() {
        let err = backend.exp2_peak(per_round * 100_000).unwrap_err();
        assert!(err.to_string().contains("loops"), "{err}");
    }
    // The bench problem (`optical bench --kernels exp2-peak`): its rate counts the
    // exponentials the probe ran.
    let r = optical::bench::run_kernel(&backend, "exp2-peak", 0.0).expect("bench exp2-peak");
    let steps = optical::bench::EXP2_PEAK_EXPS.div_ceil(per_round) as usize * STEPS;
    // The shape is the work asked for; the lanes (the machine's) are beside it.
    assert_eq!(
        r.shape,
        format!("exps={} chains={CHAINS}", optical::bench::EXP2_PEAK_EXPS)
    );
    assert_eq!(r.lanes, Some(peak.lanes));
    let rate = r.gexp_per_s.expect("a G exp/s rate");
    let exps = (per_round as usize * (steps / STEPS)) as f64;
    assert!(
        (rate - exps / r.seconds_per_call / 1e9).abs() <= 1e-9 * rate,
        "{r:?}"
    );
}

#[test]
fn cosine_cost_matches_reference() {
    let Some((w, _)) = wgpu_backend() else { return };
    // The small-set kernel's block is 16 × 16 and walks d 16 at a time; sets of 64 rows or
    // more on both sides take the blocked kernel (64 × 64 blocks, d 16 at a time) unless
    // OPTICAL_WGPU_COST=tile, which keeps the 16 × 16 kernel for every set.
    drop(w);
    for tiling in CostTiling::ALL {
        let w = Wgpu::with_context(Arc::new(
            WgpuContext::new()
                .expect("adapter found above")
                .with_cost_tiling(tiling),
        ));
        cosine_cost_cases(tiling.name(), &w);
    }
}

fn cosine_cost_cases(tiling: &str, w: &Wgpu) {
    for (k, &(b, n, m, d)) in [
        (1, 1, 1, 1),
        (2, 1, 37, 9),
        (2, 37, 1, 9),
        (2, 15, 16, 17),
        (3, 16, 17, 15),
        (2, 17, 29, 33),
        (2, 63, 200, 20),
        (2, 64, 64, 16),
        (2, 65, 127, 33),
        (2, 113, 203, 64),
        (1, 512, 512, 16),
        (1, 9, 7, 1024),
        (1, 70, 66, 1027),
    ]
    .iter()
    .enumerate()
    {
        let x = embeddings(10 + k as u64, b, n, d, true);
        let y = embeddings(20 + k as u64, b, m, d, true);
        let got = w.cosine_cost(&x, &y).expect("wgpu cosine cost");
        let want = CpuReference.cosine_cost(&x, &y).expect("reference");
        compare(
            &format!("cosine cost ({tiling}) b={b} n={n} m={m} d={d}"),
            &widen(&got.data),
            &widen(&want.data),
            2e-6,
            1.0,
        );
    }
}

#[test]
fn maxsim_matches_reference() {
    let Some((w, _)) = wgpu_backend() else { return };
    drop(w);
    // Both kernels on every adapter (the default picks the tile kernel on GPUs).
    for tiling in [MaxsimTiling::Blocked, MaxsimTiling::Tile] {
        let w = Wgpu::with_context(Arc::new(
            WgpuContext::new()
                .expect("adapter found above")
                .with_maxsim_tiling(tiling),
        ));
        assert_eq!(w.context().maxsim_tiling(), tiling);
        maxsim_cases(tiling.name(), &w);
    }
}

fn maxsim_cases(tiling: &str, w: &Wgpu) {
    for (k, &(nq, qlen, ndocs, dmax, d)) in [
        (1, 1, 1, 1, 1),
        (3, 63, 5, 65, 16),
        (2, 64, 17, 64, 128),
        (2, 65, 9, 29, 1024),
        // The kernel's blocks are 32 query × 64 document tokens, d 16 at a time.
        (2, 33, 7, 130, 20),
        (1, 31, 4, 64, 17),
        (1, 512, 3, 20, 32),
        (1, 600, 2, 3, 1100),
    ]
    .iter()
    .enumerate()
    {
        let q = embeddings(30 + k as u64, nq, qlen, d, true);
        let mut rng = SplitMix64::new(40 + k as u64);
        let lengths: Vec<usize> = (0..ndocs).map(|_| rng.range(1, dmax)).collect();
        let total: usize = lengths.iter().sum();
        let mut data = rng.normals_f32(total * d);
        data[..d].iter_mut().for_each(|v| *v = 0.0);
        let docs = PackedDocs::new("docs", d, data, lengths).expect("valid docs");
        let got = w.maxsim(&q, &docs).expect("wgpu maxsim");
        let want = CpuReference.maxsim(&q, &docs).expect("reference");
        // A score sums up to `qlen` cosines, each good to ~1e-7 in f32.
        compare(
            &format!("maxsim ({tiling}) {nq} queries x {qlen} vs {ndocs} docs d={d}"),
            &widen(&got),
            &widen(&want),
            1e-6 * qlen as f64,
            1.0,
        );
    }
}

/// More queries than a grid dimension holds (65,535 workgroups): MaxSim runs them in
/// slices, each against every document, and the scores land where one dispatch puts them.
#[test]
fn maxsim_queries_beyond_one_grid_dimension_match_reference() {
    let Some((w, _)) = wgpu_backend() else { return };
    let max = w.context().limits().max_compute_workgroups_per_dimension as usize;
    let (nq, d) = (max + 3, 4);
    let q = embeddings(70, nq, 2, d, true);
    let docs = PackedDocs::new(
        "docs",
        d,
        SplitMix64::new(71).normals_f32(5 * d),
        vec![2, 3],
    )
    .expect("valid docs");
    let got = w
        .maxsim(&q, &docs)
        .expect("wgpu maxsim in slices of queries");
    let want = CpuReference.maxsim(&q, &docs).expect("reference");
    compare(
        &format!("maxsim {nq} queries"),
        &widen(&got),
        &widen(&want),
        2e-6,
        1.0,
    );
}

/// Rows rescaled to just inside the norm bounds (1.5e-12, 6.7e11, 1): the cost kernels (the
/// small-set and the blocked one), MaxSim and the fused Sinkhorn keep the reference's
/// cosines, so no `f32` square or dot product overflows or underflows.
#[test]
fn rows_at_the_norm_bounds_match_reference() {
    let Some((w, backend)) = wgpu_backend() else {
        return;
    };
    for (k, &(b, n, m, d)) in [(1, 1, 1, 1), (2, 17, 29, 33), (2, 65, 127, 33)]
        .iter()
        .enumerate()
    {
        let x = common::rescaled_to_norm_bounds(&embeddings(60 + k as u64, b, n, d, true));
        let y = common::rescaled_to_norm_bounds(&embeddings(70 + k as u64, b, m, d, true));
        let what = format!("b={b} n={n} m={m} d={d}");
        let got = w.cosine_cost(&x, &y).expect("wgpu cosine cost");
        let want = CpuReference.cosine_cost(&x, &y).expect("reference");
        compare(
            &format!("cosine cost at the norm bounds {what}"),
            &widen(&got.data),
            &widen(&want.data),
            2e-6,
            1.0,
        );
        let docs = PackedDocs::new("docs", d, y.data().to_vec(), vec![m; b]).expect("docs");
        let want = CpuReference.maxsim(&x, &docs).expect("reference");
        // Both MaxSim tilings (each is the default on some adapters).
        for tiling in [MaxsimTiling::Blocked, MaxsimTiling::Tile] {
            let ctx = WgpuContext::new()
                .expect("adapter")
                .with_maxsim_tiling(tiling);
            let got = Wgpu::with_context(Arc::new(ctx))
                .maxsim(&x, &docs)
                .expect("wgpu maxsim");
            compare(
                &format!("maxsim ({tiling:?}) at the norm bounds {what}"),
                &widen(&got),
                &widen(&want),
                1e-6 * n as f64,
                1.0,
            );
        }
        let params = fixed(0.05, 20);
        let want = fused_reference(&x, &y, &params);
        // The fused kernels: the default (register-blocked where the pairs fit it) and the
        // tile kernel (rows).
        let rows = Backend::Wgpu(Wgpu::with_context(Arc::new(
            WgpuContext::new()
                .expect("adapter")
                .with_sinkhorn_kernel(SinkhornKernel::Rows),
        )));
        for (label, b) in [("default", &backend), ("rows", &rows)] {
            let got = b.sinkhorn_embeddings(&x, &y, &params).expect("wgpu fused");
            check_solution(
                &format!("fused ({label}) at the norm bounds {what}"),
                &got,
                &want,
                params.threshold,
            );
        }
    }
}

/// Below this L1 marginal error f32 cannot tell errors apart: a convergence decision may
/// differ from the f64 reference's when an error lies this close to the threshold.
const F32_ERROR_FLOOR: f64 = 1e-6;

fn check_solution(what: &str, got: &SinkhornOutput, want: &SinkhornOutput, threshold: f64) {
    compare(
        &format!("{what} plan"),
        &got.plan,
        &want.plan,
        PLAN_TOL,
        1e-3,
    );
    compare(&format!("{what} cost"), &got.cost, &want.cost, 1e-4, 1.0);
    compare(&format!("{what} f"), &got.f, &want.f, 1e-4, 1.0);
    compare(&format!("{what} g"), &got.g, &want.g, 1e-4, 1.0);
    // The last check's error (what each pair's stop was decided on).
    compare(
        &format!("{what} marginal error"),
        &got.marginal_error,
        &want.marginal_error,
        1e-5,
        1e-3,
    );
    let mut at_floor = 0;
    for p in 0..got.pairs {
        if got.iterations[p] != want.iterations[p] || got.converged[p] != want.converged[p] {
            let (e1, e2) = (got.marginal_error[p], want.marginal_error[p]);
            assert!(
                e1.min(e2) <= threshold + F32_ERROR_FLOOR,
                "{what}: pair {p}: iterations {} vs {} (reference), converged {} vs {}, \
                 errors {e1:e} vs {e2:e}",
                got.iterations[p],
                want.iterations[p],
                got.converged[p],
                want.converged[p]
            );
            at_floor += 1;
        }
    }
    println!("{what}: {at_floor} pairs stopped differently at the f32 error floor");
}

#[test]
fn sinkhorn_matches_reference() {
    let Some((w, _)) = wgpu_backend() else {
        return;
    };
    let cap = w.context().tile_capacity() as usize;
    // The largest square pair that still fits the on-chip tile, and one that just does not.
    let side = (1..=512)
        .take_while(|&s| s * (s | 1) <= cap)
        .last()
        .unwrap_or(1);
    let mut shapes = vec![
        (3, 1, 1, 20),
        (2, 1, 9, 20),
        (2, 255, 3, 10),
        (2, 256, 5, 10),
        (2, 3, 257, 10),
        (2, 17, 29, 30),
        (2, side, side, 10),
        (2, side + 1, side + 1, 10),
        (2, 64, 64, 10),
        (2, 65, 128, 10),
        (1, 128, 129, 6),
        (2, 113, 203, 10),
        (1, 512, 512, 4),
        (4096, 3, 5, 6),
    ];
    shapes.dedup();
    // Every shape under each kernel setting: the register-blocked iterations take the pairs of
    // at most 128 × 128 support by default, the tile and streamed ones the rest and every pair
    // under `rows`.
    let settings = each_setting(&w);
    for (k, &(b, n, m, iters)) in shapes.iter().enumerate() {
        let pr = problem(100 + k as u64, b, n, m);
        let params = fixed(0.01, iters);
        let want = sinkhorn::solve(&CpuReference, &pr, &params).expect("reference");
        for (_, label, w) in &settings {
            let got = Backend::Wgpu(w.clone())
                .sinkhorn(&pr, &params)
                .expect("wgpu sinkhorn");
            check_solution(
                &format!("sinkhorn ({label}) eps=0.01 b={b} n={n} m={m} it={iters}"),
                &got,
                &want,
                params.threshold,
            );
        }
    }
}

#[test]
fn split_iterations_span_two_passes() {
    let Some((w, _)) = wgpu_backend() else {
        return;
    };
    if w.context().tile_capacity() as usize >= 129 * 101 {
        return; // the pair fits the tile there: no split to test
    }
    // 129 × 100 fits neither the blocked kernel nor (on ≤ 48 KiB devices) the tile: the split
    // half-iterations, 2,000 iterations between checks, recorded over two compute passes
    // (1,024 + 976).
    let split = Wgpu::with_context(Arc::new(
        WgpuContext::new()
            .expect("adapter found above")
            .with_split_large(true),
    ));
    let pr = problem(500, 1, 129, 100);
    // ε = 0.002: still moving after 1,024 iterations (checked below), so a pass that did not
    // run would show in the plan.
    let params = SinkhornParams {
        check_every: 2000,
        ..fixed(0.002, 2000)
    };
    let got = Backend::Wgpu(split).sinkhorn(&pr, &params).expect("split");
    let want = sinkhorn::solve(&CpuReference, &pr, &params).expect("reference");
    let fewer = SinkhornParams {
        max_iterations: 1024,
        check_every: 1024,
        ..params
    };
    let early = sinkhorn::solve(&CpuReference, &pr, &fewer).expect("reference");
    let moved = want
        .plan
        .iter()
        .zip(&early.plan)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(
        moved > 10.0 * PLAN_TOL,
        "iterations 1,025 to 2,000 must move the plan: {moved:e}"
    );
    assert_eq!(got.iterations, vec![2000]);
    check_solution("split 2000 iterations", &got, &want, params.threshold);
}

#[test]
fn sinkhorn_converges_like_reference() {
    let Some((_, backend)) = wgpu_backend() else {
        return;
    };
    let pr = problem(7, 4, 23, 31);
    let params = SinkhornParams {
        epsilon: 0.05,
        max_iterations: 2000,
        threshold: 1e-4,
        check_every: 5,
    };
    let got = backend.sinkhorn(&pr, &params).expect("wgpu sinkhorn");
    let want = sinkhorn::solve(&CpuReference, &pr, &params).expect("reference");
    println!(
        "iterations wgpu {:?} reference {:?}",
        got.iterations, want.iterations
    );
    assert!(got.converged.iter().all(|&c| c), "all pairs converge");
    compare("converged plan", &got.plan, &want.plan, PLAN_TOL, 1e-3);
}

/// The fused kernel `setting` must pick: the register-blocked one (`Blocked`) when it is
/// chosen and every pair has at most `BLOCKED_MAX_LEN` rows and columns, else the tile one
/// (`Rows`) when every pair's cost fits the tile, else none (the materialised path).
fn expected_fused(setting: SinkhornKernel, blocked: bool, tile: bool) -> Option<SinkhornKernel> {
    match setting {
        SinkhornKernel::Blocked if blocked => Some(SinkhornKernel::Blocked),
        _ if tile => Some(SinkhornKernel::Rows),
        _ => None,
    }
}

/// The backend with each Sinkhorn kernel setting, on its own context (the shared one runs
/// the default), and the default once more with the split half-iterations for large pairs
/// forced on (lavapipe, a CPU adapter, leaves them off by default).
fn each_setting(w: &Wgpu) -> Vec<(SinkhornKernel, &'static str, Wgpu)> {
    let new = |k: SinkhornKernel, split: bool| {
        let ctx = WgpuContext::new().expect("adapter found above");
        let split = split || ctx.split_large();
        Wgpu::with_context(Arc::new(
            ctx.with_sinkhorn_kernel(k).with_split_large(split),
        ))
    };
    let mut out = vec![(SinkhornKernel::default(), "blocked", w.clone())];
    if !w.context().split_large() {
        out.push((
            SinkhornKernel::Blocked,
            "blocked+split",
            new(SinkhornKernel::Blocked, true),
        ));
    }
    out.push((
        SinkhornKernel::Rows,
        "rows",
        new(SinkhornKernel::Rows, false),
    ));
    out
}

#[test]
fn fused_matches_reference() {
    let Some((w, _)) = wgpu_backend() else {
        return;
    };
    // The blocked kernel needs 24,592 B of workgroup memory: every adapter with 32 KiB (the
    // common limit, lavapipe's and Metal's) has it.
    let has_blocked = w.context().has_blocked_kernel();
    let limit = w.context().limits().max_compute_workgroup_storage_size;
    assert!(
        has_blocked || limit < 32768,
        "no blocked fused kernel with {limit} B of workgroup memory"
    );
    let cap = w.context().tile_capacity() as usize;
    let side = (1..=512)
        .take_while(|&s| s * (s | 1) <= cap)
        .last()
        .unwrap_or(1);
    let settings = each_setting(&w);
    for (k, &(b, n, m, d, iters)) in [
        (3, 1, 1, 5, 20),
        (2, 17, 29, 33, 30),
        (2, side, side, 16, 10),
        (2, side + 1, side + 1, 16, 10),
        // the blocked kernel's narrow grid (G = 8) up to 64 × 64, the wide one (G = 16) past it
        (2, 64, 64, 16, 8),
        (1, 65, 64, 16, 8),
        (1, BLOCKED_MAX_LEN, BLOCKED_MAX_LEN, 40, 8),
        (1, BLOCKED_MAX_LEN + 1, 20, 8, 6),
        (1, 113, 203, 24, 5),
        (1, 16, 8, 1024, 10),
        (4096, 4, 6, 8, 6),
    ]
    .iter()
    .enumerate()
    {
        let x = embeddings(200 + k as u64, b, n, d, true);
        let y = embeddings(300 + k as u64, b, m, d, true);
        // ε = 0.01 with a check every 3 iterations: the on-device checks and early exits run.
        let params = SinkhornParams {
            epsilon: 0.01,
            max_iterations: iters,
            threshold: 1e-5,
            check_every: 3,
        };
        let want = fused_reference(&x, &y, &params);
        let blocked =
            has_blocked && (0..b).all(|p| x.lengths()[p].max(y.lengths()[p]) <= BLOCKED_MAX_LEN);
        let tile = (0..b).all(|p| x.lengths()[p] * (y.lengths()[p] | 1) <= cap);
        for (setting, label, w) in &settings {
            let kernel = w.fused_kernel_for(&x, &y);
            println!("b={b} n={n} m={m}, {label}: fused kernel {kernel:?} (tile capacity {cap})");
            assert_eq!(kernel, expected_fused(*setting, blocked, tile));
            let direct = w.sinkhorn_embeddings(&x, &y, &params).expect("fused");
            assert_eq!(direct.is_some(), kernel.is_some(), "a fused kernel runs");
            let got = Backend::Wgpu(w.clone())
                .sinkhorn_embeddings(&x, &y, &params)
                .expect("wgpu sinkhorn_embeddings");
            check_solution(
                &format!("fused ({label}: {kernel:?}) eps=0.01 b={b} n={n} m={m} d={d} it={iters}"),
                &got,
                &want,
                params.threshold,
            );
        }
    }
}

#[test]
fn fused_blocked_pads_beyond_its_grid() {
    let Some((w, backend)) = wgpu_backend() else {
        return;
    };
    if !w.context().has_blocked_kernel() {
        return; // fused_matches_reference says why.
    }
    // Padded to 150 × 140 (beyond the blocked kernel's 128 × 128 grid) with every pair's
    // support inside it: the blocked kernel runs, and the plan, f and g past the grid must
    // come back as padding zeros.
    let (b, n, m, d) = (3, 150, 140, 12);
    let mut rng = SplitMix64::new(77);
    let x = Embeddings::new(
        "x",
        b,
        n,
        d,
        rng.normals_f32(b * n * d),
        Some(vec![128, 7, 1]),
    )
    .expect("valid");
    let y = Embeddings::new(
        "y",
        b,
        m,
        d,
        rng.normals_f32(b * m * d),
        Some(vec![100, 128, 1]),
    )
    .expect("valid");
    assert_eq!(w.fused_kernel_for(&x, &y), Some(SinkhornKernel::Blocked));
    let params = SinkhornParams {
        epsilon: 0.02,
        max_iterations: 40,
        threshold: 1e-5,
        check_every: 4,
    };
    let got = backend
        .sinkhorn_embeddings(&x, &y, &params)
        .expect("blocked fused");
    let want = fused_reference(&x, &y, &params);
    check_solution("blocked, padded 150 × 140", &got, &want, params.threshold);
    for p in 0..b {
        for i in 0..n {
            for j in 0..m {
                if i >= x.lengths()[p] || j >= y.lengths()[p] {
                    assert_eq!(got.plan[(p * n + i) * m + j], 0.0, "padding of pair {p}");
                }
            }
        }
    }
}

#[test]
fn fused_resumes_across_dispatches() {
    let Some((w, backend)) = wgpu_backend() else {
        return;
    };
    // 1,100 iterations with no early exit: the fused solve spans several dispatches (512
    // iterations each), rebuilding the tile and resuming from the stored potentials. At
    // 17×29 and ε = 0.001 Sinkhorn is still far from converged after 1,100 iterations (the
    // reference's error is checked below), so no pair can stop early on an f32 error of
    // exactly 0, as the pairs of a 5×7 problem at ε = 0.01 did (after 133 to 182 iterations
    // on lavapipe and on an H200's Vulkan driver).
    let x = embeddings(400, 2, 17, 8, true);
    let y = embeddings(401, 2, 29, 8, true);
    let params = fixed(0.001, 1100);
    assert!(w
        .sinkhorn_embeddings(&x, &y, &params)
        .expect("fused")
        .is_some());
    let got = backend.sinkhorn_embeddings(&x, &y, &params).expect("fused");
    let want = fused_reference(&x, &y, &params);
    println!(
        "iterations: {:?}, errors {:?} (reference {:?})",
        got.iterations, got.marginal_error, want.marginal_error
    );
    assert!(
        want.marginal_error
            .iter()
            .all(|&e| e > 1e3 * F32_ERROR_FLOOR),
        "the problem must stay far from converged: reference errors {:?}",
        want.marginal_error
    );
    assert_eq!(
        got.iterations,
        vec![1100, 1100],
        "every pair runs through three dispatches"
    );
    check_solution("fused 1100 iterations", &got, &want, params.threshold);
}

/// Mesa's llvmpipe (lavapipe) ends every loop of a shader invocation once its loops have
/// made 65,535 passes in all, silently. Each case here made one dispatch pass that cap before
/// the backend split its dispatches by the kernels' pass estimates, and returned a wrong
/// plan with exit 0 (or, for the last, a NaN error): long iterations of row-kernel pairs
/// (fused and from a cost), thousands of register-blocked iterations in one dispatch, and a
/// cost build over 8,192 dimensions. On adapters without the cap the same cases must pass.
#[test]
fn long_dispatches_stay_within_the_loop_cap() {
    let Some((w, backend)) = wgpu_backend() else {
        return;
    };
    let cap = w.context().loop_pass_cap();
    println!("loop pass cap: {cap:?} ({})", w.context().adapter_name());
    let once = |iterations: usize| SinkhornParams {
        epsilon: 0.02,
        max_iterations: iterations,
        threshold: 0.0,
        check_every: iterations,
    };
    // Fused, row kernels (500 rows do not fit the blocked grid): ~540 passes an iteration.
    // Fused, register-blocked: ~21 passes an iteration.
    for (label, (n, m, d), iterations) in [
        ("fused rows 500x10", (500, 10, 8), 3000),
        ("fused blocked 2x3", (2, 3, 3), 4000),
    ] {
        let x = embeddings(700, 1, n, d, false);
        let y = embeddings(701, 1, m, d, false);
        let params = once(iterations);
        let got = backend.sinkhorn_embeddings(&x, &y, &params).expect(label);
        let want = fused_reference(&x, &y, &params);
        assert_eq!(got.iterations, vec![iterations as u32], "{label}");
        check_solution(label, &got, &want, params.threshold);
    }
    // From a cost, streamed (200 x 150 does not fit the tile): ~370 passes an iteration.
    let pr = problem(702, 1, 200, 150);
    let params = once(300);
    let got = backend.sinkhorn(&pr, &params).expect("streamed");
    let want = sinkhorn::solve(&CpuReference, &pr, &params).expect("reference");
    check_solution("streamed 200x150, 300 iterations", &got, &want, 0.0);
    // A 128 x 128 pair at d = 8192: the blocked cost build alone is past the cap, so on
    // llvmpipe the fused kernels decline it and the materialised path solves it.
    let x = embeddings(703, 1, 128, 8192, false);
    let y = embeddings(704, 1, 128, 8192, false);
    let params = once(16);
    let fused = w
        .sinkhorn_embeddings(&x, &y, &params)
        .expect("fused or not");
    if cap.is_some() {
        assert!(
            fused.is_none(),
            "the fused kernels must decline d = 8192 on llvmpipe"
        );
    }
    let got = backend
        .sinkhorn_embeddings(&x, &y, &params)
        .expect("d = 8192");
    check_solution("d = 8192", &got, &fused_reference(&x, &y, &params), 0.0);
}

/// The cost and MaxSim kernels loop over the dimensions (and MaxSim over the tokens) in one
/// invocation: on llvmpipe, past its loop cap, they returned wrong values with exit 0 (a
/// cost at d = 140,000; MaxSim of 32 query tokens against a document of 8,000 at d = 1,024
/// gave 0.108 instead of 3.79). Now such calls are refused there, and calls just inside
/// still match the reference.
#[test]
fn long_loops_match_reference_or_are_refused() {
    let Some((w, _)) = wgpu_backend() else {
        return;
    };
    let capped = w.context().loop_pass_cap().is_some();
    let pair = |d: usize, seed: u64| {
        let mut rng = SplitMix64::new(seed);
        let rows = |rng: &mut SplitMix64, n: usize| {
            Embeddings::new("test", 1, n, d, rng.normals_f32(n * d), None).expect("valid")
        };
        (rows(&mut rng, 2), rows(&mut rng, 3))
    };
    let (x, y) = pair(60_000, 800);
    let got = w.cosine_cost(&x, &y).expect("d = 60000");
    let want = CpuReference.cosine_cost(&x, &y).expect("reference");
    compare(
        "cost d=60000",
        &widen(&got.data),
        &widen(&want.data),
        1e-6,
        1.0,
    );
    let (x, y) = pair(70_000, 801);
    match w.cosine_cost(&x, &y) {
        Err(e) if capped => assert!(e.to_string().contains("d = 70000"), "{e}"),
        Err(e) => panic!("refused without a loop cap: {e}"),
        Ok(got) if !capped => {
            let want = CpuReference.cosine_cost(&x, &y).expect("reference");
            compare(
                "cost d=70000",
                &widen(&got.data),
                &widen(&want.data),
                1e-6,
                1.0,
            );
        }
        Ok(_) => panic!("d = 70000 must be refused on llvmpipe"),
    }
    let d = 1024;
    let q = embeddings(802, 1, 32, d, false);
    // The 16 x 16 MaxSim kernel makes more passes per token: its own bound, just inside and
    // just outside (1,152 document tokens for this query at d = 1024 on llvmpipe).
    let tile = Wgpu::with_context(Arc::new(
        WgpuContext::new()
            .expect("adapter found above")
            .with_maxsim_tiling(MaxsimTiling::Tile),
    ));
    for (kernel, w, seed, inside, outside) in [
        ("maxsim", &w, 803, 2000, 8000),
        ("tile maxsim", &tile, 804, 1100, 1200),
    ] {
        for (doc, refused) in [(inside, false), (outside, capped)] {
            let mut rng = SplitMix64::new(seed);
            let docs =
                PackedDocs::new("docs", d, rng.normals_f32(doc * d), vec![doc]).expect("valid");
            match w.maxsim(&q, &docs) {
                Err(e) if refused => {
                    assert!(
                        e.to_string().contains(&format!("a document of {doc}")),
                        "{e}"
                    )
                }
                Err(e) => panic!("{kernel} against {doc} tokens: {e}"),
                Ok(_) if refused => panic!("{kernel} against {doc} tokens must be refused"),
                Ok(got) => {
                    let want = CpuReference.maxsim(&q, &docs).expect("reference");
                    compare(
                        &format!("{kernel} vs {doc} tokens"),
                        &widen(&got),
                        &widen(&want),
                        3.2e-5,
                        1.0,
                    );
                }
            }
        }
    }
}

/// The fused kernels take ε as an f32: ε = 1e39 became infinite there and the solve failed
/// with "ε is too small". Such an ε now takes the materialised path, as on the CPU.
#[test]
fn an_epsilon_beyond_f32_takes_the_materialised_path() {
    let Some((w, backend)) = wgpu_backend() else {
        return;
    };
    let x = embeddings(900, 2, 5, 8, true);
    let y = embeddings(901, 2, 7, 8, true);
    let params = SinkhornParams {
        epsilon: 1e39,
        max_iterations: 20,
        threshold: 1e-6,
        check_every: 5,
    };
    assert!(w
        .sinkhorn_embeddings(&x, &y, &params)
        .expect("declined, not failed")
        .is_none());
    let got = backend
        .sinkhorn_embeddings(&x, &y, &params)
        .expect("ε = 1e39");
    let want = fused_reference(&x, &y, &params);
    // The plan and cost; the potentials are only defined up to a constant (f + c, g − c),
    // which at this ε the backends pick differently.
    compare("ε = 1e39 plan", &got.plan, &want.plan, PLAN_TOL, 1e-3);
    compare("ε = 1e39 cost", &got.cost, &want.cost, 1e-4, 1.0);
}

#[test]
fn device_timing_refuses_bad_jobs() {
    let Some((_, backend)) = wgpu_backend() else {
        return;
    };
    common::device_timing_refuses_bad_jobs(&backend);
}

#[test]
fn padding_values_change_nothing() {
    let Some((_, backend)) = wgpu_backend() else {
        return;
    };
    common::padding_values_change_nothing(&backend);
}

/// The wgpu backend's own entry point checks what `Backend` checks: mismatched batches,
/// dimensions and parameters are errors naming them, before any dispatch.
#[test]
fn fused_entry_point_refuses_bad_input() {
    let Some((w, _)) = wgpu_backend() else {
        return;
    };
    let x = embeddings(910, 2, 5, 8, true);
    let good = SinkhornParams {
        epsilon: 0.05,
        max_iterations: 20,
        threshold: 1e-6,
        check_every: 5,
    };
    let cases = [
        (
            embeddings(911, 3, 7, 8, true),
            good,
            "batch size 2 to match x",
        ),
        (
            embeddings(912, 2, 7, 9, true),
            good,
            "embedding dimension 8 to match x",
        ),
        (
            embeddings(913, 2, 7, 8, true),
            SinkhornParams {
                epsilon: f64::NAN,
                ..good
            },
            "epsilon",
        ),
        (
            embeddings(914, 2, 7, 8, true),
            SinkhornParams {
                epsilon: 1e-300,
                ..good
            },
            "for costs up to 2.000e0",
        ),
    ];
    for (y, params, want) in cases {
        let err = w
            .sinkhorn_embeddings(&x, &y, &params)
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "expected {want:?} in {err}");
    }
}

#[test]
fn results_are_bit_identical_across_runs() {
    let Some((w, backend)) = wgpu_backend() else {
        return;
    };
    let x = embeddings(1, 3, 37, 40, true);
    let y = embeddings(2, 3, 45, 40, true);
    let c1 = w.cosine_cost(&x, &y).expect("cost");
    let c2 = w.cosine_cost(&x, &y).expect("cost");
    assert!(c1
        .data
        .iter()
        .zip(&c2.data)
        .all(|(a, b)| a.to_bits() == b.to_bits()));

    let docs = PackedDocs::new("docs", 40, y.data().to_vec(), vec![45, 45, 45]).expect("docs");
    let s1 = w.maxsim(&x, &docs).expect("maxsim");
    let s2 = w.maxsim(&x, &docs).expect("maxsim");
    assert!(s1.iter().zip(&s2).all(|(a, b)| a.to_bits() == b.to_bits()));

    let params = fixed(0.01, 25);
    let pr = problem(3, 3, 40, 50);
    let r1 = backend.sinkhorn(&pr, &params).expect("sinkhorn");
    let r2 = backend.sinkhorn(&pr, &params).expect("sinkhorn");
    let same = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(u, v)| u.to_bits() == v.to_bits());
    assert!(same(&r1.plan, &r2.plan) && same(&r1.f, &r2.f) && same(&r1.g, &r2.g));

    let e1 = backend.sinkhorn_embeddings(&x, &y, &params).expect("fused");
    let e2 = backend.sinkhorn_embeddings(&x, &y, &params).expect("fused");
    assert!(same(&e1.plan, &e2.plan) && same(&e1.cost, &e2.cost));
    assert_eq!(e1.marginal_error, e2.marginal_error);
}

#[test]
fn chunked_batches_match_unchunked() {
    let Some((w, backend)) = wgpu_backend() else {
        return;
    };
    // Same adapter, but batches cut so that one binding holds at most 4 KiB.
    let small = WgpuContext::new()
        .expect("adapter found above")
        .with_binding_limit(4096);
    let ws = Wgpu::with_context(Arc::new(small));
    let bs = Backend::Wgpu(ws.clone());
    let same = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(u, v)| u.to_bits() == v.to_bits());

    // 12 pairs of 9 × 10 × 8: one pair's x is 288 B, its cost 360 B → chunks of ≤ 11 pairs.
    let x = embeddings(50, 12, 9, 8, true);
    let y = embeddings(51, 12, 10, 8, true);
    let c1 = w.cosine_cost(&x, &y).expect("cost");
    let c2 = ws.cosine_cost(&x, &y).expect("chunked cost");
    assert_eq!(c1.data, c2.data);

    // 40 documents of up to 30 tokens × 8 dims: several document chunks.
    let mut rng = SplitMix64::new(52);
    let lengths: Vec<usize> = (0..40).map(|_| rng.range(1, 30)).collect();
    let total: usize = lengths.iter().sum();
    let docs = PackedDocs::new("docs", 8, rng.normals_f32(total * 8), lengths).expect("docs");
    let s1 = w.maxsim(&x, &docs).expect("maxsim");
    let s2 = ws.maxsim(&x, &docs).expect("chunked maxsim");
    assert_eq!(s1, s2);
    // 200 one-token documents: 9.6 KB of scores for the 12 queries, cut by their binding
    // (85 documents of scores per chunk), not by tokens (128 per chunk).
    let one = PackedDocs::new("docs", 8, rng.normals_f32(200 * 8), vec![1; 200]).expect("docs");
    assert_eq!(
        w.maxsim(&x, &one).expect("maxsim"),
        ws.maxsim(&x, &one).expect("chunked maxsim")
    );

    let pr = problem(53, 12, 9, 10);
    let params = SinkhornParams {
        epsilon: 0.01,
        max_iterations: 40,
        threshold: 1e-4,
        check_every: 4,
    };
    let r1 = backend.sinkhorn(&pr, &params).expect("sinkhorn");
    let r2 = bs.sinkhorn(&pr, &params).expect("chunked sinkhorn");
    assert!(same(&r1.plan, &r2.plan) && same(&r1.f, &r2.f) && same(&r1.g, &r2.g));
    assert_eq!(r1.iterations, r2.iterations);

    let e1 = backend.sinkhorn_embeddings(&x, &y, &params).expect("fused");
    let e2 = bs
        .sinkhorn_embeddings(&x, &y, &params)
        .expect("chunked fused");
    assert!(same(&e1.plan, &e2.plan) && same(&e1.f, &e2.f) && same(&e1.g, &e2.g));
    assert_eq!(e1.iterations, e2.iterations);

    // One pair larger than a binding: an error, not a truncated answer.
    let big = problem(54, 1, 40, 40);
    let err = bs
        .sinkhorn(&big, &params)
        .expect_err("a pair exceeds the binding");
    println!("{err}");
}

#[test]
fn beyond_limits_is_an_error() {
    let Some((w, backend)) = wgpu_backend() else {
        return;
    };
    // The split half-iterations take any pair up to 65,535 workgroups of 16 lines, and on
    // llvmpipe lines of at most 16 lanes × its loop passes per shader.
    let pr = problem(5, 1, 65535 * 16 + 1, 1);
    let err = backend
        .sinkhorn(&pr, &fixed(0.1, 1))
        .expect_err("n = 1,048,561 exceeds the split's grid");
    println!("{err}");
    let limit = match w.context().loop_pass_cap() {
        Some(_) => "785392",
        None => "1048560",
    };
    assert!(
        err.to_string().contains(limit) && err.to_string().contains("1048561"),
        "{err}"
    );
}

#[test]
fn sinkhorn_beyond_512_runs_split() {
    let Some((w, _)) = wgpu_backend() else {
        return;
    };
    // More than MAX_N (512) rows or columns: only the split half-iterations take them, under
    // every setting and on CPU adapters too, with the other side's potentials read from
    // global memory (600 columns) or staged (37 columns), and the convergence check reading
    // G from global memory when there are more than 512 columns.
    for (k, &(b, n, m)) in [(2, 600, 37), (2, 40, 700)].iter().enumerate() {
        let pr = problem(400 + k as u64, b, n, m);
        let params = fixed(0.05, 12);
        let want = sinkhorn::solve(&CpuReference, &pr, &params).expect("reference");
        for (_, label, w) in &each_setting(&w) {
            let got = Backend::Wgpu(w.clone())
                .sinkhorn(&pr, &params)
                .expect("wgpu sinkhorn");
            // check_solution compares the check's own value too (the split's per-row terms
            // and their sums; G read from global memory beyond 512 columns).
            let what = format!("sinkhorn ({label}) b={b} n={n} m={m}");
            check_solution(&what, &got, &want, params.threshold);
        }
    }
    // Fused: n = 600 does not take a fused kernel (they keep a pair in one workgroup); the
    // materialised path (cost kernel, then the split) solves it.
    let x = embeddings(6, 2, 600, 4, true);
    let y = embeddings(7, 2, 3, 4, true);
    let params = fixed(0.1, 5);
    let fused = w
        .sinkhorn_embeddings(&x, &y, &params)
        .expect("too large for the fused kernel: no result, no error");
    assert!(fused.is_none(), "n = 600 must not take the fused kernel");
    let got = Backend::Wgpu(w.clone())
        .sinkhorn_embeddings(&x, &y, &params)
        .expect("materialised path");
    let want = fused_reference(&x, &y, &params);
    check_solution("fused fallback n=600", &got, &want, params.threshold);
}

/// Device-only timing with GPU pass timestamps: every job type (including the Sinkhorn
/// iterations, which submit without a read-back) gives a positive time in seconds, no
/// more than the host measured around the same call, and timing leaves results unchanged.
/// lavapipe writes timestamps, so CI always runs this; adapters without them must answer
/// `None`.
#[test]
fn pass_timestamps_time_every_job() {
    use optical::backend::DeviceJob;
    let Some((w, backend)) = wgpu_backend() else {
        return;
    };
    let ctx = w.context().clone();
    if !ctx.has_timestamps() {
        assert!(
            !ctx.adapter_name().contains("llvmpipe"),
            "lavapipe writes timestamps: the timer must be enabled there"
        );
        let x = embeddings(600, 2, 3, 8, false);
        assert!(backend
            .device_seconds(DeviceJob::CosineCost(&x, &x), 0.0)
            .unwrap()
            .is_none());
        return;
    }

    let x = embeddings(601, 3, 17, 40, true);
    let y = embeddings(602, 3, 29, 40, true);
    let plain = backend.cosine_cost(&x, &y).unwrap();
    let start = std::time::Instant::now();
    let (timed, seconds) = ctx
        .time_passes(|| backend.cosine_cost(&x, &y))
        .unwrap()
        .expect("timestamps");
    let host = start.elapsed().as_secs_f64();
    assert_eq!(plain.data, timed.data, "timing changed the result");
    assert!(
        seconds > 0.0 && seconds <= host,
        "cosine cost: {seconds} s on the device, {host} s on the host"
    );

    let params = fixed(0.05, 20);
    let pr = problem(603, 3, 17, 29);
    let (q, docs) = {
        let q = embeddings(604, 2, 5, 16, true);
        let mut rng = SplitMix64::new(605);
        let docs = PackedDocs::new("t", 16, rng.normals_f32(7 * 16), vec![3, 1, 3]).unwrap();
        (q, docs)
    };
    let jobs = [
        ("cosine cost", DeviceJob::CosineCost(&x, &y)),
        ("maxsim", DeviceJob::Maxsim(&q, &docs)),
        ("sinkhorn", DeviceJob::Sinkhorn(&pr, &params)),
        ("fused", DeviceJob::SinkhornFused(&x, &y, &params)),
    ];
    for (what, job) in jobs {
        let (s, calls) = backend
            .device_seconds(job, 0.0)
            .unwrap()
            .unwrap_or_else(|| panic!("{what}: no device time"));
        println!("{what}: {s:.3e} s on the device (median of {calls})");
        assert!(s > 0.0 && s.is_finite(), "{what}: {s}");
        assert!(calls >= 3, "{what}: {calls} calls");
    }
}

/// The solver's stopping rule on the device (`shaders/sinkhorn_retire.wgsl`, the default)
/// decides exactly as the host does after every check: the same iterations, convergence
/// flags, errors, potentials and plans, bit for bit, for pairs that stop at different
/// checks or never, a last interval cut short by `max_iterations`, batches cut into chunks,
/// the split half-iterations, schedules of more than 32 checks, and pairs whose error turns
/// NaN (the same error).
#[test]
fn device_checks_decide_as_host_checks() {
    use optical::backend::wgpu::{BlockedLse, SolverChecks};
    use optical::ot::sinkhorn::SinkhornKernels;
    // `auto`: on the device on GPU adapters, on the host on CPU ones (lavapipe).
    for (kind, want) in [
        (wgpu::DeviceType::Cpu, SolverChecks::Host),
        (wgpu::DeviceType::DiscreteGpu, SolverChecks::Device),
        (wgpu::DeviceType::IntegratedGpu, SolverChecks::Device),
    ] {
        assert_eq!(SolverChecks::Auto.resolve(kind), want, "{kind:?}");
        assert_eq!(SolverChecks::Host.resolve(kind), SolverChecks::Host);
        assert_eq!(SolverChecks::Device.resolve(kind), SolverChecks::Device);
    }
    if wgpu_backend().is_none() {
        return;
    }
    let with = |checks: SolverChecks, limit: Option<u64>, split: bool| {
        let mut ctx = WgpuContext::new().expect("adapter found above");
        if let Some(bytes) = limit {
            ctx = ctx.with_binding_limit(bytes);
        }
        let split = split || ctx.split_large();
        Wgpu::with_context(Arc::new(
            ctx.with_solver_checks(checks).with_split_large(split),
        ))
    };
    let params = |epsilon, threshold, check_every, max_iterations| SinkhornParams {
        epsilon,
        max_iterations,
        threshold,
        check_every,
    };
    let cases = [
        (
            "pairs stop at different checks",
            problem(60, 6, 23, 31),
            params(0.05, 1e-4, 3, 400),
            None,
            false,
        ),
        (
            "last interval cut short",
            problem(61, 4, 17, 29),
            params(0.05, 1e-6, 7, 100),
            None,
            false,
        ),
        (
            "one check per iteration",
            problem(62, 3, 9, 12),
            params(0.05, 1e-5, 1, 120),
            None,
            false,
        ),
        (
            "batches in chunks",
            problem(63, 12, 9, 10),
            params(0.05, 1e-3, 4, 40),
            Some(4096),
            false,
        ),
        (
            // On llvmpipe a check interval of 1,600 blocked iterations takes two dispatches
            // of different lengths (its loop cap allows ≈ 1,500 per dispatch): two params
            // values per round, so one submission each.
            "two dispatches per interval",
            problem(66, 2, 9, 12),
            params(0.0005, 0.0, 1600, 3300),
            None,
            false,
        ),
        (
            "split half-iterations",
            problem(64, 2, 600, 37),
            params(0.05, 1e-3, 2, 30),
            None,
            true,
        ),
    ];
    for (what, pr, params, limit, split) in cases {
        let host = Backend::Wgpu(with(SolverChecks::Host, limit, split))
            .sinkhorn(&pr, &params)
            .expect("host checks");
        let device = Backend::Wgpu(with(SolverChecks::Device, limit, split))
            .sinkhorn(&pr, &params)
            .expect("device checks");
        common::assert_same_solution(what, &host, &device);
    }
    // The other kernels the device checks meet on GPU adapters (lavapipe takes the host
    // checks by default, so only these cases run them there): the blocked kernel's wide
    // grid, the row kernel with K in the tile and streamed (past lavapipe's tile), and the
    // blocked log-sum-exps shifted by the potentials at a small ε.
    let kernels = [
        (
            "blocked, wide grid",
            problem(67, 2, 65, 128),
            params(0.05, 1e-4, 3, 60),
            None,
        ),
        (
            "rows, K in the tile",
            problem(68, 2, 255, 3),
            params(0.05, 1e-4, 3, 60),
            Some(SinkhornKernel::Rows),
        ),
        (
            "rows, K streamed",
            problem(69, 1, 128, 129),
            params(0.05, 1e-4, 3, 30),
            Some(SinkhornKernel::Rows),
        ),
        (
            "blocked, shifted sums",
            problem(70, 2, 113, 120),
            params(0.002, 1e-4, 3, 60),
            None,
        ),
    ];
    for (what, pr, params, kernel) in kernels {
        let run = |checks: SolverChecks| {
            let mut ctx = WgpuContext::new()
                .expect("adapter found above")
                .with_solver_checks(checks);
            ctx = match kernel {
                Some(k) => ctx.with_sinkhorn_kernel(k),
                None => ctx.with_blocked_lse(if what.contains("shifted") {
                    BlockedLse::Shifted
                } else {
                    BlockedLse::Max
                }),
            };
            Backend::Wgpu(Wgpu::with_context(Arc::new(ctx)))
                .sinkhorn(&pr, &params)
                .expect(what)
        };
        common::assert_same_solution(what, &run(SolverChecks::Host), &run(SolverChecks::Device));
    }

    // The first case must stop its pairs at different checks, or it tests little.
    let pr = problem(60, 6, 23, 31);
    let p = params(0.05, 1e-4, 3, 400);
    let out = Backend::Wgpu(with(SolverChecks::Host, None, false))
        .sinkhorn(&pr, &p)
        .expect("host checks");
    let distinct: std::collections::BTreeSet<_> = out.iterations.iter().collect();
    assert!(
        distinct.len() > 2 && out.converged.iter().all(|&c| c),
        "{out:?}"
    );

    // The primitive itself: one call runs every round asked (a read-back for all of them)
    // and reports the checks each pair took part in.
    let w = with(SolverChecks::Device, None, false);
    let mut state = w.prepare(&pr, p.epsilon).expect("prepare");
    let active = vec![true; pr.pairs()];
    let rounds = w
        .iterate_checked(&mut state, &active, &[3; 40], p.threshold)
        .expect("rounds")
        .expect("device checks are on");
    assert_eq!(rounds.rounds, 40);
    for (k, c) in rounds.pairs.iter().enumerate() {
        let want = (out.iterations[k] / 3) as usize;
        assert_eq!(c.checks, want, "pair {k}: {c:?}");
    }
    let host = with(SolverChecks::Host, None, false);
    let mut state = host.prepare(&pr, p.epsilon).expect("prepare");
    assert!(host
        .iterate_checked(&mut state, &active, &[3; 4], p.threshold)
        .expect("no rounds")
        .is_none());

    // ε far too small: the errors turn NaN or infinite; both stop the pair at the same
    // check and fail naming it. (The backend refuses such an ε before it solves, so the
    // solver is driven directly.)
    let pr = problem(65, 2, 5, 6);
    let tiny = params(1e-300, 1e-6, 2, 20);
    let refused = Backend::Wgpu(with(SolverChecks::Device, None, false))
        .sinkhorn(&pr, &tiny)
        .expect_err("refused")
        .to_string();
    assert!(
        refused.contains("epsilon") && refused.contains("1e-300"),
        "{refused}"
    );
    let e_host = sinkhorn::solve(&with(SolverChecks::Host, None, false), &pr, &tiny)
        .expect_err("not finite")
        .to_string();
    let e_device = sinkhorn::solve(&with(SolverChecks::Device, None, false), &pr, &tiny)
        .expect_err("not finite")
        .to_string();
    assert_eq!(e_host, e_device);
    assert!(e_host.contains("expected a finite solution"), "{e_host}");
}

/// `OPTICAL_WGPU_LSE=shifted`: the blocked kernels' log-sum-exps shifted by the line's current
/// potential (the fast path of `shaders/blocked_lse.wgsl`), against the f64 reference, on
/// lines long enough to take it and too short to, at ε where every half-iteration stays in
/// the fast path and where the early ones fall back (0.002: the first sums leave their range);
/// bit-identical from run to run (a first fused dispatch must not take its shift from the
/// uninitialised potentials); and different in its bits from `max`, so the fast path did run.
#[test]
fn shifted_lse_matches_reference() {
    use optical::backend::wgpu::BlockedLse;
    let Some((w, _)) = wgpu_backend() else {
        return;
    };
    if !w.context().has_blocked_kernel() {
        return;
    }
    let with = |lse: BlockedLse| {
        let ctx = WgpuContext::new().expect("adapter found above");
        Backend::Wgpu(Wgpu::with_context(Arc::new(ctx.with_blocked_lse(lse))))
    };
    let (shifted, max) = (with(BlockedLse::Shifted), with(BlockedLse::Max));
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let mut differs = 0;
    for (k, &(b, n, m, eps, iters)) in [
        (3, 1, 1, 0.01, 20),
        (2, 9, 40, 0.05, 20),
        (2, 17, 29, 0.01, 30),
        (2, 64, 64, 0.05, 30),
        (2, 65, 128, 0.01, 10),
        (1, 128, 128, 0.05, 40),
        (2, 113, 120, 0.002, 60),
    ]
    .iter()
    .enumerate()
    {
        let pr = problem(900 + k as u64, b, n, m);
        let params = SinkhornParams {
            epsilon: eps,
            max_iterations: iters,
            threshold: 1e-5,
            check_every: 4,
        };
        let want = sinkhorn::solve(&CpuReference, &pr, &params).expect("reference");
        let got = shifted.sinkhorn(&pr, &params).expect("shifted");
        let what = format!("shifted eps={eps} b={b} n={n} m={m}");
        check_solution(&what, &got, &want, params.threshold);
        let again = shifted.sinkhorn(&pr, &params).expect("shifted");
        assert_eq!(bits(&got.f), bits(&again.f), "{what}: not deterministic");
        assert_eq!(
            bits(&got.plan),
            bits(&again.plan),
            "{what}: not deterministic"
        );
        let other = max.sinkhorn(&pr, &params).expect("max");
        if bits(&got.f) != bits(&other.f) {
            differs += 1;
        }
    }
    for (k, &(b, n, m, d, eps, iters)) in [
        (3, 1, 1, 5, 0.01, 20),
        (2, 17, 29, 33, 0.01, 30),
        (3, 37, 45, 40, 0.01, 25),
        (1, BLOCKED_MAX_LEN, BLOCKED_MAX_LEN, 40, 0.05, 30),
        (2, 100, 90, 24, 0.002, 40),
    ]
    .iter()
    .enumerate()
    {
        let x = embeddings(950 + k as u64, b, n, d, true);
        let y = embeddings(960 + k as u64, b, m, d, true);
        let params = SinkhornParams {
            epsilon: eps,
            max_iterations: iters,
            threshold: 1e-5,
            check_every: 3,
        };
        let want = fused_reference(&x, &y, &params);
        let what = format!("fused shifted eps={eps} b={b} n={n} m={m} d={d}");
        let got = shifted.sinkhorn_embeddings(&x, &y, &params).expect("fused");
        check_solution(&what, &got, &want, params.threshold);
        let again = shifted.sinkhorn_embeddings(&x, &y, &params).expect("fused");
        assert_eq!(
            bits(&got.plan),
            bits(&again.plan),
            "{what}: not deterministic"
        );
        assert_eq!(got.marginal_error, again.marginal_error, "{what}");
        let other = max.sinkhorn_embeddings(&x, &y, &params).expect("max");
        if bits(&got.f) != bits(&other.f) {
            differs += 1;
        }
    }
    assert!(
        differs >= 6,
        "only {differs} of 12 cases differ in their bits from `max`: the fast path did not run"
    );
    // One long dispatch where the early half-iterations run both paths: within llvmpipe's
    // loop cap (the pass estimate of `shifted`), and still the reference's solution.
    let x = embeddings(970, 1, 40, 8, false);
    let y = embeddings(971, 1, 36, 8, false);
    let params = fixed(0.001, 1500);
    let got = shifted.sinkhorn_embeddings(&x, &y, &params).expect("long");
    assert_eq!(got.iterations, vec![1500]);
    check_solution(
        "fused shifted, 1500 iterations",
        &got,
        &fused_reference(&x, &y, &params),
        0.0,
    );
}
