//! A frozen projection W0 (a plain tensor, never a variable, so no gradient is ever computed for it) with an
//! optional bias and an optional adapter whose input goes through dropout during training.

use candle_core::Tensor;

use super::adapter::AdapterWeights;
use super::context::ForwardCtx;
use crate::error::Result;

#[derive(Clone, Debug)]
pub struct AdaptedLinear {
    /// W0, out_features × in_features (PyTorch layout).
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub adapter: Option<AdapterWeights>,
    /// Dropout on the adapter's input (PEFT's `lora_dropout`), applied only in training.
    pub dropout: f32,
}

impl AdaptedLinear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        AdaptedLinear {
            weight,
            bias,
            adapter: None,
            dropout: 0.0,
        }
    }

    /// (out, in).
    pub fn shape(&self) -> Result<(usize, usize)> {
        Ok(self.weight.dims2()?)
    }

    /// y = x·W0ᵀ + b + adapter(dropout(x)), for x of shape (…, in).
    pub fn forward(&self, x: &Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let n_in = *dims.last().unwrap_or(&0);
        let rows = x.elem_count() / n_in.max(1);
        let x2 = x.reshape((rows, n_in))?;
        let mut y = match &self.adapter {
            None => super::frozen::linear_t(&x2, &self.weight)?,
            Some(adapter) => {
                // Methods that rescale the frozen product (DoRA) or form ΔW anyway give the whole output when x is
                // undropped.
                let whole = if ctx.drops(self.dropout) {
                    None
                } else {
                    adapter.layer_output(&x2, &self.weight)?
                };
                match whole {
                    Some(y) => y,
                    None => {
                        let xd = ctx.dropout(&x2, self.dropout)?;
                        let delta = adapter.forward(&xd, &self.weight)?;
                        super::frozen::linear_t_plus(&x2, &self.weight, &delta)?
                    }
                }
            }
        };
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        let mut out_dims = dims;
        if let Some(last) = out_dims.last_mut() {
            *last = self.weight.dim(0)?;
        }
        Ok(y.reshape(out_dims)?)
    }

    /// W0 + ΔW, the weight a merged checkpoint holds.
    pub fn merged_weight(&self) -> Result<Tensor> {
        match &self.adapter {
            Some(a) => Ok((&self.weight + a.delta(&self.weight)?)?),
            None => Ok(self.weight.clone()),
        }
    }
}
