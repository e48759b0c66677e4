//! Criterion benches of the WGSL kernels on the standard problems of `optical::bench`
//! (the same problems as `optical bench --backend wgpu`, `sinkhorn-fused` included, as the
//! CUDA benches time it), and the fused solve on two smaller problems of its own
//! (`sinkhorn-embeddings`: b = 64 pairs of 32 × 32 and 128 × 128, 200 iterations). Every
//! call reads its result back, so the device is synchronised before the clock stops.
//!
//! Without an adapter the benches exit with an error (set `OPTICAL_WGPU_ADAPTER` to pick one).

mod common;

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

    // The stopping rule on the host and on the device, side by side in `sinkhorn-checks`.
    let variants: Vec<(String, Backend)> = [SolverChecks::Host, SolverChecks::Device]
        .into_iter()
        .map(|checks| {
            let ctx = WgpuContext::new()
                .expect("adapter found above")
                .with_solver_checks(checks);
            (
                format!("{name}-{}", checks.name()),
                Backend::Wgpu(Wgpu::with_context(Arc::new(ctx))),
            )
        })
        .collect();
    common::standard_kernels(
        c,
        &backend,
        common::Standard {
            sample_size: Some(10),
            checks: variants.iter().map(|(l, b)| (l.clone(), b)).collect(),
        },
    );

    // Fused cost + Sinkhorn from embeddings (the cost stays on-chip when the pair fits).
    let mut g = c.benchmark_group("sinkhorn-embeddings");
    g.sample_size(10);
    for (b, n, d, iters) in [(64usize, 32usize, 384usize, 200usize), (64, 128, 384, 200)] {
        let x = bench::embeddings(1, b, n, d);
        let y = bench::embeddings(2, b, n, d);
        let params = bench::fixed_iterations(bench::EPSILON, iters);
        g.throughput(Throughput::Elements((2 * b * n * n * iters) as u64));
        g.bench_function(format!("{name}/b{b}_n{n}_d{d}_it{iters}"), |bench| {
            bench.iter(|| backend.sinkhorn_embeddings(&x, &y, &params).expect("valid"))
        });
    }
    g.finish();

    common::sinkhorn_fused(c, &backend);
}

criterion_group!(benches, kernels);
criterion_main!(benches);
