//! The command-line interface: one file per subcommand. `main.rs` only parses and maps
//! errors to exit codes.

#[cfg(feature = "encoder")]
pub mod assets;
pub mod bench;
#[cfg(feature = "encoder")]
pub mod encode;
pub mod info;
pub mod ot;

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
    Bench(bench::BenchArgs),
    /// Embed texts with a pretrained encoder (MiniLM, multilingual-e5-small, or a path).
    #[cfg(feature = "encoder")]
    Encode(encode::EncodeArgs),
    /// Fetch, check or convert the pretrained encoder assets.
    #[cfg(feature = "encoder")]
    Assets(assets::AssetsArgs),
}

/// Run a parsed command.
pub fn run(cli: Cli) -> crate::Result<()> {
    match cli.command {
        Command::Ot(args) => ot::run(args),
        Command::Info(args) => info::run(args),
        Command::Bench(args) => bench::run(args),
        #[cfg(feature = "encoder")]
        Command::Encode(args) => encode::run(args),
        #[cfg(feature = "encoder")]
        Command::Assets(args) => assets::run(args),
    }
}
