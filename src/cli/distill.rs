//! `optical distill`: OPTICAL distillation of a multilingual student from a frozen English
//! teacher on bitext (see `crate::distill`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use serde::Serialize;

use crate::distill::{self, DistillConfig, RunOptions};
use crate::error::{Error, Result};
use crate::io::DirLock;

/// Train a student encoder by optimal-transport distillation. Settings come from
/// `--config FILE.toml` (see `--print-default-config`); every key is also a flag, and flags
/// win. Writes checkpoints, log.jsonl, dev.jsonl, loss.svg, dev.svg, summary.json and the
/// exported student (`<out>/student`, usable as `--model` of `optical encode` / `eval`).
#[derive(Debug, Args)]
pub struct DistillArgs {
    /// TOML file with any of the keys of `--print-default-config`.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the default configuration as TOML and exit.
    #[arg(long)]
    pub print_default_config: bool,
    /// Continue from the latest checkpoint in the run directory (--out), with the run's own
    /// config.toml; flags and --config may change only steps, eval_every,
    /// checkpoint_every, cache_mb, backend, ot_backend, devices, export, data_dir and
    /// english_bible.
    #[arg(long)]
    pub resume: bool,
    /// Time N training steps and print the step-time breakdown (nothing is written); with
    /// several `--devices`, also step throughput against the number of devices.
    #[arg(long)]
    pub bench_steps: Option<usize>,
    /// Stop after optimiser step N with a checkpoint, as Ctrl-C does (continue with
    /// --resume).
    #[arg(long)]
    pub stop_at_step: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
    #[command(flatten)]
    pub keys: ConfigFlags,
}

/// One flag per configuration key (same names, `-` for `_`).
#[derive(Debug, Default, Args, Serialize)]
pub struct ConfigFlags {
    /// Teacher encoder (frozen, reads English): e5-small, minilm, or a path.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub teacher: Option<String>,
    /// Student initialisation (trainable, reads the other language): e5-small or a path.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub student: Option<String>,
    /// Comma-separated: mafand:<lang>, bible:<lang>, files:<lang>:<file>:<English file>.
    #[arg(long, value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<String>>,
    /// Data directory (default: `$OPTICAL_DATA_DIR`, else `../shared/data`).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// The English side of `bible:` sources (default: the set-up step's World English
    /// Bible, bible/t_web.csv.gz in $OPTICAL_CACHE, else in ~/.cache/optical).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub english_bible: Option<PathBuf>,
    /// Pairs held out of training for the dev evaluation (taken after shuffling).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev_pairs: Option<usize>,
    /// Truncation length in tokens, specials included, for both encoders.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    /// ot, cls-mse, mean-mse or ot+mean-mse.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss: Option<String>,
    /// Weight of the MSE term in `ot+mean-mse`.
    #[arg(long, value_parser = super::finite_f64, allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mse_weight: Option<f64>,
    /// Also distil the English side (student(en) → teacher(en)).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distill_english: Option<bool>,
    /// Subtract each side's mean token state over the batch (real tokens only) before the
    /// loss, so that the cost `1 − cos` compares token states relative to the batch rather
    /// than along the direction that every contextual token shares. With several devices
    /// the mean is over each replica's shard of the micro-batch, so a multi-device run
    /// matches the one-device run exactly only with `center_tokens = false`.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub center_tokens: Option<bool>,
    /// Sinkhorn ε (cost units; the cost is 1 − cos ∈ [0, 2]).
    #[arg(long, value_parser = super::finite_f64, allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epsilon: Option<f64>,
    /// Most Sinkhorn iterations per pair and step (a pair stops earlier once its marginal
    /// error is within --sinkhorn-threshold).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sinkhorn_iterations: Option<usize>,
    /// Sinkhorn stopping threshold: the L1 error of the plan's row marginal.
    #[arg(long, value_parser = super::finite_f64, allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sinkhorn_threshold: Option<f64>,
    /// cpu, cpu-reference, wgpu or cuda.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// Backend of the cost and Sinkhorn kernels when it differs from --backend (e.g.
    /// `--backend wgpu --ot-backend cuda`: encoders on burn's wgpu device, OT on the PTX
    /// kernels). A resumed run keeps its own; give --backend's value to undo it.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ot_backend: Option<String>,
    /// Data parallel: `default` (one device), `all`, or device indices such as 0,1,3 (one
    /// replica each; `batch_size` stays the global micro-batch, `lr` keeps its meaning).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devices: Option<String>,
    /// AdamW peak learning rate.
    #[arg(long, value_parser = super::finite_f64, allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// AdamW decoupled weight decay (0: none).
    #[arg(long, value_parser = super::finite_f64, allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    /// Linear warm-up steps, then linear decay to 0 at `steps`.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup_steps: Option<usize>,
    /// Pairs per micro-batch (the global micro-batch: with several devices, each replica
    /// takes a contiguous share of it).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// Micro-batches per optimiser step.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grad_accumulation: Option<usize>,
    /// Global gradient-norm clipping (0 disables).
    #[arg(long, value_parser = super::finite_f64, allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grad_clip: Option<f64>,
    /// Optimiser steps.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    /// Freeze the student's embedding layer.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freeze_embeddings: Option<bool>,
    /// Freeze the lowest k transformer layers of the student.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freeze_layers: Option<usize>,
    /// Seed of the data order.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Checkpoint every N steps (0: only at the end). A dev evaluation that beats the best
    /// so far saves one too (the exported student may come from it), as does a stop.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_every: Option<usize>,
    /// Dev evaluation every N steps (0: only at the end).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_every: Option<usize>,
    /// best (the checkpoint with the best dev P@1, ties broken by MRR) or last.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export: Option<String>,
    /// Host memory (MiB) for cached token states: the frozen teacher's outputs and, when
    /// the embeddings and the lowest `freeze_layers` layers are frozen, the student's
    /// hidden states after that frozen prefix (computed once per pair, so a step runs only
    /// the trainable layers; when that prefix is the teacher's own, the student's English
    /// prefix states come from the teacher's forward pass). Beyond the budget, states are
    /// recomputed every time.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_mb: Option<usize>,
    /// Run directory: checkpoints, log.jsonl, plots, the exported student.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out: Option<PathBuf>,
}

