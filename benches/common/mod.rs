//! The standard-problem benches every backend runs (cosine cost, MaxSim, Sinkhorn, a
//! distillation step's OT with its convergence checks, and the
//! exp2 probe, the measured exponential rate the Sinkhorn floors assume), with declared
//! throughput; each bench file picks its backend and adds what is its own. The problems are
//! `optical::bench`'s, so that these benches and `optical bench` time the same thing.

use criterion::{BenchmarkGroup, Criterion, Throughput};
use optical::backend::Backend;
use optical::bench;

/// How a bench file runs the standard problems.
#[derive(Default)]
pub struct Standard<'a> {
    /// Samples per problem where criterion's default (100) would take too long; the
    /// Sinkhorn and exp2 groups take 10 in any case.
    pub sample_size: Option<usize>,
    /// The backends `sinkhorn-checks` times, each under its own name, in place of the
    /// backend itself (e.g. the stopping rule on the host and on the device).
    pub checks: Vec<(String, &'a Backend)>,
}

fn group<'c>(
    c: &'c mut Criterion,
    name: &str,
    samples: Option<usize>,
) -> BenchmarkGroup<'c, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    if let Some(n) = samples {
        g.sample_size(n);
    }
    g
}

pub fn standard_kernels(c: &mut Criterion, backend: &Backend, opts: Standard<'_>) {
    let name = backend.kind().name();

    let (b, n, m, d) = (64usize, 128usize, 128usize, 384usize);
    let x = bench::embeddings(1, b, n, d);
    let y = bench::embeddings(2, b, m, d);
    let mut g = group(c, "cosine-cost", opts.sample_size);
    g.throughput(Throughput::Bytes(
        (4 * (b * n * d + b * m * d + b * n * m)) as u64,
    ));
    g.bench_function(format!("{name}/b{b}_n{n}_m{m}_d{d}"), |bench| {
        bench.iter(|| backend.cosine_cost(&x, &y).expect("valid"))
    });
    g.finish();

    let (q, docs) = bench::maxsim_problem();
    let mut g = group(c, "maxsim", opts.sample_size);
    g.throughput(Throughput::Bytes((4 * docs.data().len()) as u64));
    g.bench_function(
        format!("{name}/q{}x{}_docs{}", q.b(), q.n(), docs.len()),
        |bench| bench.iter(|| backend.maxsim(&q, &docs).expect("valid")),
    );
    g.finish();

    let mut g = c.benchmark_group("sinkhorn");
    g.sample_size(10);
    for shape in bench::SINKHORN_SHAPES.iter().filter(|s| s.standard()) {
        let (problem, params) = (shape.problem(), shape.params());
        // Elements = exponentials evaluated (two reductions per iteration).
        g.throughput(Throughput::Elements(shape.exps()));
        g.bench_function(format!("{name}/{}", shape.id()), |bench| {
            bench.iter(|| backend.sinkhorn(&problem, &params).expect("valid"))
        });
    }
    g.finish();

    // A distillation step's OT (optical distill's defaults: many convergence checks, each a
    // read-back when the host checks). Elements = exponentials of the iterations the pairs
    // ran before they stopped.
    let problem = bench::checks_problem();
    let params = bench::checks_params();
    let out = backend.sinkhorn(&problem, &params).expect("valid");
    let iterations: usize = out.iterations.iter().map(|&i| i as usize).sum();
    let mut g = group(c, "sinkhorn-checks", opts.sample_size);
    g.throughput(Throughput::Elements(
        (2 * problem.n() * problem.m() * iterations) as u64,
    ));
    let checks = if opts.checks.is_empty() {
        vec![(name.to_string(), backend)]
    } else {
        opts.checks
    };
    for (label, backend) in checks {
        g.bench_function(
            format!("{label}/b{}_n{}", problem.pairs(), problem.n()),
            |bench| bench.iter(|| backend.sinkhorn(&problem, &params).expect("valid")),
        );
    }
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

/// `optical bench`'s sinkhorn-fused: cosine cost + 100 iterations, the cost kept on chip
/// where the backend can (the GPU bench files run it; the CPU one times its parts instead).
#[allow(dead_code)]
pub fn sinkhorn_fused(c: &mut Criterion, backend: &Backend) {
    let (x, y) = bench::fused_problem();
    let (b, n, d, iters) = (x.b(), x.n(), x.d(), 100);
    let params = bench::fused_params(iters);
    let mut g = c.benchmark_group("sinkhorn-fused");
    g.sample_size(10);
    g.throughput(Throughput::Elements((2 * b * n * n * iters) as u64));
    g.bench_function(
        format!("{}/b{b}_n{n}_d{d}_it{iters}", backend.kind().name()),
        |bench| bench.iter(|| backend.sinkhorn_embeddings(&x, &y, &params).expect("valid")),
    );
    g.finish();
}
