//! `optical distill` as a user runs it, on a tiny random model with a word-level tokenizer
//! and line-aligned bitext files: it trains, logs, evaluates, checkpoints, exports a
//! student that `optical encode` reads, resumes from its latest checkpoint, and does the
//! same on the WGPU backend (lavapipe in CI; failing, not skipping, without an adapter
//! unless `OPTICAL_SKIP_WGPU=1`).
#![cfg(feature = "distill")]

use std::path::{Path, PathBuf};
use std::process::Command;

use optical::distill::export::{tiny_pairs, write_tiny_model};

const BIN: &str = env!("CARGO_BIN_EXE_optical");

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    model: PathBuf,
    source: String,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let model = write_tiny_model(&root, "tiny", 7).unwrap();
    // A token limit of its own, as sentence-transformers models have (MiniLM: 256).
    std::fs::write(
        model.join("sentence_bert_config.json"),
        r#"{"max_seq_length": 40, "do_lower_case": false}"#,
    )
    .unwrap();
    let pairs = tiny_pairs(40, 3);
    let side = |k: usize| {
        pairs
            .iter()
            .map(|p| if k == 0 { p.0.clone() } else { p.1.clone() })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    };
    std::fs::write(root.join("train.hau"), side(0)).unwrap();
    std::fs::write(root.join("train.en"), side(1)).unwrap();
    let source = format!(
        "files:hau:{}:{}",
        root.join("train.hau").display(),
        root.join("train.en").display()
    );
    Fixture {
        _dir: dir,
        root,
        model,
        source,
    }
}

fn distill(f: &Fixture, out: &Path, extra: &[&str]) -> std::process::Output {
    distill_command(f, out, extra).output().unwrap()
}

fn distill_command(f: &Fixture, out: &Path, extra: &[&str]) -> Command {
    let model = f.model.to_str().unwrap();
    let args = vec![
        "--no-progress",
        "--teacher",
        model,
        "--student",
        model,
        "--sources",
        &f.source,
        "--dev-pairs",
        "8",
        "--max-length",
        "12",
        "--batch-size",
        "4",
        "--lr",
        "1e-3",
        "--warmup-steps",
        "1",
        "--freeze-layers",
        "1",
        "--epsilon",
        "0.1",
        "--checkpoint-every",
        "2",
        "--eval-every",
        "3",
        "--out",
        out.to_str().unwrap(),
    ];
    // A flag given in `extra` replaces the default above.
    let mut merged: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let flag = args[i];
        let has_value = flag != "--no-progress";
        if !extra.contains(&flag) {
            merged.push(flag);
            if has_value {
                merged.push(args[i + 1]);
            }
        }
        i += if has_value { 2 } else { 1 };
    }
    merged.extend_from_slice(extra);
    let mut command = Command::new(BIN);
    command.arg("distill").args(&merged);
    command
}