pub use crate::distill::config::RESUMABLE_KEYS;

/// The configuration of a command line: defaults, then the file, then the flags. With
/// `--resume`, the run directory's own `config.toml` takes the place of the defaults, so
/// that `optical distill --resume --out DIR` continues the run as it was configured; a
/// file or flag that would change what a step computes (anything outside
/// [`RESUMABLE_KEYS`]) is an error, and the keys it may change are reported.
/// The run's configuration; with `--resume`, also the hold on its directory, taken before
/// its files are read (a run another process is still writing is refused as in use).
pub fn resolve_config(args: &DistillArgs) -> Result<(DistillConfig, Option<Arc<DirLock>>)> {
    let flags = match serde_json::to_value(&args.keys) {
        Ok(serde_json::Value::Object(map)) => map,
        Ok(_) => serde_json::Map::new(),
        Err(e) => return Err(Error::value("distill flags", e.to_string())),
    };
    let (config, held) = if args.resume {
        let (config, held) = resume_config(args, flags)?;
        (config, Some(held))
    } else {
        let base = match &args.config {
            Some(path) => DistillConfig::from_file(path)?,
            None => DistillConfig::default(),
        };
        let mut config = base.with_overrides(flags)?;
        absolute_paths(&mut config);
        (config, None)
    };
    config.validate()?;
    Ok((config, held))
}

fn resume_config(
    args: &DistillArgs,
    flags: serde_json::Map<String, serde_json::Value>,
) -> Result<(DistillConfig, Arc<DirLock>)> {
    // The keys the file names (not its defaults), then the flags over them.
    let mut overrides = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "read", e))?;
            let table: toml::Table = toml::from_str(&text).map_err(|e| Error::Format {
                path: path.clone(),
                what: format!("not a valid distillation config: {e}"),
            })?;
            // JSON has no NaN or infinity: converted, they would become null and be
            // reported as a type error instead of the value it is.
            for (key, value) in &table {
                if let toml::Value::Float(x) = value {
                    if !x.is_finite() {
                        return Err(Error::Format {
                            path: path.clone(),
                            what: format!("{key}: expected a finite number, found {x}"),
                        });
                    }
                }
            }
            // An unknown key is named with the file it is in.
            DistillConfig::default()
                .with_overrides(match serde_json::to_value(&table) {
                    Ok(serde_json::Value::Object(map)) => map,
                    _ => serde_json::Map::new(),
                })
                .map_err(|e| Error::Format {
                    path: path.clone(),
                    what: e.to_string(),
                })?;
            match serde_json::to_value(&table) {
                Ok(serde_json::Value::Object(map)) => map,
                _ => serde_json::Map::new(),
            }
        }
        None => serde_json::Map::new(),
    };
    overrides.extend(flags);
    let out = match overrides.get("out").and_then(|v| v.as_str()) {
        Some(o) => PathBuf::from(o),
        None => DistillConfig::default().out,
    };
    let held = Arc::new(crate::distill::run::lock_run_dir(&out)?);
    let saved_path = out.join("config.toml");
    if !saved_path.is_file() {
        return Err(Error::parameter(
            "resume",
            format!(
                "a run directory to continue, with config.toml and checkpoints/latest \
                 (--out names it; {} has no config.toml)",
                out.display()
            ),
            out.display(),
        ));
    }
    let saved = DistillConfig::from_file(&saved_path)?;
    let mut merged = saved.clone().with_overrides(overrides)?;
    merged.out = out.clone();
    // A path given again another way (`./model`, `../run/model`, an absolute path, a
    // link) is the saved one: the saved spelling stays (a checkpoint compares the models by
    // it). A path that changed is saved absolute, as a fresh run's are.
    let canonical = |c: &DistillConfig| {
        let mut c = c.clone();
        map_paths(&mut c, &|p| crate::io::resolved(p));
        c
    };
    let (now, before) = (canonical(&merged), canonical(&saved));
    absolute_paths(&mut merged);
    if now.teacher == before.teacher {
        merged.teacher = saved.teacher.clone();
    }
    if now.student == before.student {
        merged.student = saved.student.clone();
    }
    if now.sources == before.sources {
        merged.sources = saved.sources.clone();
    }
    if now.data_dir == before.data_dir {
        merged.data_dir = saved.data_dir.clone();
    }
    if now.english_bible == before.english_bible {
        merged.english_bible = saved.english_bible.clone();
    }
    let as_map = |c: &DistillConfig| match serde_json::to_value(c) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    let (before, after) = (as_map(&saved), as_map(&merged));
    // A run that stopped before its first checkpoint trained nothing: a resume starts it
    // again, and any setting may change.
    let nothing_trained = crate::distill::run::stopped_before_first_checkpoint(&out);
    for (key, value) in &after {
        let old = before.get(key).unwrap_or(&serde_json::Value::Null);
        // `out` is the directory the saved config was just read from, however it is spelt.
        if old == value || key == "out" {
            continue;
        }
        // The sources may move (the checkpoint's hash of the training pairs must still
        // match what they hold).
        if !nothing_trained && !RESUMABLE_KEYS.contains(&key.as_str()) && key != "sources" {
            return Err(Error::value(
                format!("resume of {}", out.display()),
                format!(
                    "expected {key} = {old} as in {} (a resumed run keeps what a step \
                     computes; only {} may change), found {value}; start a new run in \
                     another directory to change it",
                    saved_path.display(),
                    RESUMABLE_KEYS.join(", ")
                ),
            ));
        }
        let note = match key.as_str() {
            "steps" => format!(" (the learning rate now decays to 0 at step {value})"),
            "sources" => " (the checkpoint's training pairs must be what they hold)".into(),
            _ => String::new(),
        };
        errln!("distill: resume changes {key}: {old} -> {value}{note}");
    }
    Ok((merged, held))
}

