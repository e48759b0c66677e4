//! The study configuration (one TOML file, e.g. `studies/ood-robustness.toml`) and the grid
//! of runs it describes for one budget.
//!
//! The file names the conditions (a name and the distillation keys it changes, or
//! `train = false` for the untrained model; a condition named `base`, untrained, is in
//! every budget: the report measures every gain against it), the groups (training bitext, in-domain and
//! out-of-domain evaluation sets), the LAReQA benchmarks every model is evaluated on, and
//! one section per budget (`[budget.quick]`, `[budget.full]`: seeds, the conditions that
//! budget runs, distillation keys such as `steps` and `batch_size`, and the evaluation
//! slices). A run's distillation settings are, in order of precedence: the condition's
//! keys, the budget's, the study's `[distill]` table, [`DistillConfig`]'s defaults.
//!
//! Each run is keyed by a hash of everything that determines its result (the resolved
//! distillation settings, the group's data specs, the split, the evaluation slices, the
//! seed); its directory is `<condition>-<group>-s<seed>-<key>`, so changing any setting
//! makes a new run instead of silently reusing an old one.
//!
//! Data specs. Training (`train`): `tatoeba-train:<code>` (the training part of the
//! group's Tatoeba split, see [`super::split`]), and what `optical distill` reads as is:
//! `mafand:<code>`, `bible:<code>`, `files:<code>:<file>:<English file>`. Evaluation
//! (`in_domain`, `out_of_domain`): `tatoeba-heldout:<code>` (the held-out part of the
//! split), `tatoeba:<code>` (the whole Tatoeba file), `mafand-test:<code>`,
//! `mafand-dev:<code>`, `bible:<code>`, and `files:<set>:<code>:<file>:<English file>`
//! (explicit line-aligned files; `<set>` names the benchmark). Every evaluation set gives
//! two tasks, x→en and en→x.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::bitext;
use crate::distill::DistillConfig;
use crate::error::{Error, Result};
use crate::retrieval::encoder::TextRole;

/// What of a trained run stays once its result is written (the study file's `keep_models`:
/// `false`, `true` or `"student"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeepModels {
    /// Nothing (`false`).
    #[default]
    Nothing,
    /// The exported student, not the checkpoints (`"student"`).
    Student,
    /// The checkpoints and the exported student (`true`).
    All,
}

impl KeepModels {
    /// Whether the run's exported student stays.
    pub fn student(self) -> bool {
        self != KeepModels::Nothing
    }

    /// Whether the run's checkpoints stay.
    pub fn checkpoints(self) -> bool {
        self == KeepModels::All
    }
}

impl<'de> Deserialize<'de> for KeepModels {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Flag(bool),
            Word(String),
        }
        let bad = |found: String| {
            serde::de::Error::custom(format!(
                "keep_models: expected true, false or \"student\", found {found}"
            ))
        };
        match Raw::deserialize(d).map_err(|e| bad(e.to_string()))? {
            Raw::Flag(true) => Ok(KeepModels::All),
            Raw::Flag(false) => Ok(KeepModels::Nothing),
            Raw::Word(w) if w == "student" => Ok(KeepModels::Student),
            Raw::Word(w) => Err(bad(format!("{w:?}"))),
        }
    }
}

impl Serialize for KeepModels {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            KeepModels::Nothing => s.serialize_bool(false),
            KeepModels::Student => s.serialize_str("student"),
            KeepModels::All => s.serialize_bool(true),
        }
    }
}

/// The whole study file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StudyConfig {
    /// Short name (report title).
    pub name: String,
    /// The question the study answers (first line of the report).
    pub question: String,
    /// Data directory (default: `$OPTICAL_DATA_DIR`, else `../shared/data`).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// The English Bible for verse alignment (default: the set-up step's copy).
    #[serde(default)]
    pub english_bible: Option<PathBuf>,
    /// What of a trained run stays once its result is written: `false` (nothing), `true`
    /// (its checkpoints and exported student) or `"student"` (the student alone, ~0.5 GB per
    /// run for multilingual-e5-small, a third of what `true` keeps). A kept student is
    /// evaluated by the new runs that train with the same settings (see [`training_key`]).
    #[serde(default)]
    pub keep_models: KeepModels,
    /// Distillation keys shared by every trained run.
    #[serde(default)]
    pub distill: toml::Table,
    /// The model the `base` condition evaluates (default: the distillation `student`).
    #[serde(default)]
    pub base_model: Option<String>,
    /// The held-out split of `tatoeba-train` / `tatoeba-heldout` sources.
    #[serde(default)]
    pub split: SplitConfig,
    /// LAReQA benchmarks every model is evaluated on (`xquad-r`, `mlqa-r`).
    #[serde(default)]
    pub lareqa: Vec<String>,
    /// How LAReQA's answer sentences are encoded: `passage` (the default; e5's `passage: `
    /// prefix, as its model card says for question answering) or `query` (e5's `query: `
    /// prefix on both sides, as studies made before this setting existed were).
    #[serde(default = "passage")]
    pub lareqa_candidates: TextRole,
    #[serde(rename = "condition")]
    pub conditions: Vec<Condition>,
    #[serde(rename = "group")]
    pub groups: Vec<Group>,
    pub budget: BTreeMap<String, Budget>,
    /// Published figures quoted in the report as context.
    #[serde(default)]
    pub context: Vec<Quoted>,
}

fn passage() -> TextRole {
    TextRole::Passage
}

/// How Tatoeba pairs are split into training and held-out parts.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SplitConfig {
    /// Percentage of pairs held out (by the hash of the English side).
    pub heldout_percent: u32,
}

impl Default for SplitConfig {
    fn default() -> Self {
        SplitConfig {
            heldout_percent: 20,
        }
    }
}

/// One condition of the grid.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// False for the untrained model (`base`).
    #[serde(default = "yes")]
    pub train: bool,
    /// Distillation keys this condition sets.
    #[serde(default)]
    pub distill: toml::Table,
}

fn yes() -> bool {
    true
}

/// One group: what students are trained on and evaluated on.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub name: String,
    #[serde(default)]
    pub title: String,
    pub train: Vec<String>,
    #[serde(default)]
    pub in_domain: Vec<String>,
    #[serde(default)]
    pub out_of_domain: Vec<String>,
}

/// One budget: which runs, how long they train, how much is evaluated.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    #[serde(default)]
    pub description: String,
    /// Seeds of every trained condition.
    pub seeds: Vec<u64>,
    /// Conditions this budget runs (names of `[[condition]]`).
    pub conditions: Vec<String>,
    /// Groups this budget runs (default: all).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Distillation keys of this budget (steps, batch size, ...).
    #[serde(default)]
    pub distill: toml::Table,
    #[serde(default)]
    pub eval: EvalBudget,
    #[serde(default)]
    pub estimate: Estimate,
}

