//! Closed-form optima: the truncated SVD is the best LoRA of rank r (Eckart–Young); the target itself is the
//! best full update.

use ndarray::Array2;

use super::Fitted;
use crate::adapter::scaling::LoraScale;
use crate::adapter::{Full, Lora};
use crate::error::Result;
use crate::linalg::{Real, Svd};

/// The rank-r Eckart–Young LoRA from a precomputed SVD of the target (scale 1, balanced factors).
pub fn lora_from_svd<T: Real>(svd: &Svd<f64>, r: usize) -> Result<Fitted<T>> {
    let (b, a) = svd.components(0, r).balanced_factors();
    Ok(Fitted::Lora(Lora::new(
        b.mapv(T::of),
        a.mapv(T::of),
        LoraScale::Explicit { scale: 1.0 },
    )?))
}

pub fn full<T: Real>(target: &Array2<f64>) -> Result<Fitted<T>> {
    Ok(Fitted::Full(Full::from_delta(target.mapv(T::of))?))
}
