//! Scale conventions. They are named because the paper and the released code disagree, and a run must record
//! which one it used.

use serde::{Deserialize, Serialize};

use crate::error::{AbbaError, Result};

/// LoRA's scale: `α/r` (Hu et al.), `α/√r` (rsLoRA), or an explicit number.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "convention", rename_all = "kebab-case")]
pub enum LoraScale {
    Standard { alpha: f64 },
    Rslora { alpha: f64 },
    Explicit { scale: f64 },
}

impl LoraScale {
    pub fn value(&self, r: usize) -> f64 {
        match *self {
            LoraScale::Standard { alpha } => alpha / r as f64,
            LoraScale::Rslora { alpha } => alpha / (r as f64).sqrt(),
            LoraScale::Explicit { scale } => scale,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            LoraScale::Standard { .. } => "standard",
            LoraScale::Rslora { .. } => "rslora",
            LoraScale::Explicit { .. } => "explicit",
        }
    }
}

/// ABBA's scale `s` in ΔW = s·(B1A1)⊙(B2A2).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "convention", rename_all = "kebab-case")]
pub enum AbbaScale {
    /// The paper (§2.5): s = α²/√(r1·r2), rank-stable.
    Paper { alpha: f64 },
    /// The authors' released code: s = √α1·√α2, no division by rank.
    OfficialCode { alpha1: f64, alpha2: f64 },
    /// A number chosen by the caller.
    Explicit { scale: f64 },
    /// PEFT LoHa's α/r, with r the (common) rank of the pairs: how a LoHa file states its scale.
    Loha { alpha: f64 },
}

impl Default for AbbaScale {
    fn default() -> Self {
        AbbaScale::Paper { alpha: 1.0 }
    }
}

impl AbbaScale {
    /// The scale for a chain of pairs of ranks `ranks` (two pairs: plain ABBA). The paper convention generalises
    /// as Π (α/√r_i), which equals α²/√(r1 r2) for two pairs.
    pub fn value_for(&self, ranks: &[usize]) -> f64 {
        match *self {
            AbbaScale::Paper { alpha } => {
                ranks.iter().map(|&r| alpha / (r as f64).sqrt()).product()
            }
            AbbaScale::OfficialCode { alpha1, alpha2 } => alpha1.sqrt() * alpha2.sqrt(),
            AbbaScale::Explicit { scale } => scale,
            AbbaScale::Loha { alpha } => {
                alpha / ranks.iter().copied().max().unwrap_or(1).max(1) as f64
            }
        }
    }

    pub fn value(&self, r1: usize, r2: usize) -> f64 {
        self.value_for(&[r1, r2])
    }

    pub fn name(&self) -> &'static str {
        match self {
            AbbaScale::Paper { .. } => "paper",
            AbbaScale::OfficialCode { .. } => "official-code",
            AbbaScale::Explicit { .. } => "explicit",
            AbbaScale::Loha { .. } => "loha",
        }
    }

    pub fn validate(&self) -> Result<()> {
        let ok = match *self {
            AbbaScale::Paper { alpha } => alpha.is_finite() && alpha > 0.0,
            AbbaScale::OfficialCode { alpha1, alpha2 } => {
                alpha1.is_finite() && alpha2.is_finite() && alpha1 >= 0.0 && alpha2 >= 0.0
            }
            AbbaScale::Explicit { scale } => scale.is_finite(),
            AbbaScale::Loha { alpha } => alpha.is_finite(),
        };
        if ok {
            Ok(())
        } else {
            Err(AbbaError::InvalidArgument(format!(
                "ABBA scale {self:?} is not usable: alphas must be finite and positive"
            )))
        }
    }
}
