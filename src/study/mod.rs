//! The study: does OT distillation make zero-shot cross-lingual retrieval more robust out
//! of domain? `optical study` runs a grid of distillation runs and evaluations and writes
//! a report that answers the question with the numbers.
//!
//! [`config`] (the study file and the grid of one budget) → [`split`] (the held-out split of
//! Tatoeba) → [`evaluate`] (the evaluation sets and a model's evaluation) → the runs, here:
//! each run trains through [`crate::distill::run()`] (in process, resumable) and is then
//! evaluated; [`stats`] (mean ± std over seeds, paired randomisation tests) → [`report`]
//! (`STUDY.md`, tables and SVG plots).
//!
//! A run directory (`<out>/runs/<condition>-<group>-s<seed>-<key>`) holds `run.json` (its
//! full configuration and key), the distillation's `config.toml`, `log.jsonl`, `dev.jsonl`,
//! plots and `summary.json`, `timing.json` (training time over all sittings), and
//! `result.json` (every measure, per-query values, the hardware). A run whose
//! `result.json` carries its key is skipped; a run with a checkpoint resumes from it
//! (`optical distill --resume`); everything else starts afresh. So an interrupted study —
//! Ctrl-C, a killed process, `--stop-at-step` — continues where it stopped when the same
//! command runs again. Unless `keep_models` is set, a run's checkpoints and exported
//! student are deleted once its result is written. A kept student serves new runs with the
//! same training settings ([`config::training_key`]: only the evaluation changed): such a
//! run without a checkpoint of its own evaluates it ([`kept_student`]) instead of training.

pub mod config;
pub mod evaluate;
pub mod report;
pub mod split;
pub mod stats;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::backend::BackendKind;
use crate::distill::run::{install_interrupt_handler, interrupt_requested};
use crate::distill::{self, RunOptions};
use crate::encoder::prefix::{PrefixStates, SharedPrefix};
use crate::encoder::{device_for, EncoderOptions, ModelSpec, TextEncoder};
use crate::error::{Error, Result};
use crate::retrieval::encoder::{Fingerprinted, TextRole};
use crate::retrieval::Encoder;
use config::{Plan, RunSpec, StudyConfig};
use evaluate::{evaluate_model, GroupData, TaskOutcome};

/// How to run a study.
#[derive(Clone, Debug)]
pub struct StudyOptions {
    pub config: PathBuf,
    pub budget: String,
    /// Overrides the backend of every run (Sinkhorn kernels and encoder device).
    pub backend: Option<String>,
    pub out: PathBuf,
    /// Where the report goes (default `<out>/STUDY.md`); plots go to `study-plots/` beside it.
    pub report: Option<PathBuf>,
    /// Overrides the config's data directory.
    pub data_dir: Option<PathBuf>,
    /// Overrides the config's `lareqa_candidates`.
    pub lareqa_candidates: Option<TextRole>,
    /// Training runs stop at this step with a checkpoint (the next invocation resumes).
    pub stop_at_step: Option<usize>,
    /// Progress bars of the training runs.
    pub progress: bool,
    /// Only write the report from the results that exist.
    pub report_only: bool,
    /// The command line, quoted in the report.
    pub command: String,
    /// Take the process's stop signals, as `optical study` does: a stop ends the study
    /// between runs or at a training step, with a checkpoint (see
    /// [`RunOptions::handle_interrupts`]). Off: the caller's own signal handling stays.
    pub handle_interrupts: bool,
}

/// One dev evaluation during training.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DevPoint {
    pub step: usize,
    pub p_at_1: f64,
    pub mrr: f64,
}

/// What training a run took.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainInfo {
    pub steps: usize,
    pub training_pairs: usize,
    pub dev_pairs: usize,
    pub trainable_parameters: usize,
    /// Wall seconds over every sitting.
    pub seconds: f64,
    pub sittings: usize,
    /// Mean seconds per step over the run (every sitting; `summary.json`'s `mean_seconds`).
    pub seconds_per_step: f64,
    pub tokens_per_s: f64,
    pub dev: Vec<DevPoint>,
    /// The step whose student was exported and evaluated (0: the starting model, when
    /// no checkpoint beat it on the dev pairs); absent in results written before it was
    /// recorded.
    #[serde(default)]
    pub exported_step: Option<usize>,
    /// The run whose kept student this run evaluated instead of training its own (same
    /// training settings, other evaluation settings); its training figures are that run's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub student_from: Option<String>,
}

/// The machine a run was evaluated on.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Hardware {
    pub cpu: String,
    pub threads: usize,
    pub backend: String,
}

impl Hardware {
    pub fn here(backend: &str) -> Hardware {
        let (cpu, threads) = crate::bench::cpu_model();
        Hardware {
            cpu,
            threads,
            backend: backend.to_string(),
        }
    }
}

/// A finished run (`result.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunResult {
    pub key: String,
    pub name: String,
    pub condition: String,
    pub group: String,
    pub seed: u64,
    /// The model evaluated: the base model, or `student` for a trained run.
    pub model: String,
    pub train: Option<TrainInfo>,
    pub eval_seconds: f64,
    /// Texts the evaluation read (every set's queries and candidates).
    pub eval_texts: usize,
    /// Of those, the texts encoded in `eval_seconds`; the rest came from the embedding cache
    /// (absent from results written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_encoded: Option<usize>,
    pub hardware: Hardware,
    /// How LAReQA's answer sentences were encoded (results written before the setting
    /// existed read as `query`, which is what they did).
    #[serde(default)]
    pub lareqa_candidates: TextRole,
    pub tasks: Vec<TaskOutcome>,
}

