//! Cosine cost and MaxSim: the fast path against the f64 reference and against values
//! computed independently here, on awkward shapes, zero vectors, outliers and bad input.

mod common;

use common::assert_close;
use optical::backend::{Backend, BackendKind};
use optical::ot::{Embeddings, PackedDocs};
use optical::rng::SplitMix64;

fn emb(seed: u64, b: usize, n: usize, d: usize, lengths: Option<Vec<usize>>) -> Embeddings {
    let mut rng = SplitMix64::new(seed);
    let mut data = rng.normals_f32(b * n * d);
    // Outliers: a few rows scaled by 1e4, which cosine must not care about.
    for k in (0..b * n).step_by(7) {
        data[k * d..(k + 1) * d].iter_mut().for_each(|v| *v *= 1e4);
    }
    Embeddings::new("test", b, n, d, data, lengths).unwrap()
}

fn naive_cos(x: &[f32], y: &[f32]) -> f64 {
    let dot: f64 = x.iter().zip(y).map(|(&a, &b)| a as f64 * b as f64).sum();
    let nx: f64 = x.iter().map(|&a| (a as f64).powi(2)).sum::<f64>().sqrt();
    let ny: f64 = y.iter().map(|&a| (a as f64).powi(2)).sum::<f64>().sqrt();
    if nx == 0.0 || ny == 0.0 {
        0.0
    } else {
        dot / (nx * ny)
    }
}

#[test]
fn cosine_cost_fast_matches_reference_on_awkward_shapes() {
    let reference = Backend::new(BackendKind::CpuReference).unwrap();
    let fast = Backend::new(BackendKind::Cpu).unwrap();
    for (b, n, m, d) in [
        (1, 1, 1, 1),
        (2, 7, 9, 7),
        (3, 8, 8, 8),
        (2, 9, 7, 9),
        (2, 17, 29, 33),
        (1, 113, 203, 384),
        (1, 4, 5, 1024),
    ] {
        let xl: Vec<usize> = (0..b).map(|p| n - p.min(n - 1)).collect();
        let yl: Vec<usize> = (0..b).map(|p| m - (2 * p).min(m - 1)).collect();
        let x = emb(b as u64, b, n, d, Some(xl.clone()));
        let y = emb(100 + b as u64, b, m, d, Some(yl.clone()));
        let r = reference.cosine_cost(&x, &y).unwrap();
        let f = fast.cosine_cost(&x, &y).unwrap();
        let rv: Vec<f64> = r.data.iter().map(|&v| v as f64).collect();
        let fv: Vec<f64> = f.data.iter().map(|&v| v as f64).collect();
        assert_close(
            &format!("cosine fast vs reference b{b} {n}x{m} d{d}"),
            &fv,
            &rv,
            2e-6 * (d as f64).sqrt().max(1.0),
        );
        // Independent check of the reference, and zeros on padding.
        for p in 0..b {
            for i in 0..n {
                for j in 0..m {
                    let v = r.data[(p * n + i) * m + j] as f64;
                    if i < xl[p] && j < yl[p] {
                        let want = 1.0 - naive_cos(x.row(p, i), y.row(p, j));
                        assert!(
                            (v - want).abs() < 1e-6,
                            "reference ({p},{i},{j}): {v} vs {want}"
                        );
                    } else {
                        assert_eq!(v, 0.0, "padding is 0");
                    }
                }
            }
        }
    }
}

#[test]
fn zero_vectors_have_cost_one_not_nan() {
    let x = emb(1, 1, 3, 16, None);
    let mut data = x.data().to_vec();
    data[16..32].iter_mut().for_each(|v| *v = 0.0);
    let x = Embeddings::new("x", 1, 3, 16, data, None).unwrap();
    let y = emb(2, 1, 4, 16, None);
    for kind in [BackendKind::CpuReference, BackendKind::Cpu] {
        let c = Backend::new(kind).unwrap().cosine_cost(&x, &y).unwrap();
        assert!(c.data.iter().all(|v| v.is_finite()));
        assert!(
            c.data[4..8].iter().all(|&v| v == 1.0),
            "{kind}: {:?}",
            &c.data[4..8]
        );
    }
}

