//! One decoder layer: pre-norm grouped-query self-attention and a SwiGLU MLP, each added to the residual stream.

use candle_core::{D, DType, Tensor};

use super::cache::KvCache;
use super::config::ModelConfig;
use super::rope::Rope;
use super::target::TargetModule;
use crate::error::Result;
use crate::finetune::layers::{AdaptedLinear, ForwardCtx};
use crate::finetune::ops::rms_norm::rms_norm;
use crate::finetune::ops::swiglu::silu_mul;
use crate::finetune::ops::{attention, rope};

#[derive(Clone, Debug)]
pub struct Block {
    pub input_norm: Tensor,
    pub post_attention_norm: Tensor,
    pub q: AdaptedLinear,
    pub k: AdaptedLinear,
    pub v: AdaptedLinear,
    pub o: AdaptedLinear,
    pub gate: AdaptedLinear,
    pub up: AdaptedLinear,
    pub down: AdaptedLinear,
}

/// What the layer needs from the model: shapes, norm epsilon, rotary tables.
pub struct BlockEnv<'a> {
    pub cfg: &'a ModelConfig,
    pub rope: &'a Rope,
    pub ctx: &'a ForwardCtx,
}

/// Rotary tables and attention mask of one cached (generation) step, computed once for all layers from the
/// cache's [`StepLayout`](super::cache::StepLayout): each row of the batch at its own positions.
pub struct CachedStep {
    /// (batch, seq, head_dim/2).
    pub cos: Tensor,
    pub sin: Tensor,
    /// Additive, broadcast against (batch, heads, seq, total); `None` when nothing is masked.
    pub mask: Option<Tensor>,
}

/// A layer's view of the generation state: the cache it writes its keys and values to, and the step's layout.
pub struct Cached<'a> {
    pub cache: &'a mut KvCache,
    pub layer: usize,
    pub step: &'a CachedStep,
}

impl Block {
    pub fn linear(&self, t: TargetModule) -> &AdaptedLinear {
        match t {
            TargetModule::Q => &self.q,
            TargetModule::K => &self.k,
            TargetModule::V => &self.v,
            TargetModule::O => &self.o,
            TargetModule::Gate => &self.gate,
            TargetModule::Up => &self.up,
            TargetModule::Down => &self.down,
        }
    }

    pub fn linear_mut(&mut self, t: TargetModule) -> &mut AdaptedLinear {
        match t {
            TargetModule::Q => &mut self.q,
            TargetModule::K => &mut self.k,
            TargetModule::V => &mut self.v,
            TargetModule::O => &mut self.o,
            TargetModule::Gate => &mut self.gate,
            TargetModule::Up => &mut self.up,
            TargetModule::Down => &mut self.down,
        }
    }

    /// `x`: (batch, seq, hidden), positions 0.. without a cache; with one, the step continues the cached rows.
    /// f32/f64 CPU tensors go through the fused kernels of [`crate::finetune::ops`]; other devices and dtypes
    /// through the composite candle ops those kernels are tested against.
    pub fn forward(
        &self,
        x: &Tensor,
        env: &BlockEnv<'_>,
        cache: Option<Cached<'_>>,
    ) -> Result<Tensor> {
        let eps = env.cfg.rms_norm_eps;
        let h = rms_norm(x, &self.input_norm, eps)?;
        let x = (x + self.attention(&h, env, cache)?)?;
        let h = rms_norm(&x, &self.post_attention_norm, eps)?;
        let gate = self.gate.forward(&h, env.ctx)?;
        let up = self.up.forward(&h, env.ctx)?;
        let mlp = self.down.forward(&silu_mul(&gate, &up)?, env.ctx)?;
        Ok((x + mlp)?)
    }

    fn attention(
        &self,
        x: &Tensor,
        env: &BlockEnv<'_>,
        cache: Option<Cached<'_>>,
    ) -> Result<Tensor> {
        let cfg = env.cfg;
        let t = x.dim(1)?;
        let (heads, kv_heads, d) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        let split = |y: Tensor, n: usize, table: Option<(&Tensor, &Tensor)>| -> Result<Tensor> {
            Ok(match rope::split_heads_rope(&y, n, d, table)? {
                Some(s) => s,
                None => rope::split_heads_rope_composite(&y, n, d, table)?,
            })
        };
        let q = self.q.forward(x, env.ctx)?;
        let k = self.k.forward(x, env.ctx)?;
        let v = self.v.forward(x, env.ctx)?;
        let out = match cache {
            // Training and whole-sequence passes: positions 0..t, the fused causal kernel.
            None => {
                let (cos, sin) = env.rope.tables(0, t)?;
                let q = split(q, heads, Some((&cos, &sin)))?;
                let k = split(k, kv_heads, Some((&cos, &sin)))?;
                let v = split(v, kv_heads, None)?;
                match attention::causal_attention(&q, &k, &v, cfg.sliding_window)? {
                    Some(out) => out,
                    None => attention::causal_attention_composite(&q, &k, &v, cfg.sliding_window)?,
                }
            }
            // A generation step: every row at its own positions, with the step's padding mask.
            Some(Cached { cache, layer, step }) => {
                let q = Rope::apply_tables(&split(q, heads, None)?, &step.cos, &step.sin)?;
                let k = Rope::apply_tables(&split(k, kv_heads, None)?, &step.cos, &step.sin)?;
                let v = split(v, kv_heads, None)?;
                let (k, v) = cache.append(layer, &k, &v)?;
                masked_attention(&q, &k, &v, step.mask.as_ref())?
            }
        };
        self.o.forward(&out, env.ctx)
    }
}

/// Attention of q (b, heads, t, d) over the cached k, v (b, kv_heads, total, d) with an additive mask (generation
/// only: no backward pass is needed). Grouped-query attention without copying keys and values for every query
/// head: the n_rep query heads that share a key/value head are stacked along the sequence axis,
/// (b, kv_heads, n_rep·t, d). Scores and softmax in f32 (as transformers' eager attention), whatever the model
/// dtype. Returns (b, t, heads·d).
fn masked_attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let (b, heads, t, d) = q.dims4()?;
    let (_, kv_heads, total, _) = k.dims4()?;
    let n_rep = heads / kv_heads;
    let dtype = q.dtype();
    let scores = (q
        .to_dtype(DType::F32)?
        .reshape((b, kv_heads, n_rep * t, d))?
        .matmul(&k.to_dtype(DType::F32)?.t()?)?
        / (d as f64).sqrt())?
    .reshape((b, heads, t, total))?;
    let scores = match mask {
        Some(mask) => scores.broadcast_add(mask)?,
        None => scores,
    };
    let probs = candle_nn::ops::softmax(&scores, D::Minus1)?
        .to_dtype(dtype)?
        .reshape((b, kv_heads, n_rep * t, total))?;
    Ok(probs
        .matmul(v)?
        .reshape((b, heads, t, d))?
        .transpose(1, 2)?
        .reshape((b, t, heads * d))?)
}
