//! Adapters in formats other tools load: an ABBA as PEFT LoHa (exact, pad to r = max(r1, r2) and α = s·r), and
//! any adapter as a PEFT LoRA (exact — rank r1·r2 through the Khatri–Rao factors for ABBA, the numerical rank of
//! ΔW for the others — or the best rank-k approximation by SVD of ΔW). The conversions are the matrix ones of
//! [`crate::adapter::convert`], applied module by module.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use ndarray::Array2;

use super::peft::AdapterSet;
use crate::adapter::convert::{EXACT_RANK_RTOL, exact_lora, truncated_lora};
use crate::adapter::init::AbbaInit;
use crate::adapter::scaling::{AbbaScale, LoraScale};
use crate::adapter::{Abba, AbbaSpec, KeyStyle, Lora, LoraSpec, Method};
use crate::error::{AbbaError, Result};
use crate::finetune::bridge::{from_array, to_array};
use crate::finetune::layers::AdapterWeights;
use crate::finetune::model::Llama;

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
            "a LoHa export takes an ABBA (or LoHa) adapter; export other methods with --to peft-lora".into(),
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

/// A PEFT LoRA of any adapter set, exact or truncated. The update each module adds to the **original** base is
/// converted: ΔW(θ) − ΔW(θ₀) where the initialisation changed the base. ABBA's exact form is its rank-r1·r2
/// Khatri–Rao LoRA; a LoRA is itself; every other method is cut from the SVD of its update at the numerical rank
/// ([`EXACT_RANK_RTOL`]). HiRA and DoRA updates read the frozen weight: `base` gives each module's W0 (by path).
/// The scale is folded into B and `lora_alpha = r`, so PEFT's α/r is 1; modules of different ranks are written
/// with PEFT's `rank_pattern`.
pub fn to_lora(set: &AdapterSet, rank: LoraRank, base: Option<&Llama>) -> Result<AdapterSet> {
    let weights_of: HashMap<String, Tensor> = match base {
        Some(model) => model
            .linears()
            .into_iter()
            .map(|(path, _, lin)| (path, lin.weight.clone()))
            .collect(),
        None => HashMap::new(),
    };
    let mut modules = Vec::new();
    for (path, w) in &set.modules {
        let lora = match (rank, &w.method, &w.origin) {
            (LoraRank::Exact, Method::Abba(_), None) => abba_of(w)?.to_lora_exact()?,
            (LoraRank::Exact, Method::Lora(s), None) => Lora::new(
                to_array(w.var("B")?.as_tensor())?,
                to_array(w.var("A")?.as_tensor())?,
                LoraScale::Explicit {
                    scale: s.scale.value(s.r),
                },
            )?,
            (LoraRank::Exact, _, _) => exact_lora(&update(path, w, &weights_of)?, EXACT_RANK_RTOL)?,
            (LoraRank::Truncated(k), _, _) => truncated_lora(&update(path, w, &weights_of)?, k)?,
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

/// The update a module adds to the original base, ΔW(θ) − ΔW(θ₀), as f64.
fn update(path: &str, w: &AdapterWeights, base: &HashMap<String, Tensor>) -> Result<Array2<f64>> {
    let w0 = match base.get(path) {
        Some(t) => t.to_dtype(DType::F32)?,
        None if w.method.delta_reads_w0() => {
            return Err(AbbaError::InvalidArgument(format!(
                "{path}: a {} update depends on the frozen weight: pass --base MODEL_DIR, the model the adapter was trained on",
                w.method.name()
            )));
        }
        // Unread by the method's ΔW: any tensor of the layer's shape does.
        None => Tensor::zeros(w.layer_shape(), DType::F32, &Device::Cpu)?,
    };
    let w = w.to_dtype(DType::F32)?;
    let mut delta = w.delta(&w0)?;
    if let Some(origin) = w.origin_delta(&w0)? {
        delta = (delta - origin)?;
    }
    to_array(&delta)
}
