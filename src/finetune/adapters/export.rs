//! ABBA adapters in formats other tools load: PEFT LoHa (exact, pad to r = max(r1, r2) and α = s·r) and PEFT LoRA
//! (exact at rank r1·r2 through the Khatri–Rao factors, or the best rank-k approximation by SVD of ΔW). The
//! conversions are the matrix ones of [`crate::adapter::convert`], applied module by module.

use candle_core::{DType, Device, Var};

use super::peft::{AdapterKind, AdapterSet};
use crate::adapter::Abba;
use crate::adapter::convert::truncated_lora;
use crate::adapter::scaling::AbbaScale;
use crate::error::{AbbaError, Result};
use crate::finetune::bridge::{from_array, to_array};
use crate::finetune::layers::AdapterWeights;

/// Which LoRA an ABBA adapter becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoraRank {
    /// Rank r1·r2: reproduces ΔW exactly.
    Exact,
    /// Rank k: the Eckart–Young best approximation of each module's ΔW.
    Truncated(usize),
}

fn abba_of(w: &AdapterWeights) -> Result<Abba<f64>> {
    match w {
        AdapterWeights::Abba { a1, b1, a2, b2, scale } => Abba::new(
            to_array(b1.as_tensor())?,
            to_array(a1.as_tensor())?,
            to_array(b2.as_tensor())?,
            to_array(a2.as_tensor())?,
            AbbaScale::Explicit { scale: *scale },
        ),
        _ => Err(AbbaError::InvalidArgument(
            "export takes an ABBA (or LoHa) adapter; LoRA and HiRA adapters are already in PEFT's format".into(),
        )),
    }
}

fn var(a: &ndarray::Array2<f64>) -> Result<Var> {
    Ok(Var::from_tensor(&from_array(a, DType::F32, &Device::Cpu)?)?)
}

/// The exact PEFT LoHa of an ABBA adapter set.
pub fn to_loha(set: &AdapterSet) -> Result<AdapterSet> {
    let mut modules = Vec::new();
    let mut rank_alpha = None;
    for (path, w) in &set.modules {
        let loha = abba_of(w)?.to_loha();
        rank_alpha.get_or_insert((loha.r, loha.alpha));
        modules.push((
            path.clone(),
            AdapterWeights::Abba {
                a1: var(&loha.w1b)?,
                b1: var(&loha.w1a)?,
                a2: var(&loha.w2b)?,
                b2: var(&loha.w2a)?,
                scale: loha.alpha / loha.r as f64,
            },
        ));
    }
    let (r, alpha) = rank_alpha
        .ok_or_else(|| AbbaError::InvalidArgument("the adapter has no modules".into()))?;
    Ok(AdapterSet {
        kind: AdapterKind::Loha { r, alpha },
        modules,
        ..set.clone()
    })
}

/// A PEFT LoRA of an ABBA adapter set, exact or truncated. The scale is folded into B and `lora_alpha = r`, so
/// PEFT's α/r is 1.
pub fn to_lora(set: &AdapterSet, rank: LoraRank) -> Result<AdapterSet> {
    let mut modules = Vec::new();
    let mut r_out = 0;
    for (path, w) in &set.modules {
        let abba = abba_of(w)?;
        let lora = match rank {
            LoraRank::Exact => abba.to_lora_exact()?,
            LoraRank::Truncated(k) => truncated_lora(&crate::adapter::Adapter::delta(&abba), k)?,
        };
        r_out = lora.rank();
        let scale = lora.scale;
        modules.push((
            path.clone(),
            AdapterWeights::Lora {
                a: var(&lora.a)?,
                b: var(&(lora.b * scale))?,
                scale: 1.0,
            },
        ));
    }
    Ok(AdapterSet {
        kind: AdapterKind::Lora {
            r: r_out,
            alpha: r_out as f64,
            rslora: false,
        },
        modules,
        ..set.clone()
    })
}
