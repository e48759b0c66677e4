//! Malformed bitext for distillation: clear errors, never a silent misalignment.
#![cfg(feature = "distill")]

use std::path::Path;

use optical::distill::data::{load_source, load_sources};

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn line_aligned_files_load() {
    let d = tempfile::tempdir().unwrap();
    let a = write(d.path(), "a.hau", "Sannu\nNa gode\n");
    let b = write(d.path(), "b.en", "Hello\nThank you\n");
    let pairs = load_sources(&[format!("files:hau:{a}:{b}")], d.path()).unwrap();
    assert_eq!(pairs.other, vec!["Sannu", "Na gode"]);
    assert_eq!(pairs.english, vec!["Hello", "Thank you"]);
    assert_eq!(pairs.skipped, 0);
    let (train, dev) = pairs.shuffle_split(0, 1).unwrap();
    assert_eq!((train.len(), dev.len()), (1, 1));
    // Shuffling keeps every pair together.
    for (o, e) in train
        .other
        .iter()
        .zip(&train.english)
        .chain(dev.other.iter().zip(&dev.english))
    {
        assert_eq!(o == "Sannu", e == "Hello");
    }
}

#[test]
fn differing_line_counts_are_an_error() {
    let d = tempfile::tempdir().unwrap();
    let a = write(d.path(), "a.hau", "Sannu\nNa gode\nYaya\n");
    let b = write(d.path(), "b.en", "Hello\nThank you\n");
    let err = load_source(&format!("files:hau:{a}:{b}"), d.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("as many lines"), "{err}");
}

#[test]
fn empty_lines_are_an_error() {
    let d = tempfile::tempdir().unwrap();
    let a = write(d.path(), "a.hau", "Sannu\n  \nYaya\n");
    let b = write(d.path(), "b.en", "Hello\nThank you\nHow\n");
    let err = load_source(&format!("files:hau:{a}:{b}"), d.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn unknown_language_codes_and_sources_are_errors() {
    let d = tempfile::tempdir().unwrap();
    let err = load_source("mafand:qqq", d.path()).unwrap_err().to_string();
    assert!(err.contains("qqq") && err.contains("hau"), "{err}");
    let err = load_source("tatoeba:hau", d.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("mafand:<lang>"), "{err}");
    let err = load_source("mafand:dev", d.path()).unwrap_err().to_string();
    assert!(err.contains("dev"), "{err}");
}

#[test]
fn too_many_dev_pairs_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    let a = write(d.path(), "a.hau", "Sannu\n");
    let b = write(d.path(), "b.en", "Hello\n");
    let pairs = load_sources(&[format!("files:hau:{a}:{b}")], d.path()).unwrap();
    assert!(pairs.shuffle_split(0, 1).is_err());
}
