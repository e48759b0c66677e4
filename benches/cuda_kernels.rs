//! Criterion benches of the CUDA kernels on the standard problems of `optical::bench`,
//! end to end (upload, kernels, read-back: every call returns host data, so the clock
//! stops after the device has finished). Device-only times: `optical bench --backend cuda`.
//! Without a CUDA device the bench says so and measures nothing.

mod common;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use optical::backend::{Backend, BackendKind};
use optical::bench;

fn kernels(c: &mut Criterion) {
    let backend = match Backend::new(BackendKind::Cuda) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("cuda_kernels: skipped: {e}");
            return;
        }
    };

    common::standard_kernels(c, &backend, common::Standard::default());

    // `optical bench`'s sinkhorn-fused: cosine cost + 100 iterations, the cost kept on chip.
    let (x, y) = bench::fused_problem();
    let (b, n, d, iters) = (x.b(), x.n(), x.d(), 100);
    let params = bench::fused_params(iters);
    let mut g = c.benchmark_group("sinkhorn-fused");
    g.sample_size(10);
    g.throughput(Throughput::Elements((2 * b * n * n * iters) as u64));
    g.bench_function(format!("cuda/b{b}_n{n}_d{d}_it{iters}"), |bench| {
        bench.iter(|| backend.sinkhorn_embeddings(&x, &y, &params).expect("valid"))
    });
    g.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
