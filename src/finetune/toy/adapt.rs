//! What each method trains in the toy: an adapter on both layers (LoRA, HiRA, ABBA) initialised exactly as the
//! transformer path does (`finetune::adapters::inject`), or every weight and bias (full fine-tuning).

use candle_core::Var;

use super::mlp::Mlp;
use crate::adapter::scaling::{AbbaScale, LoraScale};
use crate::adapter::{AbbaSpec, LoraSpec, Method, MethodKind};
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

    /// `kind` with the toy's scales (α/r for LoRA, the paper's α²/√(r1·r2) for ABBA) and initialisations, unsized.
    pub fn template(&self, kind: MethodKind) -> Method {
        match kind.template() {
            Method::Lora(s) => Method::Lora(LoraSpec {
                scale: LoraScale::Standard {
                    alpha: self.lora_alpha,
                },
                ..s
            }),
            Method::Abba(s) => Method::Abba(AbbaSpec {
                scale: AbbaScale::Paper {
                    alpha: self.abba_alpha,
                },
                ..s
            }),
            other => other,
        }
    }
}

/// Makes `mlp` trainable for `method` and returns the variables to optimise. Adapters start with ΔW = 0, so every
/// method starts from the pretrained function; layer `i` draws from stream `i` of `seed`, as `inject` does.
pub fn prepare(mlp: &mut Mlp, method: MethodKind, budget: &Budget, seed: u64) -> Result<Vec<Var>> {
    if method == MethodKind::Full {
        return mlp.make_base_trainable();
    }
    if method == MethodKind::Abba && (budget.rank < 2 || !budget.rank.is_multiple_of(2)) {
        return Err(AbbaError::InvalidArgument(format!(
            "rank {} cannot be split evenly into ABBA's r1 = r2 = r/2: use an even rank ≥ 2",
            budget.rank
        )));
    }
    let template = budget.template(method);
    let mut vars = Vec::new();
    for (index, layer) in mlp.layers_mut().into_iter().enumerate() {
        let mut rng = seeded(derive(seed, index as u64));
        let shape = layer.weight.dims2()?;
        let sized = sized(
            &template,
            BudgetSize::LoraRank(budget.rank),
            AbbaRankRule::Half,
            shape,
        )?;
        let (weights, residual) = initial_adapter(&layer.weight, &sized, &mut rng)?;
        if let Some(base) = residual {
            layer.weight = base;
        }
        vars.extend(weights.vars().into_iter().cloned());
        layer.adapter = Some(weights);
    }
    Ok(vars)
}
