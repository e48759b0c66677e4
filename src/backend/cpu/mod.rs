//! CPU backends: the `f64` reference (ground truth) and the `f32` fast path.

pub mod fast;
pub mod reference;
pub mod simd;

pub use fast::CpuFast;
pub use reference::CpuReference;

use crate::error::{Error, Result};
use crate::ot::problem::{Embeddings, PackedDocs};

/// The two sides of a batched cost must agree on the batch size and the dimension.
pub(crate) fn check_pair_batch(x: &Embeddings, y: &Embeddings) -> Result<()> {
    if x.b != y.b {
        return Err(Error::shape(
            "y",
            format!("batch size {} to match x", x.b),
            format!("batch size {}", y.b),
        ));
    }
    if x.d != y.d {
        return Err(Error::shape(
            "y",
            format!("embedding dimension {} to match x", x.d),
            format!("dimension {}", y.d),
        ));
    }
    Ok(())
}

pub(crate) fn check_maxsim(queries: &Embeddings, docs: &PackedDocs) -> Result<()> {
    if queries.d != docs.d {
        return Err(Error::shape(
            "documents",
            format!("embedding dimension {} to match the queries", queries.d),
            format!("dimension {}", docs.d),
        ));
    }
    Ok(())
}
