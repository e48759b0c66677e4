//! `optical distill`: OPTICAL distillation of a multilingual student from a frozen English
//! teacher on bitext (see `crate::distill`).

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use crate::distill::{self, DistillConfig, RunOptions};
use crate::error::{Error, Result};

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
    /// Continue from the latest checkpoint in the run directory.
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
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub teacher: Option<String>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub student: Option<String>,
    /// Comma-separated: mafand:<lang>, bible:<lang>, files:<lang>:<file>:<English file>.
    #[arg(long, value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<String>>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev_pairs: Option<usize>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    /// ot, cls-mse, mean-mse or ot+mean-mse.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss: Option<String>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mse_weight: Option<f64>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distill_english: Option<bool>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub center_tokens: Option<bool>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epsilon: Option<f64>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sinkhorn_iterations: Option<usize>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sinkhorn_threshold: Option<f64>,
    /// cpu, cpu-reference, wgpu or cuda.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// Data parallel: `default` (one device), `all`, or device indices such as 0,1,3 (one
    /// replica each; `batch_size` stays the global micro-batch, `lr` keeps its meaning).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devices: Option<String>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup_steps: Option<usize>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grad_accumulation: Option<usize>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grad_clip: Option<f64>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freeze_embeddings: Option<bool>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freeze_layers: Option<usize>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_every: Option<usize>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_every: Option<usize>,
    /// best (the checkpoint with the best dev P@1) or last.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export: Option<String>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_mb: Option<usize>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out: Option<PathBuf>,
}

/// The configuration of a command line: defaults, then the file, then the flags.
pub fn resolve_config(args: &DistillArgs) -> Result<DistillConfig> {
    let base = match &args.config {
        Some(path) => DistillConfig::from_file(path)?,
        None => DistillConfig::default(),
    };
    let overrides = match serde_json::to_value(&args.keys) {
        Ok(serde_json::Value::Object(map)) => map,
        Ok(_) => serde_json::Map::new(),
        Err(e) => return Err(Error::value("distill flags", e.to_string())),
    };
    let config = base.with_overrides(overrides)?;
    config.validate()?;
    Ok(config)
}

pub fn run(args: DistillArgs) -> Result<()> {
    if args.print_default_config {
        print!("{}", DistillConfig::default().to_toml());
        return Ok(());
    }
    let config = resolve_config(&args)?;
    let options = RunOptions {
        resume: args.resume,
        bench_steps: args.bench_steps,
        progress: !args.no_progress,
        stop_at_step: args.stop_at_step,
    };
    let summary = distill::run(config, &options)?;
    if args.bench_steps.is_none() {
        let json = serde_json::to_string_pretty(&summary)
            .map_err(|e| Error::value("run summary", e.to_string()))?;
        println!("{json}");
    }
    Ok(())
}
