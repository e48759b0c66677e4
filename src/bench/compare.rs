//! `optical bench compare`: two benchmark runs side by side, for CI throughput tracking.
//!
//! A run is either what `optical bench --json` prints (one record per line, keyed by the
//! record's backend) or a results file of `scripts/gpu-check.sh` (`benches/results/*.json`:
//! records grouped under `"bench"` by variant, such as `cuda` or `cuda-fp32`, which is then
//! the key). Timings are matched by (variant, kernel); each comparison is the new median
//! time per call over the base one. A change counts when it leaves the band
//! `[base / (1 + t), base · (1 + t)]` for the threshold `t`, so "slower" and "faster" are
//! symmetric in ratio.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::io::json_kind;

/// One timed kernel of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Timing {
    /// The backend (`optical bench --json`) or the gpu-check variant (`cuda-fp32`, ...).
    pub variant: String,
    pub kernel: String,
    pub shape: String,
    /// Median wall seconds per call.
    pub wall: f64,
    /// Median device seconds per call, where the backend measured it.
    pub device: Option<f64>,
    /// Where the record sits in its file, for messages (`line 3`, `bench.cuda[2]`).
    pub origin: String,
    /// The processor and the GPU it ran on, where the record says (older records do not;
    /// a gpu-check report's GPU stands in for its GPU records').
    pub cpu: Option<String>,
    pub gpu: Option<String>,
    /// Mean iterations per pair of a solve that stops on its own (`sinkhorn-checks`).
    pub iterations: Option<f64>,
    /// The backend's kernel settings in effect (variable → choice), where the record says.
    pub settings: Option<BTreeMap<String, String>>,
    /// Whether the host phases were timed (`--phases`), where the record says (a record
    /// with `host_phases` had them on).
    pub phases: Option<bool>,
}

/// A path as displayed: one that is not UTF-8 cannot be a JSON string.
fn as_displayed<S: serde::Serializer>(path: &Path, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&path.display().to_string())
}

/// Every timing of one file.
#[derive(Clone, Debug)]
pub struct Run {
    pub path: PathBuf,
    pub timings: Vec<Timing>,
}

/// Which time per call to compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Device time where both runs have it, else wall time.
    Auto,
    Wall,
    Device,
    /// Wall time and, where both runs have it, device time.
    Both,
}

impl FromStr for Metric {
    type Err = Error;
    fn from_str(s: &str) -> Result<Metric> {
        match s {
            "auto" => Ok(Metric::Auto),
            "wall" => Ok(Metric::Wall),
            "device" => Ok(Metric::Device),
            "both" => Ok(Metric::Both),
            _ => Err(Error::parameter("metric", "auto, wall, device or both", s)),
        }
    }
}

/// How a timing moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Faster,
    Same,
    Slower,
}

/// One compared time.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub variant: String,
    pub kernel: String,
    /// `wall` or `device`.
    pub metric: &'static str,
    pub base_seconds: f64,
    pub new_seconds: f64,
    /// `new / base − 1`: +0.25 is 25 % slower.
    pub change: f64,
    pub verdict: Verdict,
}

/// The comparison of two runs.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    #[serde(serialize_with = "as_displayed")]
    pub base: PathBuf,
    #[serde(serialize_with = "as_displayed")]
    pub new: PathBuf,
    /// The threshold, as a fraction (0.1 for 10 %).
    pub threshold: f64,
    pub rows: Vec<Row>,
    /// `variant/kernel` timed only in the base run, or only in the new one.
    pub only_in_base: Vec<String>,
    pub only_in_new: Vec<String>,
    /// `variant/kernel` timed in both on different problems (not compared).
    pub shape_changed: Vec<String>,
    /// `variant/kernel` in both that lack the device time `--metric device` asked for.
    pub no_device_time: Vec<String>,
    /// Of those, the ones whose base run had a device time (the new run lost it).
    pub device_time_lost: Vec<String>,
    /// Processors or GPUs that differ between the runs' compared timings (`base → new`):
    /// then the timings measure the hardware as much as the code.
    pub machines_differ: Vec<String>,
    /// `variant/kernel (base → new)` of solves that stopped after a different mean number of
    /// iterations: their times follow the iterations as much as the code's speed.
    pub iterations_changed: Vec<String>,
    /// `variant/kernel: VARIABLE base → new` of kernel settings that differ between the
    /// runs (settings recorded in both): the timings measure another kernel variant.
    pub settings_differ: Vec<String>,
    /// `variant/kernel (off → on)` of timings taken with `--phases` in one run only: wall
    /// times then include the phases' bookkeeping (on CUDA, a wait before each download).
    pub phases_differ: Vec<String>,
}

impl Comparison {
    pub fn slower(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| r.verdict == Verdict::Slower)
    }

    /// The geometric mean of the time ratios, minus 1: one number for the whole run (a
    /// kernel 2× slower and another 2× faster average to 0). 0 when nothing was compared.
    pub fn geometric_mean_change(&self) -> f64 {
        if self.rows.is_empty() {
            return 0.0;
        }
        let mean_log =
            self.rows.iter().map(|r| (1.0 + r.change).ln()).sum::<f64>() / self.rows.len() as f64;
        mean_log.exp() - 1.0
    }
}

/// Read a run from a file (see the module documentation for the two formats).
pub fn read_run(path: &Path) -> Result<Run> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "read", e))?;
    parse_run(path, &text)
}