/// How much of each evaluation set is used.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EvalBudget {
    /// LAReQA: seed questions of each dataset's subset (see `Lareqa::subset`), e.g.
    /// `{ xquad-r = 8, mlqa-r = 40 }`; a dataset left out is used whole.
    #[serde(default)]
    pub lareqa_questions: BTreeMap<String, usize>,
    /// LAReQA languages (default: all of the dataset's).
    #[serde(default)]
    pub lareqa_languages: Vec<String>,
    /// Bitext sets: at most this many pairs per set, evenly spaced; none: all.
    #[serde(default)]
    pub bitext_pairs: Option<usize>,
    /// Texts per encoder call (sorted by length inside a call, so larger pads less).
    #[serde(default = "default_batch")]
    pub batch: usize,
}

fn default_batch() -> usize {
    256
}

impl Default for EvalBudget {
    fn default() -> Self {
        EvalBudget {
            lareqa_questions: BTreeMap::new(),
            lareqa_languages: Vec::new(),
            bitext_pairs: None,
            batch: default_batch(),
        }
    }
}

/// Throughput assumed for the ETA before this invocation has measured its own.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Estimate {
    /// One distillation step.
    pub seconds_per_step: f64,
    /// One text encoded by a whole model (a base model, or a student that trains all its
    /// layers).
    pub seconds_per_text: f64,
    /// One text encoded by a student whose frozen prefix a sitting shares with the base
    /// model's evaluation (only its trained layers run); unset: `seconds_per_text`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_per_student_text: Option<f64>,
}

impl Default for Estimate {
    fn default() -> Self {
        Estimate {
            seconds_per_step: 4.0,
            seconds_per_text: 0.05,
            seconds_per_student_text: None,
        }
    }
}

impl Estimate {
    /// Seconds per student text (see [`Self::seconds_per_student_text`]).
    pub fn student_text(&self) -> f64 {
        self.seconds_per_student_text
            .unwrap_or(self.seconds_per_text)
    }

    /// A student's text time over a whole model's, for scaling a measured whole-model
    /// rate before any student has been measured (1 when no student rate is given).
    pub fn student_share(&self) -> f64 {
        if self.seconds_per_text > 0.0 {
            self.student_text() / self.seconds_per_text
        } else {
            1.0
        }
    }

    fn validate(&self, budget: &str) -> Result<()> {
        for (what, v) in [
            ("seconds_per_step", Some(self.seconds_per_step)),
            ("seconds_per_text", Some(self.seconds_per_text)),
            ("seconds_per_student_text", self.seconds_per_student_text),
        ] {
            if let Some(v) = v.filter(|v| !(v.is_finite() && *v >= 0.0)) {
                return Err(Error::parameter(
                    what,
                    format!("a finite number of seconds, 0 or more (budget {budget} estimate)"),
                    v,
                ));
            }
        }
        Ok(())
    }
}

/// A published figure quoted in the report.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Quoted {
    pub source: String,
    pub setting: String,
    pub figure: String,
}

/// One run of the grid.
#[derive(Clone, Debug)]
pub struct RunSpec {
    pub condition: String,
    pub group: String,
    pub seed: u64,
    /// The distillation settings (`out` = the run directory); `None` for `base`.
    pub distill: Option<DistillConfig>,
    /// The model evaluated when nothing is trained.
    pub model: String,
    /// Hex hash of [`Self::key_json`].
    pub key: String,
    pub key_json: serde_json::Value,
    /// What the trained student depends on ([`training_key`]); `None` for `base`.
    pub train_key: Option<String>,
    pub dir: PathBuf,
}

