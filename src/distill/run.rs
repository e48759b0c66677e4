//! A whole `optical distill` run: load data and encoders, train with progress bar, JSONL
//! log, checkpoints, Ctrl-C handling and dev evaluation; then plots and the exported
//! student. Also the `--bench-steps` step-time breakdown, and with several `--devices` the
//! step throughput against the number of devices. With several devices the main replica
//! alone writes checkpoints, logs and the student (see [`super::ddp`]).

use crate::cli::outln;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use super::config::DistillConfig;
use super::data::load_sources;
use super::ddp::resolve_devices;
use super::export::export;
use super::plot::{line_chart, Series};
use super::train::{
    checkpoint_dir, DevMetrics, StepRecord, StepTimes, TokenizedPairs, TrainState, Trainer,
};
use crate::assets::Asset;
use crate::backend::BackendKind;
use crate::encoder::{EncoderOptions, ModelSpec, TextEncoder, TextKind};
use crate::error::{Error, Result};

/// How to run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Continue from the run directory's latest checkpoint.
    pub resume: bool,
    /// Only time this many steps (no checkpoints, evaluation or export).
    pub bench_steps: Option<usize>,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Stop after this optimiser step with a checkpoint, as an interruption does (the run
    /// continues with `resume`): splits a long run into sittings.
    pub stop_at_step: Option<usize>,
    /// How the user continues a stopped run, for the message that says it stopped (`None`:
    /// `--resume`, as `optical distill` takes it).
    pub continue_with: Option<&'static str>,
    /// The hold on the run directory, when the caller took it (before reading the run's
    /// files to resume it); otherwise the run takes it.
    pub held: Option<Arc<crate::io::DirLock>>,
    /// Take the process's stop signals (SIGINT, SIGTERM, SIGHUP; Ctrl-C on Windows), as
    /// `optical distill` does: the first stops the run at its next step with a checkpoint,
    /// a second one a second later ends the process (exit status 130) once the files
    /// being saved are whole. The handler stays for the rest of the process. Off by
    /// default: a program that embeds the run keeps its own signal handling.
    pub handle_interrupts: bool,
}

/// What a finished run reports (also written as `summary.json`).
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    pub steps: usize,
    pub interrupted: bool,
    pub training_pairs: usize,
    pub skipped_pairs: usize,
    pub dev_pairs: usize,
    pub trainable_parameters: usize,
    /// Devices trained on (one replica each).
    pub devices: usize,
    pub dev: Vec<DevMetrics>,
    pub best_step: Option<usize>,
    /// The step whose student was exported (the best by dev P@1, then MRR, unless
    /// `export = "last"`).
    pub exported_step: Option<usize>,
    pub student: Option<PathBuf>,
    /// Mean time of a step over the run's logged steps, every sitting's (the first step
    /// left out: it pays one-off costs).
    pub mean_seconds: StepTimes,
    /// Mean student-side tokens per second over the same steps.
    pub tokens_per_s: f64,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Milliseconds since [`epoch`] of the first interrupt (0: none yet).
static FIRST_INTERRUPT_MS: AtomicU64 = AtomicU64::new(0);

/// Saves in progress (checkpoints, the student), in any thread: a second interrupt waits
/// for them, since one cut short leaves a checkpoint directory that is neither resumable nor
/// removable by the run. Several runs may save at once (a library user's threads).
static SAVES: AtomicUsize = AtomicUsize::new(0);

/// A second interrupt asked the process to end: the handler ends it when no save is in
/// progress, else the last save to finish does.
static EXIT_REQUESTED: AtomicBool = AtomicBool::new(false);

/// A second interrupt sooner than this after the first is the same event (a hang-up
/// delivers SIGHUP from the kernel and from the shell; a scheduler may signal a wrapper
/// and the process), not a user who cannot wait.
const SECOND_INTERRUPT_MS: u64 = 1000;

fn epoch() -> std::time::Instant {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(std::time::Instant::now)
}

fn install_ctrlc() {
    epoch();
    let hangup_was_ignored = hangup_ignored();
    // A second installation in the same process fails; the flag is shared, so that is fine.
    let _ = ctrlc::set_handler(|| {
        let now = epoch().elapsed().as_millis() as u64 + 1;
        if !INTERRUPTED.swap(true, Ordering::SeqCst) {
            FIRST_INTERRUPT_MS.store(now, Ordering::SeqCst);
            errln!(
                "\ninterrupt: stopping at the next safe point, with what is done saved \
                 (Ctrl-C again stops now)"
            );
            return;
        }
        if now < FIRST_INTERRUPT_MS.load(Ordering::SeqCst) + SECOND_INTERRUPT_MS {
            return;
        }
        // The first interrupt asked for a clean stop; a second one is a user who cannot
        // wait for it. A save in progress finishes first. (Set, then read: a save starting
        // now sees the request, or the handler sees the save.)
        EXIT_REQUESTED.store(true, Ordering::SeqCst);
        if SAVES.load(Ordering::SeqCst) == 0 {
            errln!("\ninterrupted again: stopping now (what was saved stays)");
            std::process::exit(130);
        }
        errln!("\ninterrupted again: stopping once the files being saved are whole");
    });
    if hangup_was_ignored {
        ignore_hangup();
    }
}

/// Whether the process was started with SIGHUP ignored (`nohup`). It then stays ignored
/// (the handler takes SIGINT, SIGTERM and SIGHUP), so that logging out does not stop a
/// `nohup optical distill`. SIGINT, which a non-interactive shell ignores for its
/// background jobs, is taken still: `kill -INT` stops such a run cleanly.
#[cfg(unix)]
fn hangup_ignored() -> bool {
    // SAFETY: a query only (no new action); `old` is a valid, zeroed sigaction for the call
    // to fill.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGHUP, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    }
}