fn ok(out: &std::process::Output, what: &str) -> serde_json::Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} failed: {stderr}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{what}: no JSON ({e}): {stderr}"))
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn check_run(f: &Fixture, out: &Path, backend: &str) {
    let summary = ok(
        &distill(f, out, &["--steps", "6", "--backend", backend]),
        backend,
    );
    assert_eq!(summary["steps"], 6, "{summary}");
    assert_eq!(summary["training_pairs"], 32);
    let log = lines(&out.join("log.jsonl"));
    assert_eq!(log.len(), 6);
    for (i, r) in log.iter().enumerate() {
        assert_eq!(r["step"], i as u64 + 1);
        assert!(r["loss"].as_f64().unwrap().is_finite(), "{r}");
        assert!(r["sinkhorn_iterations"].as_f64().unwrap() >= 1.0, "{r}");
        assert!(r["grad_norm"].as_f64().unwrap() > 0.0, "{r}");
    }
    let dev = lines(&out.join("dev.jsonl"));
    let steps: Vec<u64> = dev.iter().map(|d| d["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [0, 3, 6]);
    for name in ["loss.svg", "dev.svg", "config.toml", "summary.json"] {
        assert!(out.join(name).is_file(), "{name} missing");
    }
    let exported = summary["exported_step"].as_u64().unwrap();
    assert_eq!(Some(exported), summary["best_step"].as_u64());
    // Only the latest and the best checkpoints are kept.
    let kept: Vec<String> = std::fs::read_dir(out.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("step-"))
        .collect();
    assert!(kept.contains(&"step-000006".to_string()), "{kept:?}");
    assert!(kept.len() <= 2, "{kept:?}");

    // The exported student keeps its starting model's token limit.
    let sbert = std::fs::read_to_string(out.join("student/sentence_bert_config.json")).unwrap();
    let sbert: serde_json::Value = serde_json::from_str(&sbert).unwrap();
    assert_eq!(sbert["max_seq_length"], 40, "{sbert}");

    // The exported student is a model directory that `optical encode` reads.
    let texts = f.root.join(format!("texts-{backend}.txt"));
    std::fs::write(&texts, "f1 f2 f3\ne4 e5\n").unwrap();
    let emb = f.root.join(format!("emb-{backend}.npy"));
    let enc = Command::new(BIN)
        .args(["encode", "--model"])
        .arg(out.join("student"))
        .arg("--input")
        .arg(&texts)
        .arg("--out")
        .arg(&emb)
        .output()
        .unwrap();
    let v = ok(&enc, "encode with the exported student");
    assert_eq!(v["texts"], 2, "{v}");
    assert!(emb.is_file());
}

#[test]
fn distill_trains_evaluates_exports_and_resumes_on_the_cpu() {
    let f = fixture();
    let out = f.root.join("run-cpu");
    check_run(&f, &out, "cpu");

    // --resume continues from the latest checkpoint: two more steps, the log appended.
    let resumed = ok(&distill(&f, &out, &["--steps", "8", "--resume"]), "resume");
    assert_eq!(resumed["steps"], 8, "{resumed}");
    let log = lines(&out.join("log.jsonl"));
    let steps: Vec<u64> = log.iter().map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [1, 2, 3, 4, 5, 6, 7, 8]);

    // A checkpoint that cannot be written (here a file stands where step 10's directory
    // goes, as a full disk would fail it) stops the run with an error naming it; `latest`
    // still names step 8, and the next --resume redoes steps 9-10 from there.
    let blocker = out.join("checkpoints").join("step-000010");
    std::fs::write(&blocker, "not a directory").unwrap();
    let failed = distill(&f, &out, &["--steps", "12", "--resume"]);
    assert!(
        !failed.status.success(),
        "a failed checkpoint must fail the run"
    );
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("step-000010"), "{stderr}");
    let latest = std::fs::read_to_string(out.join("checkpoints").join("latest")).unwrap();
    assert_eq!(latest.trim(), "step-000008");
    std::fs::remove_file(&blocker).unwrap();
    let resumed = ok(&distill(&f, &out, &["--steps", "12", "--resume"]), "resume");
    assert_eq!(resumed["steps"], 12, "{resumed}");
    let log = lines(&out.join("log.jsonl"));
    let steps: Vec<u64> = log.iter().map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, (1..=12).collect::<Vec<u64>>());

    // --resume alone continues the run as its config.toml has it (the model paths, the
    // sources, lr, ...); it may extend the run, and it refuses to change what a step
    // computes.
    let alone = |extra: &[&str]| {
        Command::new(BIN)
            .args(["distill", "--no-progress", "--resume", "--out"])
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    let longer = alone(&["--steps", "13"]);
    let resumed = ok(&longer, "resume with the saved config");
    assert_eq!(resumed["steps"], 13, "{resumed}");
    let stderr = String::from_utf8_lossy(&longer.stderr);
    assert!(
        stderr.contains("resume changes steps: 12 -> 13"),
        "{stderr}"
    );
    let saved = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(saved.contains("steps = 13"), "{saved}");
    // Resuming the finished run trains nothing and logs no dev step twice; its summary
    // keeps the run's step times (from the log), not the zeros of a sitting with no step.
    let again = ok(&alone(&["--steps", "13"]), "resume a finished run");
    let total = again["mean_seconds"]["total"].as_f64().unwrap();
    assert!(
        total > 0.0 && again["tokens_per_s"].as_f64().unwrap() > 0.0,
        "{again}"
    );
    let dev_steps: Vec<u64> = lines(&out.join("dev.jsonl"))
        .iter()
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    let mut unique = dev_steps.clone();
    unique.dedup();
    assert_eq!(dev_steps, unique, "a dev step logged twice");
    // The summary lists the whole run's evaluations, as the log has them.
    let summary_steps: Vec<u64> = again["dev"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["step"].as_u64().unwrap())
        .collect();
    assert_eq!(summary_steps, dev_steps, "{again}");
    assert_eq!(dev_steps.last(), Some(&13));
    let changed = alone(&["--steps", "14", "--lr", "5e-4"]);
    assert!(!changed.status.success(), "a changed lr must be refused");
    let stderr = String::from_utf8_lossy(&changed.stderr);
    assert!(
        stderr.contains("expected lr = 0.001") && stderr.contains("found 0.0005"),
        "{stderr}"
    );
    let steps: Vec<u64> = lines(&out.join("log.jsonl"))
        .iter()
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(
        steps,
        (1..=13).collect::<Vec<u64>>(),
        "the refused resume ran nothing"
    );

    // A fresh start in a directory that holds a run is refused, and the run is intact.
    let fresh = distill(&f, &out, &["--steps", "2"]);
    assert!(!fresh.status.success(), "a fresh run over an existing one");
    let stderr = String::from_utf8_lossy(&fresh.stderr);
    assert!(
        stderr.contains("--resume") && stderr.contains("step-000013"),
        "{stderr}"
    );
    assert_eq!(
        lines(&out.join("log.jsonl")).len(),
        13,
        "the run's log is intact"
    );

    // A checkpoint whose data offset lies past the run's pairs (edited, or from other
    // data) is refused when it loads, not a panic at the first batch.
    let state_path = out.join("checkpoints/step-000013/state.json");
    let text = std::fs::read_to_string(&state_path).unwrap();
    let mut state: serde_json::Value = serde_json::from_str(&text).unwrap();
    state["offset"] = serde_json::json!(u64::MAX);
    std::fs::write(&state_path, state.to_string()).unwrap();
    let bad = distill(&f, &out, &["--steps", "14", "--resume"]);
    assert_eq!(bad.status.code(), Some(2), "a corrupt checkpoint");
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("offset 18446744073709551615 is past") && !stderr.contains("panicked"),
        "{stderr}"
    );
    std::fs::write(&state_path, text).unwrap();

    // Fewer steps than the checkpoint has already run: refused, not a silent "finish".
    let shorter = distill(&f, &out, &["--steps", "5", "--resume"]);
    let stderr = String::from_utf8_lossy(&shorter.stderr);
    assert_eq!(shorter.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("at least 13 when resuming"), "{stderr}");

    // A truncated checkpoint file (a full disk, a copy cut short): exit 2, naming it.
    let model_path = out.join("checkpoints/step-000013/model.bpk");
    let model = std::fs::read(&model_path).unwrap();
    std::fs::write(&model_path, &model[..1000]).unwrap();
    let bad = distill(&f, &out, &["--steps", "14", "--resume"]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("step-000013/model.bpk") && stderr.contains("truncated"),
        "{stderr}"
    );
    std::fs::write(&model_path, model).unwrap();

    // Nothing to resume from is a clear error.
    let none = distill(&f, &f.root.join("empty"), &["--steps", "2", "--resume"]);
    assert!(!none.status.success());
    let stderr = String::from_utf8_lossy(&none.stderr);
    assert!(stderr.contains("latest"), "{stderr}");

    // A run's files without a checkpoint (deleted to free space, or another program's): a
    // fresh start there is refused before anything loads, and the files stay.
    std::fs::remove_dir_all(out.join("checkpoints")).unwrap();
    let student = std::fs::read(out.join("student/model.safetensors")).unwrap();
    let fresh = distill(&f, &out, &["--steps", "2"]);
    assert_eq!(
        fresh.status.code(),
        Some(2),
        "a fresh run over a run's files"
    );
    let stderr = String::from_utf8_lossy(&fresh.stderr);
    assert!(
        stderr.contains("config.toml, log.jsonl") && stderr.contains("student"),
        "{stderr}"
    );
    assert_eq!(lines(&out.join("log.jsonl")).len(), 13, "the log is intact");
    assert_eq!(
        std::fs::read(out.join("student/model.safetensors")).unwrap(),
        student
    );
    // --resume there says there is no checkpoint, before loading the models.
    let resume = distill(&f, &out, &["--steps", "14", "--resume"]);
    assert_eq!(resume.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&resume.stderr);
    assert!(stderr.contains("without checkpoints/latest"), "{stderr}");

    // --stop-at-step pauses with a checkpoint and says how to continue (exit 0); Ctrl-C
    // stops the same way but exits 130, so `distill … && eval …` does not go on.
    let paused_dir = f.root.join("run-paused");
    let paused = distill(&f, &paused_dir, &["--steps", "6", "--stop-at-step", "3"]);
    let summary = ok(&paused, "paused");
    assert_eq!(summary["steps"], 3, "{summary}");
    let stderr = String::from_utf8_lossy(&paused.stderr);
    assert!(
        stderr.contains("paused at step 3") && stderr.contains("--resume"),
        "{stderr}"
    );
    // A stop at or before the checkpoint would never be reached: refused, not ignored.
    let again = distill(
        &f,
        &paused_dir,
        &["--steps", "6", "--resume", "--stop-at-step", "3"],
    );
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("stop_at_step") && stderr.contains("a step after 3"),
        "{stderr}"
    );
    // The second sitting's summary lists every sitting's dev evaluations.
    let rest = distill(&f, &paused_dir, &["--steps", "6", "--resume"]);
    let summary = ok(&rest, "resumed");
    let dev: Vec<u64> = summary["dev"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["step"].as_u64().unwrap())
        .collect();
    assert_eq!(dev, [0, 3, 6], "{summary}");
    #[cfg(unix)]
    for (signal, code) in [("-INT", 130), ("-TERM", 130)] {
        let dir = f.root.join(format!("run-interrupted{signal}"));
        let child = distill_command(&f, &dir, &["--steps", "100000"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let log = dir.join("log.jsonl");
        let t0 = std::time::Instant::now();
        while !log.exists() || std::fs::read_to_string(&log).unwrap().lines().count() < 2 {
            assert!(t0.elapsed().as_secs() < 120, "no training step logged");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let kill = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let o = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{signal}: {stderr}");
        assert!(
            stderr.contains("interrupted: distill stopped at step")
                && stderr.contains("--resume --out"),
            "{stderr}"
        );
        assert!(dir.join("checkpoints/latest").is_file());
    }
    // Started with SIGHUP ignored (`nohup`): a hang-up does not stop the run; an interrupt
    // still does.
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let dir = f.root.join("run-nohup");
        let mut command = distill_command(&f, &dir, &["--steps", "100000"]);
        // SAFETY: between fork and exec only `signal`, which is async-signal-safe, runs.
        unsafe {
            command.pre_exec(|| {
                libc::signal(libc::SIGHUP, libc::SIG_IGN);
                Ok(())
            });
        }
        let child = command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let log = dir.join("log.jsonl");
        let steps = || {
            std::fs::read_to_string(&log)
                .map(|t| t.lines().count())
                .unwrap_or(0)
        };
        let wait_for = |n: usize| {
            let t0 = std::time::Instant::now();
            while steps() < n {
                assert!(t0.elapsed().as_secs() < 120, "fewer than {n} steps logged");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        };
        let signal = |name: &str| {
            let kill = Command::new("kill")
                .args([name, &child.id().to_string()])
                .status()
                .unwrap();
            assert!(kill.success());
        };
        wait_for(2);
        signal("-HUP");
        let after = steps();
        wait_for(after + 2);
        signal("-INT");
        let o = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(130), "{stderr}");
        assert_eq!(
            stderr.matches("interrupt:").count(),
            1,
            "the hang-up was taken for an interrupt: {stderr}"
        );
    }
}

#[test]
fn distill_runs_on_wgpu() {
    #[cfg(feature = "wgpu")]
    {
        if optical::backend::Backend::new(optical::backend::BackendKind::Wgpu).is_err()
            && std::env::var("OPTICAL_SKIP_WGPU").as_deref() == Ok("1")
        {
            eprintln!("skipping: OPTICAL_SKIP_WGPU=1 and no wgpu adapter");
            return;
        }
        let f = fixture();
        let out = f.root.join("run-wgpu");
        check_run(&f, &out, "wgpu");

        // `optical eval --backend wgpu` runs the exported student on burn's wgpu device and
        // ranks as the CPU device does.
        let data = f.root.join("data");
        std::fs::create_dir_all(data.join("tatoeba")).unwrap();
        let pairs = tiny_pairs(24, 11);
        for (ext, k) in [("hau", 0), ("eng", 1)] {
            let side: Vec<&str> = pairs
                .iter()
                .map(|p| if k == 0 { p.0.as_str() } else { p.1.as_str() })
                .collect();
            std::fs::write(
                data.join(format!("tatoeba/tatoeba.hau-eng.{ext}")),
                side.join("\n") + "\n",
            )
            .unwrap();
        }
        let eval = |backend: &str, scoring: &str| -> serde_json::Value {
            let dir = f.root.join(format!("eval-{backend}-{scoring}"));
            let run = Command::new(BIN)
                .args([
                    "eval",
                    "--dataset",
                    "tatoeba",
                    "--languages",
                    "hau",
                    "--no-cache",
                ])
                .arg("--data-dir")
                .arg(&data)
                .arg("--model")
                .arg(out.join("student"))
                .args(["--scoring", scoring])
                // Forward passes of 5 texts on the CPU, the default 32 on the GPU: the
                // ranking must not depend on it.
                .args(["--forward-batch", if backend == "cpu" { "5" } else { "32" }])
                .args(["--backend", backend, "--out"])
                .arg(&dir)
                .output()
                .unwrap();
            assert!(
                run.status.success(),
                "eval --backend {backend}: {}",
                String::from_utf8_lossy(&run.stderr)
            );
            let text = std::fs::read_to_string(dir.join("results.json")).unwrap();
            serde_json::from_str(&text).unwrap()
        };
        let tasks = |v: &serde_json::Value| v["models"][0]["tasks"].as_array().unwrap().clone();
        for scoring in ["dense", "maxsim"] {
            let (cpu, gpu) = (eval("cpu", scoring), eval("wgpu", scoring));
            assert_eq!(tasks(&cpu).len(), 2, "{cpu}");
            for (a, b) in tasks(&cpu).iter().zip(tasks(&gpu).iter()) {
                for m in ["P_1", "recip_rank", "map"] {
                    let (x, y) = (
                        a["metrics"][m].as_f64().unwrap(),
                        b["metrics"][m].as_f64().unwrap(),
                    );
                    assert!(
                        (x - y).abs() < 0.02,
                        "{scoring} {} {m}: cpu {x} wgpu {y}",
                        a["task"]
                    );
                }
            }
        }
    }
}

/// `--ot-backend` moves the cost and Sinkhorn kernels off the encoders' backend: the f64
/// reference kernels under burn's CPU device train the same steps as the CPU fast path to
/// the f32 kernels' accuracy, and the run says where its OT runs.
#[test]
fn the_ot_backend_can_differ_from_the_encoders() {
    let f = fixture();
    let losses = |extra: &[&str]| -> (Vec<f64>, String) {
        let mut args = vec!["--bench-steps", "3"];
        args.extend_from_slice(extra);
        let out = distill(&f, &f.root.join("bench"), &args);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{extra:?}: {stderr}");
        let losses = stderr
            .lines()
            .filter(|l| l.starts_with("bench step"))
            .map(|l| l.rsplit("loss ").next().unwrap().trim().parse().unwrap())
            .collect();
        (losses, stderr)
    };
    let (fast, plain) = losses(&[]);
    let (reference, stderr) = losses(&["--ot-backend", "cpu-reference"]);
    assert!(!plain.contains("OT kernels on"), "{plain}");
    assert!(
        stderr.contains("backend cpu (OT kernels on cpu-reference)"),
        "{stderr}"
    );
    assert_eq!(fast.len(), 3, "{plain}");
    assert_eq!(reference.len(), 3, "{stderr}");
    // A backend that cannot open (CUDA on a machine without it) says that ot_backend chose
    // it and how to run OT on the encoders' backend instead.
    let out = distill(
        &f,
        &f.root.join("bench"),
        &["--bench-steps", "1", "--ot-backend", "cuda"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        assert!(err.contains("(OT kernels on cuda)"), "{err}");
    } else {
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("ot_backend = cuda") && err.contains("--ot-backend cpu"),
            "{err}"
        );
    }
    for (a, b) in fast.iter().zip(&reference) {
        assert!(
            (a - b).abs() < 1e-3,
            "cpu {fast:?} vs cpu-reference {reference:?}"
        );
    }
}

#[test]
fn bad_configs_are_one_line_errors() {
    let f = fixture();
    for (flags, expect) in [
        (vec!["--loss", "wasserstein"], "ot+mean-mse"),
        (vec!["--export", "first"], "best or last"),
        (vec!["--grad-accumulation", "0"], "grad_accumulation"),
        (
            vec!["--seed", "18446744073709551615"],
            "distillation flag seed: expected an integer of at most 9223372036854775807",
        ),
        (vec!["--freeze-layers", "2"], "nothing would be trained"),
        // non-finite values are refused at parsing, negative ones reach the range checks
        (
            vec!["--mse-weight", "nan"],
            "expected a finite number, found nan",
        ),
        (
            vec!["--epsilon", "inf"],
            "expected a finite number, found inf",
        ),
        (
            vec!["--lr", "-1"],
            "parameter lr: expected a finite number > 0, found -1",
        ),
        (
            vec!["--sinkhorn-iterations", "0"],
            "parameter sinkhorn_iterations: expected between 1 and 2147483647, found 0",
        ),
        (
            vec!["--mse-weight", "-0.5"],
            "parameter mse_weight: expected a finite number >= 0",
        ),
        (vec!["--stop-at-step", "0"], "parameter stop_at_step"),
        (
            vec!["--stop-at-step", "1"],
            "parameter stop_at_step: expected a step before the last (steps = 1), found 1",
        ),
        (
            vec!["--weight-decay", "1e300"],
            "parameter weight_decay: expected a finite number >= 0 (within f32's range",
        ),
        (vec!["--bench-steps", "0"], "parameter bench_steps"),
        (
            vec!["--ot-backend", "gpu"],
            "parameter ot_backend: expected",
        ),
        (
            vec!["--sources", "mafand:hau,mafand:hau"],
            "mafand:hau twice",
        ),
    ] {
        let mut args = flags.clone();
        args.extend_from_slice(&["--steps", "1"]);
        let out = distill(&f, &f.root.join("bad"), &args);
        assert!(!out.status.success(), "{flags:?} accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expect), "{flags:?}: {stderr}");
    }
    // A learning rate that overflows the student: said to be divergence, with what to do.
    let out = distill(
        &f,
        &f.root.join("diverged"),
        &[
            "--lr",
            "1e30",
            "--warmup-steps",
            "0",
            "--grad-clip",
            "0",
            "--steps",
            "4",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("training has diverged") && stderr.contains("lower the learning rate"),
        "{stderr}"
    );
}

/// A run directory another process holds (a run in progress, or a `--resume` of it) is
/// refused as in use, before anything is read or written there.
#[test]
fn a_run_directory_in_use_is_refused() {
    let f = fixture();
    let out = f.root.join("held");
    let _held = optical::io::DirLock::acquire(&out, "a run directory").unwrap();
    // The run in progress has written its configuration.
    let config = out.join("config.toml");
    std::fs::write(
        &config,
        optical::distill::DistillConfig::default().to_toml(),
    )
    .unwrap();
    for extra in [&["--steps", "1"][..], &["--resume"][..]] {
        let run = distill(&f, &out, extra);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{extra:?} accepted");
        assert!(
            stderr.contains("in use by another optical process")
                && stderr.contains(&format!("(process {})", std::process::id())),
            "{extra:?}: {stderr}"
        );
    }
    let mut left: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [optical::io::LOCK_FILE, "config.toml"],
        "nothing written"
    );
}

/// A run whose student cannot change (a learning rate far below the weights' f32 spacing)
/// keeps a flat dev P@1, exports its starting model, and says why.
#[test]
fn exporting_the_untrained_model_says_why() {
    let f = fixture();
    let out = f.root.join("run-flat");
    let run = distill(
        &f,
        &out,
        &["--steps", "4", "--eval-every", "2", "--lr", "1e-15"],
    );
    let summary = ok(&run, "flat run");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("distill: exporting the student of step 0"),
        "{stderr}"
    );
    assert!(
        stderr.contains("distill: note: dev P@1 stayed at")
            && stderr.contains("in all 3 evaluations")
            && stderr.contains("--export last"),
        "{stderr}\n{summary}"
    );
    // With --export last nothing needs explaining.
    let out = f.root.join("run-last");
    let run = distill(
        &f,
        &out,
        &[
            "--steps",
            "4",
            "--eval-every",
            "2",
            "--lr",
            "1e-15",
            "--export",
            "last",
        ],
    );
    ok(&run, "flat run, export last");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("exporting the student of step 4"),
        "{stderr}"
    );
    assert!(!stderr.contains("distill: note:"), "{stderr}");
}

