//! The study machinery end to end on a tiny configuration: tiny random encoders saved as
//! Hugging Face directories, synthetic LAReQA / Tatoeba / explicit bitext files, the base
//! model and two trained conditions. Checks that a run stopped mid-way resumes (and ends
//! exactly where an uninterrupted run ends), that finished runs are skipped, that held-out
//! lines are never trained on, and that the report and its plots are written.
#![cfg(feature = "distill")]

use std::path::{Path, PathBuf};

use optical::distill::export::{write_tiny_model, TINY_WORDS};
use optical::rng::SplitMix64;
use optical::study::{run_study, RunResult, RunStatus, StudyOptions};

const WORDS: usize = TINY_WORDS;

/// A tiny random BERT with the word-level tokenizer, written as a Hugging Face directory.
fn tiny_model(root: &Path, name: &str, seed: u64) -> PathBuf {
    write_tiny_model(root, name, seed).unwrap()
}

/// A sentence pair: English words and their word-by-word "translation".
fn pair(rng: &mut SplitMix64) -> (String, String) {
    let n = rng.range(3, 6);
    let idx: Vec<usize> = (0..n).map(|_| rng.range(0, WORDS - 1)).collect();
    let f = idx.iter().map(|i| format!("f{i}")).collect::<Vec<_>>();
    let e = idx.iter().map(|i| format!("e{i}")).collect::<Vec<_>>();
    (f.join(" "), e.join(" "))
}

fn write_pairs(dir: &Path, other: &str, english: &str, pairs: &[(String, String)]) {
    std::fs::create_dir_all(dir).unwrap();
    let side = |k: usize| -> String {
        pairs
            .iter()
            .map(|p| if k == 0 { p.0.as_str() } else { p.1.as_str() })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    };
    std::fs::write(dir.join(other), side(0)).unwrap();
    std::fs::write(dir.join(english), side(1)).unwrap();
}

