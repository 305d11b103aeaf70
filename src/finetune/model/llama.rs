//! The decoder: token embedding, the blocks, a final RMSNorm and the LM head (tied to the embedding or not).

use candle_core::{DType, Device, Tensor, Var};

use super::block::{Block, BlockEnv, Cached, CachedStep};
use super::cache::KvCache;
use super::checkpoint::Checkpoint;
use super::config::ModelConfig;
use super::rope::Rope;
use super::target::TargetModule;
use crate::error::{AbbaError, Result};
use crate::finetune::layers::{AdaptedLinear, ForwardCtx};

/// Hugging Face's tensor names for a Llama-family checkpoint, spelled once (projection paths come from
/// [`super::TargetModule::module_path`]).
mod hf {
    pub const EMBED: &str = "model.embed_tokens.weight";
    pub const NORM: &str = "model.norm.weight";
    pub const LM_HEAD: &str = "lm_head.weight";

    pub fn input_norm(layer: usize) -> String {
        format!("model.layers.{layer}.input_layernorm.weight")
    }

    pub fn post_attention_norm(layer: usize) -> String {
        format!("model.layers.{layer}.post_attention_layernorm.weight")
    }
}

/// Rotary tables are built for at most this many positions (Llama 3 declares 131072; a table that long would
/// cost memory for nothing in fine-tuning).
const MAX_ROPE_POSITIONS: usize = 32_768;

#[derive(Clone, Debug)]
pub struct Llama {
    pub cfg: ModelConfig,
    pub embed: Tensor,
    pub blocks: Vec<Block>,
    pub norm: Tensor,
    /// `None` when the head is tied to the embedding.
    pub lm_head: Option<Tensor>,
    rope: Rope,
}

