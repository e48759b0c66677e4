//! The standard-problem benches every backend runs (cosine cost, MaxSim, Sinkhorn), with
//! declared throughput; each bench file picks its backend and adds what is its own.

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
}