/// Ignore SIGHUP again (after the handler took it over).
#[cfg(unix)]
fn ignore_hangup() {
    // SAFETY: SIG_IGN is a valid disposition for SIGHUP; no handler of ours runs for it
    // afterwards.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
}

#[cfg(not(unix))]
fn hangup_ignored() -> bool {
    false
}

#[cfg(not(unix))]
fn ignore_hangup() {}

/// Run `save` with a second interrupt held off until it is done (then the process ends,
/// exit 130, as the interrupt asked).
fn saving<T>(save: impl FnOnce() -> T) -> T {
    SAVES.fetch_add(1, Ordering::SeqCst);
    if EXIT_REQUESTED.load(Ordering::SeqCst) {
        // The process is ending: a save started now would be cut short.
        SAVES.fetch_sub(1, Ordering::SeqCst);
        errln!("stopped (what was saved stays)");
        std::process::exit(130);
    }
    let out = save();
    if SAVES.fetch_sub(1, Ordering::SeqCst) == 1 && EXIT_REQUESTED.load(Ordering::SeqCst) {
        errln!("stopped (what was saved stays)");
        std::process::exit(130);
    }
    out
}

/// Route the process's stop signals to the flag a run checks after every step (for
/// callers, such as a study, that run several things and must stop between them too);
/// see [`RunOptions::handle_interrupts`]. The handler stays for the rest of the process.
pub fn install_interrupt_handler() {
    install_ctrlc();
}

/// Whether a stop signal reached the handler (see [`install_interrupt_handler`]). The flag
/// is never cleared: once set, every run of the process stops at its next step.
pub fn interrupt_requested() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// The tokenizer file that goes with a model spec.
pub fn tokenizer_path(spec: &ModelSpec) -> Result<PathBuf> {
    match spec {
        ModelSpec::MiniLm => Asset::MiniLm.file("tokenizer.json"),
        ModelSpec::E5Small => Asset::XlmrTokenizer.file("tokenizer.json"),
        ModelSpec::Path(p) if p.is_dir() => Ok(p.join("tokenizer.json")),
        ModelSpec::Path(p) => {
            let beside = p.with_file_name("tokenizer.json");
            if beside.is_file() {
                Ok(beside)
            } else {
                Asset::XlmrTokenizer.file("tokenizer.json")
            }
        }
    }
}

fn append_jsonl(path: &Path, value: &impl Serialize) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, "open", e))?;
    let mut line =
        serde_json::to_string(value).map_err(|e| Error::value("log record", e.to_string()))?;
    line.push('\n');
    // One write for the record and its newline: an exit between two writes would leave a
    // line without its end, and the next record on the same line.
    f.write_all(line.as_bytes())
        .map_err(|e| Error::io(path, "write", e))
}

/// Keep only the records of a JSONL log whose `step` is at most `step`.
fn truncate_log(path: &Path, step: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("step")?.as_u64())
                .is_some_and(|s| s as usize <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    write_text(path, &kept)
}

/// Every record of the dev log, in order; `None` when it cannot be read.
fn read_dev_log(path: &Path) -> Option<Vec<DevMetrics>> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().map(|l| serde_json::from_str(l).ok()).collect()
}

/// The dev log's last record, when it is of `step`.
fn last_dev_record(path: &Path, step: usize) -> Option<DevMetrics> {
    let text = std::fs::read_to_string(path).ok()?;
    let m: DevMetrics = serde_json::from_str(text.lines().last()?).ok()?;
    (m.step == step).then_some(m)
}

/// Hold the run directory `out` for this process (see [`crate::io::DirLock`]), created if
/// need be, before what it holds is read or checked: a run another process is writing is
/// refused as in use, not as a run to `--resume`.
pub fn lock_run_dir(out: &Path) -> Result<crate::io::DirLock> {
    check_run_path(out)?;
    crate::io::DirLock::acquire(out, "a run directory")
}

/// `out` can be a run directory: not a file, nor under one.
fn check_run_path(out: &Path) -> Result<()> {
    if out.exists() && !out.is_dir() {
        return Err(Error::parameter(
            "out",
            "a run directory (new, or one to --resume)",
            format!("{}, a file", out.display()),
        ));
    }
    // A file where a directory above it would be created (`--out afile/run`) fails the
    // first write, after the models loaded.
    if let Some(file) = out
        .ancestors()
        .skip(1)
        .find(|p| p.exists())
        .filter(|p| !p.is_dir())
    {
        return Err(Error::parameter(
            "out",
            "a run directory (new, or one to --resume)",
            format!("{}, inside {}, a file", out.display(), file.display()),
        ));
    }
    Ok(())
}

fn check_run_dir(out: &Path, resume: bool) -> Result<()> {
    let latest = out.join("checkpoints").join("latest");
    let unsaved = stopped_before_first_checkpoint(out);
    if resume && !latest.is_file() && !unsaved {
        return Err(Error::parameter(
            "out",
            "a run directory with a checkpoint to --resume (a run saves one every \
             --checkpoint-every steps and when it is interrupted)",
            format!("{} without checkpoints/latest", out.display()),
        ));
    }
    if resume && !unsaved {
        // Before any model loads: `latest` names a checkpoint of this run.
        read_latest(out)?;
    }
    if !resume && latest.exists() {
        let held = match read_latest(out) {
            Ok(Some((step, _))) => format!("latest checkpoint step-{step:06}"),
            _ => "checkpoints/latest".to_string(),
        };
        return Err(Error::parameter(
            "out",
            "a new or empty run directory (continue the run there with --resume, or \
             choose another --out)",
            format!("{} holding a run ({held})", out.display()),
        ));
    }
    if !resume {
        // What a run writes, from an earlier run without a checkpoint (or another
        // program): a fresh start would delete or overwrite it.
        let found: Vec<&str> = RUN_OUTPUTS
            .iter()
            .copied()
            .filter(|name| out.join(name).exists())
            .collect();
        if !found.is_empty() {
            let how = if unsaved {
                "this one holds a run that stopped before its first checkpoint: --resume \
                 starts it again from step 0 with its config.toml (any setting may change, \
                 nothing was trained), or choose another --out"
            } else {
                "a fresh start replaces them; choose another --out, or remove them"
            };
            return Err(Error::parameter(
                "out",
                format!("a new run directory, or one without a run's files ({how})"),
                format!("{} holding {}", out.display(), found.join(", ")),
            ));
        }
    }
    Ok(())
}

