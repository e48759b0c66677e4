//! The distillation run configuration: a flat TOML file whose every key is also a
//! `optical distill --<key>` flag (flags win). `optical distill --print-default-config`
//! prints the defaults below.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ddp::DeviceSelection;
use super::loss::LossKind;
use crate::error::{Error, Result};
use crate::ot::SinkhornParams;

/// Keys that `--resume` may change: how long the run goes on and how it is watched, stored
/// and computed, not what one step computes. (One exception: the learning rate decays
/// linearly to 0 at `steps`, so a run extended on resume takes larger steps from then on
/// than it would have ended with; the resume says so.)
pub const RESUMABLE_KEYS: [&str; 10] = [
    "steps",
    "eval_every",
    "checkpoint_every",
    "cache_mb",
    "backend",
    "ot_backend",
    "devices",
    "export",
    "data_dir",
    "english_bible",
];

/// Every setting of a distillation run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistillConfig {
    /// Teacher encoder (frozen, reads English): e5-small, minilm, or a path.
    pub teacher: String,
    /// Student initialisation (trainable, reads the other language): e5-small or a path.
    pub student: String,
    /// Bitext sources: `mafand:<lang>` (MAFAND-MT train split), `bible:<lang>`, or
    /// `files:<lang>:<other-language file>:<English file>` (line-aligned).
    pub sources: Vec<String>,
    /// Data directory (default: `$OPTICAL_DATA_DIR`, else `../shared/data`).
    pub data_dir: Option<PathBuf>,
    /// The English side of `bible:` sources, aligned by verse id (default: the set-up
    /// step's World English Bible, `bible/t_web.csv.gz` in the cache directory).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub english_bible: Option<PathBuf>,
    /// Pairs held out of training for the dev evaluation (taken after shuffling).
    pub dev_pairs: usize,
    /// Truncation length in tokens, specials included, for both encoders.
    pub max_length: usize,
    /// ot, cls-mse, mean-mse or ot+mean-mse.
    pub loss: String,
    /// Weight of the MSE term in `ot+mean-mse`.
    pub mse_weight: f64,
    /// Also distil the English side (student(en) → teacher(en)).
    pub distill_english: bool,
    /// Subtract each side's mean token state over the batch (real tokens only) before the
    /// loss, so that the cost `1 − cos` compares token states relative to the batch rather
    /// than along the direction that every contextual token shares. With several devices
    /// the mean is over each replica's shard of the micro-batch, so a multi-device run
    /// matches the one-device run exactly only with `center_tokens = false`.
    pub center_tokens: bool,
    /// Sinkhorn ε (cost units; the cost is 1 − cos ∈ [0, 2]).
    pub epsilon: f64,
    pub sinkhorn_iterations: usize,
    pub sinkhorn_threshold: f64,
    /// Backend of the Sinkhorn kernels: cpu, cpu-reference, wgpu, cuda. The encoders run
    /// on burn's device of the same kind (cpu and cpu-reference: burn's CPU device).
    pub backend: String,
    /// Backend of the cost and Sinkhorn kernels when it is not `backend`'s: with
    /// `backend = "wgpu"` and `ot_backend = "cuda"` the encoders train on burn's wgpu device
    /// and the OT plan comes from the PTX kernels (the cost goes through the host either
    /// way). Unset: `backend`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ot_backend: Option<String>,
    /// Devices of a data-parallel run (see [`super::ddp`]): `default` (one device, the
    /// backend's default), `all` (every device burn finds for the backend) or a
    /// comma-separated list of device indices such as `0,1,3`. One replica of student and
    /// teacher per device; `batch_size` stays the global micro-batch, split among them.
    pub devices: String,
    /// AdamW peak learning rate.
    pub lr: f64,
    pub weight_decay: f64,
    /// Linear warm-up steps, then linear decay to 0 at `steps`.
    pub warmup_steps: usize,
    /// Pairs per micro-batch (the global micro-batch: with several devices, each replica
    /// takes a contiguous share of it).
    pub batch_size: usize,
    /// Micro-batches per optimiser step.
    pub grad_accumulation: usize,
    /// Global gradient-norm clipping (0 disables).
    pub grad_clip: f64,
    /// Optimiser steps.
    pub steps: usize,
    /// Freeze the student's embedding layer.
    pub freeze_embeddings: bool,
    /// Freeze the lowest k transformer layers of the student.
    pub freeze_layers: usize,
    /// Seed of the data order.
    pub seed: u64,
    /// Checkpoint every N steps (0: only at the end).
    pub checkpoint_every: usize,
    /// Dev evaluation every N steps (0: only at the end).
    pub eval_every: usize,
    /// Which student `<out>/student` holds: `best` (the checkpoint with the best dev P@1,
    /// ties broken by MRR;
    /// the last one when there are no dev pairs) or `last`.
    pub export: String,
    /// Host memory (MiB) for cached token states: the frozen teacher's outputs and, when
    /// the embeddings and the lowest `freeze_layers` layers are frozen, the student's
    /// hidden states after that frozen prefix (computed once per pair, so a step runs only
    /// the trainable layers). When that frozen prefix is the teacher's own (same weights,
    /// as with the default e5-small teacher and student), the student's English prefix
    /// states are taken from the teacher's forward pass instead of being computed again.
    /// Beyond the budget, states are recomputed every time.
    pub cache_mb: usize,
    /// Run directory: checkpoints, log.jsonl, plots, the exported student.
    pub out: PathBuf,
}

