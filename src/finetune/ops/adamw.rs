//! AdamW's update of one f32 CPU parameter in a single pass over p, g, m and v.
//!
//! The composite update ([`composite_update`], what CUDA and half-precision parameters take) issues about ten
//! candle ops per parameter, each reading and writing a whole tensor and each a round trip through candle's
//! thread pool; for full fine-tuning that is the largest elementwise cost of a step. This kernel applies the same
//! IEEE operations in the same order to each element (candle's `t * c` is `t·c + 0`, kept here because it turns
//! −0 into +0), so its results are the composite's bit for bit — the test below checks exactly that.

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use super::{PAR_MIN_ELEMS, linear::output, tensor, with_data};

/// The per-step scalars of the update, as candle receives them (f64, rounded to f32 per op).
#[derive(Clone, Copy, Debug)]
pub struct AdamWStep {
    /// 1 − lr·weight_decay.
    pub decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// 1 / √(1 − β2ᵗ).
    pub inv_bias_correction2_sqrt: f64,
    pub eps: f64,
    /// lr / (1 − β1ᵗ).
    pub step_size: f64,
}

/// Whether [`update`] handles this parameter and gradient: both f32 on the CPU.
pub fn applies(p: &Tensor, g: &Tensor) -> bool {
    [p, g]
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// The updated (p, m, v) of one parameter (p in f32, same shapes, on p's device), without graph: the one-pass
/// kernel where it [`applies`], the composite candle ops elsewhere.
pub fn update(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    s: AdamWStep,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    if applies(p, g) {
        fused_update(p, g, m, v, s)
    } else {
        composite_update(p, g, m, v, s)
    }
}

/// The update of one parameter through candle ops, in f32 whatever the parameter's dtype (CUDA, bf16/f16, f64):
/// the reference [`fused_update`] reproduces bit for bit on f32 CPU tensors.
fn composite_update(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    s: AdamWStep,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    let g = g.to_dtype(DType::F32)?;
    let p = p.to_dtype(DType::F32)?.affine(s.decay, 0.0)?;
    let m = (m + ((&g - m)? * (1.0 - s.beta1))?)?; // torch: exp_avg.lerp_(g, 1-β1)
    let v = ((v * s.beta2)? + (g.sqr()? * (1.0 - s.beta2))?)?;
    let denom = v.sqrt()?.affine(s.inv_bias_correction2_sqrt, s.eps)?;
    let p = (p - ((&m / &denom)? * s.step_size)?)?;
    Ok((p, m, v))
}

/// The one-pass update of an f32 CPU parameter.
fn fused_update(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    s: AdamWStep,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    let n = p.elem_count();
    let mut p_out = output::<f32>(n);
    let mut m_out = output::<f32>(n);
    let mut v_out = output::<f32>(n);
    with_data::<f32, _>(p, "adamw p", |p| {
        with_data::<f32, _>(g, "adamw g", |g| {
            with_data::<f32, _>(m, "adamw m", |m| {
                with_data::<f32, _>(v, "adamw v", |v| {
                    let k = Coeffs::of(s);
                    let chunk = PAR_MIN_ELEMS;
                    let work = |(((po, mo), vo), (((p, g), m), v)): Chunk<'_>| {
                        update_chunk(po, mo, vo, p, g, m, v, k);
                    };
                    if n > chunk && rayon::current_num_threads() > 1 {
                        p_out
                            .par_chunks_mut(chunk)
                            .zip(m_out.par_chunks_mut(chunk))
                            .zip(v_out.par_chunks_mut(chunk))
                            .zip(
                                p.par_chunks(chunk)
                                    .zip(g.par_chunks(chunk))
                                    .zip(m.par_chunks(chunk))
                                    .zip(v.par_chunks(chunk)),
                            )
                            .for_each(work);
                    } else {
                        work((((&mut p_out, &mut m_out), &mut v_out), (((p, g), m), v)));
                    }
                    Ok(())
                })
            })
        })
    })?;
    let shape = p.shape().clone();
    Ok((
        tensor(p_out, shape.clone())?,
        tensor(m_out, shape.clone())?,
        tensor(v_out, shape)?,
    ))
}

