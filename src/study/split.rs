//! The deterministic training / held-out split of a group's Tatoeba pairs.
//!
//! The rule, applied to the group's Tatoeba bitexts together:
//!
//! 1. a pair is held out when `stable_hash(English side, trimmed) mod 100 < heldout_percent`
//!    ([`crate::rng::stable_hash`]: FNV-1a and the SplitMix64 finaliser). The key is the English sentence, not the whole pair,
//!    because Tatoeba reuses English sentences across languages and within a language
//!    ("Tom needs water" translated twice): keying on the English side sends every copy of
//!    an English sentence, in every language, to the same side of the split;
//! 2. a training pair that shares either side (trimmed) with any held-out pair of the group
//!    is dropped, so no held-out line, English or not, is ever seen in training.
//!
//! The split depends only on the text: the same files give the same split on every
//! machine, in every order, with any seed. Training seeds shuffle the training part only.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::data::bitext::Bitext;
use crate::error::{Error, Result};

/// One language's parts.
#[derive(Clone, Debug)]
pub struct Split {
    pub train: Bitext,
    pub heldout: Bitext,
    /// Training pairs dropped because a side also occurs in a held-out pair.
    pub dropped: usize,
}

fn held_out(english: &str, percent: u32) -> bool {
    crate::rng::stable_hash(english.trim().as_bytes()) % 100 < percent as u64
}

fn part(b: &Bitext, keep: &[bool], name: &str) -> Bitext {
    let pick = |side: &[String]| -> Vec<String> {
        side.iter()
            .zip(keep)
            .filter(|(_, &k)| k)
            .map(|(s, _)| s.clone())
            .collect()
    };
    Bitext {
        name: name.to_string(),
        source_language: b.source_language.clone(),
        target_language: b.target_language.clone(),
        source: pick(&b.source),
        target: pick(&b.target),
    }
}

/// Split every bitext of a group (`target` is English in each) by the rule above.
pub fn split_group(bitexts: &[Bitext], heldout_percent: u32) -> Vec<Split> {
    let held: Vec<Vec<bool>> = bitexts
        .iter()
        .map(|b| {
            b.target
                .iter()
                .map(|e| held_out(e, heldout_percent))
                .collect()
        })
        .collect();
    let mut held_lines: HashSet<&str> = HashSet::new();
    for (b, h) in bitexts.iter().zip(&held) {
        for i in (0..b.len()).filter(|&i| h[i]) {
            held_lines.insert(b.source[i].trim());
            held_lines.insert(b.target[i].trim());
        }
    }
    bitexts
        .iter()
        .zip(&held)
        .map(|(b, h)| {
            let mut dropped = 0;
            let train: Vec<bool> = (0..b.len())
                .map(|i| {
                    if h[i] {
                        return false;
                    }
                    let leaks = held_lines.contains(b.source[i].trim())
                        || held_lines.contains(b.target[i].trim());
                    dropped += leaks as usize;
                    !leaks
                })
                .collect();
            Split {
                train: part(b, &train, "tatoeba-train"),
                heldout: part(b, h, "tatoeba-heldout"),
                dropped,
            }
        })
        .collect()
}