impl Default for DistillConfig {
    fn default() -> Self {
        DistillConfig {
            teacher: "e5-small".into(),
            student: "e5-small".into(),
            sources: vec!["mafand:hau".into()],
            data_dir: None,
            english_bible: None,
            dev_pairs: 400,
            max_length: 32,
            loss: "ot".into(),
            mse_weight: 1.0,
            distill_english: true,
            center_tokens: true,
            epsilon: 0.005,
            sinkhorn_iterations: 500,
            sinkhorn_threshold: 1e-3,
            backend: "cpu".into(),
            ot_backend: None,
            devices: "default".into(),
            lr: 2e-5,
            weight_decay: 0.01,
            warmup_steps: 10,
            batch_size: 16,
            grad_accumulation: 1,
            grad_clip: 1.0,
            steps: 100,
            freeze_embeddings: true,
            freeze_layers: 10,
            seed: 0,
            checkpoint_every: 25,
            eval_every: 50,
            export: "best".into(),
            cache_mb: 4096,
            out: PathBuf::from("runs/distill"),
        }
    }
}

impl DistillConfig {
    /// The settings that define what a step computes: every key but [`RESUMABLE_KEYS`],
    /// `out` (where the run is, however it is spelt) and `sources` (paths that move with a
    /// study's directory; the checkpoint's hash of the training pairs stands for what they
    /// hold). A checkpoint keeps them, and a resume must match them.
    pub fn step_settings(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut map = match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        map.retain(|k, _| k != "out" && k != "sources" && !RESUMABLE_KEYS.contains(&k.as_str()));
        map
    }