/// Two-language XQuAD-R-shaped files: 8 parallel paragraphs of 3 sentences, 2 questions each.
fn write_lareqa(dir: &Path, rng: &mut SplitMix64) {
    std::fs::create_dir_all(dir).unwrap();
    let paragraphs: Vec<Vec<(String, String)>> = (0..8)
        .map(|_| (0..3).map(|_| pair(rng)).collect())
        .collect();
    let questions: Vec<Vec<((String, String), usize)>> = (0..8)
        .map(|_| (0..2).map(|_| (pair(rng), rng.range(0, 2))).collect())
        .collect();
    for (lang, side) in [("en", 1), ("de", 0)] {
        let text = |p: &(String, String)| if side == 0 { p.0.clone() } else { p.1.clone() };
        let paras: Vec<serde_json::Value> = paragraphs
            .iter()
            .zip(&questions)
            .enumerate()
            .map(|(pi, (sents, qs))| {
                let sentences: Vec<String> = sents.iter().map(text).collect();
                let mut breaks = Vec::new();
                let mut start = 0;
                for s in &sentences {
                    breaks.push(vec![start, start + s.len()]);
                    start += s.len() + 1;
                }
                let qas: Vec<serde_json::Value> = qs
                    .iter()
                    .enumerate()
                    .map(|(qi, (q, s))| {
                        serde_json::json!({
                            "id": format!("q{pi}-{qi}"),
                            "question": text(q),
                            "answers": [{"answer_start": breaks[*s][0], "text": "x"}],
                        })
                    })
                    .collect();
                serde_json::json!({
                    "context": sentences.join(" "),
                    "sentences": sentences,
                    "sentence_breaks": breaks,
                    "qas": qas,
                })
            })
            .collect();
        let doc = serde_json::json!({"data": [{"title": "t", "paragraphs": paras}]});
        std::fs::write(dir.join(format!("{lang}.json")), doc.to_string()).unwrap();
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    config: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let teacher = tiny_model(&root, "teacher", 2);
    let student = tiny_model(&root, "student", 1);
    let data = root.join("data");
    let mut rng = SplitMix64::new(42);
    write_lareqa(&data.join("lareqa/xquad-r"), &mut rng);
    for lang in ["deu", "fra"] {
        let pairs: Vec<_> = (0..60).map(|_| pair(&mut rng)).collect();
        write_pairs(
            &data.join("tatoeba"),
            &format!("tatoeba.{lang}-eng.{lang}"),
            &format!("tatoeba.{lang}-eng.eng"),
            &pairs,
        );
    }
    let news: Vec<_> = (0..40).map(|_| pair(&mut rng)).collect();
    write_pairs(&root.join("news"), "train.deu", "train.eng", &news);
    let ood: Vec<_> = (0..30).map(|_| pair(&mut rng)).collect();
    write_pairs(&root.join("news"), "ood.deu", "ood.eng", &ood);
    let p = |x: &Path| x.display().to_string();
    let n = root.join("news");
    let config = format!(
        r#"
name = "tiny study"
question = "Does the machinery work end to end?"
data_dir = "{data}"
lareqa = ["xquad-r"]

[distill]
teacher = "{teacher}"
student = "{student}"
distill_english = true
max_length = 16
epsilon = 0.1
sinkhorn_threshold = 1e-4
lr = 0.003
freeze_embeddings = false
freeze_layers = 0
dev_pairs = 8

[[condition]]
name = "base"
train = false

[[condition]]
name = "ot"
distill = {{ loss = "ot" }}

[[condition]]
name = "mean-mse"
distill = {{ loss = "mean-mse" }}

[[group]]
name = "A"
title = "tiny"
train = ["tatoeba-train:deu", "tatoeba-train:fra", "files:deu:{ntd}:{nte}"]
in_domain = ["tatoeba-heldout:deu", "tatoeba-heldout:fra"]
out_of_domain = ["files:news:deu:{nod}:{noe}"]

[budget.tiny]
seeds = [0]
conditions = ["base", "ot", "mean-mse"]
distill = {{ steps = 4, batch_size = 4, eval_every = 2, checkpoint_every = 2, warmup_steps = 0 }}
eval = {{ lareqa_questions = {{ xquad-r = 5 }}, lareqa_languages = ["en", "de"], bitext_pairs = 10 }}
"#,
        data = p(&data),
        teacher = p(&teacher),
        student = p(&student),
        ntd = p(&n.join("train.deu")),
        nte = p(&n.join("train.eng")),
        nod = p(&n.join("ood.deu")),
        noe = p(&n.join("ood.eng")),
    );
    let path = root.join("tiny.toml");
    std::fs::write(&path, config).unwrap();
    Fixture {
        _tmp: tmp,
        root,
        config: path,
    }
}

fn options(f: &Fixture, out: &str, stop_at_step: Option<usize>) -> StudyOptions {
    StudyOptions {
        config: f.config.clone(),
        budget: "tiny".into(),
        backend: None,
        out: f.root.join(out),
        report: Some(f.root.join(out).join("docs").join("STUDY.md")),
        data_dir: None,
        lareqa_candidates: None,
        stop_at_step,
        progress: false,
        report_only: false,
        command: "optical study --config tiny.toml --budget tiny".into(),
        handle_interrupts: false,
    }
}

/// Every run directory of `out` whose name starts with `prefix`, by name.
fn run_dirs(f: &Fixture, out: &str, prefix: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(f.root.join(out).join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect();
    dirs.sort();
    dirs
}

fn run_dir(f: &Fixture, out: &str, prefix: &str) -> PathBuf {
    run_dirs(f, out, prefix)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no run {prefix}* in {out}/runs"))
}

/// The status of the first run of `outcome` whose name starts with `prefix`.
fn status(outcome: &optical::study::StudyOutcome, prefix: &str) -> RunStatus {
    outcome
        .runs
        .iter()
        .find(|(n, _)| n.starts_with(prefix))
        .map(|(_, s)| s.clone())
        .unwrap_or_else(|| panic!("no run {prefix}* in {:?}", outcome.runs))
}

/// `optical study --config <the fixture's> --budget tiny --out <out> <args>`: its standard
/// output, after checking that it succeeded.
fn study_cli(f: &Fixture, out: &Path, args: &[&str]) -> String {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_optical"))
        .args(["study", "--config"])
        .arg(&f.config)
        .args(["--budget", "tiny", "--out"])
        .arg(out)
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn logged_steps(dir: &Path) -> Vec<u64> {
    std::fs::read_to_string(dir.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

fn result(dir: &Path) -> RunResult {
    serde_json::from_str(&std::fs::read_to_string(dir.join("result.json")).unwrap()).unwrap()
}

#[test]
fn a_tiny_study_runs_resumes_skips_and_reports() {
    let f = fixture();

    // First sitting: training stops at step 2 of 4; only the base model is finished.
    let first = run_study(&options(&f, "out", Some(2))).unwrap();
    println!("first: {:?}", first.runs);
    assert_eq!(status(&first, "base-"), RunStatus::Evaluated);
    assert_eq!(status(&first, "ot-"), RunStatus::Paused { step: 2 });
    assert_eq!(status(&first, "mean-mse-"), RunStatus::Paused { step: 2 });
    assert_eq!((first.finished, first.total), (1, 3));
    let ot = run_dir(&f, "out", "ot-A-s0-");
    assert!(!ot.join("result.json").exists());
    assert_eq!(
        std::fs::read_to_string(ot.join("checkpoints/latest"))
            .unwrap()
            .trim(),
        "step-000002"
    );
    assert_eq!(logged_steps(&ot), [1, 2]);
    let report = std::fs::read_to_string(&first.report).unwrap();
    assert!(report.contains("Incomplete"), "{report}");
    // No trained run has results: the answer says so rather than "better on none".
    assert!(
        report.contains("**Not yet: no out-of-domain comparison has results.**"),
        "{report}"
    );
    assert!(
        report.contains("In domain, no comparison with the untrained model has results yet."),
        "{report}"
    );
    assert!(
        !report.contains("none") && !report.contains("0 of 0"),
        "{report}"
    );

    // A `latest` that names no checkpoint of its run is an error naming it, before any run
    // starts; the run's checkpoints stay (starting it over would delete them).
    let mm = run_dir(&f, "out", "mean-mse-A-s0-");
    let latest = mm.join("checkpoints/latest");
    std::fs::write(&latest, "garbage\n").unwrap();
    let err = run_study(&options(&f, "out", None))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("checkpoints/latest") && err.contains("expected the name"),
        "{err}"
    );
    assert!(mm.join("checkpoints/step-000002").is_dir());
    assert_eq!(logged_steps(&ot), [1, 2], "a run started");
    std::fs::write(&latest, "step-000002\n").unwrap();

    // A sitting that stops where the runs already are trains nothing (the stop is not
    // ignored: the runs stay paused at their checkpoints).
    let same = run_study(&options(&f, "out", Some(2))).unwrap();
    assert_eq!(status(&same, "ot-"), RunStatus::Paused { step: 2 });
    assert_eq!(status(&same, "mean-mse-"), RunStatus::Paused { step: 2 });
    assert_eq!(logged_steps(&ot), [1, 2]);

    // A process killed after logging step 3 but before its checkpoint: the resumed run must
    // redo step 3 without logging it twice.
    let mut log = std::fs::read_to_string(ot.join("log.jsonl")).unwrap();
    log.push_str(
        &log.lines()
            .last()
            .unwrap()
            .replace("\"step\":2", "\"step\":3"),
    );
    log.push('\n');
    std::fs::write(ot.join("log.jsonl"), log).unwrap();

    // Second sitting: the trained runs resume at step 2 and finish; base is skipped.
    let second = run_study(&options(&f, "out", None)).unwrap();
    println!("second: {:?}", second.runs);
    assert_eq!(status(&second, "base-"), RunStatus::Skipped);
    assert_eq!(
        status(&second, "ot-"),
        RunStatus::Trained {
            resumed_from: Some(2)
        }
    );
    assert_eq!(second.finished, 3);
    assert_eq!(logged_steps(&ot), [1, 2, 3, 4]);
    let resumed = result(&ot);
    assert_eq!(resumed.train.as_ref().unwrap().steps, 4);
    assert_eq!(resumed.train.as_ref().unwrap().sittings, 2);
    assert!(!ot.join("checkpoints").exists() && !ot.join("student").exists());
    // The exported student is the best by dev P@1, then MRR (the first of full equals),
    // step 0 included.
    let train = resumed.train.as_ref().unwrap();
    let best = train
        .dev
        .iter()
        .fold(None::<&optical::study::DevPoint>, |b, d| match b {
            Some(b) if (b.p_at_1, b.mrr) >= (d.p_at_1, d.mrr) => Some(b),
            _ => Some(d),
        })
        .unwrap();
    assert_eq!(train.exported_step, Some(best.step), "{:?}", train.dev);
    let benchmarks: Vec<&str> = resumed
        .tasks
        .iter()
        .map(|t| t.set.benchmark.as_str())
        .collect();
    assert_eq!(
        benchmarks,
        [
            "xquad-r",
            "tatoeba-heldout",
            "tatoeba-heldout",
            "tatoeba-heldout",
            "tatoeba-heldout",
            "news",
            "news"
        ]
    );
    let lareqa = &resumed.tasks[0];
    assert_eq!(lareqa.per_query["map"].len(), lareqa.result.queries);
    let share = lareqa.own_language.as_ref().unwrap();
    assert_eq!(share.k, 2);
    assert!((0.0..=1.0).contains(&share.share));

    // Third: everything is finished and skipped; results are untouched.
    let before = std::fs::read_to_string(ot.join("result.json")).unwrap();
    let third = run_study(&options(&f, "out", None)).unwrap();
    assert!(
        third.runs.iter().all(|(_, s)| *s == RunStatus::Skipped),
        "{:?}",
        third.runs
    );
    assert_eq!(
        std::fs::read_to_string(ot.join("result.json")).unwrap(),
        before
    );

    // A result cut short (or edited past [0, 1]) is an error naming it, not a reason to
    // train the run again and overwrite it.
    let path = ot.join("result.json");
    std::fs::write(&path, &before[..before.len() / 2]).unwrap();
    let err = run_study(&options(&f, "out", None))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("result.json") && err.contains("delete it"),
        "{err}"
    );
    let mut edited: serde_json::Value = serde_json::from_str(&before).unwrap();
    edited["tasks"][0]["per_query"]["map"][0] = serde_json::json!(1e308);
    std::fs::write(&path, edited.to_string()).unwrap();
    let err = run_study(&options(&f, "out", None))
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected [0, 1]"), "{err}");
    std::fs::write(&path, &before).unwrap();

    // The resumed run ends exactly where an uninterrupted one does.
    run_study(&options(&f, "straight", None)).unwrap();
    let straight = result(&run_dir(&f, "straight", "ot-A-s0-"));
    assert_eq!(straight.key, resumed.key);
    for (a, b) in straight.tasks.iter().zip(&resumed.tasks) {
        assert_eq!(a.per_query, b.per_query, "{}", a.result.task);
    }

    // No held-out Tatoeba line was trained on: the split's training files hold none.
    let split_dir = f.root.join("out").join("data").join("A");
    let heldout: Vec<String> = ["deu", "fra"]
        .iter()
        .flat_map(|l| {
            let b = optical::data::bitext::tatoeba(&f.root.join("data"), l).unwrap();
            let s = optical::study::split::split_group(&[b], 20);
            let h = s[0].heldout.clone();
            h.source.into_iter().chain(h.target)
        })
        .collect();
    assert!(!heldout.is_empty());
    for l in ["deu", "fra"] {
        for side in [l, "eng"] {
            let text =
                std::fs::read_to_string(split_dir.join(format!("{l}.train.{side}"))).unwrap();
            for line in text.lines() {
                assert!(!heldout.iter().any(|h| h == line), "{line} trained on");
            }
        }
    }

    // The report: answer, tables with p-values, plots that exist and are SVG.
    let report = std::fs::read_to_string(&third.report).unwrap();
    println!("{report}");
    for needle in [
        "## Answer",
        "#### xquad-r (out of domain, mAP)",
        "#### tatoeba-heldout (in domain, P@1)",
        "#### news (out of domain, P@1)",
        "p vs mean-mse",
        "Robustness",
        "same-language share of top 2",
        // Two held-out Tatoeba languages: a table of each, with tests of its own.
        "| language | queries (per direction) | base P@1 pooled | ot Δ | ot p | mean-mse Δ | mean-mse p |",
    ] {
        assert!(report.contains(needle), "missing {needle:?}");
    }
    let table = &report[report.find("| language | queries (per direction)").unwrap()..];
    for lang in ["deu", "fra"] {
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("| {lang} | ")))
            .unwrap_or_else(|| panic!("no {lang} row"));
        // language, queries, base, then a Δ and a p for each trained condition.
        let cells: Vec<&str> = row.trim_matches('|').split(" | ").collect();
        assert_eq!(cells.len(), 7, "{row}");
        assert!(cells[2].parse::<f64>().is_ok(), "{row}");
        assert!(cells[4] != "–" && cells[6] != "–", "tests ran: {row}");
    }
    assert!(!report.contains("Incomplete"));
    assert!(report.contains("| exported step |"));
    // Every comparison found its runs' queries and their clusters (one sign per question or
    // pair), and results written before the queries' ids were kept give the same report:
    // the ids then come from the evaluation sets.
    assert!(report.contains("one sign per cluster"), "{report}");
    assert!(!report.contains("no comparison"), "{report}");
    for d in std::fs::read_dir(f.root.join("out").join("runs")).unwrap() {
        let path = d.unwrap().path().join("result.json");
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let tasks = v["tasks"].as_array_mut().unwrap();
        assert!(tasks.iter().all(|t| t["query_ids"].is_array()));
        for t in tasks {
            t.as_object_mut().unwrap().remove("query_ids");
        }
        std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
    }
    let mut again = options(&f, "out", None);
    again.report_only = true;
    run_study(&again).unwrap();
    assert_eq!(std::fs::read_to_string(&third.report).unwrap(), report);
    // A trained condition whose exported student is its starting model is called out.
    let starts: Vec<String> = std::fs::read_dir(f.root.join("out").join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|d| {
            !d.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("base-")
        })
        .filter(|d| result(d).train.unwrap().exported_step == Some(0))
        .map(|d| d.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        report.contains("never beat its starting model"),
        !starts.is_empty(),
        "{starts:?}"
    );
    let answer = report.split("## Answer\n\n").nth(1).unwrap();
    assert!(
        ["**No.", "**Yes", "**Partly"]
            .iter()
            .any(|a| answer.starts_with(a)),
        "{answer}"
    );
    let plots: Vec<&str> = report
        .lines()
        .filter_map(|l| l.strip_prefix("![")?.split("](").nth(1)?.strip_suffix(')'))
        .collect();
    assert!(plots.len() >= 6, "{plots:?}");
    let docs = third.report.parent().unwrap();
    for p in &plots {
        let svg = std::fs::read_to_string(docs.join(p)).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{p}"
        );
    }
    assert!(plots.iter().any(|p| p.contains("heatmap-ot")));
    assert!(plots.iter().any(|p| p.contains("training-loss")));
}