impl RunResult {
    /// The first task evaluated on `benchmark` (LAReQA benchmarks have exactly one).
    pub fn task(&self, benchmark: &str) -> Option<&TaskOutcome> {
        self.tasks.iter().find(|t| t.set.benchmark == benchmark)
    }
}

/// What happened to a run in this invocation.
#[derive(Clone, Debug, PartialEq)]
pub enum RunStatus {
    /// Its result existed.
    Skipped,
    /// Trained (from `resumed_from` when it continued a checkpoint) and evaluated.
    Trained { resumed_from: Option<usize> },
    /// Nothing to train; evaluated.
    Evaluated,
    /// Evaluated the kept student of the named run, which has the same training settings.
    Reused { from: String },
    /// Stopped at `--stop-at-step` with a checkpoint.
    Paused { step: usize },
    /// Stopped by Ctrl-C.
    Interrupted,
}

/// What an invocation did.
#[derive(Clone, Debug)]
pub struct StudyOutcome {
    pub runs: Vec<(String, RunStatus)>,
    /// Runs with a result, of all the plan's runs.
    pub finished: usize,
    pub total: usize,
    pub report: PathBuf,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_json_atomic(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::value(path.display().to_string(), e.to_string()))?;
    crate::io::write_atomic(path, text)
}

/// The finished result of `run`, if its directory holds one with the run's key.
pub fn finished_result(run: &RunSpec) -> Option<RunResult> {
    read_json::<RunResult>(&run.dir.join("result.json")).filter(|r| r.key == run.key)
}

/// A finished run whose student another run can evaluate instead of training its own.
pub struct KeptStudent {
    /// Its directory name.
    pub name: String,
    pub dir: PathBuf,
    pub result: RunResult,
}

/// A finished run beside `run` (in the same `runs/` directory) with `run`'s training key
/// ([`config::training_key`], read from its `run.json`), its own training figures, and its
/// exported student kept (`keep_models = true` or `"student"`); the first by name. So a
/// study whose evaluation settings changed evaluates the students it has instead of
/// training them again.
pub fn kept_student(run: &RunSpec) -> Option<KeptStudent> {
    let want = run.train_key.as_deref()?;
    sibling_runs(run).into_iter().find_map(|dir| {
        let meta: serde_json::Value = read_json(&dir.join("run.json"))?;
        let key = meta.get("key")?.as_str()?;
        if config::training_key(meta.get("config")?).as_deref() != Some(want) {
            return None;
        }
        let student = dir.join("student");
        let whole = ["config.json", "model.safetensors", "tokenizer.json"]
            .iter()
            .all(|f| student.join(f).is_file());
        if !whole {
            return None;
        }
        // Read last: a result holds every query's values (megabytes on whole benchmarks).
        let result = read_json::<RunResult>(&dir.join("result.json"))?;
        let own_training = result.train.as_ref()?.student_from.is_none();
        let name = dir.file_name()?.to_string_lossy().into_owned();
        (own_training && result.key == key).then_some(KeptStudent { name, dir, result })
    })
}

