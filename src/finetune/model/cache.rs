//! Key/value cache for greedy generation: each layer keeps the rotated keys and values it has seen.

use candle_core::{D, Tensor};

use crate::error::Result;

#[derive(Clone, Debug, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    pub fn new(layers: usize) -> Self {
        KvCache {
            layers: vec![None; layers],
        }
    }

    /// Number of positions already cached.
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .and_then(|(k, _)| k.dim(2).ok())
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends this step's (batch, kv_heads, seq, head_dim) keys and values and returns the full history.
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let entry = match self.layers[layer].take() {
            Some((pk, pv)) => (
                Tensor::cat(&[&pk, k], D::Minus2)?,
                Tensor::cat(&[&pv, v], D::Minus2)?,
            ),
            None => (k.clone(), v.clone()),
        };
        self.layers[layer] = Some(entry.clone());
        Ok(entry)
    }
}