/// A training source that does not load (a misspelt language, a missing file) fails the
/// study before any run, naming the group, instead of at its first training run.
#[test]
fn a_bad_training_source_fails_before_any_run() {
    let f = fixture();
    let text = std::fs::read_to_string(&f.config).unwrap();
    let bad = text.replace(
        "train = [\"tatoeba-train:deu\",",
        "train = [\"mafand:xyz\", \"tatoeba-train:deu\",",
    );
    assert_ne!(bad, text);
    std::fs::write(&f.config, bad).unwrap();
    let err = run_study(&options(&f, "bad", None))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("group A training sources") && err.contains("xyz"),
        "{err}"
    );
    let runs = f.root.join("bad").join("runs");
    let started = std::fs::read_dir(&runs).map(|d| d.count()).unwrap_or(0);
    assert_eq!(started, 0, "no run started");
}

/// `study --plan` lists the runs with their state and the evaluation sizes, and writes
/// nothing under --out.
#[test]
fn the_plan_lists_runs_and_writes_nothing() {
    let f = fixture();
    let out = f.root.join("planned");
    let stdout = study_cli(&f, &out, &["--plan"]);
    assert!(stdout.contains("group A:"), "{stdout}");
    assert!(stdout.contains("tatoeba-heldout deu"), "{stdout}");
    for run in ["base-A-s0-", "ot-A-s0-", "mean-mse-A-s0-"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(run))
            .unwrap_or_else(|| panic!("no {run} line in {stdout}"));
        assert!(line.contains("\tpending\t"), "{line}");
        // Nothing is cached yet: every text of the group is to be encoded.
        let total = texts_per_model(&stdout);
        assert!(line.contains(&format!("\ttexts {total}\t")), "{line}");
    }
    assert!(stdout.contains("3 runs (0 finished): to do "), "{stdout}");
    assert!(!out.exists(), "the plan wrote under --out");

    // Nothing frozen: every model encodes its texts whole. With frozen layers the students'
    // texts are priced at the budget's student rate.
    let text = std::fs::read_to_string(&f.config).unwrap();
    assert!(
        stdout
            .lines()
            .filter(|l| l.contains("\tby whole model\t"))
            .count()
            == 3
    );
    let total = texts_per_model(&stdout);
    assert!(
        stdout.contains(&format!(
            "+ {} texts × 0.05 s + 0 student texts × 0.05 s",
            3 * total
        )),
        "no student rate: a whole model's\n{stdout}"
    );
    let frozen = text
        .replace("freeze_embeddings = false", "freeze_embeddings = true")
        .replace("freeze_layers = 0", "freeze_layers = 1")
        .replace(
            "bitext_pairs = 10 }\n",
            "bitext_pairs = 10 }\nestimate = { seconds_per_step = 1.0, seconds_per_text = 0.5, \
             seconds_per_student_text = 0.25 }\n",
        );
    assert_eq!(frozen.matches("0.25 }").count(), 1);
    assert!(!frozen.contains("freeze_layers = 0"));
    std::fs::write(&f.config, &frozen).unwrap();
    let stdout = study_cli(&f, &out, &["--plan"]);
    for (run, by) in [
        ("base-A-s0-", "by whole model"),
        ("ot-A-s0-", "by trained layers"),
        ("mean-mse-A-s0-", "by trained layers"),
    ] {
        let line = stdout.lines().find(|l| l.starts_with(run)).unwrap();
        assert!(line.contains(&format!("\ttexts {total}\t{by}\t")), "{line}");
    }
    assert!(
        stdout.contains(&format!(
            "+ {total} texts × 0.5 s + {} student texts × 0.25 s",
            2 * total
        )),
        "{stdout}"
    );
    std::fs::write(&f.config, &text).unwrap();

    // A second group whose sets the first one has too (the LAReQA set, the French held-out
    // pairs of the same split): its base run reads them all from the cache that the first
    // group's base run fills in the same sitting; its trained runs encode everything.
    let text = std::fs::read_to_string(&f.config).unwrap();
    let two = text.replace(
        "[budget.tiny]",
        "[[group]]\nname = \"B\"\ntitle = \"tiny too\"\ntrain = [\"tatoeba-train:fra\"]\n\
         in_domain = [\"tatoeba-heldout:fra\"]\nout_of_domain = []\n\n[budget.tiny]",
    );
    assert_ne!(two, text);
    std::fs::write(&f.config, two).unwrap();
    let stdout = study_cli(&f, &out, &["--plan"]);
    let group_b = stdout.split("group B:").nth(1).expect("group B");
    let total_b = texts_per_model(group_b);
    assert!(total_b > 0 && set_texts(group_b, "tatoeba-heldout fra") > 0);
    for (run, texts) in [("base-B-s0-", 0), ("ot-B-s0-", total_b)] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(run))
            .unwrap_or_else(|| panic!("no {run} line in {stdout}"));
        assert!(
            line.contains(&format!("\ttexts {texts}\t")),
            "{line}\n{stdout}"
        );
    }
    assert!(!out.exists(), "the plan wrote under --out");

    // More dev pairs than a group's sources give: refused by the plan, not hours later
    // when the run starts.
    let text = std::fs::read_to_string(&f.config).unwrap();
    let greedy = text.replace("dev_pairs = 8", "dev_pairs = 1000");
    assert_ne!(greedy, text);
    std::fs::write(&f.config, greedy).unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_optical"))
        .args(["study", "--config"])
        .arg(&f.config)
        .args(["--budget", "tiny", "--plan", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("dev_pairs")
            && err.contains("training pairs of group A")
            && err.contains("1000"),
        "{err}"
    );
    assert!(!out.exists(), "the plan wrote under --out");
}