/// Whether the run directory `out` holds a run that stopped before its first checkpoint
/// (interrupted or failed while loading, at its first evaluation, in its first steps): its
/// config.toml and nothing to continue from, so `--resume` starts it again from step 0.
///
/// Not a run that finished (its summary says so, a study wrote its result, it exported a
/// student: its checkpoints may have been deleted to free space, and a restart would
/// replace its logs), nor one with any whole checkpoint (`state.json` is written last, so
/// a directory without it is a save cut short).
pub fn stopped_before_first_checkpoint(out: &Path) -> bool {
    let finished = out.join("result.json").exists()
        || out.join("student").exists()
        || std::fs::read_to_string(out.join("summary.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .is_some_and(|v| v.get("interrupted") != Some(&serde_json::Value::Bool(true)));
    let checkpoints = out.join("checkpoints");
    let any_checkpoint = checkpoints.join("latest").exists()
        || std::fs::read_dir(&checkpoints)
            .is_ok_and(|d| d.flatten().any(|e| e.path().join("state.json").exists()));
    out.join("config.toml").is_file() && !finished && !any_checkpoint
}

/// The files and directories a run writes in its directory.
const RUN_OUTPUTS: [&str; 9] = [
    "config.toml",
    "log.jsonl",
    "dev.jsonl",
    "summary.json",
    "best",
    "loss.svg",
    "dev.svg",
    "student",
    "checkpoints",
];

/// Remove what an earlier run wrote in `out` (see `RUN_OUTPUTS`), so that a fresh start can
/// take the directory: for callers that own it, as `optical study` owns its run directories
/// (a run that stopped before its first checkpoint starts over).
pub fn clear_run_outputs(out: &Path) -> Result<()> {
    for name in RUN_OUTPUTS {
        let p = out.join(name);
        let result = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else if p.exists() {
            std::fs::remove_file(&p)
        } else {
            continue;
        };
        result.map_err(|e| Error::io(&p, "remove", e))?;
    }
    Ok(())
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    crate::io::write_atomic(path, text)
}

/// The times of a step, as `log.jsonl` has them (the rest of a record is not needed).
#[derive(Clone, Copy, Deserialize)]
struct LoggedTimes {
    seconds: StepTimes,
    tokens_per_s: f64,
}

/// The step times of `log.jsonl` that can be read (none when the file cannot).
fn read_step_log(path: &Path) -> Vec<LoggedTimes> {
    std::fs::read_to_string(path)
        .map(|text| {
            text.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .unwrap_or_default()
}

fn mean_times(records: &[StepRecord]) -> (StepTimes, f64) {
    let times: Vec<LoggedTimes> = records
        .iter()
        .map(|r| LoggedTimes {
            seconds: r.seconds,
            tokens_per_s: r.tokens_per_s,
        })
        .collect();
    mean_logged_times(&times)
}

fn mean_logged_times(records: &[LoggedTimes]) -> (StepTimes, f64) {
    // The first step pays one-off costs (allocation, caches); leave it out when we can.
    let rs = if records.len() > 1 {
        &records[1..]
    } else {
        records
    };
    let n = rs.len().max(1) as f64;
    let mut t = StepTimes::default();
    let mut tps = 0.0;
    for r in rs {
        let s = &r.seconds;
        t.teacher += s.teacher / n;
        t.student += s.student / n;
        t.ot += s.ot / n;
        t.transfer += s.transfer / n;
        t.backward += s.backward / n;
        t.sync += s.sync / n;
        t.optimizer += s.optimizer / n;
        t.total += s.total / n;
        tps += r.tokens_per_s / n;
    }
    (t, tps)
}

/// Print the step-time breakdown table.
pub fn print_breakdown(t: &StepTimes, tokens_per_s: f64) -> Result<()> {
    let share = |v: f64| 100.0 * v / t.total.max(1e-12);
    outln!("| part | seconds/step | share |");
    outln!("|---|---:|---:|");
    for (name, v) in [
        ("teacher forward", t.teacher),
        ("student forward", t.student),
        ("OT (cost to host, Sinkhorn, plan back)", t.ot),
        ("  of which host round trip", t.transfer),
        ("backward", t.backward),
        ("gradient exchange outside backward", t.sync),
        ("optimizer", t.optimizer),
        ("total", t.total),
    ] {
        outln!("| {name} | {v:.4} | {:.1}% |", share(v));
    }
    outln!("tokens/s (student side): {tokens_per_s:.0}");
    Ok(())
}

/// When warm-up lasts the whole run, the learning rate never reaches `lr`: say so.
fn warmup_note(config: &DistillConfig) -> Option<String> {
    (config.steps > 0 && config.warmup_steps > config.steps).then(|| {
        format!(
            "warmup_steps {} > steps {}: the learning rate rises for the whole run and peaks \
             at {:.3e} instead of lr {:.3e}",
            config.warmup_steps,
            config.steps,
            config.lr_at(config.steps - 1),
            config.lr
        )
    })
}

fn announce(trainer: &Trainer, config: &DistillConfig) {
    let devices = trainer
        .gradient_sync()
        .map(|s| format!(", {} devices, gradients by {}", trainer.devices(), s.name()))
        .unwrap_or_default();
    // What the trainer opened, not what the config says.
    let ot = trainer.ot_backend();
    let ot = match config.backend.parse::<crate::backend::BackendKind>() {
        Ok(kind) if kind == ot => String::new(),
        _ => format!(" (OT kernels on {})", ot.name()),
    };
    errln!(
        "distill: {} trainable parameters, loss {}, backend {}{ot}{devices}",
        trainer.trainable_parameters(),
        config.loss,
        config.backend,
    );
    if let Some(note) = warmup_note(config) {
        errln!("distill: note: {note}");
    }
    if let Some(k) = trainer.shared_prefix() {
        errln!(
            "distill: the student's frozen embeddings and layers 0..{k} are the teacher's: \
             its English prefix states come from the teacher's forward pass"
        );
    }
}

/// Time `n` steps (at least one) of `trainer`.
fn bench_steps(trainer: &mut Trainer, n: usize) -> Result<Vec<StepRecord>> {
    let mut records = Vec::new();
    for _ in 0..n.max(1) {
        let r = trainer.step()?;
        errln!(
            "bench step {} on {} device(s): {:.3} s, loss {:.4}",
            r.step,
            trainer.devices(),
            r.seconds.total,
            r.loss
        );
        records.push(r);
    }
    Ok(records)
}

/// Device counts of the throughput sweep: 1, 2, 4, … below `n`, then `n`.
fn device_counts(n: usize) -> Vec<usize> {
    let mut counts: Vec<usize> = std::iter::successors(Some(1usize), |c| c.checked_mul(2))
        .take_while(|&c| c < n)
        .collect();
    counts.push(n);
    counts
}

/// Print step throughput against the number of devices (the same global batch each time).
pub fn print_scaling(rows: &[(usize, (StepTimes, f64))], pairs_per_step: usize) -> Result<()> {
    let base = rows.first().map(|(_, (t, _))| t.total).unwrap_or(0.0);
    outln!("| devices | seconds/step | steps/s | pairs/s | tokens/s | speed-up | efficiency |");
    outln!("|---:|---:|---:|---:|---:|---:|---:|");
    for (count, (t, tps)) in rows {
        let speedup = base / t.total.max(1e-12);
        outln!(
            "| {count} | {:.4} | {:.3} | {:.1} | {tps:.0} | {speedup:.2} | {:.0}% |",
            t.total,
            1.0 / t.total.max(1e-12),
            pairs_per_step as f64 / t.total.max(1e-12),
            100.0 * speedup / *count as f64
        );
    }
    Ok(())
}

/// A model error named after the setting that gave the model (`teacher` or `student`),
/// not the encoder's generic `model`, which would not say which of the two was wrong.
fn model_flag(e: Error, flag: &'static str) -> Error {
    e.for_setting("model", flag, |found| found)
}

/// Run a distillation.
pub fn run(config: DistillConfig, options: &RunOptions) -> Result<RunSummary> {
    config.validate()?;
    if options.bench_steps == Some(0) {
        return Err(Error::parameter("bench_steps", "at least 1 timed step", 0));
    }
    if options.stop_at_step == Some(0) {
        return Err(Error::parameter(
            "stop_at_step",
            "a step of at least 1 (training stops after it)",
            0,
        ));
    }
    // A stop at or after the last step would never stop anything: the run would train to
    // its end and export, which a script running it in sittings does not want.
    if let Some(stop) = options.stop_at_step.filter(|&s| s >= config.steps) {
        return Err(Error::parameter(
            "stop_at_step",
            format!("a step before the last (steps = {})", config.steps),
            stop,
        ));
    }
    if options.bench_steps.is_some() && options.resume {
        return Err(Error::parameter(
            "bench_steps",
            "no --resume with --bench-steps (the timed steps start from the configured \
             student, not from a checkpoint)",
            "--resume",
        ));
    }
    // Held until the run returns: its checkpoints, logs and student are this process's.
    let _lock = match (options.bench_steps, &options.held) {
        (Some(_), _) => None,
        (None, held) => {
            let lock = match held {
                Some(held) => held.clone(),
                None => Arc::new(lock_run_dir(&config.out)?),
            };
            check_run_dir(&config.out, options.resume)?;
            Some(lock)
        }
    };
    // What the checkpoint's step rules out, before the models load (the checkpoint's state
    // is checked to be of that step when it loads).
    if let Some((step, _)) = options
        .resume
        .then(|| read_latest(&config.out))
        .transpose()?
        .flatten()
    {
        if config.steps < step {
            return Err(Error::parameter(
                "steps",
                format!("at least {step} when resuming (the latest checkpoint's step)"),
                config.steps,
            ));
        }
        if let Some(stop) = options.stop_at_step.filter(|&s| s <= step) {
            return Err(Error::parameter(
                "stop_at_step",
                format!("a step after {step} (the step of the checkpoint it resumes)"),
                stop,
            ));
        }
    }
    let kind: BackendKind = config.backend.parse()?;
    let devices = resolve_devices(kind, &config.device_selection()?)?;
    if devices.len() > 1 && matches!(kind, BackendKind::Cpu | BackendKind::CpuReference) {
        // The CPU is one device: the indices only count replicas.
        errln!(
            "distill: --devices {} on the CPU: {} replicas share the one CPU device (a test of \
             the data-parallel path, no speed-up)",
            config.devices,
            devices.len()
        );
    }
    let device = devices[0].clone();
    let data_dir = crate::data::data_dir(config.data_dir.as_deref());
    let english_bible = config
        .english_bible
        .clone()
        .unwrap_or_else(crate::data::bitext::default_english_bible);
    let pairs = load_sources(&config.sources, &data_dir, &english_bible)?;
    let skipped = pairs.skipped;
    let (train, dev) = pairs.shuffle_split(config.seed, config.dev_pairs)?;
    errln!(
        "distill: {} training pairs ({} skipped as blank), {} dev pairs",
        train.len(),
        skipped,
        dev.len()
    );
    let enc_options = EncoderOptions {
        max_length: Some(config.max_length),
        ..EncoderOptions::default()
    };
    let teacher_spec: ModelSpec = config
        .teacher
        .parse()
        .map_err(|e| model_flag(e, "teacher"))?;
    let student_spec: ModelSpec = config
        .student
        .parse()
        .map_err(|e| model_flag(e, "student"))?;
    // The exported student keeps its starting model's token limit (MiniLM's 256).
    let student_max_length = student_spec
        .default_max_length()
        .map_err(|e| model_flag(e, "student"))?;
    let teacher = TextEncoder::load(&teacher_spec, device.clone(), &enc_options)
        .map_err(|e| model_flag(e, "teacher"))?;
    let student = TextEncoder::load(&student_spec, device.clone().autodiff(), &enc_options)
        .map_err(|e| model_flag(e, "student"))?;
    let data = TokenizedPairs {
        student: student.tokenize(&train.other, TextKind::Query)?,
        teacher: teacher.tokenize(&train.english, TextKind::Query)?,
        student_english: if config.distill_english {
            student.tokenize(&train.english, TextKind::Query)?
        } else {
            Vec::new()
        },
    };
    let dev_other = student.tokenize(&dev.other, TextKind::Query)?;
    let dev_english = student.tokenize(&dev.english, TextKind::Query)?;
    let prefixes = (student.query_prefix.clone(), student.passage_prefix.clone());
    let student_config = student.config.clone();
    let pads = (
        student.config.pad_token_id as u32,
        teacher.config.pad_token_id as u32,
    );
    let out = config.out.clone();
    // Kept for the device-count sweep of the bench (module clones share their tensors).
    if let (Some(n), true) = (options.bench_steps, devices.len() > 1) {
        // Step throughput against the number of devices: a fresh run on the first 1, 2,
        // 4, … devices of the list, the same global batch each time.
        let mut rows = Vec::new();
        let mut last = (Vec::new(), 0);
        for count in device_counts(devices.len()) {
            let mut t = Trainer::new(
                config.clone(),
                student.model.clone(),
                teacher.model.clone(),
                pads,
                data.clone(),
            )?;
            t.replicate(&devices[..count])?;
            t.time_parts_exactly(true);
            announce(&t, &config);
            let records = bench_steps(&mut t, n)?;
            rows.push((count, mean_times(&records)));
            last = (records, t.trainable_parameters());
        }
        print_scaling(&rows, config.batch_size * config.grad_accumulation)?;
        let (t, tps) = mean_times(&last.0);
        print_breakdown(&t, tps)?;
        return Ok(RunSummary {
            steps: last.0.len(),
            interrupted: false,
            training_pairs: train.len(),
            skipped_pairs: skipped,
            dev_pairs: dev.len(),
            trainable_parameters: last.1,
            devices: devices.len(),
            dev: Vec::new(),
            best_step: None,
            exported_step: None,
            student: None,
            mean_seconds: t,
            tokens_per_s: tps,
        });
    }
    let mut trainer = Trainer::new(config.clone(), student.model, teacher.model, pads, data)?;
    trainer.replicate(&devices)?;
    announce(&trainer, &config);

    if let Some(n) = options.bench_steps {
        trainer.time_parts_exactly(true);
        let records = bench_steps(&mut trainer, n)?;
        let (t, tps) = mean_times(&records);
        print_breakdown(&t, tps)?;
        return Ok(RunSummary {
            steps: records.len(),
            interrupted: false,
            training_pairs: train.len(),
            skipped_pairs: skipped,
            dev_pairs: dev.len(),
            trainable_parameters: trainer.trainable_parameters(),
            devices: trainer.devices(),
            dev: Vec::new(),
            best_step: None,
            exported_step: None,
            student: None,
            mean_seconds: t,
            tokens_per_s: tps,
        });
    }

    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, "create", e))?;
    let log = out.join("log.jsonl");
    let dev_log = out.join("dev.jsonl");
    let latest = out.join("checkpoints").join("latest");
    let checkpoint = if options.resume {
        read_latest(&out)?
    } else {
        None
    };
    if let Some((step, dir)) = checkpoint {
        trainer.load_checkpoint(&dir, step)?;
        // The exported student of a finished run comes from its best checkpoint: missing,
        // it would fail only after all the training.
        if let (Some(best), "best") = (trainer.state.best_step, config.export.as_str()) {
            let best_dir = checkpoint_dir(&out, best);
            if best > 0 && best != step && !best_dir.is_dir() {
                return Err(Error::Format {
                    path: dir.join("state.json"),
                    what: format!(
                        "its best step {best} has no checkpoint ({} is missing): resume with \
                         --export last, or from another checkpoint",
                        best_dir.display()
                    ),
                });
            }
        }
        errln!(
            "distill: resumed from {} (step {})",
            dir.display(),
            trainer.state.step
        );
        // A run killed between checkpoints logged steps that will be redone.
        for p in [&log, &dev_log] {
            truncate_log(p, trainer.state.step)?;
        }
    } else {
        // (check_run_dir refused a directory holding a run before anything loaded; a
        // resume without a checkpoint starts the run again.)
        if options.resume {
            errln!(
                "distill: {} has no checkpoint (the run stopped before its first): starting \
                 it again from step 0 with its config.toml (its logs kept as *.prev)",
                out.display()
            );
            for p in [&log, &dev_log] {
                if p.exists() {
                    let prev = p.with_extension("jsonl.prev");
                    std::fs::rename(p, &prev).map_err(|e| Error::io(p, "rename", e))?;
                }
            }
        }
        for p in [&log, &dev_log] {
            if p.exists() {
                std::fs::remove_file(p).map_err(|e| Error::io(p, "remove", e))?;
            }
        }
    }
    // On a resume too: the keys it may change (steps, evaluation and checkpoint intervals)
    // are the run's from now on, and the next resume starts from them.
    write_text(&out.join("config.toml"), &config.to_toml())?;
    // A checkpoint holds the whole student (~0.5 GB for e5-small), so only the latest and
    // the best (by dev P@1, then MRR) are kept; older ones are removed once a newer one is written.
    let save_now = |trainer: &Trainer| -> Result<()> {
        let dir = checkpoint_dir(&out, trainer.state.step);
        let new_dir = !dir.exists();
        if let Err(e) = trainer.save_checkpoint(&dir) {
            // `latest` still names the previous checkpoint; do not keep half of a new one
            // (on a full disk it is the space the next attempt needs). A directory that
            // was there before (the same step saved again) may be what `latest` names.
            if new_dir {
                let _ = std::fs::remove_dir_all(&dir);
            }
            return Err(e);
        }
        write_text(&latest, &format!("step-{:06}\n", trainer.state.step))?;
        prune_checkpoints(&out, trainer.state.step, trainer.state.best_step)
    };
    let save = |trainer: &Trainer| -> Result<()> { saving(|| save_now(trainer)) };

    // The flag is not cleared here: a caller that installed the handler earlier (a study)
    // may have been interrupted while this run loaded, and that must stop it too.
    if options.handle_interrupts {
        install_ctrlc();
    }
    let bar = if options.progress {
        let bar = ProgressBar::new(config.steps as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} {msg} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_position(trainer.state.step as u64);
        bar
    } else {
        ProgressBar::hidden()
    };
    // A hidden bar (--no-progress, or standard error not a terminal: a log file, a job
    // scheduler) prints nothing, its println included: notes go straight to stderr then.
    let note = |line: String| {
        if bar.is_hidden() {
            errln!("{line}");
        } else {
            bar.println(line);
        }
    };
    let mut records = Vec::new();
    let mut dev_metrics = Vec::new();
    let evaluate = |trainer: &mut Trainer, dev_metrics: &mut Vec<DevMetrics>| -> Result<()> {
        let m = trainer.evaluate(&dev_other, &dev_english)?;
        append_jsonl(&dev_log, &m)?;
        if beats_best(&trainer.state, &m) {
            trainer.state.best_dev_p1 = Some(m.p_at_1);
            trainer.state.best_dev_mrr = Some(m.mrr);
            trainer.state.best_step = Some(m.step);
            write_text(&out.join("best"), &format!("step-{:06}\n", m.step))?;
        }
        note(format!(
            "dev step {}: P@1 {:.4} MRR {:.4}",
            m.step, m.p_at_1, m.mrr
        ));
        dev_metrics.push(m);
        Ok(())
    };
    if trainer.state.step == 0 && !dev_other.is_empty() {
        evaluate(&mut trainer, &mut dev_metrics)?;
    }
    // Interrupted before any step of this sitting (while loading, or during the first dev
    // evaluation): nothing new to save, the checkpoint it resumed (if any) stands.
    let mut interrupted = INTERRUPTED.load(Ordering::SeqCst) && trainer.state.step < config.steps;
    if interrupted {
        note(format!(
            "interrupted before step {}; nothing trained in this sitting",
            trainer.state.step + 1
        ));
    }
    while !interrupted && trainer.state.step < config.steps {
        let r = trainer.step()?;
        append_jsonl(&log, &r)?;
        bar.set_message(format!("loss {:.4} {:.0} tok/s", r.loss, r.tokens_per_s));
        bar.inc(1);
        records.push(r);
        let step = trainer.state.step;
        let mut saved = false;
        if config.eval_every > 0
            && step % config.eval_every == 0
            && step < config.steps
            && !dev_other.is_empty()
        {
            evaluate(&mut trainer, &mut dev_metrics)?;
            if trainer.state.best_step == Some(step) {
                save(&trainer)?;
                saved = true;
            }
        }
        // The last step's checkpoint is saved after the final evaluation (below), once.
        if !saved
            && config.checkpoint_every > 0
            && step % config.checkpoint_every == 0
            && step < config.steps
        {
            save(&trainer)?;
            saved = true;
        }
        let pause = options.stop_at_step == Some(step) && step < config.steps;
        if INTERRUPTED.load(Ordering::SeqCst) || pause {
            // A step saved just above is not saved twice (a checkpoint of e5-small is
            // about 500 MB).
            if !saved {
                save(&trainer)?;
            }
            note(format!(
                "{}: checkpoint at step {step} saved; continue with {}",
                if pause { "stopped" } else { "interrupted" },
                options.continue_with.unwrap_or("--resume")
            ));
            interrupted = true;
            break;
        }
    }
    bar.finish_and_clear();
    let mut student_dir = None;
    let mut exported_step = None;
    if !interrupted {
        // A resumed run that was already at its last step (nothing trained now) has that
        // step's evaluation in its dev log: reuse it rather than log the step twice.
        let logged = records
            .is_empty()
            .then(|| last_dev_record(&dev_log, trainer.state.step))
            .flatten();
        // Its checkpoint is then the state as it stands: not written again.
        match logged {
            Some(m) => dev_metrics.push(m),
            None if !dev_other.is_empty() => {
                evaluate(&mut trainer, &mut dev_metrics)?;
                save(&trainer)?;
            }
            // Without dev pairs a resume at its last step changes nothing to save.
            None if records.is_empty() => {}
            None => save(&trainer)?,
        }
    }
    if !interrupted && INTERRUPTED.load(Ordering::SeqCst) {
        // Ctrl-C after the last step (during the final evaluation): the checkpoint is saved,
        // and a resume evaluates (from the dev log) and exports without training.
        errln!(
            "interrupted: checkpoint at step {} saved before the export; continue with {}",
            trainer.state.step,
            options.continue_with.unwrap_or("--resume")
        );
        interrupted = true;
    }
    if !interrupted {
        let dir = out.join("student");
        let tokenizer = tokenizer_path(&student_spec)?;
        // The exported student is the best checkpoint by dev P@1, then MRR (early stopping
        // on the held-out pairs), or the last one with `export = "last"` or without dev pairs.
        let step = match (config.export.as_str(), trainer.state.best_step) {
            ("best", Some(best)) => best,
            _ => trainer.state.step,
        };
        let model = if step == trainer.state.step {
            trainer.student.clone()
        } else if step == 0 {
            TextEncoder::load(&student_spec, device.clone().autodiff(), &enc_options)?.model
        } else {
            trainer.model_at(&checkpoint_dir(&out, step))?
        };
        errln!(
            "distill: exporting the student of step {step} to {}",
            dir.display()
        );
        if step == 0 && trainer.state.step > 0 {
            // Every sitting's evaluations, from the log (this sitting's alone may lack step 0).
            let dev = read_dev_log(&dev_log).unwrap_or_default();
            errln!("distill: note: {}", untrained_export_note(&dev));
        }
        saving(|| {
            export(
                &model,
                &student_config,
                &tokenizer,
                (&prefixes.0, &prefixes.1),
                student_max_length,
                &dir,
            )
        })?;
        exported_step = Some(step);
        student_dir = Some(dir);
    }
    write_plots(&out)?;
    // Every sitting's steps, from the log (cut back to the resumed checkpoint, so each step
    // is there once): a resume that trains little or nothing (a finished run exported
    // again) would otherwise report its own few steps, or zeros.
    let logged = read_step_log(&log);
    let (t, tps) = if logged.len() >= records.len() {
        mean_logged_times(&logged)
    } else {
        mean_times(&records)
    };
    let summary = RunSummary {
        steps: trainer.state.step,
        interrupted,
        training_pairs: train.len(),
        skipped_pairs: skipped,
        dev_pairs: dev.len(),
        trainable_parameters: trainer.trainable_parameters(),
        devices: trainer.devices(),
        // Every sitting's evaluations: the log was cut back to the resumed checkpoint, so
        // it holds each evaluated step once.
        dev: read_dev_log(&dev_log).unwrap_or(dev_metrics),
        best_step: trainer.state.best_step,
        exported_step,
        student: student_dir,
        mean_seconds: t,
        tokens_per_s: tps,
    };
    let json = serde_json::to_string_pretty(&summary)
        .map_err(|e| Error::value("run summary", e.to_string()))?;
    write_text(&out.join("summary.json"), &json)?;
    Ok(summary)
}

/// The checkpoint `checkpoints/latest` of the run directory `out` names: `None` without
/// the file; its step and directory otherwise. The file must hold `step-N` (as the run
/// writes it, `step-000004`), naming a directory beside it: a name with a path in it, or a
/// missing directory, is an error naming the file, never a reason to start over or to
/// resume from elsewhere. At most 64 bytes are read (a run writes 12).
pub fn read_latest(out: &Path) -> Result<Option<(usize, PathBuf)>> {
    use std::io::Read;
    let latest = out.join("checkpoints").join("latest");
    let file = match std::fs::File::open(&latest) {
        Ok(f) => f,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(Error::io(&latest, "read", e)),
    };
    let mut bytes = Vec::new();
    file.take(64)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(&latest, "read", e))?;
    let text = String::from_utf8_lossy(&bytes);
    let name = text.trim();
    let step = name
        .strip_prefix("step-")
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<usize>().ok());
    let bad = |what: String| Error::Format {
        path: latest.clone(),
        what,
    };
    let Some(step) = step else {
        let shown: String = name.chars().take(40).collect();
        return Err(bad(format!(
            "expected the name of a checkpoint directory beside it (step-000004), found \
             {shown:?}"
        )));
    };
    let dir = out.join("checkpoints").join(name);
    if !dir.is_dir() {
        return Err(bad(format!(
            "names {name}, but {} is not a directory (resume from another checkpoint by \
             writing its name here, or start a new run)",
            dir.display()
        )));
    }
    Ok(Some((step, dir)))
}

