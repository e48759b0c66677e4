//! The BERT / XLM-R transformer encoder as a Burn module.
//!
//! Embeddings (word + absolute position + token type 0, then LayerNorm), followed by
//! `num_hidden_layers` post-LN layers: `x = LN(x + Attn(x))`, `x = LN(x + FFN(x))` with
//! multi-head self-attention masked to each sequence's real tokens and an erf-GELU
//! feed-forward. The forward pass returns the last hidden state `(b, t, h)`; pooling and
//! normalisation are separate steps (see [`super::pooling`]).
//!
//! Modules and tensors run on whatever [`Device`] they are built on (flex on the CPU, wgpu
//! on a GPU); there is no backend type parameter.

use burn::module::Param;
use burn::nn::{Embedding, LayerNorm, LayerNormConfig, Linear};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::{DType, TensorData};

use super::config::EncoderConfig;
use super::weights::{HostTensor, Weights};
use crate::error::Result;

/// Additive attention bias for padding keys: large enough that `exp` underflows to 0 in
/// `f32`, small enough that `score + bias` stays finite.
const MASKED_SCORE: f32 = -1.0e9;

/// Word, position and token-type embeddings followed by a LayerNorm.
#[derive(Module, Debug)]
pub struct EncoderEmbeddings {
    pub word: Embedding,
    /// `(max_position_embeddings, h)`; real tokens use rows `offset .. offset + t`.
    pub position: Param<Tensor<2>>,
    /// `(type_vocab_size, h)`; every token has type 0.
    pub token_type: Param<Tensor<2>>,
    pub norm: LayerNorm,
    pub position_offset: usize,
}

/// One post-LN transformer layer.
#[derive(Module, Debug)]
pub struct EncoderLayer {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub attention_output: Linear,
    pub attention_norm: LayerNorm,
    pub intermediate: Linear,
    pub output: Linear,
    pub output_norm: LayerNorm,
    pub heads: usize,
}

/// A BERT-family encoder.
#[derive(Module, Debug)]
pub struct TransformerEncoder {
    pub embeddings: EncoderEmbeddings,
    pub layers: Vec<EncoderLayer>,
}

fn param1(t: HostTensor, device: &Device) -> Param<Tensor<1>> {
    let n = t.data.len();
    Param::from_data(TensorData::new(t.data, [n]), device)
}

fn param2(t: HostTensor, device: &Device) -> Param<Tensor<2>> {
    let [r, c] = [t.shape[0], t.shape[1]];
    Param::from_data(TensorData::new(t.data, [r, c]), device)
}

/// A Hugging Face linear layer (`weight (out, in)`, `bias (out)`) as a Burn `Linear`, whose
/// weight is stored `(in, out)`.
fn linear(weights: &mut Weights, prefix: &str, device: &Device) -> Result<Linear> {
    let w = weights.take(&format!("{prefix}.weight"))?;
    let b = weights.take(&format!("{prefix}.bias"))?;
    let (out, inp) = (w.shape[0], w.shape[1]);
    let mut t = vec![0.0f32; w.data.len()];
    for o in 0..out {
        for i in 0..inp {
            t[i * out + o] = w.data[o * inp + i];
        }
    }
    Ok(Linear {
        weight: param2(
            HostTensor {
                shape: vec![inp, out],
                data: t,
            },
            device,
        ),
        bias: Some(param1(b, device)),
    })
}

fn layer_norm(
    weights: &mut Weights,
    prefix: &str,
    config: &EncoderConfig,
    device: &Device,
) -> Result<LayerNorm> {
    let mut norm = LayerNormConfig::new(config.hidden_size)
        .with_epsilon(config.layer_norm_eps)
        .init(device);
    norm.gamma = param1(weights.take(&format!("{prefix}.weight"))?, device);
    norm.beta = Some(param1(weights.take(&format!("{prefix}.bias"))?, device));
    Ok(norm)
}

