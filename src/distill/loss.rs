//! Distillation losses on a batch of (student, teacher) token embeddings.
//!
//! `ot` (OPTICAL): for each pair, `C_ij = 1 − cos(student_i, teacher_j)` over the real
//! tokens, computed in Burn so that it carries the student's autodiff graph; the plan
//! `T = Sinkhorn(C, ε)` with uniform weights over real tokens comes from the optical kernels
//! (`Backend::sinkhorn`) on the detached cost and is handed back as a constant; the loss is
//! `⟨T, C⟩` averaged over pairs. Because `T` is a constant, the gradient reaching the
//! student is `Σ_ij T_ij ∂C_ij` — by the envelope theorem, the gradient of the entropic OT
//! value `W_ε(C) = ⟨a, f⟩ + ⟨b, g⟩` at convergence, which [`entropic_ot_reference`]
//! computes in `f64` for the finite-difference test.
//!
//! Padding rows and columns have zero weight, so their plan entries are exactly 0 and they
//! receive exactly zero gradient.
//!
//! Baselines: `cls-mse` / `mean-mse` (the student's CLS / mean-pooled vector regressed onto
//! the teacher's, as in multilingual knowledge distillation) and `ot+mean-mse`.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use burn::prelude::*;

use crate::backend::{Backend, BackendKind};
use crate::error::{Error, Result};
use crate::ot::{Problem, SinkhornParams};

/// Which loss `optical distill` minimises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossKind {
    Ot,
    ClsMse,
    MeanMse,
    OtMeanMse,
}

impl LossKind {
    pub fn name(self) -> &'static str {
        match self {
            LossKind::Ot => "ot",
            LossKind::ClsMse => "cls-mse",
            LossKind::MeanMse => "mean-mse",
            LossKind::OtMeanMse => "ot+mean-mse",
        }
    }

    pub fn uses_ot(self) -> bool {
        matches!(self, LossKind::Ot | LossKind::OtMeanMse)
    }
}

impl fmt::Display for LossKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for LossKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "ot" => LossKind::Ot,
            "cls-mse" => LossKind::ClsMse,
            "mean-mse" => LossKind::MeanMse,
            "ot+mean-mse" => LossKind::OtMeanMse,
            other => {
                return Err(Error::parameter(
                    "loss",
                    "ot, cls-mse, mean-mse or ot+mean-mse",
                    other,
                ))
            }
        })
    }
}

/// Token embeddings of one side of a batch: `(b, t, h)` with a `(b, t)` mask (1 real,
/// 0 padding, real tokens first) and the real lengths.
#[derive(Clone, Debug)]
pub struct TokenSide {
    pub x: Tensor<3>,
    pub mask: Tensor<2>,
    pub lengths: Vec<usize>,
}

/// What one loss evaluation reports besides the loss tensor.
#[derive(Clone, Debug, Default)]
pub struct LossStats {
    /// Mean `⟨T, C⟩` over pairs (0 when the loss has no OT term).
    pub ot_cost: f64,
    /// Mean Sinkhorn iterations per pair.
    pub sinkhorn_iterations: f64,
    /// Fraction of pairs whose Sinkhorn solve converged.
    pub converged: f64,
    /// Mean MSE term (0 when the loss has none).
    pub mse: f64,
    /// Time in the OT part: cost to host, Sinkhorn, plan back to the device.
    pub ot_time: Duration,
    /// Of which: the device → host copy of the cost plus the host → device copy of the plan.
    pub transfer_time: Duration,
}

/// Rows scaled to unit L2 norm; a zero row stays zero (cos with it is 0). The `1e-12`
/// inside the square root keeps the gradient finite at zero.
pub fn normalize_tokens(x: Tensor<3>) -> Tensor<3> {
    let norm = x.clone().powi_scalar(2).sum_dim(2).add_scalar(1e-12).sqrt();
    x / norm
}

/// `C = 1 − cos` between every student and teacher token, `(b, n, m)`.
pub fn cosine_cost(student: Tensor<3>, teacher: Tensor<3>) -> Tensor<3> {
    let s = normalize_tokens(student);
    let t = normalize_tokens(teacher);
    s.matmul(t.swap_dims(1, 2)).neg().add_scalar(1.0)
}

fn host_f32<const D: usize>(t: Tensor<D>, what: &'static str) -> Result<Vec<f32>> {
    crate::encoder::read_f32(t, what)
}

fn weights(lengths: &[usize], width: usize) -> Vec<f64> {
    lengths
        .iter()
        .flat_map(|&len| (0..width).map(move |i| if i < len { 1.0 } else { 0.0 }))
        .collect()
}

