//! Criterion benches of the CPU kernels on the standard problems of `optical::bench`.

mod common;

use criterion::{criterion_group, criterion_main, Criterion};
use optical::backend::{Backend, BackendKind};

fn kernels(c: &mut Criterion) {
    let backend = Backend::new(BackendKind::Cpu).expect("the CPU backend is always present");
    common::standard_kernels(c, &backend);
}

criterion_group!(benches, kernels);
criterion_main!(benches);
