//! ABBA adapters in formats other tools load: PEFT LoHa (exact, pad to r = max(r1, r2) and α = s·r) and PEFT LoRA
//! (exact at rank r1·r2 through the Khatri–Rao factors, or the best rank-k approximation by SVD of ΔW). The
//! conversions are the matrix ones of [`crate::adapter::convert`], applied module by module.

use candle_core::{DType, Device, Var};

use super::peft::AdapterSet;
use crate::adapter::convert::truncated_lora;
use crate::adapter::init::AbbaInit;
use crate::adapter::scaling::{AbbaScale, LoraScale};
use crate::adapter::{Abba, AbbaSpec, KeyStyle, LoraSpec, Method};
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
    match &w.method {
        Method::Abba(spec) => Abba::new(
            to_array(w.var("B1")?.as_tensor())?,
            to_array(w.var("A1")?.as_tensor())?,
            to_array(w.var("B2")?.as_tensor())?,
            to_array(w.var("A2")?.as_tensor())?,
            AbbaScale::Explicit {
                scale: spec.scale.value(spec.r1, spec.r2),
            },
        ),
        _ => Err(AbbaError::InvalidArgument(
            "export takes an ABBA (or LoHa) adapter; LoRA and HiRA adapters are already in PEFT's format".into(),
        )),
    }
}

fn var(a: &ndarray::Array2<f64>) -> Result<Var> {
    Ok(Var::from_tensor(&from_array(a, DType::F32, &Device::Cpu)?)?)
}

/// Variables for `method` on an m×n layer from the ndarray adapter's factors, in factor-table order.
fn weights(method: Method, factors: &[&ndarray::Array2<f64>]) -> Result<AdapterWeights> {
    let shape = (factors[0].nrows(), factors[1].ncols());
    let vars = method
        .factors(shape)
        .iter()
        .map(|f| var(factors[f.position]))
        .collect::<Result<Vec<_>>>()?;
    AdapterWeights::new(method, vars, shape)
}

/// The exact PEFT LoHa of an ABBA adapter set.
pub fn to_loha(set: &AdapterSet) -> Result<AdapterSet> {
    let mut modules = Vec::new();
    for (path, w) in &set.modules {
        let loha = abba_of(w)?.to_loha();
        let method = Method::Abba(AbbaSpec {
            r1: loha.r,
            r2: loha.r,
            scale: AbbaScale::Loha { alpha: loha.alpha },
            init: AbbaInit::Paper,
        });
        // The ndarray ABBA holds B1, A1, B2, A2: LoHa's w1a, w1b, w2a, w2b.
        let w = weights(method, &[&loha.w1a, &loha.w1b, &loha.w2a, &loha.w2b])?;
        modules.push((path.clone(), w));
    }
    if modules.is_empty() {
        return Err(AbbaError::InvalidArgument(
            "the adapter has no modules".into(),
        ));
    }
    Ok(AdapterSet {
        style: KeyStyle::Loha,
        modules,
        ..set.clone()
    })
}

/// A PEFT LoRA of an ABBA adapter set, exact or truncated. The scale is folded into B and `lora_alpha = r`, so
/// PEFT's α/r is 1.
pub fn to_lora(set: &AdapterSet, rank: LoraRank) -> Result<AdapterSet> {
    let mut modules = Vec::new();
    for (path, w) in &set.modules {
        let abba = abba_of(w)?;
        let lora = match rank {
            LoraRank::Exact => abba.to_lora_exact()?,
            LoraRank::Truncated(k) => truncated_lora(&crate::adapter::Adapter::delta(&abba), k)?,
        };
        let r = lora.rank();
        let method = Method::Lora(LoraSpec {
            r,
            scale: LoraScale::Standard { alpha: r as f64 },
            ..LoraSpec::default()
        });
        let b = &lora.b * lora.scale;
        modules.push((path.clone(), weights(method, &[&b, &lora.a])?));
    }
    Ok(AdapterSet {
        style: KeyStyle::Native,
        modules,
        ..set.clone()
    })
}
