//! Criterion benches of the CPU kernels on the standard problems of `optical::bench`, and
//! of the host-side work every `f32` backend shares (the scaled form, Kᵀ, the `f64` plan).

mod common;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use optical::backend::{Backend, BackendKind};
use optical::bench;
use optical::ot::scaled::{self, ScaledPair};

fn kernels(c: &mut Criterion) {
    let backend = Backend::new(BackendKind::Cpu).expect("the CPU backend is always present");
    common::standard_kernels(c, &backend);
}

/// `prepare` and `finish` of a solve without its iterations: the scaled form of every pair,
/// its transpose, and the `f64` plan from potentials, on the two standard Sinkhorn shapes.
fn host_work(c: &mut Criterion) {
    let mut g = c.benchmark_group("host");
    g.sample_size(20);
    for (b, n) in [(64usize, 128usize), (4, 512)] {
        let problem = bench::sinkhorn_problem(b, n, n, 64);
        // Elements = cost entries handled.
        g.throughput(Throughput::Elements((b * n * n) as u64));
        g.bench_function(format!("scaled-form/b{b}_n{n}"), |bench| {
            bench.iter(|| {
                (0..b)
                    .map(|p| ScaledPair::new(&problem, p, 0.05))
                    .collect::<Vec<_>>()
            })
        });
        let pairs: Vec<ScaledPair> = (0..b).map(|p| ScaledPair::new(&problem, p, 0.05)).collect();
        let mut kt = vec![0.0f32; n * n];
        g.bench_function(format!("transpose/b{b}_n{n}"), |bench| {
            bench.iter(|| {
                for pair in &pairs {
                    scaled::transpose_into(&pair.k, n, n, n, &mut kt, n);
                }
            })
        });
        let (f, gp) = (vec![-1.0f32; n], vec![-1.0f32; n]);
        g.bench_function(format!("plan-f64/b{b}_n{n}"), |bench| {
            bench
                .iter(|| scaled::solution(&problem, 0.05, |p| (&pairs[p].support, &f[..], &gp[..])))
        });
    }
    g.finish();
}

criterion_group!(benches, kernels, host_work);
criterion_main!(benches);
