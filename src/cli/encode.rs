//! `optical encode`: embed the lines of a text file with a pretrained encoder.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;

use crate::backend::BackendKind;
use crate::data::bitext::BlankLines;
use crate::encoder::pooling::Pooling;
use crate::encoder::{device_for, EncoderOptions, ModelSpec, TextEncoder, TextKind};
use crate::error::{Error, Result};
use crate::io::{npy, write_through_temp};

/// Embed each line of --input (one text per line, UTF-8) with a pretrained encoder.
///
/// Models: minilm (all-MiniLM-L6-v2), e5-small (multilingual-e5-small, E5S1 4-bit; texts
/// get the "query: " / "passage: " prefix of --kind), or a PATH: a Hugging Face directory
/// (config.json, model.safetensors, tokenizer.json) or an E5S1 file. Assets come from
/// `optical assets fetch`.
///
/// --pooling mean|cls writes (n, h) f32 to --out, L2-normalised unless --no-normalize.
/// --pooling tokens writes every real token's embedding (the encoder's last hidden states,
/// never normalised) packed as (total, h) f32 to --out, plus <stem>.lengths.npy and
/// <stem>.offsets.npy beside it (tok.npy: tok.lengths.npy, tok.offsets.npy; i64, (n,)):
/// text k owns rows offsets[k] .. offsets[k] + lengths[k]. Prints a one-line JSON summary.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct EncodeArgs {
    /// minilm, e5-small, or a path to a Hugging Face directory or an E5S1 file.
    #[arg(long)]
    pub model: String,
    /// Text file, one text per line (UTF-8; blank lines at the end are ignored, a blank
    /// line elsewhere is an error).
    #[arg(long)]
    pub input: PathBuf,
    /// query or passage (selects the prefix).
    #[arg(long, default_value = "passage")]
    pub kind: String,
    /// mean, cls or tokens.
    #[arg(long, default_value = "mean")]
    pub pooling: String,
    /// cpu or cpu-reference (both burn's flex CPU device), wgpu, or cuda (burn's CUDA
    /// device; needs a build with the burn-cuda feature).
    #[arg(long, default_value = "cpu")]
    pub backend: String,
    /// Output .npy file.
    #[arg(long)]
    pub out: PathBuf,
    /// Truncation length in tokens, specials included (default: minilm 256, e5 512; a
    /// directory: the max_seq_length of its sentence_bert_config.json, else its position
    /// table).
    #[arg(long)]
    pub max_length: Option<usize>,
    /// Texts per forward pass (what `optical eval` calls --forward-batch).
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Override the query prefix.
    #[arg(long)]
    pub query_prefix: Option<String>,
    /// Override the passage prefix.
    #[arg(long)]
    pub passage_prefix: Option<String>,
    /// Do not L2-normalise pooled embeddings (--pooling mean or cls; token embeddings are
    /// never normalised).
    #[arg(long)]
    pub no_normalize: bool,
}

/// `emb.npy` → `emb.<suffix>.npy`.
pub fn sibling(out: &Path, suffix: &str) -> PathBuf {
    let stem = out
        .file_stem()
        .map_or_else(|| "out".to_string(), |s| s.to_string_lossy().into_owned());
    out.with_file_name(format!("{stem}.{suffix}.npy"))
}

/// The files a model reads (a directory's, two levels deep: a distillation run stands for
/// its `student/`), for the check that no output replaces one.
fn model_files(spec: &ModelSpec) -> Vec<PathBuf> {
    use crate::assets::Asset;
    let files_in = |dir: &Path| -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut dirs = vec![(dir.to_path_buf(), 0)];
        while let Some((d, depth)) = dirs.pop() {
            for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    if depth < 1 {
                        dirs.push((path, depth + 1));
                    }
                } else {
                    out.push(path);
                }
            }
        }
        out
    };
    match spec {
        ModelSpec::MiniLm => files_in(&Asset::MiniLm.dir()),
        ModelSpec::E5Small => [Asset::E5Small.dir(), Asset::XlmrTokenizer.dir()]
            .iter()
            .flat_map(|d| files_in(d))
            .collect(),
        ModelSpec::Path(p) if p.is_dir() => files_in(p),
        // An E5S1 file reads the tokenizer beside it, else the XLM-R asset's.
        ModelSpec::Path(p) => std::iter::once(p.clone())
            .chain(crate::encoder::e5s1_tokenizer(p).ok())
            .collect(),
    }
}