/// The other run directories beside `run` (in the same `runs/` directory), by name.
fn sibling_runs(run: &RunSpec) -> Vec<PathBuf> {
    let Some(Ok(entries)) = run.dir.parent().map(std::fs::read_dir) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|d| d != &run.dir && d.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// Finished evaluations of the model that `run` evaluates, whose embeddings its evaluation
/// reads from a cache: the kept student it reuses, or, for a run that trains nothing, the
/// finished runs beside it that evaluated the same base model on the same backend (they
/// share `<out>/embeddings`). A run that trains its own student has none.
fn evaluations_of_its_model(run: &RunSpec, kept: Option<&KeptStudent>) -> Vec<RunResult> {
    if let Some(k) = kept {
        return vec![k.result.clone()];
    }
    if run.distill.is_some() {
        return Vec::new();
    }
    let same = |meta: &serde_json::Value, field: &str| {
        meta.get("config").and_then(|c| c.get(field)) == run.key_json.get(field)
    };
    sibling_runs(run)
        .into_iter()
        .filter_map(|dir| {
            let meta: serde_json::Value = read_json(&dir.join("run.json"))?;
            let key = meta.get("key")?.as_str()?.to_string();
            (same(&meta, "model") && same(&meta, "backend")).then_some(())?;
            // Read last: a result holds every query's values.
            read_json::<RunResult>(&dir.join("result.json")).filter(|r| r.key == key)
        })
        .collect()
}

/// What an evaluation leaves in an embedding cache, as keys: a set's queries (its name,
/// direction and query ids), and its candidates as encoded in a role (LAReQA's answer
/// sentences may be encoded as queries or as passages).
fn query_key(info: &evaluate::SetInfo, direction: &str, ids: &[&str]) -> String {
    format!(
        "{}\u{0}{}\u{0}{direction}\u{0}{}",
        info.benchmark,
        info.language,
        ids.join("\u{1}")
    )
}

fn candidate_key(query_key: &str, role: TextRole) -> String {
    format!("{query_key}\u{0}{}", role.name())
}

/// The cache keys a finished evaluation left (none for tasks written before query ids
/// were kept: the count then errs on the side of more work).
fn result_keys(result: &RunResult) -> Vec<String> {
    result
        .tasks
        .iter()
        .filter(|t| !t.query_ids.is_empty())
        .flat_map(|t| {
            let ids: Vec<&str> = t.query_ids.iter().map(String::as_str).collect();
            let q = query_key(&t.set, &t.direction, &ids);
            let c = candidate_key(&q, result.lareqa_candidates);
            [q, c]
        })
        .collect()
}

/// The cache keys an evaluation of `sets` leaves, with LAReQA's candidates in `lareqa`.
fn set_keys(sets: &[evaluate::EvalSet], lareqa: TextRole) -> Vec<String> {
    sets.iter()
        .filter_map(|set| {
            let task = set.tasks.first()?;
            let ids: Vec<&str> = task.queries.iter().map(|q| q.id.as_str()).collect();
            let q = query_key(&set.info, &evaluate::direction_of(&set.info, task), &ids);
            let c = candidate_key(&q, lareqa);
            Some([q, c])
        })
        .flatten()
        .collect()
}

/// Texts of `sets` that an evaluation encodes when `cached` holds the keys already in its
/// model's cache: a set whose queries are there is read from the cache, except LAReQA's
/// candidates when they were encoded in another role.
fn texts_to_encode(
    sets: &[evaluate::EvalSet],
    cached: &std::collections::HashSet<String>,
    lareqa: TextRole,
) -> usize {
    sets.iter()
        .map(|set| {
            let Some(task) = set.tasks.first() else {
                return 0;
            };
            let ids: Vec<&str> = task.queries.iter().map(|q| q.id.as_str()).collect();
            let q = query_key(&set.info, &evaluate::direction_of(&set.info, task), &ids);
            if !cached.contains(&q) {
                set.texts()
            } else if set.info.lareqa
                && task.asymmetric
                && !cached.contains(&candidate_key(&q, lareqa))
            {
                task.candidates.len()
            } else {
                0
            }
        })
        .sum()
}

/// What a run has left to do ([`pending_work`], [`grid_work`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Work {
    /// Training steps.
    pub steps: usize,
    /// Texts its evaluation encodes (not read from an embedding cache).
    pub texts: usize,
    pub state: WorkState,
}

/// Where a run stands.
#[derive(Clone, Debug, PartialEq)]
pub enum WorkState {
    /// It has a result.
    Finished,
    /// It resumes from its checkpoint at this step.
    Checkpoint(usize),
    /// It evaluates the kept student of the named run.
    Reuses(String),
    /// Nothing of it exists yet.
    Pending,
}

/// What each of `runs` (with its group's evaluation sets, in the order a sitting runs them)
/// still has to do before it has a result: the training steps (none when it is finished or
/// reuses a kept student; those after its checkpoint when it has one) and the texts its
/// evaluation encodes, leaving out those already in its model's cache: put there by a
/// finished evaluation of the same model (the kept student it reuses, or the base model's
/// runs beside it), or by a base run of the same model earlier in the sitting (the groups
/// share their LAReQA sets).
pub fn pending_work(runs: &[(&RunSpec, &[evaluate::EvalSet])], lareqa: TextRole) -> Vec<Work> {
    work(runs, lareqa, true)
}

/// What each of `runs` does in a sitting that starts from nothing (no results, checkpoints
/// or caches yet): every training step, and every text but those an earlier base run of
/// the same model encodes.
pub fn grid_work(runs: &[(&RunSpec, &[evaluate::EvalSet])], lareqa: TextRole) -> Vec<Work> {
    work(runs, lareqa, false)
}

/// [`pending_work`], or with `on_disk` false [`grid_work`].
fn work(runs: &[(&RunSpec, &[evaluate::EvalSet])], lareqa: TextRole, on_disk: bool) -> Vec<Work> {
    use std::collections::HashSet;
    // Base models evaluated earlier in the sitting: (model, backend) and what they cached.
    let mut earlier: Vec<(
        Option<&serde_json::Value>,
        Option<&serde_json::Value>,
        HashSet<String>,
    )> = Vec::new();
    runs.iter()
        .map(|&(run, sets)| {
            if on_disk && finished_result(run).is_some() {
                return Work {
                    steps: 0,
                    texts: 0,
                    state: WorkState::Finished,
                };
            }
            let own = match run.distill {
                Some(_) if on_disk => checkpoint_step(&run.dir).ok().flatten(),
                _ => None,
            };
            let kept = match run.distill {
                Some(_) if on_disk && own.is_none() => kept_student(run),
                _ => None,
            };
            let steps = match (&run.distill, &kept) {
                (Some(d), None) => d.steps.saturating_sub(own.unwrap_or(0)),
                _ => 0,
            };
            let mut cached: HashSet<String> = if on_disk {
                evaluations_of_its_model(run, kept.as_ref())
                    .iter()
                    .flat_map(result_keys)
                    .collect()
            } else {
                HashSet::new()
            };
            if run.distill.is_none() {
                let model = (run.key_json.get("model"), run.key_json.get("backend"));
                let keys = set_keys(sets, lareqa);
                match earlier.iter_mut().find(|e| (e.0, e.1) == model) {
                    Some(e) => {
                        cached.extend(e.2.iter().cloned());
                        e.2.extend(keys);
                    }
                    None => earlier.push((model.0, model.1, keys.into_iter().collect())),
                }
            }
            let state = match (own, kept) {
                (Some(step), _) => WorkState::Checkpoint(step),
                (None, Some(k)) => WorkState::Reuses(k.name),
                (None, None) => WorkState::Pending,
            };
            Work {
                steps,
                texts: texts_to_encode(sets, &cached, lareqa),
                state,
            }
        })
        .collect()
}