impl TransformerEncoder {
    /// Build the encoder from validated weights (see [`Weights::validate`]).
    pub fn from_weights(
        config: &EncoderConfig,
        mut weights: Weights,
        device: &Device,
    ) -> Result<Self> {
        weights.validate(config)?;
        let w = &mut weights;
        let embeddings = EncoderEmbeddings {
            word: Embedding {
                weight: param2(w.take("embeddings.word_embeddings.weight")?, device),
            },
            position: param2(w.take("embeddings.position_embeddings.weight")?, device),
            token_type: param2(w.take("embeddings.token_type_embeddings.weight")?, device),
            norm: layer_norm(w, "embeddings.LayerNorm", config, device)?,
            position_offset: config.position_offset(),
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            layers.push(EncoderLayer {
                query: linear(w, &format!("{p}.attention.self.query"), device)?,
                key: linear(w, &format!("{p}.attention.self.key"), device)?,
                value: linear(w, &format!("{p}.attention.self.value"), device)?,
                attention_output: linear(w, &format!("{p}.attention.output.dense"), device)?,
                attention_norm: layer_norm(
                    w,
                    &format!("{p}.attention.output.LayerNorm"),
                    config,
                    device,
                )?,
                intermediate: linear(w, &format!("{p}.intermediate.dense"), device)?,
                output: linear(w, &format!("{p}.output.dense"), device)?,
                output_norm: layer_norm(w, &format!("{p}.output.LayerNorm"), config, device)?,
                heads: config.num_attention_heads,
            });
        }
        Ok(TransformerEncoder { embeddings, layers })
    }

    /// Last hidden state `(b, t, h)` of token ids `(b, t)` under the attention mask
    /// `(b, t)` (1 for real tokens, 0 for padding; real tokens first). Rows of padding
    /// tokens are computed but meaningless.
    pub fn forward(&self, input_ids: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<3> {
        let x = self.embeddings.forward(input_ids);
        self.forward_layers(x, mask, 0..self.layers.len())
    }

    /// The hidden state after `layers` (a range of layer indices) applied to the hidden
    /// state `x` `(b, t, h)` under `mask` `(b, t)`. `forward` is the embeddings followed by
    /// `forward_layers(.., 0..L)`; a frozen prefix `0..k` can be computed once and the
    /// rest trained with `k..L`. Padding keys get a score of −10⁹, so their weight is
    /// exactly zero and rows of padding never influence real tokens.
    ///
    /// The layers run on the real tokens only (see [`Packing`]): the linear layers, layer
    /// norms and feed-forward block see the `T` real rows, and only attention works in the
    /// padded `(b, t)` layout. The rows of padding tokens in the result are zero.
    pub fn forward_layers(
        &self,
        x: Tensor<3>,
        mask: Tensor<2>,
        layers: std::ops::Range<usize>,
    ) -> Tensor<3> {
        if layers.is_empty() {
            return x;
        }
        let rows = TokenRows::new(x, mask);
        let out = self.run_rows(rows.x.clone(), &rows, layers);
        rows.unpack(out)
    }

    /// `forward`, also returning the hidden state after the first `k` layers: `(state
    /// after layer k, last hidden state)`, both `(b, t, h)`, from one pass (the batch is
    /// packed once).
    pub fn forward_with_prefix(
        &self,
        input_ids: Tensor<2, Int>,
        mask: Tensor<2>,
        k: usize,
    ) -> (Tensor<3>, Tensor<3>) {
        let k = k.min(self.layers.len());
        let rows = TokenRows::new(self.embeddings.forward(input_ids), mask);
        let prefix = self.run_rows(rows.x.clone(), &rows, 0..k);
        let out = self.run_rows(prefix.clone(), &rows, k..self.layers.len());
        (rows.unpack(prefix), rows.unpack(out))
    }

    fn run_rows(
        &self,
        x: Tensor<2>,
        rows: &TokenRows,
        layers: std::ops::Range<usize>,
    ) -> Tensor<2> {
        self.layers[layers].iter().fold(x, |x, layer| {
            layer.forward_rows(x, rows.bt, rows.packing.as_ref(), rows.bias.clone())
        })
    }
}

/// A padded batch `(b, t, h)` as the token rows the layers run on (the real ones under a
/// [`Packing`], else all `b·t` slots), with its attention bias.
struct TokenRows {
    x: Tensor<2>,
    bt: [usize; 2],
    h: usize,
    bias: Tensor<4>,
    packing: Option<Packing>,
}

impl TokenRows {
    fn new(x: Tensor<3>, mask: Tensor<2>) -> Self {
        let [b, t, h] = x.dims();
        let bias = attention_bias(mask.clone());
        let packing = Packing::from_mask(mask);
        let x = x.reshape([b * t, h]);
        let x = match &packing {
            Some(p) => p.pack(x),
            None => x,
        };
        TokenRows {
            x,
            bt: [b, t],
            h,
            bias,
            packing,
        }
    }

