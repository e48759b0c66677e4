//! Optimal-transport problems, the Sinkhorn solver and its output.

pub mod problem;
pub mod scaled;
pub mod sinkhorn;

pub use problem::{CostBatch, Embeddings, PackedDocs, Problem, SinkhornParams};
pub use sinkhorn::{solve, SinkhornKernels, SinkhornOutput, Solution};