/// With `keep_models = "student"`, a change that only the evaluation reads (here the bitext
/// slice) makes new runs that evaluate the kept students instead of training them again (the
/// plan says so, and the report counts no training for them); a change to training trains.
/// A run whose training finished but whose result was never written (a sitting stopped
/// during its evaluation, checkpoints kept): a later sitting with `--stop-at-step` at or
/// before its last step evaluates it instead of refusing the stop and ending the study.
#[test]
fn a_stop_before_a_finished_training_evaluates_the_run() {
    let f = fixture();
    let text = std::fs::read_to_string(&f.config).unwrap();
    let keep = text.replacen(
        "lareqa = [\"xquad-r\"]",
        "lareqa = [\"xquad-r\"]\nkeep_models = true",
        1,
    );
    assert_ne!(keep, text);
    std::fs::write(&f.config, &keep).unwrap();
    assert_eq!(run_study(&options(&f, "out", None)).unwrap().finished, 3);
    let ot = run_dir(&f, "out", "ot-A-s0-");
    let before = result(&ot);
    std::fs::remove_file(ot.join("result.json")).unwrap();
    assert_eq!(
        std::fs::read_to_string(ot.join("checkpoints/latest"))
            .unwrap()
            .trim(),
        "step-000004"
    );
    let again = run_study(&options(&f, "out", Some(2))).unwrap();
    assert_eq!(
        status(&again, "ot-"),
        RunStatus::Trained {
            resumed_from: Some(4)
        }
    );
    assert_eq!(status(&again, "mean-mse-"), RunStatus::Skipped);
    assert_eq!(again.finished, 3);
    assert_eq!(logged_steps(&ot), [1, 2, 3, 4]);
    let after = result(&ot);
    assert_eq!(
        after.tasks[0].per_query["map"],
        before.tasks[0].per_query["map"]
    );
}