fn format_error(path: &Path, what: impl Into<String>) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

/// Parse a run: a gpu-check results object, or JSON lines of bench records.
pub fn parse_run(path: &Path, text: &str) -> Result<Run> {
    // A byte-order mark (files that went through Windows tools) is no part of the JSON.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut timings = Vec::new();
    // A gpu-check report is one object (pretty-printed or not) with a "bench" map; a
    // one-line `optical bench --json` file is one object too, but a record.
    let whole: std::result::Result<Value, _> = serde_json::from_str(text);
    if let Err(e) = &whole {
        // Neither one object nor lines of records: say where the JSON broke (a truncated
        // gpu-check file fails on its first line when read as lines, which says nothing).
        let first = text.lines().map(str::trim).find(|l| !l.is_empty());
        if first.is_some_and(|l| l.starts_with('{') && serde_json::from_str::<Value>(l).is_err()) {
            return Err(format_error(
                path,
                format!(
                    "expected a gpu-check results object or `optical bench --json` lines, \
                     found invalid JSON: {e}"
                ),
            ));
        }
    }
    match whole.ok() {
        Some(Value::Object(report)) if report.contains_key("bench") => {
            let Some(Value::Object(groups)) = report.get("bench") else {
                return Err(format_error(
                    path,
                    "\"bench\" must map each variant to a list of records (a gpu-check results file)",
                ));
            };
            let report_gpu = report.get("gpu").and_then(Value::as_str);
            for (variant, records) in groups {
                let Value::Array(records) = records else {
                    return Err(format_error(
                        path,
                        format!(
                            "bench.{variant}: expected a list of records, found {}",
                            json_kind(records)
                        ),
                    ));
                };
                for (i, record) in records.iter().enumerate() {
                    let origin = format!("bench.{variant}[{i}]");
                    let mut t = timing(path, record, Some(variant), origin)?;
                    let on_gpu = !matches!(
                        record.get("backend").and_then(Value::as_str),
                        Some("cpu" | "cpu-reference")
                    );
                    if t.gpu.is_none() && on_gpu {
                        t.gpu = report_gpu.map(str::to_string);
                    }
                    timings.push(t);
                }
            }
        }
        // One record, however it is laid out (a pretty-printed one fails as lines).
        Some(record @ Value::Object(_)) if record.get("kernel").is_some() => {
            // Named by its line when it is on one, as the lines below are.
            let mut lines = text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty());
            let origin = match (lines.next(), lines.next()) {
                (Some((i, _)), None) => format!("line {}", i + 1),
                _ => "the record".into(),
            };
            timings.push(timing(path, &record, None, origin)?);
        }
        Some(Value::Object(other)) => {
            let keys: Vec<&str> = other.keys().map(String::as_str).take(8).collect();
            return Err(format_error(
                path,
                format!(
                    "expected a gpu-check results object (with \"bench\") or `optical bench \
                     --json` records (with \"kernel\"), found an object with keys {}",
                    keys.join(", ")
                ),
            ));
        }
        _ => {
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                let origin = format!("line {}", i + 1);
                let record: Value = serde_json::from_str(line).map_err(|e| {
                    format_error(
                        path,
                        format!(
                            "{origin}: expected a JSON record as `optical bench --json` prints \
                             (one per line), found {:?} ({e})",
                            clip(line)
                        ),
                    )
                })?;
                timings.push(timing(path, &record, None, origin)?);
            }
        }
    }
    if timings.is_empty() {
        return Err(format_error(
            path,
            "no timings: expected the output of `optical bench --json` or a gpu-check results file",
        ));
    }
    let mut seen: BTreeMap<(&str, &str), &str> = BTreeMap::new();
    for t in &timings {
        if let Some(first) = seen.insert((&t.variant, &t.kernel), &t.origin) {
            return Err(format_error(
                path,
                format!(
                    "{first} and {} both time {} on {}: a file must hold one run \
                     (`optical bench --json > FILE`, not appended)",
                    t.origin, t.kernel, t.variant
                ),
            ));
        }
    }
    Ok(Run {
        path: path.to_path_buf(),
        timings,
    })
}

