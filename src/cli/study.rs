//! `optical study`: run (or continue) the grid of a study file and write its report (see
//! `crate::study`).

use std::path::{Path, PathBuf};

use clap::Args;

use crate::error::{Error, Result};
use crate::io::path_error;
use crate::study::{run_study, RunStatus, StudyOptions, TextKind};
use std::io::ErrorKind;

/// Run a study: every training run and evaluation of the config's grid for one budget, then
/// the report (STUDY.md with tables and SVG plots). Runs are keyed by a hash of their
/// configuration under --out; finished runs are skipped and interrupted ones resume, so the
/// same command continues an interrupted study.
#[derive(Debug, Args)]
pub struct StudyArgs {
    /// The study file (e.g. studies/ood-robustness.toml).
    #[arg(long)]
    pub config: PathBuf,
    /// Which budget section of the file to run (studies/ood-robustness.toml has quick,
    /// quick-seeds, low-resource and full).
    #[arg(long, default_value = "quick")]
    pub budget: String,
    /// Backend of every run (Sinkhorn kernels and encoder device): cpu, wgpu, ...
    #[arg(long)]
    pub backend: Option<String>,
    /// Study directory: runs, split data, embedding cache.
    #[arg(long)]
    pub out: PathBuf,
    /// Report file (default: <out>/STUDY.md); plots go to <name>-plots/ beside it, the name
    /// lower-cased (STUDY.md: study-plots/).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Data directory (default: the config's, else $OPTICAL_DATA_DIR, else ../shared/data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Training runs stop at this step with a checkpoint; the next invocation resumes them
    /// (a way to run a long study in sittings). Runs whose checkpoint is at or past it stay
    /// paused; runs whose training finished are evaluated.
    #[arg(long)]
    pub stop_at_step: Option<usize>,
    /// Only write the report from the results that exist.
    #[arg(long)]
    pub report_only: bool,
    /// Print the runs of the grid with their keys, state and the work each has left
    /// (training steps, texts to encode and whether a whole model or only a student's
    /// trained layers encode them), the time that takes at the budget's estimate, and exit.
    #[arg(long)]
    pub plan: bool,
    /// No progress bars inside training runs (the one-line-per-run progress stays).
    #[arg(long)]
    pub no_progress: bool,
    /// Overrides the config's `lareqa_candidates` (query or passage: how LAReQA's answer
    /// sentences are encoded); a different value makes different runs.
    #[arg(long)]
    pub lareqa_candidates: Option<crate::retrieval::encoder::TextRole>,
}

fn quote(a: &str) -> String {
    if a.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./=:+,".contains(c))
    {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', "'\\''"))
    }
}

/// Where the report and its plots go, checked before the runs rather than after them: not
/// a directory, not the config, not inside the study's own files (a run's `result.json`
/// written over would cost its training), not a file other than an earlier report, and a
/// directory to write in (`--out`, which the study creates, counts as one).
fn check_report_path(report: &Path, args: &StudyArgs) -> Result<()> {
    crate::io::check_not_input(report, &[Some(&args.config)])?;
    if args.out.exists() && !args.out.is_dir() {
        return Ok(()); // The study refuses such an --out first, naming it.
    }
    let refuse = |what: String| {
        Err(path_error(
            report,
            "write the report",
            ErrorKind::AlreadyExists,
            what,
        ))
    };
    let (at, out) = (crate::io::resolved(report), crate::io::resolved(&args.out));
    for sub in ["runs", "data", "embeddings"] {
        if at.starts_with(out.join(sub)) {
            return refuse(format!(
                "expected a path outside the study's {sub}/ directory, found one inside it"
            ));
        }
    }
    if report.is_file() {
        let earlier = std::fs::read_to_string(report)
            .is_ok_and(|t| t.contains("This page is written by `optical study`"));
        if !earlier {
            return refuse(
                "expected a new file or an earlier report of `optical study`, found another \
                 file (writing would replace it)"
                    .into(),
            );
        }
    }
    if at.parent() == Some(out.as_path()) && !args.out.exists() {
        // In --out, which the study creates: only what is there can be in the way.
        if report.is_dir() {
            crate::io::check_output_file(report)?;
        }
    } else {
        crate::io::check_output_file(report)?;
    }
    let plots = crate::study::report::plot_dir(report);
    if plots.exists() && !plots.is_dir() {
        return Err(path_error(
            &plots,
            "write the report's plots into",
            ErrorKind::AlreadyExists,
            "expected a directory, found a file",
        ));
    }
    Ok(())
}