#[test]
fn an_evaluation_change_evaluates_the_kept_students() {
    let f = fixture();
    let text = std::fs::read_to_string(&f.config).unwrap();
    let keep = text.replacen(
        "lareqa = [\"xquad-r\"]",
        "lareqa = [\"xquad-r\"]\nkeep_models = \"student\"",
        1,
    );
    assert_ne!(keep, text);
    std::fs::write(&f.config, &keep).unwrap();
    let first = run_study(&options(&f, "out", None)).unwrap();
    assert_eq!(first.finished, 3);
    let [ot] = &run_dirs(&f, "out", "ot-A-s0-")[..] else {
        panic!("one ot run")
    };
    assert!(ot.join("student/model.safetensors").is_file(), "kept");
    assert!(
        !ot.join("checkpoints").exists(),
        "the student alone is kept"
    );
    let trained = result(ot);

    let eval_only = keep.replace("bitext_pairs = 10", "bitext_pairs = 8");
    assert_ne!(eval_only, keep);
    std::fs::write(&f.config, &eval_only).unwrap();
    let stdout = study_cli(&f, &f.root.join("out"), &["--plan"]);
    let ot_name = ot.file_name().unwrap().to_string_lossy().into_owned();
    let line = stdout
        .lines()
        .find(|l| l.starts_with("ot-A-s0-") && !l.starts_with(&ot_name))
        .unwrap_or_else(|| panic!("no new ot line in {stdout}"));
    assert!(
        line.contains(&format!("\treuses the student of {ot_name}\tsteps 0\t")),
        "{line}"
    );
    // The XQuAD-R slice did not change: the donor's cache (and, for the base model, the
    // study's) holds it, so only the bitext sets' texts are left to encode.
    let bitext = texts_per_model(&stdout) - set_texts(&stdout, "xquad-r all");
    assert!(bitext > 0 && bitext < texts_per_model(&stdout));
    for run in ["ot-A-s0-", "base-A-s0-"] {
        let new_line = stdout
            .lines()
            .find(|l| l.starts_with(run) && !l.contains("\tfinished\t"))
            .unwrap_or_else(|| panic!("no pending {run} line in {stdout}"));
        assert!(
            new_line.contains(&format!("\ttexts {bitext}\t")),
            "{new_line}"
        );
    }

    let second = run_study(&options(&f, "out", None)).unwrap();
    println!("second: {:?}", second.runs);
    assert_eq!(status(&second, "base-"), RunStatus::Evaluated);
    assert_eq!(
        status(&second, "ot-"),
        RunStatus::Reused {
            from: ot_name.clone()
        }
    );
    assert!(matches!(
        status(&second, "mean-mse-"),
        RunStatus::Reused { .. }
    ));
    assert_eq!(second.finished, 3);
    let dirs = run_dirs(&f, "out", "ot-A-s0-");
    assert_eq!(dirs.len(), 2);
    let new = dirs.iter().find(|d| *d != ot).unwrap();
    let reused = result(new);
    assert_ne!(reused.key, trained.key);
    let (t, u) = (trained.train.unwrap(), reused.train.unwrap());
    assert_eq!(u.student_from.as_deref(), Some(ot_name.as_str()));
    assert_eq!((u.steps, u.exported_step), (t.steps, t.exported_step));
    assert!(t.student_from.is_none());
    assert!(!new.join("student").exists() && !new.join("checkpoints").exists());
    assert_eq!(
        logged_steps(new),
        [1, 2, 3, 4],
        "the student's log, for the curves"
    );
    // The same student on the unchanged task gives the same answers; the bitext tasks have
    // the new slice.
    assert_eq!(reused.tasks[0].set.benchmark, "xquad-r");
    assert_eq!(reused.tasks[0].per_query, trained.tasks[0].per_query);
    assert!(reused
        .tasks
        .iter()
        .filter(|t| t.set.benchmark != "xquad-r")
        .all(|t| t.result.queries <= 8));
    let report = std::fs::read_to_string(&second.report).unwrap();
    assert!(
        report.contains(&format!("(the student of {ot_name})")),
        "{report}"
    );
    assert!(report.contains("0 (reused)"), "{report}");
    // Every run of this sitting reused or trained nothing: no "-0.0 min".
    assert!(report.contains("training 0.0 min"), "{report}");

    // A training setting is another student: trained, not reused.
    let train_change = eval_only.replace("lr = 0.003", "lr = 0.002");
    assert_ne!(train_change, eval_only);
    std::fs::write(&f.config, train_change).unwrap();
    let third = run_study(&options(&f, "out", None)).unwrap();
    assert_eq!(
        status(&third, "ot-"),
        RunStatus::Trained { resumed_from: None }
    );
    assert_eq!(run_dirs(&f, "out", "ot-A-s0-").len(), 3);

    // The command says what it reused: another slice, the students of the last sitting.
    let text = std::fs::read_to_string(&f.config).unwrap();
    std::fs::write(
        &f.config,
        text.replace("bitext_pairs = 8", "bitext_pairs = 7"),
    )
    .unwrap();
    let stdout = study_cli(&f, &f.root.join("out"), &["--no-progress"]);
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (
            &summary["reused_students"],
            &summary["trained"],
            &summary["evaluated"]
        ),
        (&2.into(), &0.into(), &1.into()),
        "{summary}"
    );
    assert_eq!(summary["finished"], 3);
}

/// The plan's "total N texts per model" of the (first) group.
fn texts_per_model(plan: &str) -> usize {
    plan.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("total ")?
                .strip_suffix(" texts per model")
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no total in {plan}"))
}

/// The plan's count of texts to encode for the set named `set` ("xquad-r all").
fn set_texts(plan: &str, set: &str) -> usize {
    plan.lines()
        .find_map(|l| {
            let rest = l.trim().strip_prefix(set)?.strip_prefix(':')?;
            rest.rsplit(", ")
                .next()?
                .strip_suffix(" texts to encode")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {set} in {plan}"))
}
