//! The encoders' GELU on the CPU fast path against burn's own `gelu` on the flex device:
//! values (inference) and values plus gradients (autodiff), on shapes that cover one
//! element, a partial vector, and several parallel chunks.
#![cfg(feature = "encoder")]

use burn::prelude::*;
use burn::tensor::TensorData;
use optical::encoder::model::gelu;

/// Deterministic inputs over [−9, 9], with a few exact zeros, outliers and values near the
/// saturation of erf.
fn inputs(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            match i % 97 {
                0 => 0.0,
                1 => 40.0,
                2 => -40.0,
                3 => 5.51,
                4 => -5.51,
                _ => ((s >> 40) as f32 / (1u64 << 24) as f32) * 18.0 - 9.0,
            }
        })
        .collect()
}

fn values(t: Tensor<3>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

const SHAPES: [[usize; 3]; 4] = [[1, 1, 1], [1, 3, 5], [2, 17, 29], [3, 113, 203]];

#[test]
fn gelu_matches_burn_on_the_flex_device() {
    let device = Device::flex();
    for (k, dims) in SHAPES.into_iter().enumerate() {
        let x = inputs(dims.iter().product(), k as u64 + 1);
        let t = Tensor::<3>::from_data(TensorData::new(x.clone(), dims), &device);
        let fast = values(gelu(t.clone()));
        let want = values(burn::tensor::activation::gelu(t));
        assert_eq!(fast.len(), x.len());
        for ((&xi, &f), &w) in x.iter().zip(&fast).zip(&want) {
            let tol = 1e-6 * xi.abs().max(1.0);
            assert!(
                (f - w).abs() <= tol,
                "shape {dims:?}: gelu({xi}) = {f}, burn gives {w}"
            );
        }
    }
}

#[test]
fn gelu_keeps_nan() {
    let device = Device::flex();
    let t = Tensor::<3>::from_data(TensorData::new(vec![f32::NAN, 1.0], [1, 1, 2]), &device);
    let out = values(gelu(t));
    assert!(out[0].is_nan(), "NaN in, {} out", out[0]);
    assert!((out[1] - 0.841_344_7).abs() < 1e-6);
}

#[cfg(feature = "distill")]
#[test]
fn gelu_gradient_matches_burn_on_the_flex_autodiff_device() {
    let device = Device::flex().autodiff();
    for (k, dims) in SHAPES.into_iter().enumerate() {
        let len: usize = dims.iter().product();
        let x = inputs(len, k as u64 + 11);
        // A weighted sum, so each element's gradient is scaled differently.
        let w = inputs(len, k as u64 + 21);
        let weights = Tensor::<3>::from_data(TensorData::new(w, dims), &device);
        let run = |fast: bool| {
            let t =
                Tensor::<3>::from_data(TensorData::new(x.clone(), dims), &device).require_grad();
            let y = if fast {
                gelu(t.clone())
            } else {
                burn::tensor::activation::gelu(t.clone())
            };
            let loss = (y.clone() * weights.clone()).sum();
            let grads = loss.backward();
            let g = t.grad(&grads).expect("input has a gradient");
            (
                y.into_data().try_to_vec::<f32>().unwrap(),
                g.into_data().try_to_vec::<f32>().unwrap(),
            )
        };
        let (fast_y, fast_g) = run(true);
        let (want_y, want_g) = run(false);
        for i in 0..len {
            let scale = x[i].abs().max(1.0);
            assert!(
                (fast_y[i] - want_y[i]).abs() <= 1e-6 * scale,
                "shape {dims:?}: value at {} differs: {} vs {}",
                x[i],
                fast_y[i],
                want_y[i]
            );
            assert!(
                (fast_g[i] - want_g[i]).abs() <= 2e-5,
                "shape {dims:?}: gradient at {} differs: {} vs {}",
                x[i],
                fast_g[i],
                want_g[i]
            );
        }
    }
}
