//! The study report: `STUDY.md` and its SVG plots, generated from the runs' `result.json`
//! and training logs.
//!
//! Numbers: a condition's value on a benchmark is the mean over the benchmark's queries
//! (all its tasks together: both directions of every language of a bitext benchmark),
//! then mean ± standard deviation over seeds. Paired tests compare per-query values —
//! averaged over seeds for a condition with several — against the group's `base` run and
//! against `mean-mse` ([`super::stats::paired_randomization`], 10,000 sign flips). The
//! plain-language answer is generated from the same numbers: a difference counts only when
//! its p-value is below [`super::stats::ALPHA`], and everything else is said to be not
//! significant.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use super::config::{Plan, RunSpec, StudyConfig};
use super::evaluate::{GroupData, Role};
use super::stats::{clustered_randomization, format_p, mean_std, PairedTest, ALPHA};
use super::{finished_result, RunResult, StudyOptions, TrainInfo};
use crate::distill::plot::{line_chart, Series};
use crate::error::{Error, Result};
use crate::report::{markdown_table, slug, svg};
use crate::retrieval::encoder::TextRole;

/// Everything the report is made from.
pub struct Inputs<'a> {
    pub config: &'a StudyConfig,
    pub plan: &'a Plan,
    pub groups: &'a [GroupData],
    pub options: &'a StudyOptions,
    pub data_dir: &'a Path,
    pub path: &'a Path,
}

const RESAMPLES: usize = 10_000;

/// Query languages, candidate languages, and a value per pair.
type LanguageGrid = (Vec<String>, Vec<String>, Vec<Vec<Option<f64>>>);
const BASE: &str = "base";
const MSE: &str = "mean-mse";
const OT: &str = "ot";

/// One benchmark of a group, in the order of its sets.
#[derive(Clone, Debug)]
struct Bench {
    name: String,
    role: Role,
    lareqa: bool,
}

impl Bench {
    fn measure(&self) -> &'static str {
        if self.lareqa {
            "map"
        } else {
            "P_1"
        }
    }

    fn measure_label(&self) -> &'static str {
        if self.lareqa {
            "mAP"
        } else {
            "P@1"
        }
    }

    fn role_label(&self) -> &'static str {
        match self.role {
            Role::InDomain => "in domain",
            Role::OutOfDomain => "out of domain",
        }
    }
}

fn benches(group: &GroupData) -> Vec<Bench> {
    let mut out: Vec<Bench> = Vec::new();
    for s in &group.sets {
        if !out.iter().any(|b| b.name == s.info.benchmark) {
            out.push(Bench {
                name: s.info.benchmark.clone(),
                role: s.info.role,
                lareqa: s.info.lareqa,
            });
        }
    }
    out
}

/// Whether task `t` belongs to the benchmark (and to `language`, when one is given).
fn in_selection(t: &super::evaluate::TaskOutcome, bench: &str, language: Option<&str>) -> bool {
    t.set.benchmark == bench && language.is_none_or(|l| t.set.language == l)
}

/// Per-query values of `measure` over the benchmark's tasks (optionally one language, one
/// direction).
fn values(
    r: &RunResult,
    bench: &str,
    language: Option<&str>,
    measure: &str,
    direction: Option<&str>,
) -> Vec<f64> {
    r.tasks
        .iter()
        .filter(|t| in_selection(t, bench, language) && direction.is_none_or(|d| t.direction == d))
        .flat_map(|t| t.per_query.get(measure).cloned().unwrap_or_default())
        .collect()
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Element-wise mean over runs (seeds); `None` when the runs disagree on the queries.
fn seed_mean(vs: &[Vec<f64>]) -> Option<Vec<f64>> {
    let n = vs.first()?.len();
    if n == 0 || vs.iter().any(|v| v.len() != n) {
        return None;
    }
    Some(
        (0..n)
            .map(|i| vs.iter().map(|v| v[i]).sum::<f64>() / vs.len() as f64)
            .collect(),
    )
}

/// Each pooled query's cluster (the order of [`values`]): see
/// [`super::evaluate::query_cluster`]. The ids come from the result, else from the group's
/// evaluation sets; `None` when neither matches the result's queries.
fn clusters(
    r: &RunResult,
    bench: &str,
    language: Option<&str>,
    group: Option<&GroupData>,
) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for t in r.tasks.iter().filter(|t| in_selection(t, bench, language)) {
        let n = t.per_query.values().next().map_or(0, Vec::len);
        let from_sets;
        let ids: &[String] = if t.query_ids.is_empty() {
            let task = group?
                .sets
                .iter()
                .filter(|s| s.info == t.set)
                .flat_map(|s| s.tasks.iter().map(move |task| (s, task)))
                .find(|(s, task)| super::evaluate::direction_of(&s.info, task) == t.direction)?
                .1;
            from_sets = task
                .queries
                .iter()
                .map(|q| q.id.clone())
                .collect::<Vec<_>>();
            &from_sets
        } else {
            &t.query_ids
        };
        if ids.len() != n {
            return None;
        }
        out.extend(
            ids.iter()
                .map(|id| super::evaluate::query_cluster(&t.set, id)),
        );
    }
    Some(out)
}

/// The finished runs of one group and condition.
struct Cell<'a> {
    runs: Vec<&'a RunResult>,
    /// The group's evaluation sets (the queries' ids for results that lack them).
    group: Option<&'a GroupData>,
}

impl Cell<'_> {
    /// Each pooled query's cluster, the same for every run of the cell (`None` otherwise).
    fn clusters(&self, bench: &str, language: Option<&str>) -> Option<Vec<String>> {
        let mut all = self
            .runs
            .iter()
            .map(|r| clusters(r, bench, language, self.group));
        let first = all.next()??;
        all.all(|c| c.as_ref() == Some(&first)).then_some(first)
    }

    fn seeds(&self, bench: &str, measure: &str, direction: Option<&str>) -> Vec<f64> {
        self.seeds_in(bench, None, measure, direction)
    }

    /// Each run's mean of `measure` on the benchmark (one language of it, one direction).
    fn seeds_in(
        &self,
        bench: &str,
        language: Option<&str>,
        measure: &str,
        direction: Option<&str>,
    ) -> Vec<f64> {
        self.runs
            .iter()
            .map(|r| mean(&values(r, bench, language, measure, direction)))
            .collect()
    }

    fn per_query(&self, bench: &str, language: Option<&str>, measure: &str) -> Option<Vec<f64>> {
        let vs: Vec<Vec<f64>> = self
            .runs
            .iter()
            .map(|r| values(r, bench, language, measure, None))
            .collect();
        seed_mean(&vs)
    }

    /// The mean over seeds of `measure` on the benchmark (one language of it), both
    /// directions pooled.
    fn value_in(&self, bench: &str, language: Option<&str>, measure: &str) -> Option<f64> {
        let s = self.seeds_in(bench, language, measure, None);
        (!s.is_empty()).then(|| mean(&s))
    }

    fn summary(&self, bench: &str, measure: &str, direction: Option<&str>) -> String {
        let s = self.seeds(bench, measure, direction);
        if s.is_empty() {
            return "–".into();
        }
        let (m, sd) = mean_std(&s);
        if s.len() > 1 {
            format!("{m:.4} ± {sd:.4}")
        } else {
            format!("{m:.4}")
        }
    }

    fn value(&self, bench: &str, measure: &str) -> Option<f64> {
        self.value_in(bench, None, measure)
    }
}