/// The first 60 characters of a line, for messages.
fn clip(s: &str) -> String {
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// One record: `kernel`, `backend` and `shape` strings, `seconds_per_call` a positive
/// finite number, `device_seconds_per_call` one too where present (null: absent).
fn timing(path: &Path, record: &Value, variant: Option<&str>, origin: String) -> Result<Timing> {
    let bad = |what: String| format_error(path, format!("{origin}: {what}"));
    let Value::Object(fields) = record else {
        return Err(bad(format!(
            "expected a bench record (an object), found {}",
            json_kind(record)
        )));
    };
    let text = |name: &str| -> Result<String> {
        match fields.get(name) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(v) => Err(bad(format!(
                "\"{name}\": expected a non-empty string, found {v}"
            ))),
            None => Err(bad(format!("missing \"{name}\" (not a bench record?)"))),
        }
    };
    let seconds = |name: &str, required: bool| -> Result<Option<f64>> {
        match fields.get(name) {
            None | Some(Value::Null) if !required => Ok(None),
            None => Err(bad(format!("missing \"{name}\" (not a bench record?)"))),
            Some(v) => match v.as_f64() {
                Some(s) if s.is_finite() && s > 0.0 => Ok(Some(s)),
                _ => Err(bad(format!("\"{name}\": expected seconds > 0, found {v}"))),
            },
        }
    };
    let kernel = text("kernel")?;
    let backend = text("backend")?;
    let mut shape = text("shape")?;
    let mut iterations = match fields.get("iterations_mean") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_f64() {
            Some(i) if i.is_finite() && i >= 0.0 => Some(i),
            _ => {
                return Err(bad(format!(
                    "\"iterations_mean\": expected a number >= 0, found {v}"
                )))
            }
        },
    };
    // Records written before `iterations_mean` put the measured count in the shape
    // (`… check_every=5 iterations=98.4 (mean)`): it is a result, not the problem.
    if let Some(head) = shape.strip_suffix(" (mean)") {
        if let Some((problem, count)) = head.rsplit_once(" iterations=") {
            if let Ok(i) = count.parse::<f64>() {
                iterations = iterations.or(Some(i));
                shape = problem.to_string();
            }
        }
    }
    let optional = |name: &str| -> Result<Option<String>> {
        match fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => text(name).map(Some),
        }
    };
    let cpu = optional("cpu")?;
    let gpu = optional("gpu")?;
    let settings = match fields.get("settings") {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => Some(
            map.iter()
                .map(|(k, v)| match v {
                    Value::String(v) => Ok((k.clone(), v.clone())),
                    v => Err(bad(format!(
                        "\"settings\".{k}: expected a string (the choice in effect), found {v}"
                    ))),
                })
                .collect::<Result<BTreeMap<_, _>>>()?,
        ),
        Some(v) => {
            return Err(bad(format!(
                "\"settings\": expected an object of kernel settings, found {}",
                json_kind(v)
            )))
        }
    };
    let phases = match fields.get("phases") {
        None | Some(Value::Null) => fields
            .get("host_phases")
            .and_then(Value::as_array)
            .filter(|p| !p.is_empty())
            .map(|_| true),
        Some(Value::Bool(on)) => Some(*on),
        Some(v) => {
            return Err(bad(format!(
                "\"phases\": expected true or false, found {v}"
            )))
        }
    };
    // `exp2-peak` records before the shape left out the machine's lanes were
    // `lanes=L chains=C steps=S`: the probe's rounds (S / 8) were those that reach the bench's
    // 2^30 exponentials on L lanes, so such a record timed the problem now named by that
    // work. (A shape whose rounds do not fit is left as it is: another problem.)
    if kernel == "exp2-peak" {
        let numbers: Option<Vec<u64>> = shape
            .split(' ')
            .zip(["lanes=", "chains=", "steps="])
            .map(|(part, key)| part.strip_prefix(key)?.parse().ok())
            .collect();
        if let (Some([lanes, chains, steps]), 3) = (numbers.as_deref(), shape.split(' ').count()) {
            let asked = crate::bench::EXP2_PEAK_EXPS;
            let per_round = usize::try_from(*lanes).ok().filter(|&l| {
                l <= u32::MAX as usize && *chains == crate::backend::peak::CHAINS as u64
            });
            let rounds =
                per_round.and_then(|l| crate::backend::peak::Exp2Peak::rounds_for(asked, l).ok());
            let step = crate::backend::peak::STEPS as u64;
            if rounds.is_some_and(|r| u64::from(r).checked_mul(step) == Some(*steps)) {
                shape = format!("exps={asked} chains={chains}");
            }
        }
    }

    let wall = seconds("seconds_per_call", true)?.expect("required");
    let device = seconds("device_seconds_per_call", false)?;
    Ok(Timing {
        variant: variant.map_or(backend, str::to_string),
        kernel,
        shape,
        wall,
        device,
        origin,
        cpu,
        gpu,
        iterations,
        settings,
        phases,
    })
}

