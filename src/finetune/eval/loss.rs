//! Next-token cross-entropy over the response tokens only (the mask zeroes prompt and padding positions).

use candle_core::{D, DType, Tensor};

use crate::error::Result;
use crate::finetune::data::Batch;
use crate::finetune::layers::ForwardCtx;
use crate::finetune::model::Llama;

/// Mean of −log p(target) over positions where `mask` is 1. `logits` (b, t, V), `targets` (b, t) u32, `mask` (b, t).
/// Computed in f32 whatever the model dtype.
pub fn masked_cross_entropy(logits: &Tensor, targets: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?;
    let picked = logp
        .gather(&targets.unsqueeze(D::Minus1)?, D::Minus1)?
        .squeeze(D::Minus1)?;
    let mask = mask.to_dtype(DType::F32)?;
    let count = mask.sum_all()?.to_scalar::<f32>()?.max(1.0);
    Ok(((picked * mask)?.sum_all()?.neg()? / count as f64)?)
}

/// Tensors of a [`Batch`] on the model's device: (inputs, targets, mask).
pub fn batch_tensors(model: &Llama, batch: &Batch) -> Result<(Tensor, Tensor, Tensor)> {
    let shape = (batch.batch, batch.seq);
    let dev = model.device();
    Ok((
        Tensor::from_slice(&batch.inputs, shape, dev)?,
        Tensor::from_slice(&batch.targets, shape, dev)?,
        Tensor::from_slice(&batch.loss_mask, shape, dev)?,
    ))
}

/// Token-weighted mean loss over batches (perplexity is its exponential).
pub fn mean_loss(model: &Llama, batches: &[Batch]) -> Result<f64> {
    let ctx = ForwardCtx::eval();
    let (mut total, mut tokens) = (0.0, 0usize);
    for batch in batches {
        let n = batch.tokens();
        if n == 0 {
            continue;
        }
        let (x, y, m) = batch_tensors(model, batch)?;
        let logits = model.forward(&x, &ctx, None)?;
        total += masked_cross_entropy(&logits, &y, &m)?.to_scalar::<f32>()? as f64 * n as f64;
        tokens += n;
    }
    Ok(if tokens == 0 {
        f64::NAN
    } else {
        total / tokens as f64
    })
}