    /// Rows back to `(b, t, h)`, padding rows zero.
    fn unpack(&self, rows: Tensor<2>) -> Tensor<3> {
        let [b, t] = self.bt;
        match &self.packing {
            Some(p) => p.unpack_zeroed(rows),
            None => rows,
        }
        .reshape([b, t, self.h])
    }
}

/// The additive attention bias `(b, 1, 1, t)` of `mask` `(b, t)`: 0 for real keys, −10⁹
/// for padding keys (their softmax weight is then exactly zero).
pub fn attention_bias(mask: Tensor<2>) -> Tensor<4> {
    let [b, t] = mask.dims();
    (mask.ones_like() - mask)
        .mul_scalar(MASKED_SCORE)
        .reshape([b, 1, 1, t])
}

/// Where the real tokens of a padded `(b, t)` batch are, so that everything but attention
/// runs on the `T` real rows: the linear layers are ~98 % of an encoder layer's flops at
/// sentence lengths, and a batch of unsorted training pairs is often a third padding.
///
/// `None` (see [`Packing::from_mask`]) means the batch has no padding (or the mask could
/// not be read), and the rows are the batch's `b·t` slots in order.
#[derive(Debug, Clone)]
pub struct Packing {
    /// Flat slots `r·t + j` of the real tokens, in order: `(T,)`.
    rows: Tensor<1, Int>,
    /// For every slot of the batch, its row among the `T` real ones; padding slots point at
    /// row 0 (their keys have zero attention weight and their queries are dropped): `(b·t,)`.
    slots: Tensor<1, Int>,
    /// As `slots`, with padding slots pointing at an extra zero row `T`: `(b·t,)`.
    slots_zeroed: Tensor<1, Int>,
}

impl Packing {
    /// The packing of `mask` `(b, t)` (positive entries are real tokens), or `None` when
    /// every slot is real, none is, or the mask cannot be read back.
    pub fn from_mask(mask: Tensor<2>) -> Option<Self> {
        let device = mask.device();
        let flags = mask
            .try_into_data()
            .ok()?
            .convert::<f32>()
            .try_into_vec::<f32>()
            .ok()?;
        let rows: Vec<i64> = (0..flags.len() as i64)
            .filter(|&i| flags[i as usize] > 0.5)
            .collect();
        let real = rows.len();
        if real == 0 || real == flags.len() {
            return None;
        }
        let mut slots = vec![0i64; flags.len()];
        let mut slots_zeroed = vec![real as i64; flags.len()];
        for (r, &slot) in rows.iter().enumerate() {
            slots[slot as usize] = r as i64;
            slots_zeroed[slot as usize] = r as i64;
        }
        let index = |v: Vec<i64>| {
            let n = v.len();
            Tensor::<1, Int>::from_data(TensorData::new(v, [n]), &device)
        };
        Some(Packing {
            rows: index(rows),
            slots: index(slots),
            slots_zeroed: index(slots_zeroed),
        })
    }

    /// Real rows `(T, c)` back to all `b·t` slots `(b·t, c)`, padding slots as copies of
    /// row 0 (for attention's keys and values, whose padding rows get zero weight).
    fn unpack(&self, rows: Tensor<2>) -> Tensor<2> {
        rows.select(0, self.slots.clone())
    }

    /// Real rows `(T, c)` back to all `b·t` slots `(b·t, c)`, padding slots zero.
    fn unpack_zeroed(&self, rows: Tensor<2>) -> Tensor<2> {
        let [_, c] = rows.dims();
        let zero = Tensor::<2>::zeros([1, c], &rows.device());
        Tensor::cat(vec![rows, zero], 0).select(0, self.slots_zeroed.clone())
    }