pub fn run(args: StudyArgs) -> Result<()> {
    if !args.plan {
        let report = args
            .report
            .clone()
            .unwrap_or_else(|| args.out.join("STUDY.md"));
        check_report_path(&report, &args)?;
    }
    if args.plan {
        return print_plan(&args);
    }
    // The command as typed, minus flags that only change how this invocation runs.
    let mut words: Vec<String> = vec!["optical".into(), "study".into()];
    words.push(format!(
        "--config {}",
        quote(&args.config.display().to_string())
    ));
    words.push(format!("--budget {}", quote(&args.budget)));
    if let Some(b) = &args.backend {
        words.push(format!("--backend {}", quote(b)));
    }
    words.push(format!("--out {}", quote(&args.out.display().to_string())));
    if let Some(r) = &args.report {
        words.push(format!("--report {}", quote(&r.display().to_string())));
    }
    if let Some(d) = &args.data_dir {
        words.push(format!("--data-dir {}", quote(&d.display().to_string())));
    }
    if let Some(r) = args.lareqa_candidates {
        words.push(format!("--lareqa-candidates {}", r.name()));
    }
    let options = StudyOptions {
        config: args.config,
        budget: args.budget,
        backend: args.backend,
        out: args.out,
        report: args.report,
        data_dir: args.data_dir,
        lareqa_candidates: args.lareqa_candidates,
        stop_at_step: args.stop_at_step,
        progress: !args.no_progress,
        report_only: args.report_only,
        command: words.join(" "),
        handle_interrupts: true,
    };
    let outcome = run_study(&options)?;
    let count = |f: fn(&RunStatus) -> bool| outcome.runs.iter().filter(|(_, s)| f(s)).count();
    outln!(
        "{}",
        serde_json::json!({
            "finished": outcome.finished,
            "runs": outcome.total,
            "skipped": count(|s| matches!(s, RunStatus::Skipped)),
            "trained": count(|s| matches!(s, RunStatus::Trained { .. })),
            "resumed": count(|s| matches!(s, RunStatus::Trained { resumed_from: Some(_) })),
            "evaluated": count(|s| matches!(s, RunStatus::Evaluated)),
            "reused_students": count(|s| matches!(s, RunStatus::Reused { .. })),
            "paused": count(|s| matches!(s, RunStatus::Paused { .. })),
            "interrupted": count(|s| matches!(s, RunStatus::Interrupted)),
            "report": outcome.report.display().to_string(),
        })
    );
    if outcome
        .runs
        .iter()
        .any(|(_, s)| matches!(s, RunStatus::Interrupted))
    {
        return Err(Error::Interrupted {
            what: format!(
                "study stopped with {} of {} runs finished (what was done is saved); run the \
                 same command again to continue",
                outcome.finished, outcome.total
            ),
        });
    }
    Ok(())
}