    /// Read a TOML file (missing keys take their defaults).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "read", e))?;
        let config: Self = toml::from_str(&text).map_err(|e| Error::Format {
            path: path.into(),
            what: format!("not a valid distillation config: {e}"),
        })?;
        match config.too_large_integer() {
            Some((key, what)) => Err(Error::Format {
                path: path.into(),
                what: format!("{key}: {what}"),
            }),
            None => Ok(config),
        }
    }

    /// The first key whose integer is beyond a TOML integer (an i64), which a usize read
    /// from a file may be: the config then has no TOML form, and the conversion's own
    /// message names no key.
    fn too_large_integer(&self) -> Option<(String, String)> {
        let Ok(serde_json::Value::Object(map)) = serde_json::to_value(self) else {
            return None;
        };
        map.into_iter().find_map(|(key, value)| match value {
            serde_json::Value::Number(n) if n.as_i64().is_none() && n.as_u64().is_some() => Some((
                key,
                format!("expected an integer of at most {}, found {n}", i64::MAX),
            )),
            _ => None,
        })
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// Overlay `overrides` (a JSON object of keys to values) onto this config.
    pub fn with_overrides(
        self,
        overrides: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self> {
        // Merged as TOML values, not JSON: a config file may hold `nan` or `inf`, which JSON
        // cannot carry (it would turn them into null and fail to read them back); they
        // reach `validate` and its message instead.
        if let Some((key, what)) = self.too_large_integer() {
            return Err(Error::value(format!("distillation config {key}"), what));
        }
        let mut merged = toml::Value::try_from(&self)
            .map_err(|e| Error::value("distillation config", e.to_string()))?;
        if let Some(table) = merged.as_table_mut() {
            for (key, value) in overrides {
                // A TOML integer is an i64: a larger u64 flag has no TOML value.
                if let serde_json::Value::Number(n) = &value {
                    if n.as_i64().is_none() && n.as_u64().is_some() {
                        return Err(Error::value(
                            format!("distillation flag {key}"),
                            format!("expected an integer of at most {}, found {n}", i64::MAX),
                        ));
                    }
                }
                let value = toml::Value::try_from(&value)
                    .map_err(|e| Error::value(format!("distillation flag {key}"), e.to_string()))?;
                table.insert(key, value);
            }
        }
        merged
            .try_into()
            .map_err(|e| Error::value("distillation flags", e.to_string()))
    }

    pub fn loss_kind(&self) -> Result<LossKind> {
        self.loss.parse()
    }

    pub fn sinkhorn(&self) -> SinkhornParams {
        SinkhornParams {
            epsilon: self.epsilon,
            max_iterations: self.sinkhorn_iterations,
            threshold: self.sinkhorn_threshold,
            check_every: 5,
        }
    }

    /// The backend of the cost and Sinkhorn kernels: `ot_backend`, else `backend`.
    pub fn ot_backend_kind(&self) -> Result<crate::backend::BackendKind> {
        match &self.ot_backend {
            Some(kind) => kind.parse().map_err(|e| match e {
                Error::Parameter {
                    expected, found, ..
                } => Error::Parameter {
                    name: "ot_backend",
                    expected,
                    found,
                },
                e => e,
            }),
            None => self.backend.parse(),
        }
    }

    /// The backend of the OT kernels, opened; when `ot_backend` chose it and it cannot be
    /// opened, the error says where the choice came from and how to undo it (a resumed
    /// run keeps the `ot_backend` of its config.toml).
    pub fn open_ot_backend(
        &self,
        kind: crate::backend::BackendKind,
    ) -> Result<crate::backend::Backend> {
        crate::backend::Backend::new(kind).map_err(|e| match (e, &self.ot_backend) {
            (Error::BackendUnavailable { backend, reason }, Some(ot)) => {
                Error::BackendUnavailable {
                    backend,
                    reason: format!(
                        "{reason} (the OT kernels' backend, ot_backend = {ot}; \
                         --ot-backend {} runs them on the encoders' backend)",
                        self.backend
                    ),
                }
            }
            (e, _) => e,
        })
    }

    /// The `devices` setting, parsed.
    pub fn device_selection(&self) -> Result<DeviceSelection> {
        self.devices.parse()
    }

    /// Check every value before anything is loaded.
    pub fn validate(&self) -> Result<()> {
        self.loss_kind()?;
        self.ot_backend_kind()?;
        if self.out.as_os_str().is_empty() {
            return Err(Error::parameter(
                "out",
                "a run directory path",
                "an empty path (it would write the run into the current directory)",
            ));
        }
        let positive = [
            ("batch_size", self.batch_size),
            ("grad_accumulation", self.grad_accumulation),
            ("steps", self.steps),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(Error::parameter(name, "at least 1", v));
            }
        }
        let selection = self.device_selection()?;
        if let DeviceSelection::List(list) = &selection {
            if list.len() > self.batch_size {
                return Err(Error::parameter(
                    "batch_size",
                    format!(
                        "at least the {} devices of `devices` (each replica needs one pair \
                         of every global micro-batch)",
                        list.len()
                    ),
                    self.batch_size,
                ));
            }
        }
        // The solver names its own fields; say the config's keys instead.
        self.sinkhorn().validate().map_err(|e| match e {
            Error::Parameter {
                name,
                expected,
                found,
            } => Error::Parameter {
                name: match name {
                    "max_iterations" => "sinkhorn_iterations",
                    "threshold" => "sinkhorn_threshold",
                    other => other,
                },
                expected,
                found,
            },
            other => other,
        })?;
        // The cosine cost is at most 2: an ε the solve cannot resolve it at is refused
        // here, not at the first step's solve after the models load.
        let floor = 2.0 / crate::ot::problem::MAX_COST_OVER_EPSILON;
        if self.epsilon < floor {
            return Err(Error::parameter(
                "epsilon",
                format!(
                    "at least {floor:.3e} (the cosine cost is at most 2, and a solve resolves \
                     costs up to 2⁴² ε)"
                ),
                format!("{:e}", self.epsilon),
            ));
        }
        if self.max_length < 2 {
            return Err(Error::parameter(
                "max_length",
                "at least 2",
                self.max_length,
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::parameter("lr", "a finite number > 0", self.lr));
        }
        if !(self.grad_clip.is_finite() && self.grad_clip >= 0.0) {
            return Err(Error::parameter(
                "grad_clip",
                "a finite number >= 0",
                self.grad_clip,
            ));
        }
        if !(self.mse_weight.is_finite() && self.mse_weight >= 0.0) {
            return Err(Error::parameter(
                "mse_weight",
                "a finite number >= 0",
                self.mse_weight,
            ));
        }
        // The optimizer takes it as an f32: past f32's range it would be infinite.
        if !((self.weight_decay as f32).is_finite() && self.weight_decay >= 0.0) {
            return Err(Error::parameter(
                "weight_decay",
                "a finite number >= 0 (within f32's range, at most 3.4e38)",
                self.weight_decay,
            ));
        }
        if !matches!(self.export.as_str(), "best" | "last") {
            return Err(Error::parameter("export", "best or last", &self.export));
        }
        if self.sources.is_empty() {
            return Err(Error::parameter(
                "sources",
                "at least one bitext source",
                "none",
            ));
        }
        // A source listed twice would train on each of its pairs twice (and could put a
        // pair in the dev set and in training).
        let mut seen = std::collections::HashSet::new();
        if let Some(twice) = self.sources.iter().find(|s| !seen.insert(s.as_str())) {
            return Err(Error::parameter(
                "sources",
                "each source once",
                format!("{twice} twice"),
            ));
        }
        Ok(())
    }

    /// Learning rate at optimiser step `step` (0-based): linear warm-up, then linear
    /// decay to 0 at `steps`.
    /// Student layers frozen together with the embeddings: their output is a constant per
    /// sequence, computed once and cached (0 when the embeddings train).
    pub fn frozen_prefix(&self) -> usize {
        if self.freeze_embeddings {
            self.freeze_layers
        } else {
            0
        }
    }

    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let rest = (self.steps - self.warmup_steps.min(self.steps)).max(1) as f64;
        let done = (step - self.warmup_steps) as f64;
        self.lr * (1.0 - done / rest).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_settings_leave_out_what_may_change_or_move() {
        let settings = DistillConfig::default().step_settings();
        for key in RESUMABLE_KEYS.iter().chain(&["out", "sources"]) {
            assert!(!settings.contains_key(*key), "{key}");
        }
        for key in ["lr", "loss", "batch_size", "seed", "teacher", "student"] {
            assert!(settings.contains_key(key), "{key}");
        }
    }

    /// An integer beyond an i64 in a config file is named with its key and file (the TOML
    /// conversion's own message named neither).
    #[test]
    fn an_integer_beyond_i64_in_a_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.toml");
        std::fs::write(&path, "cache_mb = 18446744073709551615\n").unwrap();
        match DistillConfig::from_file(&path) {
            // The TOML reader may refuse it itself; either way the key is named.
            Err(e) => assert!(e.to_string().contains("cache_mb"), "{e}"),
            Ok(c) => panic!("accepted cache_mb = {}", c.cache_mb),
        }
        let c = DistillConfig {
            cache_mb: usize::MAX,
            ..DistillConfig::default()
        };
        let e = c
            .with_overrides(serde_json::Map::new())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "distillation config cache_mb: expected an integer of at most 9223372036854775807"
            ),
            "{e}"
        );
    }

    fn overrides(json: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        json.as_object().cloned().unwrap()
    }

    #[test]
    fn overrides_replace_keys_and_accept_integers_for_floats() {
        let c = DistillConfig::default()
            .with_overrides(overrides(serde_json::json!({
                "epsilon": 1, "lr": 3e-5, "steps": 7, "loss": "mean-mse"
            })))
            .unwrap();
        assert_eq!((c.epsilon, c.lr, c.steps), (1.0, 3e-5, 7));
        assert_eq!(c.loss, "mean-mse");
        let d = DistillConfig::default();
        assert_eq!(
            c.batch_size, d.batch_size,
            "keys not overridden keep their value"
        );
    }

    #[test]
    fn a_non_finite_value_from_a_file_reaches_validation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.toml");
        std::fs::write(&path, "lr = nan\n").unwrap();
        let c = DistillConfig::from_file(&path)
            .unwrap()
            .with_overrides(overrides(serde_json::json!({"steps": 1})))
            .unwrap();
        assert!(c.lr.is_nan());
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("lr") && err.contains("NaN"), "{err}");
    }

    #[test]
    fn an_epsilon_below_the_cost_resolution_is_refused_before_training() {
        let with = |e: f64| DistillConfig {
            epsilon: e,
            out: "run".into(),
            ..DistillConfig::default()
        };
        let err = with(1e-14).validate().unwrap_err().to_string();
        assert!(
            err.contains("epsilon") && err.contains("at least 4.547e-13") && err.contains("1e-14"),
            "{err}"
        );
        with(1e-12).validate().unwrap();
    }

    #[test]
    fn an_unknown_override_is_an_error() {
        let err = DistillConfig::default()
            .with_overrides(overrides(serde_json::json!({"learning_rate": 1.0})))
            .unwrap_err()
            .to_string();
        assert!(err.contains("learning_rate"), "{err}");
    }
}
