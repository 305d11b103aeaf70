//! The sum of a var's gradient parts (a sharded micro-batch's shards, after the micro-batches before them) in one
//! pass over memory. Adding them one candle addition at a time reads and writes a weight-sized buffer per part: for
//! full fine-tuning with four shards that was 4.5 % of a step in perf.

use candle_core::{DType, Storage, Tensor};
use rayon::prelude::*;

use super::{Elem, PAR_MIN_ELEMS, fused, linear::output, slice, tensor};

/// (t₀ + t₁) + t₂ + …, element by element in this order: the values of adding the terms one at a time. CPU f32
/// and f64 terms of one shape and dtype go in one pass; anything else through candle's additions.
pub fn sum_in_order(terms: Vec<Tensor>) -> candle_core::Result<Tensor> {
    let Some(first) = terms.first() else {
        candle_core::bail!("sum_in_order: no terms to add");
    };
    let one_pass = terms.len() > 2
        && terms
            .iter()
            .all(|t| fused(t) && t.dtype() == first.dtype() && t.shape() == first.shape());
    if one_pass {
        return match first.dtype() {
            DType::F32 => sum_cpu::<f32>(&terms),
            _ => sum_cpu::<f64>(&terms),
        };
    }
    let mut terms = terms.into_iter();
    let mut sum = terms.next().expect("at least one term");
    for t in terms {
        sum = (sum + t)?;
    }
    Ok(sum)
}

fn sum_cpu<T: Elem>(terms: &[Tensor]) -> candle_core::Result<Tensor> {
    let terms = terms
        .iter()
        .map(|t| t.contiguous())
        .collect::<candle_core::Result<Vec<_>>>()?;
    let guards: Vec<_> = terms.iter().map(|t| t.storage_and_layout()).collect();
    let slices = guards
        .iter()
        .map(|(storage, layout)| match &**storage {
            Storage::Cpu(c) => slice::<T>(c, layout, "gradient sum"),
            _ => candle_core::bail!("gradient sum: not a CPU tensor"),
        })
        .collect::<candle_core::Result<Vec<&[T]>>>()?;
    let n = terms[0].elem_count();
    let mut out = output::<T>(n);
    // Chunks small enough that the running sum stays in L1 while each term streams past it.
    const CHUNK: usize = 4096;
    let add = |(c, out): (usize, &mut [T])| {
        let at = c * CHUNK..c * CHUNK + out.len();
        out.copy_from_slice(&slices[0][at.clone()]);
        for s in &slices[1..] {
            for (o, &x) in out.iter_mut().zip(&s[at.clone()]) {
                *o += x;
            }
        }
    };
    if n >= PAR_MIN_ELEMS && rayon::current_num_threads() > 1 {
        out.par_chunks_mut(CHUNK).enumerate().for_each(add);
    } else {
        out.chunks_mut(CHUNK).enumerate().for_each(add);
    }
    tensor(out, terms[0].shape().clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finetune::ops::check::randn;

    /// Bit for bit the sum that adding the terms one candle addition at a time gives, in f32 and f64, with a
    /// transposed (non-contiguous) term, on one thread and on several (38,191 entries, past the parallel floor,
    /// and not a multiple of the chunk); bf16 terms take candle's additions and give what they give.
    #[test]
    fn one_pass_sum_equals_adding_one_at_a_time() -> candle_core::Result<()> {
        let one_at_a_time =
            |terms: &[Tensor]| terms[1..].iter().try_fold(terms[0].clone(), |s, t| s + t);
        let bits = |t: &Tensor| -> candle_core::Result<Vec<u64>> {
            Ok(t.to_dtype(DType::F64)?
                .flatten_all()?
                .to_vec1::<f64>()?
                .iter()
                .map(|x| x.to_bits())
                .collect())
        };
        for dtype in [DType::F32, DType::F64, DType::BF16] {
            for (rows, cols) in [(97, 131), (181, 211)] {
                let mut terms: Vec<Tensor> = (0..4)
                    .map(|i| randn(&[rows, cols], DType::F32, 10 + i).to_dtype(dtype))
                    .collect::<candle_core::Result<_>>()?;
                terms[2] = randn(&[cols, rows], DType::F32, 40).to_dtype(dtype)?.t()?;
                let want = one_at_a_time(&terms)?;
                let got = sum_in_order(terms)?;
                assert_eq!(got.dtype(), dtype);
                assert_eq!(bits(&got)?, bits(&want)?, "{dtype:?} {rows}×{cols}");
            }
        }
        Ok(())
    }
}
