//! Malformed bitext for distillation: clear errors, never a silent misalignment.
#![cfg(feature = "distill")]

use std::path::{Path, PathBuf};

use optical::distill::data::{load_source, load_sources};

/// No `bible:` source in these tests reads it.
fn no_bible() -> PathBuf {
    PathBuf::from("/nonexistent/t_web.csv.gz")
}

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
    let pairs = load_sources(&[format!("files:hau:{a}:{b}")], d.path(), &no_bible()).unwrap();
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
    let err = load_source(&format!("files:hau:{a}:{b}"), d.path(), &no_bible())
        .unwrap_err()
        .to_string();
    assert!(err.contains("as many lines"), "{err}");
}

/// A blank line in either file is a pair without one side: skipped and counted, the pairs
/// around it still aligned.
#[test]
fn pairs_with_a_blank_side_are_skipped_and_counted() {
    let d = tempfile::tempdir().unwrap();
    let a = write(d.path(), "a.hau", "Sannu\n  \nYaya\nKai\n\n");
    let b = write(d.path(), "b.en", "Hello\nThank you\nHow\n\n");
    let pairs = load_sources(&[format!("files:hau:{a}:{b}")], d.path(), &no_bible()).unwrap();
    assert_eq!(pairs.other, ["Sannu", "Yaya"]);
    assert_eq!(pairs.english, ["Hello", "How"]);
    assert_eq!(pairs.skipped, 2);
    // Only blank pairs: nothing to train on, said so.
    let c = write(d.path(), "c.hau", "x\n\n");
    let e = write(d.path(), "c.en", "\ny\n");
    let err = load_sources(&[format!("files:hau:{c}:{e}")], d.path(), &no_bible())
        .unwrap_err()
        .to_string();
    assert!(err.contains("no usable pairs"), "{err}");
}

#[test]
fn unknown_language_codes_and_sources_are_errors() {
    let d = tempfile::tempdir().unwrap();
    let m = d.path().join("mafand").join("en-hau");
    std::fs::create_dir_all(&m).unwrap();
    write(&m, "train.hau", "Sannu\n");
    write(&m, "train.en", "Hello\n");
    let err = load_source("mafand:qqq", d.path(), &no_bible())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("a language with a MAFAND-MT train split (hau), found qqq"),
        "{err}"
    );
    assert_eq!(
        load_source("mafand:hau", d.path(), &no_bible())
            .unwrap()
            .source,
        ["Sannu"]
    );
    // Any language code the dataset has, and any for line-aligned files (without whitespace).
    let a = write(d.path(), "a.afr", "Hallo\n");
    let b = write(d.path(), "b.en", "Hello\n");
    assert_eq!(
        load_source(&format!("files:afr:{a}:{b}"), d.path(), &no_bible())
            .unwrap()
            .source_language,
        "afr"
    );
    let err = load_source(&format!("files: :{a}:{b}"), d.path(), &no_bible())
        .unwrap_err()
        .to_string();
    assert!(err.contains("without whitespace"), "{err}");
    let err = load_source("tatoeba:hau", d.path(), &no_bible())
        .unwrap_err()
        .to_string();
    assert!(err.contains("mafand:<lang>"), "{err}");
    let err = load_source("mafand:dev", d.path(), &no_bible())
        .unwrap_err()
        .to_string();
    assert!(err.contains("dev"), "{err}");
}

#[test]
fn too_many_dev_pairs_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    let a = write(d.path(), "a.hau", "Sannu\n");
    let b = write(d.path(), "b.en", "Hello\n");
    let pairs = load_sources(&[format!("files:hau:{a}:{b}")], d.path(), &no_bible()).unwrap();
    assert!(pairs.shuffle_split(0, 1).is_err());
}
