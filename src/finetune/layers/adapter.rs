//! The trainable part of an adapted projection y = x·(W0 + ΔW)ᵀ, for each method, as candle variables.
//!
//! Shapes follow PEFT: A is r×n (in-features), B is m×r (out-features), so B·A has W0's m×n shape.

use candle_core::{DType, Tensor, Var};

use crate::adapter::ForwardPath;
use crate::error::Result;

#[derive(Clone, Debug)]
pub enum AdapterWeights {
    /// ΔW = s·B·A.
    Lora { a: Var, b: Var, scale: f64 },
    /// ΔW = W0 ⊙ (B·A) (HiRA, and PEFT's `HIRA`, without scale).
    Hira { a: Var, b: Var },
    /// ΔW = s·(B1·A1) ⊙ (B2·A2).
    Abba {
        a1: Var,
        b1: Var,
        a2: Var,
        b2: Var,
        scale: f64,
    },
}

impl AdapterWeights {
    pub fn vars(&self) -> Vec<&Var> {
        match self {
            AdapterWeights::Lora { a, b, .. } | AdapterWeights::Hira { a, b } => vec![a, b],
            AdapterWeights::Abba { a1, b1, a2, b2, .. } => vec![a1, b1, a2, b2],
        }
    }

    /// Names of the factors in [`Self::vars`] order, as they appear in saved files.
    pub fn var_names(&self) -> &'static [&'static str] {
        match self {
            AdapterWeights::Lora { .. } => &["lora_A", "lora_B"],
            AdapterWeights::Hira { .. } => &["hira_A", "hira_B"],
            AdapterWeights::Abba { .. } => &["abba_A1", "abba_B1", "abba_A2", "abba_B2"],
        }
    }

    pub fn num_params(&self) -> usize {
        self.vars().iter().map(|v| v.elem_count()).sum()
    }

    /// ΔW as an m×n tensor (needs W0 for HiRA).
    pub fn delta(&self, w0: &Tensor) -> Result<Tensor> {
        Ok(match self {
            AdapterWeights::Lora { a, b, scale } => (b.matmul(a)? * *scale)?,
            AdapterWeights::Hira { a, b } => (w0 * b.matmul(a)?)?,
            AdapterWeights::Abba {
                a1,
                b1,
                a2,
                b2,
                scale,
            } => ((b1.matmul(a1)? * b2.matmul(a2)?)? * *scale)?,
        })
    }

    /// The adapter's contribution x·ΔWᵀ for rows x (N×n). ABBA picks the Khatri–Rao or materialised path with
    /// the same cost model as the matrix code ([`ForwardPath::cheapest`]).
    pub fn forward(&self, x: &Tensor, w0: &Tensor) -> Result<Tensor> {
        match self {
            AdapterWeights::Lora { a, b, scale } => {
                Ok((x.matmul(&a.t()?)?.matmul(&b.t()?)? * *scale)?)
            }
            AdapterWeights::Hira { .. } => Ok(x.matmul(&self.delta(w0)?.t()?)?),
            AdapterWeights::Abba {
                a1,
                b1,
                a2,
                b2,
                scale,
            } => {
                let (m, n) = w0.dims2()?;
                let (r1, r2) = (a1.dim(0)?, a2.dim(0)?);
                match ForwardPath::cheapest((m, n), r1, r2, x.dim(0)?) {
                    ForwardPath::KhatriRao => {
                        let (b_kr, a_kr) = khatri_rao(a1, b1, a2, b2)?;
                        Ok((x.matmul(&a_kr.t()?)?.matmul(&b_kr.t()?)? * *scale)?)
                    }
                    ForwardPath::Materialised => Ok(x.matmul(&self.delta(w0)?.t()?)?),
                }
            }
        }
    }

    pub fn to_dtype(&self, dtype: DType) -> Result<AdapterWeights> {
        let cast =
            |v: &Var| -> Result<Var> { Ok(Var::from_tensor(&v.as_tensor().to_dtype(dtype)?)?) };
        Ok(match self {
            AdapterWeights::Lora { a, b, scale } => AdapterWeights::Lora {
                a: cast(a)?,
                b: cast(b)?,
                scale: *scale,
            },
            AdapterWeights::Hira { a, b } => AdapterWeights::Hira {
                a: cast(a)?,
                b: cast(b)?,
            },
            AdapterWeights::Abba {
                a1,
                b1,
                a2,
                b2,
                scale,
            } => AdapterWeights::Abba {
                a1: cast(a1)?,
                b1: cast(b1)?,
                a2: cast(a2)?,
                b2: cast(b2)?,
                scale: *scale,
            },
        })
    }
}

/// B_kr (m × r1r2, row-wise Kronecker of B1, B2) and A_kr (r1r2 × n, column-wise Kronecker of A1, A2), so that
/// (B1A1)⊙(B2A2) = B_kr·A_kr without forming an m×n matrix.
pub fn khatri_rao(a1: &Tensor, b1: &Tensor, a2: &Tensor, b2: &Tensor) -> Result<(Tensor, Tensor)> {
    let (m, r1) = b1.dims2()?;
    let (_, r2) = b2.dims2()?;
    let n = a1.dim(1)?;
    let b_kr = b1
        .unsqueeze(2)?
        .broadcast_mul(&b2.unsqueeze(1)?)?
        .reshape((m, r1 * r2))?;
    let a_kr = a1
        .unsqueeze(1)?
        .broadcast_mul(&a2.unsqueeze(0)?)?
        .reshape((r1 * r2, n))?;
    Ok((b_kr, a_kr))
}