type Chunk<'a> = (
    ((&'a mut [f32], &'a mut [f32]), &'a mut [f32]),
    (((&'a [f32], &'a [f32]), &'a [f32]), &'a [f32]),
);

/// The scalars rounded to f32 as candle's `affine` rounds them.
#[derive(Clone, Copy)]
struct Coeffs {
    decay: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    inv_bc2: f32,
    eps: f32,
    step: f32,
}

impl Coeffs {
    fn of(s: AdamWStep) -> Self {
        Coeffs {
            decay: s.decay as f32,
            one_minus_beta1: (1.0 - s.beta1) as f32,
            beta2: s.beta2 as f32,
            one_minus_beta2: (1.0 - s.beta2) as f32,
            inv_bc2: s.inv_bias_correction2_sqrt as f32,
            eps: s.eps as f32,
            step: s.step_size as f32,
        }
    }
}

crate::fit::fused::multiversion! {
#[allow(clippy::too_many_arguments)]
fn update_chunk(
    po: &mut [f32],
    mo: &mut [f32],
    vo: &mut [f32],
    p: &[f32],
    g: &[f32],
    m: &[f32],
    v: &[f32],
    k: Coeffs,
) {
    let n = po.len();
    let (mo, vo, p, g, m, v) = (&mut mo[..n], &mut vo[..n], &p[..n], &g[..n], &m[..n], &v[..n]);
    for i in 0..n {
        // The composite's ops, one by one: p.affine(decay, 0); m + (g − m)·(1−β1); v·β2 + g²·(1−β2);
        // √v·(1/√bc2) + eps; p − (m/denom)·step.
        let decayed = p[i] * k.decay + 0.0;
        let m1 = m[i] + ((g[i] - m[i]) * k.one_minus_beta1 + 0.0);
        let v1 = (v[i] * k.beta2 + 0.0) + ((g[i] * g[i]) * k.one_minus_beta2 + 0.0);
        let denom = v1.sqrt() * k.inv_bc2 + k.eps;
        po[i] = decayed - ((m1 / denom) * k.step + 0.0);
        mo[i] = m1;
        vo[i] = v1;
    }
}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finetune::ops::check::randn;

    fn bits(t: &Tensor) -> Vec<u32> {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .into_iter()
            .map(f32::to_bits)
            .collect()
    }

    #[test]
    fn matches_the_composite_update_bit_for_bit() {
        // One grain, and several grains with a ragged last one (the parallel path).
        for (n, seed) in [(1000, 1), (3 * PAR_MIN_ELEMS + 77, 2)] {
            let p = randn(&[n], DType::F32, seed);
            // Gradients with exact zeros and negative zeros (the `+ 0` of candle's affine matters there).
            let g = (randn(&[n], DType::F32, seed + 10) * 1e-2)
                .unwrap()
                .relu()
                .unwrap();
            let g = Tensor::cat(
                &[
                    g.narrow(0, 0, n / 2).unwrap(),
                    (g.narrow(0, n / 2, n - n / 2).unwrap() * -1.0).unwrap(),
                ],
                0,
            )
            .unwrap();
            let m = (randn(&[n], DType::F32, seed + 20) * 1e-3).unwrap();
            let v = (randn(&[n], DType::F32, seed + 30).sqr().unwrap() * 1e-5).unwrap();
            for (t, lr, wd) in [(1.0f64, 1e-3, 0.0), (7.0, 3e-2, 0.1)] {
                let s = AdamWStep {
                    decay: 1.0 - lr * wd,
                    beta1: 0.9,
                    beta2: 0.999,
                    inv_bias_correction2_sqrt: 1.0 / (1.0 - 0.999f64.powf(t)).sqrt(),
                    eps: 1e-8,
                    step_size: lr / (1.0 - 0.9f64.powf(t)),
                };
                assert!(applies(&p, &g));
                let fused = fused_update(&p, &g, &m, &v, s).unwrap();
                let reference = composite_update(&p, &g, &m, &v, s).unwrap();
                for (what, a, b) in [
                    ("p", &fused.0, &reference.0),
                    ("m", &fused.1, &reference.1),
                    ("v", &fused.2, &reference.2),
                ] {
                    assert_eq!(bits(a), bits(b), "{what} differs (n = {n}, t = {t})");
                }
            }
        }
    }
}
