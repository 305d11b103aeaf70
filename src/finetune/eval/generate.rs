//! Greedy decoding: one forward over the prompt, then one token at a time against the KV cache.

use candle_core::{D, Tensor};

use crate::error::Result;
use crate::finetune::layers::ForwardCtx;
use crate::finetune::model::{KvCache, Llama};

/// Appends up to `max_new` argmax tokens to `prompt`, stopping after `eos` if given or when the model's position
/// limit is reached. Returns only the new tokens.
pub fn greedy(model: &Llama, prompt: &[u32], max_new: usize, eos: Option<u32>) -> Result<Vec<u32>> {
    let ctx = ForwardCtx::eval();
    let mut cache = KvCache::new(model.blocks.len());
    let max_new = max_new.min(model.max_positions().saturating_sub(prompt.len()));
    let mut out = Vec::with_capacity(max_new);
    let mut input = Tensor::from_slice(prompt, (1, prompt.len()), model.device())?;
    for _ in 0..max_new {
        let logits = model.forward(&input, &ctx, Some(&mut cache))?;
        let last = logits
            .narrow(1, logits.dim(1)? - 1, 1)?
            .squeeze(1)?
            .squeeze(0)?;
        let next: u32 = last.argmax(D::Minus1)?.to_scalar()?;
        out.push(next);
        if Some(next) == eos {
            break;
        }
        input = Tensor::from_slice(&[next], (1, 1), model.device())?;
    }
    Ok(out)
}
