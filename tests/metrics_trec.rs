//! The measures against pytrec_eval (trec_eval 9) on the committed fixtures of
//! `scripts/make_trec_fixtures.py`: seeded random runs with ties, graded and negative
//! levels, unjudged documents, queries without relevant documents, queries only in the
//! run or only in the qrels, and a query with more than 1,000 documents.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use optical::retrieval::metrics::{evaluate, Measure};
use optical::retrieval::trec::{read_qrels, read_run};

const TOLERANCE: f64 = 1e-6;

fn fixture(name: &str) -> PathBuf {
    common::repo_root().join("tests/fixtures/trec").join(name)
}

struct Expected {
    measures: Vec<String>,
    mean: BTreeMap<String, f64>,
    per_query: BTreeMap<String, BTreeMap<String, f64>>,
}

fn expected() -> Expected {
    let text = std::fs::read_to_string(fixture("expected.json")).expect("fixture present");
    let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let to_map = |v: &serde_json::Value| -> BTreeMap<String, f64> {
        v.as_object()
            .expect("object")
            .iter()
            .map(|(k, x)| (k.clone(), x.as_f64().expect("number")))
            .collect()
    };
    Expected {
        measures: v["measures"]
            .as_array()
            .expect("measures")
            .iter()
            .map(|m| m.as_str().expect("name").to_string())
            .collect(),
        mean: to_map(&v["mean"]),
        per_query: v["per_query"]
            .as_object()
            .expect("per_query")
            .iter()
            .map(|(q, m)| (q.clone(), to_map(m)))
            .collect(),
    }
}

/// Compare two measure maps; print every mismatch before failing.
fn compare(what: &str, got: &BTreeMap<String, f64>, want: &BTreeMap<String, f64>) -> usize {
    let mut bad = 0;
    for (name, &w) in want {
        match got.get(name) {
            Some(&g) if (g - w).abs() <= TOLERANCE => {}
            other => {
                bad += 1;
                eprintln!("{what} {name}: optical {other:?}, pytrec_eval {w}");
            }
        }
    }
    bad
}

#[test]
fn every_measure_matches_pytrec_eval() {
    let exp = expected();
    let measures = Measure::parse_list(&exp.measures.join(",")).expect("known measures");
    assert_eq!(measures.len(), exp.measures.len());
    let qrels = read_qrels(&fixture("qrels.txt")).expect("qrels parse");
    let run = read_run(&fixture("run.txt")).expect("run parses");
    let ev = evaluate(&qrels, &run, &measures);
    let got_q: Vec<&String> = ev.per_query.keys().collect();
    let want_q: Vec<&String> = exp.per_query.keys().collect();
    assert_eq!(got_q, want_q, "evaluated queries differ");
    let mut bad = compare("mean", &ev.mean, &exp.mean);
    for (q, want) in &exp.per_query {
        bad += compare(q, &ev.per_query[q], want);
    }
    let got = &ev.per_query;
    let max_err = exp
        .per_query
        .iter()
        .flat_map(|(q, m)| m.iter().map(move |(k, w)| (got[q][k] - w).abs()))
        .fold(0.0f64, f64::max);
    eprintln!(
        "{} queries × {} measures, max abs error {max_err:.3e}",
        exp.per_query.len(),
        measures.len()
    );
    assert_eq!(
        bad, 0,
        "{bad} values differ from pytrec_eval by more than {TOLERANCE}"
    );
}

#[test]
fn cli_prints_the_means_as_one_json_object() {
    let exp = expected();
    let out = Command::new(env!("CARGO_BIN_EXE_optical"))
        .args(["eval", "trec", "--qrels"])
        .arg(fixture("qrels.txt"))
        .arg("--run")
        .arg(fixture("run.txt"))
        .args(["--metrics", &exp.measures.join(",")])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let got: BTreeMap<String, f64> = v
        .as_object()
        .expect("object")
        .iter()
        .map(|(k, x)| (k.clone(), x.as_f64().expect("number")))
        .collect();
    assert_eq!(got.len(), exp.mean.len());
    assert_eq!(compare("cli mean", &got, &exp.mean), 0);

    let out = Command::new(env!("CARGO_BIN_EXE_optical"))
        .args(["eval", "trec", "--per-query", "--metrics", "map", "--qrels"])
        .arg(fixture("qrels.txt"))
        .arg("--run")
        .arg(fixture("run.txt"))
        .output()
        .expect("runs");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let q = v["per_query"].as_object().expect("per_query");
    assert_eq!(q.len(), exp.per_query.len());
    for (qid, m) in q {
        let want = exp.per_query[qid]["map"];
        assert!(
            (m["map"].as_f64().unwrap() - want).abs() <= TOLERANCE,
            "{qid}"
        );
    }
}