/// The OT loss `mean_p ⟨T_p, C_p⟩` with `T` from the optical Sinkhorn kernels held
/// constant. `teacher` is a constant (no gradient flows into it).
pub fn ot_loss(
    student: &TokenSide,
    teacher: &TokenSide,
    backend: &Backend,
    params: &SinkhornParams,
) -> Result<(Tensor<1>, LossStats)> {
    let [b, n, h] = student.x.dims();
    let [bt, m, ht] = teacher.x.dims();
    if b != bt || h != ht {
        return Err(Error::shape(
            "teacher token embeddings",
            format!("({b}, m, {h}) to match the student's batch and hidden size"),
            format!("({bt}, {m}, {ht})"),
        ));
    }
    let device = student.x.device();
    let cost = cosine_cost(student.x.clone(), teacher.x.clone());
    let t0 = Instant::now();
    let host = host_f32(cost.clone().detach(), "read the cost matrix")?;
    let down = t0.elapsed();
    if let Some(k) = host.iter().position(|v| !v.is_finite()) {
        return Err(Error::value(
            "distillation loss",
            format!(
                "expected a finite cost between student and teacher tokens, found {} at pair \
                 {}: the student's outputs overflowed, so training has diverged; lower the \
                 learning rate (lr), keep gradient clipping on (grad_clip) or use warm-up steps",
                host[k],
                k / (n * m)
            ),
        ));
    }
    let problem = Problem::new(
        b,
        n,
        m,
        host.iter().map(|&v| v as f64).collect(),
        Some(weights(&student.lengths, n)),
        Some(weights(&teacher.lengths, m)),
    )?;
    let out = backend.sinkhorn(&problem, params)?;
    let t1 = Instant::now();
    let plan: Vec<f32> = out.plan.iter().map(|&v| v as f32).collect();
    let plan = Tensor::<3>::from_data(TensorData::new(plan, [b, n, m]), &device);
    let up = t1.elapsed();
    let ot_time = t0.elapsed();
    let loss = (plan * cost).sum().div_scalar(b as f64);
    let stats = LossStats {
        ot_cost: out.cost.iter().sum::<f64>() / b as f64,
        sinkhorn_iterations: out.iterations.iter().map(|&i| i as f64).sum::<f64>() / b as f64,
        converged: out.converged_count() as f64 / b as f64,
        mse: 0.0,
        ot_time,
        transfer_time: down + up,
    };
    Ok((loss, stats))
}

/// Mean over real tokens, `(b, h)`.
pub fn mean_pool(side: &TokenSide) -> Tensor<2> {
    let [b, t, _] = side.x.dims();
    let mask = side.mask.clone().reshape([b, t, 1]);
    let sum = (side.x.clone() * mask.clone())
        .sum_dim(1)
        .squeeze_dim::<2>(1);
    let count = mask.sum_dim(1).squeeze_dim::<2>(1).clamp_min(1.0);
    sum / count
}

/// First token, `(b, h)`.
pub fn cls_pool(side: &TokenSide) -> Tensor<2> {
    let [b, _, h] = side.x.dims();
    side.x.clone().narrow(1, 0, 1).reshape([b, h])
}

/// Mean squared error between sentence vectors, averaged over elements.
pub fn mse(student: Tensor<2>, teacher: Tensor<2>) -> Tensor<1> {
    (student - teacher).powi_scalar(2).mean()
}

/// The loss of `kind` on one batch.
pub fn distill_loss(
    kind: LossKind,
    student: &TokenSide,
    teacher: &TokenSide,
    backend: &Backend,
    params: &SinkhornParams,
    mse_weight: f64,
) -> Result<(Tensor<1>, LossStats)> {
    let mse_term = |pool: fn(&TokenSide) -> Tensor<2>| mse(pool(student), pool(teacher));
    match kind {
        LossKind::Ot => ot_loss(student, teacher, backend, params),
        LossKind::ClsMse | LossKind::MeanMse => {
            let pool = if kind == LossKind::ClsMse {
                cls_pool
            } else {
                mean_pool
            };
            let loss = mse_term(pool);
            let value = host_f32(loss.clone().detach(), "read the loss")?[0] as f64;
            Ok((
                loss,
                LossStats {
                    mse: value,
                    ..LossStats::default()
                },
            ))
        }
        LossKind::OtMeanMse => {
            let (ot, mut stats) = ot_loss(student, teacher, backend, params)?;
            let m = mse_term(mean_pool);
            stats.mse = host_f32(m.clone().detach(), "read the loss")?[0] as f64;
            Ok((ot + m.mul_scalar(mse_weight), stats))
        }
    }
}

/// The entropic OT value `mean_p W_ε(C_p)`, `W_ε = ⟨a, f⟩ + ⟨b, g⟩` at convergence, of
/// host token embeddings `(b, n, h)` / `(b, m, h)`, in `f64` with the CPU reference
/// kernels. Its gradient with respect to the student embeddings is the gradient of
/// [`ot_loss`] (envelope theorem), which the finite-difference test checks.
#[allow(clippy::too_many_arguments)]
pub fn entropic_ot_reference(
    student: &[f64],
    student_lengths: &[usize],
    n: usize,
    teacher: &[f64],
    teacher_lengths: &[usize],
    m: usize,
    h: usize,
    params: &SinkhornParams,
) -> Result<f64> {
    let b = student_lengths.len();
    let unit = |v: &[f64]| -> Vec<f64> {
        let norm = (v.iter().map(|x| x * x).sum::<f64>() + 1e-12).sqrt();
        v.iter().map(|x| x / norm).collect()
    };
    let mut cost = vec![0.0f64; b * n * m];
    for p in 0..b {
        for i in 0..n {
            let s = unit(&student[(p * n + i) * h..(p * n + i + 1) * h]);
            for j in 0..m {
                let t = unit(&teacher[(p * m + j) * h..(p * m + j + 1) * h]);
                let dot: f64 = s.iter().zip(&t).map(|(x, y)| x * y).sum();
                cost[(p * n + i) * m + j] = 1.0 - dot;
            }
        }
    }
    let a = weights(student_lengths, n);
    let bw = weights(teacher_lengths, m);
    let problem = Problem::new(b, n, m, cost, Some(a), Some(bw))?;
    let out = Backend::new(BackendKind::CpuReference)?.sinkhorn(&problem, params)?;
    let mut total = 0.0;
    for p in 0..b {
        for i in 0..n {
            total += problem.a[p * n + i] * out.f[p * n + i];
        }
        for j in 0..m {
            total += problem.b[p * m + j] * out.g[p * m + j];
        }
    }
    Ok(total / b as f64)
}
