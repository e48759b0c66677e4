//! Data-parallel distillation on two CPU "devices" (two replicas on burn's CPU device, each
//! in its own thread) with a tiny random model: the same global batch gives the parameters
//! of a one-device run, a resumed run continues the uninterrupted one, and a failure on one
//! replica is a clear error that leaves the last checkpoint as it was.
#![cfg(feature = "distill")]

use burn::prelude::*;
use optical::distill::data::permutation;
use optical::distill::ddp::shards;
use optical::distill::export::{random_encoder, tiny_config, to_weights};
use optical::distill::{DeviceSelection, DistillConfig, GradientSync, TokenizedPairs, Trainer};
use optical::encoder::model::TransformerEncoder;

mod common;
use common::distill::{random_pairs, tiny_run};

/// The tiny settings of `distill_train.rs`, uncentred: centring subtracts the mean over the
/// micro-batch a replica sees (its shard), so only the uncentred loss is the same function
/// of the global batch on N devices.
fn config(loss: &str, batch: usize, steps: usize) -> DistillConfig {
    DistillConfig {
        center_tokens: false,
        ..tiny_run(loss, batch, steps)
    }
}

/// A trainer on `devices` CPU devices (one: no replication).
fn trainer(config: DistillConfig, data: TokenizedPairs, devices: usize) -> Trainer {
    let tiny = tiny_config();
    let student = random_encoder(&tiny, 1, &Device::flex().autodiff()).unwrap();
    let teacher = random_encoder(&tiny, 2, &Device::flex()).unwrap();
    let mut t = Trainer::new(config, student, teacher, (0, 0), data).unwrap();
    t.replicate(&vec![Device::flex(); devices]).unwrap();
    assert_eq!(t.devices(), devices);
    t
}

fn weights(model: &TransformerEncoder) -> Vec<(String, Vec<f32>)> {
    let w = to_weights(&model.valid()).unwrap();
    let mut v: Vec<(String, Vec<f32>)> = w.tensors.into_iter().map(|(k, t)| (k, t.data)).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Largest absolute difference between two models' parameters, and where.
fn max_diff(a: &TransformerEncoder, b: &TransformerEncoder) -> (f32, String) {
    let mut worst = (0.0f32, String::new());
    for ((na, va), (nb, vb)) in weights(a).iter().zip(&weights(b)) {
        assert_eq!(na, nb);
        assert_eq!(va.len(), vb.len(), "{na}");
        for (x, y) in va.iter().zip(vb) {
            let d = (x - y).abs();
            if d > worst.0 || d.is_nan() {
                worst = (d, na.clone());
            }
        }
    }
    worst
}

fn relative(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-12)
}

