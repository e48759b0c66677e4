//! `optical eval` end to end on a small LAReQA-format dataset in a temporary data
//! directory: results, report, plots and runs are written, and the measures of the
//! written run (top k = the whole pool) recomputed by `optical eval trec` agree.

use std::path::Path;
use std::process::Command;

const EN: &str = r#"{"data": [{"paragraphs": [
  {"context": "The red house is big. The cat sleeps all day.",
   "sentences": ["The red house is big.", "The cat sleeps all day."],
   "sentence_breaks": [[0, 21], [22, 45]],
   "qas": [{"id": "q1", "question": "Which house is big?", "answers": [{"answer_start": 4}]},
           {"id": "q2", "question": "Who sleeps all day?", "answers": [{"answer_start": 26}]}]},
  {"context": "Rivers flow to the sea.",
   "sentences": ["Rivers flow to the sea."],
   "sentence_breaks": [[0, 23]],
   "qas": [{"id": "q3", "question": "Where do rivers flow?", "answers": [{"answer_start": 19}]}]}
]}]}"#;

const DE: &str = r#"{"data": [{"paragraphs": [
  {"context": "Das rote Haus ist gross. Die Katze schläft den ganzen Tag.",
   "sentences": ["Das rote Haus ist gross.", "Die Katze schläft den ganzen Tag."],
   "sentence_breaks": [[0, 24], [25, 58]],
   "qas": [{"id": "q1", "question": "Welches Haus ist gross?", "answers": [{"answer_start": 4}]},
           {"id": "q2", "question": "Wer schläft den ganzen Tag?", "answers": [{"answer_start": 29}]}]}
]}]}"#;

fn optical(args: &[&str], data: &Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_optical"))
        .args(args)
        .env("OPTICAL_DATA_DIR", data)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

#[test]
fn eval_writes_results_report_plots_and_consistent_runs() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("lareqa/xquad-r");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("en.json"), EN).unwrap();
    std::fs::write(dir.join("de.json"), DE).unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    // The hashing baseline on the two languages, written to `out`, with `extra` flags.
    let eval_hash = |out: &str, extra: &[&str]| {
        let args = [
            "eval",
            "--dataset",
            "xquad-r",
            "--languages",
            "en,de",
            "--model",
            "hash",
            "--out",
            out,
            "--k",
            "5",
            "--no-cache",
        ];
        optical(&[&args[..], extra].concat(), data.path())
    };
    let summary = eval_hash(o, &[]);
    let map = summary["results"]["hash"]["xquad-r"].as_f64().expect("map");
    assert!((0.0..=1.0).contains(&map));
    // Dense scoring never calls the kernels' backend: --backend cuda evaluates the same on
    // a machine without a CUDA driver too.
    let out_cuda = tempfile::tempdir().unwrap();
    let on_cuda = eval_hash(out_cuda.path().to_str().unwrap(), &["--backend", "cuda"]);
    assert_eq!(on_cuda["results"]["hash"]["xquad-r"].as_f64(), Some(map));
    for f in [
        "results.json",
        "report.md",
        "per_language.svg",
        "heatmap_hash_xquad-r.svg",
        "runs/xquad-r.qrels",
        "runs/hash.xquad-r.trec",
    ] {
        assert!(out.path().join(f).is_file(), "{f} missing");
    }
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("results.json")).unwrap())
            .unwrap();
    // What changes the numbers is written beside them.
    assert_eq!(
        results["settings"]["languages"],
        serde_json::json!(["de", "en"])
    );
    assert_eq!(results["settings"]["k"], 5);
    assert_eq!(results["settings"]["candidate_context"], false);
    let task = &results["models"][0]["tasks"][0];
    assert_eq!(task["queries"], 5);
    assert_eq!(task["candidates"], 5);
    assert_eq!(
        task["breakdown"]["candidate_languages"],
        serde_json::json!(["de", "en"])
    );
    // The pool has 5 candidates and k = 5, so the run holds every ranking: trec_eval's
    // measures of the files equal the measures computed during search.
    let names = "map,recip_rank,P_1,ndcg_cut_10";
    let recomputed = optical(
        &[
            "eval",
            "trec",
            "--metrics",
            names,
            "--qrels",
            &format!("{o}/runs/xquad-r.qrels"),
            "--run",
            &format!("{o}/runs/hash.xquad-r.trec"),
        ],
        data.path(),
    );
    for m in names.split(',') {
        let a = recomputed[m].as_f64().unwrap();
        let b = task["metrics"][m].as_f64().unwrap();
        assert!((a - b).abs() < 1e-12, "{m}: trec files {a}, eval {b}");
    }
    // Unknown models and datasets are parameter errors, not panics.
    let bad = Command::new(env!("CARGO_BIN_EXE_optical"))
        .args([
            "eval",
            "--dataset",
            "xquad-r",
            "--model",
            "nope",
            "--out",
            o,
        ])
        .env("OPTICAL_DATA_DIR", data.path())
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("parameter model"));
}

/// Settings of another dataset, and zero counts, are refused before anything is read or
/// encoded (no data directory is needed to see it).
#[test]
fn eval_refuses_settings_of_another_dataset() {
    let out = tempfile::tempdir().unwrap();
    let o = out.path().join("o");
    let o = o.to_str().unwrap();
    for (extra, want) in [
        (
            vec!["--dataset", "tatoeba", "--split", "test"],
            "--split applies to: mafand",
        ),
        (
            vec!["--dataset", "xquad-r", "--max-pairs", "5"],
            "--max-pairs applies to",
        ),
        (
            vec!["--dataset", "mafand", "--candidate-context"],
            "xquad-r and mlqa-r",
        ),
        (
            vec!["--dataset", "tatoeba", "--lareqa-candidates", "query"],
            "--lareqa-candidates applies to: xquad-r and mlqa-r",
        ),
        (
            vec!["--dataset", "xquad-r", "--lareqa-candidates", "answer"],
            "query or passage",
        ),
        (
            vec!["--dataset", "tatoeba", "--english-bible", "b.csv.gz"],
            "--english-bible applies to: bible",
        ),
        (
            vec!["--dataset", "xquad-r", "--k", "0"],
            "parameter k: expected at least 1",
        ),
        (
            vec!["--dataset", "tatoeba", "--batch", "0"],
            "parameter batch",
        ),
        (
            vec!["--dataset", "tatoeba", "--max-length", "0"],
            "parameter max_length: expected at least 2",
        ),
        (
            vec!["--dataset", "tatoeba", "--forward-batch", "0"],
            "parameter forward_batch: expected at least 1, found 0",
        ),
        (
            vec!["--dataset", "tatoeba", "--model", "hash"],
            "found hash twice",
        ),
        (
            vec!["--dataset", "tatoeba", "--model", "x/y,x_y"],
            "found x/y and x_y, both x_y",
        ),
    ] {
        let mut args = vec!["eval", "--model", "hash", "--out", o];
        args.extend(&extra);
        let r = Command::new(env!("CARGO_BIN_EXE_optical"))
            .args(&args)
            .env("OPTICAL_DATA_DIR", out.path().join("no-data"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains(want), "{extra:?}: expected {want:?} in {err}");
        assert!(!out.path().join("o").exists(), "{extra:?}: nothing written");
    }
}
