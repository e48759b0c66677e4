//! The whole backward pass of the student encoder (Burn autodiff on the `flex` CPU device)
//! against central finite differences: the directional derivative of the training loss
//! along a random direction over every trainable parameter, from the gradients the
//! optimiser receives, matches `(L(W + tD) − L(W − tD)) / 2t`.
//!
//! The OT loss's own gradient (envelope theorem) is checked at the embedding level in
//! `distill_loss.rs`; this test covers the encoder under it (attention with padding masks,
//! LayerNorm, GELU, embeddings), so the two compose into the gradient the student gets.
#![cfg(feature = "distill")]

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use optical::distill::export::{random_encoder, tiny_config};
use optical::distill::{DistillConfig, TokenizedPairs, Trainer};
use optical::rng::SplitMix64;

fn pairs(n: usize, seed: u64) -> TokenizedPairs {
    let mut rng = SplitMix64::new(seed);
    let mut seq = |lo: usize, hi: usize| -> Vec<u32> {
        let len = rng.range(lo, hi);
        (0..len).map(|_| rng.range(1, 49) as u32).collect()
    };
    // Ragged lengths so that every batch carries padding.
    let student = (0..n).map(|_| seq(2, 9)).collect();
    let teacher = (0..n).map(|_| seq(3, 7)).collect();
    let english = (0..n).map(|_| seq(2, 8)).collect();
    TokenizedPairs {
        student,
        teacher,
        student_english: english,
    }
}

fn trainer(loss: &str, distill_english: bool) -> Trainer {
    let tiny = tiny_config();
    let student = random_encoder(&tiny, 11, &Device::flex().autodiff()).unwrap();
    let teacher = random_encoder(&tiny, 12, &Device::flex()).unwrap();
    let config = DistillConfig {
        loss: loss.into(),
        batch_size: 4,
        steps: 1,
        freeze_embeddings: false,
        freeze_layers: 0,
        distill_english,
        backend: "cpu".into(),
        ..DistillConfig::default()
    };
    let mut data = pairs(4, 5);
    if !distill_english {
        data.student_english.clear();
    }
    Trainer::new(config, student, teacher, (0, 0), data).unwrap()
}

/// A deterministic random direction per parameter, in visiting order.
fn direction(len: usize, k: usize) -> Vec<f32> {
    let mut rng = SplitMix64::new(1000 + k as u64);
    (0..len)
        .map(|_| if rng.uniform() < 0.5 { -1e-3 } else { 1e-3 })
        .collect()
}

/// `Σ_p ⟨grad_p, D_p⟩` over the trainable parameters.
struct Dot<'a> {
    grads: &'a GradientsParams,
    k: usize,
    sum: f64,
    params: usize,
}

impl ModuleVisitor for Dot<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let k = self.k;
        self.k += 1;
        if let Some(g) = self.grads.get::<D>(param.id) {
            let g = g.into_data().try_to_vec::<f32>().unwrap();
            let d = direction(g.len(), k);
            self.sum += g.iter().zip(&d).map(|(a, b)| (a * b) as f64).sum::<f64>();
            self.params += 1;
        }
    }
}

/// `W ← W + t·D` on every float parameter.
struct Shift {
    t: f32,
    k: usize,
}

impl ModuleMapper for Shift {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let k = self.k;
        self.k += 1;
        let t = self.t;
        param.map(|w| {
            let shape = w.shape();
            let d = direction(shape.num_elements(), k);
            let delta =
                Tensor::<1>::from_data(TensorData::new(d, [shape.num_elements()]), &w.device())
                    .reshape(shape)
                    .mul_scalar(t);
            w + delta
        })
    }
}

fn loss_at(t: &mut Trainer, idx: &[usize]) -> f64 {
    t.loss_on(idx).unwrap().0.detach().into_scalar::<f32>() as f64
}

fn check(loss: &str, distill_english: bool) {
    let mut t = trainer(loss, distill_english);
    let idx = [0, 1, 2, 3];
    let (value, _) = t.loss_on(&idx).unwrap();
    let grads = GradientsParams::from_grads(value.backward(), &t.student);
    let mut dot = Dot {
        grads: &grads,
        k: 0,
        sum: 0.0,
        params: 0,
    };
    t.student.visit(&mut dot);
    assert!(
        dot.params > 10,
        "{loss}: only {} parameters have gradients",
        dot.params
    );
    let original = t.student.clone();
    let step = 1.0f32;
    t.student = original.clone().map(&mut Shift { t: step, k: 0 });
    let plus = loss_at(&mut t, &idx);
    t.student = original.clone().map(&mut Shift { t: -step, k: 0 });
    let minus = loss_at(&mut t, &idx);
    let fd = (plus - minus) / (2.0 * step as f64);
    let rel = (fd - dot.sum).abs() / fd.abs().max(dot.sum.abs()).max(1e-12);
    println!(
        "{loss} (English side {distill_english}): autodiff {:.6e} finite difference {fd:.6e} relative error {rel:.2e}",
        dot.sum
    );
    assert!(
        fd.abs() > 1e-6,
        "{loss}: the direction does not move the loss ({fd:e})"
    );
    assert!(
        rel < 2e-2,
        "{loss}: autodiff {} vs finite difference {fd}",
        dot.sum
    );
}

#[test]
fn encoder_backward_matches_finite_differences_mean_mse() {
    check("mean-mse", false);
    check("mean-mse", true);
}

#[test]
fn encoder_backward_matches_finite_differences_cls_mse() {
    check("cls-mse", false);
}
