//! What a forward pass needs besides its inputs: whether it trains (dropout on) and the seeded RNG that draws
//! dropout masks. candle cannot seed its CPU generator, so masks come from our ChaCha stream: the same seed gives
//! the same masks on every device and thread count.

use std::sync::Mutex;

use candle_core::{Device, Tensor};
use rand::Rng;

use crate::error::Result;
use crate::rng::{SeededRng, seeded};

pub struct ForwardCtx {
    train: bool,
    rng: Mutex<SeededRng>,
}

impl ForwardCtx {
    pub fn eval() -> Self {
        ForwardCtx {
            train: false,
            rng: Mutex::new(seeded(0)),
        }
    }

    pub fn train(seed: u64) -> Self {
        ForwardCtx {
            train: true,
            rng: Mutex::new(seeded(seed)),
        }
    }

    pub fn is_train(&self) -> bool {
        self.train
    }

    /// Whether [`Self::dropout`] with probability `p` changes its input (training only).
    pub fn drops(&self, p: f32) -> bool {
        self.train && p > 0.0
    }

    /// Inverted dropout with probability `p`: kept entries are scaled by 1/(1−p) so the expectation is unchanged.
    pub fn dropout(&self, x: &Tensor, p: f32) -> Result<Tensor> {
        if !self.drops(p) {
            return Ok(x.clone());
        }
        let keep = 1.0 / (1.0 - p);
        let mask: Vec<f32> = {
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            (0..x.elem_count())
                .map(|_| if rng.random::<f32>() < p { 0.0 } else { keep })
                .collect()
        };
        let mask = Tensor::from_vec(mask, x.shape(), &Device::Cpu)?
            .to_dtype(x.dtype())?
            .to_device(x.device())?;
        Ok((x * mask)?)
    }
}
