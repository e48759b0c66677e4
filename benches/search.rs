//! Criterion benches of exact search: dense cosine over pooled vectors (blocked matrix
//! products + trec_eval-ordered top-k and full-pool ranks) and MaxSim over token vectors,
//! on seeded random embeddings. Throughput is queries × candidates scored.
//!
//! The full XQuAD-R scale (13,090 × 13,014, d = 384) is timed end to end by
//! `optical eval --dataset xquad-r --model hash` (see docs/RESULTS.md).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use optical::backend::{Backend, BackendKind};
use optical::ot::problem::{Embeddings, PackedDocs};
use optical::retrieval::search::{search, DenseVectors, Pool, Scorer, DEFAULT_BLOCK};
use optical::rng::SplitMix64;

fn dense(c: &mut Criterion) {
    let (n, m, d, k) = (1024usize, 4096usize, 384usize, 100usize);
    let mut rng = SplitMix64::new(1);
    let q = DenseVectors::new("q", n, d, rng.normals_f32(n * d)).expect("valid");
    let docs = DenseVectors::new("c", m, d, rng.normals_f32(m * d)).expect("valid");
    let pool = Pool::numbered(m).expect("valid");
    let relevant: Vec<Vec<usize>> = (0..n).map(|i| vec![i % m, (7 * i) % m]).collect();
    let scorer = Scorer::Dense {
        queries: &q,
        corpus: &docs,
    };
    let mut g = c.benchmark_group("search-dense");
    g.sample_size(10);
    g.throughput(Throughput::Elements((n * m) as u64));
    g.bench_function(format!("cpu/n{n}_m{m}_d{d}_k{k}"), |b| {
        b.iter(|| search(&scorer, &pool, &relevant, k, DEFAULT_BLOCK).expect("valid"))
    });
    g.finish();
}

fn maxsim(c: &mut Criterion) {
    let (n, lq, m, ld, d, k) = (64usize, 16usize, 1024usize, 24usize, 128usize, 100usize);
    let mut rng = SplitMix64::new(2);
    let q = Embeddings::new("q", n, lq, d, rng.normals_f32(n * lq * d), None).expect("valid");
    let docs = PackedDocs::new("c", d, rng.normals_f32(m * ld * d), vec![ld; m]).expect("valid");
    let pool = Pool::numbered(m).expect("valid");
    let backend = Backend::new(BackendKind::Cpu).expect("CPU backend");
    let scorer = Scorer::MaxSim {
        backend: &backend,
        queries: &q,
        corpus: &docs,
    };
    let mut g = c.benchmark_group("search-maxsim");
    g.sample_size(10);
    g.throughput(Throughput::Elements((n * m) as u64));
    g.bench_function(format!("cpu/n{n}x{lq}_m{m}x{ld}_d{d}_k{k}"), |b| {
        b.iter(|| search(&scorer, &pool, &[], k, DEFAULT_BLOCK).expect("valid"))
    });
    g.finish();
}

criterion_group!(benches, dense, maxsim);
criterion_main!(benches);
