//! One decoder layer: pre-norm grouped-query self-attention and a SwiGLU MLP, each added to the residual stream.

use candle_core::Tensor;

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
    /// f32/f64 CPU tensors go through the fused kernels of [`crate::finetune::ops`]; other devices and dtypes
    /// through the composite candle ops those kernels are tested against.
    pub fn forward(
        &self,
        x: &Tensor,
        env: &BlockEnv<'_>,
        offset: usize,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Result<Tensor> {
        let eps = env.cfg.rms_norm_eps;
        let h = rms_norm(x, &self.input_norm, eps)?;
        let x = (x + self.attention(&h, env, offset, cache)?)?;
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
        offset: usize,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Result<Tensor> {
        let cfg = env.cfg;
        let t = x.dim(1)?;
        let (heads, kv_heads, d) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        let (cos, sin) = env.rope.tables(offset, t)?;
        let split = |y: Tensor, n: usize, rotate: bool| -> Result<Tensor> {
            let table = rotate.then_some((&cos, &sin));
            Ok(match rope::split_heads_rope(&y, n, d, table)? {
                Some(s) => s,
                None => rope::split_heads_rope_composite(&y, n, d, table)?,
            })
        };
        let q = split(self.q.forward(x, env.ctx)?, heads, true)?;
        let mut k = split(self.k.forward(x, env.ctx)?, kv_heads, true)?;
        let mut v = split(self.v.forward(x, env.ctx)?, kv_heads, false)?;
        if let Some((cache, layer)) = cache {
            (k, v) = cache.append(layer, &k, &v)?;
        }
        let out = match attention::causal_attention(&q, &k, &v, cfg.sliding_window)? {
            Some(out) => out,
            None => attention::causal_attention_composite(&q, &k, &v, cfg.sliding_window)?,
        };
        self.o.forward(&out, env.ctx)
    }
}