    /// All `b·t` slots `(b·t, c)` down to the real rows `(T, c)`.
    fn pack(&self, slots: Tensor<2>) -> Tensor<2> {
        slots.select(0, self.rows.clone())
    }
}

impl EncoderEmbeddings {
    pub fn forward(&self, input_ids: Tensor<2, Int>) -> Tensor<3> {
        let [_, t] = input_ids.dims();
        let h = self.position.val().dims()[1];
        let words = self.word.forward(input_ids);
        let positions = self
            .position
            .val()
            .narrow(0, self.position_offset, t)
            .reshape([1, t, h]);
        let types = self.token_type.val().narrow(0, 0, 1).reshape([1, 1, h]);
        self.norm.forward(words + positions + types)
    }
}

/// The exact (erf) GELU of the feed-forward block.
///
/// On burn's flex CPU device (with or without autodiff) it runs on the CPU fast path
/// ([`crate::backend::cpu::fast::gelu_in_place`]): vectorised and on every core, where flex
/// evaluates libm's scalar `erff` one element at a time on one thread (a quarter of CPU
/// encoding time before). Other devices use burn's `gelu`.
///
/// With autodiff, the value and the derivative come from one pass and the result is
/// `value + (x − detach(x))·derivative`: `value` in the forward pass (the second term is an
/// exact zero for finite `x`) and `derivative` as the gradient with respect to `x`.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    if x.dtype() != DType::F32 || device.clone().inner() != Device::flex() {
        return burn::tensor::activation::gelu(x);
    }
    let dims = x.dims();
    let mut values = match x.clone().try_into_data().map(|d| d.try_into_vec::<f32>()) {
        Ok(Ok(values)) => values,
        _ => return burn::tensor::activation::gelu(x),
    };
    if device.is_autodiff() {
        let mut grad = vec![0.0f32; values.len()];
        crate::backend::cpu::fast::gelu_with_grad(&mut values, &mut grad);
        let value = Tensor::<D>::from_data(TensorData::new(values, dims), &device);
        let grad = Tensor::<D>::from_data(TensorData::new(grad, dims), &device);
        value + (x.clone() - x.detach()) * grad
    } else {
        drop(x);
        crate::backend::cpu::fast::gelu_in_place(&mut values);
        Tensor::<D>::from_data(TensorData::new(values, dims), &device)
    }
}

impl EncoderLayer {
    /// `x (b, t, h)`, `bias (b, 1, 1, t)` additive key mask. Every slot is computed,
    /// padding included; [`TransformerEncoder::forward_layers`] runs the real rows only.
    pub fn forward(&self, x: Tensor<3>, bias: Tensor<4>) -> Tensor<3> {
        let [b, t, h] = x.dims();
        self.forward_rows(x.reshape([b * t, h]), [b, t], None, bias)
            .reshape([b, t, h])
    }

    /// One layer on token rows `x`: the `T` real rows of a `[b, t]` batch under `packing`,
    /// or all `b·t` slots in order when `packing` is `None`; `bias (b, 1, 1, t)`.
    fn forward_rows(
        &self,
        x: Tensor<2>,
        [b, t]: [usize; 2],
        packing: Option<&Packing>,
        bias: Tensor<4>,
    ) -> Tensor<2> {
        let [_, h] = x.dims();
        let nh = self.heads;
        let hd = h / nh;
        let split = |y: Tensor<2>| {
            let y = match packing {
                Some(p) => p.unpack(y),
                None => y,
            };
            y.reshape([b, t, nh, hd]).swap_dims(1, 2)
        };
        let q = split(self.query.forward(x.clone()));
        let k = split(self.key.forward(x.clone()));
        let v = split(self.value.forward(x.clone()));
        let scores = q.matmul(k.transpose()).mul_scalar(1.0 / (hd as f64).sqrt()) + bias;
        let probs = softmax(scores, 3);
        let context = probs.matmul(v).swap_dims(1, 2).reshape([b * t, h]);
        let context = match packing {
            Some(p) => p.pack(context),
            None => context,
        };
        let x = self
            .attention_norm
            .forward(x + self.attention_output.forward(context));
        let ff = self
            .output
            .forward(gelu(self.intermediate.forward(x.clone())));
        self.output_norm.forward(x + ff)
    }
}
