//! The standard-problem benches every backend runs (cosine cost, MaxSim, Sinkhorn, a
//! distillation step's OT with its convergence checks, and the
//! exp2 probe, the measured exponential rate the Sinkhorn floors assume), with declared
//! throughput; each bench file picks its backend and adds what is its own.

use criterion::{Criterion, Throughput};
use optical::backend::Backend;
use optical::bench;

pub fn standard_kernels(c: &mut Criterion, backend: &Backend) {
    let name = backend.kind().name();

    let (b, n, m, d) = (64usize, 128usize, 128usize, 384usize);
    let x = bench::embeddings(1, b, n, d);
    let y = bench::embeddings(2, b, m, d);
    let mut g = c.benchmark_group("cosine-cost");
    g.throughput(Throughput::Bytes(
        (4 * (b * n * d + b * m * d + b * n * m)) as u64,
    ));
    g.bench_function(format!("{name}/b{b}_n{n}_m{m}_d{d}"), |bench| {
        bench.iter(|| backend.cosine_cost(&x, &y).expect("valid"))
    });
    g.finish();

    let (q, docs) = bench::maxsim_problem();
    let mut g = c.benchmark_group("maxsim");
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

    // A distillation step's OT (optical distill's defaults: many convergence checks).
    // Elements = exponentials of the iterations the pairs ran before they stopped.
    let (b, n) = (16usize, 32usize);
    let problem = bench::sinkhorn_problem(b, n, n, 384);
    let params = bench::checks_params();
    let out = backend.sinkhorn(&problem, &params).expect("valid");
    let iterations: usize = out.iterations.iter().map(|&i| i as usize).sum();
    let mut g = c.benchmark_group("sinkhorn-checks");
    g.throughput(Throughput::Elements((2 * n * n * iterations) as u64));
    g.bench_function(format!("{name}/b{b}_n{n}"), |bench| {
        bench.iter(|| backend.sinkhorn(&problem, &params).expect("valid"))
    });
    g.finish();

    // Elements = exponentials the probe ran (2^30 rounded up to whole rounds of its lanes).
    let probe = backend
        .exp2_peak(bench::EXP2_PEAK_EXPS)
        .expect("the exp2 probe runs");
    let mut g = c.benchmark_group("exp2-peak");
    g.sample_size(10);
    g.throughput(Throughput::Elements(probe.exps() as u64));
    g.bench_function(
        format!("{name}/lanes{}_rounds{}", probe.lanes, probe.rounds),
        |bench| {
            bench.iter(|| {
                backend
                    .exp2_peak(bench::EXP2_PEAK_EXPS)
                    .expect("the exp2 probe runs")
            })
        },
    );
    g.finish();
}
