//! # optical
//!
//! Optimal-transport knowledge distillation for cross-lingual retrieval, built on
//! hand-written kernels: a CPU reference and fast path, WGSL (wgpu) and PTX (CUDA).
//!
//! Data flows one way: files → validated arrays ([`ot::problem`]) → backend kernels
//! ([`backend`]) → the Sinkhorn solver ([`ot::sinkhorn`]) → outputs; datasets ([`data`]) →
//! encoder → search and trec_eval-exact measures ([`retrieval`]) → tables and plots
//! ([`report`]); bitext → distillation (`distill`) → the study's grid of runs, statistics
//! and report (`study`).

#[cfg(feature = "encoder")]
pub mod assets;
pub mod backend;
pub mod bench;
pub mod cli;
pub mod data;
#[cfg(feature = "distill")]
pub mod distill;
#[cfg(feature = "encoder")]
pub mod encoder;
pub mod error;
pub mod io;
pub mod ot;
pub mod phases;
pub mod report;
pub mod retrieval;
pub mod rng;
#[cfg(feature = "distill")]
pub mod study;

pub use backend::{Backend, BackendKind};
pub use error::{Error, Result};
