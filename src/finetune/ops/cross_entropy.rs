//! Weighted next-token cross-entropy Σᵢ wᵢ·(logsumexp(zᵢ) − zᵢ[yᵢ]) over logit rows zᵢ in one pass, without the
//! log-softmax tensor the composite path keeps; backward ∂L/∂zᵢ = wᵢ·(softmax(zᵢ) − onehot(yᵢ)), softmax
//! recomputed from the logits.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};

use super::{Elem, for_rows, fused, slice, storage, tensor, with_data};

struct CrossEntropy<T> {
    targets: Vec<u32>,
    /// Per-row weight (mask / count); rows of weight 0 are skipped.
    weights: Vec<T>,
}

fn logsumexp<T: Elem>(row: &[T]) -> T {
    let mut mx = T::neg_infinity();
    for &x in row {
        mx = if x > mx { x } else { mx };
    }
    let mut sum = T::zero();
    for &x in row {
        sum += (x - mx).exp_k();
    }
    mx + num_traits::Float::ln(sum)
}

impl<T: Elem> CrossEntropy<T> {
    fn check(&self, len: usize, vocab: usize) -> candle_core::Result<()> {
        let rows = self.targets.len();
        if rows * vocab != len || self.weights.len() != rows {
            candle_core::bail!(
                "fused-cross-entropy: {len} logits for {rows} targets of vocabulary {vocab}"
            );
        }
        if let Some(&y) = self.targets.iter().find(|&&y| y as usize >= vocab) {
            candle_core::bail!("fused-cross-entropy: target {y} outside the vocabulary of {vocab}");
        }
        Ok(())
    }

    fn fwd(&self, z: &[T], vocab: usize) -> candle_core::Result<T> {
        self.check(z.len(), vocab)?;
        let mut total = T::zero();
        for ((row, &y), &w) in z.chunks(vocab).zip(&self.targets).zip(&self.weights) {
            if w != T::zero() {
                total += w * (logsumexp(row) - row[y as usize]);
            }
        }
        Ok(total)
    }

    fn bwd(&self, z: &[T], vocab: usize, g: T) -> Vec<T> {
        let mut dz = super::linear::output::<T>(z.len());
        for_rows(&mut dz, vocab, |i, out| {
            let w = self.weights[i] * g;
            if w == T::zero() {
                out.fill(T::zero());
                return;
            }
            let row = &z[i * vocab..(i + 1) * vocab];
            let lse = logsumexp(row);
            for (o, &x) in out.iter_mut().zip(row) {
                *o = w * (x - lse).exp_k();
            }
            out[self.targets[i] as usize] -= w;
        });
        dz
    }
}

macro_rules! impl_cross_entropy {
    ($t:ty) => {
        impl CustomOp1 for CrossEntropy<$t> {
            fn name(&self) -> &'static str {
                "fused-cross-entropy"
            }

            fn cpu_fwd(
                &self,
                s: &CpuStorage,
                l: &Layout,
            ) -> candle_core::Result<(CpuStorage, Shape)> {
                let vocab = *l.shape().dims().last().unwrap_or(&0);
                let loss = self.fwd(slice::<$t>(s, l, "fused-cross-entropy")?, vocab)?;
                Ok((storage(vec![loss]), Shape::from(())))
            }

            fn bwd(
                &self,
                arg: &Tensor,
                _res: &Tensor,
                grad: &Tensor,
            ) -> candle_core::Result<Option<Tensor>> {
                let g = grad.to_scalar::<$t>()?;
                let vocab = *arg.dims().last().unwrap_or(&0);
                let dz =
                    with_data::<$t, _>(arg, "fused-cross-entropy", |z| Ok(self.bwd(z, vocab, g)))?;
                Ok(Some(tensor(dz, arg.shape())?))
            }
        }
    };
}
impl_cross_entropy!(f32);
impl_cross_entropy!(f64);

/// Σᵢ weightsᵢ·(−log softmax(logitsᵢ)[targetsᵢ]) for logits (…, V), targets (…) u32 and one weight per row.
/// Fused for f32/f64 CPU logits; `None` otherwise.
pub fn weighted_cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    weights: &[f64],
) -> candle_core::Result<Option<Tensor>> {
    if !fused(logits) {
        return Ok(None);
    }
    let targets = targets
        .flatten_all()?
        .to_dtype(DType::U32)?
        .to_vec1::<u32>()?;
    let z = logits.contiguous()?;
    Ok(Some(match z.dtype() {
        DType::F32 => z.apply_op1(CrossEntropy::<f32> {
            targets,
            weights: weights.iter().map(|&w| w as f32).collect(),
        })?,
        DType::F64 => z.apply_op1(CrossEntropy::<f64> {
            targets,
            weights: weights.to_vec(),
        })?,
        _ => return Ok(None),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finetune::ops::check::{DTYPES, agree, var};

    #[test]
    fn matches_the_composite_ops_in_value_and_gradient() {
        let targets =
            Tensor::from_vec(vec![3u32, 0, 6, 2, 2, 5], (2, 3), &candle_core::Device::Cpu).unwrap();
        let mask = Tensor::from_vec(
            vec![1f32, 0., 1., 1., 1., 0.],
            (2, 3),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        for dtype in DTYPES {
            let z = var(&[2, 3, 7], dtype, 8);
            // The composite path computes in f32; compare in the logits' dtype by computing it there.
            agree(
                &format!("cross-entropy {dtype:?}"),
                &[&z],
                || {
                    let mask = mask.flatten_all()?.to_vec1::<f32>()?;
                    let n = mask.iter().sum::<f32>() as f64;
                    let w: Vec<f64> = mask.iter().map(|&m| m as f64 / n).collect();
                    weighted_cross_entropy(z.as_tensor(), &targets, &w)
                        .map(|l| l.expect("fused path"))
                },
                || composite_in(z.as_tensor(), &targets, &mask),
            );
        }
    }

    /// The composite ops of `eval::loss::masked_cross_entropy_composite` in the logits' own dtype (the entry
    /// point's own test, in `eval/loss.rs`, compares the two public functions).
    fn composite_in(z: &Tensor, targets: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        use candle_core::D;
        let logp = candle_nn::ops::log_softmax(z, D::Minus1)?;
        let picked = logp
            .gather(&targets.unsqueeze(D::Minus1)?, D::Minus1)?
            .squeeze(D::Minus1)?;
        let mask = mask.to_dtype(z.dtype())?;
        let count = mask.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        (picked * mask)?.sum_all()?.neg()? / count
    }
}