/// Remove every checkpoint of `out` but the one of `latest` and the one of `best`.
fn prune_checkpoints(out: &Path, latest: usize, best: Option<usize>) -> Result<()> {
    let root = out.join("checkpoints");
    let keep = [Some(latest), best];
    let entries = std::fs::read_dir(&root).map_err(|e| Error::io(&root, "list", e))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(step) = name
            .to_str()
            .and_then(|n| n.strip_prefix("step-"))
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        if !keep.contains(&Some(step)) {
            let path = entry.path();
            std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, "remove", e))?;
        }
    }
    Ok(())
}

/// `loss.svg` and `dev.svg` from the run directory's logs (the whole run, resumes included).
pub fn write_plots(out: &Path) -> Result<()> {
    let read = |name: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(out.join(name))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let series = |rows: &[serde_json::Value], key: &str| -> Vec<(f64, f64)> {
        rows.iter()
            .filter_map(|r| Some((r.get("step")?.as_f64()?, r.get(key)?.as_f64()?)))
            .collect()
    };
    let steps = read("log.jsonl");
    let loss = line_chart(
        "Distillation loss",
        "step",
        "loss",
        &[
            Series {
                label: "loss",
                points: series(&steps, "loss"),
            },
            Series {
                label: "OT cost",
                points: series(&steps, "ot_cost"),
            },
        ],
    );
    write_text(&out.join("loss.svg"), &loss)?;
    let dev = read("dev.jsonl");
    let chart = line_chart(
        "Dev bitext retrieval",
        "step",
        "score",
        &[
            Series {
                label: "P@1",
                points: series(&dev, "p_at_1"),
            },
            Series {
                label: "MRR",
                points: series(&dev, "mrr"),
            },
        ],
    );
    write_text(&out.join("dev.svg"), &chart)
}

