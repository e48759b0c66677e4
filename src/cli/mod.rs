//! The command-line interface: one file per subcommand. `main.rs` only parses and maps
//! errors to exit codes.
//!
//! The doc comments of the argument structs are clap's help text, plain text rather than
//! rustdoc markdown: `<out>` there is a placeholder, not an HTML tag, and `C[p,i,j]` an
//! index, not a link.
#![allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]

/// `println!` for the commands' results: a line that cannot be written to standard output
/// (a full disk behind `> file`, a failing device) returns the error from the enclosing
/// function (exit 1, a one-line message) instead of panicking, which `println!` does with
/// a backtrace and exit 101. (A closed pipe ends the process quietly: `main` restores
/// SIGPIPE's default.)
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::write_line(format_args!($($arg)*))?
    };
}
pub(crate) use outln;

/// Write one line to standard output and flush it.
pub fn write_line(args: std::fmt::Arguments<'_>) -> crate::error::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .map_err(|e| crate::error::Error::io("standard output", "write", e))
}

#[cfg(feature = "encoder")]
pub mod assets;
pub mod bench;
pub mod data;
#[cfg(feature = "distill")]
pub mod distill;
#[cfg(feature = "encoder")]
pub mod encode;
pub mod eval;
pub mod info;
pub mod ot;
pub mod search;
#[cfg(feature = "distill")]
pub mod study;

use clap::{Parser, Subcommand};

/// Optimal-transport distillation for cross-lingual retrieval, on hand-written kernels.
#[derive(Debug, Parser)]
#[command(name = "optical", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Optimal-transport kernels on .npy files: Sinkhorn, cosine cost, MaxSim.
    Ot(ot::OtArgs),
    /// List the backends compiled in and the devices they find.
    Info(info::InfoArgs),
    /// Time every kernel on the standard problems (see `optical bench --help`).
    #[command(after_help = bench::STANDARD_PROBLEMS)]
    Bench(bench::BenchArgs),
    /// Evaluation datasets: list, statistics, export of judgements.
    Data(data::DataArgs),
    /// Evaluate retrieval on a dataset, or a TREC run against qrels (`optical eval trec`).
    Eval(eval::EvalArgs),
    /// Exact top-k search over precomputed embeddings, written as a TREC run.
    Search(search::SearchArgs),
    // No doc comment here: the subcommand's help is `EncodeArgs`'s (clap takes a variant's
    // doc over its arguments' struct's).
    #[cfg(feature = "encoder")]
    Encode(encode::EncodeArgs),
    /// Fetch, check or convert the pretrained encoder assets.
    #[cfg(feature = "encoder")]
    Assets(assets::AssetsArgs),
    /// Train a student encoder by optimal-transport distillation on bitext.
    #[cfg(feature = "distill")]
    Distill(Box<distill::DistillArgs>),
    /// Run a study: a grid of distillation runs and evaluations, and its report.
    #[cfg(feature = "distill")]
    Study(study::StudyArgs),
}

/// A flag's floating-point value: a finite number (`-1` included, so that range checks
/// can say what they expected instead of clap taking it for a flag).
pub(crate) fn finite_f64(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("expected a number, found {s:?}"))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("expected a finite number, found {s}"))
    }
}

/// A setting given for a dataset it does not apply to, refused rather than ignored:
/// `flags` are (flag, given here although `dataset` does not take it, the datasets it
/// applies to); the first such flag is the error.
pub(crate) fn refuse_misplaced_flags(
    dataset: crate::data::DatasetName,
    flags: &[(&str, bool, &str)],
) -> crate::Result<()> {
    match flags.iter().find(|(_, misplaced, _)| *misplaced) {
        Some((flag, _, applies)) => Err(crate::Error::parameter(
            "dataset",
            format!("a dataset that --{flag} applies to: {applies}"),
            dataset.name(),
        )),
        None => Ok(()),
    }
}

/// The `--split` and `--english-bible` loader flags, for [`refuse_misplaced_flags`].
pub(crate) fn loader_flags(
    dataset: crate::data::DatasetName,
    split: bool,
    english_bible: bool,
) -> [(&'static str, bool, &'static str); 2] {
    use crate::data::DatasetName;
    [
        ("split", split && dataset != DatasetName::Mafand, "mafand"),
        (
            "english-bible",
            english_bible && dataset != DatasetName::Bible,
            "bible",
        ),
    ]
}

/// Run a parsed command.
pub fn run(cli: Cli) -> crate::Result<()> {
    match cli.command {
        Command::Ot(args) => ot::run(args),
        Command::Info(args) => info::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Data(args) => data::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Search(args) => search::run(args),
        #[cfg(feature = "encoder")]
        Command::Encode(args) => encode::run(args),
        #[cfg(feature = "encoder")]
        Command::Assets(args) => assets::run(args),
        #[cfg(feature = "distill")]
        Command::Distill(args) => distill::run(*args),
        #[cfg(feature = "distill")]
        Command::Study(args) => study::run(args),
    }
}