#[test]
fn two_devices_match_one_device() {
    // Even and uneven shards (4 → 2+2, 5 → 3+2), gradient accumulation, frozen layers, the
    // English side and a loss with an MSE term.
    let cases = [
        ("ot", 4, 1, 0, false),
        ("ot+mean-mse", 5, 2, 1, true),
        ("cls-mse", 3, 1, 0, false),
    ];
    for (loss, batch, ga, frozen, english) in cases {
        let mut c = config(loss, batch, 3);
        c.grad_accumulation = ga;
        c.freeze_layers = frozen;
        c.distill_english = english;
        let data = random_pairs(11, 3);
        let mut one = trainer(c.clone(), data.clone(), 1);
        let mut two = trainer(c.clone(), data, 2);
        assert_eq!(one.gradient_sync(), None);
        assert_eq!(two.gradient_sync(), Some(GradientSync::Gather));
        for _ in 0..c.steps {
            let a = one.step().unwrap();
            let b = two.step().unwrap();
            println!(
                "{loss} b={batch} ga={ga} step {}: loss {:.7} / {:.7}, grad norm {:.7} / {:.7}",
                a.step, a.loss, b.loss, a.grad_norm, b.grad_norm
            );
            assert_eq!(a.step, b.step);
            assert!(
                relative(a.loss, b.loss) < 1e-5,
                "{loss}: loss {} vs {}",
                a.loss,
                b.loss
            );
            assert!(
                relative(a.grad_norm, b.grad_norm) < 1e-5,
                "{loss}: gradient norm {} vs {} (gradients not averaged over the global batch?)",
                a.grad_norm,
                b.grad_norm
            );
            assert!(relative(a.ot_cost, b.ot_cost) < 1e-5, "{loss}: OT cost");
            assert!(relative(a.mse, b.mse) < 1e-5, "{loss}: MSE");
        }
        assert_eq!(one.state, two.state);
        // AdamW divides each element's step by the root mean square of its gradients, so an
        // element whose gradients nearly cancel (across steps or tokens) turns float noise of
        // summation order into steps of up to `lr`. Attention key biases are all such
        // elements: they shift every score of a query by the same amount, which the softmax
        // ignores, so their gradient is zero up to noise; they are held to the AdamW bound.
        // In every other tensor at most 1 % of the elements (at least one) may exceed 1e-5,
        // each within the AdamW bound, and the tensor's update (trained − initial) must agree
        // to 1e-3 in norm: wrongly averaged or missing gradients move every element.
        let bound = 2.0 * c.lr as f32 * c.steps as f32;
        let init = weights(&random_encoder(&tiny_config(), 1, &Device::flex()).unwrap());
        let (wa, wb) = (weights(&one.student), weights(&two.student));
        for (((na, va), (_, vb)), (_, v0)) in wa.iter().zip(&wb).zip(&init) {
            let d = va
                .iter()
                .zip(vb)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            println!("  {na}: {d:e}");
            assert!(d <= bound, "{loss}: {na} differs by {d} (> {bound})");
            if na.ends_with("attention.self.key.bias") {
                continue;
            }
            let loose = va
                .iter()
                .zip(vb)
                .filter(|(x, y)| (*x - *y).abs() > 1e-5)
                .count();
            assert!(
                loose <= (va.len() / 100).max(1),
                "{loss}: {loose} of {} elements of {na} differ by more than 1e-5 (max {d})",
                va.len()
            );
            let (mut diff2, mut update2) = (0.0f64, 0.0f64);
            for ((x, y), x0) in va.iter().zip(vb).zip(v0) {
                diff2 += ((x - y) as f64).powi(2);
                update2 += ((x - x0) as f64).powi(2);
            }
            assert!(
                diff2.sqrt() <= 1e-3 * update2.sqrt().max(1e-6),
                "{loss}: the update of {na} differs by {:e} of its norm {:e}",
                diff2.sqrt(),
                update2.sqrt()
            );
        }
        // The replicas stay identical to each other.
        let (diff, at) = max_diff(
            two.replica_student(0).unwrap(),
            two.replica_student(1).unwrap(),
        );
        assert_eq!(diff, 0.0, "{loss}: replicas drifted apart at {at}");
    }
}

#[test]
fn resume_on_two_devices_continues_the_uninterrupted_run() {
    let steps = 5;
    let c = config("ot", 4, steps);
    let data = random_pairs(10, 5);
    let mut straight = trainer(c.clone(), data.clone(), 2);
    let mut losses = Vec::new();
    for _ in 0..steps {
        losses.push(straight.step().unwrap().loss);
    }

    let dir = tempfile::tempdir().unwrap();
    let mut first = trainer(c.clone(), data.clone(), 2);
    for _ in 0..2 {
        first.step().unwrap();
    }
    first.save_checkpoint(dir.path()).unwrap();
    drop(first);
    let mut resumed = trainer(c.clone(), data, 2);
    resumed.load_checkpoint(dir.path(), 2).unwrap();
    assert_eq!(resumed.state.step, 2);
    let mut resumed_losses = Vec::new();
    for _ in 2..steps {
        resumed_losses.push(resumed.step().unwrap().loss);
    }
    println!("straight {losses:?} resumed {resumed_losses:?}");
    assert_eq!(
        &losses[2..],
        &resumed_losses[..],
        "losses after resume differ"
    );
    assert_eq!(straight.state, resumed.state);
    for k in 0..2 {
        let (diff, at) = max_diff(
            straight.replica_student(k).unwrap(),
            resumed.replica_student(k).unwrap(),
        );
        assert_eq!(
            diff, 0.0,
            "replica {k}: {at} differs by {diff} after resume"
        );
    }
}