/// Whether dev metrics `m` beat the best so far: a higher P@1, or the same P@1 and a higher
/// MRR. P@1 over a few hundred pairs moves in steps of one pair and often ties between
/// checkpoints (the study's group A sat at 0.95–0.96 for every checkpoint of some seeds
/// while MRR rose); a full tie keeps the earlier step.
fn beats_best(state: &TrainState, m: &DevMetrics) -> bool {
    match (state.best_dev_p1, state.best_dev_mrr) {
        (None, _) => true,
        (Some(p1), _) if m.p_at_1 != p1 => m.p_at_1 > p1,
        (Some(_), Some(mrr)) => m.mrr > mrr,
        (Some(_), None) => false,
    }
}

/// Why the exported student is the starting model, and what to do about it: no dev
/// evaluation beat step 0 (P@1, then MRR; a full tie keeps the earliest step). A flat P@1
/// with a flat or falling MRR means the dev pairs cannot tell the checkpoints apart or
/// training did not help on them.
fn untrained_export_note(dev: &[DevMetrics]) -> String {
    let evaluations = dev.len();
    let fix = "more or harder dev pairs (--dev-pairs), or --export last, choose otherwise";
    let Some(first) = dev.iter().find(|m| m.step == 0) else {
        return format!(
            "no checkpoint beat the starting model on the dev pairs, so the exported student \
             is the untrained model; {fix}"
        );
    };
    let later: Vec<&DevMetrics> = dev.iter().filter(|m| m.step > 0).collect();
    let flat = later.iter().all(|m| m.p_at_1 == first.p_at_1);
    if flat {
        format!(
            "dev P@1 stayed at {:.4} in all {evaluations} evaluations and MRR never rose above \
             step 0's {:.4}: these dev pairs do not show the training helping, so the untrained \
             starting model was exported; {fix}",
            first.p_at_1, first.mrr
        )
    } else {
        format!(
            "no checkpoint beat step 0's dev P@1 of {:.4}, so the untrained starting model \
             was exported; {fix}",
            first.p_at_1
        )
    }
}

