//! Exact and approximate conversions between parameterisations, for export to formats other tools load.

use ndarray::{Array2, s};

use super::scaling::LoraScale;
use super::{Abba, Adapter, Lora};
use crate::error::Result;
use crate::linalg::{Real, singular_values, svd_truncated};

/// PEFT LoHa's parameterisation: ΔW = (α/r)·(W1a·W1b)⊙(W2a·W2b) with one rank r for both pairs.
#[derive(Clone, Debug)]
pub struct LohaView<T> {
    pub w1a: Array2<T>,
    pub w1b: Array2<T>,
    pub w2a: Array2<T>,
    pub w2b: Array2<T>,
    pub r: usize,
    pub alpha: f64,
}

fn pad_cols<T: Real>(b: &Array2<T>, r: usize) -> Array2<T> {
    let mut out = Array2::zeros((b.nrows(), r));
    out.slice_mut(s![.., ..b.ncols()]).assign(b);
    out
}

fn pad_rows<T: Real>(a: &Array2<T>, r: usize) -> Array2<T> {
    let mut out = Array2::zeros((r, a.ncols()));
    out.slice_mut(s![..a.nrows(), ..]).assign(a);
    out
}

impl<T: Real> Abba<T> {
    /// The exact LoHa equivalent: pad the smaller pair with zero columns/rows to r = max(r1, r2) (zeros add
    /// nothing to B·A) and choose α = s·r so that LoHa's α/r equals s.
    pub fn to_loha(&self) -> LohaView<T> {
        let (r1, r2) = self.ranks();
        let r = r1.max(r2);
        LohaView {
            w1a: pad_cols(&self.b1, r),
            w1b: pad_rows(&self.a1, r),
            w2a: pad_cols(&self.b2, r),
            w2b: pad_rows(&self.a2, r),
            r,
            alpha: self.scale.f64() * r as f64,
        }
    }

    /// The exact LoRA of rank r1·r2 through the Khatri–Rao factors (scale 1, s folded into B).
    pub fn to_lora_exact(&self) -> Result<Lora<T>> {
        let (b, a) = self.khatri_rao_factors();
        Lora::new(b, a, LoraScale::Explicit { scale: 1.0 })
    }
}

/// The best rank-r LoRA (Eckart–Young) of any update, with balanced factors U·Σ^½ and Σ^½·Vᵀ and scale 1.
pub fn truncated_lora<T: Real>(delta: &Array2<T>, r: usize) -> Result<Lora<T>> {
    let (b, a) = svd_truncated(delta.view(), r)?.balanced_factors();
    Lora::new(b, a, LoraScale::Explicit { scale: 1.0 })
}

/// Truncated LoRA of any adapter's ΔW.
pub fn adapter_to_truncated_lora<T: Real>(adapter: &dyn Adapter<T>, r: usize) -> Result<Lora<T>> {
    truncated_lora(&adapter.delta(), r)
}

/// Singular values below this fraction of the largest are round-off, not rank: an f32 adapter's update carries
/// relative noise near 1e-7.
pub const EXACT_RANK_RTOL: f64 = 1e-6;

/// The LoRA that reproduces any update up to round-off: its SVD cut at the numerical rank (singular values above
/// `rtol`·σ₁, at least one).
pub fn exact_lora<T: Real>(delta: &Array2<T>, rtol: f64) -> Result<Lora<T>> {
    let sv = singular_values(delta.view())?;
    let sv: Vec<f64> = sv.iter().map(|s| s.to_f64().unwrap_or(0.0)).collect();
    let top = sv.iter().fold(0.0f64, |m, &s| m.max(s));
    let rank = sv.iter().filter(|&&s| s > rtol * top).count().max(1);
    truncated_lora(delta, rank)
}