fn files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (p.display().to_string(), std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_failing_replica_is_an_error_and_keeps_the_checkpoint() {
    let n = 8;
    let c = config("ot", 4, 3);
    // Step 2 takes positions 4..8 of epoch 0's order; replica 1 gets positions 6 and 7.
    let order = permutation(n, c.seed);
    let bad = order[6];
    let mut data = random_pairs(n, 7);
    data.student[bad] = vec![5, 999, 7];

    let mut t = trainer(c.clone(), data.clone(), 2);
    t.step().unwrap();
    let dir = tempfile::tempdir().unwrap();
    t.save_checkpoint(dir.path()).unwrap();
    let saved = files(dir.path());

    let err = t
        .step()
        .expect_err("a token id outside the vocabulary on replica 1");
    let msg = err.to_string();
    println!("{msg}");
    assert!(msg.contains("replica 1 of 2"), "{msg}");
    assert!(msg.contains("at step 2"), "{msg}");
    assert!(msg.contains("token id 999"), "{msg}");
    assert!(err.is_user_error());

    assert_eq!(files(dir.path()), saved, "the checkpoint changed");
    let mut again = trainer(c, data, 2);
    again.load_checkpoint(dir.path(), 1).unwrap();
    assert_eq!(again.state.step, 1);
    let (diff, at) = max_diff(&again.student, t.replica_student(0).unwrap());
    assert_eq!(diff, 0.0, "the failed step changed the model at {at}");
}

#[test]
fn device_settings() {
    assert_eq!(
        "default".parse::<DeviceSelection>().unwrap(),
        DeviceSelection::Default
    );
    assert_eq!(
        "all".parse::<DeviceSelection>().unwrap(),
        DeviceSelection::All
    );
    assert_eq!(
        "0, 1,3".parse::<DeviceSelection>().unwrap(),
        DeviceSelection::List(vec![0, 1, 3])
    );
    for bad in ["", "0,0", "one", "1,,2", "-1"] {
        let err = bad.parse::<DeviceSelection>().expect_err(bad).to_string();
        assert!(err.contains("parameter devices"), "{bad}: {err}");
    }
    assert_eq!(DeviceSelection::List(vec![2, 0]).to_string(), "2,0");

    let batch = [10, 11, 12, 13, 14];
    assert_eq!(
        shards(&batch, 2),
        vec![&[10, 11, 12][..], &[13, 14][..]],
        "split by position, the first shard takes the extra pair"
    );
    assert_eq!(shards(&batch, 5).iter().map(|s| s.len()).sum::<usize>(), 5);

    let c = DistillConfig {
        devices: "0,1,2".into(),
        batch_size: 2,
        ..DistillConfig::default()
    };
    let err = c
        .validate()
        .expect_err("more devices than pairs")
        .to_string();
    assert!(err.contains("batch_size"), "{err}");

    // Replication checks the first device and the batch too.
    let tiny = tiny_config();
    let student = random_encoder(&tiny, 1, &Device::flex().autodiff()).unwrap();
    let teacher = random_encoder(&tiny, 2, &Device::flex()).unwrap();
    let mut t = Trainer::new(
        config("ot", 2, 1),
        student,
        teacher,
        (0, 0),
        random_pairs(4, 1),
    )
    .unwrap();
    let err = t
        .replicate(&vec![Device::flex(); 3])
        .expect_err("3 devices, 2 pairs");
    assert!(err.to_string().contains("batch_size"), "{err}");
    assert!(t.replicate(&[]).is_err());
    t.replicate(&vec![Device::flex(); 2]).unwrap();
    assert_eq!(t.devices(), 2);
    t.replicate(&[Device::flex()]).unwrap();
    assert_eq!(t.devices(), 1);
}