/// Rows scaled to just inside the norm bounds: the fast path's cosines stay the reference's,
/// and the reference's stay those of the unscaled rows.
#[test]
fn rows_at_the_norm_bounds_give_the_same_cosines() {
    let reference = Backend::new(BackendKind::CpuReference).unwrap();
    let fast = Backend::new(BackendKind::Cpu).unwrap();
    for (b, n, m, d) in [(1, 1, 1, 1), (2, 17, 29, 33), (1, 113, 203, 384)] {
        let (x0, y0) = (emb(b as u64, b, n, d, None), emb(50, b, m, d, None));
        let x = common::rescaled_to_norm_bounds(&x0);
        let y = common::rescaled_to_norm_bounds(&y0);
        let widen = |c: &[f32]| c.iter().map(|&v| v as f64).collect::<Vec<_>>();
        let unscaled = widen(&reference.cosine_cost(&x0, &y0).unwrap().data);
        let r = widen(&reference.cosine_cost(&x, &y).unwrap().data);
        let f = widen(&fast.cosine_cost(&x, &y).unwrap().data);
        let what = format!("b{b} {n}x{m} d{d}");
        assert_close(
            &format!("reference at the bounds {what}"),
            &r,
            &unscaled,
            1e-6,
        );
        assert_close(
            &format!("fast at the bounds {what}"),
            &f,
            &r,
            2e-6 * (d as f64).sqrt(),
        );
        // MaxSim: the rescaled y's rows as documents of 1..=5 tokens.
        let lengths: Vec<usize> = (0..b * m)
            .map(|k| 1 + k % 5)
            .scan(0, |used, len| {
                let len = len.min(b * m - *used);
                *used += len;
                (len > 0).then_some(len)
            })
            .collect();
        let docs = PackedDocs::new("docs", d, y.data().to_vec(), lengths).unwrap();
        let r = widen(&reference.maxsim(&x, &docs).unwrap());
        let f = widen(&fast.maxsim(&x, &docs).unwrap());
        assert_close(
            &format!("maxsim at the bounds {what}"),
            &f,
            &r,
            1e-5 * n as f64,
        );
    }
}

/// Rows whose norm the `f32` kernels cannot square are refused, naming the row; zero rows
/// and padding rows are not checked against the bounds.
#[test]
fn row_norms_outside_the_bounds_are_refused() {
    let row = |norm: f32| vec![norm, 0.0];
    for (norm, ok) in [
        (1.01e12f32, false),
        (0.99e-12, false),
        (3e38, false),
        (1e-30, false),
        (0.99e12, true),
        (1.01e-12, true),
        (0.0, true),
    ] {
        let data = [row(1.0), row(norm)].concat();
        let e = Embeddings::new("x", 1, 2, 2, data.clone(), None);
        let docs = PackedDocs::new("docs", 2, data, vec![2]);
        if ok {
            assert!(e.is_ok() && docs.is_ok(), "norm {norm}");
            continue;
        }
        let e = e.unwrap_err().to_string();
        assert!(
            e.contains("set 0, row 1") && e.contains("L2 norm") && e.contains("[1e-12, 1e12]"),
            "{e}"
        );
        let e = docs.unwrap_err().to_string();
        assert!(e.contains("token 1") && e.contains("L2 norm"), "{e}");
        // As padding (set length 1) the row is never read, and is accepted.
        let data = [row(1.0), row(norm)].concat();
        assert!(Embeddings::new("x", 1, 2, 2, data, Some(vec![1])).is_ok());
    }
}

fn docs(seed: u64, lengths: Vec<usize>, d: usize) -> PackedDocs {
    let total: usize = lengths.iter().sum();
    let mut rng = SplitMix64::new(seed);
    PackedDocs::new("docs", d, rng.normals_f32(total * d), lengths).unwrap()
}

