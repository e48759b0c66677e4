//! The `optical` binary as a user runs it: outputs, the JSON summary, and one clear error
//! (exit code 2, no output directory) for every kind of bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{assert_close, fixture_dir, load};
use optical::io::npy;

fn optical(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_optical"))
        .args(args)
        .output()
        .expect("binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `optical ARGS` exits 2 (the command line's fault) with every one of `needles` in its
/// message; the message, for more checks.
fn fails_with(args: &[&str], needles: &[&str]) -> String {
    let o = optical(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    for needle in needles {
        assert!(
            err.contains(needle),
            "{args:?}: expected {needle:?} in {err}"
        );
    }
    err
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

#[test]
fn solve_from_cost_file_writes_every_output() {
    let fx = fixture_dir("padded_12x10");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = optical(&[
        "ot",
        "solve",
        "--cost",
        p(&fx.join("cost.npy")),
        "--a",
        p(&fx.join("a.npy")),
        "--b",
        p(&fx.join("b.npy")),
        "--epsilon",
        "0.05",
        "--threshold",
        "1e-7",
        "--out",
        p(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value =
        serde_json::from_str(stdout(&o).trim()).expect("one JSON line");
    assert_eq!(summary["backend"], "cpu");
    assert_eq!(summary["pairs"], 3);
    assert_eq!(summary["converged"], 3);
    // The returned plan's error, at the f32 floor here (1.8e-7 against a threshold of 1e-7).
    assert!(summary["max_marginal_error"].as_f64().unwrap() <= 1e-6);
    assert!(summary["seconds"].as_f64().unwrap() >= 0.0);

    let plan = npy::read(&out.join("plan.npy")).unwrap();
    assert_eq!(plan.shape, vec![3, 12, 10]);
    assert_eq!(plan.dtype, npy::Dtype::F32);
    let (_, want) = load(&fx, "plan");
    assert_close("cli plan", &plan.to_f64(), &want, 1e-5);
    for (name, shape) in [
        ("f.npy", vec![3, 12]),
        ("g.npy", vec![3, 10]),
        ("cost.npy", vec![3]),
        ("iterations.npy", vec![3]),
        ("converged.npy", vec![3]),
        ("marginal_error.npy", vec![3]),
    ] {
        assert_eq!(npy::read(&out.join(name)).unwrap().shape, shape, "{name}");
    }
    assert_eq!(
        npy::read(&out.join("converged.npy")).unwrap().to_f64(),
        vec![1.0; 3]
    );
    // No temporary directory is left next to the output.
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
}
/// An unbatched (5, 7) f32 cost with values in [0, 2), written under `dir`.
fn small_cost(dir: &Path) -> PathBuf {
    let cost = dir.join("c.npy");
    let c: Vec<f32> = (0..35).map(|k| ((k * 7919) % 13) as f32 / 6.5).collect();
    npy::write(&cost, &[5, 7], &c).unwrap();
    cost
}

/// `optical ot solve --cost COST --backend BACKEND EXTRA --out OUT`.
fn solve_cost(cost: &Path, backend: &str, extra: &[&str], out: &Path) -> Output {
    let mut args = vec!["ot", "solve", "--cost", p(cost), "--backend", backend];
    args.extend_from_slice(extra);
    args.extend(["--out", p(out)]);
    optical(&args)
}

#[test]
fn unbatched_f32_cost_keeps_its_rank_on_both_backends() {
    let tmp = tempfile::tempdir().unwrap();
    let cost = small_cost(tmp.path());
    let mut plans = Vec::new();
    for backend in ["cpu", "cpu-reference"] {
        let out = tmp.path().join(backend);
        let o = solve_cost(&cost, backend, &[], &out);
        assert!(o.status.success(), "{}", stderr(&o));
        let plan = npy::read(&out.join("plan.npy")).unwrap();
        assert_eq!(plan.shape, vec![5, 7]);
        assert_eq!(npy::read(&out.join("f.npy")).unwrap().shape, vec![5]);
        assert_eq!(
            npy::read(&out.join("cost.npy")).unwrap().shape,
            Vec::<usize>::new()
        );
        plans.push(plan.to_f64());
    }
    assert_close("cpu vs cpu-reference", &plans[0], &plans[1], 1e-5);
}

/// At an ε far above the cost's range the f32 backends' potentials carry errors of
/// ε × 1.2e-7, more than the range: said on stderr (the plan is fine); the f64 reference's
/// are meaningful and it says nothing.
#[test]
fn potentials_at_a_huge_epsilon_are_flagged_on_the_f32_backends() {
    let tmp = tempfile::tempdir().unwrap();
    let cost = small_cost(tmp.path());
    for (backend, epsilon, warned) in [
        ("cpu", "1e30", true),
        ("cpu", "0.05", false),
        ("cpu-reference", "1e30", false),
    ] {
        let out = tmp.path().join(format!("{backend}-{epsilon}"));
        let o = solve_cost(&cost, backend, &["--epsilon", epsilon], &out);
        let err = stderr(&o);
        assert!(o.status.success(), "{err}");
        assert_eq!(
            err.contains("the potentials f.npy and g.npy"),
            warned,
            "{backend} ε {epsilon}: {err}"
        );
    }
}

#[test]
fn solve_from_embeddings_with_lengths() {
    let fx = fixture_dir("embeddings_17x29");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("emb");
    let o = optical(&[
        "ot",
        "solve",
        "--x",
        p(&fx.join("x.npy")),
        "--y",
        p(&fx.join("y.npy")),
        "--x-lengths",
        p(&fx.join("x_lengths.npy")),
        "--y-lengths",
        p(&fx.join("y_lengths.npy")),
        "--epsilon",
        "0.05",
        "--threshold",
        "1e-7",
        "--phases",
        "--out",
        p(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // --phases: the solve's host phases in the summary line, none longer than the solve.
    let summary: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let phases = summary["host_phases"].as_array().expect("host_phases");
    let names: Vec<&str> = phases
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    for want in [
        "problem (f64 cost)",
        "prepare",
        "iterate",
        "check",
        "plan (f64)",
        "finish",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let total = summary["seconds"].as_f64().unwrap();
    assert!(
        phases
            .iter()
            .all(|p| p["seconds"].as_f64().unwrap() <= total),
        "{summary}"
    );
    let (_, want) = load(&fx, "plan");
    assert_close(
        "cli embeddings plan",
        &npy::read(&out.join("plan.npy")).unwrap().to_f64(),
        &want,
        1e-5,
    );
}

#[test]
fn cost_and_maxsim_commands() {
    let fx = fixture_dir("embeddings_17x29");
    let tmp = tempfile::tempdir().unwrap();
    let c = tmp.path().join("c.npy");
    let o = optical(&[
        "ot",
        "cost",
        "--x",
        p(&fx.join("x.npy")),
        "--y",
        p(&fx.join("y.npy")),
        "--x-lengths",
        p(&fx.join("x_lengths.npy")),
        "--y-lengths",
        p(&fx.join("y_lengths.npy")),
        "--out",
        p(&c),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (_, want) = load(&fx, "cost");
    assert_close(
        "cli cosine cost",
        &npy::read(&c).unwrap().to_f64(),
        &want,
        1e-6,
    );

    // Queries = the first set of x; documents = y's two sets packed by their lengths.
    let (_, x) = common::load_f32(&fx, "x");
    let (_, y) = common::load_f32(&fx, "y");
    let d = 24;
    let q = tmp.path().join("q.npy");
    npy::write(&q, &[17, d], &x[..17 * d]).unwrap();
    let mut packed = y[..29 * d].to_vec();
    packed.extend_from_slice(&y[29 * d..(29 + 20) * d]);
    let docs = tmp.path().join("docs.npy");
    npy::write(&docs, &[49, d], &packed).unwrap();
    let lens = tmp.path().join("lens.npy");
    npy::write(&lens, &[2], &[29i64, 20]).unwrap();
    let s = tmp.path().join("s.npy");
    let o = optical(&[
        "ot",
        "maxsim",
        "--queries",
        p(&q),
        "--docs",
        p(&docs),
        "--doc-lengths",
        p(&lens),
        "--out",
        p(&s),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let scores = npy::read(&s).unwrap();
    assert_eq!(scores.shape, vec![2]);
    // Document 0 is y's first set, whose costs against x's first set are in the fixture.
    let want0: f64 = (0..17)
        .map(|i| {
            (0..29)
                .map(|j| 1.0 - want[i * 29 + j])
                .fold(f64::MIN, f64::max)
        })
        .sum();
    assert!(
        (scores.to_f64()[0] - want0).abs() < 1e-4,
        "{} vs {want0}",
        scores.to_f64()[0]
    );
}

struct Bad {
    name: &'static str,
    args: Vec<String>,
    /// Substrings the one-line error must contain.
    expect: Vec<String>,
}

#[test]
fn every_bad_input_is_one_clear_line_with_exit_code_2_and_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    let t = |name: &str| -> PathBuf { tmp.path().join(name) };
    let good = t("good.npy");
    npy::write(&good, &[2, 3, 4], &[0.5f64; 24]).unwrap();
    let rank1 = t("rank1.npy");
    npy::write(&rank1, &[5], &[1.0f32; 5]).unwrap();
    let nan = t("nan.npy");
    let mut v = vec![0.5f32; 24];
    v[13] = f32::NAN;
    npy::write(&nan, &[2, 3, 4], &v).unwrap();
    let inf = t("inf.npy");
    v[13] = f32::INFINITY;
    npy::write(&inf, &[2, 3, 4], &v).unwrap();
    let neg = t("neg.npy");
    npy::write(&neg, &[2, 3], &[1.0f64, -0.5, 1.0, 1.0, 1.0, 1.0]).unwrap();
    let zero = t("zero.npy");
    npy::write(&zero, &[2, 4], &[1.0f64, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]).unwrap();
    let wrong_b = t("wrong_b.npy");
    npy::write(&wrong_b, &[2, 5], &[1.0f64; 10]).unwrap();
    let garbage = t("garbage.npy");
    std::fs::write(&garbage, b"this is not numpy").unwrap();
    let x = t("x.npy");
    npy::write(&x, &[2, 3, 8], &[1.0f32; 48]).unwrap();
    let y_d = t("y_d.npy");
    npy::write(&y_d, &[2, 4, 7], &[1.0f32; 56]).unwrap();
    let y = t("y.npy");
    npy::write(&y, &[2, 4, 8], &[1.0f32; 64]).unwrap();
    let long = t("long.npy");
    npy::write(&long, &[2], &[3i64, 9]).unwrap();
    let float_len = t("float_len.npy");
    npy::write(&float_len, &[2], &[3.0f32, 2.0]).unwrap();
    let missing = t("missing.npy");
    let docs = t("docs.npy");
    npy::write(&docs, &[5, 8], &[1.0f32; 40]).unwrap();
    let empty_doc = t("empty_doc.npy");
    npy::write(&empty_doc, &[3], &[2i64, 0, 3]).unwrap();
    // Finite, but rows whose squares overflow f32 (norm 2.8e13 > 1e12).
    let huge = t("huge.npy");
    npy::write(&huge, &[2, 3, 8], &[1e13f32; 48]).unwrap();
    // A column of 1e17 beside costs of order 1: f64 cannot resolve them to ε = 0.05.
    let vast = t("vast.npy");
    npy::write(&vast, &[2, 2], &[0.0f64, 1e17, 0.5, 1e17]).unwrap();
    // An f64 row of norm 1e-12, just under the bound once narrowed to f32.
    let tiny_row = t("tiny_row.npy");
    npy::write(&tiny_row, &[1, 4], &[1e-12f64, 0.0, 0.0, 0.0]).unwrap();

    let s = |v: &Path| v.display().to_string();
    let cost = |c: &Path, extra: &[&str]| -> Vec<String> {
        let mut a = vec!["ot".into(), "solve".into(), "--cost".into(), s(c)];
        a.extend(extra.iter().map(|e| e.to_string()));
        a
    };
    let cases = vec![
        Bad {
            name: "wrong rank",
            args: cost(&rank1, &[]),
            expect: vec![s(&rank1), "(b, n, m) or (n, m)".into(), "rank 1".into()],
        },
        Bad {
            name: "NaN",
            args: cost(&nan, &[]),
            expect: vec![s(&nan), "pair 1, entry (0, 1)".into(), "NaN".into()],
        },
        Bad {
            name: "infinity",
            args: cost(&inf, &[]),
            expect: vec![s(&inf), "finite".into(), "inf".into()],
        },
        Bad {
            name: "negative weight",
            args: cost(&good, &["--a", &s(&neg)]),
            expect: vec![s(&neg), "non-negative".into(), "-0.5".into()],
        },
        Bad {
            name: "zero mass",
            args: cost(&good, &["--b", &s(&zero)]),
            expect: vec![s(&zero), "pair 1".into(), "zero total mass".into()],
        },
        Bad {
            name: "weights shape",
            args: cost(&good, &["--b", &s(&wrong_b)]),
            expect: vec![s(&wrong_b), "[2, 4]".into(), "[2, 5]".into()],
        },
        Bad {
            name: "epsilon zero",
            args: cost(&good, &["--epsilon", "0"]),
            expect: vec!["epsilon".into(), "> 0".into()],
        },
        Bad {
            // Positive, but too small to resolve the cost: refused before the solve.
            name: "epsilon too small for the cost",
            args: cost(&good, &["--epsilon", "1e-14"]),
            expect: vec![
                "epsilon".into(),
                "costs up to 5.000e-1".into(),
                "found 1e-14".into(),
            ],
        },
        Bad {
            // Subnormal: −log2(e)/ε overflows whatever the cost.
            name: "epsilon subnormal",
            args: cost(&good, &["--epsilon", "1e-320"]),
            expect: vec![
                "epsilon".into(),
                "smallest normal number".into(),
                "found 1e-320".into(),
            ],
        },
        Bad {
            name: "epsilon too small on the reference",
            args: cost(
                &good,
                &["--epsilon", "1e-320", "--backend", "cpu-reference"],
            ),
            expect: vec!["epsilon".into(), "found 1e-320".into()],
        },
        Bad {
            name: "embedding norm out of range",
            args: vec![
                "ot".into(),
                "solve".into(),
                "--x".into(),
                s(&huge),
                "--y".into(),
                s(&y),
            ],
            expect: vec![
                s(&huge),
                "set 0, row 0".into(),
                "L2 norm 2.828e13".into(),
                "[1e-12, 1e12]".into(),
            ],
        },
        Bad {
            name: "epsilon negative",
            args: cost(&good, &["--epsilon=-1"]),
            expect: vec!["epsilon".into(), "-1".into()],
        },
        Bad {
            name: "threshold negative",
            args: cost(&good, &["--threshold", "-1"]),
            expect: vec!["threshold".into(), "-1".into()],
        },
        Bad {
            name: "check_every zero",
            args: cost(&good, &["--check-every", "0"]),
            expect: vec!["check_every".into()],
        },
        Bad {
            name: "unreadable",
            args: cost(&missing, &[]),
            expect: vec![s(&missing), "open failed".into()],
        },
        Bad {
            name: "not npy",
            args: cost(&garbage, &[]),
            expect: vec![s(&garbage), "not a .npy file".into()],
        },
        Bad {
            name: "unknown backend",
            args: cost(&good, &["--backend", "tpu"]),
            expect: vec!["backend".into(), "tpu".into()],
        },
        Bad {
            name: "embedding dims differ",
            args: vec![
                "ot".into(),
                "solve".into(),
                "--x".into(),
                s(&x),
                "--y".into(),
                s(&y_d),
            ],
            expect: vec![s(&y_d), "d = 8".into()],
        },
        Bad {
            name: "length past the padding",
            args: vec![
                "ot".into(),
                "solve".into(),
                "--x".into(),
                s(&x),
                "--y".into(),
                s(&y),
                "--x-lengths".into(),
                s(&long),
            ],
            expect: vec![s(&long), "set 1 has length 9".into(), "1..=3".into()],
        },
        Bad {
            name: "float lengths",
            args: vec![
                "ot".into(),
                "solve".into(),
                "--x".into(),
                s(&x),
                "--y".into(),
                s(&y),
                "--x-lengths".into(),
                s(&float_len),
            ],
            expect: vec![s(&float_len), "integer".into()],
        },
        Bad {
            name: "cost too large for epsilon",
            args: cost(&vast, &["--epsilon", "0.05"]),
            expect: vec![
                "epsilon".into(),
                "costs up to 1.000e17".into(),
                "found 0.05".into(),
            ],
        },
        Bad {
            name: "row norm rounded under the bound",
            args: vec![
                "ot".into(),
                "cost".into(),
                "--x".into(),
                s(&tiny_row),
                "--y".into(),
                s(&tiny_row),
            ],
            expect: vec![s(&tiny_row), "L2 norm 9.99999996".into()],
        },
        Bad {
            name: "document without tokens",
            args: vec![
                "ot".into(),
                "maxsim".into(),
                "--queries".into(),
                s(&x),
                "--docs".into(),
                s(&docs),
                "--doc-lengths".into(),
                s(&empty_doc),
            ],
            expect: vec![s(&empty_doc), "document 1 has no tokens".into()],
        },
    ];
    for case in cases {
        let out = tmp
            .path()
            .join(format!("out-{}", case.name.replace(' ', "-")));
        let mut args: Vec<&str> = case.args.iter().map(String::as_str).collect();
        args.extend(["--out", p(&out)]);
        let o = optical(&args);
        let err = stderr(&o);
        println!("{}: {}", case.name, err.trim());
        assert_eq!(
            o.status.code(),
            Some(2),
            "{}: exit code; stderr: {err}",
            case.name
        );
        assert_eq!(
            err.trim().lines().count(),
            1,
            "{}: one line: {err}",
            case.name
        );
        assert!(err.starts_with("error: "), "{}: {err}", case.name);
        for want in &case.expect {
            assert!(
                err.contains(want.as_str()),
                "{}: expected {want:?} in {err}",
                case.name
            );
        }
        assert!(
            !out.exists(),
            "{}: no output directory left behind",
            case.name
        );
        assert!(stdout(&o).is_empty(), "{}: nothing on stdout", case.name);
    }
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.contains("partial")),
        "no temporary directories: {names:?}"
    );
}

/// Flags that belong to the other input form are refused, not silently ignored: lengths
/// only mask embeddings, weights only apply to a given cost.
#[test]
fn flags_of_the_other_input_form_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cost = tmp.path().join("cost.npy");
    npy::write(&cost, &[2, 3, 4], &[0.5f32; 24]).unwrap();
    let x = tmp.path().join("x.npy");
    npy::write(&x, &[2, 3, 8], &[1.0f32; 48]).unwrap();
    let lengths = tmp.path().join("lengths.npy");
    npy::write(&lengths, &[2], &[1i64, 2]).unwrap();
    let weights = tmp.path().join("w.npy");
    npy::write(&weights, &[2, 3], &[1.0f32; 6]).unwrap();
    let out = tmp.path().join("out");
    let (c, x, l, w) = (p(&cost), p(&x), p(&lengths), p(&weights));
    for (args, flags) in [
        (
            vec!["--cost", c, "--x-lengths", l],
            ["--x-lengths", "--cost"],
        ),
        (
            vec!["--cost", c, "--y-lengths", l],
            ["--y-lengths", "--cost"],
        ),
        (vec!["--x", x, "--y", x, "--a", w], ["--a", "--x"]),
        (vec!["--x", x, "--y", x, "--b", w], ["--b", "--x"]),
    ] {
        let mut all = vec!["ot", "solve"];
        all.extend(&args);
        all.extend(["--out", p(&out)]);
        let o = optical(&all);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        for flag in flags {
            assert!(err.contains(flag), "{args:?}: expected {flag} in {err}");
        }
        assert!(!out.exists(), "{args:?}: no output directory");
    }
    // Settings of another dataset, and a corpus of another dimension, named as such.
    let q = tmp.path().join("q.npy");
    npy::write(&q, &[3, 8], &[1.0f32; 24]).unwrap();
    let c7 = tmp.path().join("c7.npy");
    npy::write(&c7, &[4, 7], &[1.0f32; 28]).unwrap();
    let run = tmp.path().join("run.txt");
    for (args, wants) in [
        (
            vec!["data", "stats", "tatoeba", "--split", "test"],
            vec!["--split applies to: mafand"],
        ),
        (
            vec![
                "data",
                "export",
                "xquad-r",
                "--english-bible",
                c,
                "--out",
                p(&out),
            ],
            vec!["--english-bible applies to: bible"],
        ),
        (
            vec![
                "search",
                "--queries",
                p(&q),
                "--corpus",
                p(&c7),
                "--out",
                p(&run),
            ],
            vec![p(&c7), "d = 8", "d = 7"],
        ),
    ] {
        let o = optical(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        for want in wants {
            assert!(err.contains(want), "{args:?}: expected {want} in {err}");
        }
        assert!(!out.exists() && !run.exists(), "{args:?}: no output");
    }
}

#[test]
fn bench_refuses_a_negative_or_non_finite_measuring_time() {
    for (value, want) in [
        ("-1", "parameter min_seconds"),
        ("nan", "expected a finite number"),
        ("86401", "at most a day per kernel"),
        ("1e300", "at most a day per kernel"),
    ] {
        let o = optical(&["bench", "--kernels", "cosine-cost", "--min-seconds", value]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{value}: {err}");
        assert!(err.contains(want), "{value}: expected {want:?} in {err}");
        assert!(stdout(&o).is_empty(), "{value}: nothing measured");
    }
    // An unknown name anywhere in the list stops the bench before the first kernel.
    let o = optical(&[
        "bench",
        "--kernels",
        "cosine-cost,nope",
        "--min-seconds",
        "0",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("found nope"), "{}", stderr(&o));
    assert!(stdout(&o).is_empty(), "nothing measured: {}", stdout(&o));
}

/// A directory where an output file should go, or an output in a directory that does not
/// exist, is refused before the work (no model loaded, nothing solved) and in the user's
/// terms, never as a failure on a hidden temporary file.
#[test]
fn output_paths_are_checked_before_the_work() {
    let tmp = tempfile::tempdir().unwrap();
    let x = tmp.path().join("x.npy");
    npy::write(&x, &[2, 3, 8], &[1.0f32; 48]).unwrap();
    let q = tmp.path().join("q.npy");
    npy::write(&q, &[3, 8], &[1.0f32; 24]).unwrap();
    let texts = tmp.path().join("texts.txt");
    std::fs::write(&texts, "hello\n").unwrap();
    let a_file = tmp.path().join("a-file");
    std::fs::write(&a_file, "x").unwrap();
    let dir = p(tmp.path());
    let missing = tmp.path().join("missing").join("out.npy");
    // `ot solve --out` where one of the files it writes is the input.
    let solve_dir = tmp.path().join("solved");
    std::fs::create_dir(&solve_dir).unwrap();
    let plan_input = solve_dir.join("plan.npy");
    npy::write(&plan_input, &[2, 3, 8], &[0.5f32; 48]).unwrap();
    let (solve_dir, plan_input) = (p(&solve_dir), p(&plan_input));
    let slashed = format!("{}/", p(&tmp.path().join("new.npy")));
    let study_config = common::repo_root().join("studies/ood-robustness.toml");
    let study_out = tmp.path().join("study-out");
    let (study_config, study_out) = (p(&study_config).to_string(), p(&study_out).to_string());
    let (x, q, texts, a_file, missing) = (p(&x), p(&q), p(&texts), p(&a_file), p(&missing));
    let before: Vec<Vec<u8>> = [x, q, texts, plan_input]
        .iter()
        .map(|f| std::fs::read(f).unwrap())
        .collect();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        // An output that names an input would destroy it: refused before anything is read.
        (
            vec!["ot", "cost", "--x", x, "--y", q, "--out", x],
            "found the input file",
        ),
        (
            vec!["search", "--queries", q, "--corpus", q, "--out", q],
            "found the input file",
        ),
        (
            vec!["ot", "solve", "--cost", plan_input, "--out", solve_dir],
            "found the input file",
        ),
        (
            vec![
                "encode", "--model", "no-model", "--input", texts, "--out", texts,
            ],
            "found the input file",
        ),
        (
            vec![
                "study",
                "--config",
                texts,
                "--out",
                dir,
                "--report",
                texts,
                "--report-only",
            ],
            "found the input file",
        ),
        (
            vec!["ot", "cost", "--x", x, "--y", x, "--out", dir],
            "found a directory",
        ),
        // A study's report path is checked before its runs, not after them.
        (
            vec![
                "study",
                "--config",
                &study_config,
                "--out",
                &study_out,
                "--report",
                dir,
                "--report-only",
            ],
            "found a directory",
        ),
        (
            vec!["ot", "cost", "--x", x, "--y", x, "--out", missing],
            "does not exist",
        ),
        (
            vec!["ot", "cost", "--x", x, "--y", x, "--out", &slashed],
            "found a path ending in a separator",
        ),
        (
            vec!["ot", "solve", "--x", x, "--y", x, "--out", a_file],
            "a file with that name exists",
        ),
        (
            vec!["search", "--queries", q, "--corpus", q, "--out", dir],
            "found a directory",
        ),
        (
            vec!["search", "--queries", q, "--corpus", q, "--out", missing],
            "does not exist",
        ),
        // the model name is a path that does not exist either: the output is checked first
        (
            vec![
                "encode", "--model", "no-model", "--input", texts, "--out", dir,
            ],
            "found a directory",
        ),
        (
            vec![
                "encode",
                "--model",
                "no-model",
                "--input",
                texts,
                "--pooling",
                "tokens",
                "--out",
                missing,
            ],
            "does not exist",
        ),
    ];
    for (args, want) in cases {
        let o = optical(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: expected {want:?} in {err}");
        assert!(!err.contains("partial"), "{args:?}: {err}");
        assert!(stdout(&o).is_empty(), "{args:?}");
    }
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
    for (f, was) in [x, q, texts, plan_input].iter().zip(&before) {
        assert_eq!(&std::fs::read(f).unwrap(), was, "{f} changed");
    }
    assert!(!Path::new(&slashed).exists());
    assert!(!Path::new(&study_out).exists(), "the study started");
    // The default report path, <out>/STUDY.md, is checked before the runs too.
    let taken = tmp.path().join("study-taken");
    std::fs::create_dir_all(taken.join("STUDY.md")).unwrap();
    let o = optical(&[
        "study",
        "--config",
        &study_config,
        "--out",
        p(&taken),
        "--budget",
        "quick",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("STUDY.md") && err.contains("found a directory"),
        "{err}"
    );
    assert!(!taken.join("runs").exists(), "the study started");

    // A directory where `ot solve` writes one of its files into an existing output
    // directory: refused before any file is replaced, so the outputs stay one run's.
    let cost = tmp.path().join("cost.npy");
    npy::write(&cost, &[2, 2], &[0.3f32, 0.2, 0.9, 0.7]).unwrap();
    let out = tmp.path().join("out");
    let o = optical(&["ot", "solve", "--cost", p(&cost), "--out", p(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::remove_file(out.join("g.npy")).unwrap();
    std::fs::create_dir(out.join("g.npy")).unwrap();
    let plan = std::fs::read(out.join("plan.npy")).unwrap();
    npy::write(&cost, &[2, 2], &[0.1f32, 0.2, 0.3, 0.4]).unwrap();
    let o = optical(&["ot", "solve", "--cost", p(&cost), "--out", p(&out)]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("g.npy") && err.contains("found a directory"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(out.join("plan.npy")).unwrap(),
        plan,
        "plan replaced"
    );
}

/// `data list` says what each dataset's directory holds: a LAReQA dataset with some of its
/// languages' files is partial (naming the missing ones), a data directory that is a file
/// is said to be one.
#[test]
fn data_list_names_partial_datasets_and_a_data_dir_that_is_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let xq = tmp.path().join("lareqa").join("xquad-r");
    std::fs::create_dir_all(&xq).unwrap();
    std::fs::write(xq.join("en.json"), "{}").unwrap();
    let o = optical(&["data", "list", "--data-dir", p(tmp.path())]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        out.contains("xquad-r  partial (no ar.json, de.json, el.json"),
        "{out}"
    );
    assert!(out.contains("mlqa-r   missing"), "{out}");
    fails_with(
        &["data", "stats", "xquad-r", "--data-dir", p(tmp.path())],
        &["found no ar.json", "the languages present: en"],
    );
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let o = optical(&["data", "list", "--data-dir", p(&file)]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.contains("(a file, not a directory)"), "{out}");
}

/// `optical study --config CONFIG --budget quick --out OUT`.
fn quick_study<'a>(config: &'a Path, out: &'a Path) -> Vec<&'a str> {
    vec![
        "study",
        "--config",
        p(config),
        "--budget",
        "quick",
        "--out",
        p(out),
    ]
}

/// A study's report may not replace the study's own files (a run's `result.json`), nor a
/// file that is not an earlier report, nor have a file where its plots go: refused before
/// any run.
#[test]
fn a_study_report_path_that_would_replace_other_files_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let config = common::repo_root().join("studies/ood-robustness.toml");
    let out = tmp.path().join("s");
    let notes = tmp.path().join("notes.md");
    std::fs::write(&notes, "my notes").unwrap();
    std::fs::write(tmp.path().join("r-plots"), "x").unwrap();
    for (report, want) in [
        (
            out.join("runs").join("base-A").join("result.json"),
            "outside the study's runs/ directory",
        ),
        (
            notes.clone(),
            "an earlier report of `optical study`, found another file",
        ),
        (
            tmp.path().join("R.md"),
            "r-plots: write the report's plots into",
        ),
    ] {
        let mut args = quick_study(&config, &out);
        args.extend(["--report", p(&report)]);
        fails_with(&args, &[want]);
    }
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "my notes");
    assert!(!out.exists(), "nothing written");
}

/// Directories of the wrong kind: a study's --out that is a file, and a distillation run
/// directory given as a model (its model is the `student` inside it).
#[test]
fn wrong_kinds_of_directory_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let a_file = tmp.path().join("a-file");
    std::fs::write(&a_file, "x").unwrap();
    let config = common::repo_root().join("studies/ood-robustness.toml");
    let o = optical(&quick_study(&config, &a_file));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("a-file, a file"), "{err}");

    // Input that is not UTF-8: named with the byte's offset, before any model loads.
    let latin1 = tmp.path().join("latin1.txt");
    std::fs::write(&latin1, b"ok\ncaf\xe9\n").unwrap();
    let o = optical(&[
        "encode",
        "--model",
        "no-model",
        "--input",
        p(&latin1),
        "--out",
        p(&tmp.path().join("l.npy")),
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("latin1.txt") && err.contains("offset 6"),
        "{err}"
    );

    let run = tmp.path().join("run");
    std::fs::create_dir_all(run.join("student")).unwrap();
    std::fs::write(run.join("student/config.json"), "{}").unwrap();
    let texts = tmp.path().join("texts.txt");
    std::fs::write(&texts, "hello\n").unwrap();
    let out = tmp.path().join("e.npy");
    let o = optical(&[
        "encode",
        "--model",
        p(&run),
        "--input",
        p(&texts),
        "--out",
        p(&out),
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("distillation run directory") && err.contains("run/student"),
        "{err}"
    );
}

/// An output path that is a symbolic link is written through (the link stays, its target
/// gets the file); one that is a named pipe is written into, not replaced by a file.
#[cfg(unix)]
#[test]
fn outputs_are_written_through_links_and_into_pipes() {
    use std::os::unix::fs::FileTypeExt;
    let tmp = tempfile::tempdir().unwrap();
    let x = tmp.path().join("x.npy");
    npy::write(&x, &[3, 8], &(0..24).map(|v| v as f32).collect::<Vec<_>>()).unwrap();
    let x = p(&x);

    let target = tmp.path().join("target.npy");
    let link = tmp.path().join("link.npy");
    std::os::unix::fs::symlink("target.npy", &link).unwrap();
    let o = optical(&["ot", "cost", "--x", x, "--y", x, "--out", p(&link)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    let (shape, _) = common::load_f32(tmp.path(), "target");
    assert_eq!(shape, [3, 3]);
    assert!(target.is_file());

    let fifo = tmp.path().join("fifo.npy");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    let o = optical(&["ot", "cost", "--x", x, "--y", x, "--out", p(&fifo)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bytes = reader.join().unwrap();
    assert!(bytes.starts_with(b"\x93NUMPY"), "{} bytes", bytes.len());
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());

    // `ot solve` into an existing directory writes through a link there too.
    let cost = tmp.path().join("cost.npy");
    npy::write(&cost, &[2, 2], &[0.3f32, 0.2, 0.9, 0.7]).unwrap();
    let solved = tmp.path().join("solved");
    std::fs::create_dir(&solved).unwrap();
    std::fs::write(tmp.path().join("plan-target.npy"), b"old").unwrap();
    let plan_link = solved.join("plan.npy");
    std::os::unix::fs::symlink("../plan-target.npy", &plan_link).unwrap();
    let o = optical(&["ot", "solve", "--cost", p(&cost), "--out", p(&solved)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::symlink_metadata(&plan_link)
        .unwrap()
        .file_type()
        .is_symlink());
    let (shape, plan) = load(tmp.path(), "plan-target");
    assert_eq!(shape, [2, 2]);
    assert!((plan.iter().sum::<f64>() - 1.0).abs() < 1e-5, "{plan:?}");

    // /dev/stdout when standard output is a pipe (its link ends at `pipe:[N]`).
    let o = optical(&["ot", "cost", "--x", x, "--y", x, "--out", "/dev/stdout"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        o.stdout.starts_with(b"\x93NUMPY"),
        "{} bytes",
        o.stdout.len()
    );

    // /dev/stdout when standard output is a file opened for appending (`>> all.npy`): what
    // was there stays, the array follows it, and so does the summary printed after it
    // (renaming over the file would have unlinked the one the shell holds).
    let all = tmp.path().join("all.out");
    std::fs::write(&all, b"before\n").unwrap();
    let appended = std::fs::OpenOptions::new().append(true).open(&all).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_optical"))
        .args(["ot", "cost", "--x", x, "--y", x, "--out", "/dev/stdout"])
        .stdout(appended)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let as_file = tmp.path().join("as-file.npy");
    let o = optical(&["ot", "cost", "--x", x, "--y", x, "--out", p(&as_file)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut want = b"before\n".to_vec();
    want.extend(std::fs::read(&as_file).unwrap());
    assert_eq!(std::fs::read(&all).unwrap(), want);
}

/// A reader that goes away (`optical info | head -1`) ends the process quietly, as Unix tools
/// do, instead of a panic with exit code 101. (`info` probes the backends before it prints,
/// so the pipe is closed by then.)
#[cfg(unix)]
#[test]
fn a_closed_pipe_ends_the_process_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let mut child = Command::new(env!("CARGO_BIN_EXE_optical"))
        .args(["info"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        o.status.code() != Some(101),
        "exit {:?}, signal {:?}: {err}",
        o.status.code(),
        o.status.signal()
    );
}

#[test]
fn info_and_bench_json() {
    let o = optical(&["info", "--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let backends = v["backends"].as_array().unwrap();
    assert!(backends
        .iter()
        .any(|b| b["backend"] == "cpu" && b["available"] == true));
    assert!(backends.iter().any(|b| b["backend"] == "wgpu"));

    let o = optical(&[
        "bench",
        "--json",
        "--kernels",
        "sinkhorn,cosine-cost",
        "--min-seconds",
        "0",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["kernel"], "sinkhorn");
    assert!(lines[0]["gexp_per_s"].as_f64().unwrap() > 0.0);
    assert!(lines[1]["gb_per_s"].as_f64().unwrap() > 0.0);
    let o = optical(&["bench", "--kernels", "nope"]);
    assert_eq!(o.status.code(), Some(2));
}

/// `optical bench compare` as CI runs it: a run against itself passes, a slower run fails
/// with exit status 1 after printing the table, bad files are exit status 2.
#[test]
fn bench_compare_passes_a_run_against_itself_and_fails_a_slower_one() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.json");
    let o = optical(&[
        "bench",
        "--json",
        "--kernels",
        "cosine-cost,sinkhorn",
        "--min-seconds",
        "0",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::write(&base, &o.stdout).unwrap();

    let o = optical(&[
        "bench",
        "compare",
        p(&base),
        p(&base),
        "--max-slowdown",
        "0",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = stdout(&o);
    assert!(table.contains("cpu      cosine-cost  wall"), "{table}");
    assert!(
        table.contains("2 compared: 0 slower, 0 faster, 2 the same"),
        "{table}"
    );

    // The same run with the Sinkhorn 20 % slower and the cost 20 % faster.
    let slower: String = std::fs::read_to_string(&base)
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let f = if v["kernel"] == "sinkhorn" {
                1.2
            } else {
                1.0 / 1.2
            };
            let s = v["seconds_per_call"].as_f64().unwrap();
            v["seconds_per_call"] = (s * f).into();
            v.to_string() + "\n"
        })
        .collect();
    let new = dir.path().join("new.json");
    std::fs::write(&new, slower).unwrap();
    let o = optical(&["bench", "compare", p(&base), p(&new)]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let table = stdout(&o);
    assert!(table.contains("+20.0%  SLOWER"), "{table}");
    assert!(table.contains("-16.7%  faster"), "{table}");
    assert!(
        stderr(&o).contains(
            "1 of 2 timings are more than 10.0 % slower than the base: cpu/sinkhorn wall +20.0 %"
        ),
        "{}",
        stderr(&o)
    );
    // A wider band passes it; --json gives the same verdicts.
    let o = optical(&[
        "bench",
        "compare",
        p(&base),
        p(&new),
        "--max-slowdown",
        "25",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let verdicts: Vec<&str> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts, ["same", "same"]);
    // A new run that lost a kernel (a crash part-way): listed and passed by default,
    // refused with --require-all (after the table).
    let partial = dir.path().join("partial.json");
    let first_line = std::fs::read_to_string(&base).unwrap();
    std::fs::write(&partial, first_line.lines().next().unwrap()).unwrap();
    let o = optical(&["bench", "compare", p(&base), p(&partial)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("only in the base run"),
        "{}",
        stdout(&o)
    );
    let o = optical(&["bench", "compare", p(&base), p(&partial), "--require-all"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("only in the base run"),
        "{}",
        stdout(&o)
    );
    assert!(
        stderr(&o).contains("found none for cpu/sinkhorn"),
        "{}",
        stderr(&o)
    );
    // 1.2 and 1/1.2 cancel out.
    assert!(
        v["geometric_mean_change"].as_f64().unwrap().abs() < 1e-9,
        "{v}"
    );

    // The committed gpu-check results read as runs (variants cuda, cuda-fp32, wgpu, cpu).
    let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/results");
    let o = optical(&[
        "bench",
        "compare",
        p(&results.join("2026-11-26-h200-run1.json")),
        p(&results.join("2026-11-26-h200.json")),
        "--max-slowdown",
        "100",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("cuda     sinkhorn-fused   device"),
        "{}",
        stdout(&o)
    );

    // Bad input: exit status 2 and one line that says what was wrong.
    let text = dir.path().join("table.txt");
    std::fs::write(
        &text,
        stdout(&optical(&[
            "bench",
            "--kernels",
            "cosine-cost",
            "--min-seconds",
            "0",
        ])),
    )
    .unwrap();
    let missing = dir.path().join("missing.json");
    for (args, expected) in [
        (
            vec![p(&base), p(&text)],
            "line 1: expected a JSON record as `optical bench --json` prints",
        ),
        (vec![p(&base), p(&missing)], "missing.json: read failed"),
        (
            vec![p(&base), p(&base), "--metric", "device"],
            "use --metric wall",
        ),
        (
            vec![p(&base), p(&base), "--metric", "cpu"],
            "parameter metric: expected auto, wall, device or both",
        ),
        (
            vec![p(&base), p(&base), "--max-slowdown", "-5"],
            "parameter max_slowdown",
        ),
    ] {
        let o = optical(&[&["bench", "compare"][..], &args].concat());
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stdout(&o).is_empty(), "{args:?}: {}", stdout(&o));
        assert!(stderr(&o).contains(expected), "{args:?}: {}", stderr(&o));
    }
    // Timing flags do not mix with the subcommand.
    let o = optical(&["bench", "--json", "compare", p(&base), p(&base)]);
    assert_eq!(o.status.code(), Some(2));
}

/// A bad CUDA setting in the environment (`OPTICAL_CUDA_COST_KERNEL`,
/// `OPTICAL_CUDA_FUSED_THREADS`, ...) is one clear line and exit code 2, before any CUDA device
/// is looked for (so it is the same on a machine without one).
#[cfg(feature = "cuda")]
#[test]
fn bad_cuda_settings_are_clear_errors() {
    for (var, value, kernel, expected) in [
        (
            "OPTICAL_CUDA_COST_KERNEL",
            "tf32",
            "cosine-cost",
            "auto, tf32x3, fp32, tf32x3w, wgmma or wgmma-rs",
        ),
        (
            "OPTICAL_CUDA_FUSED_THREADS",
            "384",
            "sinkhorn-fused",
            "auto, 512 or 256",
        ),
        (
            "OPTICAL_CUDA_STAGING",
            "locked",
            "cosine-cost",
            "pinned or pageable",
        ),
        ("OPTICAL_CUDA_MAXSIM", "fast", "maxsim", "tiled or direct"),
        (
            "OPTICAL_CUDA_FUSED_COST",
            "async",
            "sinkhorn-fused",
            "serial, pipelined or standalone",
        ),
        ("OPTICAL_CUDA_WGMMA_STAGES", "4", "cosine-cost", "2 or 3"),
        (
            "OPTICAL_CUDA_LSE",
            "max",
            "sinkhorn-fused",
            "shifted, absorbed or scaled",
        ),
        (
            "OPTICAL_CUDA_CHECKS",
            "gpu",
            "sinkhorn-checks",
            "device or host",
        ),
    ] {
        let err = bad_setting("cuda", var, value, kernel, expected);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}

/// `optical bench --backend BACKEND --kernels KERNEL` with `var=value`: exit code 2 and an
/// error naming the variable, the value and what was expected; its stderr.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn bad_setting(backend: &str, var: &str, value: &str, kernel: &str, expected: &str) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_optical"))
        .args(["bench", "--backend", backend, "--kernels", kernel])
        .env(var, value)
        .output()
        .expect("binary runs");
    assert_eq!(o.status.code(), Some(2), "{var}: {}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(var) && err.contains(expected) && err.contains(value),
        "{err}"
    );
    err
}

/// On a headless machine (neither `XDG_RUNTIME_DIR` nor `DISPLAY`), probing Vulkan adds no
/// foreign `error:` line to optical's output: Mesa's device-select layer would print
/// `error: XDG_RUNTIME_DIR is invalid or not set in the environment.` while wgpu enumerates
/// adapters, which reads like optical's own error.
#[cfg(feature = "wgpu")]
#[test]
fn a_headless_vulkan_probe_prints_no_foreign_error() {
    let o = Command::new(env!("CARGO_BIN_EXE_optical"))
        .arg("info")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("DISPLAY")
        .env_remove("NODEVICE_SELECT")
        .env_remove("MESA_VK_DEVICE_SELECT")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("XDG_RUNTIME_DIR"), "{err}");
}

#[cfg(feature = "wgpu")]
#[test]
fn bad_wgpu_settings_are_clear_errors() {
    for (var, value, kernel, expected) in [
        (
            "OPTICAL_WGPU_COST",
            "wide",
            "cosine-cost",
            "blocked or tile",
        ),
        (
            "OPTICAL_WGPU_SINKHORN",
            "fast",
            "sinkhorn",
            "blocked or rows",
        ),
        (
            "OPTICAL_WGPU_MAXSIM",
            "wide",
            "maxsim",
            "auto, blocked or tile",
        ),
        (
            "OPTICAL_WGPU_CHECKS",
            "gpu",
            "sinkhorn-checks",
            "auto, device or host",
        ),
        ("OPTICAL_WGPU_LSE", "fast", "sinkhorn", "max or shifted"),
    ] {
        // Not one line: Mesa's drivers may add their own (XDG_RUNTIME_DIR) while probing.
        bad_setting("wgpu", var, value, kernel, expected);
    }
}

#[test]
fn help_on_every_command() {
    for args in [
        vec!["--help"],
        vec!["ot", "--help"],
        vec!["ot", "solve", "--help"],
        vec!["ot", "cost", "--help"],
        vec!["ot", "maxsim", "--help"],
        vec!["info", "--help"],
        vec!["bench", "--help"],
        vec!["bench", "compare", "--help"],
    ] {
        let o = optical(&args);
        assert!(o.status.success(), "{args:?}");
        assert!(stdout(&o).contains("Usage"), "{args:?}");
    }
    let o = optical(&["bench", "--help"]);
    assert!(
        stdout(&o).contains("sinkhorn      b=64, n=m=128"),
        "standard problems stated in --help"
    );
    // Each `ot` command's help is its whole description: the files it writes, the shapes.
    for (command, needle) in [
        ("solve", "plan.npy"),
        ("cost", "0 on"),
        ("maxsim", "--doc-lengths"),
    ] {
        let o = optical(&["ot", command, "--help"]);
        assert!(stdout(&o).contains(needle), "ot {command}: {}", stdout(&o));
    }
    // A negative count is a bad value of its flag, not an unknown argument.
    let o = optical(&[
        "ot",
        "solve",
        "--cost",
        "c.npy",
        "--max-iterations",
        "-1",
        "--out",
        "o",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("invalid value '-1' for '--max-iterations"),
        "{}",
        stderr(&o)
    );
    let listing = stdout(&optical(&["ot", "--help"]));
    assert!(
        listing.contains("solve   Solve batched entropic OT"),
        "{listing}"
    );
}

#[test]
fn unconverged_pairs_get_a_warning_that_says_why() {
    let fx = fixture_dir("padded_12x10");
    let tmp = tempfile::tempdir().unwrap();
    let cost = npy::read(&fx.join("cost.npy")).unwrap();
    // The fixture's cost scaled by 1e4: it spans ~1e4, 2e5 ε, so 20 iterations fall short.
    let scaled: Vec<f64> = cost.to_f64().iter().map(|v| v * 1e4).collect();
    let big = tmp.path().join("big.npy");
    npy::write(&big, &cost.shape, &scaled).unwrap();
    let run = |cost: &Path, extra: &[&str]| {
        let out = tmp.path().join("out");
        let mut args = vec!["ot", "solve", "--cost", p(cost), "--out", p(&out)];
        args.extend_from_slice(extra);
        let o = optical(&args);
        assert!(
            o.status.success(),
            "not converging is not an error: {}",
            stderr(&o)
        );
        let summary: serde_json::Value =
            serde_json::from_str(stdout(&o).trim()).expect("one JSON line");
        (summary, stderr(&o))
    };
    let (summary, err) = run(&big, &["--max-iterations", "20"]);
    assert_eq!(summary["converged"], 0);
    assert!(
        err.contains("3 of 3 pairs did not converge in 20 iterations"),
        "{err}"
    );
    assert!(
        err.contains("times ε") && err.contains("rescale the cost"),
        "{err}"
    );
    // A threshold the f32 path cannot reach: the hint names the f64 backend.
    let (summary, err) = run(
        &fx.join("cost.npy"),
        &["--threshold", "1e-12", "--max-iterations", "50"],
    );
    assert_eq!(summary["converged"], 0);
    assert!(err.contains("--backend cpu-reference"), "{err}");
    // Converged: nothing on stderr.
    let (summary, err) = run(&fx.join("cost.npy"), &[]);
    assert_eq!(summary["converged"], 3);
    assert!(err.is_empty(), "{err}");
}

/// `optical info` lists every kernel setting with the choice in effect, and a value that
/// names no choice is shown as such (with the backend's error) instead of failing `info`.
// The GPU backends' settings exist in builds with their features (as `make test` builds).
#[cfg(all(feature = "wgpu", feature = "cuda"))]
#[test]
fn info_lists_the_settings_and_flags_a_value_that_is_no_choice() {
    let o = Command::new(env!("CARGO_BIN_EXE_optical"))
        .args(["info", "--json"])
        .env("OPTICAL_CPU_SINKHORN", "log")
        .env("OPTICAL_CUDA_LSE", "bogus")
        .env_remove("OPTICAL_WGPU_LSE")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let settings = v["settings"].as_array().unwrap();
    let find = |var: &str| {
        settings
            .iter()
            .find(|s| s["variable"] == var)
            .unwrap_or_else(|| panic!("{var} missing from {settings:?}"))
    };
    let cpu = find("OPTICAL_CPU_SINKHORN");
    assert_eq!(cpu["value"], "log");
    assert_eq!(cpu["set"], true);
    assert_eq!(
        cpu["choices"],
        serde_json::json!(["scaled", "log", "streamed"])
    );
    let wgpu = find("OPTICAL_WGPU_LSE");
    assert_eq!(wgpu["value"], "max");
    assert_eq!(wgpu["set"], false);
    let cuda = find("OPTICAL_CUDA_LSE");
    assert!(cuda["value"].is_null(), "{cuda}");
    let err = cuda["error"].as_str().unwrap();
    assert!(
        err.contains("shifted, absorbed or scaled") && err.contains("bogus"),
        "{err}"
    );

    let o = Command::new(env!("CARGO_BIN_EXE_optical"))
        .arg("info")
        .env("OPTICAL_CUDA_LSE", "bogus")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("OPTICAL_CUDA_LSE") && text.contains("INVALID"),
        "{text}"
    );
    assert!(text.contains("OPTICAL_CUDA_COST_KERNEL"), "{text}");
}

/// Every `OPTICAL_*` variable that the scripts, docs and sources name is a setting that
/// `optical info` lists or one of the free-form variables below, and every value they give a
/// setting is one of its choices: a misspelt variable or value would otherwise be ignored or
/// fail only on a GPU machine, in a run whose minutes are counted. gpu-check's `--kernels`
/// lists name bench problems, and its Nsight `--kernel-name`s name entry points of
/// `kernels/*.ptx`.
// The GPU backends' settings exist in builds with their features (as `make test` builds).
#[cfg(all(feature = "wgpu", feature = "cuda"))]
#[test]
fn scripts_and_docs_name_only_real_settings_choices_and_kernels() {
    const FREE_FORM: [&str; 11] = [
        "OPTICAL_ALLOW_MISSING_DATA",
        "OPTICAL_CACHE",
        "OPTICAL_DATA_DIR",
        "OPTICAL_DATA_MIRROR",
        "OPTICAL_GPU_CHECK_SOURCE",
        "OPTICAL_KERNELS",
        "OPTICAL_REQUIRE_CUDA",
        "OPTICAL_SKIP_PTXAS",
        "OPTICAL_SKIP_WGPU",
        "OPTICAL_TEST_FLAVOUR_UNSET",
        "OPTICAL_WGPU_ADAPTER",
    ];
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let o = optical(&["info", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let settings: std::collections::HashMap<String, Vec<String>> = v["settings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let choices = s["choices"].as_array().unwrap();
            (
                s["variable"].as_str().unwrap().to_string(),
                choices
                    .iter()
                    .map(|c| c.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect();

    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if !path.ends_with("results") {
                    walk(&path, out);
                }
            } else if path
                .extension()
                .is_some_and(|e| ["sh", "py", "md", "rs", "toml"].iter().any(|x| e == *x))
            {
                out.push(path);
            }
        }
    }
    let mut files = vec![root.join("README.md"), root.join("Makefile")];
    for dir in ["scripts", "docs", "src", "benches", ".ci"] {
        walk(&root.join(dir), &mut files);
    }
    let is_name = |c: char| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_';
    let is_value = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
    let mut problems = Vec::new();
    let mut seen = 0usize;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let rel = file.strip_prefix(root).unwrap().display();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("OPTICAL_") {
            rest = &rest[at..];
            let name_len = rest.find(|c: char| !is_name(c)).unwrap_or(rest.len());
            let family = rest[..name_len].ends_with('_');
            let name = rest[..name_len].trim_end_matches('_');
            rest = &rest[name_len..];
            // `OPTICAL_CUDA_*`, `"OPTICAL_CUDA_"` and the like name a family, not a variable.
            if name == "OPTICAL" || family || rest.starts_with('*') {
                continue;
            }
            seen += 1;
            let Some(choices) = settings.get(name) else {
                if !FREE_FORM.contains(&name) {
                    problems.push(format!(
                        "{rel}: {name} is neither a setting nor a known variable"
                    ));
                }
                continue;
            };
            // `VAR=value` (shell) or `"VAR": "value"` (Python).
            let after = rest
                .strip_prefix('=')
                .or_else(|| rest.strip_prefix("\": \""));
            if let Some(after) = after {
                let value = &after[..after.find(|c: char| !is_value(c)).unwrap_or(after.len())];
                let value = value.trim_end_matches('.');
                if !value.is_empty() && !choices.iter().any(|c| c == value) {
                    problems.push(format!("{rel}: {name}={value} is not one of {choices:?}"));
                }
            }
        }
    }
    assert!(
        seen > 100,
        "only {seen} mentions of OPTICAL_ variables found"
    );

    // gpu-check's bench problems and profiled entry points.
    let mut kernels: Vec<&str> = optical::bench::KERNELS.to_vec();
    kernels.extend(optical::bench::EXTRA_KERNELS);
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(root.join("kernels")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            if let Some(rest) = line.trim().strip_prefix(".visible .entry ") {
                entries.push(rest.trim_end_matches('(').trim().to_string());
            }
        }
    }
    assert!(
        entries.iter().any(|e| e == "sinkhorn_fused_f32"),
        "{entries:?}"
    );
    let cost_kernels = &settings["OPTICAL_CUDA_COST_KERNEL"];
    let script = std::fs::read_to_string(root.join("scripts/gpu-check.sh")).unwrap();
    let literal = |w: &str| !w.starts_with('"') && !w.starts_with('$');
    let (mut lists, mut names, mut profiles) = (0, 0, 0);
    for line in script.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let words: Vec<&str> = line.split_whitespace().collect();
        for (i, w) in words.iter().enumerate() {
            let next = words.get(i + 1).copied().filter(|n| literal(n));
            match (*w, next) {
                ("--kernels", Some(list)) => {
                    lists += 1;
                    for k in list.split(',') {
                        if !kernels.contains(&k) {
                            problems
                                .push(format!("gpu-check: --kernels {k}: not one of {kernels:?}"));
                        }
                    }
                }
                ("--kernel-name", Some(name)) => {
                    names += 1;
                    if !entries.iter().any(|e| e == name) {
                        problems.push(format!("gpu-check: --kernel-name {name}: no such entry"));
                    }
                }
                // profile NAME ENTRY COST-KERNEL PROBLEM
                ("profile", Some(_)) if words.len() >= i + 5 => {
                    profiles += 1;
                    let (entry, cost, problem) = (words[i + 2], words[i + 3], words[i + 4]);
                    if !entries.iter().any(|e| e == entry) {
                        problems.push(format!("gpu-check: profile {entry}: no such entry"));
                    }
                    if !cost_kernels.iter().any(|c| c == cost) {
                        problems.push(format!(
                            "gpu-check: profile cost kernel {cost}: not one of {cost_kernels:?}"
                        ));
                    }
                    if !kernels.contains(&problem) {
                        problems.push(format!(
                            "gpu-check: profile problem {problem}: not one of {kernels:?}"
                        ));
                    }
                }
                _ => {}
            }
        }
    }
    assert!(
        lists > 10 && names >= 2 && profiles >= 8,
        "{lists} {names} {profiles}"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Outputs the machine cannot hold (4 TiB of cost or scores from 4 MiB inputs) are refused
/// with exit 2 before the work, on every CPU backend, instead of aborting the process at
/// the allocation.
#[test]
fn outputs_too_large_to_allocate_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let n = 1usize << 20;
    let x = tmp.path().join("x.npy");
    npy::write(&x, &[n, 1], &vec![1.0f32; n]).unwrap();
    let q = tmp.path().join("q.npy");
    npy::write(&q, &[n, 1, 1], &vec![1.0f32; n]).unwrap();
    let lengths = tmp.path().join("l.npy");
    npy::write(&lengths, &[n], &vec![1i64; n]).unwrap();
    let out = tmp.path().join("out.npy");
    let (x, q, lengths, out) = (p(&x), p(&q), p(&lengths), p(&out));
    for backend in ["cpu", "cpu-reference"] {
        for (args, want) in [
            (
                vec!["ot", "cost", "--x", x, "--y", x, "--out", out],
                "cosine cost: the output (b, n, m) = (1, 1048576, 1048576) f32 needs 4096.0 GiB, \
                 more than this machine can allocate",
            ),
            (
                vec![
                    "ot",
                    "maxsim",
                    "--queries",
                    q,
                    "--docs",
                    x,
                    "--doc-lengths",
                    lengths,
                    "--out",
                    out,
                ],
                "maxsim: the output (queries, documents) = (1048576, 1048576) f32 needs 4096.0 \
                 GiB, more than this machine can allocate",
            ),
        ] {
            let mut args = args.clone();
            args.extend(["--backend", backend]);
            let o = optical(&args);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }
    assert!(!Path::new(out).exists());
}

/// `data export` writes all of its files or none (a name it cannot take leaves the directory
/// as it was), and names the files an earlier export left that this one did not write.
#[test]
fn data_export_is_all_or_nothing_and_names_stale_files() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(data.join("tatoeba")).unwrap();
    for lang in ["afr", "deu"] {
        for (ext, text) in [(lang, "een\ntwee\n"), ("eng", "one\ntwo\n")] {
            std::fs::write(data.join(format!("tatoeba/tatoeba.{lang}-eng.{ext}")), text).unwrap();
        }
    }
    // `data export DATASET --FLAG VALUE --out OUT` on the test's data directory.
    let export_with = |dataset: &str, flag: &str, value: &str, out: &Path| {
        optical(&[
            "data",
            "export",
            dataset,
            "--data-dir",
            p(&data),
            flag,
            value,
            "--out",
            p(out),
        ])
    };
    let export =
        |languages: &str, out: &Path| export_with("tatoeba", "--languages", languages, out);
    let ex = tmp.path().join("ex");
    let o = export("afr,deu", &ex);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(ex.join("deu-eng.qrels").is_file() && ex.join("eng-afr.candidates.tsv").is_file());
    let o = export("afr", &ex);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("also holds exported files this export did not write")
            && err.contains("deu-eng.qrels")
            && !err.contains("afr-eng.qrels"),
        "{err}"
    );
    // A directory where one of the files goes: refused, and nothing else replaced.
    let ex2 = tmp.path().join("ex2");
    std::fs::create_dir_all(ex2.join("eng-afr.queries.tsv")).unwrap();
    let o = export("afr,deu", &ex2);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("eng-afr.queries.tsv"), "{}", stderr(&o));
    let left: Vec<_> = std::fs::read_dir(&ex2)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["eng-afr.queries.tsv"]);
    assert!(
        std::fs::read_dir(tmp.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("partial")),
        "a temporary directory was left"
    );
    // Task names are languages only: an export of another MAFAND split (or dataset) into
    // the same directory would replace this one's files, so it is refused.
    std::fs::create_dir_all(data.join("mafand/en-hau")).unwrap();
    for split in ["dev", "test"] {
        for lang in ["hau", "en"] {
            std::fs::write(data.join(format!("mafand/en-hau/{split}.{lang}")), "a\nb\n").unwrap();
        }
    }
    let mafand = |split: &str, out: &Path| export_with("mafand", "--split", split, out);
    let ex3 = tmp.path().join("ex3");
    let o = mafand("dev", &ex3);
    assert!(o.status.success(), "{}", stderr(&o));
    let dev = std::fs::read_to_string(ex3.join("hau-eng.qrels")).unwrap();
    let o = mafand("dev", &ex3);
    assert!(o.status.success(), "the same export again: {}", stderr(&o));
    let o = mafand("test", &ex3);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("found an export of mafand (dev)") && err.contains("one of mafand (test)"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(ex3.join("hau-eng.qrels")).unwrap(),
        dev
    );
    let o = export("afr", &ex3);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("one of tatoeba,"), "{}", stderr(&o));
    // Exported files without a manifest (an earlier version's): not replaced on a guess.
    std::fs::remove_file(ex3.join("export.json")).unwrap();
    let o = mafand("test", &ex3);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no export.json"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(ex3.join("hau-eng.qrels")).unwrap(),
        dev
    );
}

/// A write that fails because the device is full exits 1 (the machine's state), not 2 (a
/// mistake on the command line).
#[cfg(target_os = "linux")]
#[test]
fn a_full_device_is_not_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let x = tmp.path().join("x.npy");
    npy::write(&x, &[2, 3], &[1.0f32; 6]).unwrap();
    let o = optical(&[
        "ot",
        "cost",
        "--x",
        p(&x),
        "--y",
        p(&x),
        "--out",
        "/dev/full",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("/dev/full"), "{err}");
    // Standard output on a full device: the results line fails to write, and that is an
    // error message with exit 1, not a panic (101).
    for args in [vec!["info"], vec!["data", "list"]] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_optical"))
            .args(&args)
            .stdout(std::process::Stdio::from(full))
            .output()
            .unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("standard output") && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
}
