//! The training loop on a tiny random model: one step lowers the loss, and a checkpoint
//! resumed mid-run continues bit for bit.
#![cfg(feature = "distill")]

use burn::prelude::*;
use optical::distill::export::{random_encoder, tiny_config, to_weights};
use optical::distill::{DistillConfig, Trainer};

mod common;
use common::distill::{random_pairs, tiny_run};

fn config(loss: &str, batch: usize, steps: usize) -> DistillConfig {
    tiny_run(loss, batch, steps)
}

fn trainer(config: DistillConfig, pairs: usize) -> Trainer {
    let tiny = tiny_config();
    let student = random_encoder(&tiny, 1, &Device::flex().autodiff()).unwrap();
    let teacher = random_encoder(&tiny, 2, &Device::flex()).unwrap();
    Trainer::new(config, student, teacher, (0, 0), random_pairs(pairs, 3)).unwrap()
}

fn loss_value(t: &mut Trainer, idx: &[usize]) -> f32 {
    t.loss_on(idx).unwrap().0.detach().into_scalar()
}

#[test]
fn one_step_lowers_the_loss() {
    for loss in ["ot", "mean-mse", "cls-mse", "ot+mean-mse"] {
        let mut t = trainer(config(loss, 8, 1), 8);
        let all: Vec<usize> = (0..8).collect();
        let before = loss_value(&mut t, &all);
        let record = t.step().unwrap();
        let after = loss_value(&mut t, &all);
        println!(
            "{loss}: before {before:.6} after {after:.6} grad norm {:.4}",
            record.grad_norm
        );
        assert!(record.grad_norm > 0.0, "{loss}: zero gradient");
        assert!(after < before, "{loss}: loss went from {before} to {after}");
    }
}

fn weights_of(t: &Trainer) -> Vec<(String, Vec<u32>)> {
    let w = to_weights(&t.student.valid()).unwrap();
    let mut v: Vec<(String, Vec<u32>)> = w
        .tensors
        .into_iter()
        .map(|(k, t)| (k, t.data.iter().map(|x| x.to_bits()).collect()))
        .collect();
    v.sort();
    v
}