impl Llama {
    pub fn load(ckpt: &Checkpoint, dtype: DType, device: &Device) -> Result<Self> {
        let cfg = ckpt.config.clone();
        let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
        let (q_out, kv_out) = (
            cfg.num_attention_heads * cfg.head_dim,
            cfg.num_key_value_heads * cfg.head_dim,
        );
        let get = |name: &str, shape: &[usize]| ckpt.tensor(name, shape, dtype, device);
        let mut blocks = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let lin =
                |t: TargetModule, out: usize, inp: usize, bias: bool| -> Result<AdaptedLinear> {
                    let path = t.module_path(l);
                    let w = get(&format!("{path}.weight"), &[out, inp])?;
                    let b = if bias {
                        Some(get(&format!("{path}.bias"), &[out])?)
                    } else {
                        None
                    };
                    Ok(AdaptedLinear::new(w, b))
                };
            blocks.push(Block {
                input_norm: get(&hf::input_norm(l), &[h])?,
                post_attention_norm: get(&hf::post_attention_norm(l), &[h])?,
                q: lin(TargetModule::Q, q_out, h, cfg.qkv_bias)?,
                k: lin(TargetModule::K, kv_out, h, cfg.qkv_bias)?,
                v: lin(TargetModule::V, kv_out, h, cfg.qkv_bias)?,
                o: lin(TargetModule::O, h, q_out, cfg.o_bias)?,
                gate: lin(TargetModule::Gate, i, h, false)?,
                up: lin(TargetModule::Up, i, h, false)?,
                down: lin(TargetModule::Down, h, i, false)?,
            });
        }
        // Some tied checkpoints still carry lm_head.weight; the config decides.
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(get(hf::LM_HEAD, &[v, h])?)
        };
        Ok(Llama {
            embed: get(hf::EMBED, &[v, h])?,
            norm: get(hf::NORM, &[h])?,
            blocks,
            lm_head,
            rope: Rope::new(
                &cfg,
                cfg.max_position_embeddings.min(MAX_ROPE_POSITIONS),
                dtype,
                device,
            )?,
            cfg,
        })
    }

    /// A freshly initialised model (normal(0, `std`) weights, unit norms), for pretraining tiny demo models.
    pub fn random(cfg: ModelConfig, std: f64, seed: u64, device: &Device) -> Result<Self> {
        use rand_distr::{Distribution, Normal};
        let mut rng = crate::rng::seeded(seed);
        let normal = Normal::new(0.0f32, std as f32)
            .map_err(|e| AbbaError::InvalidArgument(e.to_string()))?;
        let mut randn = |shape: (usize, usize)| -> Result<Tensor> {
            let data: Vec<f32> = (0..shape.0 * shape.1)
                .map(|_| normal.sample(&mut rng))
                .collect();
            Ok(Tensor::from_vec(data, shape, device)?)
        };
        let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
        let (q_out, kv_out) = (
            cfg.num_attention_heads * cfg.head_dim,
            cfg.num_key_value_heads * cfg.head_dim,
        );
        let ones = Tensor::ones(h, DType::F32, device)?;
        let zeros = |n: usize| Tensor::zeros(n, DType::F32, device);
        let mut blocks = Vec::new();
        for _ in 0..cfg.num_hidden_layers {
            let qkv_bias = |n: usize| -> Result<Option<Tensor>> {
                Ok(if cfg.qkv_bias { Some(zeros(n)?) } else { None })
            };
            blocks.push(Block {
                input_norm: ones.clone(),
                post_attention_norm: ones.clone(),
                q: AdaptedLinear::new(randn((q_out, h))?, qkv_bias(q_out)?),
                k: AdaptedLinear::new(randn((kv_out, h))?, qkv_bias(kv_out)?),
                v: AdaptedLinear::new(randn((kv_out, h))?, qkv_bias(kv_out)?),
                o: AdaptedLinear::new(
                    randn((h, q_out))?,
                    if cfg.o_bias { Some(zeros(h)?) } else { None },
                ),
                gate: AdaptedLinear::new(randn((i, h))?, None),
                up: AdaptedLinear::new(randn((i, h))?, None),
                down: AdaptedLinear::new(randn((h, i))?, None),
            });
        }
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(randn((v, h))?)
        };
        Ok(Llama {
            embed: randn((v, h))?,
            norm: ones,
            blocks,
            lm_head,
            rope: Rope::new(
                &cfg,
                cfg.max_position_embeddings.min(MAX_ROPE_POSITIONS),
                DType::F32,
                device,
            )?,
            cfg,
        })
    }

    /// The longest sequence (prompt + generated) the model accepts.
    pub fn max_positions(&self) -> usize {
        self.rope.positions()
    }

    pub fn device(&self) -> &Device {
        self.embed.device()
    }

    pub fn dtype(&self) -> DType {
        self.embed.dtype()
    }

    /// Logits (batch, seq, vocab) at every position for token ids (batch, seq). With a cache, the ids continue
    /// the cached rows.
    pub fn forward(
        &self,
        ids: &Tensor,
        ctx: &ForwardCtx,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let x = self.final_norm(&self.hidden(ids, ctx, cache)?)?;
        let logits = self.head(&x.reshape((b * t, self.cfg.hidden_size))?)?;
        Ok(logits.reshape((b, t, self.cfg.vocab_size))?)
    }

    /// Logits (batch, vocab) at the last position only, for ids (batch, seq) continuing the cached rows: a
    /// generation step, which needs no other position's logits.
    pub fn forward_last(
        &self,
        ids: &Tensor,
        ctx: &ForwardCtx,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let t = ids.dim(1)?;
        let x = self.hidden(ids, ctx, Some(cache))?;
        self.head(&self.final_norm(&x.narrow(1, t - 1, 1)?.squeeze(1)?)?)
    }

    /// Hidden states (batch, seq, hidden) after the last block, before the final norm.
    fn hidden(
        &self,
        ids: &Tensor,
        ctx: &ForwardCtx,
        mut cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        if cache.is_none() && t > self.rope.positions() {
            return Err(AbbaError::InvalidArgument(format!(
                "sequence of {t} positions exceeds the model's {}: lower max_len or max_new_tokens",
                self.rope.positions()
            )));
        }
        // A cached step: every row at its own positions (left padding), one mask for all layers.
        let step = match cache.as_deref() {
            Some(c) => {
                let layout = c.step_layout(b, t, self.cfg.sliding_window, self.device())?;
                let (cos, sin) = self.rope.tables_at(&layout.positions, b)?;
                Some(CachedStep {
                    cos,
                    sin,
                    mask: layout.mask,
                })
            }
            None => None,
        };
        let h = self.cfg.hidden_size;
        let mut x = self
            .embed
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, h))?;
        let env = BlockEnv {
            cfg: &self.cfg,
            rope: &self.rope,
            ctx,
        };
        for (layer, block) in self.blocks.iter().enumerate() {
            let cached = match (cache.as_deref_mut(), &step) {
                (Some(cache), Some(step)) => Some(Cached { cache, layer, step }),
                _ => None,
            };
            x = block.forward(&x, &env, cached)?;
        }
        Ok(x)
    }

    /// The final RMSNorm.
    fn final_norm(&self, x: &Tensor) -> Result<Tensor> {
        Ok(crate::finetune::ops::rms_norm::rms_norm(
            x,
            &self.norm,
            self.cfg.rms_norm_eps,
        )?)
    }

    /// The LM head on (rows, hidden) states: (rows, vocab) logits.
    fn head(&self, x: &Tensor) -> Result<Tensor> {
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        crate::finetune::layers::frozen::linear_t(x, head)
    }

    /// Every adapted-or-not projection with its module path (`model.layers.3.mlp.up_proj`).
    pub fn linears(&self) -> Vec<(String, TargetModule, &AdaptedLinear)> {
        let mut out = Vec::new();
        for (l, block) in self.blocks.iter().enumerate() {
            for t in TargetModule::ALL {
                out.push((t.module_path(l), t, block.linear(t)));
            }
        }
        out
    }

    pub fn linears_mut(&mut self) -> Vec<(String, TargetModule, &mut AdaptedLinear)> {
        let mut out = Vec::new();
        for (l, block) in self.blocks.iter_mut().enumerate() {
            let paths: Vec<String> = TargetModule::ALL.iter().map(|t| t.module_path(l)).collect();
            let Block {
                q,
                k,
                v,
                o,
                gate,
                up,
                down,
                ..
            } = block;
            let all = [q, k, v, o, gate, up, down];
            for ((lin, t), p) in all.into_iter().zip(TargetModule::ALL).zip(paths) {
                out.push((p, t, lin));
            }
        }
        out
    }

    /// The model's base weights under their Hugging Face names, with adapters merged in (W0 + ΔW) when present.
    pub fn named_weights(&self, merge_adapters: bool) -> Result<Vec<(String, Tensor)>> {
        let mut out = vec![
            (hf::EMBED.to_string(), self.embed.clone()),
            (hf::NORM.to_string(), self.norm.clone()),
        ];
        if let Some(head) = &self.lm_head {
            out.push((hf::LM_HEAD.to_string(), head.clone()));
        }
        for (l, block) in self.blocks.iter().enumerate() {
            out.push((hf::input_norm(l), block.input_norm.clone()));
            out.push((
                hf::post_attention_norm(l),
                block.post_attention_norm.clone(),
            ));
        }
        for (path, _, lin) in self.linears() {
            let w = if merge_adapters {
                lin.merged_weight()?
            } else {
                lin.weight.clone()
            };
            out.push((format!("{path}.weight"), w));
            if let Some(b) = &lin.bias {
                out.push((format!("{path}.bias"), b.clone()));
            }
        }
        Ok(out)
    }

    /// Turns every base weight into a trainable variable (full fine-tuning, pretraining) and returns them by name.
    pub fn make_base_trainable(&mut self) -> Result<Vec<(String, Var)>> {
        let mut vars = Vec::new();
        let mut track = |name: String, t: &mut Tensor| -> Result<()> {
            let var = Var::from_tensor(t)?;
            *t = var.as_tensor().clone();
            vars.push((name, var));
            Ok(())
        };
        track(hf::EMBED.into(), &mut self.embed)?;
        track(hf::NORM.into(), &mut self.norm)?;
        if let Some(head) = &mut self.lm_head {
            track(hf::LM_HEAD.into(), head)?;
        }
        for (l, block) in self.blocks.iter_mut().enumerate() {
            track(hf::input_norm(l), &mut block.input_norm)?;
            track(hf::post_attention_norm(l), &mut block.post_attention_norm)?;
        }
        for (path, _, lin) in self.linears_mut() {
            track(format!("{path}.weight"), &mut lin.weight)?;
            if let Some(b) = &mut lin.bias {
                track(format!("{path}.bias"), b)?;
            }
        }
        Ok(vars)
    }

    /// Adapter variables by saved name (`model.layers.0.self_attn.q_proj.lora_A`), in a stable order.
    pub fn adapter_vars(&self) -> Vec<(String, Var)> {
        let mut out = Vec::new();
        for (path, _, lin) in self.linears() {
            if let Some(a) = &lin.adapter {
                for (name, var) in a.var_names().iter().zip(a.vars()) {
                    out.push((format!("{path}.{name}"), var.clone()));
                }
            }
        }
        out
    }

    pub fn num_base_params(&self) -> usize {
        self.named_weights(false)
            .map(|w| w.iter().map(|(_, t)| t.elem_count()).sum())
            .unwrap_or(0)
    }

    pub fn num_adapter_params(&self) -> usize {
        self.linears()
            .iter()
            .filter_map(|(_, _, l)| l.adapter.as_ref())
            .map(|a| a.num_params())
            .sum()
    }
}
