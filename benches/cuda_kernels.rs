//! Criterion benches of the CUDA kernels on the standard problems of `optical::bench`,
//! end to end (upload, kernels, read-back: every call returns host data, so the clock
//! stops after the device has finished). Device-only times: `optical bench --backend cuda`.
//! Without a CUDA device the bench says so and measures nothing.

mod common;

use criterion::{criterion_group, criterion_main, Criterion};
use optical::backend::{Backend, BackendKind};

fn kernels(c: &mut Criterion) {
    let backend = match Backend::new(BackendKind::Cuda) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("cuda_kernels: skipped: {e}");
            return;
        }
    };

    common::standard_kernels(c, &backend, common::Standard::default());

    common::sinkhorn_fused(c, &backend);
}

criterion_group!(benches, kernels);
criterion_main!(benches);