pub fn run(args: EncodeArgs) -> Result<()> {
    let spec: ModelSpec = args.model.parse()?;
    let kind: TextKind = args.kind.parse()?;
    let pooling: Pooling = args.pooling.parse()?;
    if args.no_normalize && pooling == Pooling::Tokens {
        return Err(Error::parameter(
            "pooling",
            "mean or cls with --no-normalize (token embeddings are never normalised)",
            pooling.name(),
        ));
    }
    let backend: BackendKind = args.backend.parse()?;
    let device = device_for(backend)?;
    // Before the model loads, by the rules of every text file the project reads: blank
    // lines at the end ignored (as `search` reads ids files, so rows and ids line up), a
    // blank line elsewhere refused with its number (its row would embed no text), an empty
    // file refused (a (0, d) array is refused by everything that reads one).
    let texts = crate::data::bitext::read_lines(&args.input, BlankLines::Refuse)?;
    // The outputs' paths are checked before the model loads, and each file is written
    // through a temporary sibling, so that a bad --out costs no encoding and a failed
    // write leaves no truncated file.
    // The token files' lengths and offsets go beside --out: a special file (/dev/null, a
    // pipe) has no "beside" that the user would look in.
    if pooling == Pooling::Tokens && std::fs::metadata(&args.out).is_ok_and(|m| !m.is_file()) {
        return Err(Error::parameter(
            "out",
            "a regular file path with --pooling tokens (its lengths and offsets are written \
             beside it)",
            args.out.display(),
        ));
    }
    let outputs = match pooling {
        Pooling::Tokens => vec![
            args.out.clone(),
            sibling(&args.out, "lengths"),
            sibling(&args.out, "offsets"),
        ],
        Pooling::Mean | Pooling::Cls => vec![args.out.clone()],
    };
    // The model's own files are inputs too: `--out model-dir/tokenizer.json` would break
    // the model for every later run.
    let model_files = model_files(&spec);
    let mut inputs: Vec<Option<&Path>> = vec![Some(&args.input)];
    inputs.extend(model_files.iter().map(|p| Some(p.as_path())));
    for p in &outputs {
        crate::io::check_output_file(p)?;
        crate::io::check_not_input(p, &inputs)?;
    }
    let options = EncoderOptions {
        max_length: args.max_length,
        batch_size: args.batch_size,
        query_prefix: args.query_prefix,
        passage_prefix: args.passage_prefix,
        shared_prefix: None,
    };
    let t0 = Instant::now();
    let encoder = TextEncoder::load(&spec, device, &options)?;
    let load_seconds = t0.elapsed().as_secs_f64();
    let h = encoder.hidden_size();
    let t1 = Instant::now();
    let tokens = match pooling {
        Pooling::Tokens => {
            let packed = encoder.token_embeddings(&texts, kind)?;
            let total: usize = packed.lengths.iter().sum();
            let lengths: Vec<i64> = packed.lengths.iter().map(|&l| l as i64).collect();
            let offsets: Vec<i64> = packed.offsets().iter().map(|&o| o as i64).collect();
            // Nested: every file is written before any is renamed into place, so a failed
            // write (a full disk) leaves the three as they were, never new embeddings beside
            // old lengths.
            write_through_temp(&args.out, |p| {
                npy::write(p, &[total, h], &packed.data)?;
                write_through_temp(&outputs[1], |q| {
                    npy::write(q, &[texts.len()], &lengths)?;
                    write_through_temp(&outputs[2], |r| npy::write(r, &[texts.len()], &offsets))
                })
            })?;
            total
        }
        Pooling::Mean | Pooling::Cls => {
            // Tokenised once, for the embeddings and the token count alike.
            let seqs = encoder.tokenize(&texts, kind)?;
            let emb = encoder.embed_ids(&seqs, pooling, !args.no_normalize)?;
            write_through_temp(&args.out, |p| npy::write(p, &[texts.len(), h], &emb))?;
            seqs.iter().map(Vec::len).sum()
        }
    };
    let seconds = t1.elapsed().as_secs_f64();
    outln!(
        "{}",
        serde_json::json!({
            "model": encoder.name,
            "backend": backend.name(),
            "texts": texts.len(),
            "tokens": tokens,
            "hidden": h,
            "pooling": pooling.name(),
            "load_seconds": load_seconds,
            "encode_seconds": seconds,
            "texts_per_second": texts.len() as f64 / seconds.max(1e-9),
            "out": args.out.display().to_string(),
        })
    );
    // The process ends here. Freeing the encoder (its weights and, for XLM-R, a trie of
    // 250,002 pieces in hash-map nodes) took 0.25–0.33 s of a 1.3 s `encode` on the 2-core
    // machine and gives nothing back to anyone: leave it to the exit.
    std::mem::forget(encoder);
    Ok(())
}
