//! RMSNorm y = x / √(mean(x²) + ε) ⊙ w over the last dimension, in one pass, with the backward pass
//! ∂L/∂x = r·(g − x̂·mean(g ⊙ x̂)), g = ∂L/∂y ⊙ w, x̂ = r·x, r = 1/√(mean(x²) + ε), and ∂L/∂w = Σ_rows ∂L/∂y ⊙ x̂
//! (formed only when w is trainable). r is recomputed in the backward pass rather than kept.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};

use super::{Elem, for_rows, fused, same_dtype, slice, storage, tensor, with_data};

struct RmsNorm {
    eps: f64,
}

fn inv_rms<T: Elem>(row: &[T], eps: f64) -> T {
    let mut ss = T::zero();
    for &v in row {
        ss += v * v;
    }
    let ms = ss / T::of(row.len() as f64);
    T::one() / num_traits::Float::sqrt(ms + T::of(eps))
}

impl RmsNorm {
    fn fwd<T: Elem>(
        &self,
        x: &CpuStorage,
        lx: &Layout,
        w: &CpuStorage,
        lw: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let xs = slice::<T>(x, lx, "fused-rms-norm")?;
        let ws = slice::<T>(w, lw, "fused-rms-norm")?;
        let h = ws.len();
        if h == 0 || lx.shape().dims().last() != Some(&h) {
            candle_core::bail!(
                "fused-rms-norm: weight of {h} for x of shape {:?}",
                lx.shape()
            );
        }
        let mut y = super::linear::output::<T>(xs.len());
        for_rows(&mut y, h, |i, out| {
            let row = &xs[i * h..(i + 1) * h];
            let r = inv_rms(row, self.eps);
            for ((o, &v), &wv) in out.iter_mut().zip(row).zip(ws) {
                *o = v * r * wv;
            }
        });
        Ok((storage(y), lx.shape().clone()))
    }

    fn bwd_t<T: Elem>(
        &self,
        x: &Tensor,
        w: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let h = w.elem_count();
        with_data::<T, _>(x, "fused-rms-norm", |xs| {
            with_data::<T, _>(w, "fused-rms-norm", |ws| {
                with_data::<T, _>(grad, "fused-rms-norm", |gs| {
                    let dx = if x.track_op() {
                        let mut dx = super::linear::output::<T>(xs.len());
                        for_rows(&mut dx, h, |i, out| {
                            let row = &xs[i * h..(i + 1) * h];
                            let g = &gs[i * h..(i + 1) * h];
                            let r = inv_rms(row, self.eps);
                            let mut dot = T::zero();
                            for ((&gv, &wv), &xv) in g.iter().zip(ws).zip(row) {
                                dot += gv * wv * xv;
                            }
                            // mean(g ⊙ x̂) with x̂ = r·x.
                            let c = dot * r / T::of(h as f64);
                            for (((o, &gv), &wv), &xv) in out.iter_mut().zip(g).zip(ws).zip(row) {
                                *o = r * (gv * wv - xv * r * c);
                            }
                        });
                        Some(tensor(dx, x.shape())?)
                    } else {
                        None
                    };
                    let dw = if w.track_op() {
                        let mut dw = vec![T::zero(); h];
                        for (row, g) in xs.chunks(h).zip(gs.chunks(h)) {
                            let r = inv_rms(row, self.eps);
                            for ((d, &gv), &xv) in dw.iter_mut().zip(g).zip(row) {
                                *d += gv * xv * r;
                            }
                        }
                        Some(tensor(dw, w.shape())?)
                    } else {
                        None
                    };
                    Ok((dx, dw))
                })
            })
        })
    }
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        lx: &Layout,
        w: &CpuStorage,
        lw: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        match same_dtype("fused-rms-norm", &[x, w])? {
            DType::F32 => self.fwd::<f32>(x, lx, w, lw),
            DType::F64 => self.fwd::<f64>(x, lx, w, lw),
            d => candle_core::bail!("fused-rms-norm: {d:?} is not supported"),
        }
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        match grad.dtype() {
            DType::F32 => self.bwd_t::<f32>(x, w, grad),
            DType::F64 => self.bwd_t::<f64>(x, w, grad),
            d => candle_core::bail!("fused-rms-norm: {d:?} is not supported"),
        }
    }
}

/// RMSNorm of `x` (…, h) with weight `w` (h): the fused kernel for f32/f64 CPU tensors, candle's composite
/// `rms_norm_slow` (which has a backward pass) otherwise.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    if fused(x) && fused(w) && x.dtype() == w.dtype() {
        let x = x.contiguous()?;
        let w = w.contiguous()?;
        // ε rounded through f32 as the composite op (and transformers' f32 models) use it.
        return x.apply_op2(
            &w,
            RmsNorm {
                eps: eps as f32 as f64,
            },
        );
    }
    candle_nn::ops::rms_norm_slow(x, w, eps as f32)
}

/// The composite ops the fused kernel replaces, for tests.
pub fn rms_norm_composite(x: &Tensor, w: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    candle_nn::ops::rms_norm_slow(x, w, eps as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finetune::ops::check::{DTYPES, agree, var};

    #[test]
    fn matches_the_composite_op_in_value_and_gradient() {
        for dtype in DTYPES {
            let x = var(&[2, 3, 8], dtype, 1);
            let w = var(&[8], dtype, 2);
            agree(
                &format!("rms_norm {dtype:?}"),
                &[&x, &w],
                || rms_norm(x.as_tensor(), w.as_tensor(), 1e-5),
                || rms_norm_composite(x.as_tensor(), w.as_tensor(), 1e-5),
            );
            // A frozen weight gets no gradient; x still does.
            let wf = w.as_tensor().detach();
            agree(
                &format!("rms_norm frozen weight {dtype:?}"),
                &[&x],
                || rms_norm(x.as_tensor(), &wf, 1e-6),
                || rms_norm_composite(x.as_tensor(), &wf, 1e-6),
            );
        }
    }
}
