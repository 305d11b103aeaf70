//! The SwiGLU gate silu(g) ⊙ u in one pass, with the backward pass ∂L/∂g = ∂L/∂y ⊙ u ⊙ σ(g)(1 + g(1 − σ(g)))
//! and ∂L/∂u = ∂L/∂y ⊙ silu(g); σ(g) is recomputed rather than kept.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};

use super::{Elem, for_rows, fused, same_dtype, slice, storage, tensor, with_data};

struct SiluMul;

/// Rows of this width are handed to the parallel splitter (the op is elementwise; rows only set the grain).
const GRAIN: usize = 1024;

#[inline(always)]
fn sigmoid<T: Elem>(x: T) -> T {
    T::one() / (T::one() + (-x).exp_k())
}

// The row kernels, compiled for the widest vectors the CPU has (the same IEEE operations at any width).
crate::fit::fused::multiversion! {
fn fwd_row<T: Elem>(y: &mut [T], g: &[T], u: &[T]) {
    let n = y.len();
    let (g, u) = (&g[..n], &u[..n]);
    for j in 0..n {
        y[j] = g[j] * sigmoid(g[j]) * u[j];
    }
}
}

crate::fit::fused::multiversion! {
fn gate_grad_row<T: Elem>(d: &mut [T], g: &[T], u: &[T], dy: &[T]) {
    let n = d.len();
    let (g, u, dy) = (&g[..n], &u[..n], &dy[..n]);
    for j in 0..n {
        let s = sigmoid(g[j]);
        d[j] = dy[j] * u[j] * s * (T::one() + g[j] * (T::one() - s));
    }
}
}

crate::fit::fused::multiversion! {
fn up_grad_row<T: Elem>(d: &mut [T], g: &[T], dy: &[T]) {
    let n = d.len();
    let (g, dy) = (&g[..n], &dy[..n]);
    for j in 0..n {
        d[j] = dy[j] * g[j] * sigmoid(g[j]);
    }
}
}

impl SiluMul {
    fn fwd<T: Elem>(
        &self,
        g: &CpuStorage,
        lg: &Layout,
        u: &CpuStorage,
        lu: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        if lg.shape() != lu.shape() {
            candle_core::bail!(
                "fused-silu-mul: gate {:?} vs up {:?}",
                lg.shape(),
                lu.shape()
            );
        }
        let gs = slice::<T>(g, lg, "fused-silu-mul")?;
        let us = slice::<T>(u, lu, "fused-silu-mul")?;
        let mut y = super::linear::output::<T>(gs.len());
        for_rows(&mut y, GRAIN, |i, out| {
            let o = i * GRAIN;
            fwd_row(out, &gs[o..], &us[o..]);
        });
        Ok((storage(y), lg.shape().clone()))
    }

    fn bwd_t<T: Elem>(
        &self,
        g: &Tensor,
        u: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        with_data::<T, _>(g, "fused-silu-mul", |gs| {
            with_data::<T, _>(u, "fused-silu-mul", |us| {
                with_data::<T, _>(grad, "fused-silu-mul", |dy| {
                    let dg = if g.track_op() {
                        let mut dg = super::linear::output::<T>(gs.len());
                        for_rows(&mut dg, GRAIN, |i, out| {
                            let o = i * GRAIN;
                            gate_grad_row(out, &gs[o..], &us[o..], &dy[o..]);
                        });
                        Some(tensor(dg, g.shape())?)
                    } else {
                        None
                    };
                    let du = if u.track_op() {
                        let mut du = super::linear::output::<T>(gs.len());
                        for_rows(&mut du, GRAIN, |i, out| {
                            let o = i * GRAIN;
                            up_grad_row(out, &gs[o..], &dy[o..]);
                        });
                        Some(tensor(du, u.shape())?)
                    } else {
                        None
                    };
                    Ok((dg, du))
                })
            })
        })
    }
}

impl CustomOp2 for SiluMul {
    fn name(&self) -> &'static str {
        "fused-silu-mul"
    }

    fn cpu_fwd(
        &self,
        g: &CpuStorage,
        lg: &Layout,
        u: &CpuStorage,
        lu: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        match same_dtype("fused-silu-mul", &[g, u])? {
            DType::F32 => self.fwd::<f32>(g, lg, u, lu),
            DType::F64 => self.fwd::<f64>(g, lg, u, lu),
            d => candle_core::bail!("fused-silu-mul: {d:?} is not supported"),
        }
    }

    fn bwd(
        &self,
        g: &Tensor,
        u: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        match grad.dtype() {
            DType::F32 => self.bwd_t::<f32>(g, u, grad),
            DType::F64 => self.bwd_t::<f64>(g, u, grad),
            d => candle_core::bail!("fused-silu-mul: {d:?} is not supported"),
        }
    }
}

/// silu(gate) ⊙ up: fused for f32/f64 CPU tensors of one shape, candle's composite ops otherwise.
pub fn silu_mul(gate: &Tensor, up: &Tensor) -> candle_core::Result<Tensor> {
    if fused(gate) && fused(up) && gate.dtype() == up.dtype() && gate.shape() == up.shape() {
        let g = gate.contiguous()?;
        let u = up.contiguous()?;
        return g.apply_op2(&u, SiluMul);
    }
    silu_mul_composite(gate, up)
}

/// The composite ops the fused kernel replaces.
pub fn silu_mul_composite(gate: &Tensor, up: &Tensor) -> candle_core::Result<Tensor> {
    gate.silu()? * up
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finetune::ops::check::{DTYPES, agree, var};

    #[test]
    fn matches_the_composite_ops_in_value_and_gradient() {
        for dtype in DTYPES {
            // 3·5·300 elements: more than one parallel grain and a ragged last one.
            let g = var(&[3, 5, 300], dtype, 3);
            let u = var(&[3, 5, 300], dtype, 4);
            agree(
                &format!("silu_mul {dtype:?}"),
                &[&g, &u],
                || silu_mul(g.as_tensor(), u.as_tensor()),
                || silu_mul_composite(g.as_tensor(), u.as_tensor()),
            );
        }
    }
}
