//! x·Wᵀ for a frozen W whose backward pass computes only ∂L/∂x.
//!
//! candle's matmul backward always forms both operand gradients, so a frozen projection would still pay for an
//! m×n weight gradient that is thrown away — making adapter training cost as much as full fine-tuning. Here the
//! product is computed outside the graph and re-attached to x through a custom op whose backward is
//! ∂L/∂x = ∂L/∂y · W.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Storage, Tensor};

use crate::error::Result;

struct FrozenProduct {
    /// x·Wᵀ, contiguous, computed without graph.
    y: Tensor,
    /// W (out × in).
    w: Tensor,
}

impl FrozenProduct {
    fn stored<S>(
        &self,
        pick: impl Fn(&Storage, &Layout) -> candle_core::Result<S>,
    ) -> candle_core::Result<(S, Shape)> {
        let (storage, layout) = self.y.storage_and_layout();
        Ok((pick(&storage, layout)?, layout.shape().clone()))
    }
}

impl CustomOp1 for FrozenProduct {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.stored(|s, l| match s {
            Storage::Cpu(c) => c.try_clone(l),
            _ => candle_core::bail!("frozen-linear: operands on different devices"),
        })
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        self.stored(|s, l| match s {
            Storage::Cuda(c) => c.try_clone(l),
            _ => candle_core::bail!("frozen-linear: operands on different devices"),
        })
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.matmul(&self.w)?))
    }
}

/// x (N×n) · Wᵀ (W: m×n). When W is a trainable variable this is the plain product; otherwise only x gets a
/// gradient.
///
/// f32/f64 CPU operands go through faer ([`crate::finetune::ops::linear`]), whose backward pass likewise forms
/// ∂L/∂W only for a trainable W.
pub fn linear_t(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if let Some(y) = crate::finetune::ops::linear::linear_t(x, w)? {
        return Ok(y);
    }
    // A W the graph tracks (a variable, or computed from one) needs candle's full backward.
    if w.track_op() || !x.track_op() {
        return Ok(x.matmul(&w.t()?)?);
    }
    let y = x.detach().matmul(&w.t()?)?.contiguous()?;
    Ok(x.apply_op1(FrozenProduct { y, w: w.clone() })?)
}

/// x·Wᵀ + a for a frozen W: one fused output on f32/f64 CPU tensors (the frozen product is never a tensor of its
/// own in the graph), [`linear_t`] + a otherwise.
pub fn linear_t_plus(x: &Tensor, w: &Tensor, a: &Tensor) -> Result<Tensor> {
    if let Some(y) = crate::finetune::ops::linear::linear_t_plus(x, w, a)? {
        return Ok(y);
    }
    Ok((linear_t(x, w)? + a)?)
}
