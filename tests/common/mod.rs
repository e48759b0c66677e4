//! Helpers shared by the integration tests: fixture loading and comparisons that print the
//! error before they assert.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

#[cfg(feature = "distill")]
pub mod distill;

use optical::io::npy;

/// The checkout the tests run in. `cargo test` sets `CARGO_MANIFEST_DIR` when it runs a
/// test binary, which stays right when two checkouts share a build directory: the path
/// compiled into the binary is then the checkout that last built it, which may be another
/// (or one deleted since).
pub fn repo_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .filter(|p| p.join("Cargo.toml").is_file())
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

pub fn fixture_dir(case: &str) -> PathBuf {
    repo_root().join("tests/fixtures/sinkhorn").join(case)
}

pub fn fixture_cases() -> Vec<String> {
    let mut cases: Vec<String> = std::fs::read_dir(repo_root().join("tests/fixtures/sinkhorn"))
        .expect("fixtures present")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    cases.sort();
    cases
}

pub fn load(dir: &Path, name: &str) -> (Vec<usize>, Vec<f64>) {
    let arr = npy::read(&dir.join(format!("{name}.npy"))).expect("fixture readable");
    (arr.shape.clone(), arr.to_f64())
}

pub fn load_f32(dir: &Path, name: &str) -> (Vec<usize>, Vec<f32>) {
    let arr = npy::read(&dir.join(format!("{name}.npy"))).expect("fixture readable");
    (arr.shape.clone(), arr.to_f32())
}

pub fn epsilon(dir: &Path) -> f64 {
    let text = std::fs::read_to_string(dir.join("meta.json")).expect("meta.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("meta.json is JSON");
    v["epsilon"].as_f64().expect("epsilon")
}

/// Max absolute and relative (to max |want|) error; prints both and the first mismatches,
/// then asserts `max_abs <= tol`.
pub fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(f64::MIN_POSITIVE);
    let mut max_abs = 0.0f64;
    let mut bad = Vec::new();
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let e = (g - w).abs();
        if (e.is_nan() || e > tol) && bad.len() < 5 {
            bad.push((i, g, w));
        }
        if e > max_abs || e.is_nan() {
            max_abs = if e.is_nan() { f64::INFINITY } else { e };
        }
    }
    println!(
        "{what}: max abs error {max_abs:.3e}, max rel error {:.3e} (tol {tol:.1e})",
        max_abs / scale
    );
    assert!(
        bad.is_empty() && max_abs <= tol,
        "{what}: first mismatches (index, got, want): {bad:?}"
    );
}

/// Missing shared data fails the test (CI always has it) unless the developer opts out
/// explicitly with `OPTICAL_ALLOW_MISSING_DATA=1`.
pub fn skip_or_fail(why: &str) {
    if std::env::var("OPTICAL_ALLOW_MISSING_DATA").as_deref() == Ok("1") {
        eprintln!("skipped (OPTICAL_ALLOW_MISSING_DATA=1): {why}");
    } else {
        panic!("{why}; run `make setup`, or set OPTICAL_ALLOW_MISSING_DATA=1 to skip");
    }
}

/// `e` with its non-zero rows rescaled, in turn, to just inside the smallest and the largest
/// norm an embedding row may have ([`optical::ot::problem::MIN_ROW_NORM`], `MAX_ROW_NORM`)
/// and to norm 1: every backend must give the same cosines there (the cosine does not depend
/// on scale), which checks that no `f32` square or dot product overflows or underflows.
pub fn rescaled_to_norm_bounds(e: &optical::ot::Embeddings) -> optical::ot::Embeddings {
    use optical::ot::problem::{MAX_ROW_NORM, MIN_ROW_NORM};
    let targets = [MIN_ROW_NORM * 1.5, MAX_ROW_NORM / 1.5, 1.0];
    let mut data = e.data().to_vec();
    for (r, row) in data.chunks_mut(e.d()).enumerate() {
        let norm = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
        if norm > 0.0 {
            let s = targets[r % targets.len()] / norm;
            row.iter_mut().for_each(|v| *v = (*v as f64 * s) as f32);
        }
    }
    optical::ot::Embeddings::new(
        "rescaled",
        e.b(),
        e.n(),
        e.d(),
        data,
        Some(e.lengths().to_vec()),
    )
    .expect("rows within the norm bounds")
}