#[test]
fn malformed_trec_files_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &str, &str); 6] = [
        ("q.txt", "q1 0 d1 1\nq1 0 d2\n", "line 2: expected 4 fields"),
        (
            "q2.txt",
            "q1 0 d1 high\n",
            "line 1: expected an integer relevance",
        ),
        (
            "q3.txt",
            "q1 0 d1 1\nq1 0 d1 0\n",
            "line 2: document d1 is judged twice",
        ),
        (
            "r.txt",
            "q1 Q0 d1 1 0.5 t\nq1 Q0 d2 2 abc t\n",
            "line 2: expected a score (a number, ±inf allowed), found \"abc\"",
        ),
        (
            "r3.txt",
            "q1 Q0 d1 1 0.5 t\nq1 Q0 d2 2 NaN t\n",
            "line 2: expected a score",
        ),
        (
            "r2.txt",
            "q1 Q0 d1 1 0.5 t\nq1 Q0 d1 2 0.4 t\n",
            "line 2: document d1 is retrieved twice",
        ),
    ];
    for (name, text, want) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        let err = if name.starts_with('q') {
            read_qrels(&p).map(|_| ()).unwrap_err()
        } else {
            read_run(&p).map(|_| ()).unwrap_err()
        };
        let msg = err.to_string();
        assert!(msg.contains(want) && msg.contains(name), "{name}: {msg}");
    }
    let p = dir.path().join("r3.txt");
    std::fs::write(&p, "q1 Q0 d1 1 0.5\n").unwrap();
    assert!(read_run(&p)
        .unwrap_err()
        .to_string()
        .contains("expected 6 fields"));
    // As trec_eval reads them: columns after the tag are ignored, and only ASCII whitespace
    // separates fields (a no-break space is part of a docno).
    let p = dir.path().join("r4.txt");
    std::fs::write(
        &p,
        "q1 Q0 a\u{a0}x 1 0.5 t extra columns\nq1\tQ0\tb 2 0.25 t\n",
    )
    .unwrap();
    let run = read_run(&p).unwrap();
    assert_eq!(
        run["q1"],
        [("a\u{a0}x".to_string(), 0.5), ("b".to_string(), 0.25)]
    );
}

/// Scores beyond f64 (`1e309`, `inf`) rank first, as in trec_eval (which compares scores
/// as f32, so anything beyond 3.4e38 ties with them); the count of
/// evaluated queries, and of judged queries the run lacks, is on stderr.
#[test]
fn cli_takes_infinite_scores_and_counts_the_queries() {
    let dir = tempfile::tempdir().unwrap();
    let qrels = dir.path().join("qrels.txt");
    std::fs::write(&qrels, "q1 0 a 1\nq2 0 b 1\nq3 0 c 1\n").unwrap();
    let run = dir.path().join("run.txt");
    std::fs::write(
        &run,
        "q1 Q0 x 1 1e30 t\nq1 Q0 a 2 1e309 t\nq2 Q0 b 1 -inf t\nq2 Q0 y 2 -1 t\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_optical"))
        .args(["eval", "trec", "--metrics", "P_1", "--per-query", "--qrels"])
        .arg(&qrels)
        .arg("--run")
        .arg(&run)
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(
            "2 queries evaluated; 1 judged query has no results in the run and is left out"
        ),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    // q1: `a` at +inf ranks above 1e30; q2: `b` at -inf ranks below -1.
    assert_eq!(v["per_query"]["q1"]["P_1"], 1.0, "{v}");
    assert_eq!(v["per_query"]["q2"]["P_1"], 0.0, "{v}");
    assert_eq!(v["mean"]["P_1"], 0.5, "{v}");
}

#[test]
fn cli_refuses_a_run_with_no_judged_query() {
    let dir = tempfile::tempdir().unwrap();
    let qrels = dir.path().join("qrels.txt");
    std::fs::write(&qrels, "q1 0 d1 1\n").unwrap();
    let run = dir.path().join("run.txt");
    std::fs::write(&run, "q2 Q0 d1 1 0.5 t\nq3 Q0 d1 1 0.5 t\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_optical"))
        .args(["eval", "trec", "--qrels"])
        .arg(&qrels)
        .arg("--run")
        .arg(&run)
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("run.txt against") && err.contains("the run has 2 queries, the qrels 1"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}
