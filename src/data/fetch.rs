//! Every file of the datasets from its upstream repository (`optical data fetch`), for a
//! machine without the shared copy. Files come from GitHub at pinned commits (the commits
//! the shared copies were taken from, where known), through `curl`; each is written whole
//! or not at all, and a file already there is kept.

use std::path::{Path, PathBuf};

use crate::data::DatasetName;
use crate::error::{Error, Result};

/// Where the files are fetched from; `$OPTICAL_DATA_MIRROR` replaces it (a mirror with
/// the same paths, or a local server in the tests).
pub const UPSTREAM_BASE: &str = "https://raw.githubusercontent.com";

const LAREQA: &str = "google-research-datasets/lareqa";
const XQUAD_R_COMMIT: &str = "5405d2a77e83d5ccb47623a3f9e5604c3f103193";
const MLQA_R_COMMIT: &str = "354d67d1cd066854cdfbf5ad0e6105528976141d";
const LASER: &str = "facebookresearch/LASER";
const LASER_COMMIT: &str = "fec5c7d63daa2bea9d127e8252b10e87278586c0";
const LAFAND: &str = "masakhane-io/lafand-mt";
const LAFAND_REF: &str = "main";
const BIBLE_CORPUS: &str = "christos-c/bible-corpus";
const BIBLE_COMMIT: &str = "0f35d074af28a0499cffe37e62b39922595f9db7";

const XQUAD_R_LANGUAGES: [&str; 11] = [
    "ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh",
];
const MLQA_R_LANGUAGES: [&str; 7] = ["ar", "de", "en", "es", "hi", "vi", "zh"];
const TATOEBA_LANGUAGES: &str = "afr amh ang ara arq arz ast awa aze bel ben ber bos bre bul cat cbk ceb ces cha cmn cor csb cym dan deu dsb dtp ell epo est eus fao fin fra fry gla gle glg gsw heb hin hrv hsb hun hye ido ile ina ind isl ita jav jpn kab kat kaz khm kor kur kzj lat lfn lit lvs mal mar max mhr mkd mon nds nld nno nob nov oci orv pam pes pms pol por ron rus slk slv spa sqi srp swe swg swh tam tat tel tgl tha tuk tur tzl uig ukr urd uzb vie war wuu xho yid yue zsm";
/// MAFAND-MT languages and whether each has a training split.
const MAFAND: [(&str, bool); 15] = [
    ("amh", false),
    ("hau", true),
    ("ibo", true),
    ("kin", false),
    ("lug", true),
    ("luo", true),
    ("nya", false),
    ("pcm", true),
    ("sna", false),
    ("swa", true),
    ("tsn", true),
    ("twi", true),
    ("xho", false),
    ("yor", true),
    ("zul", true),
];
const BIBLES: [&str; 3] = ["Swahili-NT.xml", "Zulu-NT.xml", "Wolof-NT.xml"];

/// One file: where it goes under the data directory, and its path upstream
/// (`owner/repo/ref/path`, appended to the base).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteFile {
    pub local: PathBuf,
    pub remote: String,
}

