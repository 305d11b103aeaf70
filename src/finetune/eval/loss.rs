//! Next-token cross-entropy over the response tokens only (the mask zeroes prompt and padding positions).

use candle_core::{D, DType, Tensor};

use crate::error::Result;
use crate::finetune::data::Batch;
use crate::finetune::layers::ForwardCtx;
use crate::finetune::model::Llama;

/// Mean of −log p(target) over positions where `mask` is 1. `logits` (b, t, V), `targets` (b, t) u32, `mask` (b, t).
/// Returned as an f32 scalar whatever the model dtype. f32/f64 CPU logits go through the fused kernel
/// ([`crate::finetune::ops::cross_entropy`], computed in the logits' dtype); others through the composite ops in
/// f32 ([`masked_cross_entropy_composite`]).
pub fn masked_cross_entropy(logits: &Tensor, targets: &Tensor, mask: &Tensor) -> Result<Tensor> {
    if crate::finetune::ops::fused(logits) {
        let mask = mask.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let count = mask.iter().sum::<f64>().max(1.0);
        let weights: Vec<f64> = mask.iter().map(|m| m / count).collect();
        if let Some(loss) =
            crate::finetune::ops::cross_entropy::weighted_cross_entropy(logits, targets, &weights)?
        {
            return Ok(loss.to_dtype(DType::F32)?);
        }
    }
    masked_cross_entropy_composite(logits, targets, mask)
}

/// [`masked_cross_entropy`] through candle's composite ops (log-softmax, gather, masked sum), in f32.
pub fn masked_cross_entropy_composite(
    logits: &Tensor,
    targets: &Tensor,
    mask: &Tensor,
) -> Result<Tensor> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The fused entry point (f32/f64 CPU logits) returns an f32 scalar equal to the composite ops' one.
    #[test]
    fn fused_and_composite_losses_agree() {
        let dev = candle_core::Device::Cpu;
        let targets = Tensor::from_vec(vec![3u32, 0, 6, 2, 2, 5], (2, 3), &dev).unwrap();
        let mask = Tensor::from_vec(vec![1f32, 0., 1., 1., 1., 0.], (2, 3), &dev).unwrap();
        for dtype in [DType::F32, DType::F64] {
            let z = Tensor::randn(0f32, 1.0, (2, 3, 7), &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let fused = masked_cross_entropy(&z, &targets, &mask).unwrap();
            let comp = masked_cross_entropy_composite(&z, &targets, &mask).unwrap();
            assert_eq!(fused.dtype(), DType::F32);
            let (a, b) = (
                fused.to_scalar::<f32>().unwrap(),
                comp.to_scalar::<f32>().unwrap(),
            );
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
        }
    }
}