/// Hand-edited or damaged files of a run directory are refused by name before anything is
/// trained, and nothing of the run is removed: a `latest` that names no checkpoint of the
/// run, a state whose step is not its directory's, a config.toml edited to change what a
/// step computes, and training data that changed under the same sources.
#[test]
fn edited_run_files_are_refused_and_nothing_is_lost() {
    let f = fixture();
    let out = f.root.join("run-edited");
    // A weight of 17 significant digits, which JSON may read back one unit off: the
    // resume at the end must still match it.
    ok(
        &distill(
            &f,
            &out,
            &["--steps", "4", "--mse-weight", "0.9122214092097937"],
        ),
        "first sitting",
    );
    let checkpoints = out.join("checkpoints");
    let latest = checkpoints.join("latest");
    let listing = || {
        let mut names: Vec<String> = std::fs::read_dir(&checkpoints)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = listing();
    // `--resume --out` alone: the run's own config.toml is all there is to go on.
    let refused = |needle: &str| {
        let run = Command::new(BIN)
            .args([
                "distill",
                "--no-progress",
                "--resume",
                "--steps",
                "6",
                "--out",
            ])
            .arg(&out)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(needle), "expected {needle:?} in {stderr}");
        assert_eq!(lines(&out.join("log.jsonl")).len(), 4, "the log changed");
    };

    for (text, needle) in [
        ("garbage\n", "expected the name of a checkpoint directory"),
        ("", "expected the name of a checkpoint directory"),
        (
            "../../run-other/checkpoints/step-000004",
            "expected the name",
        ),
        ("step-000003\n", "is not a directory"),
    ] {
        std::fs::write(&latest, text).unwrap();
        refused(needle);
        assert_eq!(listing(), before, "checkpoints removed");
    }
    std::fs::write(&latest, "step-000004\n").unwrap();

    let state_path = checkpoints.join("step-000004").join("state.json");
    let state = std::fs::read_to_string(&state_path).unwrap();
    let mut edited: serde_json::Value = serde_json::from_str(&state).unwrap();
    edited["step"] = 3.into();
    std::fs::write(&state_path, edited.to_string()).unwrap();
    refused("checkpoint of step 4");
    std::fs::write(&state_path, &state).unwrap();

    let config_path = out.join("config.toml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(&config_path, config.replace("lr = 0.001", "lr = 0.01")).unwrap();
    refused("trained with lr = 0.001");
    std::fs::write(&config_path, &config).unwrap();

    let en = f.root.join("train.en");
    let hau = f.root.join("train.hau");
    let (en_text, hau_text) = (
        std::fs::read_to_string(&en).unwrap(),
        std::fs::read_to_string(&hau).unwrap(),
    );
    std::fs::write(&en, format!("{en_text}e1 e2 e3\n")).unwrap();
    std::fs::write(&hau, format!("{hau_text}f1 f2 f3\n")).unwrap();
    refused("trained on other pairs");
    std::fs::write(&en, en_text).unwrap();
    std::fs::write(&hau, hau_text).unwrap();

    // The optimiser state of another run (same model, another seed): burn would load it,
    // match none of its parameters and restart Adam silently.
    let other = f.root.join("run-other");
    ok(
        &distill(&f, &other, &["--steps", "4", "--seed", "9"]),
        "the other run",
    );
    let optimizer = checkpoints.join("step-000004").join("optimizer.bpk");
    let own = std::fs::read(&optimizer).unwrap();
    std::fs::copy(
        other.join("checkpoints/step-000004/optimizer.bpk"),
        &optimizer,
    )
    .unwrap();
    refused("optimizer.bpk: not the file this checkpoint wrote");
    std::fs::write(&optimizer, own).unwrap();

    // Restored, the run goes on.
    let resumed = ok(&distill(&f, &out, &["--steps", "6", "--resume"]), "resume");
    assert_eq!(resumed["steps"], 6, "{resumed}");
}

/// A run that stops before its first checkpoint (here killed after its first step) leaves
/// its config.toml and logs, and nothing to continue from: a fresh start there is refused
/// (it would replace them) with a message naming --resume, and --resume starts it again from
/// step 0, with any setting changed (nothing was trained).
#[test]
fn a_run_that_saved_no_checkpoint_starts_again_with_resume() {
    let f = fixture();
    let out = f.root.join("unsaved");
    let mut child = distill_command(
        &f,
        &out,
        &[
            "--steps",
            "100000",
            "--checkpoint-every",
            "0",
            "--eval-every",
            "0",
            "--epsilon",
            "0.05",
        ],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let log = out.join("log.jsonl");
    let t0 = std::time::Instant::now();
    while std::fs::read_to_string(&log).map_or(0, |t| t.lines().count()) < 1 {
        assert!(t0.elapsed().as_secs() < 120, "no training step logged");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(out.join("config.toml").is_file());
    assert!(!out.join("checkpoints/latest").exists());

    let fresh = distill(&f, &out, &["--steps", "2"]);
    let err = String::from_utf8_lossy(&fresh.stderr);
    assert_eq!(fresh.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--resume starts it again from step 0"),
        "{err}"
    );

    let resumed = distill(&f, &out, &["--steps", "2", "--resume"]);
    let summary = ok(&resumed, "resume of a run without a checkpoint");
    assert_eq!(summary["steps"], 2, "{summary}");
    let err = String::from_utf8_lossy(&resumed.stderr);
    assert!(err.contains("starting it again from step 0"), "{err}");
    let steps: Vec<u64> = lines(&out.join("log.jsonl"))
        .iter()
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [1, 2]);
    let saved = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(saved.contains("epsilon = 0.1"), "{saved}");
    assert!(out.join("log.jsonl.prev").exists() || out.join("dev.jsonl.prev").exists());

    // A finished run whose student was moved away and checkpoints removed is not one that
    // saved nothing: --resume refuses it, and its logs stay.
    std::fs::rename(out.join("student"), f.root.join("moved-student")).unwrap();
    std::fs::remove_dir_all(out.join("checkpoints")).unwrap();
    let again = distill(&f, &out, &["--steps", "2", "--resume"]);
    let err = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(2), "{err}");
    assert!(err.contains("without checkpoints/latest"), "{err}");
    assert_eq!(lines(&out.join("log.jsonl")).len(), 2);

    // A file where a directory above the run directory goes: refused before anything loads.
    let under_file = f.root.join("train.hau").join("run");
    let o = distill(&f, &under_file, &["--steps", "2"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("train.hau, a file") && !err.contains("training pairs"),
        "{err}"
    );
}

/// Model and data paths are saved absolute: a run started with relative paths resumes from
/// another directory, and the same model named another way on a resume is no change.
#[test]
fn a_run_with_relative_paths_resumes_from_anywhere() {
    let f = fixture();
    let out = f.root.join("relative");
    let relative = [
        "--teacher",
        "tiny",
        "--student",
        "./tiny",
        "--sources",
        "files:hau:train.hau:train.en",
    ];
    let first = distill_command(
        &f,
        &out,
        &[&relative[..], &["--steps", "6", "--stop-at-step", "2"]].concat(),
    )
    .current_dir(&f.root)
    .output()
    .unwrap();
    ok(&first, "the run with relative paths");
    let saved = std::fs::read_to_string(out.join("config.toml")).unwrap();
    let model = f.model.display().to_string();
    assert!(
        saved.contains(&format!("teacher = \"{model}\""))
            && saved.contains(&format!("student = \"{model}\"")),
        "{saved}"
    );
    // From elsewhere, with nothing but the run directory.
    let resume = |dir: &Path, extra: &[&str]| {
        let o = Command::new(BIN)
            .args(["distill", "--resume", "--no-progress", "--out"])
            .arg(&out)
            .args(extra)
            .current_dir(dir)
            .output()
            .unwrap();
        let summary = ok(
            &o,
            &format!("the resume from {} with {extra:?}", dir.display()),
        );
        (summary, String::from_utf8_lossy(&o.stderr).into_owned())
    };
    resume(Path::new("/"), &["--stop-at-step", "3"]);
    // The same model named through `..`: no change.
    let sub = f.root.join("sub");
    std::fs::create_dir(&sub).unwrap();
    let (_, err) = resume(&sub, &["--teacher", "../tiny", "--stop-at-step", "4"]);
    assert!(!err.contains("resume changes teacher"), "{err}");
    // Sources that moved: given relatively from their new place, saved absolute there.
    let moved = f.root.join("moved");
    std::fs::create_dir(&moved).unwrap();
    for name in ["train.hau", "train.en"] {
        std::fs::rename(f.root.join(name), moved.join(name)).unwrap();
    }
    let (_, err) = resume(
        &moved,
        &[
            "--sources",
            "files:hau:train.hau:train.en",
            "--stop-at-step",
            "5",
        ],
    );
    assert!(err.contains("resume changes sources"), "{err}");
    let saved = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(
        saved.contains(&format!("files:hau:{}", moved.join("train.hau").display())),
        "{saved}"
    );
    let (summary, _) = resume(Path::new("/"), &[]);
    assert_eq!(summary["steps"], 6, "{summary}");
}

/// Without dev pairs nothing is evaluated (not even periodically) and the last step is
/// exported.
#[test]
fn without_dev_pairs_the_last_step_is_exported() {
    let f = fixture();
    let out = f.root.join("no-dev");
    let run = distill(
        &f,
        &out,
        &["--dev-pairs", "0", "--steps", "4", "--eval-every", "2"],
    );
    let summary = ok(&run, "the run without dev pairs");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!stderr.contains("dev step"), "{stderr}");
    assert_eq!(summary["exported_step"], 4, "{summary}");
    assert!(!out.join("best").exists());
}
