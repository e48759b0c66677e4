//! Criterion benches of the WGSL kernels on the standard problems of `optical::bench`
//! (the same problems as `optical bench --backend wgpu`). Every call reads its result back,
//! so the device is synchronised before the clock stops.
//!
//! Without an adapter the benches exit with an error (set `OPTICAL_WGPU_ADAPTER` to pick one).

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use optical::backend::wgpu::{SolverChecks, Wgpu, WgpuContext};
use optical::backend::{Backend, BackendKind};
use optical::bench;

fn kernels(c: &mut Criterion) {
    let backend = match Backend::new(BackendKind::Wgpu) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("wgpu benches need an adapter: {e}");
            std::process::exit(1);
        }
    };
    if let Backend::Wgpu(w) = &backend {
        eprintln!(
            "adapter: {} (Sinkhorn tile capacity {} f32)",
            w.context().adapter_name(),
            w.context().tile_capacity()
        );
    }
    let name = "wgpu";

    let (b, n, m, d) = (64usize, 128usize, 128usize, 384usize);
    let x = bench::embeddings(1, b, n, d);
    let y = bench::embeddings(2, b, m, d);
    let mut g = c.benchmark_group("cosine-cost");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(
        (4 * (b * n * d + b * m * d + b * n * m)) as u64,
    ));
    g.bench_function(format!("{name}/b{b}_n{n}_m{m}_d{d}"), |bench| {
        bench.iter(|| backend.cosine_cost(&x, &y).expect("valid"))
    });
    g.finish();

    let (q, docs) = bench::maxsim_problem();
    let mut g = c.benchmark_group("maxsim");
    g.sample_size(10);
    g.throughput(Throughput::Bytes((4 * docs.data.len()) as u64));
    g.bench_function(
        format!("{name}/q{}x{}_docs{}", q.b, q.n, docs.len()),
        |bench| bench.iter(|| backend.maxsim(&q, &docs).expect("valid")),
    );
    g.finish();

    let mut g = c.benchmark_group("sinkhorn");
    g.sample_size(10);
    for (b, n, iters) in [(64usize, 128usize, 200usize), (4, 512, 100)] {
        let problem = bench::sinkhorn_problem(b, n, n, 64);
        let params = bench::fixed_iterations(0.05, iters);
        // Elements = exponentials evaluated (two reductions per iteration).
        g.throughput(Throughput::Elements((2 * b * n * n * iters) as u64));
        g.bench_function(format!("{name}/b{b}_n{n}_it{iters}"), |bench| {
            bench.iter(|| backend.sinkhorn(&problem, &params).expect("valid"))
        });
    }
    g.finish();

    // A distillation step's OT: many convergence checks, each a read-back when the host
    // checks; the stopping rule on the device reads back after 1, 2, 4, ... 32 checks.
    let mut g = c.benchmark_group("sinkhorn-checks");
    g.sample_size(10);
    let (b, n) = (16usize, 32usize);
    let problem = bench::sinkhorn_problem(b, n, n, 384);
    let params = bench::checks_params();
    let iterations: usize = backend
        .sinkhorn(&problem, &params)
        .expect("valid")
        .iterations
        .iter()
        .map(|&i| i as usize)
        .sum();
    g.throughput(Throughput::Elements((2 * n * n * iterations) as u64));
    for checks in [SolverChecks::Host, SolverChecks::Device] {
        let ctx = WgpuContext::new()
            .expect("adapter found above")
            .with_solver_checks(checks);
        let backend = Backend::Wgpu(Wgpu::with_context(Arc::new(ctx)));
        g.bench_function(format!("{name}-{}/b{b}_n{n}", checks.name()), |bench| {
            bench.iter(|| backend.sinkhorn(&problem, &params).expect("valid"))
        });
    }
    g.finish();

    // Fused cost + Sinkhorn from embeddings (the cost stays on-chip when the pair fits).
    let mut g = c.benchmark_group("sinkhorn-embeddings");
    g.sample_size(10);
    for (b, n, d, iters) in [(64usize, 32usize, 384usize, 200usize), (64, 128, 384, 200)] {
        let x = bench::embeddings(1, b, n, d);
        let y = bench::embeddings(2, b, n, d);
        let params = bench::fixed_iterations(0.05, iters);
        g.throughput(Throughput::Elements((2 * b * n * n * iters) as u64));
        g.bench_function(format!("{name}/b{b}_n{n}_d{d}_it{iters}"), |bench| {
            bench.iter(|| backend.sinkhorn_embeddings(&x, &y, &params).expect("valid"))
        });
    }
    g.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
