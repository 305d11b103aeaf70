//! Trainable matrix products a·b and a·bᵀ for the adapter code: through faer on f32/f64 CPU matrices (its
//! AVX-512 kernels where the CPU has them; candle's own CPU matmul stops at AVX2), candle's matmul otherwise.
//! Gradients reach whichever operand the graph tracks, as with candle's matmul.

use candle_core::Tensor;

use crate::error::Result;
use crate::finetune::ops::linear;

/// a·b.
pub fn product(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(match linear::matmul(a, b)? {
        Some(y) => y,
        None => a.matmul(b)?,
    })
}

/// a·bᵀ.
pub fn product_t(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(match linear::linear_t(a, b)? {
        Some(y) => y,
        None => a.matmul(&b.t()?)?,
    })
}