/// The step of the run's latest checkpoint, if any. A `latest` that names no checkpoint
/// of the run is an error naming it: starting the run over would delete its checkpoints.
fn checkpoint_step(dir: &Path) -> Result<Option<usize>> {
    Ok(distill::run::read_latest(dir)?.map(|(step, _)| step))
}

/// Every result file of the plan that exists is whole and plausible, and every run's
/// `checkpoints/latest` names one of its checkpoints; checked before any run starts. A
/// result the study cannot read would otherwise count as missing and its run would start
/// over (training and evaluation, overwriting it), an edited one would change the report's
/// answer, and an unreadable `latest` would start its run over, deleting its checkpoints.
fn check_run_files(plan: &Plan) -> Result<()> {
    for run in &plan.runs {
        // A finished run is skipped whatever its checkpoints say (a cleanup cut short may
        // leave `latest` behind).
        let finished = checked_result(run)?.is_some();
        if run.distill.is_some() && !finished {
            checkpoint_step(&run.dir)?;
        }
    }
    Ok(())
}

/// The run's `result.json` when it is the run's (its key), after checking that it is whole
/// and plausible; `None` without one, or with another run's.
fn checked_result(run: &RunSpec) -> Result<Option<RunResult>> {
    let path = run.dir.join("result.json");
    if !path.exists() {
        return Ok(None);
    }
    let bad = |what: String| Error::Format {
        path: path.clone(),
        what: format!("{what}; delete it to evaluate the run again"),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, "read", e))?;
    let result: RunResult =
        serde_json::from_str(&text).map_err(|e| bad(format!("not a run result ({e})")))?;
    if result.key != run.key {
        return Ok(None);
    }
    if result.tasks.is_empty() {
        return Err(bad("a result without a single task".into()));
    }
    for t in &result.tasks {
        let task = &t.result.task;
        for (measure, &v) in &t.result.metrics {
            if !(0.0..=1.0).contains(&v) {
                return Err(bad(format!("task {task}: {measure} {v}, expected [0, 1]")));
            }
        }
        for (measure, values) in &t.per_query {
            if values.len() != t.result.queries {
                return Err(bad(format!(
                    "task {task}: {} values of {measure} for {} queries",
                    values.len(),
                    t.result.queries
                )));
            }
            if let Some(v) = values.iter().find(|v| !(0.0..=1.0).contains(*v)) {
                return Err(bad(format!(
                    "task {task}: a query's {measure} is {v}, expected [0, 1]"
                )));
            }
        }
    }
    Ok(Some(result))
}

#[derive(Default, Serialize, Deserialize)]
struct Timing {
    train_seconds: f64,
    sittings: usize,
    /// When the sitting in progress started (seconds since the Unix epoch), cleared when it
    /// ends: still set when a sitting starts, the last one was killed, and its time up to
    /// its last checkpoint is counted then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    running_since: Option<f64>,
}

impl Timing {
    /// Count a sitting that was killed (no summary came back): from its start to its last
    /// checkpoint (`checkpoints/latest`, rewritten at each save), the training that sitting
    /// kept; what it trained after that is trained again, and counted then.
    fn count_killed_sitting(&mut self, run_dir: &Path) {
        let Some(start) = self.running_since.take() else {
            return;
        };
        self.sittings += 1;
        let saved = std::fs::metadata(run_dir.join("checkpoints").join("latest"))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64());
        if let Some(saved) = saved.filter(|&saved| saved > start) {
            self.train_seconds += saved - start;
        }
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn fmt_duration(s: f64) -> String {
    if !s.is_finite() {
        return "?".into();
    }
    let s = s.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// How a run's evaluation encodes its texts, for the ETA: a trained run whose frozen
/// prefix the sitting shares runs only its trained layers on the texts it finds there
/// (several times faster than a whole model), so its texts have their own rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextKind {
    /// Every layer (base models, and students that train all their layers).
    Whole = 0,
    /// A student with a frozen prefix that may come from the sitting's store.
    Student = 1,
}

impl TextKind {
    /// How `run`'s evaluation encodes its texts in a sitting of `plan`.
    pub fn of(run: &RunSpec, plan: &Plan) -> TextKind {
        if run.distill.is_some() && shared_layers(run, plan).is_some() {
            TextKind::Student
        } else {
            TextKind::Whole
        }
    }
}

/// Remaining work and the ETA from this invocation's measured rates (the budget's
/// estimates until something is measured).
struct Progress {
    total: usize,
    started: Instant,
    step_rate: (f64, usize),
    /// Seconds and texts encoded, per [`TextKind`].
    text_rate: [(f64, usize); 2],
    estimate: config::Estimate,
    /// Steps and texts still to do, and how the texts are encoded, per run.
    pending: Vec<(usize, usize)>,
    kinds: Vec<TextKind>,
}

impl Progress {
    fn per_step(&self) -> f64 {
        if self.step_rate.1 > 0 {
            self.step_rate.0 / self.step_rate.1 as f64
        } else {
            self.estimate.seconds_per_step
        }
    }