#[cfg(test)]
mod untrained_export_tests {
    use super::*;

    fn m(step: usize, p_at_1: f64, mrr: f64) -> DevMetrics {
        DevMetrics { step, p_at_1, mrr }
    }

    #[test]
    fn the_note_says_why_the_untrained_model_was_exported() {
        let flat = [
            m(0, 0.96, 0.9775),
            m(40, 0.96, 0.9770),
            m(160, 0.96, 0.9766),
        ];
        let note = untrained_export_note(&flat);
        assert!(
            note.starts_with("dev P@1 stayed at 0.9600 in all 3 evaluations and MRR never rose above step 0's 0.9775: these dev pairs"),
            "{note}"
        );
        assert!(
            note.ends_with("or --export last, choose otherwise"),
            "{note}"
        );
        let worse = [m(0, 0.96, 0.9775), m(40, 0.95, 0.9770)];
        let note = untrained_export_note(&worse);
        assert!(
            note.starts_with("no checkpoint beat step 0's dev P@1 of 0.9600, so"),
            "{note}"
        );
        let note = untrained_export_note(&[]);
        assert!(
            note.starts_with("no checkpoint beat the starting model"),
            "{note}"
        );
    }

    #[test]
    fn warm_up_longer_than_the_run_is_noted() {
        let mut c = DistillConfig {
            steps: 4,
            warmup_steps: 10,
            lr: 2e-5,
            ..DistillConfig::default()
        };
        assert_eq!(
            warmup_note(&c).unwrap(),
            "warmup_steps 10 > steps 4: the learning rate rises for the whole run and peaks at \
             8.000e-6 instead of lr 2.000e-5"
        );
        // Equal: the last step's rate is lr itself.
        c.warmup_steps = 4;
        assert_eq!(c.lr_at(3), c.lr);
        assert_eq!(warmup_note(&c), None);
        c.warmup_steps = 3;
        assert_eq!(warmup_note(&c), None);
    }

