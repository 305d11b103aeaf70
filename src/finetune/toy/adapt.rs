//! What each method trains in the toy: an adapter on both layers (any method of the project) sized to the shared
//! budget and initialised exactly as the transformer path does (`finetune::adapters::inject`), or every weight
//! and bias (full fine-tuning).

use candle_core::Var;

use super::mlp::Mlp;
use crate::adapter::scaling::{AbbaScale, LoraScale};
use crate::adapter::section::{Defaults, MethodSection};
use crate::adapter::{Method, MethodKind};
use crate::budget::{AbbaRankRule, Budget as BudgetSize, sized};
use crate::error::{AbbaError, Result};
use crate::finetune::adapters::inject::initial_adapter;
use crate::rng::{derive, seeded};

/// The methods of the paper's Fig. 1, the toy's default.
pub const PAPER_METHODS: [MethodKind; 4] = [
    MethodKind::Lora,
    MethodKind::Hira,
    MethodKind::Abba,
    MethodKind::Full,
];

/// The shared budget: LoRA and HiRA get rank `rank`, ABBA r1 = r2 = rank/2, so all three train
/// `rank·(m+n)` parameters per layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Budget {
    pub rank: usize,
    /// LoRA's s = α/r.
    pub lora_alpha: f64,
    /// ABBA's paper scale s = α²/√(r1·r2).
    pub abba_alpha: f64,
}

impl Budget {
    /// ABBA's (r1, r2).
    pub fn abba_ranks(&self) -> (usize, usize) {
        (self.rank / 2, self.rank / 2)
    }

    /// The method a `methods` entry names, unsized, with the toy's scales where the entry writes none: α/r
    /// (α = `lora_alpha`) for LoRA-family scales, the paper's α²/√(r1·r2) (α = `abba_alpha`) for ABBA's.
    pub fn template(&self, entry: &MethodSection) -> Result<Method> {
        entry.template(Defaults {
            lora_scale: Some(LoraScale::Standard {
                alpha: self.lora_alpha,
            }),
            abba_scale: Some(AbbaScale::Paper {
                alpha: self.abba_alpha,
            }),
        })
    }
}

/// Makes `mlp` trainable for `method` (a template: each layer's sizes come from the budget) and returns the
/// variables to optimise. Adapters start from the pretrained function (ΔW = 0, or the residual base of the inits
/// that change it); layer `i` draws from stream `i` of `seed`, as `inject` does. KRAdapter and a chain with its
/// ranks written keep their own sizes where the budget cannot size them; a budget another method cannot reach
/// within 10 % is an error naming the nearest sizes.
pub fn prepare(mlp: &mut Mlp, method: &Method, budget: &Budget, seed: u64) -> Result<Vec<Var>> {
    if *method == Method::Full {
        return mlp.make_base_trainable();
    }
    if method.kind() == MethodKind::Abba && (budget.rank < 2 || !budget.rank.is_multiple_of(2)) {
        return Err(AbbaError::InvalidArgument(format!(
            "rank {} cannot be split evenly into ABBA's r1 = r2 = r/2: use an even rank ≥ 2",
            budget.rank
        )));
    }
    let mut vars = Vec::new();
    for (index, layer) in mlp.layers_mut().into_iter().enumerate() {
        let mut rng = seeded(derive(seed, index as u64));
        let shape = layer.weight.dims2()?;
        // KRAdapter has one size per shape and a chain no single split of a budget: where the budget cannot size
        // them, they keep the sizes their entry gives (a chain's ranks; KRAdapter's follow from the shape).
        let sized = match sized(
            method,
            BudgetSize::LoraRank(budget.rank),
            AbbaRankRule::Half,
            shape,
        ) {
            Ok(m) => m,
            Err(e) => match method {
                Method::Kradapter(_) | Method::AbbaChain(_) if method.validate(shape).is_ok() => {
                    method.clone()
                }
                _ => return Err(e),
            },
        };
        let (weights, residual) = initial_adapter(&layer.weight, &sized, &mut rng)?;
        if let Some(base) = residual {
            layer.weight = base;
        }
        vars.extend(weights.vars().into_iter().cloned());
        layer.adapter = Some(weights);
    }
    Ok(vars)
}