    /// Seconds per text of `kind`: its own measured rate; until one is measured, the
    /// budget's estimate, a student's scaled by a whole model's measured rate when there
    /// is one (the budget's student estimate over its whole-model estimate).
    fn per_text(&self, kind: TextKind) -> f64 {
        let rate = |(seconds, texts): (f64, usize)| (texts > 0).then(|| seconds / texts as f64);
        let whole = rate(self.text_rate[TextKind::Whole as usize]);
        match kind {
            TextKind::Whole => whole.unwrap_or(self.estimate.seconds_per_text),
            TextKind::Student => rate(self.text_rate[TextKind::Student as usize])
                .or_else(|| whole.map(|w| w * self.estimate.student_share()))
                .unwrap_or_else(|| self.estimate.student_text()),
        }
    }

    /// Record an evaluation of `texts` texts that took `seconds`.
    fn encoded(&mut self, index: usize, seconds: f64, texts: usize) {
        if texts > 0 {
            let rate = &mut self.text_rate[self.kinds[index] as usize];
            rate.0 += seconds;
            rate.1 += texts;
        }
    }

    fn eta(&self) -> f64 {
        let steps: usize = self.pending.iter().map(|&(s, _)| s).sum();
        let texts: f64 = self
            .pending
            .iter()
            .zip(&self.kinds)
            .map(|(&(_, t), &kind)| t as f64 * self.per_text(kind))
            .sum();
        steps as f64 * self.per_step() + texts
    }

    fn line(&self, i: usize, name: &str, what: &str) {
        errln!(
            "[{:>w$}/{}] {name}: {what} | elapsed {} | ETA {}",
            i + 1,
            self.total,
            fmt_duration(self.started.elapsed().as_secs_f64()),
            fmt_duration(self.eta()),
            w = self.total.to_string().len()
        );
    }
}

/// The encoder a run evaluates, sharing the states after its frozen prefix (`shared`)
/// with the other evaluations of the sitting.
fn load_encoder(spec: &str, backend: &str, shared: Option<SharedPrefix>) -> Result<TextEncoder> {
    let kind: BackendKind = backend.parse()?;
    let model: ModelSpec = spec.parse()?;
    let options = EncoderOptions {
        shared_prefix: shared,
        ..EncoderOptions::default()
    };
    TextEncoder::load(&model, device_for(kind)?, &options)
}

/// Memory for the states after the students' frozen prefix that a sitting's evaluations
/// share (at the default settings a LAReQA slice and the bitext sets of a group hold
/// ≈ 200 MB of them; past the limit states are computed, not kept).
const PREFIX_STATES_BYTES: usize = 1 << 30;

/// The depth of the prefix whose states `run`'s evaluation shares: its own frozen prefix
/// for a trained run, the first trained run's for a base run; `None` when nothing below
/// the trained layers is frozen.
fn shared_layers(run: &RunSpec, plan: &Plan) -> Option<usize> {
    let frozen = |r: &RunSpec| r.distill.as_ref().map(|c| c.frozen_prefix());
    let k = frozen(run).or_else(|| plan.runs.iter().find_map(frozen))?;
    (k > 0).then_some(k)
}

fn base_fingerprint(spec: &str, encoder: &TextEncoder) -> String {
    let file = match spec.parse::<ModelSpec>() {
        Ok(ModelSpec::Path(p)) if p.is_dir() => p.join("model.safetensors"),
        Ok(ModelSpec::Path(p)) => p,
        _ => return encoder.fingerprint(),
    };
    let stamp = std::fs::metadata(&file)
        .ok()
        .map(|m| {
            let t = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            format!("{}-{t}", m.len())
        })
        .unwrap_or_default();
    let path = std::path::absolute(&file).unwrap_or(file);
    format!("{}-{}-{stamp}", encoder.fingerprint(), path.display())
}

struct Context<'a> {
    config: &'a StudyConfig,
    plan: &'a Plan,
    options: &'a StudyOptions,
    backend: String,
    /// The states after the frozen prefix, shared by the sitting's evaluations.
    prefix_states: std::sync::Arc<PrefixStates>,
}