fn print_plan(args: &StudyArgs) -> Result<()> {
    use crate::study::evaluate::{lareqa_sets, prepare_group};
    use crate::study::WorkState;
    let mut config = crate::study::config::StudyConfig::from_file(&args.config)?;
    if let Some(d) = &args.data_dir {
        config.data_dir = Some(d.clone());
    }
    if let Some(r) = args.lareqa_candidates {
        config.lareqa_candidates = r;
    }
    let plan = config.plan(&args.budget, args.backend.as_deref(), &args.out)?;
    let data_dir = crate::data::data_dir(config.data_dir.as_deref());
    let lareqa = lareqa_sets(&config, &plan.eval, &data_dir)?;
    // The groups' split training files go to a scratch directory: a plan writes nothing
    // under --out.
    let scratch = std::env::temp_dir().join(format!("optical-plan-{}", std::process::id()));
    let groups: Result<Vec<_>> = plan
        .groups
        .iter()
        .map(|g| prepare_group(&config, g, &plan.eval, &data_dir, &scratch, &lareqa))
        .collect();
    let _ = std::fs::remove_dir_all(&scratch);
    let groups = groups?;
    crate::study::evaluate::check_dev_pairs(&plan.runs, &groups)?;
    for (g, data) in plan.groups.iter().zip(&groups) {
        outln!("group {}:", g.name);
        for s in &data.sets {
            let t = &s.tasks[0];
            outln!(
                "  {} {}: {} queries, pool {}, {} texts to encode",
                s.info.benchmark,
                s.info.language,
                t.queries.len(),
                t.candidates.len(),
                s.texts()
            );
        }
        let n: usize = data.sets.iter().map(|s| s.texts()).sum();
        outln!("  total {n} texts per model");
    }
    // What is left to do, and what the whole grid takes from nothing. Texts are counted
    // by how they are encoded: by a whole model, or by a student whose frozen prefix the
    // sitting shares (only its trained layers run; see the budget's estimate).
    let (mut steps, mut all_steps) = (0usize, 0usize);
    let (mut texts, mut all_texts) = ([0usize; 2], [0usize; 2]);
    let mut finished = 0;
    let sets_of = |r: &crate::study::config::RunSpec| {
        let g = plan
            .groups
            .iter()
            .position(|g| g.name == r.group)
            .unwrap_or(0);
        &groups[g].sets[..]
    };
    let runs: Vec<_> = plan.runs.iter().map(|r| (r, sets_of(r))).collect();
    let kinds: Vec<TextKind> = plan.runs.iter().map(|r| TextKind::of(r, &plan)).collect();
    let pending = crate::study::pending_work(&runs, config.lareqa_candidates);
    let grid = crate::study::grid_work(&runs, config.lareqa_candidates);
    for (((r, _), w), &kind) in runs.iter().zip(&pending).zip(&kinds) {
        let state = match &w.state {
            WorkState::Finished => "finished".to_string(),
            WorkState::Checkpoint(_) => "checkpoint".into(),
            WorkState::Reuses(name) => format!("reuses the student of {name}"),
            WorkState::Pending => "pending".into(),
        };
        finished += usize::from(w.state == WorkState::Finished);
        steps = steps.saturating_add(w.steps);
        texts[kind as usize] = texts[kind as usize].saturating_add(w.texts);
        let by = match kind {
            TextKind::Student => "by trained layers",
            TextKind::Whole => "by whole model",
        };
        outln!(
            "{}\t{state}\tsteps {}\ttexts {}\t{by}\t{}",
            r.name(),
            w.steps,
            w.texts,
            r.dir.display()
        );
    }
    for (w, &kind) in grid.iter().zip(&kinds) {
        all_steps = all_steps.saturating_add(w.steps);
        all_texts[kind as usize] = all_texts[kind as usize].saturating_add(w.texts);
    }
    let e = &plan.estimate;
    let (whole, student) = (TextKind::Whole as usize, TextKind::Student as usize);
    let minutes = |s: usize, t: [usize; 2]| {
        (s as f64 * e.seconds_per_step
            + t[whole] as f64 * e.seconds_per_text
            + t[student] as f64 * e.student_text())
            / 60.0
    };
    outln!(
        "{} runs ({finished} finished): to do {steps} training steps × {} s + {} texts × {} s \
         + {} student texts × {} s ≈ {:.0} min (texts read from the embedding caches left \
         out; a student's texts at the student rate assume that an earlier evaluation of the \
         same sitting computed its frozen layers' states); the whole grid from nothing ≈ {:.0} min ({all_steps} \
         steps, {} texts, {} student texts)",
        plan.runs.len(),
        e.seconds_per_step,
        texts[whole],
        e.seconds_per_text,
        texts[student],
        e.student_text(),
        minutes(steps, texts),
        minutes(all_steps, all_texts),
        all_texts[whole],
        all_texts[student],
    );
    Ok(())
}
