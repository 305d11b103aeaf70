//! Rotary position embeddings as Hugging Face Llama applies them: frequencies θ^(−2i/d), optionally rescaled
//! (linear or Llama 3), and the non-interleaved "rotate half" pairing of dimension i with i + d/2.

use candle_core::{D, DType, Device, Tensor};

use super::config::{ModelConfig, RopeScaling};
use crate::error::{AbbaError, Result};

/// cos/sin tables of shape (positions, head_dim/2).
#[derive(Clone, Debug)]
pub struct Rope {
    cos: Tensor,
    sin: Tensor,
}

/// Inverse frequencies after scaling, in f64 (HF computes them in f32; the difference is far below test tolerance).
pub fn inv_frequencies(cfg: &ModelConfig) -> Vec<f64> {
    let d = cfg.head_dim;
    let base: Vec<f64> = (0..d / 2)
        .map(|i| 1.0 / cfg.rope_theta.powf((2 * i) as f64 / d as f64))
        .collect();
    match cfg.rope_scaling {
        RopeScaling::None => base,
        RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: old_len,
        } => {
            let low_wavelen = old_len / low_freq_factor;
            let high_wavelen = old_len / high_freq_factor;
            base.iter()
                .map(|&f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        // Between the two wavelengths Llama 3 blends the scaled and unscaled frequency.
                        let smooth = (old_len / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
    }
}

impl Rope {
    pub fn new(cfg: &ModelConfig, positions: usize, dtype: DType, device: &Device) -> Result<Self> {
        let inv = inv_frequencies(cfg);
        let half = inv.len();
        let mut cos = Vec::with_capacity(positions * half);
        let mut sin = Vec::with_capacity(positions * half);
        for p in 0..positions {
            for &f in &inv {
                // HF multiplies in f32; round the angle the same way so long positions agree.
                let angle = (p as f32 * f as f32) as f64;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        let cos = Tensor::from_vec(cos, (positions, half), device)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, (positions, half), device)?.to_dtype(dtype)?;
        Ok(Rope { cos, sin })
    }

    pub fn positions(&self) -> usize {
        self.cos.dim(0).unwrap_or(0)
    }

    /// The cos and sin rows, (seq, head_dim/2) each, of positions `offset..offset + seq`.
    pub fn tables(&self, offset: usize, seq: usize) -> Result<(Tensor, Tensor)> {
        Ok((
            self.cos.narrow(0, offset, seq)?,
            self.sin.narrow(0, offset, seq)?,
        ))
    }

    /// Rotates `x` of shape (batch, heads, seq, head_dim) whose first position is `offset`. Built from
    /// differentiable ops (candle's fused `rope` kernel has no backward pass).
    pub fn apply(&self, x: &Tensor, offset: usize) -> Result<Tensor> {
        let seq = x.dim(2)?;
        let cos = self.cos.narrow(0, offset, seq)?;
        let sin = self.sin.narrow(0, offset, seq)?;
        let cos = Tensor::cat(&[&cos, &cos], D::Minus1)?
            .unsqueeze(0)?
            .unsqueeze(0)?;
        let sin = Tensor::cat(&[&sin, &sin], D::Minus1)?
            .unsqueeze(0)?
            .unsqueeze(0)?;
        let d = x.dim(D::Minus1)?;
        let x1 = x.narrow(D::Minus1, 0, d / 2)?;
        let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
        let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        Ok((x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?)?)
    }

    /// cos/sin tables of shape (batch, seq, head_dim/2) for row-major (batch, seq) `positions`, each row of a
    /// batch at its own positions (left-padded generation).
    pub fn tables_at(&self, positions: &[u32], batch: usize) -> Result<(Tensor, Tensor)> {
        let seq = positions.len() / batch.max(1);
        if let Some(&p) = positions.iter().find(|&&p| p as usize >= self.positions()) {
            return Err(AbbaError::InvalidArgument(format!(
                "position {p} exceeds the model's {}: lower max_len or max_new_tokens",
                self.positions()
            )));
        }
        let index = Tensor::from_slice(positions, positions.len(), self.cos.device())?;
        let half = self.cos.dim(1)?;
        let pick = |t: &Tensor| t.index_select(&index, 0)?.reshape((batch, seq, half));
        Ok((pick(&self.cos)?, pick(&self.sin)?))
    }

    /// Rotates `x` (batch, heads, seq, head_dim) by tables from [`Self::tables_at`]: the same arithmetic as
    /// [`Self::apply`] in one fused kernel, which has no backward pass (generation only).
    pub fn apply_tables(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::rotary_emb::rope(&x.contiguous()?, cos, sin)?)
    }
}