#[test]
fn maxsim_fast_matches_reference_and_naive() {
    let reference = Backend::new(BackendKind::CpuReference).unwrap();
    let fast = Backend::new(BackendKind::Cpu).unwrap();
    for (q, n, d, lens) in [
        (1usize, 1usize, 1usize, vec![1usize]),
        (2, 7, 9, vec![1, 8, 9, 7, 29]),
        (3, 17, 64, vec![113, 1, 203, 16, 17, 15]),
        // Across the fast path's tiles: 40 queries of up to 17 tokens (several 256-token
        // query tiles), 150 documents in several 512-token tiles, one longer than a tile.
        (
            40,
            17,
            24,
            (0..150)
                .map(|k| if k == 77 { 600 } else { 1 + k % 29 })
                .collect(),
        ),
    ] {
        let ql: Vec<usize> = (0..q).map(|i| n - i.min(n - 1)).collect();
        let queries = emb(q as u64, q, n, d, Some(ql.clone()));
        let dd = docs(7 + q as u64, lens.clone(), d);
        let r = reference.maxsim(&queries, &dd).unwrap();
        let f = fast.maxsim(&queries, &dd).unwrap();
        let rv: Vec<f64> = r.iter().map(|&v| v as f64).collect();
        let fv: Vec<f64> = f.iter().map(|&v| v as f64).collect();
        assert_close(
            &format!("maxsim fast vs reference q{q} n{n} d{d}"),
            &fv,
            &rv,
            1e-5 * n as f64,
        );
        for qi in 0..q {
            for (k, _) in lens.iter().enumerate() {
                let doc = dd.doc(k);
                let want: f64 = (0..ql[qi])
                    .map(|i| {
                        doc.chunks_exact(d)
                            .map(|t| naive_cos(queries.row(qi, i), t))
                            .fold(f64::MIN, f64::max)
                    })
                    .sum();
                assert!(
                    (r[qi * lens.len() + k] as f64 - want).abs() < 1e-5,
                    "naive ({qi},{k})"
                );
            }
        }
    }
}

#[test]
fn hostile_inputs_are_clear_errors() {
    let msg = |r: optical::Result<Embeddings>| r.unwrap_err().to_string();
    let e = msg(Embeddings::new(
        "x",
        1,
        2,
        2,
        vec![1.0, f32::NAN, 0.0, 1.0],
        None,
    ));
    assert!(e.contains("finite") && e.contains("NaN"), "{e}");
    let e = msg(Embeddings::new("x", 1, 2, 2, vec![1.0; 3], None));
    assert!(e.contains("expected shape"), "{e}");
    let e = msg(Embeddings::new(
        "x",
        2,
        2,
        2,
        vec![1.0; 8],
        Some(vec![2, 0]),
    ));
    assert!(e.contains("length 0"), "{e}");
    let e = msg(Embeddings::new("x", 1, 0, 2, vec![], None));
    assert!(e.contains("non-empty"), "{e}");
    // No pairs and no dimensions are empty sets too, refused as such.
    for (b, n, d) in [(0, 2, 2), (1, 2, 0)] {
        let e = msg(Embeddings::new("x", b, n, d, vec![], None));
        assert!(e.contains("non-empty"), "(b, n, d) = ({b}, {n}, {d}): {e}");
    }
    for (d, data, lengths) in [(2, vec![], vec![]), (0, vec![], vec![1])] {
        let e = PackedDocs::new("docs", d, data, lengths.clone())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("expected shape a non-empty (tokens, d) array"),
            "d = {d}, lengths {lengths:?}: {e}"
        );
    }
    let e = PackedDocs::new("docs", 2, vec![1.0; 6], vec![2, 0, 1])
        .unwrap_err()
        .to_string();
    assert!(e.contains("document 1 has no tokens"), "{e}");
    let e = PackedDocs::new("docs", 2, vec![1.0; 6], vec![2, 2])
        .unwrap_err()
        .to_string();
    assert!(e.contains("lengths sum to 4"), "{e}");

    let x = emb(1, 2, 3, 4, None);
    let y = emb(2, 1, 3, 4, None);
    let e = Backend::new(BackendKind::Cpu)
        .unwrap()
        .cosine_cost(&x, &y)
        .unwrap_err()
        .to_string();
    assert!(e.contains("batch size 2"), "{e}");
    let y = emb(2, 2, 3, 5, None);
    let e = Backend::new(BackendKind::CpuReference)
        .unwrap()
        .cosine_cost(&x, &y)
        .unwrap_err()
        .to_string();
    assert!(e.contains("dimension 4"), "{e}");
    let e = Backend::new(BackendKind::Cpu)
        .unwrap()
        .maxsim(&x, &docs(1, vec![2], 5))
        .unwrap_err()
        .to_string();
    assert!(e.contains("dimension 4"), "{e}");
}

