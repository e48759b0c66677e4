//! OPTICAL distillation: a frozen teacher encodes English, a student initialised from a
//! multilingual encoder encodes the parallel sentence, and the student learns from the
//! optimal-transport plan between their token embeddings (plan from the optical Sinkhorn
//! kernels, held constant; loss `⟨T, C⟩` with `C = 1 − cos`).
//!
//! [`config`] (the run settings) → [`data`] (bitext sources) → [`train`] (the step,
//! checkpoints, dev evaluation) with [`loss`] → [`run()`] (the whole run: log, progress,
//! plots via [`plot`], the exported student via [`export`]). [`ddp`] spreads the step over
//! several devices (`--devices`).

pub mod config;
pub mod data;
pub mod ddp;
pub mod export;
pub mod loss;
pub mod plot;
pub mod run;
pub mod train;

pub use config::DistillConfig;
pub use ddp::{DeviceSelection, GradientSync};
pub use loss::LossKind;
pub use run::{run, RunOptions, RunSummary};
pub use train::{TokenizedPairs, Trainer};