/// The files of `dataset`, in the layout the loaders read.
pub fn files(dataset: DatasetName) -> Vec<RemoteFile> {
    let file = |local: String, repo: &str, rev: &str, path: String| RemoteFile {
        local: PathBuf::from(local),
        remote: format!("{repo}/{rev}/{path}"),
    };
    match dataset {
        DatasetName::XquadR => XQUAD_R_LANGUAGES
            .iter()
            .map(|l| {
                file(
                    format!("lareqa/xquad-r/{l}.json"),
                    LAREQA,
                    XQUAD_R_COMMIT,
                    format!("xquad-r/{l}.json"),
                )
            })
            .collect(),
        DatasetName::MlqaR => MLQA_R_LANGUAGES
            .iter()
            .map(|l| format!("{l}.json"))
            .chain(["LICENSE".to_string()])
            .map(|f| {
                file(
                    format!("lareqa/mlqa-r/{f}"),
                    LAREQA,
                    MLQA_R_COMMIT,
                    format!("mlqa-r/{f}"),
                )
            })
            .collect(),
        DatasetName::Tatoeba => TATOEBA_LANGUAGES
            .split_whitespace()
            .flat_map(|l| {
                [
                    format!("tatoeba.{l}-eng.{l}"),
                    format!("tatoeba.{l}-eng.eng"),
                ]
            })
            .map(|f| {
                file(
                    format!("tatoeba/{f}"),
                    LASER,
                    LASER_COMMIT,
                    format!("data/tatoeba/v1/{f}"),
                )
            })
            .collect(),
        DatasetName::Mafand => MAFAND
            .iter()
            .flat_map(|&(l, train)| {
                let splits: &[&str] = if train {
                    &["train", "dev", "test"]
                } else {
                    &["dev", "test"]
                };
                splits
                    .iter()
                    .flat_map(move |s| [format!("en-{l}/{s}.en"), format!("en-{l}/{s}.{l}")])
                    .collect::<Vec<_>>()
            })
            .map(|f| {
                file(
                    format!("mafand/{f}"),
                    LAFAND,
                    LAFAND_REF,
                    format!("data/text_files/{f}"),
                )
            })
            .collect(),
        DatasetName::Bible => BIBLES
            .iter()
            .map(|f| {
                file(
                    format!("bible/{f}"),
                    BIBLE_CORPUS,
                    BIBLE_COMMIT,
                    format!("bibles/{f}"),
                )
            })
            .collect(),
    }
}

/// What a fetch did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fetched {
    pub downloaded: usize,
    pub kept: usize,
}

/// Fetch every file of `dataset` that `dir` lacks from `base` (see [`UPSTREAM_BASE`]).
/// Each file is downloaded beside its place and renamed into it, so an interrupted fetch
/// leaves no partial file; `progress` is called before each download.
pub fn fetch(
    dataset: DatasetName,
    dir: &Path,
    base: &str,
    mut progress: impl FnMut(usize, usize, &RemoteFile),
) -> Result<Fetched> {
    let files = files(dataset);
    let mut done = Fetched::default();
    for (k, f) in files.iter().enumerate() {
        let target = dir.join(&f.local);
        if target.is_file() {
            done.kept += 1;
            continue;
        }
        progress(k + 1, files.len(), f);
        let parent = target.parent().unwrap_or(dir);
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, "create", e))?;
        let part = target.with_extension("part");
        let url = format!("{}/{}", base.trim_end_matches('/'), f.remote);
        let out = std::process::Command::new("curl")
            .args([
                "--fail",
                "--silent",
                "--show-error",
                "--location",
                "--retry",
                "3",
            ])
            .arg("--output")
            .arg(&part)
            .arg(&url)
            .output();
        let failed = |what: String| {
            let _ = std::fs::remove_file(&part);
            Err(Error::value(
                format!("fetch {}", dataset.name()),
                format!(
                    "expected {url} to download into {}, {what}",
                    target.display()
                ),
            ))
        };
        match out {
            Err(e) => {
                return failed(format!(
                    "but curl could not be started ({e}); install curl, or copy the files \
                     from {}",
                    dataset.upstream()
                ))
            }
            Ok(o) if !o.status.success() => {
                return failed(format!(
                    "found: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ))
            }
            Ok(_) => {}
        }
        std::fs::rename(&part, &target).map_err(|e| Error::io(&target, "rename into", e))?;
        done.downloaded += 1;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lists name what the loaders read: the shared copy's layout.
    #[test]
    fn the_lists_have_the_shared_layout() {
        let count = |d| files(d).len();
        assert_eq!(count(DatasetName::XquadR), 11);
        assert_eq!(count(DatasetName::MlqaR), 8);
        assert_eq!(count(DatasetName::Tatoeba), 224);
        assert_eq!(count(DatasetName::Mafand), 2 * (3 * 10 + 2 * 5));
        assert_eq!(count(DatasetName::Bible), 3);
        let hau = &files(DatasetName::Mafand)[4];
        assert_eq!(hau.local, PathBuf::from("mafand/en-hau/train.en"));
        assert_eq!(
            hau.remote,
            "masakhane-io/lafand-mt/main/data/text_files/en-hau/train.en"
        );
    }
}