struct Results<'a> {
    /// (group, condition) → runs.
    cells: BTreeMap<(String, String), Vec<&'a RunResult>>,
    groups: &'a [GroupData],
}

impl<'a> Results<'a> {
    fn cell(&self, group: &str, condition: &str) -> Cell<'a> {
        Cell {
            runs: self
                .cells
                .get(&(group.to_string(), condition.to_string()))
                .cloned()
                .unwrap_or_default(),
            group: self.groups.iter().find(|g| g.name == group),
        }
    }
}

/// How the trained runs chose the student they evaluate (`export`): one sentence, or `None`
/// when the plan trains nothing.
fn selection_line(plan: &Plan) -> Option<String> {
    let mut policies: Vec<&str> = Vec::new();
    for d in plan.runs.iter().filter_map(|r| r.distill.as_ref()) {
        if !policies.contains(&d.export.as_str()) {
            policies.push(&d.export);
        }
    }
    match policies.as_slice() {
        [] => None,
        ["last"] => Some(
            "Model selection: none. Every trained run evaluates the student of its last step \
             (a fixed training budget); its dev P@1 is logged and plotted but selects nothing."
                .into(),
        ),
        ["best"] => Some(
            "Model selection: every trained run evaluates its checkpoint with the best dev P@1 \
             (ties broken by MRR, then the earliest step; step 0, the untrained model, \
             competes)."
                .into(),
        ),
        _ => Some(
            "Model selection differs between runs (`export` above): `best` evaluates the \
             checkpoint with the best dev P@1, `last` the student of the last step."
                .into(),
        ),
    }
}

/// Whether every finished run of a trained cell exported its starting model (step 0).
fn exports_start(cell: &Cell<'_>) -> bool {
    let trains: Vec<&TrainInfo> = cell.runs.iter().filter_map(|r| r.train.as_ref()).collect();
    !trains.is_empty() && trains.iter().all(|t| t.exported_step == Some(0))
}

/// Untrained base models at or above this in-domain score leave little room to gain.
const CEILING: f64 = 0.95;

/// One trained condition on one benchmark, for [`seed_spread_note`].
struct SeedSpread<'a> {
    condition: &'a str,
    bench: &'a str,
    /// The untrained model's value.
    base: f64,
    /// The condition's value for each seed.
    seeds: Vec<f64>,
    /// Whether the paired test calls it a significant gain over the untrained model.
    significant_gain: bool,
}

/// A note on the significant gains over the untrained model that are smaller than twice
/// the standard deviation between seeds. The paired tests run over queries with each
/// query's value averaged over the seeds, so the spread between training runs is not in
/// their p-values; a reader should know where it is as large as the gain.
fn seed_spread_note(group: &str, rows: &[SeedSpread<'_>]) -> Option<String> {
    let mut seeds = 0;
    let listed: Vec<String> = rows
        .iter()
        .filter(|r| r.significant_gain && r.seeds.len() > 1)
        .filter_map(|r| {
            let (m, sd) = mean_std(&r.seeds);
            let gain = m - r.base;
            (gain.is_finite() && sd.is_finite() && gain < 2.0 * sd).then(|| {
                seeds = seeds.max(r.seeds.len());
                format!(
                    "{} on {} ({} ± {sd:.4})",
                    r.condition,
                    r.bench,
                    signed(Some(gain))
                )
            })
        })
        .collect();
    if listed.is_empty() {
        return None;
    }
    Some(format!(
        "In group {group}, some significant gains over the untrained model are smaller than \
         twice the standard deviation between seeds (gain ± that deviation over {seeds} \
         seeds): {}. The p-values compare queries, each averaged over the seeds, so they do \
         not include the spread between training runs: another seed could land well off \
         these means.",
        listed.join(", ")
    ))
}

/// A condition's trained runs: each one's seed and exported step.
type Exports<'a> = (&'a str, Vec<(u64, Option<usize>)>);

/// A note on trained conditions where some seeds, not all, exported their starting model
/// (no checkpoint beat it on the dev pairs).
fn partial_start_note(group: &str, runs: &[Exports<'_>]) -> Option<String> {
    let listed: Vec<String> = runs
        .iter()
        .filter_map(|(condition, seeds)| {
            let start: Vec<String> = seeds
                .iter()
                .filter(|(_, step)| *step == Some(0))
                .map(|(seed, _)| seed.to_string())
                .collect();
            (!start.is_empty() && start.len() < seeds.len()).then(|| {
                format!(
                    "`{condition}` (seed{} {} of {})",
                    if start.len() > 1 { "s" } else { "" },
                    start.join(", "),
                    seeds.len()
                )
            })
        })
        .collect();
    if listed.is_empty() {
        return None;
    }
    Some(format!(
        "In group {group}, some seeds never beat their starting model on the dev pairs, so \
         they exported the untrained model: {}. The means and spreads of those conditions \
         mix trained and untrained students.",
        listed.join(", ")
    ))
}

/// What a reader must know before trusting a comparison: trained conditions whose
/// exported student is their starting model (in every seed, or in some), in-domain
/// benchmarks at the ceiling, and gains no larger than the spread between seeds.
fn caveats(plan: &Plan, groups: &[GroupData], results: &Results<'_>) -> Vec<String> {
    let mut notes = Vec::new();
    for g in groups {
        for c in plan.conditions.iter().filter(|c| c.train) {
            let cell = results.cell(&g.name, &c.name);
            let Some(train) = cell
                .runs
                .iter()
                .find_map(|r| r.train.as_ref())
                .filter(|_| exports_start(&cell))
            else {
                continue;
            };
            let curve = train
                .dev
                .first()
                .zip(train.dev.last())
                .map(|(a, z)| {
                    format!(
                        " (dev P@1 {:.2} at step {}, {:.2} at step {})",
                        a.p_at_1, a.step, z.p_at_1, z.step
                    )
                })
                .unwrap_or_default();
            notes.push(format!(
                "In group {}, `{}` never beat its starting model on its dev pairs{curve}, so \
                 the student it exported is the untrained model{}.",
                g.name,
                c.name,
                if c.name == MSE {
                    "; there, every comparison with mean-mse is a comparison with the \
                     untrained model"
                } else {
                    ""
                }
            ));
        }
        let base = results.cell(&g.name, BASE);
        let group_benches = benches(g);
        for b in group_benches.iter().filter(|b| b.role == Role::InDomain) {
            if let Some(v) = base.value(&b.name, b.measure()).filter(|v| *v >= CEILING) {
                notes.push(format!(
                    "In group {}, the untrained model already scores {v:.3} {} on {} (in \
                     domain), near the ceiling: in-domain gains there are small by \
                     construction, which inflates the robustness ratios.",
                    g.name,
                    b.measure_label(),
                    b.name
                ));
            }
        }
        let exports: Vec<Exports<'_>> = plan
            .conditions
            .iter()
            .filter(|c| c.train)
            .map(|c| {
                let cell = results.cell(&g.name, &c.name);
                let runs = cell
                    .runs
                    .iter()
                    .filter_map(|r| Some((r.seed, r.train.as_ref()?.exported_step)))
                    .collect();
                (c.name.as_str(), runs)
            })
            .collect();
        notes.extend(partial_start_note(&g.name, &exports));
        let mut rows = Vec::new();
        for b in &group_benches {
            let Some(base_value) = base.value(&b.name, b.measure()) else {
                continue;
            };
            for c in plan.conditions.iter().filter(|c| c.train) {
                let cell = results.cell(&g.name, &c.name);
                let seeds = cell.seeds(&b.name, b.measure(), None);
                if seeds.len() < 2 {
                    continue;
                }
                let t = test(
                    &cell,
                    &base,
                    &b.name,
                    b.measure(),
                    &format!("{}-base", c.name),
                );
                rows.push(SeedSpread {
                    condition: &c.name,
                    bench: &b.name,
                    base: base_value,
                    seeds,
                    significant_gain: verdict(t) == Verdict::Better,
                });
            }
        }
        notes.extend(seed_spread_note(&g.name, &rows));
    }
    notes
}

/// The paired test of `a` against `b` on `bench`, signs flipped per cluster of dependent
/// queries; `None` when a cell has no runs or the two disagree on the queries.
fn test(a: &Cell<'_>, b: &Cell<'_>, bench: &str, measure: &str, salt: &str) -> Option<PairedTest> {
    test_in(a, b, bench, None, measure, salt)
}

/// [`test`] on one language of a benchmark (`None`: all of it).
fn test_in(
    a: &Cell<'_>,
    b: &Cell<'_>,
    bench: &str,
    language: Option<&str>,
    measure: &str,
    salt: &str,
) -> Option<PairedTest> {
    let x = a.per_query(bench, language, measure)?;
    let y = b.per_query(bench, language, measure)?;
    let keys = a.clusters(bench, language)?;
    if b.clusters(bench, language)? != keys {
        return None;
    }
    // The group is in the seed, so that two groups' tests of one benchmark draw their own
    // sign sequences; a language's test keeps the benchmark's seed when it is the whole.
    let group = a.group.map_or("", |g| g.name.as_str());
    let key = match language {
        None => format!("{group}/{bench}/{measure}/{salt}"),
        Some(l) => format!("{group}/{bench}/{l}/{measure}/{salt}"),
    };
    let seed = crate::rng::fnv1a64(key.as_bytes());
    clustered_randomization(&x, &y, &keys, RESAMPLES, seed).ok()
}

fn p_cell(t: Option<PairedTest>) -> String {
    // Below ALPHA the p may sit at the test's resolution, which `p_text` says.
    t.map_or("–".into(), |t| {
        if t.p < ALPHA {
            t.p_text()
        } else {
            format_p(t.p)
        }
    })
}

fn delta(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? - b?)
}