#[test]
fn problem_and_parameter_validation() {
    use optical::ot::{Problem, SinkhornParams};
    let e = Problem::new(1, 2, 2, vec![0.0, 1.0, f64::INFINITY, 0.0], None, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("pair 0, entry (1, 0)") && e.contains("inf"),
        "{e}"
    );
    let e = Problem::new(1, 2, 2, vec![0.0; 4], Some(vec![1.0, -1.0]), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("non-negative") && e.contains("-1"), "{e}");
    let e = Problem::new(1, 2, 2, vec![0.0; 4], None, Some(vec![0.0, 0.0]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("zero total mass"), "{e}");
    let e = Problem::new(2, 2, 2, vec![0.0; 8], Some(vec![1.0; 3]), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("(2, 2)"), "{e}");
    for (pairs, n, m) in [(0, 2, 2), (1, 0, 2), (1, 2, 0)] {
        let e = Problem::new(pairs, n, m, vec![], None, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("expected shape a non-empty (b, n, m) array"),
            "(pairs, n, m) = ({pairs}, {n}, {m}): {e}"
        );
    }
    for (p, name) in [
        (
            SinkhornParams {
                epsilon: 0.0,
                ..Default::default()
            },
            "epsilon",
        ),
        (
            SinkhornParams {
                epsilon: f64::NAN,
                ..Default::default()
            },
            "epsilon",
        ),
        (
            SinkhornParams {
                max_iterations: 0,
                ..Default::default()
            },
            "max_iterations",
        ),
        (
            SinkhornParams {
                check_every: 0,
                ..Default::default()
            },
            "check_every",
        ),
        (
            SinkhornParams {
                threshold: -1.0,
                ..Default::default()
            },
            "threshold",
        ),
    ] {
        let e = p.validate().unwrap_err().to_string();
        assert!(e.contains(name), "{e}");
    }
    assert!("tpu"
        .parse::<BackendKind>()
        .unwrap_err()
        .to_string()
        .contains("one of cpu"));
}

#[test]
fn gpu_backends_not_compiled_in_are_unavailable_not_panics() {
    for kind in [BackendKind::Wgpu, BackendKind::Cuda] {
        if kind.compiled_in() {
            continue;
        }
        let e = Backend::new(kind).err().expect("unavailable").to_string();
        assert!(e.contains("unavailable") && e.contains("--features"), "{e}");
    }
}

#[test]
fn device_timing_refuses_bad_jobs_on_the_cpu() {
    common::device_timing_refuses_bad_jobs(&Backend::new(BackendKind::Cpu).unwrap());
}

/// Zero vectors in MaxSim (a padding-like token on either side) have cosine 0 with
/// everything, on both CPU backends: no NaN from 0/0, and the other tokens score as usual.
#[test]
fn maxsim_with_zero_vectors_is_finite() {
    let queries = Embeddings::new("q", 1, 2, 2, vec![0.0, 0.0, 1.0, 0.0], None).unwrap();
    let docs = PackedDocs::new("docs", 2, vec![0.0, 0.0, 0.0, 0.0, 1.0, 1.0], vec![1, 2]).unwrap();
    for kind in [BackendKind::Cpu, BackendKind::CpuReference] {
        let got = Backend::new(kind).unwrap().maxsim(&queries, &docs).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], 0.0, "{kind:?}: {got:?}");
        assert!(
            (got[1] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6,
            "{kind:?}: {got:?}"
        );
    }
}

#[test]
fn padding_values_change_nothing_on_the_cpu() {
    for kind in [BackendKind::Cpu, BackendKind::CpuReference] {
        common::padding_values_change_nothing(&Backend::new(kind).unwrap());
    }
}
