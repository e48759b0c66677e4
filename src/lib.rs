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
//!
//! # Example: the OT distillation loss of one pair
//!
//! The loss of OPTICAL for a student sentence of 2 tokens and a teacher sentence of 3 is
//! `⟨T, C⟩`, with `C` the cosine distance between their tokens and `T` the entropic plan
//! between uniform masses on them. Every backend computes it the same way; the CPU fast
//! path is always compiled in (`BackendKind::Wgpu` and `BackendKind::Cuda` with the
//! `wgpu` and `cuda` features).
//!
//! ```
//! use optical::ot::problem::{Embeddings, SinkhornParams};
//! use optical::{Backend, BackendKind};
//!
//! # fn main() -> optical::Result<()> {
//! // (b, n, d) = (1, 2, 3): one student set of two tokens; the teacher's has three.
//! let student = Embeddings::new("student", 1, 2, 3, vec![1., 0., 0., 0., 1., 0.], None)?;
//! let teacher = Embeddings::new(
//!     "teacher", 1, 3, 3,
//!     vec![1., 0.1, 0., 0., 1., 0.1, 0.7, 0.7, 0.],
//!     None,
//! )?;
//! let backend = Backend::new(BackendKind::Cpu)?;
//! let params = SinkhornParams { epsilon: 0.05, threshold: 1e-6, ..Default::default() };
//! let out = backend.sinkhorn_embeddings(&student, &teacher, &params)?;
//!
//! assert!(out.converged[0]);
//! // The plan moves the student's uniform mass (1/2 per token) onto the teacher's (1/3).
//! let plan = out.plan_of(0); // (2, 3), row-major
//! for i in 0..2 {
//!     let row: f64 = plan[i * 3..i * 3 + 3].iter().sum();
//!     assert!((row - 0.5).abs() < 1e-5);
//! }
//! // Each student token sends 1/3 to the teacher token it matches and 1/6 to the third,
//! // which is as far from both (cosine 0.707): ⟨T, C⟩ ≈ (0.005 + 0.005 + 0.293) / 3.
//! assert!(plan[0] > 0.333 && plan[4] > 0.333 && plan[2] > 0.166 && plan[5] > 0.166);
//! let loss = out.cost[0];
//! assert!((loss - 0.100_94).abs() < 1e-4, "loss {loss}");
//!
//! // Bad input is an error that says what was expected, never a panic.
//! let err = Embeddings::new("x", 1, 2, 3, vec![f32::NAN; 6], None).unwrap_err();
//! assert!(err.to_string().contains("x"));
//! # Ok(())
//! # }
//! ```
//!
//! # From another program
//!
//! - The input types ([`ot::Embeddings`], [`ot::PackedDocs`], [`ot::Problem`],
//!   [`retrieval::DenseVectors`]) are built only by their checking constructors and read
//!   through accessors: once built, every backend trusts them.
//! - A [`Backend`] is `Send + Sync`; several threads may share one.
//! - Distillation and studies take the process's stop signals only when asked
//!   (`RunOptions::handle_interrupts`, `StudyOptions::handle_interrupts`).
//! - Long jobs (distillation, studies, encoding, asset fetches) report progress on
//!   standard error, and some settings are read from `OPTICAL_*` environment variables
//!   (the README lists them).
//! - [`Error`] and [`Backend`] may gain variants (`#[non_exhaustive]`).
#![cfg_attr(docsrs, feature(doc_cfg))]

/// `eprintln!` that never panics: a standard error that cannot be written (a terminal that
/// hung up) loses the line, not the process's work. Every message of the crate goes through
/// it. (A closed pipe ends the process by `SIGPIPE`, as for any command-line tool: see
/// `main`.)
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

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