/// A difference to four decimals with its sign. One below the last decimal prints as
/// `+0.0000`: its sign is rounding noise (two means of the same scores summed in another
/// order differ by 1e-17), and `-0.0000` would read as a loss.
fn signed(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() && v.abs() < 0.5e-4 => "+0.0000".into(),
        Some(v) if v.is_finite() => format!("{v:+.4}"),
        _ => "–".into(),
    }
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, "create", e))?;
    }
    crate::io::write_atomic(path, text)
}

/// A link from the report to a plot, relative to the report's directory.
fn link(report_dir: &Path, plot: &Path) -> String {
    plot.strip_prefix(report_dir)
        .unwrap_or(plot)
        .display()
        .to_string()
}

/// `(step, value)` points of `key` in a JSONL log.
fn log_series(path: &Path, key: &str) -> Vec<(f64, f64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|r| Some((r.get("step")?.as_f64()?, r.get(key)?.as_f64()?)))
        .collect()
}

/// Verdict of one comparison.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Verdict {
    Better,
    Worse,
    NotSignificant,
    Missing,
}

fn verdict(t: Option<PairedTest>) -> Verdict {
    match t {
        None => Verdict::Missing,
        Some(t) if t.p < ALPHA && t.mean_difference > 0.0 => Verdict::Better,
        Some(t) if t.p < ALPHA && t.mean_difference < 0.0 => Verdict::Worse,
        Some(_) => Verdict::NotSignificant,
    }
}

fn describe(t: Option<PairedTest>, measure: &str) -> String {
    match t {
        None => "no comparison (runs missing, or their queries differ)".into(),
        Some(t) => {
            let p = t.p_text();
            format!(
                "{} {measure} (p {}{}{})",
                signed(Some(t.mean_difference)),
                if p.starts_with('≤') { "" } else { "= " },
                p,
                if t.p < ALPHA { "" } else { ", not significant" }
            )
        }
    }
}

/// Where a report's plots go: `<name>-plots/` beside it, the name lower-cased
/// (`STUDY.md`: `study-plots/`).
pub fn plot_dir(report: &Path) -> PathBuf {
    let dir = report
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let stem = report
        .file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_else(|| "study".into());
    dir.join(format!("{stem}-plots"))
}

/// Write the report and its plots.
/// For a bitext benchmark of several languages, a table of each language: the pooled P@1
/// of `base`, and each other condition's Δ and p against it on that language's queries
/// (trained and untrained languages often differ, which the pooled numbers hide).
fn per_language_table(
    md: &mut String,
    g: &GroupData,
    b: &Bench,
    conditions: &[&str],
    results: &Results<'_>,
    base: &Cell<'_>,
) {
    let sets: Vec<&super::evaluate::EvalSet> = g
        .sets
        .iter()
        .filter(|s| s.info.benchmark == b.name)
        .collect();
    if sets.len() < 2 {
        return;
    }
    let m = b.measure();
    let others: Vec<&str> = conditions.iter().copied().filter(|&c| c != BASE).collect();
    let mut headers = vec![
        "language".to_string(),
        "queries (per direction)".into(),
        format!("{BASE} P@1 pooled"),
    ];
    for c in &others {
        headers.push(format!("{c} Δ"));
        headers.push(format!("{c} p"));
    }
    let rows: Vec<Vec<String>> = sets
        .iter()
        .map(|s| {
            let lang = s.info.language.as_str();
            let b0 = base.value_in(&b.name, Some(lang), m);
            let mut row = vec![
                lang.to_string(),
                s.tasks.first().map_or(0, |t| t.queries.len()).to_string(),
                b0.map_or("–".into(), |v| format!("{v:.4}")),
            ];
            for &c in &others {
                let cell = results.cell(&g.name, c);
                row.push(signed(delta(cell.value_in(&b.name, Some(lang), m), b0)));
                row.push(p_cell(test_in(
                    &cell,
                    base,
                    &b.name,
                    Some(lang),
                    m,
                    &format!("{c}-base"),
                )));
            }
            row
        })
        .collect();
    let _ = writeln!(md, "Per language (P@1 pooled over both directions):\n");
    md.push_str(&markdown_table(&headers, &rows));
    let _ = writeln!(
        md,
        "\nEach language's Δ and p are against `{BASE}` on that language's queries alone, \
         tested as above; a language has fewer queries than the benchmark, so its test has \
         less power.\n"
    );
}

