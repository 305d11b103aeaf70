//! DoRA on candle, as PEFT computes it: with g = mag / ‖W0 + s·B·A‖_row (the norm detached, DoRA §4.3), the
//! adapter adds (g − 1)⊙(x·W0ᵀ) + g⊙(s·x·Aᵀ·Bᵀ) to the frozen output — for dropped-out inputs x exactly PEFT's
//! training formula, and without dropout g⊙((W0 + s·B·A)·x).

use candle_core::Tensor;

use crate::error::Result;
use crate::finetune::layers::frozen::{linear_t, linear_t_plus};
use crate::finetune::layers::products::{product, product_t};

/// DoRA's trainable tensors and scale: `a` r×n, `b` m×r, `mag` m×1.
pub struct Factors<'a> {
    pub a: &'a Tensor,
    pub b: &'a Tensor,
    pub mag: &'a Tensor,
    pub s: f64,
}

impl Factors<'_> {
    /// g as a 1×m row, from the detached directions W0 + s·B·A.
    fn gains(&self, w0: &Tensor) -> Result<Tensor> {
        let v = (w0 + (product(self.b, self.a)? * self.s)?)?.detach();
        let norms = v.sqr()?.sum_keepdim(1)?.sqrt()?;
        Ok(self.mag.broadcast_div(&norms)?.t()?)
    }

    /// s·x·Aᵀ·Bᵀ for rows x.
    fn lora(&self, x: &Tensor) -> Result<Tensor> {
        Ok((product_t(&product_t(x, self.a)?, self.b)? * self.s)?)
    }
}

/// The adapter's contribution for rows x (N×n).
pub fn forward(x: &Tensor, w0: &Tensor, f: &Factors<'_>) -> Result<Tensor> {
    let g = f.gains(w0)?;
    let base = linear_t(x, w0)?;
    let scaled_base = base.broadcast_mul(&(&g - 1.0)?)?;
    Ok((scaled_base + f.lora(x)?.broadcast_mul(&g)?)?)
}

/// The whole layer's output for an input that went through no dropout: g⊙(x·W0ᵀ + s·x·Aᵀ·Bᵀ), the frozen
/// product formed once (with dropout, PEFT's formula needs x·W0ᵀ of the dropped-out input besides the frozen
/// output of the clean one, which is what [`forward`] serves).
pub fn layer(x: &Tensor, w0: &Tensor, f: &Factors<'_>) -> Result<Tensor> {
    let g = f.gains(w0)?;
    Ok(linear_t_plus(x, w0, &f.lora(x)?)?.broadcast_mul(&g)?)
}

/// ΔW = diag(g)·(W0 + s·B·A) − W0 (what a merged checkpoint adds).
pub fn delta(w0: &Tensor, f: &Factors<'_>) -> Result<Tensor> {
    let v = (w0 + (product(f.b, f.a)? * f.s)?)?;
    let g = f.gains(w0)?.t()?;
    Ok((v.broadcast_mul(&g)? - w0)?)
}
