//! Pooling of token embeddings into sentence embeddings, and L2 normalisation: separate,
//! explicit steps after the encoder's forward pass.

use std::fmt;
use std::str::FromStr;

use burn::prelude::*;

use crate::error::{Error, Result};

/// How token embeddings become one vector per text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over real tokens (specials included, padding excluded).
    Mean,
    /// The first token's embedding (`[CLS]` / `<s>`).
    Cls,
    /// No pooling: every real token's embedding.
    Tokens,
}

impl Pooling {
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::Tokens => "tokens",
        }
    }
}

impl fmt::Display for Pooling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Pooling {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "mean" => Ok(Pooling::Mean),
            "cls" => Ok(Pooling::Cls),
            "tokens" => Ok(Pooling::Tokens),
            other => Err(Error::parameter(
                "pooling",
                "one of mean, cls, tokens",
                other,
            )),
        }
    }
}

/// Mean of the real tokens: `Σ_t mask_t x_t / Σ_t mask_t`, `x (b, t, h)`, `mask (b, t)`.
pub fn mean_pool(x: Tensor<3>, mask: Tensor<2>) -> Tensor<2> {
    let [b, t, h] = x.dims();
    let m = mask.reshape([b, t, 1]);
    let count = m.clone().sum_dim(1).clamp_min(1e-9); // (b, 1, 1)
    (x * m).sum_dim(1).div(count).reshape([b, h])
}

/// The first token of each sequence, `(b, h)`.
pub fn cls_pool(x: Tensor<3>) -> Tensor<2> {
    let [b, _, h] = x.dims();
    x.narrow(1, 0, 1).reshape([b, h])
}

/// One row scaled to unit L2 norm on the host, `x / max(‖x‖, 1e-12)` as
/// [`l2_normalize`], the norm and the division in `f64`: no overflow for any finite row.
pub fn l2_normalize_row(row: &mut [f32]) {
    let norm = row
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt()
        .max(1e-12);
    row.iter_mut()
        .for_each(|v| *v = (f64::from(*v) / norm) as f32);
}

/// Rows scaled to unit L2 norm (`x / max(‖x‖, 1e-12)`, as `torch.nn.functional.normalize`).
pub fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x
        .clone()
        .powf_scalar(2.0)
        .sum_dim(1)
        .sqrt()
        .clamp_min(1e-12);
    x.div(norm)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Components whose f32 squares overflow still give a unit row (the f32 norm was
    /// infinite, and the row became zeros); a zero row stays zero.
    #[test]
    fn rows_with_huge_components_normalise() {
        let mut row = [3e19f32, -4e19, 0.0];
        l2_normalize_row(&mut row);
        assert_eq!(row, [0.6, -0.8, 0.0]);
        let mut row = [3e38f32, 3e38];
        l2_normalize_row(&mut row);
        assert!((row[0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-7);
        let mut zero = [0.0f32; 4];
        l2_normalize_row(&mut zero);
        assert_eq!(zero, [0.0; 4]);
    }
}