#[test]
fn resume_continues_bit_for_bit() {
    let steps = 4;
    let mut straight = trainer(config("ot", 4, steps), 10);
    let mut losses = Vec::new();
    for _ in 0..steps {
        losses.push(straight.step().unwrap().loss);
    }

    let dir = tempfile::tempdir().unwrap();
    let mut first = trainer(config("ot", 4, steps), 10);
    for _ in 0..2 {
        first.step().unwrap();
    }
    first.save_checkpoint(dir.path()).unwrap();
    drop(first);
    let mut resumed = trainer(config("ot", 4, steps), 10);
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
    let (a, b) = (weights_of(&straight), weights_of(&resumed));
    for ((na, va), (nb, vb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        let diff = va.iter().zip(vb).filter(|(x, y)| x != y).count();
        assert_eq!(diff, 0, "{na}: {diff} values differ after resume");
    }
}

#[test]
fn bad_settings_are_errors() {
    let tiny = tiny_config();
    let plain = random_encoder(&tiny, 1, &Device::flex()).unwrap();
    let teacher = random_encoder(&tiny, 2, &Device::flex()).unwrap();
    let err = Trainer::new(
        config("ot", 4, 1),
        plain,
        teacher,
        (0, 0),
        random_pairs(8, 3),
    )
    .err()
    .expect("a student without autodiff is refused");
    assert!(err.to_string().contains("autodiff"), "{err}");
    let student = random_encoder(&tiny, 1, &Device::flex().autodiff()).unwrap();
    let teacher = random_encoder(&tiny, 2, &Device::flex()).unwrap();
    let err = Trainer::new(
        config("wasserstein", 4, 1),
        student,
        teacher,
        (0, 0),
        random_pairs(8, 3),
    )
    .err()
    .expect("an unknown loss is refused");
    assert!(err.to_string().contains("ot+mean-mse"), "{err}");
}

/// With the embeddings and the lowest layer frozen, the student runs only its top layer on
/// cached frozen-prefix states; the loss and the gradient step must be those of the whole
/// encoder (the same model trained with trainable embeddings has the same forward).
#[test]
fn cached_frozen_prefix_matches_the_whole_forward() {
    for loss in ["ot", "mean-mse"] {
        let prefix = DistillConfig {
            freeze_embeddings: true,
            freeze_layers: 1,
            ..config(loss, 4, 2)
        };
        let whole = DistillConfig {
            freeze_embeddings: false,
            freeze_layers: 1,
            ..config(loss, 4, 2)
        };
        let uncached = DistillConfig {
            cache_mb: 0,
            ..prefix.clone()
        };
        let mut a = trainer(prefix, 8);
        let mut b = trainer(whole, 8);
        let mut c = trainer(uncached, 8);
        assert_eq!(a.frozen_prefix(), 1);
        assert_eq!(b.frozen_prefix(), 0);
        let idx: Vec<usize> = (0..8).collect();
        // Twice: the second call reads the cache.
        for _ in 0..2 {
            let (la, lb) = (loss_value(&mut a, &idx), loss_value(&mut b, &idx));
            assert!(
                (la - lb).abs() <= 1e-5 * lb.abs().max(1.0),
                "{loss}: {la} vs {lb}"
            );
            // Beyond the cache budget the states are recomputed: the same numbers.
            let lc = loss_value(&mut c, &idx);
            assert_eq!(
                la.to_bits(),
                lc.to_bits(),
                "{loss}: cached {la} vs uncached {lc}"
            );
        }
    }
}

/// The dev evaluation keeps each dev batch's frozen-prefix states and runs only the
/// trained layers after the first time: the vectors are the bits of the whole model's,
/// before and after a step changes the trained layers, for other batches of the same
/// sentences, and with no cache budget at all.
#[test]
fn dev_vectors_from_kept_prefix_states_are_the_whole_models() {
    let frozen = DistillConfig {
        freeze_embeddings: true,
        freeze_layers: 1,
        ..config("ot", 4, 2)
    };
    let uncached = DistillConfig {
        cache_mb: 0,
        ..frozen.clone()
    };
    let mut a = trainer(frozen, 8);
    let mut c = trainer(uncached, 8);
    let dev = random_pairs(40, 11).student;
    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<u32>>();
    // Every layer, by the plain forward pass of the student as it is now.
    let whole = |t: &Trainer, seqs: &[Vec<u32>]| {
        let model = t.student.valid();
        let device = Device::flex();
        let mut out = Vec::new();
        for chunk in seqs.chunks(32) {
            let batch = optical::encoder::tokenizer::pad(chunk, 0);
            let (ids, mask) = batch.tensors(&device).unwrap();
            let x = model.forward(ids, mask.clone());
            let v = optical::encoder::pooling::l2_normalize(optical::encoder::pooling::mean_pool(
                x, mask,
            ));
            out.extend(v.into_data().try_to_vec::<f32>().unwrap());
        }
        bits(out)
    };
    for round in 0..2 {
        let want = whole(&a, &dev);
        // First computed and kept, then taken from the cache.
        assert_eq!(
            bits(a.student_vectors(&dev).unwrap()),
            want,
            "round {round}"
        );
        assert_eq!(
            bits(a.student_vectors(&dev).unwrap()),
            want,
            "round {round}, kept"
        );
        // The same sentences in other batches.
        let reversed: Vec<Vec<u32>> = dev.iter().rev().cloned().collect();
        let mut got = bits(a.student_vectors(&reversed).unwrap());
        let h = got.len() / dev.len();
        let rows: Vec<Vec<u32>> = got.chunks(h).rev().map(<[u32]>::to_vec).collect();
        got = rows.concat();
        assert_eq!(got, want, "round {round}, reversed");
        assert_eq!(
            bits(c.student_vectors(&dev).unwrap()),
            whole(&c, &dev),
            "round {round}, no budget"
        );
        a.step().unwrap();
        c.step().unwrap();
    }
}

#[test]
fn resume_with_a_cached_frozen_prefix_continues_bit_for_bit() {
    let frozen = || DistillConfig {
        freeze_embeddings: true,
        freeze_layers: 1,
        ..config("ot", 4, 4)
    };
    let mut straight = trainer(frozen(), 10);
    for _ in 0..4 {
        straight.step().unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let mut first = trainer(frozen(), 10);
    for _ in 0..2 {
        first.step().unwrap();
    }
    first.save_checkpoint(dir.path()).unwrap();
    drop(first);
    let mut resumed = trainer(frozen(), 10);
    resumed.load_checkpoint(dir.path(), 2).unwrap();
    for _ in 2..4 {
        resumed.step().unwrap();
    }
    assert_eq!(weights_of(&straight), weights_of(&resumed));
}

#[test]
fn nothing_to_train_is_an_error() {
    let tiny = tiny_config();
    let student = random_encoder(&tiny, 1, &Device::flex().autodiff()).unwrap();
    let teacher = random_encoder(&tiny, 2, &Device::flex()).unwrap();
    let all_frozen = DistillConfig {
        freeze_embeddings: true,
        freeze_layers: tiny.num_hidden_layers,
        ..config("ot", 4, 1)
    };
    let err = Trainer::new(all_frozen, student, teacher, (0, 0), random_pairs(8, 3))
        .err()
        .expect("a student with nothing trainable is refused");
    assert!(
        err.to_string().contains("nothing would be trained"),
        "{err}"
    );
}

/// When the student's frozen prefix is the teacher's own (same weights) and the English
/// side is distilled, the student's English prefix states come from the teacher's forward
/// pass. That must change no number: the losses and weights equal those of a run that
/// caches nothing (`cache_mb = 0`, so every state is computed by its own model each step).
/// Pairs whose English ids differ from the teacher's are not shared; other weights, a
/// trainable embedding or an undistilled English side turn the sharing off.
#[test]
fn shared_teacher_prefix_changes_no_number() {
    let tiny = tiny_config();
    let shared_config = |cache_mb: usize| DistillConfig {
        freeze_embeddings: true,
        freeze_layers: 1,
        distill_english: true,
        cache_mb,
        ..config("ot+mean-mse", 4, 4)
    };
    let make = |config: DistillConfig, teacher_seed: u64, english_is_teacher: bool| {
        let student = random_encoder(&tiny, 1, &Device::flex().autodiff()).unwrap();
        let teacher = random_encoder(&tiny, teacher_seed, &Device::flex()).unwrap();
        let mut pairs = random_pairs(10, 3);
        if english_is_teacher {
            pairs.student_english = pairs.teacher.clone();
            // One pair keeps different English ids: it must not take the teacher's state.
            pairs.student_english[5] = vec![7, 8, 9, 10];
        }
        Trainer::new(config, student, teacher, (0, 0), pairs).unwrap()
    };
    let run = |t: &mut Trainer| -> (Vec<f64>, Vec<(String, Vec<u32>)>) {
        let losses = (0..4).map(|_| t.step().unwrap().loss).collect();
        (losses, weights_of(t))
    };

    let mut sharing = make(shared_config(4096), 1, true);
    assert_eq!(sharing.shared_prefix(), Some(1));
    let mut separate = make(shared_config(0), 1, true);
    let (a, b) = (run(&mut sharing), run(&mut separate));
    println!("sharing {:?} separate {:?}", a.0, b.0);
    assert_eq!(a.0, b.0, "losses");
    assert!(a.1 == b.1, "trained weights differ");

    assert_eq!(make(shared_config(4096), 2, true).shared_prefix(), None);
    let no_english = DistillConfig {
        distill_english: false,
        ..shared_config(4096)
    };
    assert_eq!(make(no_english, 1, true).shared_prefix(), None);
    let trainable_embeddings = DistillConfig {
        freeze_embeddings: false,
        ..shared_config(4096)
    };
    assert_eq!(make(trainable_embeddings, 1, true).shared_prefix(), None);
}

/// Past the first epoch a straight run takes its cached states from the batches of the
/// first; a resumed run computes them again in other batches. The states must not depend
/// on the batch they were computed in, or the two runs part in their last bits (sequences
/// long enough that a padded batch's sums are split otherwise than an unpadded one's).
#[test]
fn resume_after_the_first_epoch_continues_bit_for_bit() {
    let frozen = |cache_mb: usize| DistillConfig {
        freeze_embeddings: true,
        freeze_layers: 1,
        cache_mb,
        ..config("ot", 4, 9)
    };
    let long_pairs = || {
        let mut rng = optical::rng::SplitMix64::new(11);
        let mut seq = || -> Vec<u32> {
            let len = rng.range(5, 60);
            (0..len).map(|_| rng.range(1, 49) as u32).collect()
        };
        let mut pairs = optical::distill::TokenizedPairs::default();
        for _ in 0..10 {
            pairs.student.push(seq());
            pairs.teacher.push(seq());
            pairs.student_english.push(seq());
        }
        pairs
    };
    let trainer = |cache_mb: usize| {
        let tiny = tiny_config();
        let student = random_encoder(&tiny, 1, &Device::flex().autodiff()).unwrap();
        let teacher = random_encoder(&tiny, 2, &Device::flex()).unwrap();
        Trainer::new(frozen(cache_mb), student, teacher, (0, 0), long_pairs()).unwrap()
    };
    // 10 pairs, 4 per step: the first epoch ends in step 3.
    let mut straight = trainer(64);
    for _ in 0..9 {
        straight.step().unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let mut first = trainer(64);
    for _ in 0..5 {
        first.step().unwrap();
    }
    first.save_checkpoint(dir.path()).unwrap();
    drop(first);
    let mut resumed = trainer(64);
    resumed.load_checkpoint(dir.path(), 5).unwrap();
    for _ in 5..9 {
        resumed.step().unwrap();
    }
    assert!(
        weights_of(&straight) == weights_of(&resumed),
        "the resumed run's weights differ from the uninterrupted run's"
    );
    // Nor do they depend on whether they were cached.
    let mut uncached = trainer(0);
    for _ in 0..9 {
        uncached.step().unwrap();
    }
    assert!(
        weights_of(&straight) == weights_of(&uncached),
        "the weights differ with cache_mb = 0"
    );
}