pub fn write(inputs: &Inputs<'_>) -> Result<()> {
    let Inputs {
        config,
        plan,
        groups,
        options,
        data_dir,
        path,
    } = inputs;
    let report_dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let plot_dir = plot_dir(path);
    let loaded: Vec<(&RunSpec, Option<RunResult>)> =
        plan.runs.iter().map(|r| (r, finished_result(r))).collect();
    let mut cells: BTreeMap<(String, String), Vec<&RunResult>> = BTreeMap::new();
    for (spec, r) in &loaded {
        if let Some(r) = r {
            cells
                .entry((spec.group.clone(), spec.condition.clone()))
                .or_default()
                .push(r);
        }
    }
    let results = Results { cells, groups };
    let finished: Vec<&RunResult> = loaded.iter().filter_map(|(_, r)| r.as_ref()).collect();
    let missing: Vec<String> = loaded
        .iter()
        .filter(|(_, r)| r.is_none())
        .map(|(s, _)| s.name())
        .collect();
    let trained: Vec<&str> = plan
        .conditions
        .iter()
        .filter(|c| c.train)
        .map(|c| c.name.as_str())
        .collect();
    let has = |c: &str| plan.conditions.iter().any(|x| x.name == c);

    let mut md = String::new();
    let _ = writeln!(md, "# {}\n", config.name);
    let _ = writeln!(md, "**Question.** {}\n", config.question);
    let _ = writeln!(
        md,
        "This page is written by `optical study` from the runs' results; do not edit it by \
         hand. Budget **{}**{}.\n",
        plan.budget,
        config
            .budget
            .get(&plan.budget)
            .map(|b| b.description.trim())
            .filter(|d| !d.is_empty())
            .map(|d| format!(": {d}"))
            .unwrap_or_default()
    );
    if !missing.is_empty() {
        let _ = writeln!(
            md,
            "> **Incomplete:** {} of {} runs have results; missing: {}. Run the command of \
             [Commands](#commands) again to continue (a sitting's `--stop-at-step` only with a \
             later step).\n",
            finished.len(),
            plan.runs.len(),
            missing.join(", ")
        );
    }

    // ---- the answer -----------------------------------------------------------------
    let mut answer = String::new();
    let mut ood_vs_base: Vec<(String, Verdict)> = Vec::new();
    let mut ood_vs_mse: Vec<(String, Verdict)> = Vec::new();
    let mut in_vs_base: Vec<(String, Verdict)> = Vec::new();
    if has(OT) && has(BASE) {
        for g in groups.iter() {
            let base = results.cell(&g.name, BASE);
            let ot = results.cell(&g.name, OT);
            let mse = results.cell(&g.name, MSE);
            let title = config
                .groups
                .iter()
                .find(|x| x.name == g.name)
                .map(|x| x.title.clone())
                .unwrap_or_default();
            let _ = writeln!(answer, "- **Group {}** ({}):", g.name, title);
            for b in benches(g) {
                let m = b.measure();
                let tb = test(&ot, &base, &b.name, m, "ot-base");
                let tm = has(MSE)
                    .then(|| test(&ot, &mse, &b.name, m, "ot-mse"))
                    .flatten();
                let label = format!("{} {}", g.name, b.name);
                match b.role {
                    Role::InDomain => in_vs_base.push((label.clone(), verdict(tb))),
                    Role::OutOfDomain => {
                        ood_vs_base.push((label.clone(), verdict(tb)));
                        if has(MSE) {
                            let mark = if exports_start(&mse) { "†" } else { "" };
                            ood_vs_mse.push((format!("{label}{mark}"), verdict(tm)));
                        }
                    }
                }
                let _ = writeln!(
                    answer,
                    "  - {} ({}): OT vs the untrained model {}{}.",
                    b.name,
                    b.role_label(),
                    describe(tb, b.measure_label()),
                    if has(MSE) {
                        format!("; OT vs mean-mse {}", describe(tm, b.measure_label()))
                    } else {
                        String::new()
                    }
                );
            }
        }
        let names = |v: &[(String, Verdict)], w: Verdict| -> Vec<String> {
            v.iter().filter(|x| x.1 == w).map(|x| x.0.clone()).collect()
        };
        let better = names(&ood_vs_base, Verdict::Better);
        let worse = names(&ood_vs_base, Verdict::Worse);
        let flat = names(&ood_vs_base, Verdict::NotSignificant);
        let with_results =
            |v: &[(String, Verdict)]| v.iter().filter(|x| x.1 != Verdict::Missing).count();
        let n = with_results(&ood_vs_base);
        let in_better = names(&in_vs_base, Verdict::Better);
        // Comparisons without results yet are named, so that "all" and "any" say of how many.
        let pending = |v: &[(String, Verdict)]| -> String {
            let missing = names(v, Verdict::Missing);
            if missing.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} of {} have no results yet ({})",
                    missing.len(),
                    v.len(),
                    missing.join(", ")
                )
            }
        };
        let ood_pending = pending(&ood_vs_base);
        let short = if n == 0 {
            "Not yet: no out-of-domain comparison has results.".to_string()
        } else if better.is_empty() {
            format!(
                "No. OT distillation did not make zero-shot retrieval measurably better out of \
                 domain on any of the {n} out-of-domain benchmarks compared with the untrained \
                 model{}{ood_pending}.",
                if worse.is_empty() {
                    String::new()
                } else {
                    format!(" (it was significantly worse on {})", worse.join(", "))
                }
            )
        } else if better.len() == n {
            format!(
                "Yes, on all {n} out-of-domain benchmarks compared with the untrained \
                 model{ood_pending}."
            )
        } else {
            format!(
                "Partly. OT distillation beat the untrained model out of domain on {} of {n} \
                 benchmarks ({}){}{ood_pending}.",
                better.len(),
                better.join(", "),
                if worse.is_empty() {
                    String::new()
                } else {
                    format!(" and was significantly worse on {}", worse.join(", "))
                }
            )
        };
        let _ = writeln!(md, "## Answer\n\n**{short}**\n");
        if with_results(&in_vs_base) > 0 {
            let _ = writeln!(
                md,
                "In domain, OT beat the untrained model significantly on {} of {} \
                 benchmarks{}{}.",
                in_better.len(),
                with_results(&in_vs_base),
                if in_better.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", in_better.join(", "))
                },
                pending(&in_vs_base)
            );
        } else if !in_vs_base.is_empty() {
            let _ = writeln!(
                md,
                "In domain, no comparison with the untrained model has results yet."
            );
        }
        if with_results(&ood_vs_mse) > 0 {
            let list = |w: Verdict| {
                let v = names(&ood_vs_mse, w);
                if v.is_empty() {
                    "none".to_string()
                } else {
                    v.join(", ")
                }
            };
            let _ = writeln!(
                md,
                "Against sentence-level distillation (mean-mse) out of domain, OT was \
                 significantly better on {}, significantly worse on {}, and not significantly \
                 different on {}{}.",
                list(Verdict::Better),
                list(Verdict::Worse),
                list(Verdict::NotSignificant),
                pending(&ood_vs_mse)
            );
            if ood_vs_mse.iter().any(|x| x.0.ends_with('†')) {
                let _ = writeln!(
                    md,
                    "† There mean-mse exported its starting model, so the comparison is with \
                     the untrained model (see *Read with care*)."
                );
            }
        }
        let mut nohelp: Vec<String> = flat;
        nohelp.extend(worse.iter().cloned());
        if !nohelp.is_empty() {
            let _ = writeln!(
                md,
                "\n**Where OT distillation does not help out of domain** (no significant \
                 gain over the untrained model): {}.",
                nohelp.join(", ")
            );
        }
        let notes = caveats(plan, groups, &results);
        if !notes.is_empty() {
            let _ = writeln!(md, "\n**Read with care:**\n");
            for n in notes {
                let _ = writeln!(md, "- {n}");
            }
        }
        if plan.budget != "full" {
            let _ = writeln!(
                md,
                "\nThese numbers come from the `{}` budget: short training and evaluation \
                 slices (see Setup), so small differences cannot reach significance; \"not \
                 significant\" here means *not shown*, not *shown absent*.",
                plan.budget
            );
        }
        let _ = writeln!(md, "\nPer group and benchmark:\n\n{answer}");
    } else {
        // Name only what is missing: a plan with `ot` alone lacks the baseline, not `ot`.
        let missing: Vec<String> = [OT, BASE]
            .into_iter()
            .filter(|c| !has(c))
            .map(|c| format!("`{c}`"))
            .collect();
        let _ = writeln!(
            md,
            "## Answer\n\nThe answer compares the `{OT}` condition with `{BASE}`; this plan has \
             no {} condition.\n",
            missing.join(" or ")
        );
    }

    // ---- setup ----------------------------------------------------------------------
    let _ = writeln!(md, "## Setup\n");
    let _ = writeln!(md, "### Commands\n");
    let _ = writeln!(
        md,
        "```sh\ncargo build --release --features distill,wgpu\n{}\n```\n",
        options.command
    );
    let _ = writeln!(
        md,
        "An interrupted study (Ctrl-C, a killed process, `--stop-at-step`) continues where it \
         stopped when the same command runs again: finished runs are skipped, a run with a \
         checkpoint resumes from it. Data directory: `{}`.\n",
        data_dir.display()
    );
    let mut hardware: Vec<String> = Vec::new();
    for r in &finished {
        let h = format!(
            "{} ({} threads), backend {}",
            r.hardware.cpu, r.hardware.threads, r.hardware.backend
        );
        if !hardware.contains(&h) {
            hardware.push(h);
        }
    }
    // A run that evaluated another run's kept student trained nothing itself.
    let train_s: f64 = finished
        .iter()
        .filter_map(|r| r.train.as_ref())
        .filter(|t| t.student_from.is_none())
        .map(|t| t.seconds)
        .fold(0.0, |a, b| a + b); // not `sum`: an empty f64 sum is -0.0 ("-0.0 min")
    let eval_s: f64 = finished
        .iter()
        .map(|r| r.eval_seconds)
        .fold(0.0, |a, b| a + b);
    let _ = writeln!(md, "### Compute\n");
    let _ = writeln!(
        md,
        "Hardware: {}. Compute used by the finished runs: training {:.1} min, evaluation \
         {:.1} min, total {:.1} min ({:.2} h).\n",
        if hardware.is_empty() {
            "–".into()
        } else {
            hardware.join("; ")
        },
        train_s / 60.0,
        eval_s / 60.0,
        (train_s + eval_s) / 60.0,
        (train_s + eval_s) / 3600.0
    );
    let rows: Vec<Vec<String>> = loaded
        .iter()
        .map(|(s, r)| match r {
            Some(r) => vec![
                r.name.clone(),
                r.train
                    .as_ref()
                    .map_or("–".into(), |t| match &t.student_from {
                        Some(from) => format!("{} (the student of {from})", t.steps),
                        None => format!("{} ({} sittings)", t.steps, t.sittings),
                    }),
                r.train
                    .as_ref()
                    .map_or("–".into(), |t| match &t.student_from {
                        Some(_) => "0 (reused)".into(),
                        None => format!("{:.1}", t.seconds),
                    }),
                r.train
                    .as_ref()
                    .map_or("–".into(), |t| format!("{:.2}", t.seconds_per_step)),
                r.train.as_ref().map_or("–".into(), |t| {
                    t.exported_step.map_or("?".into(), |s| s.to_string())
                }),
                format!("{:.1}", r.eval_seconds),
                match r.eval_encoded {
                    Some(e) if e < r.eval_texts => {
                        format!("{} ({} from the cache)", r.eval_texts, r.eval_texts - e)
                    }
                    _ => r.eval_texts.to_string(),
                },
            ],
            None => vec![
                s.name(),
                "not finished".into(),
                "–".into(),
                "–".into(),
                "–".into(),
                "–".into(),
                "–".into(),
            ],
        })
        .collect();
    md.push_str(&markdown_table(
        &[
            "run".into(),
            "steps".into(),
            "training s".into(),
            "s/step".into(),
            "exported step".into(),
            "evaluation s".into(),
            "texts evaluated".into(),
        ],
        &rows,
    ));

    // ---- data ------------------------------------------------------------------------
    let _ = writeln!(md, "\n### Data and splits\n");
    let eval = &plan.eval;
    let _ = writeln!(
        md,
        "- LAReQA ({}): {}; languages: {}. Dense retrieval over mean-pooled, normalised \
         vectors, ranks over the whole (sliced) pool; mAP as trec_eval computes it. {}",
        config.lareqa.join(", "),
        match eval.lareqa_questions.is_empty() {
            false => format!(
                "subsets seeded by {} question ids (the first ids by a stable hash: FNV-1a \
                 and the SplitMix64 finaliser): every paragraph \
                 holding a seed's answer in any language is kept whole, the pool is every \
                 sentence of those paragraphs in every language, and the queries are every \
                 question whose answers all lie in kept paragraphs",
                eval.lareqa_questions
                    .iter()
                    .map(|(d, n)| format!("{n} ({d})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            true => "the whole datasets".into(),
        },
        if eval.lareqa_languages.is_empty() {
            "all".into()
        } else {
            eval.lareqa_languages.join(", ")
        },
        match config.lareqa_candidates {
            TextRole::Passage =>
                "Questions are encoded as queries and answer sentences as \
                              passages (e5's `query: ` and `passage: ` prefixes, as its model \
                              card says for question answering).",
            TextRole::Query =>
                "Questions and answer sentences are both encoded as queries (e5's \
                            `query: ` prefix on both sides; its model card asks for \
                            `passage: ` on the answers, `lareqa_candidates = \"passage\"`).",
        }
    );
    let _ = writeln!(
        md,
        "- Bitext evaluation sets: {}; each gives x→en and en→x tasks (the translation must \
         be found among all the set's sentences of the other side: P@1 and MRR).",
        match eval.bitext_pairs {
            Some(n) =>
                format!("at most {n} pairs per set and language, evenly spaced through the file"),
            None => "every pair".into(),
        }
    );
    let _ = writeln!(
        md,
        "- Tatoeba split (`tatoeba-train` / `tatoeba-heldout`): a pair is held out when the \
         stable hash of its English sentence modulo 100 is below {}; training pairs sharing \
         either side with any held-out pair of the group are dropped, so no held-out line is \
         ever trained on. Distillation's own dev pairs are taken from the training part.\n",
        config.split.heldout_percent
    );
    for g in groups.iter() {
        let spec = config.groups.iter().find(|x| x.name == g.name);
        let _ = writeln!(
            md,
            "**Group {}**{}: trained on {}.\n",
            g.name,
            spec.map(|s| format!(" ({})", s.title)).unwrap_or_default(),
            spec.map(|s| s.train.join(", ")).unwrap_or_default()
        );
        if !g.split.is_empty() {
            let rows: Vec<Vec<String>> = g
                .split
                .iter()
                .map(|s| {
                    vec![
                        s.language.clone(),
                        s.pairs.to_string(),
                        s.train.to_string(),
                        s.heldout.to_string(),
                        s.dropped.to_string(),
                    ]
                })
                .collect();
            md.push_str(&markdown_table(
                &[
                    "Tatoeba".into(),
                    "pairs".into(),
                    "train".into(),
                    "held out".into(),
                    "dropped (shared a line with a held-out pair)".into(),
                ],
                &rows,
            ));
            md.push('\n');
        }
        let rows: Vec<Vec<String>> = g
            .sets
            .iter()
            .map(|s| {
                let t = &s.tasks[0];
                vec![
                    s.info.benchmark.clone(),
                    s.info.language.clone(),
                    match s.info.role {
                        Role::InDomain => "in domain".into(),
                        Role::OutOfDomain => "out of domain".into(),
                    },
                    t.queries.len().to_string(),
                    t.candidates.len().to_string(),
                ]
            })
            .collect();
        md.push_str(&markdown_table(
            &[
                "evaluation set".into(),
                "language".into(),
                "role".into(),
                "queries (per direction)".into(),
                "pool".into(),
            ],
            &rows,
        ));
        md.push('\n');
    }

    // ---- hyperparameters ---------------------------------------------------------------
    let _ = writeln!(md, "### Hyperparameters\n");
    let first: Vec<&RunSpec> = plan
        .conditions
        .iter()
        .filter_map(|c| {
            plan.runs
                .iter()
                .find(|r| r.condition == c.name && r.distill.is_some())
        })
        .collect();
    let as_map = |r: &RunSpec| -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        if let Some(d) = &r.distill {
            if let Ok(serde_json::Value::Object(o)) = serde_json::to_value(d) {
                for (k, v) in o {
                    if ["out", "sources", "data_dir", "english_bible", "seed"].contains(&k.as_str())
                    {
                        continue;
                    }
                    m.insert(k, v.to_string().trim_matches('"').to_string());
                }
            }
        }
        m
    };
    let maps: Vec<BTreeMap<String, String>> = first.iter().map(|r| as_map(r)).collect();
    if let Some(m0) = maps.first() {
        let varying: Vec<&String> = m0
            .keys()
            .filter(|k| maps.iter().any(|m| m.get(*k) != m0.get(*k)))
            .collect();
        let common: Vec<String> = m0
            .iter()
            .filter(|(k, _)| !varying.contains(k))
            .map(|(k, v)| format!("`{k}` = {v}"))
            .collect();
        let _ = writeln!(
            md,
            "The base model (`base`, untrained) is `{}`. Every trained run: {}; seeds {}.\n",
            config.base_model(),
            common.join(", "),
            plan.seeds
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        if !varying.is_empty() {
            let mut headers = vec!["condition".to_string()];
            headers.extend(varying.iter().map(|k| k.to_string()));
            headers.push("description".into());
            let rows: Vec<Vec<String>> = first
                .iter()
                .zip(&maps)
                .map(|(r, m)| {
                    let mut row = vec![r.condition.clone()];
                    row.extend(
                        varying
                            .iter()
                            .map(|k| m.get(*k).cloned().unwrap_or_default()),
                    );
                    row.push(
                        plan.conditions
                            .iter()
                            .find(|c| c.name == r.condition)
                            .map(|c| c.description.clone())
                            .unwrap_or_default(),
                    );
                    row
                })
                .collect();
            md.push_str(&markdown_table(&headers, &rows));
            md.push('\n');
        }
    }

    if let Some(line) = selection_line(plan) {
        let _ = writeln!(md, "{line}\n");
    }

    // ---- results -----------------------------------------------------------------------
    let _ = writeln!(md, "## Results\n");
    let _ = writeln!(
        md,
        "Mean ± standard deviation over seeds (one value when there is one seed). Δ is the \
         difference from `base`; p-values are two-sided paired randomisation tests over the \
         benchmark's queries ({RESAMPLES} sign flips; per-query values averaged over seeds), \
         with one sign per cluster of dependent queries: a LAReQA question with its \
         translations into every language, a bitext pair in both directions (so XQuAD-R's \
         queries in 11 languages count as one piece of evidence per question); \"≤ 1.0e-4\" \
         means no resample was as extreme (the test's resolution); \"n.s.\" marks \
         p ≥ {ALPHA} (not significant). No correction for multiple comparisons is applied. \
         A bitext benchmark's Δ and p (and the answer's numbers) pool its queries over both \
         directions and every language, each query weighted equally (the table's \"P@1 pooled\" \
         column), beside each direction's means.\n"
    );
    let mut plots: Vec<(String, PathBuf)> = Vec::new();
    for g in groups.iter() {
        let base = results.cell(&g.name, BASE);
        let mse = results.cell(&g.name, MSE);
        let _ = writeln!(md, "### Group {}\n", g.name);
        let conditions: Vec<&str> = plan.conditions.iter().map(|c| c.name.as_str()).collect();
        for b in benches(g) {
            let m = b.measure();
            let _ = writeln!(
                md,
                "#### {} ({}, {})\n",
                b.name,
                b.role_label(),
                b.measure_label()
            );
            let rows: Vec<Vec<String>> = conditions
                .iter()
                .map(|&c| {
                    let cell = results.cell(&g.name, c);
                    let d = delta(cell.value(&b.name, m), base.value(&b.name, m));
                    let tb = (c != BASE)
                        .then(|| test(&cell, &base, &b.name, m, &format!("{c}-base")))
                        .flatten();
                    let tm = (c != BASE && c != MSE && has(MSE))
                        .then(|| test(&cell, &mse, &b.name, m, &format!("{c}-mse")))
                        .flatten();
                    let mut row = vec![c.to_string(), cell.runs.len().to_string()];
                    if b.lareqa {
                        row.push(cell.summary(&b.name, "map", None));
                    } else {
                        for (meas, dir) in [
                            ("P_1", "x→en"),
                            ("P_1", "en→x"),
                            ("recip_rank", "x→en"),
                            ("recip_rank", "en→x"),
                        ] {
                            row.push(cell.summary(&b.name, meas, Some(dir)));
                        }
                        row.push(cell.summary(&b.name, "P_1", None));
                    }
                    row.push(if c == BASE { "–".into() } else { signed(d) });
                    row.push(p_cell(tb));
                    row.push(p_cell(tm));
                    if b.lareqa {
                        let shares: Vec<f64> = cell
                            .runs
                            .iter()
                            .filter_map(|r| {
                                r.task(&b.name)
                                    .and_then(|t| t.own_language.as_ref())
                                    .map(|o| o.share)
                            })
                            .collect();
                        row.push(if shares.is_empty() {
                            "–".into()
                        } else {
                            format!("{:.3}", mean(&shares))
                        });
                    }
                    row
                })
                .collect();
            let mut headers = vec!["condition".to_string(), "runs".into()];
            if b.lareqa {
                headers.push("mAP".into());
            } else {
                headers.extend(
                    ["P@1 x→en", "P@1 en→x", "MRR x→en", "MRR en→x", "P@1 pooled"]
                        .iter()
                        .map(|s| s.to_string()),
                );
            }
            headers.push(format!("Δ {} vs base", b.measure_label()));
            headers.push("p vs base".into());
            headers.push("p vs mean-mse".into());
            if b.lareqa {
                let k = g
                    .sets
                    .iter()
                    .find(|s| s.info.benchmark == b.name)
                    .map_or(0, |s| s.tasks[0].candidate_languages().len());
                headers.push(format!("same-language share of top {k}"));
            }
            md.push_str(&markdown_table(&headers, &rows));
            md.push('\n');
            if !b.lareqa {
                per_language_table(&mut md, g, &b, &conditions, &results, &base);
            }
            if b.lareqa {
                let k = g
                    .sets
                    .iter()
                    .find(|s| s.info.benchmark == b.name)
                    .map_or(1, |s| s.tasks[0].candidate_languages().len().max(1));
                let _ = writeln!(
                    md,
                    "Same-language share: of each query's top {k} candidates, the share in the \
                     query's own language (LAReQA's same-language bias); with one relevant \
                     sentence per language a language-agnostic ranking would put about \
                     1/{k} = {:.3} there.\n",
                    1.0 / k as f64
                );
            }
        }

        // Robustness: out-of-domain gain / in-domain gain.
        let bs = benches(g);
        let in_domain: Vec<&Bench> = bs.iter().filter(|b| b.role == Role::InDomain).collect();
        let ood: Vec<&Bench> = bs.iter().filter(|b| b.role == Role::OutOfDomain).collect();
        if !in_domain.is_empty() && !ood.is_empty() {
            let _ = writeln!(
                md,
                "#### Robustness (out-of-domain gain over base ÷ in-domain gain)\n"
            );
            let mut headers = vec!["condition".to_string(), "in-domain Δ".into()];
            for o in &ood {
                headers.push(format!("{} Δ", o.name));
                headers.push(format!("{} ratio", o.name));
            }
            let rows: Vec<Vec<String>> = trained
                .iter()
                .map(|&c| {
                    let cell = results.cell(&g.name, c);
                    let gains: Vec<f64> = in_domain
                        .iter()
                        .filter_map(|b| {
                            delta(
                                cell.value(&b.name, b.measure()),
                                base.value(&b.name, b.measure()),
                            )
                        })
                        .collect();
                    let gin = (!gains.is_empty()).then(|| mean(&gains));
                    // A ratio needs a denominator that is there: every in-domain gain
                    // significant, and larger than twice the spread between seeds (a gain
                    // of the size of the seed noise makes any ratio).
                    let shown = in_domain.iter().all(|b| {
                        let m = b.measure();
                        let t = test(&cell, &base, &b.name, m, &format!("{c}-base"));
                        let (_, sd) = mean_std(&cell.seeds(&b.name, m, None));
                        let gain = delta(cell.value(&b.name, m), base.value(&b.name, m));
                        verdict(t) == Verdict::Better && gain.is_some_and(|g| g > 2.0 * sd)
                    });
                    let mut row = vec![c.to_string(), signed(gin)];
                    for o in &ood {
                        let go = delta(
                            cell.value(&o.name, o.measure()),
                            base.value(&o.name, o.measure()),
                        );
                        row.push(signed(go));
                        row.push(match (go, gin) {
                            (Some(a), Some(b)) if shown && b >= 1e-3 => format!("{:.2}", a / b),
                            (Some(_), Some(_)) => "n/a (in-domain gain not shown)".into(),
                            _ => "–".into(),
                        });
                    }
                    row
                })
                .collect();
            md.push_str(&markdown_table(&headers, &rows));
            let _ = writeln!(
                md,
                "\nThe in-domain Δ is the mean of the gains over the group's in-domain \
                 benchmarks. The ratio is given only where training helped in domain clearly: \
                 every in-domain gain significant (p < {ALPHA}), larger than twice the \
                 standard deviation between seeds, and at least 0.001; a smaller denominator \
                 would make any ratio. Near 1 the gain carries over out of domain, near 0 it \
                 does not, negative means training hurt out of domain while helping in domain. \
                 Gains in different measures (mAP, P@1) are compared as they are. The \
                 out-of-domain Δ are differences of means; whether they are significant is in \
                 the tables above.\n"
            );
        }

        // Plots of the group.
        let gname = slug(&g.name);
        let deltas_of = |c: &str, b: &Bench| -> Option<f64> {
            delta(
                results.cell(&g.name, c).value(&b.name, b.measure()),
                base.value(&b.name, b.measure()),
            )
        };
        let cats: Vec<String> = bs
            .iter()
            .map(|b| {
                format!(
                    "{} ({})",
                    b.name,
                    if b.role == Role::InDomain {
                        "in"
                    } else {
                        "out"
                    }
                )
            })
            .collect();
        let series: Vec<(String, Vec<f64>)> = trained
            .iter()
            .map(|&c| {
                (
                    c.to_string(),
                    bs.iter()
                        .map(|b| deltas_of(c, b).unwrap_or(f64::NAN))
                        .collect(),
                )
            })
            .collect();
        let p = plot_dir.join(format!("{gname}-gains.svg"));
        write_file(
            &p,
            &svg::delta_bar_chart(
                &format!("Group {}: gain over base (mAP or P@1)", g.name),
                "Δ vs base",
                &cats,
                &series,
            ),
        )?;
        plots.push((
            format!("Group {}: gains over base per benchmark", g.name),
            p,
        ));
        for b in bs.iter().filter(|b| b.lareqa) {
            // Per query language.
            let langs: Vec<String> = base
                .runs
                .first()
                .and_then(|r| r.task(&b.name))
                .map(|t| t.result.per_language.keys().cloned().collect())
                .unwrap_or_default();
            let per_lang = |c: &str, l: &str| -> Option<f64> {
                let runs = results.cell(&g.name, c).runs;
                let v: Vec<f64> = runs
                    .iter()
                    .filter_map(|r| {
                        r.task(&b.name)?
                            .result
                            .per_language
                            .get(l)?
                            .get("map")
                            .copied()
                    })
                    .collect();
                (!v.is_empty()).then(|| mean(&v))
            };
            let series: Vec<(String, Vec<f64>)> = trained
                .iter()
                .map(|&c| {
                    (
                        c.to_string(),
                        langs
                            .iter()
                            .map(|l| delta(per_lang(c, l), per_lang(BASE, l)).unwrap_or(f64::NAN))
                            .collect(),
                    )
                })
                .collect();
            let p = plot_dir.join(format!("{gname}-{}-per-language.svg", slug(&b.name)));
            write_file(
                &p,
                &svg::delta_bar_chart(
                    &format!(
                        "Group {}: {} mAP − base, per query language",
                        g.name, b.name
                    ),
                    "Δ mAP",
                    &langs,
                    &series,
                ),
            )?;
            plots.push((
                format!(
                    "Group {}: {} per-language mAP deltas vs base",
                    g.name, b.name
                ),
                p,
            ));
            // Language × language heatmap of deltas, per trained condition.
            let breakdown = |c: &str| -> Option<LanguageGrid> {
                let runs = results.cell(&g.name, c).runs;
                let bds: Vec<&crate::retrieval::evaluate::Breakdown> = runs
                    .iter()
                    .filter_map(|r| r.task(&b.name)?.result.breakdown.as_ref())
                    .collect();
                let first = bds.first()?;
                let map = first
                    .map
                    .iter()
                    .enumerate()
                    .map(|(i, row)| {
                        (0..row.len())
                            .map(|j| {
                                let v: Vec<f64> = bds
                                    .iter()
                                    .filter_map(|bd| bd.map.get(i)?.get(j).copied().flatten())
                                    .collect();
                                (!v.is_empty()).then(|| mean(&v))
                            })
                            .collect()
                    })
                    .collect();
                Some((
                    first.query_languages.clone(),
                    first.candidate_languages.clone(),
                    map,
                ))
            };
            if let Some((rows, cols, base_map)) = breakdown(BASE) {
                for &c in &trained {
                    let Some((r2, c2, m)) = breakdown(c) else {
                        continue;
                    };
                    if r2 != rows || c2 != cols {
                        continue;
                    }
                    let d: Vec<Vec<Option<f64>>> = m
                        .iter()
                        .zip(&base_map)
                        .map(|(a, b)| a.iter().zip(b).map(|(x, y)| Some((*x)? - (*y)?)).collect())
                        .collect();
                    let p =
                        plot_dir.join(format!("{gname}-{}-heatmap-{}.svg", slug(&b.name), slug(c)));
                    write_file(
                        &p,
                        &svg::delta_heatmap(
                            &format!("Group {}, {c}: {} mAP − base (×100)", g.name, b.name),
                            "query language",
                            "candidate language",
                            &rows,
                            &cols,
                            &d,
                        ),
                    )?;
                    plots.push((
                        format!(
                            "Group {}, {c}: {} query × candidate language mAP delta vs base",
                            g.name, b.name
                        ),
                        p,
                    ));
                }
            }
        }
        // Training curves (first seed of each trained condition).
        let curve = |key: &str, file: &str| -> Vec<(String, Vec<(f64, f64)>)> {
            trained
                .iter()
                .filter_map(|&c| {
                    let run = plan
                        .runs
                        .iter()
                        .find(|r| r.group == g.name && r.condition == c)?;
                    let pts = log_series(&run.dir.join(file), key);
                    (!pts.is_empty()).then(|| (c.to_string(), pts))
                })
                .collect()
        };
        for (key, file, title, ylabel, name) in [
            ("loss", "log.jsonl", "training loss", "loss", "loss"),
            (
                "p_at_1",
                "dev.jsonl",
                "dev P@1 (pairs held out of training)",
                "P@1",
                "dev",
            ),
        ] {
            let data = curve(key, file);
            if data.is_empty() {
                continue;
            }
            let series: Vec<Series<'_>> = data
                .iter()
                .map(|(l, pts)| Series {
                    label: l,
                    points: pts.clone(),
                })
                .collect();
            let p = plot_dir.join(format!("{gname}-training-{name}.svg"));
            write_file(
                &p,
                &line_chart(
                    &format!("Group {}: {title} (seed {})", g.name, plan.seeds[0]),
                    "step",
                    ylabel,
                    &series,
                ),
            )?;
            plots.push((format!("Group {}: {title}", g.name), p));
        }
    }

    // ---- plots -------------------------------------------------------------------------
    if !plots.is_empty() {
        let _ = writeln!(md, "## Plots\n");
        for (title, p) in &plots {
            let _ = writeln!(md, "**{title}**\n\n![{title}]({})\n", link(&report_dir, p));
        }
    }

    // ---- context -------------------------------------------------------------------------
    if !config.context.is_empty() {
        let _ = writeln!(
            md,
            "## Published figures (quoted context, not measured here)\n\nFrom the papers, for \
             orientation only: other models, data, pools and budgets, so not comparable number \
             for number with the tables above.\n"
        );
        let rows: Vec<Vec<String>> = config
            .context
            .iter()
            .map(|q| vec![q.source.clone(), q.setting.clone(), q.figure.clone()])
            .collect();
        md.push_str(&markdown_table(
            &["source".into(), "setting".into(), "figure (quoted)".into()],
            &rows,
        ));
    }
    write_file(path, &md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_difference_below_the_last_decimal_has_no_sign() {
        assert_eq!(signed(Some(-1e-17)), "+0.0000");
        assert_eq!(signed(Some(-0.0)), "+0.0000");
        assert_eq!(signed(Some(-0.00004)), "+0.0000");
        assert_eq!(signed(Some(-0.00006)), "-0.0001");
        assert_eq!(signed(Some(0.0123)), "+0.0123");
        assert_eq!(signed(Some(-0.0123)), "-0.0123");
        assert_eq!(signed(Some(f64::NAN)), "–");
        assert_eq!(signed(None), "–");
    }

    fn plan_with(study_distill: &str, ot_distill: &str) -> Plan {
        let toml = format!(
            r#"
name = "t"
question = "q?"
lareqa = ["xquad-r"]
[distill]
{study_distill}
[[condition]]
name = "base"
train = false
[[condition]]
name = "ot"
distill = {{ {ot_distill} }}
[[condition]]
name = "mean-mse"
distill = {{ loss = "mean-mse" }}
[[group]]
name = "A"
train = ["tatoeba-train:deu"]
in_domain = ["tatoeba-heldout:deu"]
[budget.quick]
seeds = [0]
conditions = ["base", "ot", "mean-mse"]
"#
        );
        crate::study::config::StudyConfig::from_toml(&toml)
            .unwrap()
            .plan("quick", None, std::path::Path::new("/tmp/s"))
            .unwrap()
    }

    #[test]
    fn the_setup_says_how_each_run_chose_its_student() {
        let last = selection_line(&plan_with("export = \"last\"", "loss = \"ot\"")).unwrap();
        assert!(
            last.contains("last step") && last.contains("selects nothing"),
            "{last}"
        );
        let best = selection_line(&plan_with("steps = 3", "loss = \"ot\"")).unwrap();
        assert!(
            best.contains("best dev P@1") && best.contains("step 0"),
            "{best}"
        );
        let mixed = selection_line(&plan_with(
            "export = \"last\"",
            "loss = \"ot\", export = \"best\"",
        ))
        .unwrap();
        assert!(mixed.contains("differs between runs"), "{mixed}");
    }

    fn row<'a>(
        condition: &'a str,
        base: f64,
        seeds: &[f64],
        significant_gain: bool,
    ) -> SeedSpread<'a> {
        SeedSpread {
            condition,
            bench: "xquad-r",
            base,
            seeds: seeds.to_vec(),
            significant_gain,
        }
    }

    #[test]
    fn partial_start_names_the_seeds_that_exported_their_starting_model() {
        let runs = [
            ("ot", vec![(0, Some(40)), (1, Some(0)), (2, Some(80))]),
            ("mean-mse", vec![(0, Some(0)), (1, Some(0)), (2, Some(0))]),
            (
                "ot+mean-mse",
                vec![(0, Some(0)), (1, Some(0)), (2, Some(120))],
            ),
            ("old", vec![(0, None), (1, Some(40))]),
        ];
        let note = partial_start_note("A", &runs).unwrap();
        assert!(
            note.contains("`ot` (seed 1 of 3), `ot+mean-mse` (seeds 0, 1 of 3)."),
            "{note}"
        );
        // Every seed at step 0 is the other caveat's; unknown steps are not counted.
        assert!(
            !note.contains("`mean-mse`") && !note.contains("old"),
            "{note}"
        );
        assert!(partial_start_note("A", &runs[1..2]).is_none());
    }

    #[test]
    fn seed_spread_names_significant_gains_within_twice_the_spread() {
        let rows = [
            // Gain 0.056, sd 0.049: listed.
            row("ot", 0.5455, &[0.6218, 0.5450, 0.6380], true),
            // Gain 0.03, sd 0.001: a gain the seeds agree on.
            row("ot+mean-mse", 0.5455, &[0.5755, 0.5765, 0.5760], true),
            // Within the spread but not a significant gain: the tables already say so.
            row("mean-mse", 0.5455, &[0.5400, 0.5600, 0.5500], false),
            // One seed: no spread to speak of.
            row("one-seed", 0.5455, &[0.6], true),
        ];
        let note = seed_spread_note("A", &rows).unwrap();
        let (m, sd) = mean_std(&[0.6218, 0.5450, 0.6380]);
        assert!(note.starts_with("In group A, "), "{note}");
        assert!(
            note.contains(&format!("ot on xquad-r ({:+.4} ± {sd:.4})", m - 0.5455)),
            "{note}"
        );
        assert!(note.contains("over 3 seeds"), "{note}");
        for absent in ["ot+mean-mse", "mean-mse on", "one-seed"] {
            assert!(!note.contains(absent), "{absent}: {note}");
        }
        assert!(seed_spread_note("A", &rows[1..]).is_none());
        assert!(seed_spread_note("A", &[]).is_none());
    }
}
