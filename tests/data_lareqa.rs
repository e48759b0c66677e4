//! LAReQA loading: the pool construction on a small hand-made dataset, every malformed
//! input named with its file and record, and the paper's counts on the shared data.

mod common;

use std::path::{Path, PathBuf};

use optical::data::lareqa::Lareqa;
use optical::data::{self, DatasetName};

/// Two languages, one question id in both, one only in English; paragraphs with two and
/// three sentences. Relevant sets are worked out by hand below.
fn write_language(dir: &Path, lang: &str, json: &str) {
    std::fs::write(dir.join(format!("{lang}.json")), json).unwrap();
}

const EN: &str = r#"{"data": [{"title": "t", "paragraphs": [
  {"context": "Alpha is first. Beta is second.",
   "sentences": ["Alpha is first.", "Beta is second."],
   "sentence_breaks": [[0, 15], [16, 31]],
   "qas": [{"id": "q1", "question": "What is second?", "answers": [{"answer_start": 16, "text": "Beta"}]},
           {"id": "q2", "question": "What is first?", "answers": [{"answer_start": 0, "text": "Alpha"}]}]},
  {"context": "One. Two. Three.",
   "sentences": ["One.", "Two.", "Three."],
   "sentence_breaks": [[0, 4], [5, 9], [10, 16]],
   "qas": [{"id": "q3", "question": "Last?", "answers": [{"answer_start": 12, "text": "ree"}]}]}
]}]}"#;

const DE: &str = r#"{"data": [{"title": "t", "paragraphs": [
  {"context": "Beta ist zweite. Alpha ist erste.",
   "sentences": ["Beta ist zweite.", "Alpha ist erste."],
   "sentence_breaks": [[0, 16], [17, 33]],
   "qas": [{"id": "q1", "question": "Was ist zweite?", "answers": [{"answer_start": 0, "text": "Beta"}]}]}
]}]}"#;

fn langs(l: &[&str]) -> Vec<String> {
    l.iter().map(|s| s.to_string()).collect()
}

#[test]
fn pool_and_relevance_follow_the_paper() {
    let dir = tempfile::tempdir().unwrap();
    write_language(dir.path(), "en", EN);
    write_language(dir.path(), "de", DE);
    let d = Lareqa::load_files("toy", dir.path(), &langs(&["en", "de"])).unwrap();
    // Every sentence of every language is a candidate: 5 English + 2 German.
    assert_eq!(d.candidates.len(), 7);
    assert_eq!(d.queries.len(), 4);
    let ids: Vec<&str> = d.candidates.iter().map(|c| c.text.id.as_str()).collect();
    assert_eq!(
        ids,
        ["en-00000", "en-00001", "en-00002", "en-00003", "en-00004", "de-00000", "de-00001"]
    );
    let rel = |qid: &str| -> Vec<usize> {
        d.queries
            .iter()
            .find(|q| q.text.id == qid)
            .unwrap()
            .relevant
            .clone()
    };
    // q1 exists in both languages: its answer sentence in each.
    assert_eq!(rel("en-q1"), vec![1, 5]);
    assert_eq!(rel("de-q1"), vec![1, 5]);
    assert_eq!(rel("en-q2"), vec![0]);
    // answer_start 12 is inside "Three." (span [10, 16)).
    assert_eq!(rel("en-q3"), vec![4]);
    assert_eq!(d.candidates[4].context, 1);
    assert_eq!(d.contexts.len(), 3);
    let task = d.task();
    assert_eq!(
        task.candidates[4].context.as_deref(),
        Some("One. Two. Three.")
    );
    assert!(task.queries[0].context.is_none());
    let qrels: Vec<String> = task.qrels_lines().collect();
    assert!(qrels.contains(&"de-q1 0 en-00001 1".to_string()));
    assert_eq!(qrels.len(), 6);
    // A language filter shrinks both the pool and the relevant sets.
    let en_only = Lareqa::load_files("toy", dir.path(), &langs(&["en"])).unwrap();
    assert_eq!(en_only.candidates.len(), 5);
    assert_eq!(en_only.queries[0].relevant, vec![1]);
}

fn load_err(json: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    write_language(dir.path(), "en", json);
    Lareqa::load_files("toy", dir.path(), &langs(&["en"]))
        .map(|_| ())
        .unwrap_err()
        .to_string()
}

