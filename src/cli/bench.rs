//! `optical bench`: time each kernel on the standard problems.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::backend::{Backend, BackendKind};
use crate::bench::compare::{compare, read_run, regression_error, render, Metric};
use crate::bench::{run_kernel, EXTRA_KERNELS, KERNELS};

/// Printed after `optical bench --help`.
pub const STANDARD_PROBLEMS: &str = "\
Standard problems (seeded, identical on every backend):
  cosine-cost   b=64, n=m=128, d=384                            -> GB/s, GFLOP/s
  maxsim        8 queries x 32 tokens vs 1,000 docs x 48, d=128 -> GB/s, GFLOP/s
  sinkhorn      b=64, n=m=128, eps=0.05, 200 iterations         -> G exp/s
  sinkhorn-512  b=4, n=m=512, eps=0.05, 100 iterations          -> G exp/s
  sinkhorn-checks a distillation step's OT: b=16, n=m=32, d=384, eps=0.005, threshold
                1e-3, a check every 5 iterations, up to 500     -> G exp/s (iterations run)
  sinkhorn-fused  (only with --kernels) embeddings b=256, n=m=128, d=384: cosine cost
                + Sinkhorn, eps=0.05, 100 iterations            -> G exp/s
  sinkhorn-fused-1 (only with --kernels) the same with 1 iteration: the cost phase's share
  cosine-cost-hbm (only with --kernels) b=512, n=m=128, d=384: 235 MB per call, larger
                than any GPU's L2, for the HBM-bandwidth roofline -> GB/s, GFLOP/s
  sinkhorn-2048 (only with --kernels) b=2, n=m=2048, eps=0.05, 50 iterations: a few
                pairs far larger than on-chip memory                -> G exp/s
  exp2-peak     (only with --kernels) at least 2^30 exp2 in independent chains over
                every SM or thread, nothing else: the measured exp rate that the
                Sinkhorn floors assume (seconds per call on cpu-reference) -> G exp/s
Each kernel: one warm-up call, then calls for at least --min-seconds (at least 3); the
median seconds per call is reported. Sinkhorn timings include preparing the problem and
writing the plan; G exp/s counts 2*b*n*m exponentials per iteration. On cuda the kernels
are also timed alone with CUDA events (inputs and outputs in device memory, no transfers),
and on wgpu with GPU timestamps around each compute pass (adapters that have them; uploads
and read-backs not counted): \"device\" seconds per call and rate. --phases adds where the
rest of the wall time goes: the solver's prepare / iterate / check (\"iterate and check\"
where the stopping rule runs on the device) / finish, the problem's f64 cost, the f64 plan,
the copies to and from the device and the waits for it (phases nest: the copies sit inside
the solver's steps).";

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: Option<BenchCommand>,
    /// Backend to time: cpu, cpu-reference, wgpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub backend: String,
    /// Kernels to time (comma-separated); all by default.
    #[arg(long, value_delimiter = ',')]
    pub kernels: Vec<String>,
    /// Print one JSON object per kernel (for CI throughput tracking).
    #[arg(long)]
    pub json: bool,
    /// Minimum measuring time per kernel, in seconds.
    #[arg(long, default_value_t = 1.0, value_parser = super::finite_f64, allow_negative_numbers = true)]
    pub min_seconds: f64,
    /// Also time the host-side phases of each call (copies to and from the device, waits,
    /// solver steps, the f64 plan): seconds per call of each, in `host_phases` with --json.
    #[arg(long)]
    pub phases: bool,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Compare two runs (`optical bench --json > FILE`, or gpu-check's results JSON) kernel
    /// by kernel; exit status 1 when a timing is slower than --max-slowdown allows.
    #[command(after_help = COMPARE_HELP)]
    Compare(CompareArgs),
}

const COMPARE_HELP: &str = "\
Timings match by backend (or gpu-check variant, such as cuda-fp32) and kernel, on the same
problem; each row is the new median time per call against the base one. A change counts
when the ratio leaves [1/(1+t), 1+t] for t = --max-slowdown / 100. Exit status: 0 when
nothing is slower, 1 when something is (the table is printed first), 2 on unreadable files
or files with no timing in common. Kernels timed in only one run, or on another problem,
are listed under the table and do not change the status, unless --require-all makes a base
timing missing from the new run (or on another problem) exit 2. So are timings taken on
other hardware, under other OPTICAL_* kernel settings or with --phases in one run only:
compared, and named. In CI:
  optical bench --json > new.json &&
    optical bench compare base.json new.json --max-slowdown 15 --require-all";

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The reference run: the output of `optical bench --json`, or a results file of
    /// scripts/gpu-check.sh (benches/results/*.json).
    pub base: PathBuf,
    /// The run to check against it, in either format.
    pub new: PathBuf,
    /// The largest slowdown that passes, in percent of the base time.
    #[arg(long, default_value_t = 10.0, value_parser = super::finite_f64, allow_negative_numbers = true)]
    pub max_slowdown: f64,
    /// Which time to compare: auto (the device time where both runs have it, else the wall
    /// time), wall, device or both.
    #[arg(long, default_value = "auto")]
    pub metric: String,
    /// Print the comparison as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Fail (exit status 2, after the table) when a timing of the base run is missing from
    /// the new one, was taken on another problem, or (with `--metric device`) lost its
    /// device time: for CI, where a kernel that crashed or was dropped must not pass
    /// unnoticed.
    #[arg(long)]
    pub require_all: bool,
}