/// Compare `new` against `base`. `threshold` is a fraction (0.1: 10 %), finite and ≥ 0.
/// Fails when nothing could be compared (no kernel in both, or none with the metric asked
/// for), since that is almost always the wrong pair of files.
pub fn compare<'a>(
    base: &'a Run,
    new: &'a Run,
    metric: Metric,
    threshold: f64,
) -> Result<Comparison> {
    if !(threshold.is_finite() && threshold >= 0.0) {
        return Err(Error::parameter(
            "max_slowdown",
            "a finite percentage >= 0",
            threshold * 100.0,
        ));
    }
    // -0 is 0 (and prints as 0).
    let threshold = threshold + 0.0;
    let key = |t: &Timing| format!("{}/{}", t.variant, t.kernel);
    let find = |run: &'a Run, t: &Timing| -> Option<&'a Timing> {
        run.timings
            .iter()
            .find(|u| u.variant == t.variant && u.kernel == t.kernel)
    };
    let mut out = Comparison {
        base: base.path.clone(),
        new: new.path.clone(),
        threshold,
        rows: vec![],
        only_in_base: vec![],
        only_in_new: new
            .timings
            .iter()
            .filter(|t| find(base, t).is_none())
            .map(key)
            .collect(),
        shape_changed: vec![],
        no_device_time: vec![],
        device_time_lost: vec![],
        machines_differ: vec![],
        iterations_changed: vec![],
        settings_differ: vec![],
        phases_differ: vec![],
    };
    for b in &base.timings {
        let Some(n) = find(new, b) else {
            out.only_in_base.push(key(b));
            continue;
        };
        if b.shape != n.shape {
            out.shape_changed
                .push(format!("{} ({} → {})", key(b), b.shape, n.shape));
            continue;
        }
        for (what, x, y) in [("processor", &b.cpu, &n.cpu), ("GPU", &b.gpu, &n.gpu)] {
            if let (Some(x), Some(y)) = (x, y) {
                let note = format!("{what}: {x} → {y}");
                if x != y && !out.machines_differ.contains(&note) {
                    out.machines_differ.push(note);
                }
            }
        }
        if let (Some(x), Some(y)) = (&b.settings, &n.settings) {
            for (variable, old) in x {
                match y.get(variable) {
                    Some(new) if new != old => out
                        .settings_differ
                        .push(format!("{}: {variable} {old} → {new}", key(b))),
                    _ => {}
                }
            }
        }
        if let (Some(x), Some(y)) = (b.phases, n.phases) {
            if x != y {
                let word = |on: bool| if on { "on" } else { "off" };
                out.phases_differ
                    .push(format!("{} ({} → {})", key(b), word(x), word(y)));
            }
        }
        if let (Some(x), Some(y)) = (b.iterations, n.iterations) {
            if x != y {
                out.iterations_changed
                    .push(format!("{} ({x:.1} → {y:.1})", key(b)));
            }
        }
        let device = b.device.zip(n.device);
        let mut pairs: Vec<(&'static str, (f64, f64))> = Vec::new();
        match metric {
            Metric::Wall => pairs.push(("wall", (b.wall, n.wall))),
            Metric::Device => match device {
                Some(d) => pairs.push(("device", d)),
                None => {
                    if b.device.is_some() {
                        out.device_time_lost.push(key(b));
                    }
                    out.no_device_time.push(key(b))
                }
            },
            Metric::Auto => pairs.push(match device {
                Some(d) => ("device", d),
                None => ("wall", (b.wall, n.wall)),
            }),
            Metric::Both => {
                pairs.push(("wall", (b.wall, n.wall)));
                if let Some(d) = device {
                    pairs.push(("device", d));
                }
            }
        }
        for (name, (bs, ns)) in pairs {
            let ratio = ns / bs;
            // A ratio within rounding of the band's edge is at it, not beyond: 0.031201959
            // over 0.020801306 (1.5000000000000002) is no more than 50 % slower.
            let edge = (1.0 + threshold) * (1.0 + 1e-12);
            let verdict = if ratio > edge {
                Verdict::Slower
            } else if ratio * edge < 1.0 {
                Verdict::Faster
            } else {
                Verdict::Same
            };
            out.rows.push(Row {
                variant: b.variant.clone(),
                kernel: b.kernel.clone(),
                metric: name,
                base_seconds: bs,
                new_seconds: ns,
                change: ratio - 1.0,
                verdict,
            });
        }
    }
    if out.rows.is_empty() {
        let why = if !out.no_device_time.is_empty() {
            format!(
                "no kernel has a device time in both runs ({} lack one; device times come \
                 from the cuda and wgpu backends): use --metric wall",
                out.no_device_time.join(", ")
            )
        } else if !out.shape_changed.is_empty() {
            format!(
                "every kernel in both runs was timed on a different problem: {}",
                out.shape_changed.join(", ")
            )
        } else {
            let list = |run: &Run| run.timings.iter().map(key).collect::<Vec<_>>().join(", ");
            format!(
                "no kernel is timed in both runs (base: {}; new: {}); timings match by \
                 backend, or gpu-check variant, and kernel",
                list(base),
                list(new)
            )
        };
        return Err(Error::value(
            format!(
                "comparing {} with {}",
                base.path.display(),
                new.path.display()
            ),
            why,
        ));
    }
    Ok(out)
}

/// Seconds in the unit that keeps 3–4 significant digits readable.
fn human(s: f64) -> String {
    if s < 1e-3 {
        format!("{:.1} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.3} ms", s * 1e3)
    } else {
        format!("{s:.3} s")
    }
}

/// The comparison as a table, then what was not compared and a one-line summary.
pub fn render(c: &Comparison) -> String {
    let mut s = String::new();
    // The band is symmetric in the ratio: slower beyond 1 + t, faster below 1 / (1 + t).
    let _ = writeln!(
        s,
        "base {}, new {}; median time per call; slower beyond +{:.1} %, faster beyond \
         −{:.1} %",
        c.base.display(),
        c.new.display(),
        c.threshold * 100.0,
        (1.0 - 1.0 / (1.0 + c.threshold)) * 100.0
    );
    let vw = c
        .rows
        .iter()
        .map(|r| r.variant.len())
        .max()
        .unwrap_or(0)
        .max(7);
    let kw = c
        .rows
        .iter()
        .map(|r| r.kernel.len())
        .max()
        .unwrap_or(0)
        .max(6);
    let _ = writeln!(
        s,
        "{:<vw$}  {:<kw$}  {:<6}  {:>12}  {:>12}  {:>9}  verdict",
        "variant", "kernel", "metric", "base", "new", "change"
    );
    for r in &c.rows {
        let _ = writeln!(
            s,
            "{:<vw$}  {:<kw$}  {:<6}  {:>12}  {:>12}  {:>+8.1}%  {}",
            r.variant,
            r.kernel,
            r.metric,
            human(r.base_seconds),
            human(r.new_seconds),
            r.change * 100.0,
            match r.verdict {
                Verdict::Faster => "faster",
                Verdict::Same => "same",
                Verdict::Slower => "SLOWER",
            }
        );
    }
    for (label, list) in [
        ("only in the base run", &c.only_in_base),
        ("only in the new run", &c.only_in_new),
        ("not compared, the problem changed", &c.shape_changed),
        ("not compared, no device time in both", &c.no_device_time),
        (
            "different hardware, so these changes are not the code's alone",
            &c.machines_differ,
        ),
        (
            "the solve stopped after a different mean number of iterations, so the time \
             follows it",
            &c.iterations_changed,
        ),
        (
            "different kernel settings, so these changes are not the code's alone",
            &c.settings_differ,
        ),
        (
            "host phases timed (--phases) in one run only, which changes wall times",
            &c.phases_differ,
        ),
    ] {
        if !list.is_empty() {
            let _ = writeln!(s, "{label}: {}", list.join(", "));
        }
    }
    let count = |v: Verdict| c.rows.iter().filter(|r| r.verdict == v).count();
    let _ = writeln!(
        s,
        "{} compared: {} slower, {} faster, {} the same; geometric mean of the changes {:+.1} %",
        c.rows.len(),
        count(Verdict::Slower),
        count(Verdict::Faster),
        count(Verdict::Same),
        c.geometric_mean_change() * 100.0
    );
    s
}

/// The error that fails a CI job when a timing is slower than the threshold allows.
pub fn regression_error(c: &Comparison) -> Option<Error> {
    let slower: Vec<String> = c
        .slower()
        .map(|r| {
            format!(
                "{}/{} {} {:+.1} %",
                r.variant,
                r.kernel,
                r.metric,
                r.change * 100.0
            )
        })
        .collect();
    if slower.is_empty() {
        return None;
    }
    Some(Error::Slower {
        what: format!(
            "{} of {} timings are more than {:.1} % slower than the base: {}",
            slower.len(),
            c.rows.len(),
            c.threshold * 100.0,
            slower.join(", ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> Result<Run> {
        parse_run(Path::new("run.json"), text)
    }

    fn line(kernel: &str, backend: &str, wall: f64, device: Option<f64>) -> String {
        let mut v = serde_json::json!({
            "kernel": kernel, "backend": backend, "shape": "b=1", "seconds_per_call": wall,
            "calls": 3, "gexp_per_s": 1.0,
        });
        if let Some(d) = device {
            v["device_seconds_per_call"] = d.into();
        }
        v.to_string()
    }

    #[test]
    fn reads_json_lines_and_gpu_check_reports() {
        let lines = format!(
            "{}\n\n{}\n",
            line("sinkhorn", "cpu", 0.1, None),
            line("maxsim", "cuda", 0.2, Some(0.01))
        );
        let r = run(&lines).unwrap();
        assert_eq!(r.timings.len(), 2);
        assert_eq!(r.timings[1].variant, "cuda");
        assert_eq!(r.timings[1].device, Some(0.01));
        assert_eq!(r.timings[1].origin, "line 3");

        // One record alone is one object too, but not a report; pretty-printed too.
        assert_eq!(
            run(&line("sinkhorn", "cpu", 0.1, None))
                .unwrap()
                .timings
                .len(),
            1
        );
        let v: Value = serde_json::from_str(&line("sinkhorn", "cpu", 0.1, None)).unwrap();
        let pretty = run(&serde_json::to_string_pretty(&v).unwrap()).unwrap();
        assert_eq!(pretty.timings.len(), 1);
        assert_eq!(pretty.timings[0].origin, "the record");
        // An object that is neither says so, with its keys.
        let e = run("{\n  \"gpu\": \"x\"\n}").unwrap_err().to_string();
        assert!(e.contains("found an object with keys gpu"), "{e}");

        let report = format!(
            "{{\"gpu\": \"x\", \"bench\": {{\"cuda\": [{}], \"cuda-fp32\": [{}]}}}}",
            line("maxsim", "cuda", 0.2, Some(0.01)),
            line("maxsim", "cuda", 0.3, None)
        );
        let r = run(&report).unwrap();
        let variants: Vec<&str> = r.timings.iter().map(|t| t.variant.as_str()).collect();
        assert_eq!(variants, ["cuda", "cuda-fp32"]);
        assert_eq!(r.timings[1].origin, "bench.cuda-fp32[0]");
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let two = format!(
            "{}\n{}",
            line("x", "cpu", 1.0, None),
            line("x", "cpu", 2.0, None)
        );
        let cases: Vec<(String, &str)> = vec![
            ("".into(), "no timings"),
            ("cosine-cost   cpu   0.006 s/call".into(), "line 1: expected a JSON record"),
            ("[1, 2]".into(), "line 1: expected a bench record (an object), found a list"),
            (
                r#"{"kernel": "x", "backend": "cpu", "seconds_per_call": 1}"#.into(),
                "line 1: missing \"shape\"",
            ),
            (
                line("x", "cpu", 0.0, None),
                "\"seconds_per_call\": expected seconds > 0, found 0.0",
            ),
            (
                r#"{"kernel": "x", "backend": "cpu", "shape": "s", "seconds_per_call": 1, "device_seconds_per_call": -2}"#.into(),
                "\"device_seconds_per_call\": expected seconds > 0, found -2",
            ),
            (
                r#"{"kernel": "", "backend": "cpu", "shape": "s", "seconds_per_call": 1}"#.into(),
                "\"kernel\": expected a non-empty string",
            ),
            (two, "line 1 and line 2 both time x on cpu"),
            (r#"{"bench": [1]}"#.into(), "\"bench\" must map each variant"),
            (
                r#"{"bench": {"cuda": 3}}"#.into(),
                "bench.cuda: expected a list of records, found a number",
            ),
            (r#"{"bench": {}}"#.into(), "no timings"),
            // A gpu-check file cut short: where the JSON broke, not "line 1: ... found {".
            (
                "{\n  \"bench\": {\n    \"cuda\": [".into(),
                "found invalid JSON: EOF while parsing a list at line 3",
            ),
        ];
        for (text, want) in cases {
            let e = run(&text).unwrap_err().to_string();
            assert!(e.starts_with("run.json: "), "{e}");
            assert!(e.contains(want), "{text:?}: {e}");
        }
        // A missing file names itself.
        let e = read_run(Path::new("/nonexistent/base.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/base.json"), "{e}");
    }

    #[test]
    fn verdicts_are_symmetric_in_ratio() {
        let base = run(&[
            line("a", "cpu", 1.0, None),
            line("b", "cpu", 1.0, None),
            line("c", "cpu", 1.0, None),
            line("d", "cpu", 1.0, None),
            line("gone", "cpu", 1.0, None),
        ]
        .join("\n"))
        .unwrap();
        let new = run(&[
            line("a", "cpu", 1.11, None),
            line("b", "cpu", 1.09, None),
            line("c", "cpu", 1.0 / 1.11, None),
            line("d", "cpu", 1.0 / 1.09, None),
            line("added", "cpu", 1.0, None),
        ]
        .join("\n"))
        .unwrap();
        let c = compare(&base, &new, Metric::Auto, 0.1).unwrap();
        let v: Vec<(&str, Verdict)> = c
            .rows
            .iter()
            .map(|r| (r.kernel.as_str(), r.verdict))
            .collect();
        assert_eq!(
            v,
            [
                ("a", Verdict::Slower),
                ("b", Verdict::Same),
                ("c", Verdict::Faster),
                ("d", Verdict::Same)
            ]
        );
        // 1.11 · 1.09 / 1.11 / 1.09 = 1.
        assert!(c.geometric_mean_change().abs() < 1e-12);
        assert_eq!(c.only_in_base, ["cpu/gone"]);
        assert_eq!(c.only_in_new, ["cpu/added"]);
        let e = regression_error(&c).unwrap().to_string();
        assert!(
            e.contains("1 of 4 timings are more than 10.0 % slower"),
            "{e}"
        );
        assert!(e.contains("cpu/a wall +11.0 %"), "{e}");
        assert!(!e.is_empty() && !Error::Slower { what: e.clone() }.is_user_error());
        // A run against itself: all the same, no error.
        let c = compare(&base, &base, Metric::Both, 0.0).unwrap();
        assert!(c
            .rows
            .iter()
            .all(|r| r.verdict == Verdict::Same && r.change == 0.0));
        assert!(regression_error(&c).is_none());
        let text = render(&c);
        assert!(
            text.contains(
                "5 compared: 0 slower, 0 faster, 5 the same; geometric mean of the changes +0.0 %"
            ),
            "{text}"
        );
    }

    #[test]
    fn metrics_pick_device_or_wall_time() {
        let base = run(&[
            line("k", "cuda", 1.0, Some(0.1)),
            line("w", "cpu", 1.0, None),
        ]
        .join("\n"))
        .unwrap();
        // Wall time doubles, device time halves.
        let new = run(&[
            line("k", "cuda", 2.0, Some(0.05)),
            line("w", "cpu", 2.0, None),
        ]
        .join("\n"))
        .unwrap();
        let metric_rows = |m: Metric| -> Vec<(String, &'static str, Verdict)> {
            compare(&base, &new, m, 0.1)
                .unwrap()
                .rows
                .into_iter()
                .map(|r| (r.kernel, r.metric, r.verdict))
                .collect()
        };
        let row = |k: &str, m: &'static str, v: Verdict| (k.to_string(), m, v);
        assert_eq!(
            metric_rows(Metric::Auto),
            [
                row("k", "device", Verdict::Faster),
                row("w", "wall", Verdict::Slower)
            ]
        );
        assert_eq!(
            metric_rows(Metric::Wall),
            [
                row("k", "wall", Verdict::Slower),
                row("w", "wall", Verdict::Slower)
            ]
        );
        assert_eq!(
            metric_rows(Metric::Both),
            [
                row("k", "wall", Verdict::Slower),
                row("k", "device", Verdict::Faster),
                row("w", "wall", Verdict::Slower)
            ]
        );
        let c = compare(&base, &new, Metric::Device, 0.1).unwrap();
        assert_eq!(c.rows.len(), 1);
        assert_eq!(c.no_device_time, ["cpu/w"]);
        assert!(c.device_time_lost.is_empty(), "neither run had it");
        // A device time the base had and the new run lacks is lost (--require-all fails).
        let base = run(&[
            line("k", "cuda", 1.0, Some(0.1)),
            line("x", "cuda", 1.0, Some(0.1)),
        ]
        .join("\n"))
        .unwrap();
        let lost = run(&[
            line("k", "cuda", 2.0, None),
            line("x", "cuda", 1.0, Some(0.1)),
        ]
        .join("\n"))
        .unwrap();
        let c = compare(&base, &lost, Metric::Device, 0.1).unwrap();
        assert_eq!(c.device_time_lost, ["cuda/k"]);
        assert_eq!(c.rows.len(), 1);
    }

    #[test]
    fn a_solves_measured_iterations_are_a_note_not_a_new_problem() {
        let checks = |wall: f64, iterations: &str| {
            serde_json::json!({
                "kernel": "sinkhorn-checks", "backend": "cpu", "seconds_per_call": wall,
                "shape": format!("b=16 n=32 m=32 d=384 eps=0.005 threshold=1e-3 check_every=5{iterations}"),
            })
        };
        // A record from before `iterations_mean` (the count in the shape) against a new one.
        let old = run(&checks(1.0, " iterations=98.4 (mean)").to_string()).unwrap();
        let mut v = checks(5.0, "");
        v["iterations_mean"] = 500.0.into();
        let slower = run(&v.to_string()).unwrap();
        assert_eq!(old.timings[0].shape, slower.timings[0].shape);
        assert_eq!(old.timings[0].iterations, Some(98.4));
        let c = compare(&old, &slower, Metric::Auto, 0.1).unwrap();
        assert!(c.shape_changed.is_empty(), "{:?}", c.shape_changed);
        assert_eq!(c.slower().count(), 1);
        assert_eq!(c.iterations_changed, ["cpu/sinkhorn-checks (98.4 → 500.0)"]);
        assert!(render(&c).contains(
            "the solve stopped after a different mean number of iterations, so the time follows \
             it: cpu/sinkhorn-checks (98.4 → 500.0)"
        ));
        assert!(compare(&old, &old, Metric::Auto, 0.1)
            .unwrap()
            .iterations_changed
            .is_empty());
        v["iterations_mean"] = "many".into();
        let err = run(&v.to_string()).unwrap_err().to_string();
        assert!(
            err.contains("\"iterations_mean\": expected a number >= 0, found \"many\""),
            "{err}"
        );
    }

    #[test]
    fn the_header_states_both_limits_of_the_band() {
        let a = run(&line("k", "cpu", 1.0, None)).unwrap();
        let text = render(&compare(&a, &a, Metric::Auto, 0.1).unwrap());
        assert!(
            text.contains("slower beyond +10.0 %, faster beyond −9.1 %"),
            "{text}"
        );
        let text = render(&compare(&a, &a, Metric::Auto, -0.0).unwrap());
        assert!(
            text.contains("slower beyond +0.0 %, faster beyond −0.0 %"),
            "{text}"
        );
    }

    #[test]
    fn different_hardware_is_named() {
        let with = |cpu: &str, gpu: Option<&str>| {
            let mut v: Value = serde_json::from_str(&line("k", "cuda", 1.0, Some(0.1))).unwrap();
            v["cpu"] = cpu.into();
            if let Some(g) = gpu {
                v["gpu"] = g.into();
            }
            run(&v.to_string()).unwrap()
        };
        let a = with("EPYC, 16 threads", Some("NVIDIA H200"));
        let b = with("EPYC, 16 threads", Some("NVIDIA H100 80GB HBM3"));
        let c = compare(&a, &b, Metric::Auto, 0.1).unwrap();
        assert_eq!(
            c.machines_differ,
            ["GPU: NVIDIA H200 → NVIDIA H100 80GB HBM3"]
        );
        assert!(render(&c).contains("different hardware, so these changes are not the code's alone: GPU: NVIDIA H200 → NVIDIA H100"));
        assert!(compare(&a, &a, Metric::Auto, 0.1)
            .unwrap()
            .machines_differ
            .is_empty());
        // Records without hardware (older runs) say nothing either way.
        let old = run(&line("k", "cuda", 1.0, Some(0.1))).unwrap();
        assert!(compare(&old, &b, Metric::Auto, 0.1)
            .unwrap()
            .machines_differ
            .is_empty());
        // A gpu-check report's GPU stands in for its GPU records', not its CPU records'.
        let report = format!(
            "{{\"gpu\": \"NVIDIA H200\", \"bench\": {{\"cuda\": [{}], \"cpu\": [{}]}}}}",
            line("k", "cuda", 1.0, None),
            line("k", "cpu", 1.0, None)
        );
        let r = run(&report).unwrap();
        let gpus: Vec<Option<&str>> = r.timings.iter().map(|t| t.gpu.as_deref()).collect();
        assert_eq!(gpus, [None, Some("NVIDIA H200")]);
        let bad = line("k", "cpu", 1.0, None).replace("\"calls\"", "\"cpu\": 3, \"calls\"");
        assert!(run(&bad)
            .unwrap_err()
            .to_string()
            .contains("\"cpu\": expected a non-empty string"));
    }

    #[test]
    fn other_settings_and_phases_are_named() {
        let with = |setting: &str, phases: Option<bool>, host_phases: bool| {
            let mut v: Value = serde_json::from_str(&line("k", "cpu", 1.0, None)).unwrap();
            v["settings"] = serde_json::json!({ "OPTICAL_CPU_SINKHORN": setting });
            if let Some(p) = phases {
                v["phases"] = p.into();
            }
            if host_phases {
                v["host_phases"] = serde_json::json!([{"phase": "solve", "seconds_per_call": 0.5}]);
            }
            run(&v.to_string()).unwrap()
        };
        let (fast, log) = (
            with("fast", Some(false), false),
            with("log", Some(true), true),
        );
        let c = compare(&fast, &log, Metric::Auto, 0.1).unwrap();
        assert_eq!(
            c.settings_differ,
            ["cpu/k: OPTICAL_CPU_SINKHORN fast → log"]
        );
        assert_eq!(c.phases_differ, ["cpu/k (off → on)"]);
        let text = render(&c);
        assert!(text.contains("different kernel settings, so these changes are not the code's alone: cpu/k: OPTICAL_CPU_SINKHORN fast → log"), "{text}");
        assert!(
            text.contains("host phases timed (--phases) in one run only"),
            "{text}"
        );
        let same = compare(&fast, &fast, Metric::Auto, 0.1).unwrap();
        assert!(same.settings_differ.is_empty() && same.phases_differ.is_empty());
        // Older records: host phases mean --phases was on; without them nothing is known.
        let old = with("fast", None, true);
        assert_eq!(old.timings[0].phases, Some(true));
        let plain = run(&line("k", "cpu", 1.0, None)).unwrap();
        assert_eq!(plain.timings[0].phases, None);
        assert!(compare(&plain, &log, Metric::Auto, 0.1)
            .unwrap()
            .phases_differ
            .is_empty());
        let bad =
            line("k", "cpu", 1.0, None).replace("\"calls\"", "\"settings\": {\"A\": 1}, \"calls\"");
        let err = run(&bad).unwrap_err().to_string();
        assert!(err.contains("\"settings\".A: expected a string"), "{err}");
    }

    #[test]
    fn a_timing_at_the_limit_is_not_beyond_it_and_a_bom_is_ignored() {
        let a = run(&line("k", "cpu", 0.020801306, None)).unwrap();
        // 1.5000000000000002 times the base in f64: exactly 50 % slower, not more.
        let b = run(&format!("\u{feff}{}", line("k", "cpu", 0.031201959, None))).unwrap();
        let c = compare(&a, &b, Metric::Auto, 0.5).unwrap();
        assert_eq!(c.rows[0].verdict, Verdict::Same);
        assert!(regression_error(&c).is_none());
        let c = compare(&a, &b, Metric::Auto, 0.499).unwrap();
        assert_eq!(c.rows[0].verdict, Verdict::Slower);
        let c = compare(&b, &a, Metric::Auto, 0.5).unwrap();
        assert_eq!(c.rows[0].verdict, Verdict::Same);
    }

    #[test]
    fn exp2_peak_records_of_any_machine_time_one_problem() {
        let probe = |shape: &str| {
            let mut v: Value = serde_json::from_str(&line("exp2-peak", "cpu", 1.0, None)).unwrap();
            v["shape"] = shape.into();
            run(&v.to_string()).unwrap()
        };
        let old16 = probe("lanes=16 chains=8 steps=8388608");
        let old8 = probe("lanes=8 chains=8 steps=16777216");
        let new = probe("exps=1073741824 chains=8");
        assert_eq!(old16.timings[0].shape, "exps=1073741824 chains=8");
        assert_eq!(old8.timings[0].shape, new.timings[0].shape);
        assert_eq!(
            compare(&old16, &old8, Metric::Auto, 0.1)
                .unwrap()
                .rows
                .len(),
            1
        );
        // Lanes that do not divide the work: the rounds were rounded up (wgpu on an H200:
        // 1,081,344 lanes, 16 rounds; 48 CPU lanes, 349,526 rounds).
        for old in [
            "lanes=1081344 chains=8 steps=128",
            "lanes=48 chains=8 steps=2796208",
        ] {
            assert_eq!(
                probe(old).timings[0].shape,
                "exps=1073741824 chains=8",
                "{old}"
            );
        }
        // Other rounds, or hostile numbers, are another problem, left as they are.
        for other in [
            "lanes=1081344 chains=8 steps=136",
            "lanes=18446744073709551615 chains=8 steps=8",
            "lanes=16 chains=7 steps=8388608",
        ] {
            assert_eq!(probe(other).timings[0].shape, other);
        }
    }

    #[test]
    fn nothing_to_compare_is_an_error_that_says_why() {
        let cpu = run(&line("k", "cpu", 1.0, None)).unwrap();
        let cuda = run(&line("k", "cuda", 1.0, None)).unwrap();
        let e = compare(&cpu, &cuda, Metric::Auto, 0.1)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no kernel is timed in both runs (base: cpu/k; new: cuda/k)"),
            "{e}"
        );
        let e = compare(&cpu, &cpu, Metric::Device, 0.1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("use --metric wall"), "{e}");
        let other = run(&line("k", "cpu", 1.0, None).replace("b=1", "b=2")).unwrap();
        let e = compare(&cpu, &other, Metric::Auto, 0.1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cpu/k (b=1 → b=2)"), "{e}");
        for t in [-0.1, f64::NAN, f64::INFINITY] {
            let e = compare(&cpu, &cpu, Metric::Auto, t)
                .unwrap_err()
                .to_string();
            assert!(e.contains("max_slowdown"), "{e}");
        }
        assert!("fast"
            .parse::<Metric>()
            .unwrap_err()
            .to_string()
            .contains("auto, wall, device or both"));
    }
}
