//! Bitext sources for distillation: MAFAND-MT train, Bible verses, or any two line-aligned
//! files. Evaluation sets (Tatoeba, MAFAND dev/test, LAReQA) are never training data: the
//! source syntax cannot name them.
//!
//! Malformed input is an error naming the file and what was expected (line counts differ,
//! an empty file — see [`crate::data::bitext::read_lines`]; a language the dataset lacks);
//! pairs with a blank side (an empty line in either file) are skipped and counted.

use std::path::{Path, PathBuf};

use crate::data::bitext::{self, Bitext, BlankLines};
use crate::error::{Error, Result};
use crate::rng::SplitMix64;

/// Aligned training pairs: `other[i]` translates `english[i]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pairs {
    pub other: Vec<String>,
    pub english: Vec<String>,
    /// Pairs skipped because a side was blank.
    pub skipped: usize,
}

impl Pairs {
    pub fn len(&self) -> usize {
        self.other.len()
    }

    pub fn is_empty(&self) -> bool {
        self.other.is_empty()
    }

    fn extend(&mut self, b: Bitext) {
        for (o, e) in b.source.into_iter().zip(b.target) {
            if o.trim().is_empty() || e.trim().is_empty() {
                self.skipped += 1;
            } else {
                self.other.push(o);
                self.english.push(e);
            }
        }
    }

    /// Shuffle with `seed`, then split off the last `dev` pairs as held-out dev pairs.
    pub fn shuffle_split(mut self, seed: u64, dev: usize) -> Result<(Pairs, Pairs)> {
        if dev >= self.len() {
            return Err(Error::parameter(
                "dev_pairs",
                format!(
                    "fewer than the {} pairs the sources give (the rest are the training pairs)",
                    self.len()
                ),
                dev,
            ));
        }
        let order = permutation(self.len(), seed);
        let other: Vec<String> = order
            .iter()
            .map(|&i| std::mem::take(&mut self.other[i]))
            .collect();
        let english: Vec<String> = order
            .iter()
            .map(|&i| std::mem::take(&mut self.english[i]))
            .collect();
        let cut = other.len() - dev;
        let train = Pairs {
            other: other[..cut].to_vec(),
            english: english[..cut].to_vec(),
            skipped: self.skipped,
        };
        let held = Pairs {
            other: other[cut..].to_vec(),
            english: english[cut..].to_vec(),
            skipped: 0,
        };
        Ok((train, held))
    }
}

/// A Fisher–Yates permutation of `0..n` from `seed`.
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut rng = SplitMix64::new(seed);
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// Load one source (see [`super::DistillConfig::sources`]); `english_bible` is the English
/// side of `bible:` sources.
pub fn load_source(spec: &str, data_dir: &Path, english_bible: &Path) -> Result<Bitext> {
    let parts: Vec<&str> = spec.splitn(4, ':').collect();
    match parts.as_slice() {
        ["mafand", lang] => bitext::mafand(data_dir, lang, "train"),
        ["bible", lang] => bitext::bible(data_dir, lang, english_bible),
        ["files", lang, other, english] => {
            if !bitext::is_language_code(lang) {
                return Err(Error::parameter(
                    "sources",
                    "files:<lang>:… with a language code without whitespace",
                    spec,
                ));
            }
            bitext::read_aligned(
                "files",
                lang,
                &PathBuf::from(other),
                bitext::ENGLISH,
                &PathBuf::from(english),
                BlankLines::Keep,
            )
        }
        _ => Err(Error::parameter(
            "sources",
            "mafand:<lang>, bible:<lang> or files:<lang>:<other file>:<English file>",
            spec,
        )),
    }
}

/// Load and concatenate every source.
pub fn load_sources(specs: &[String], data_dir: &Path, english_bible: &Path) -> Result<Pairs> {
    let mut pairs = Pairs::default();
    for spec in specs {
        // A language the dataset lacks is a mistake in this source, not in a --languages
        // flag (distill has none): the error names the source.
        let source = load_source(spec, data_dir, english_bible).map_err(|e| {
            e.for_setting("languages", "sources", |found| format!("{spec} ({found})"))
        })?;
        pairs.extend(source);
    }
    if pairs.is_empty() {
        return Err(Error::value(
            "bitext sources",
            format!("no usable pairs in {}", specs.join(", ")),
        ));
    }
    Ok(pairs)
}