/// Train (or resume) and evaluate one run. Returns its status and the work it did
/// (seconds and steps trained, seconds and texts encoded).
fn execute(
    cx: &Context<'_>,
    run: &RunSpec,
    group: &GroupData,
    progress: &mut Progress,
    index: usize,
) -> Result<RunStatus> {
    std::fs::create_dir_all(&run.dir).map_err(|e| Error::io(&run.dir, "create", e))?;
    write_json_atomic(
        &run.dir.join("run.json"),
        &serde_json::json!({
            "name": run.name(),
            "key": run.key,
            "train_key": run.train_key,
            "config": run.key_json,
        }),
    )?;
    let name = run.name();
    let mut train = None;
    let mut resumed_from = None;
    let mut reused = None;
    let eval_model;
    let resume = match run.distill {
        Some(_) => checkpoint_step(&run.dir)?,
        None => None,
    };
    // A run with no checkpoint of its own evaluates a kept student trained with its
    // settings, when the study has one.
    let kept = match run.distill {
        Some(_) if resume.is_none() => kept_student(run),
        _ => None,
    };
    if let Some(k) = kept {
        distill::run::clear_run_outputs(&run.dir)?;
        // The donor's logs, so that the report's training curves show this run too.
        for f in ["log.jsonl", "dev.jsonl", "summary.json"] {
            let from = k.dir.join(f);
            if from.is_file() {
                let to = run.dir.join(f);
                std::fs::copy(&from, &to).map_err(|e| Error::io(&to, "write", e))?;
            }
        }
        progress.line(
            index,
            &name,
            &format!(
                "evaluating the kept student of {} (same training settings)",
                k.name
            ),
        );
        let mut info = k.result.train.clone();
        if let Some(t) = info.as_mut() {
            t.student_from = Some(k.name.clone());
        }
        train = info;
        progress.pending[index].0 = 0;
        eval_model = k.dir.join("student").display().to_string();
        reused = Some(k);
    } else if let Some(cfg) = &run.distill {
        let mut cfg = cfg.clone();
        cfg.sources = group.sources.clone();
        let steps = cfg.steps;
        resumed_from = resume;
        // A sitting that stops at or before this run's checkpoint has nothing to train in it.
        if let (Some(step), Some(stop)) = (resume, cx.options.stop_at_step) {
            if stop <= step && step < steps {
                progress.line(
                    index,
                    &name,
                    &format!("paused at step {step} of {steps} (--stop-at-step {stop})"),
                );
                return Ok(RunStatus::Paused { step });
            }
        }
        if resume.is_none() {
            // A run stopped before its first checkpoint starts over, and the embeddings of
            // an earlier student must not stand for the new one's.
            distill::run::clear_run_outputs(&run.dir)?;
            let cache = run.dir.join("embeddings");
            if cache.is_dir() {
                std::fs::remove_dir_all(&cache).map_err(|e| Error::io(&cache, "remove", e))?;
            }
        }
        progress.line(
            index,
            &name,
            &match resume {
                Some(s) => format!("training, resuming at step {s} of {steps}"),
                None => format!("training {steps} steps"),
            },
        );
        let timing_path = run.dir.join("timing.json");
        let mut timing: Timing = read_json(&timing_path).unwrap_or_default();
        timing.count_killed_sitting(&run.dir);
        timing.running_since = Some(unix_now());
        write_json_atomic(&timing_path, &timing)?;
        let t0 = Instant::now();
        let summary = distill::run(
            cfg,
            &RunOptions {
                resume: resume.is_some(),
                bench_steps: None,
                progress: cx.options.progress,
                // A run whose training finished (resumed at its last step, its result not
                // written yet) only exports; a stop at or before that step is not for it.
                stop_at_step: cx
                    .options
                    .stop_at_step
                    .filter(|&stop| resume.is_none_or(|step| stop > step) && stop < steps),
                continue_with: Some("the same `optical study` command"),
                held: None,
                handle_interrupts: cx.options.handle_interrupts,
            },
        )?;
        let seconds = t0.elapsed().as_secs_f64();
        timing.train_seconds += seconds;
        timing.sittings += 1;
        timing.running_since = None;
        write_json_atomic(&timing_path, &timing)?;
        let done = summary.steps.saturating_sub(resume.unwrap_or(0));
        progress.step_rate.0 += seconds;
        progress.step_rate.1 += done;
        progress.pending[index].0 = steps.saturating_sub(summary.steps);
        if summary.interrupted {
            return Ok(if interrupt_requested() {
                RunStatus::Interrupted
            } else {
                RunStatus::Paused {
                    step: summary.steps,
                }
            });
        }
        let student = summary.student.clone().ok_or_else(|| {
            Error::value(format!("run {name}"), "training finished without a student")
        })?;
        train = Some(TrainInfo {
            steps: summary.steps,
            training_pairs: summary.training_pairs,
            dev_pairs: summary.dev_pairs,
            trainable_parameters: summary.trainable_parameters,
            seconds: timing.train_seconds,
            sittings: timing.sittings,
            seconds_per_step: summary.mean_seconds.total,
            tokens_per_s: summary.tokens_per_s,
            dev: read_dev(&run.dir),
            exported_step: summary.exported_step,
            student_from: None,
        });
        eval_model = student.display().to_string();
    } else {
        eval_model = run.model.clone();
    }
    let texts: usize = group.sets.iter().map(|s| s.texts()).sum();
    let cached = texts.saturating_sub(progress.pending[index].1);
    let what = match cached {
        0 => format!("evaluating ({texts} texts)"),
        c => format!("evaluating ({texts} texts, {c} of them cached)"),
    };
    progress.line(index, &name, &what);
    let t0 = Instant::now();
    let shared = shared_layers(run, cx.plan).map(|layers| SharedPrefix {
        states: cx.prefix_states.clone(),
        layers: Some(layers),
    });
    let encoder = load_encoder(&eval_model, &cx.backend, shared)?;
    let (fingerprint, cache) = if let Some(k) = &reused {
        // The donor's cache: the texts both evaluate are encoded once.
        (
            format!("study-run-{}-on-{}", k.result.key, encoder.device_tag()),
            k.dir.join("embeddings"),
        )
    } else if train.is_some() {
        (
            format!("study-run-{}-on-{}", run.key, encoder.device_tag()),
            run.dir.join("embeddings"),
        )
    } else {
        (
            base_fingerprint(&eval_model, &encoder),
            cx.options.out.join("embeddings"),
        )
    };
    let keyed = Fingerprinted {
        inner: &encoder,
        name: run.condition.clone(),
        fingerprint,
    };
    let Some(tasks) = evaluate_model(
        &keyed,
        &group.sets,
        cx.plan.eval.batch,
        Some(&cache),
        cx.config.lareqa_candidates,
        &interrupt_requested,
    )?
    else {
        return Ok(RunStatus::Interrupted);
    };
    let eval_seconds = t0.elapsed().as_secs_f64();
    // The rate is per text encoded (not read from a cache): an evaluation that found
    // everything cached measures nothing about it.
    let encoded = progress.pending[index].1;
    progress.encoded(index, eval_seconds, encoded);
    progress.pending[index] = (0, 0);
    let result = RunResult {
        key: run.key.clone(),
        name: name.clone(),
        condition: run.condition.clone(),
        group: run.group.clone(),
        seed: run.seed,
        model: if train.is_some() {
            "student".into()
        } else {
            run.model.clone()
        },
        train,
        eval_seconds,
        eval_texts: texts,
        eval_encoded: Some(encoded),
        hardware: Hardware::here(&cx.backend),
        lareqa_candidates: cx.config.lareqa_candidates,
        tasks,
    };
    write_json_atomic(&run.dir.join("result.json"), &result)?;
    if run.distill.is_some() {
        let keep = cx.config.keep_models;
        for (sub, kept) in [
            ("checkpoints", keep.checkpoints()),
            ("student", keep.student()),
        ] {
            let p = run.dir.join(sub);
            if !kept && p.exists() {
                std::fs::remove_dir_all(&p).map_err(|e| Error::io(&p, "remove", e))?;
            }
        }
    }
    Ok(if let Some(k) = reused {
        RunStatus::Reused { from: k.name }
    } else if run.distill.is_some() {
        RunStatus::Trained { resumed_from }
    } else {
        RunStatus::Evaluated
    })
}

