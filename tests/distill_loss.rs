//! The OT distillation loss: its gradient with respect to the student token embeddings
//! matches finite differences of the reference entropic OT value (envelope theorem), and
//! padded tokens get exactly zero gradient.
#![cfg(feature = "distill")]

use burn::prelude::*;
use optical::backend::{Backend, BackendKind};
use optical::distill::export::{random_encoder, tiny_config};
use optical::distill::loss::{entropic_ot_reference, ot_loss, TokenSide};
use optical::encoder::tokenizer::pad;
use optical::ot::SinkhornParams;
use optical::rng::SplitMix64;

/// Token embeddings `(b, t, h)` of random ids with the given lengths, from a tiny random
/// encoder, as host `f32`.
fn tiny_embeddings(seed: u64, lengths: &[usize]) -> (Vec<f32>, usize, usize) {
    let config = tiny_config();
    let device = Device::flex();
    let model = random_encoder(&config, seed, &device).unwrap();
    let mut rng = SplitMix64::new(seed + 100);
    let seqs: Vec<Vec<u32>> = lengths
        .iter()
        .map(|&l| (0..l).map(|_| rng.range(1, 49) as u32).collect())
        .collect();
    let batch = pad(&seqs, 0);
    let ids = Tensor::<2, Int>::from_data(TensorData::new(batch.ids, [batch.b, batch.t]), &device);
    let mask = Tensor::<2>::from_data(TensorData::new(batch.mask, [batch.b, batch.t]), &device);
    let x = model
        .forward(ids, mask)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    (x, batch.t, config.hidden_size)
}

fn side(
    x: &[f32],
    lengths: &[usize],
    t: usize,
    h: usize,
    device: &Device,
    grad: bool,
) -> TokenSide {
    let b = lengths.len();
    let mut tensor = Tensor::<3>::from_data(TensorData::new(x.to_vec(), [b, t, h]), device);
    if grad {
        tensor = tensor.require_grad();
    }
    let mask: Vec<f32> = lengths
        .iter()
        .flat_map(|&l| (0..t).map(move |i| if i < l { 1.0 } else { 0.0 }))
        .collect();
    TokenSide {
        x: tensor,
        mask: Tensor::<2>::from_data(TensorData::new(mask, [b, t]), device),
        lengths: lengths.to_vec(),
    }
}

#[test]
fn ot_gradient_matches_finite_differences_and_padding_gets_none() {
    let s_len = [7, 4, 5];
    let t_len = [6, 3, 6];
    let (xs, n, h) = tiny_embeddings(1, &s_len);
    let (xt, m, _) = tiny_embeddings(2, &t_len);
    let params = SinkhornParams {
        epsilon: 0.1,
        max_iterations: 20_000,
        threshold: 1e-12,
        check_every: 1,
    };
    let device = Device::flex().autodiff();
    let student = side(&xs, &s_len, n, h, &device, true);
    let teacher = side(&xt, &t_len, m, h, &device, false);
    let backend = Backend::new(BackendKind::CpuReference).unwrap();
    let (loss, stats) = ot_loss(&student, &teacher, &backend, &params).unwrap();
    assert_eq!(stats.converged, 1.0, "reference Sinkhorn did not converge");
    let grads = loss.backward();
    let g = student
        .x
        .grad(&grads)
        .expect("student embeddings have a gradient")
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();

    // Padding rows: exactly zero.
    for (p, &len) in s_len.iter().enumerate() {
        for i in len..n {
            for k in 0..h {
                let v = g[(p * n + i) * h + k];
                assert_eq!(v, 0.0, "pair {p} padded token {i} dim {k} has gradient {v}");
            }
        }
    }

    // Real entries: central differences of the f64 reference value.
    let x64: Vec<f64> = xs.iter().map(|&v| v as f64).collect();
    let t64: Vec<f64> = xt.iter().map(|&v| v as f64).collect();
    let value =
        |x: &[f64]| entropic_ot_reference(x, &s_len, n, &t64, &t_len, m, h, &params).unwrap();
    let gmax = g.iter().fold(0.0f32, |a, &v| a.max(v.abs())) as f64;
    let mut rng = SplitMix64::new(7);
    let delta = 1e-4;
    let mut worst = 0.0f64;
    for _ in 0..16 {
        let p = rng.range(0, s_len.len() - 1);
        let i = rng.range(0, s_len[p] - 1);
        let k = rng.range(0, h - 1);
        let at = (p * n + i) * h + k;
        let mut plus = x64.clone();
        plus[at] += delta;
        let mut minus = x64.clone();
        minus[at] -= delta;
        let fd = (value(&plus) - value(&minus)) / (2.0 * delta);
        let err = (fd - g[at] as f64).abs();
        println!("pair {p} token {i} dim {k}: autodiff {:.6e} finite difference {fd:.6e} |diff| {err:.2e}", g[at]);
        worst = worst.max(err);
    }
    println!("max |gradient| {gmax:.3e}, worst |diff| {worst:.3e}");
    assert!(gmax > 0.0, "the gradient is identically zero");
    assert!(
        worst <= 1e-3 * gmax + 1e-6,
        "autodiff gradient differs from finite differences by {worst:.3e} (max |g| {gmax:.3e})"
    );
}

#[test]
fn bitext_retrieval_scores_pairs_and_tolerates_mismatched_inputs() {
    use optical::distill::train::bitext_retrieval;
    // Two queries, each nearest its own candidate: P@1 = MRR = 1.
    let q = [1.0f32, 0.0, 0.0, 1.0];
    assert_eq!(bitext_retrieval(&q, &q, 2), (1.0, 1.0));
    // Swapped candidates: each query's own candidate ranks second.
    let c = [0.0f32, 1.0, 1.0, 0.0];
    assert_eq!(bitext_retrieval(&q, &c, 2), (0.0, 0.5));
    // Fewer candidates than queries: only the first pair takes part (no panic).
    assert_eq!(bitext_retrieval(&q, &q[..2], 2), (1.0, 1.0));
    assert_eq!(bitext_retrieval(&q, &q, 0), (0.0, 0.0));
}