fn run_compare(args: CompareArgs) -> crate::Result<()> {
    // Checked here too, before the files are read, so the message shows the number given.
    if args.max_slowdown < 0.0 {
        return Err(crate::Error::parameter(
            "max_slowdown",
            "a finite percentage >= 0",
            args.max_slowdown,
        ));
    }
    let metric: Metric = args.metric.parse()?;
    let base = read_run(&args.base)?;
    let new = read_run(&args.new)?;
    let c = compare(&base, &new, metric, args.max_slowdown / 100.0)?;
    if args.json {
        let mut v = serde_json::to_value(&c).expect("plain record");
        v["geometric_mean_change"] = c.geometric_mean_change().into();
        outln!("{v}");
    } else {
        outln!("{}", render(&c).trim_end_matches('\n'));
    }
    if let Some(e) = regression_error(&c) {
        return Err(e);
    }
    let missing: Vec<&str> = c
        .only_in_base
        .iter()
        .chain(&c.shape_changed)
        .chain(&c.device_time_lost)
        .map(String::as_str)
        .collect();
    if args.require_all && !missing.is_empty() {
        return Err(crate::Error::value(
            "bench compare --require-all",
            format!(
                "expected every timing of {} in {} on the same problem, found none for {}",
                args.base.display(),
                args.new.display(),
                missing.join(", ")
            ),
        ));
    }
    Ok(())
}

pub fn run(args: BenchArgs) -> crate::Result<()> {
    if let Some(BenchCommand::Compare(c)) = args.command {
        return run_compare(c);
    }
    if !(0.0..=86_400.0).contains(&args.min_seconds) {
        return Err(crate::Error::parameter(
            "min_seconds",
            "0..=86400 (0: three calls per kernel; at most a day per kernel)",
            args.min_seconds,
        ));
    }
    let kind: BackendKind = args.backend.parse()?;
    let backend = Backend::new(kind)?;
    let kernels: Vec<String> = if args.kernels.is_empty() {
        KERNELS.iter().map(|s| s.to_string()).collect()
    } else {
        // A kernel named twice is timed once: a run holds one record per kernel, which
        // `bench compare` relies on.
        let mut seen = std::collections::HashSet::new();
        args.kernels
            .into_iter()
            .filter(|k| seen.insert(k.clone()))
            .collect()
    };
    // Every name is checked before the first kernel runs (a typo at the end of a long
    // list should not cost the measurements before it).
    if let Some(bad) = kernels
        .iter()
        .find(|k| !KERNELS.contains(&k.as_str()) && !EXTRA_KERNELS.contains(&k.as_str()))
    {
        return Err(crate::Error::parameter(
            "kernel",
            format!(
                "one of {}, {}",
                KERNELS.join(", "),
                EXTRA_KERNELS.join(", ")
            ),
            bad,
        ));
    }
    crate::phases::set_enabled(args.phases);
    for k in &kernels {
        let r = run_kernel(&backend, k, args.min_seconds)?;
        if args.json {
            outln!("{}", serde_json::to_string(&r).expect("plain record"));
        } else {
            let rate = [
                r.gb_per_s.map(|v| format!("{v:.2} GB/s")),
                r.gflop_per_s.map(|v| format!("{v:.2} GFLOP/s")),
                r.gexp_per_s.map(|v| format!("{v:.3} G exp/s")),
            ]
            .into_iter()
            .flatten()
            .chain(r.iterations_mean.map(|n| format!("{n:.1} iterations")))
            .collect::<Vec<_>>()
            .join(", ");
            let device = match (r.device_seconds_per_call, r.device_rate) {
                (Some(s), Some(rate)) => {
                    let unit = if r.gexp_per_s.is_some() {
                        "G exp/s"
                    } else {
                        "GB/s"
                    };
                    format!("  (device: {s:.6} s/call, {rate:.3} {unit})")
                }
                _ => String::new(),
            };
            outln!(
                "{:<13} {:<14} {:>12.6} s/call  {rate}{device}   [{}]",
                r.kernel,
                r.backend,
                r.seconds_per_call,
                r.shape
            );
            if !r.host_phases.is_empty() {
                let phases: Vec<String> = r
                    .host_phases
                    .iter()
                    .map(|p| format!("{} {:.3} ms", p.phase, p.seconds_per_call * 1e3))
                    .collect();
                outln!("    host phases per call (nested): {}", phases.join(", "));
            }
        }
    }
    Ok(())
}
