//! One decoder layer: pre-norm grouped-query self-attention and a SwiGLU MLP, each added to the residual stream.

use candle_core::{D, DType, Device, Tensor};

use super::cache::KvCache;
use super::config::ModelConfig;
use super::rope::Rope;
use super::target::TargetModule;
use crate::error::Result;
use crate::finetune::layers::{AdaptedLinear, ForwardCtx};

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

    /// `x`: (batch, seq, hidden) whose first position is `offset` (non-zero only when a cache holds the past).
    pub fn forward(
        &self,
        x: &Tensor,
        env: &BlockEnv<'_>,
        offset: usize,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Result<Tensor> {
        let eps = env.cfg.rms_norm_eps as f32;
        let h = candle_nn::ops::rms_norm_slow(x, &self.input_norm, eps)?;
        let x = (x + self.attention(&h, env, offset, cache)?)?;
        let h = candle_nn::ops::rms_norm_slow(&x, &self.post_attention_norm, eps)?;
        let gate = self.gate.forward(&h, env.ctx)?;
        let up = self.up.forward(&h, env.ctx)?;
        let mlp = self.down.forward(&(gate.silu()? * up)?, env.ctx)?;
        Ok((x + mlp)?)
    }

    fn attention(
        &self,
        x: &Tensor,
        env: &BlockEnv<'_>,
        offset: usize,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Result<Tensor> {
        let cfg = env.cfg;
        let (b, t, _) = x.dims3()?;
        let (heads, kv_heads, d) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        let split = |y: Tensor, n: usize| -> Result<Tensor> {
            Ok(y.reshape((b, t, n, d))?.transpose(1, 2)?.contiguous()?)
        };
        let q = env
            .rope
            .apply(&split(self.q.forward(x, env.ctx)?, heads)?, offset)?;
        let mut k = env
            .rope
            .apply(&split(self.k.forward(x, env.ctx)?, kv_heads)?, offset)?;
        let mut v = split(self.v.forward(x, env.ctx)?, kv_heads)?;
        if let Some((cache, layer)) = cache {
            (k, v) = cache.append(layer, &k, &v)?;
        }
        let k = repeat_kv(&k, heads / kv_heads)?;
        let v = repeat_kv(&v, heads / kv_heads)?;
        let total = k.dim(2)?;
        // Scores and softmax in f32 (as HF's eager attention), whatever the model dtype.
        let dtype = q.dtype();
        let scores = (q
            .to_dtype(DType::F32)?
            .matmul(&k.to_dtype(DType::F32)?.t()?)?
            / (d as f64).sqrt())?;
        let mask = causal_mask(t, total, offset, cfg.sliding_window, q.device())?;
        let scores = scores.broadcast_add(&mask)?;
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?.to_dtype(dtype)?;
        let out = probs.matmul(&v.contiguous()?)?;
        let out = out.transpose(1, 2)?.reshape((b, t, heads * d))?;
        self.o.forward(&out, env.ctx)
    }
}

/// Each of the `kv_heads` key/value heads serves `n_rep` query heads (grouped-query attention).
fn repeat_kv(x: &Tensor, n_rep: usize) -> Result<Tensor> {
    if n_rep == 1 {
        return Ok(x.clone());
    }
    let (b, kv, t, d) = x.dims4()?;
    Ok(x.unsqueeze(2)?
        .broadcast_as((b, kv, n_rep, t, d))?
        .reshape((b, kv * n_rep, t, d))?)
}

/// (seq, total) additive mask: query i (absolute position offset + i) sees keys j ≤ offset + i, and with a sliding
/// window only the last `window` of them.
fn causal_mask(
    seq: usize,
    total: usize,
    offset: usize,
    window: Option<usize>,
    device: &Device,
) -> Result<Tensor> {
    let mut mask = vec![0f32; seq * total];
    for i in 0..seq {
        let pos = offset + i;
        for j in 0..total {
            let too_far = window.is_some_and(|w| pos >= j + w);
            if j > pos || too_far {
                mask[i * total + j] = f32::NEG_INFINITY;
            }
        }
    }
    Ok(Tensor::from_vec(mask, (seq, total), device)?)
}
