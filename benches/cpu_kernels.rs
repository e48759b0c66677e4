//! Criterion benches of the CPU kernels on the standard problems of `optical::bench`, and
//! of the host-side work every `f32` backend shares (the scaled form, Kᵀ, the `f64` plan).

mod common;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use optical::backend::cpu::fast::{CpuFastWith, SinkhornForm};
use optical::backend::{Backend, BackendKind};
use optical::bench;
use optical::ot::scaled::{self, ScaledPair};
use optical::ot::solve;

fn kernels(c: &mut Criterion) {
    let backend = Backend::new(BackendKind::Cpu).expect("the CPU backend is always present");
    common::standard_kernels(c, &backend, common::Standard::default());
}

/// `prepare` and `finish` of a solve without its iterations: the scaled form of every pair,
/// its transpose, and the `f64` plan from potentials, on the two standard Sinkhorn shapes.
fn host_work(c: &mut Criterion) {
    let mut g = c.benchmark_group("host");
    g.sample_size(20);
    for shape in bench::SINKHORN_SHAPES.iter().filter(|s| s.standard()) {
        let (b, n) = (shape.b, shape.n);
        let problem = shape.problem();
        // Elements = cost entries handled.
        g.throughput(Throughput::Elements((b * n * n) as u64));
        g.bench_function(format!("scaled-form/b{b}_n{n}"), |bench| {
            bench.iter(|| {
                (0..b)
                    .map(|p| ScaledPair::new(&problem, p, bench::EPSILON))
                    .collect::<Vec<_>>()
            })
        });
        let pairs: Vec<ScaledPair> = (0..b)
            .map(|p| ScaledPair::new(&problem, p, bench::EPSILON))
            .collect();
        let mut kt = vec![0.0f32; n * n];
        g.bench_function(format!("transpose/b{b}_n{n}"), |bench| {
            bench.iter(|| {
                for pair in &pairs {
                    scaled::transpose_into(&pair.k, n, n, n, &mut kt, n);
                    // Each pair's stores are observed, so none can be dropped.
                    std::hint::black_box(&mut kt);
                }
            })
        });
        let (f, gp) = (vec![-1.0f32; n], vec![-1.0f32; n]);
        g.bench_function(format!("plan-f64/b{b}_n{n}"), |bench| {
            bench.iter(|| {
                scaled::solution(&problem, bench::EPSILON, |p| {
                    (&pairs[p].support, &f[..], &gp[..])
                })
            })
        });
    }
    g.finish();
}

/// The fast path's two Sinkhorn forms on the standard problems, whatever
/// `$OPTICAL_CPU_SINKHORN` says: the scaling form (the default) and the log-domain passes.
/// Elements = the log domain's exponentials (two reductions per iteration), for both.
fn sinkhorn_forms(c: &mut Criterion) {
    let mut g = c.benchmark_group("sinkhorn-form");
    g.sample_size(10);
    for shape in bench::SINKHORN_SHAPES.iter().filter(|s| s.standard()) {
        let (problem, params) = (shape.problem(), shape.params());
        g.throughput(Throughput::Elements(shape.exps()));
        for (name, form) in [
            ("scaled", SinkhornForm::Scaled),
            ("log", SinkhornForm::Log),
            ("streamed", SinkhornForm::Streamed),
        ] {
            g.bench_function(format!("{name}/{}", shape.id()), |bench| {
                bench.iter(|| solve(&CpuFastWith(form), &problem, &params).expect("valid"))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, kernels, host_work, sinkhorn_forms);
criterion_main!(benches);
