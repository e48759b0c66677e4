//! CPU backends: the `f64` reference (ground truth) and the `f32` fast path.

pub mod fast;
pub mod reference;
pub mod simd;

pub use fast::CpuFast;
pub use reference::CpuReference;

use crate::error::{Error, Result};
use crate::ot::problem::{Embeddings, PackedDocs};

/// The two sides of a batched cost must agree on the batch size and the dimension.
/// What a solve from embeddings checks first, on every backend and in its device timing:
/// the parameters, an ε that resolves cosine costs (they lie in [0, 2]: the same bound
/// whether the solve is fused or not), and two batches that pair up.
pub(crate) fn check_embeddings_solve(
    x: &Embeddings,
    y: &Embeddings,
    params: &crate::ot::problem::SinkhornParams,
) -> Result<()> {
    params.validate()?;
    crate::ot::problem::check_cost_resolution(2.0, params.epsilon)?;
    check_pair_batch(x, y)
}

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