/// The training part written as two line-aligned files under `dir`
/// (`<code>.train.<code>` and `<code>.train.eng`), for `optical distill`'s `files:` source.
pub fn write_train_files(split: &Split, dir: &Path) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "create", e))?;
    let lang = &split.train.source_language;
    let other = dir.join(format!("{lang}.train.{lang}"));
    let english = dir.join(format!("{lang}.train.eng"));
    for (path, side) in [
        (&other, &split.train.source),
        (&english, &split.train.target),
    ] {
        let mut text = side.join("\n");
        text.push('\n');
        // Same content, same file: leave it alone so its timestamp stays put.
        if std::fs::read_to_string(path).ok().as_deref() != Some(text.as_str()) {
            crate::io::write_atomic(path, text)?;
        }
    }
    Ok((other, english))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bitext(lang: &str, pairs: &[(String, String)]) -> Bitext {
        Bitext {
            name: "tatoeba".into(),
            source_language: lang.into(),
            target_language: "eng".into(),
            source: pairs.iter().map(|p| p.0.clone()).collect(),
            target: pairs.iter().map(|p| p.1.clone()).collect(),
        }
    }

    #[test]
    fn held_out_lines_never_reach_training_and_the_split_is_stable() {
        // Many pairs, with English sentences shared across the two languages and repeated
        // within one, and a German sentence with two English translations.
        let mut de = Vec::new();
        let mut fr = Vec::new();
        for i in 0..400 {
            de.push((format!("de satz {i}"), format!("sentence {}", i % 300)));
            fr.push((
                format!("fr phrase {i}"),
                format!("sentence {}", (i * 7) % 350),
            ));
        }
        // A German sentence of a held-out pair, translated differently in a kept pair: the
        // kept pair must be dropped.
        let h = de.iter().position(|p| held_out(&p.1, 20)).unwrap();
        let kept_english = (0..)
            .map(|k| format!("another translation {k}"))
            .find(|e| !held_out(e, 20))
            .unwrap();
        de.push((de[h].0.clone(), kept_english));
        let group = [bitext("deu", &de), bitext("fra", &fr)];
        let splits = split_group(&group, 20);
        let held: HashSet<&str> = splits
            .iter()
            .flat_map(|s| s.heldout.source.iter().chain(&s.heldout.target))
            .map(|s| s.trim())
            .collect();
        let mut train_lines = 0;
        for s in &splits {
            for line in s.train.source.iter().chain(&s.train.target) {
                assert!(
                    !held.contains(line.trim()),
                    "{line:?} is held out and trained on"
                );
                train_lines += 1;
            }
            assert_eq!(s.train.source.len(), s.train.target.len());
            assert_eq!(s.heldout.source.len(), s.heldout.target.len());
        }
        let total: usize = group.iter().map(Bitext::len).sum();
        let heldout: usize = splits.iter().map(|s| s.heldout.len()).sum();
        let dropped: usize = splits.iter().map(|s| s.dropped).sum();
        let train: usize = splits.iter().map(|s| s.train.len()).sum();
        println!("{total} pairs: {heldout} held out, {train} train, {dropped} dropped");
        assert_eq!(heldout + train + dropped, total);
        assert_eq!(train_lines, 2 * train);
        let share = heldout as f64 / total as f64;
        assert!((0.12..0.28).contains(&share), "held-out share {share}");
        assert_eq!(dropped, 1);
        // The same data in another order gives the same assignment of each pair.
        let reversed: Vec<Bitext> = group
            .iter()
            .rev()
            .map(|b| {
                let mut r = b.clone();
                r.source.reverse();
                r.target.reverse();
                r
            })
            .collect();
        let again = split_group(&reversed, 20);
        let mut a: Vec<&String> = splits.iter().flat_map(|s| &s.heldout.source).collect();
        let mut b: Vec<&String> = again.iter().flat_map(|s| &s.heldout.source).collect();
        a.sort();
        b.sort();
        assert_eq!(a, b);
    }

    #[test]
    fn train_files_are_line_aligned() {
        let dir = tempfile::tempdir().unwrap();
        let pairs: Vec<(String, String)> = (0..40)
            .map(|i| (format!("a{i}"), format!("x{i}")))
            .collect();
        let s = split_group(&[bitext("deu", &pairs)], 50);
        assert!(!s[0].train.is_empty() && !s[0].heldout.is_empty());
        let (o, e) = write_train_files(&s[0], dir.path()).unwrap();
        let lines = |p: &Path| std::fs::read_to_string(p).unwrap().lines().count();
        assert_eq!(lines(&o), s[0].train.len());
        assert_eq!(lines(&e), s[0].train.len());
    }
}