impl RunSpec {
    /// `<condition>-<group>-s<seed>-<key>`.
    pub fn name(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// The grid of one budget.
#[derive(Clone, Debug)]
pub struct Plan {
    pub budget: String,
    pub groups: Vec<Group>,
    pub conditions: Vec<Condition>,
    pub seeds: Vec<u64>,
    pub eval: EvalBudget,
    pub estimate: Estimate,
    pub runs: Vec<RunSpec>,
}

fn table_to_json(
    t: &toml::Table,
    what: &str,
) -> Result<serde_json::Map<String, serde_json::Value>> {
    match serde_json::to_value(t) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Ok(serde_json::Map::new()),
        Err(e) => Err(Error::value(what.to_string(), e.to_string())),
    }
}

/// JSON with object keys sorted at every level, as a string: the same settings always
/// give the same text, whatever order the file listed them in.
pub fn canonical_json(v: &serde_json::Value) -> String {
    fn sort(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let sorted: BTreeMap<&String, serde_json::Value> =
                    m.iter().map(|(k, v)| (k, sort(v))).collect();
                serde_json::Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
            }
            serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    sort(v).to_string()
}

/// The 16-hex-digit key of a canonical JSON text (a collision needs two different
/// configurations in one study directory).
pub fn key_of(json: &serde_json::Value) -> String {
    format!(
        "{:016x}",
        crate::rng::stable_hash(canonical_json(json).as_bytes())
    )
}

/// The key of what a trained run's student depends on, from its full key JSON (as
/// [`RunSpec::key_json`] and every run's `run.json` hold it): the format version, the
/// group's training sources, the held-out split and the whole distillation configuration
/// (seed and backend included). The condition's and group's names, the evaluation sets and
/// slices and `lareqa_candidates` are not part of it, so runs that differ only in those train
/// the same student. `None` for a run that trains nothing.
pub fn training_key(key_json: &serde_json::Value) -> Option<String> {
    let distill = key_json.get("distill").filter(|d| d.is_object())?;
    Some(key_of(&serde_json::json!({
        "version": key_json.get("version"),
        "train": key_json.get("group").and_then(|g| g.get("train")),
        "split": key_json.get("split"),
        "distill": distill,
    })))
}

/// Bumped when a change in the study code changes what a run with the same settings
/// produces, so old results are not reused.
pub const FORMAT_VERSION: u32 = 1;

/// One backend for the whole study: its evaluations and the report's hardware are the
/// study's (`--backend`, else [distill]'s), so a budget's or a condition's own would train
/// elsewhere than the report says.
fn no_backend(table: &toml::Table, place: &str) -> Result<()> {
    if table.contains_key("backend") {
        return Err(Error::parameter(
            "distill",
            "no `backend` key but the study's (--backend, else [distill]'s)",
            format!("backend in {place}"),
        ));
    }
    Ok(())
}

/// Whether training source `train` holds the pairs of evaluation set `eval`: the whole of
/// a Tatoeba language split for training, the same Bible, the same other-language file.
fn trains_on(train: &str, eval: &str) -> bool {
    let t: Vec<&str> = train.splitn(4, ':').collect();
    let e: Vec<&str> = eval.splitn(5, ':').collect();
    match (t.as_slice(), e.as_slice()) {
        (["tatoeba-train", a], ["tatoeba", b]) | (["bible", a], ["bible", b]) => a == b,
        // The other language's file: a shared English file (one English side for many
        // languages, as multi-parallel sets have) holds other pairs.
        (["files", _, other, _], ["files", _, _, o, _]) => {
            other == o || crate::io::same_file(Path::new(other), Path::new(o))
        }
        _ => false,
    }
}

const TRAIN_PREFIXES: [&str; 4] = ["tatoeba-train", "mafand", "bible", "files"];
const EVAL_PREFIXES: [&str; 6] = [
    "tatoeba-heldout",
    "tatoeba",
    "mafand-test",
    "mafand-dev",
    "bible",
    "files",
];

/// The first element of `v` that an earlier one equals.
fn repeated<T: PartialEq>(v: &[T]) -> Option<&T> {
    v.iter()
        .enumerate()
        .find(|(i, x)| v[..*i].contains(x))
        .map(|(_, x)| x)
}

/// No whitespace and no control characters: names go into file names, tables and plots.
fn printable(name: &str) -> bool {
    !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// The benchmark an evaluation set's results are pooled under, as the report names it: a
/// `files:` set's own name, else the spec's prefix (`tatoeba`, `bible`, ...).
pub(crate) fn benchmark_of(spec: &str) -> &str {
    let mut parts = spec.split(':');
    match (parts.next(), parts.next()) {
        (Some("files"), Some(set)) => set,
        (Some(prefix), _) => prefix,
        (None, _) => spec,
    }
}

fn check_spec(spec: &str, prefixes: &[&str], what: &'static str) -> Result<()> {
    let prefix = spec.split(':').next().unwrap_or("");
    // As the loaders split them: the last path of a files spec may hold ':'.
    let fields = |n: usize| spec.splitn(n, ':').filter(|f| !f.is_empty()).count();
    let ok = prefixes.contains(&prefix)
        && match prefix {
            "files" if what == "train" => fields(4) == 4,
            // The other side's language may not be English's code: the two sides' texts
            // would share ids, and both directions would read as en→x.
            "files" => fields(5) == 5 && spec.split(':').nth(2) != Some(bitext::ENGLISH),
            _ => spec.split(':').count() == 2 && !spec.ends_with(':'),
        };
    if ok {
        Ok(())
    } else {
        Err(Error::parameter(
            what,
            format!(
                "a data spec {}:<language> (or files:…, see the study config docs){}",
                prefixes.join("|"),
                if prefix == "files" && what != "train" {
                    format!(" whose other side's language is not {}", bitext::ENGLISH)
                } else {
                    String::new()
                }
            ),
            spec,
        ))
    }
}

impl StudyConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "read", e))?;
        Self::from_toml(&text).map_err(|e| match e {
            Error::Value { what, .. } => Error::Format {
                path: path.into(),
                what,
            },
            other => other,
        })
    }

    pub fn from_toml(text: &str) -> Result<Self> {
        let config: StudyConfig = toml::from_str(text)
            .map_err(|e| Error::value("study config", format!("not a valid study config: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// Names unique, every reference resolvable, every data spec well formed.
    pub fn validate(&self) -> Result<()> {
        if self.conditions.is_empty() || self.groups.is_empty() {
            return Err(Error::parameter(
                "study config",
                "at least one condition and one group (the grid is their product)",
                format!(
                    "{} conditions and {} groups",
                    self.conditions.len(),
                    self.groups.len()
                ),
            ));
        }
        let names: Vec<&str> = self.conditions.iter().map(|c| c.name.as_str()).collect();
        if let Some(name) = repeated(&names) {
            return Err(Error::parameter("condition", "unique names", name));
        }
        for c in &self.conditions {
            if c.name.is_empty() || c.name.contains(['/', '\\']) || !printable(&c.name) {
                return Err(Error::parameter(
                    "condition",
                    "a name without spaces, slashes or control characters",
                    format!("{:?}", c.name),
                ));
            }
            if c.name == "base" && c.train {
                return Err(Error::parameter(
                    "condition",
                    "`base` with train = false (the untrained model the report measures gains \
                     against)",
                    "base with train = true",
                ));
            }
            if !c.train && !c.distill.is_empty() {
                return Err(Error::parameter(
                    "condition",
                    "no `distill` table on a condition with train = false (it trains nothing)",
                    format!("condition {} with one", c.name),
                ));
            }
        }
        let groups: Vec<&str> = self.groups.iter().map(|g| g.name.as_str()).collect();
        if let Some(name) = repeated(&groups) {
            return Err(Error::parameter("group", "unique names", name));
        }
        // Plots are named by slugs of the names: two names with one slug would write (and
        // link) the same files.
        for (what, names) in [("condition", &names), ("group", &groups)] {
            let slugs: Vec<String> = names.iter().map(|n| crate::report::slug(n)).collect();
            if let Some(i) = (0..slugs.len()).find(|&i| slugs[..i].contains(&slugs[i])) {
                let first = slugs.iter().position(|s| *s == slugs[i]).unwrap_or(0);
                return Err(Error::parameter(
                    what,
                    "names that stay distinct in file names (characters outside \
                     A-Z, a-z, 0-9, '-' and '_' become '_')",
                    format!("{} and {}, both {}", names[first], names[i], slugs[i]),
                ));
            }
        }
        for g in &self.groups {
            if g.name.is_empty() || g.name.contains(['/', '\\', '-']) || !printable(&g.name) {
                return Err(Error::parameter(
                    "group",
                    "a name without spaces, dashes, slashes or control characters",
                    format!("{:?}", g.name),
                ));
            }
            if g.train.is_empty() {
                return Err(Error::parameter(
                    "train",
                    format!("at least one training source in group {}", g.name),
                    "none",
                ));
            }
            for s in &g.train {
                check_spec(s, &TRAIN_PREFIXES, "train")?;
            }
            // The report pools a benchmark's sets under one role: a benchmark may not be
            // both in and out of domain in one group (LAReQA's datasets are out of domain).
            let in_domain = |s: &String| {
                let b = benchmark_of(s);
                g.in_domain.iter().any(|i| benchmark_of(i) == b)
            };
            if let Some(s) = g.out_of_domain.iter().find(|s| in_domain(s)) {
                return Err(Error::parameter(
                    "evaluation set",
                    format!(
                        "each benchmark in one role in group {} ({} is also in domain)",
                        g.name,
                        benchmark_of(s)
                    ),
                    s,
                ));
            }
            if let Some(s) = g
                .in_domain
                .iter()
                .find(|s| self.lareqa.iter().any(|l| *l == benchmark_of(s)))
            {
                return Err(Error::parameter(
                    "evaluation set",
                    format!(
                        "each benchmark in one role in group {} ({} is a `lareqa` dataset, \
                         out of domain)",
                        g.name,
                        benchmark_of(s)
                    ),
                    s,
                ));
            }
            let sets: Vec<&String> = g.in_domain.iter().chain(&g.out_of_domain).collect();
            if let Some(set) = repeated(&sets) {
                return Err(Error::parameter(
                    "evaluation set",
                    format!("each set once in group {}", g.name),
                    set,
                ));
            }
            for s in g.in_domain.iter().chain(&g.out_of_domain) {
                check_spec(s, &EVAL_PREFIXES, "evaluation set")?;
                if let Some(t) = g.train.iter().find(|t| trains_on(t, s)) {
                    return Err(Error::parameter(
                        "evaluation set",
                        format!(
                            "a set group {} does not train on (its training source {t} holds \
                             these pairs{})",
                            g.name,
                            if s.starts_with("tatoeba:") {
                                "; tatoeba-heldout:<lang> is the part it leaves out"
                            } else {
                                ""
                            }
                        ),
                        s,
                    ));
                }
                if let Some(lang) = s.strip_prefix("tatoeba-heldout:") {
                    if !g
                        .train
                        .iter()
                        .any(|t| t == &format!("tatoeba-train:{lang}"))
                    {
                        return Err(Error::parameter(
                            "evaluation set",
                            format!("tatoeba-train:{lang} among group {}'s training sources (the held-out part of its split)", g.name),
                            s,
                        ));
                    }
                }
            }
        }
        for (i, l) in self.lareqa.iter().enumerate() {
            if l != "xquad-r" && l != "mlqa-r" {
                return Err(Error::parameter("lareqa", "xquad-r or mlqa-r", l));
            }
            if self.lareqa[..i].contains(l) {
                return Err(Error::parameter(
                    "lareqa",
                    "each dataset once",
                    format!("{l} twice"),
                ));
            }
        }
        // Every group must evaluate something: a run without a single task would write a
        // result that the study then refuses to read.
        if self.lareqa.is_empty() {
            if let Some(g) = self
                .groups
                .iter()
                .find(|g| g.in_domain.is_empty() && g.out_of_domain.is_empty())
            {
                return Err(Error::parameter(
                    "group",
                    format!(
                        "an in_domain or out_of_domain set in group {} (or a `lareqa` dataset): \
                         there is nothing to evaluate",
                        g.name
                    ),
                    "none",
                ));
            }
        }
        if self.split.heldout_percent == 0 || self.split.heldout_percent >= 100 {
            return Err(Error::parameter(
                "heldout_percent",
                "1..=99",
                self.split.heldout_percent,
            ));
        }
        if self.budget.is_empty() {
            return Err(Error::parameter(
                "budget",
                "at least one [budget.NAME]",
                "none",
            ));
        }
        for (name, b) in &self.budget {
            // A repeated seed, condition or group would be one run counted twice.
            if let Some(c) = repeated(&b.conditions) {
                return Err(Error::parameter(
                    "conditions",
                    format!("each condition once (budget {name})"),
                    format!("{c} twice"),
                ));
            }
            if let Some(g) = repeated(&b.groups) {
                return Err(Error::parameter(
                    "groups",
                    format!("each group once (budget {name})"),
                    format!("{g} twice"),
                ));
            }
            if let Some(s) = repeated(&b.seeds) {
                return Err(Error::parameter(
                    "seeds",
                    format!("each seed once (budget {name})"),
                    format!("{s} twice"),
                ));
            }
            for c in &b.conditions {
                if !self.conditions.iter().any(|x| &x.name == c) {
                    return Err(Error::parameter(
                        "conditions",
                        format!("names of [[condition]] (budget {name})"),
                        c,
                    ));
                }
            }
            for g in &b.groups {
                if !self.groups.iter().any(|x| &x.name == g) {
                    return Err(Error::parameter(
                        "groups",
                        format!("names of [[group]] (budget {name})"),
                        g,
                    ));
                }
            }
            if b.seeds.is_empty() {
                return Err(Error::parameter(
                    "seeds",
                    format!("at least one seed (budget {name})"),
                    "none",
                ));
            }
            if b.conditions.is_empty() {
                return Err(Error::parameter(
                    "conditions",
                    format!("at least one condition (budget {name})"),
                    "none",
                ));
            }
            // Every Δ, p-value, plot and the answer of the report are against `base`: a
            // budget without it would report empty columns.
            if !b.conditions.iter().any(|c| c == "base") {
                return Err(Error::parameter(
                    "conditions",
                    format!(
                        "`base` among them (budget {name}): the untrained model that the \
                         report measures every gain against"
                    ),
                    b.conditions.join(", "),
                ));
            }
            if b.eval.batch == 0 {
                return Err(Error::parameter("batch", "at least 1", 0));
            }
            b.estimate.validate(name)?;
            self.check_lareqa_languages(name, &b.eval.lareqa_languages)?;
            for d in b.eval.lareqa_questions.keys() {
                if !self.lareqa.contains(d) {
                    return Err(Error::parameter(
                        "lareqa_questions",
                        format!("datasets of `lareqa` ({})", self.lareqa.join(", ")),
                        d,
                    ));
                }
            }
            if b.eval.lareqa_questions.values().any(|&n| n == 0) || b.eval.bitext_pairs == Some(0) {
                return Err(Error::parameter(
                    "eval",
                    "slices of at least 1 (leave a key out for the whole set)",
                    0,
                ));
            }
        }
        Ok(())
    }

    /// A budget's `lareqa_languages`: each once, each a language of one of the `lareqa`
    /// datasets (a dataset takes the ones it has), and only with a `lareqa` dataset.
    fn check_lareqa_languages(&self, budget: &str, languages: &[String]) -> Result<()> {
        if languages.is_empty() {
            return Ok(());
        }
        if self.lareqa.is_empty() {
            return Err(Error::parameter(
                "lareqa_languages",
                format!("none without a `lareqa` dataset (budget {budget})"),
                languages.join(","),
            ));
        }
        let known = |l: &str| {
            self.lareqa.iter().any(|d| match d.as_str() {
                "xquad-r" => crate::data::lareqa::XQUAD_R_LANGUAGES.contains(&l),
                _ => crate::data::lareqa::MLQA_R_LANGUAGES.contains(&l),
            })
        };
        for (i, l) in languages.iter().enumerate() {
            if languages[..i].contains(l) {
                return Err(Error::parameter(
                    "lareqa_languages",
                    format!("each language once (budget {budget})"),
                    format!("{l} twice"),
                ));
            }
            if !known(l) {
                return Err(Error::parameter(
                    "lareqa_languages",
                    format!(
                        "languages of {} (budget {budget})",
                        self.lareqa.join(" or ")
                    ),
                    l,
                ));
            }
        }
        Ok(())
    }

    /// The distillation settings shared by every run before the condition's keys.
    fn base_distill(
        &self,
        name: &str,
        budget: &Budget,
    ) -> Result<serde_json::Map<String, serde_json::Value>> {
        let mut m = table_to_json(&self.distill, "study [distill]")?;
        no_backend(&budget.distill, &format!("budget {name}'s distill table"))?;
        m.extend(table_to_json(&budget.distill, "budget distill")?);
        Ok(m)
    }

    /// The model `base` evaluates: `base_model`, else the distillation `student`.
    pub fn base_model(&self) -> String {
        if let Some(m) = &self.base_model {
            return m.clone();
        }
        match self.distill.get("student") {
            Some(toml::Value::String(s)) => s.clone(),
            _ => DistillConfig::default().student,
        }
    }

    /// The runs of `budget` under `out`. `backend` overrides every run's distillation
    /// backend.
    pub fn plan(&self, budget_name: &str, backend: Option<&str>, out: &Path) -> Result<Plan> {
        // A misspelt backend would otherwise give every trained run a new key, and fail
        // only when the first of them starts.
        if let Some(b) = backend {
            b.parse::<crate::backend::BackendKind>()?;
        }
        let budget = self.budget.get(budget_name).ok_or_else(|| {
            Error::parameter(
                "budget",
                format!(
                    "one of {}",
                    self.budget.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
                budget_name,
            )
        })?;
        let groups: Vec<Group> = self
            .groups
            .iter()
            .filter(|g| budget.groups.is_empty() || budget.groups.contains(&g.name))
            .cloned()
            .collect();
        let conditions: Vec<Condition> = budget
            .conditions
            .iter()
            .filter_map(|n| self.conditions.iter().find(|c| &c.name == n))
            .cloned()
            .collect();
        let shared = self.base_distill(budget_name, budget)?;
        let runs_dir = out.join("runs");
        let mut runs = Vec::new();
        // Seed by seed, so that an interrupted study has whole comparisons first.
        for (si, &seed) in budget.seeds.iter().enumerate() {
            for c in &conditions {
                if !c.train && si > 0 {
                    continue;
                }
                for g in &groups {
                    runs.push(self.run_spec(budget, &shared, c, g, seed, backend, &runs_dir)?);
                }
            }
        }
        Ok(Plan {
            budget: budget_name.to_string(),
            groups,
            conditions,
            seeds: budget.seeds.clone(),
            eval: budget.eval.clone(),
            estimate: budget.estimate.clone(),
            runs,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn run_spec(
        &self,
        budget: &Budget,
        shared: &serde_json::Map<String, serde_json::Value>,
        c: &Condition,
        g: &Group,
        seed: u64,
        backend: Option<&str>,
        runs_dir: &Path,
    ) -> Result<RunSpec> {
        let mut distill_json = None;
        let mut distill = None;
        if c.train {
            let mut keys = shared.clone();
            keys.extend(table_to_json(&c.distill, "condition distill")?);
            if keys.contains_key("seed") {
                return Err(Error::parameter(
                    "distill",
                    "no `seed` key (the budget's `seeds` set it per run)",
                    format!("seed in condition {}, the budget or [distill]", c.name),
                ));
            }
            keys.insert("seed".into(), seed.into());
            if let Some(b) = backend {
                keys.insert("backend".into(), b.into());
            }
            no_backend(&c.distill, &format!("condition {}", c.name))?;
            for k in ["out", "sources", "data_dir", "english_bible"] {
                if keys.remove(k).is_some() {
                    return Err(Error::parameter(
                        "distill",
                        format!("no `{k}` key (the study sets it per run)"),
                        format!("{k} in condition {} or [distill]", c.name),
                    ));
                }
            }
            // A bad key or value names the condition it was merged for (its own `distill`
            // table, the budget's and [distill] are merged into one config).
            let in_condition = |e: Error| {
                Error::value(
                    format!(
                        "condition {} (its distill keys with the budget's and [distill])",
                        c.name
                    ),
                    e.to_string(),
                )
            };
            let config = DistillConfig::default()
                .with_overrides(keys)
                .map_err(in_condition)?;
            config.validate().map_err(in_condition)?;
            let mut json = serde_json::to_value(&config)
                .map_err(|e| Error::value("distillation config", e.to_string()))?;
            if let Some(o) = json.as_object_mut() {
                for k in ["out", "sources", "data_dir", "english_bible"] {
                    o.remove(k);
                }
            }
            distill_json = Some(json);
            distill = Some(config);
        }
        let model = self.base_model();
        let key_json = serde_json::json!({
            "version": FORMAT_VERSION,
            "condition": c.name,
            "group": {
                "name": g.name,
                "train": g.train,
                "in_domain": g.in_domain,
                "out_of_domain": g.out_of_domain,
            },
            "seed": seed,
            "distill": distill_json,
            "model": if c.train { serde_json::Value::Null } else { model.clone().into() },
            "split": self.split.heldout_percent,
            "lareqa": self.lareqa,
            "eval": {
                "lareqa_questions": budget.eval.lareqa_questions,
                "lareqa_languages": budget.eval.lareqa_languages,
                "bitext_pairs": budget.eval.bitext_pairs,
            },
            "backend": backend,
        });
        // Absent for `query`, so that the runs made before the setting existed (which encoded
        // the candidates as queries) keep their keys and results, and for studies without
        // LAReQA, which it does not change. (Training does not depend on it either, but the
        // key covers the whole run, evaluation included.)
        let mut key_json = key_json;
        if !self.lareqa.is_empty() && self.lareqa_candidates != TextRole::Query {
            key_json["lareqa_candidates"] = self.lareqa_candidates.name().into();
        }
        let key = key_of(&key_json);
        let train_key = training_key(&key_json);
        let dir = runs_dir.join(format!("{}-{}-s{}-{}", c.name, g.name, seed, &key[..10]));
        if let Some(d) = distill.as_mut() {
            d.out = dir.clone();
            d.data_dir = self.data_dir.clone();
            d.english_bible = self.english_bible.clone();
            d.validate()?;
        }
        Ok(RunSpec {
            condition: c.name.clone(),
            group: g.name.clone(),
            seed,
            distill,
            model,
            key,
            key_json,
            train_key,
            dir,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "t"
question = "q?"
lareqa = ["xquad-r"]
[distill]
steps = 3
[[condition]]
name = "base"
train = false
[[condition]]
name = "ot"
distill = { loss = "ot" }
[[condition]]
name = "mean-mse"
distill = { loss = "mean-mse" }
[[group]]
name = "A"
train = ["tatoeba-train:deu"]
in_domain = ["tatoeba-heldout:deu"]
[budget.quick]
seeds = [0, 1]
conditions = ["base", "ot", "mean-mse"]
distill = { batch_size = 4 }
eval = { lareqa_questions = { xquad-r = 3 } }
"#;

    #[test]
    fn the_grid_has_one_base_run_and_every_seed_of_the_others() {
        let c = StudyConfig::from_toml(MINIMAL).unwrap();
        let plan = c.plan("quick", None, Path::new("/tmp/s")).unwrap();
        let names: Vec<String> = plan
            .runs
            .iter()
            .map(|r| format!("{}-{}-{}", r.condition, r.group, r.seed))
            .collect();
        assert_eq!(
            names,
            [
                "base-A-0",
                "ot-A-0",
                "mean-mse-A-0",
                "ot-A-1",
                "mean-mse-A-1"
            ]
        );
        let ot = plan.runs[1].distill.as_ref().unwrap();
        assert_eq!((ot.steps, ot.batch_size, ot.loss.as_str()), (3, 4, "ot"));
        assert!(plan.runs[1].dir.starts_with("/tmp/s/runs"));
        assert!(plan.runs[1].name().starts_with("ot-A-s0-"));
        // Keys differ between runs and do not depend on the output directory.
        let other = c.plan("quick", None, Path::new("/elsewhere")).unwrap();
        for (a, b) in plan.runs.iter().zip(&other.runs) {
            assert_eq!(a.key, b.key);
        }
        let mut keys: Vec<&str> = plan.runs.iter().map(|r| r.key.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), plan.runs.len());
        // A different backend is a different run.
        let gpu = c.plan("quick", Some("wgpu"), Path::new("/tmp/s")).unwrap();
        assert_ne!(gpu.runs[1].key, plan.runs[1].key);
    }

    #[test]
    fn lareqa_candidates_as_queries_keep_the_keys_made_before_the_setting() {
        let passage = StudyConfig::from_toml(MINIMAL).unwrap();
        assert_eq!(passage.lareqa_candidates, TextRole::Passage, "the default");
        let query =
            StudyConfig::from_toml(&format!("lareqa_candidates = \"query\"\n{MINIMAL}")).unwrap();
        let (p, q) = (
            passage.plan("quick", None, Path::new("o")).unwrap(),
            query.plan("quick", None, Path::new("o")).unwrap(),
        );
        for (p, q) in p.runs.iter().zip(&q.runs) {
            assert_ne!(p.key, q.key, "{}", p.name());
            assert_eq!(q.key_json.get("lareqa_candidates"), None);
            assert_eq!(p.key_json["lareqa_candidates"], "passage");
            // The key of a `query` run is the one computed without the setting.
            let mut without = p.key_json.clone();
            without.as_object_mut().unwrap().remove("lareqa_candidates");
            assert_eq!(key_of(&without), q.key);
        }
        // Pinned: the key `optical study --plan` gave this run before the setting existed
        // (checked against that binary).
        assert!(q.runs[1].key.starts_with("f0738f77db"), "{}", q.runs[1].key);
        // A study without LAReQA is not changed by the setting, so its keys are not either.
        let bitext_only = MINIMAL
            .replace("lareqa = [\"xquad-r\"]", "lareqa = []")
            .replace("eval = { lareqa_questions = { xquad-r = 3 } }", "");
        let plan = StudyConfig::from_toml(&bitext_only)
            .unwrap()
            .plan("quick", None, Path::new("o"))
            .unwrap();
        assert!(plan
            .runs
            .iter()
            .all(|r| r.key_json.get("lareqa_candidates").is_none()));
        assert!(
            StudyConfig::from_toml(&format!("lareqa_candidates = \"answer\"\n{MINIMAL}")).is_err()
        );
    }

    #[test]
    fn any_setting_changes_the_key() {
        let c = StudyConfig::from_toml(MINIMAL).unwrap();
        let a = c.plan("quick", None, Path::new("o")).unwrap();
        let c2 = StudyConfig::from_toml(&MINIMAL.replace("steps = 3", "steps = 4")).unwrap();
        let b = c2.plan("quick", None, Path::new("o")).unwrap();
        assert_eq!(a.runs[0].key, b.runs[0].key, "base does not train");
        assert_ne!(a.runs[1].key, b.runs[1].key);
        // Key order in the file does not matter.
        let c3 = StudyConfig::from_toml(&MINIMAL.replace(
            "distill = { loss = \"ot\" }",
            "distill = { epsilon = 0.005, loss = \"ot\" }",
        ))
        .unwrap();
        let d = c3.plan("quick", None, Path::new("o")).unwrap();
        assert_eq!(a.runs[1].key, d.runs[1].key, "0.005 is the default epsilon");
    }

    #[test]
    fn the_training_key_ignores_what_only_the_evaluation_reads() {
        let c = StudyConfig::from_toml(MINIMAL).unwrap();
        let a = c.plan("quick", None, Path::new("o")).unwrap();
        assert_eq!(a.runs[0].train_key, None, "base trains nothing");
        let keys: Vec<&str> = a.runs[1..]
            .iter()
            .map(|r| r.train_key.as_deref().unwrap())
            .collect();
        assert_eq!(keys.len(), 4);
        assert!(
            keys.iter().enumerate().all(|(i, k)| !keys[..i].contains(k)),
            "each condition and seed trains its own student: {keys:?}"
        );
        // Evaluation slices, sets, LAReQA and the candidates' role: new runs, same students.
        for changed in [
            MINIMAL.replace("xquad-r = 3", "xquad-r = 4"),
            MINIMAL.replace("in_domain = [\"tatoeba-heldout:deu\"]", "in_domain = []"),
            MINIMAL.replace(
                "in_domain = [\"tatoeba-heldout:deu\"]",
                "in_domain = [\"tatoeba-heldout:deu\"]\nout_of_domain = [\"tatoeba:fra\"]",
            ),
            format!("lareqa_candidates = \"query\"\n{MINIMAL}"),
            MINIMAL
                .replace("name = \"ot\"", "name = \"ot-renamed\"")
                .replace(
                    "conditions = [\"base\", \"ot\",",
                    "conditions = [\"base\", \"ot-renamed\",",
                ),
        ] {
            let b = StudyConfig::from_toml(&changed)
                .unwrap()
                .plan("quick", None, Path::new("o"))
                .unwrap();
            assert!(
                a.runs.iter().zip(&b.runs).any(|(x, y)| x.key != y.key),
                "new runs: {changed}"
            );
            for (x, y) in a.runs.iter().zip(&b.runs).skip(1) {
                assert_eq!(x.train_key, y.train_key, "{changed}");
                // What a run directory's run.json holds gives the same key.
                assert_eq!(training_key(&y.key_json), y.train_key);
            }
        }
        // Training settings, sources, the split and the backend: other students.
        for changed in [
            MINIMAL.replace("steps = 3", "steps = 4"),
            MINIMAL.replace(
                "[\"tatoeba-train:deu\"]",
                "[\"tatoeba-train:deu\", \"mafand:hau\"]",
            ),
            format!("{MINIMAL}\n[split]\nheldout_percent = 30\n"),
        ] {
            let b = StudyConfig::from_toml(&changed)
                .unwrap()
                .plan("quick", None, Path::new("o"))
                .unwrap();
            for (x, y) in a.runs.iter().zip(&b.runs).skip(1) {
                assert_ne!(x.train_key, y.train_key, "{changed}");
            }
        }
        let gpu = c.plan("quick", Some("wgpu"), Path::new("o")).unwrap();
        assert_ne!(gpu.runs[1].train_key, a.runs[1].train_key);
    }

    #[test]
    fn keep_models_is_a_flag_or_student() {
        let keep = |line: &str| StudyConfig::from_toml(&format!("{line}\n{MINIMAL}"));
        assert_eq!(keep("").unwrap().keep_models, KeepModels::Nothing);
        assert_eq!(
            keep("keep_models = false").unwrap().keep_models,
            KeepModels::Nothing
        );
        assert_eq!(
            keep("keep_models = true").unwrap().keep_models,
            KeepModels::All
        );
        let student = keep("keep_models = \"student\"").unwrap().keep_models;
        assert_eq!(student, KeepModels::Student);
        assert!(student.student() && !student.checkpoints());
        assert!(KeepModels::All.checkpoints() && !KeepModels::Nothing.student());
        for bad in ["keep_models = \"students\"", "keep_models = 1"] {
            let e = keep(bad).unwrap_err().to_string();
            assert!(
                e.contains("expected true, false or \"student\""),
                "{bad}: {e}"
            );
        }
        assert!(keep("keep_models = \"students\"")
            .unwrap_err()
            .to_string()
            .contains("\"students\""));
    }

    /// An evaluation set the group trains on is refused: its "out of domain" numbers would
    /// be training pairs.
    #[test]
    fn a_group_may_not_evaluate_on_what_it_trains_on() {
        for (train, eval) in [
            ("tatoeba-train:deu", "tatoeba:deu"),
            ("bible:swa", "bible:swa"),
            (
                "files:hau:/x/a.hau:/x/a.en",
                "files:set:hau:/x/a.hau:/y/b.en",
            ),
        ] {
            let text = MINIMAL
                .replace(
                    r#"train = ["tatoeba-train:deu"]"#,
                    &format!(r#"train = ["tatoeba-train:deu", "{train}"]"#),
                )
                .replace(
                    r#"in_domain = ["tatoeba-heldout:deu"]"#,
                    &format!("in_domain = [\"tatoeba-heldout:deu\"]\nout_of_domain = [\"{eval}\"]"),
                );
            let err = StudyConfig::from_toml(&text).unwrap_err().to_string();
            assert!(
                err.contains("a set group A does not train on") && err.contains(train),
                "{err}"
            );
        }
        assert!(!trains_on("tatoeba-train:deu", "tatoeba:fra"));
        assert!(!trains_on("tatoeba-train:deu", "tatoeba-heldout:deu"));
        assert!(!trains_on("mafand:hau", "mafand-test:hau"));
        assert!(!trains_on("bible:swa", "bible:zul"));
        // One English file for several languages (a multi-parallel set).
        assert!(!trains_on(
            "files:hau:/x/a.hau:/x/all.en",
            "files:set:yor:/x/a.yor:/x/all.en"
        ));
    }

    /// The backend is the study's: a budget's or a condition's would train on another
    /// device than the evaluations and the report's hardware say.
    #[test]
    fn only_the_study_sets_the_backend() {
        for (from, to, want) in [
            (
                "distill = { batch_size = 4 }",
                r#"distill = { batch_size = 4, backend = "wgpu" }"#,
                "backend in budget quick's distill table",
            ),
            (
                r#"distill = { loss = "ot" }"#,
                r#"distill = { loss = "ot", backend = "wgpu" }"#,
                "backend in condition ot",
            ),
        ] {
            let c = StudyConfig::from_toml(&MINIMAL.replace(from, to)).unwrap();
            let err = c
                .plan("quick", None, Path::new("o"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn data_specs_are_checked_as_their_loaders_split_them() {
        let train = ["tatoeba-train", "mafand", "bible", "files"];
        let eval = ["tatoeba", "files"];
        assert!(check_spec("mafand:hau", &train, "train").is_ok());
        // The last path of a files spec may hold ':' (distill splits it into four fields).
        assert!(check_spec("files:xx:/d/a.xx:/d/b:c.en", &train, "train").is_ok());
        assert!(check_spec("files:set:xx:/d/a.xx:/d/b:c.en", &eval, "evaluation set").is_ok());
        for bad in [
            "mafand",
            "mafand:",
            "mafand:hau:x",
            "files:xx:/d/a.xx",
            "files:xx::/e",
        ] {
            assert!(check_spec(bad, &train, "train").is_err(), "{bad}");
        }
        assert!(check_spec("files:set:xx:/d/a.xx", &eval, "evaluation set").is_err());
        // English on both sides: the sides' ids would collide.
        let err = check_spec("files:set:eng:/d/a:/d/b", &eval, "evaluation set")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("whose other side's language is not eng"),
            "{err}"
        );
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        let cases = [
            (
                MINIMAL.replace("tatoeba-train:deu\"]", "tatoeba:deu\"]"),
                "train",
            ),
            (
                MINIMAL.replace(
                    "in_domain = [\"tatoeba-heldout:deu\"]",
                    "in_domain = [\"tatoeba-heldout:fra\"]",
                ),
                "tatoeba-train:fra",
            ),
            (
                MINIMAL.replace("\"ot\", \"mean-mse\"]", "\"ot\", \"mse\"]"),
                "mse",
            ),
            (
                MINIMAL.replace("lareqa = [\"xquad-r\"]", "lareqa = [\"squad\"]"),
                "squad",
            ),
            (MINIMAL.replace("seeds = [0, 1]", "seeds = []"), "seed"),
            (
                MINIMAL.replace("train = false", "train = false\ndistill = { lr = 1e-3 }"),
                "train = false",
            ),
            (
                MINIMAL.replace(
                    "conditions = [\"base\", \"ot\", \"mean-mse\"]",
                    "conditions = []",
                ),
                "at least one condition",
            ),
            (
                MINIMAL.replace("train = false", "train = true"),
                "base with train = true",
            ),
            (
                MINIMAL.replace(
                    "conditions = [\"base\", \"ot\", \"mean-mse\"]",
                    "conditions = [\"ot\", \"mean-mse\"]",
                ),
                "expected `base` among them (budget quick): the untrained model that the \
                 report measures every gain against, found ot, mean-mse",
            ),
            (
                MINIMAL.replace("distill = { loss = \"ot\" }", "distill = { loss = \"ot\", stpes = 5 }"),
                "condition ot (its distill keys",
            ),
            (
                MINIMAL.replace("distill = { loss = \"ot\" }", "distill = { loss = \"meanmse\" }"),
                "condition ot (its distill keys",
            ),
            (MINIMAL.replace("xquad-r = 3", "mlqa-r = 3"), "mlqa-r"),
            (
                MINIMAL.replace("lareqa = [\"xquad-r\"]", "lareqa = [\"xquad-r\", \"xquad-r\"]"),
                "lareqa: expected each dataset once, found xquad-r twice",
            ),
            (
                MINIMAL
                    .replace("lareqa = [\"xquad-r\"]", "lareqa = []")
                    .replace("in_domain = [\"tatoeba-heldout:deu\"]", "")
                    .replace("eval = { lareqa_questions = { xquad-r = 3 } }", ""),
                "in group A (or a `lareqa` dataset): there is nothing to evaluate",
            ),
            (
                MINIMAL.replace("xquad-r = 3 } }", "xquad-r = 3 }, lareqa_languages = [\"de\", \"de\"] }"),
                "lareqa_languages: expected each language once (budget quick), found de twice",
            ),
            (
                MINIMAL.replace("xquad-r = 3 } }", "xquad-r = 3 }, lareqa_languages = [\"de\", \"xx\"] }"),
                "lareqa_languages: expected languages of xquad-r (budget quick), found xx",
            ),
            (
                MINIMAL
                    .replace("lareqa = [\"xquad-r\"]", "lareqa = []")
                    .replace("eval = { lareqa_questions = { xquad-r = 3 } }", "eval = { lareqa_languages = [\"de\", \"en\"] }"),
                "lareqa_languages: expected none without a `lareqa` dataset",
            ),
            (
                MINIMAL.replace(
                    "xquad-r = 3 } }",
                    "xquad-r = 3 } }\nestimate = { seconds_per_step = 1, seconds_per_text = 0.1, \
                     seconds_per_student_text = -0.1 }",
                ),
                "seconds_per_student_text: expected a finite number of seconds, 0 or more \
                 (budget quick estimate), found -0.1",
            ),
            (
                MINIMAL.replace(
                    "xquad-r = 3 } }",
                    "xquad-r = 3 } }\nestimate = { seconds_per_step = nan, seconds_per_text = 0.1 }",
                ),
                "seconds_per_step: expected a finite number",
            ),
            (MINIMAL.replace("steps = 3", "stepz = 3"), "stepz"),
            (MINIMAL.replace("seeds = [0, 1]", "seeds = [0, 1, 0]"), "0 twice"),
            (
                MINIMAL.replace("\"ot\", \"mean-mse\"]", "\"ot\", \"mean-mse\", \"ot\"]"),
                "ot twice",
            ),
            (
                MINIMAL.replace("steps = 3", "steps = 3\nseed = 7"),
                "no `seed` key",
            ),
            (
                MINIMAL.replace(
                    "in_domain = [\"tatoeba-heldout:deu\"]",
                    "in_domain = [\"tatoeba-heldout:deu\"]\nout_of_domain = [\"tatoeba-heldout:deu\"]",
                ),
                "tatoeba-heldout is also in domain",
            ),
            // A `files:` set is pooled under its own name, whatever its spec's prefix.
            (
                MINIMAL.replace(
                    "in_domain = [\"tatoeba-heldout:deu\"]",
                    "in_domain = [\"tatoeba-heldout:deu\"]\nout_of_domain = [\"files:tatoeba-heldout:deu:a.de:a.en\"]",
                ),
                "tatoeba-heldout is also in domain",
            ),
            (
                MINIMAL.replace(
                    "in_domain = [\"tatoeba-heldout:deu\"]",
                    "in_domain = [\"files:xquad-r:de:a.de:a.en\"]",
                ),
                "xquad-r is a `lareqa` dataset, out of domain",
            ),
            (
                MINIMAL
                    .replace("name = \"ot\"", "name = \"ot+x\"")
                    .replace("name = \"mean-mse\"", "name = \"ot_x\"")
                    .replace("\"ot\", \"mean-mse\"]", "\"ot+x\", \"ot_x\"]"),
                "condition: expected names that stay distinct in file names (characters outside \
                 A-Z, a-z, 0-9, '-' and '_' become '_'), found ot+x and ot_x, both ot_x",
            ),
            (
                MINIMAL.replace("[[group]]\nname = \"A\"", "[[group]]\nname = \"A_1\"\ntrain = [\"tatoeba-train:deu\"]\n[[group]]\nname = \"A.1\""),
                "found A_1 and A.1, both A_1",
            ),
            (
                MINIMAL.replace("name = \"ot\"", "name = \"ot\\u0001x\""),
                "condition: expected a name without spaces, slashes or control characters, found \"ot\\u{1}x\"",
            ),
            (
                MINIMAL.replace("name = \"A\"", "name = \"A\\nB\""),
                "group: expected a name without spaces, dashes, slashes or control characters, found \"A\\nB\"",
            ),
            (
                format!(
                    "group = []\n{}",
                    MINIMAL.replace(
                        "[[group]]\nname = \"A\"\ntrain = [\"tatoeba-train:deu\"]\nin_domain = [\"tatoeba-heldout:deu\"]\n",
                        ""
                    )
                ),
                "expected at least one condition and one group (the grid is their product), \
                 found 3 conditions and 0 groups",
            ),
        ];
        // Two `files:` sets of different names are two benchmarks, one in each role.
        let two = MINIMAL.replace(
            "in_domain = [\"tatoeba-heldout:deu\"]",
            "in_domain = [\"files:ev:deu:a.de:a.en\"]\nout_of_domain = [\"files:ev2:deu:b.de:b.en\"]",
        );
        StudyConfig::from_toml(&two).unwrap();
        for (text, needle) in cases {
            let err = match StudyConfig::from_toml(&text) {
                Err(e) => e,
                Ok(c) => c
                    .plan("quick", None, Path::new("o"))
                    .expect_err("the plan must fail"),
            };
            assert!(err.to_string().contains(needle), "{needle}: {err}");
        }
        let c = StudyConfig::from_toml(MINIMAL).unwrap();
        let err = c.plan("full", None, Path::new("o")).unwrap_err();
        assert!(err.to_string().contains("quick"), "{err}");
        let err = c.plan("quick", Some("tpu"), Path::new("o")).unwrap_err();
        assert!(err.to_string().contains("tpu"), "{err}");
    }
}
