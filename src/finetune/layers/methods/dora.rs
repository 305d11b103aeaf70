//! DoRA on candle, as PEFT computes it: with g = mag / ‖W0 + s·B·A‖_row (the norm detached, DoRA §4.3), the
//! adapter adds (g − 1)⊙(x·W0ᵀ) + g⊙(s·x·Aᵀ·Bᵀ) to the frozen output — for dropped-out inputs x exactly PEFT's
//! training formula, and without dropout g⊙((W0 + s·B·A)·x).

use candle_core::Tensor;

use crate::error::Result;
use crate::finetune::layers::frozen::{linear_t, linear_t_plus};
use crate::finetune::layers::products::{product, product_t};

/// g as a 1×m row, from the detached directions W0 + s·B·A.
fn gains(w0: &Tensor, a: &Tensor, b: &Tensor, mag: &Tensor, s: f64) -> Result<Tensor> {
    let v = (w0 + (product(b, a)? * s)?)?.detach();
    let norms = v.sqr()?.sum_keepdim(1)?.sqrt()?;
    Ok(mag.broadcast_div(&norms)?.t()?)
}

/// The adapter's contribution for rows x (N×n); `a` r×n, `b` m×r, `mag` m×1.
pub fn forward(
    x: &Tensor,
    w0: &Tensor,
    a: &Tensor,
    b: &Tensor,
    mag: &Tensor,
    s: f64,
) -> Result<Tensor> {
    let g = gains(w0, a, b, mag, s)?;
    let base = linear_t(x, w0)?;
    let lora = (product_t(&product_t(x, a)?, b)? * s)?;
    let scaled_base = base.broadcast_mul(&(&g - 1.0)?)?;
    Ok((scaled_base + lora.broadcast_mul(&g)?)?)
}

/// The whole layer's output for an input that went through no dropout: g⊙(x·W0ᵀ + s·x·Aᵀ·Bᵀ), the frozen
/// product formed once (with dropout, PEFT's formula needs x·W0ᵀ of the dropped-out input besides the frozen
/// output of the clean one, which is what [`forward`] serves).
pub fn layer(
    x: &Tensor,
    w0: &Tensor,
    a: &Tensor,
    b: &Tensor,
    mag: &Tensor,
    s: f64,
) -> Result<Tensor> {
    let g = gains(w0, a, b, mag, s)?;
    let lora = (product_t(&product_t(x, a)?, b)? * s)?;
    Ok(linear_t_plus(x, w0, &lora)?.broadcast_mul(&g)?)
}

/// ΔW = diag(g)·(W0 + s·B·A) − W0 (what a merged checkpoint adds).
pub fn delta(w0: &Tensor, a: &Tensor, b: &Tensor, mag: &Tensor, s: f64) -> Result<Tensor> {
    let v = (w0 + (product(b, a)? * s)?)?;
    let g = gains(w0, a, b, mag, s)?.t()?;
    Ok((v.broadcast_mul(&g)? - w0)?)
}