/// Two solutions of one problem that must agree bit for bit (iterations, convergence
/// flags, errors, potentials, plan): printed, then asserted, naming `what`.
pub fn assert_same_solution(
    what: &str,
    a: &optical::ot::sinkhorn::SinkhornOutput,
    b: &optical::ot::sinkhorn::SinkhornOutput,
) {
    let same = |x: &[f64], y: &[f64]| {
        x.len() == y.len() && x.iter().zip(y).all(|(u, v)| u.to_bits() == v.to_bits())
    };
    println!(
        "{what}: iterations {:?}, converged {:?}",
        a.iterations, a.converged
    );
    assert_eq!(a.iterations, b.iterations, "{what}");
    assert_eq!(a.converged, b.converged, "{what}");
    assert!(same(&a.marginal_error, &b.marginal_error), "{what}");
    assert!(same(&a.f, &b.f) && same(&a.g, &b.g), "{what}");
    assert!(same(&a.plan, &b.plan), "{what}");
}

/// A device timing checks its job as the ordinary entry points do, on every backend (the
/// CPU backends, which time nothing, included): a bad ε or mismatched batches are errors,
/// never a timing of kernels launched on them.
pub fn device_timing_refuses_bad_jobs(backend: &optical::backend::Backend) {
    use optical::backend::DeviceJob;
    use optical::ot::{Embeddings, SinkhornParams};
    let x = Embeddings::new("x", 2, 4, 8, vec![0.5; 64], None).unwrap();
    let y = Embeddings::new("y", 3, 4, 8, vec![0.5; 96], None).unwrap();
    let y2 = Embeddings::new("y", 2, 5, 8, vec![0.25; 80], None).unwrap();
    let params = |epsilon: f64| SinkhornParams {
        epsilon,
        max_iterations: 10,
        threshold: 0.0,
        check_every: 10,
    };
    let (nan, zero, tiny, good) = (params(f64::NAN), params(0.0), params(1e-300), params(0.05));
    let problem = optical::bench::sinkhorn_problem(1, 4, 4, 8);
    for (job, want) in [
        (DeviceJob::CosineCost(&x, &y), "batch size 2 to match x"),
        (
            DeviceJob::SinkhornFused(&x, &y, &good),
            "batch size 2 to match x",
        ),
        (DeviceJob::SinkhornFused(&x, &y2, &nan), "epsilon"),
        (DeviceJob::SinkhornFused(&x, &y2, &zero), "epsilon"),
        (
            DeviceJob::SinkhornFused(&x, &y2, &tiny),
            "for costs up to 2.000e0",
        ),
        (DeviceJob::Sinkhorn(&problem, &nan), "epsilon"),
        (DeviceJob::Sinkhorn(&problem, &tiny), "epsilon"),
    ] {
        let err = backend
            .device_seconds(job, 0.0)
            .expect_err(&format!("{job:?} must be refused"))
            .to_string();
        assert!(err.contains(want), "expected {want:?} in {err}");
    }
}

/// Padding rows are never read: whatever finite values they hold (3e38, whose square
/// overflows f32, or 1e-30), a backend's cost, MaxSim scores and fused solve are those of
/// zero padding, bit for bit.
pub fn padding_values_change_nothing(backend: &optical::backend::Backend) {
    use optical::ot::{Embeddings, PackedDocs, SinkhornParams};
    use optical::rng::SplitMix64;
    let (b, n, m, d) = (2, 5, 4, 8);
    let (xl, yl) = (vec![3, 5], vec![4, 2]);
    let with_padding = |seed: u64, rows: usize, lengths: &[usize], fill: f32| {
        let mut data = SplitMix64::new(seed).normals_f32(b * rows * d);
        for (p, &len) in lengths.iter().enumerate() {
            data[(p * rows + len) * d..(p + 1) * rows * d].fill(fill);
        }
        Embeddings::new("padded", b, rows, d, data, Some(lengths.to_vec())).unwrap()
    };
    let params = SinkhornParams {
        epsilon: 0.05,
        max_iterations: 20,
        threshold: 0.0,
        check_every: 10,
    };
    let docs =
        PackedDocs::new("docs", d, SplitMix64::new(3).normals_f32(6 * d), vec![2, 4]).unwrap();
    let run = |fill: f32| {
        let (x, y) = (with_padding(1, n, &xl, fill), with_padding(2, m, &yl, fill));
        let cost = backend.cosine_cost(&x, &y).unwrap().data;
        let scores = backend.maxsim(&x, &docs).unwrap();
        let plan = backend.sinkhorn_embeddings(&x, &y, &params).unwrap().plan;
        (cost, scores, plan)
    };
    let zero = run(0.0);
    for fill in [3e38f32, 1e-30, -7.0] {
        let got = run(fill);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got.0), bits(&zero.0), "cost with padding {fill:e}");
        assert_eq!(bits(&got.1), bits(&zero.1), "MaxSim with padding {fill:e}");
        assert!(
            got.2
                .iter()
                .zip(&zero.2)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "plan with padding {fill:e}"
        );
    }
}