#[test]
fn malformed_files_name_file_record_and_problem() {
    let cases: Vec<(String, &str)> = vec![
        (EN.replace("]}]}", "]}"), "invalid JSON at line"),
        (EN.replace("\"sentences\": [\"One.\", \"Two.\", \"Three.\"],", ""), "data[0].paragraphs[1]: expected a field `sentences`"),
        (EN.replace("[[0, 4], [5, 9], [10, 16]]", "[[0, 4], [5, 9]]"), "data[0].paragraphs[1]: expected one sentence break per sentence, found 3 sentences and 2 breaks"),
        (EN.replace("\"Two.\"", "\"  \""), "data[0].paragraphs[1].sentences[1]: expected a non-empty sentence"),
        (EN.replace("\"answer_start\": 12", "\"answer_start\": 99"), "data[0].paragraphs[1].qas[0].answers[0]: answer_start 99 lies in no sentence"),
        (EN.replace("\"id\": \"q3\"", "\"id\": \"q1\""), "data[0].paragraphs[1].qas[0]: question id \"q1\" already used at data[0].paragraphs[0].qas[0]"),
        (EN.replace("\"question\": \"Last?\"", "\"question\": \"\""), "qas[0]: expected a non-empty question"),
        (EN.replace("[10, 16]", "[10, 40]"), "sentence_breaks[2]: expected 0 <= start <= end <= 16"),
        (EN.replace("\"answers\": [{\"answer_start\": 12, \"text\": \"ree\"}]", "\"answers\": []"), "expected at least one answer"),
        (EN.replace("\"answer_start\": 0,", "\"answer_start\": \"0\","), "answers[0].answer_start: expected a non-negative integer"),
        (EN.replace("\"id\": \"q3\"", "\"id\": 3"), "qas[0].id: expected a string, found a number"),
        (EN.replace("[[0, 4], [5, 9], [10, 16]]", "[[0, 4], [3, 9], [10, 16]]"), "sentence_breaks[1]: expected a span starting at or after 4"),
        ("{}".to_string(), "en.json: the top level: expected a field `data`, found none"),
        ("{\"data\": []}".to_string(), "data: expected at least one question, found none"),
    ];
    for (json, want) in cases {
        let msg = load_err(&json);
        assert!(
            msg.contains("en.json") && msg.contains(want),
            "expected {want:?} in {msg:?}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let msg = Lareqa::load_files("toy", dir.path(), &langs(&["xx"]))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("xx.json") && msg.contains("read failed"),
        "{msg}"
    );
}

fn shared_data() -> Option<PathBuf> {
    let dir = data::data_dir(None);
    let found = dir.join("lareqa/xquad-r/en.json").is_file();
    if !found {
        common::skip_or_fail(&format!(
            "no LAReQA data under {} (set OPTICAL_DATA_DIR)",
            dir.display()
        ));
    }
    found.then_some(dir)
}

#[test]
fn xquad_r_has_the_papers_counts() {
    let Some(dir) = shared_data() else { return };
    let d = Lareqa::load(&dir, DatasetName::XquadR, &[]).unwrap();
    assert_eq!(d.queries.len(), 13_090);
    assert_eq!(d.candidates.len(), 13_014);
    assert!(d.queries.iter().all(|q| q.relevant.len() == 11));
    // The released per-language candidate counts.
    let want = [
        1222, 1276, 1234, 1180, 1215, 1244, 1219, 852, 1167, 1209, 1196,
    ];
    let got: Vec<usize> = d.language_stats().iter().map(|s| s.candidates).collect();
    assert_eq!(got, want);
    // Each relevant set holds one sentence per language.
    for q in d.queries.iter().take(50) {
        let mut l: Vec<&str> = q
            .relevant
            .iter()
            .map(|&c| d.candidates[c].text.language.as_str())
            .collect();
        l.sort();
        l.dedup();
        assert_eq!(l.len(), 11);
    }
}

#[test]
fn mlqa_r_has_the_papers_counts() {
    let Some(dir) = shared_data() else { return };
    let d = Lareqa::load(&dir, DatasetName::MlqaR, &[]).unwrap();
    assert_eq!(d.queries.len(), 4_199);
    assert_eq!(d.candidates.len(), 20_534);
    assert!(d
        .queries
        .iter()
        .all(|q| (2..=4).contains(&q.relevant.len())));
    let err = Lareqa::load(&dir, DatasetName::MlqaR, &langs(&["el"])).unwrap_err();
    assert!(err.to_string().contains("languages"), "{err}");
}

#[test]
fn data_dir_precedence() {
    assert_eq!(data::data_dir(Some(Path::new("/x"))), PathBuf::from("/x"));
    // Without a flag: the environment if set, else the default.
    let from_env = std::env::var_os(data::DATA_DIR_ENV).filter(|v| !v.is_empty());
    let want = from_env
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(data::DEFAULT_DATA_DIR));
    assert_eq!(data::data_dir(None), want);
}

#[test]
fn stats_cli_prints_the_counts() {
    let Some(dir) = shared_data() else { return };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_optical"))
        .args(["data", "stats", "xquad-r", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("13090 queries, 13014 candidates, exactly 11 relevant per query"),
        "{text}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_optical"))
        .args(["data", "stats", "mlqa-r", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("mlqa-r: 4199 queries, 20534 candidates"),
        "{text}"
    );
}