/// The dev evaluations of a run's `dev.jsonl`.
pub fn read_dev(dir: &Path) -> Vec<DevPoint> {
    std::fs::read_to_string(dir.join("dev.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Run (or continue) a study and write its report.
pub fn run_study(options: &StudyOptions) -> Result<StudyOutcome> {
    let mut config = StudyConfig::from_file(&options.config)?;
    if let Some(d) = &options.data_dir {
        config.data_dir = Some(d.clone());
    }
    if let Some(r) = options.lareqa_candidates {
        config.lareqa_candidates = r;
    }
    let plan = config.plan(&options.budget, options.backend.as_deref(), &options.out)?;
    // Checked here, before any run is evaluated, and again by each training run.
    if options.stop_at_step == Some(0) {
        return Err(Error::parameter(
            "stop_at_step",
            "a step of at least 1 (training runs stop after it)",
            0,
        ));
    }
    let out = &options.out;
    if out.exists() && !out.is_dir() {
        return Err(Error::parameter(
            "out",
            "a study directory (created with its parents when missing)",
            format!("{}, a file", out.display()),
        ));
    }
    check_run_files(&plan)?;
    // Held until the study returns: its runs, split data, caches and report are this
    // process's (each training run holds its own directory too). A report alone trains and
    // evaluates nothing: it may be written while the study runs (the split data it
    // prepares is the study's own, rewritten only when it differs, each file whole).
    let _lock = if options.report_only {
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, "create", e))?;
        None
    } else {
        Some(crate::io::DirLock::acquire(out, "a study directory")?)
    };
    let data_dir = crate::data::data_dir(config.data_dir.as_deref());
    let lareqa = evaluate::lareqa_sets(&config, &plan.eval, &data_dir)?;
    let groups = plan
        .groups
        .iter()
        .map(|g| evaluate::prepare_group(&config, g, &plan.eval, &data_dir, out, &lareqa))
        .collect::<Result<Vec<_>>>()?;
    evaluate::check_dev_pairs(&plan.runs, &groups)?;
    let backend = options
        .backend
        .clone()
        .or_else(|| match config.distill.get("backend") {
            Some(toml::Value::String(s)) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_else(|| "cpu".into());
    let group_of = |run: &RunSpec| -> &GroupData {
        groups
            .iter()
            .find(|g| g.name == run.group)
            .unwrap_or(&groups[0])
    };
    let mut statuses = Vec::new();
    if !options.report_only {
        if options.handle_interrupts {
            install_interrupt_handler();
        }
        let mut progress = Progress {
            total: plan.runs.len(),
            started: Instant::now(),
            step_rate: (0.0, 0),
            text_rate: [(0.0, 0); 2],
            kinds: plan.runs.iter().map(|r| TextKind::of(r, &plan)).collect(),
            estimate: plan.estimate.clone(),
            pending: pending_work(
                &plan
                    .runs
                    .iter()
                    .map(|r| (r, &group_of(r).sets[..]))
                    .collect::<Vec<_>>(),
                config.lareqa_candidates,
            )
            .into_iter()
            .map(|w| (w.steps, w.texts))
            .collect(),
        };
        errln!(
            "study {}: budget {}, {} runs, {} groups, backend {backend}, out {}",
            config.name,
            plan.budget,
            plan.runs.len(),
            groups.len(),
            out.display()
        );
        let cx = Context {
            config: &config,
            plan: &plan,
            options,
            backend: backend.clone(),
            prefix_states: PrefixStates::new(PREFIX_STATES_BYTES),
        };
        for (i, run) in plan.runs.iter().enumerate() {
            let name = run.name();
            if finished_result(run).is_some() {
                progress.line(i, &name, "skipped (finished earlier)");
                statuses.push((name, RunStatus::Skipped));
                continue;
            }
            let t0 = Instant::now();
            let status = execute(&cx, run, group_of(run), &mut progress, i)?;
            let took = fmt_duration(t0.elapsed().as_secs_f64());
            let what = match &status {
                RunStatus::Trained {
                    resumed_from: Some(s),
                } => format!("resumed at step {s}, trained and evaluated in {took}"),
                RunStatus::Trained { resumed_from: None } => {
                    format!("trained and evaluated in {took}")
                }
                RunStatus::Evaluated => format!("evaluated in {took}"),
                RunStatus::Reused { from } => {
                    format!("evaluated the kept student of {from} in {took}")
                }
                RunStatus::Paused { step } => {
                    format!("paused at step {step} (checkpoint saved)")
                }
                RunStatus::Interrupted => "interrupted".into(),
                RunStatus::Skipped => "skipped".into(),
            };
            progress.line(i, &name, &what);
            let stop = status == RunStatus::Interrupted;
            statuses.push((name, status));
            if stop {
                errln!("study interrupted: run the same command again to continue");
                break;
            }
        }
        let shared = cx.prefix_states.stats();
        if shared.reused > 0 {
            errln!(
                "study {}: evaluations took the states after the students' frozen layers \
                 from one another for {} texts and computed them for {} ({} MB held)",
                config.name,
                shared.reused,
                shared.computed,
                shared.bytes / 1_000_000
            );
        }
    }
    let finished = plan
        .runs
        .iter()
        .filter(|r| finished_result(r).is_some())
        .count();
    let report_path = options
        .report
        .clone()
        .unwrap_or_else(|| out.join("STUDY.md"));
    report::write(&report::Inputs {
        config: &config,
        plan: &plan,
        groups: &groups,
        options,
        data_dir: &data_dir,
        path: &report_path,
    })?;
    errln!(
        "study {}: {finished} of {} runs finished; report {}",
        config.name,
        plan.runs.len(),
        report_path.display()
    );
    Ok(StudyOutcome {
        runs: statuses,
        finished,
        total: plan.runs.len(),
        report: report_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eta_prices_students_texts_at_their_own_rate_once_measured() {
        let mut p = Progress {
            total: 3,
            started: Instant::now(),
            step_rate: (0.0, 0),
            text_rate: [(0.0, 0); 2],
            estimate: config::Estimate {
                seconds_per_step: 1.0,
                seconds_per_text: 0.5,
                seconds_per_student_text: None,
            },
            pending: vec![(0, 100), (10, 100), (10, 100)],
            kinds: vec![TextKind::Whole, TextKind::Student, TextKind::Student],
        };
        // Nothing measured: the budget's estimates (no student rate: a whole model's).
        assert_eq!(p.eta(), 20.0 + 300.0 * 0.5);
        p.estimate.seconds_per_student_text = Some(0.125);
        assert_eq!(p.eta(), 20.0 + 100.0 * 0.5 + 200.0 * 0.125);
        // The base run measured: students at that rate times the budget's student share.
        p.encoded(0, 10.0, 100);
        p.pending[0] = (0, 0);
        assert_eq!(p.per_text(TextKind::Student), 0.025);
        p.estimate.seconds_per_student_text = None;
        assert_eq!(p.per_text(TextKind::Student), 0.1);
        assert_eq!(p.eta(), 20.0 + 200.0 * 0.1);
        // A student measured (shared prefix: five times faster): the other at that rate.
        p.encoded(1, 2.0, 100);
        p.pending[1] = (0, 0);
        assert_eq!(p.per_text(TextKind::Whole), 0.1);
        assert_eq!(p.per_text(TextKind::Student), 0.02);
        assert_eq!(p.eta(), 10.0 + 100.0 * 0.02);
        // An evaluation that encoded nothing (all cached) measures nothing.
        p.encoded(2, 5.0, 0);
        assert_eq!(p.per_text(TextKind::Student), 0.02);
    }

    /// A sitting killed without a summary is counted at its next start: its time up to its
    /// last checkpoint, and the sitting itself.
    #[test]
    fn a_killed_sitting_counts_up_to_its_last_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let latest = dir.path().join("checkpoints").join("latest");
        std::fs::create_dir_all(latest.parent().unwrap()).unwrap();
        std::fs::write(&latest, "step-000008\n").unwrap();
        let saved = unix_now();
        let mut t = Timing {
            train_seconds: 5.0,
            sittings: 1,
            running_since: Some(saved - 20.0),
        };
        t.count_killed_sitting(dir.path());
        assert_eq!(t.sittings, 2);
        assert!((t.train_seconds - 25.0).abs() < 2.0, "{}", t.train_seconds);
        assert!(t.running_since.is_none());
        // Nothing in progress: nothing to count.
        t.count_killed_sitting(dir.path());
        assert_eq!(t.sittings, 2);
        // Killed before its first checkpoint of that sitting: the sitting, no time.
        t.running_since = Some(saved + 100.0);
        t.count_killed_sitting(dir.path());
        assert_eq!(t.sittings, 3);
        assert!((t.train_seconds - 25.0).abs() < 2.0);
    }
}