    #[test]
    fn the_best_step_is_chosen_by_p_at_1_then_mrr() {
        // Replays the evaluations and returns the chosen step.
        fn choose(dev: &[DevMetrics], state: TrainState) -> Option<usize> {
            let mut state = state;
            for d in dev {
                if beats_best(&state, d) {
                    state.best_dev_p1 = Some(d.p_at_1);
                    state.best_dev_mrr = Some(d.mrr);
                    state.best_step = Some(d.step);
                }
            }
            state.best_step
        }
        let fresh = TrainState::default();
        // P@1 ties at every step: the highest MRR wins (group A, mean-mse seed 2).
        let flat = [
            m(0, 0.95, 0.9664),
            m(40, 0.95, 0.9675),
            m(120, 0.95, 0.9694),
            m(160, 0.95, 0.9696),
            m(200, 0.95, 0.9696),
        ];
        assert_eq!(choose(&flat, fresh.clone()), Some(160));
        // A higher P@1 beats any MRR; a lower P@1 loses to any MRR.
        let mixed = [m(0, 0.77, 0.83), m(40, 0.80, 0.81), m(80, 0.79, 0.90)];
        assert_eq!(choose(&mixed, fresh.clone()), Some(40));
        // Falling MRR at the same P@1 keeps step 0.
        let falling = [m(0, 0.96, 0.9775), m(40, 0.96, 0.9770)];
        assert_eq!(choose(&falling, fresh), Some(0));
        // A checkpoint written before MRR was kept resumes with ties keeping the earlier step.
        let old = TrainState {
            best_dev_p1: Some(0.95),
            best_step: Some(0),
            ..TrainState::default()
        };
        assert_eq!(choose(&flat[1..], old), Some(0));
        let old: TrainState =
            serde_json::from_str(r#"{"step":3,"epoch":0,"offset":48,"seed":0,"tokens":900,"best_dev_p1":0.5,"best_step":2}"#)
                .unwrap();
        assert_eq!(old.best_dev_mrr, None);
    }
}