/// The model, data and Bible paths of a configuration made absolute, so that the run's
/// `config.toml` (and its checkpoints' settings) name the same files from wherever the run
/// is resumed.
fn absolute_paths(config: &mut DistillConfig) {
    map_paths(config, &|p| {
        std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
    });
}

/// Every path of `config` mapped by `f`: the models (names such as `minilm` and
/// `e5-small` stay names), the two files of each `files:` source, `data_dir` and
/// `english_bible`. A `files:` source keeps its other-language path as it is where the
/// mapped one would hold a `:` (the spec's separator).
fn map_paths(config: &mut DistillConfig, f: &dyn Fn(&Path) -> PathBuf) {
    let map = |p: &str| f(Path::new(p)).display().to_string();
    for model in [&mut config.teacher, &mut config.student] {
        if !model.is_empty() && !matches!(model.as_str(), "minilm" | "e5-small") {
            *model = map(model);
        }
    }
    for spec in &mut config.sources {
        if let ["files", lang, other, english] = spec.splitn(4, ':').collect::<Vec<_>>()[..] {
            let mapped = map(other);
            let other = if mapped.contains(':') {
                other.to_string()
            } else {
                mapped
            };
            *spec = format!("files:{lang}:{other}:{}", map(english));
        }
    }
    for path in [&mut config.data_dir, &mut config.english_bible]
        .into_iter()
        .flatten()
    {
        *path = f(path);
    }
}

pub fn run(args: DistillArgs) -> Result<()> {
    if args.print_default_config {
        outln!("{}", DistillConfig::default().to_toml().trim_end());
        return Ok(());
    }
    let (config, held) = resolve_config(&args)?;
    let options = RunOptions {
        held,
        resume: args.resume,
        bench_steps: args.bench_steps,
        progress: !args.no_progress,
        stop_at_step: args.stop_at_step,
        continue_with: None,
        handle_interrupts: true,
    };
    let (out, steps) = (config.out.clone(), config.steps);
    let summary = distill::run(config, &options)?;
    if args.bench_steps.is_none() {
        let json = serde_json::to_string_pretty(&summary)
            .map_err(|e| Error::value("run summary", e.to_string()))?;
        outln!("{json}");
    }
    if summary.interrupted && args.bench_steps.is_none() {
        let how = format!(
            "continue it with `optical distill --resume --out {}`",
            out.display()
        );
        if crate::distill::run::interrupt_requested() {
            return Err(Error::Interrupted {
                what: format!(
                    "distill stopped at step {} of {steps}; {how}",
                    summary.steps
                ),
            });
        }
        errln!(
            "distill: paused at step {} (--stop-at-step); {how}",
            summary.steps
        );
    }
    Ok(())
}
