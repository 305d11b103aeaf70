//! What each method trains in the toy: an adapter on both layers (LoRA, HiRA, ABBA) initialised exactly as the
//! transformer path does (`finetune::adapters::inject`), or every weight and bias (full fine-tuning).

use std::fmt;

use candle_core::Var;
use serde::{Deserialize, Serialize};

use super::mlp::Mlp;
use crate::adapter::init::{AbbaInit, KaimingA, LoraInit};
use crate::adapter::scaling::{AbbaScale, LoraScale};
use crate::error::{AbbaError, Result};
use crate::finetune::adapters::MethodSpec;
use crate::finetune::adapters::inject::initial_adapter;
use crate::rng::{derive, seeded};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToyMethod {
    Lora,
    Hira,
    Abba,
    Full,
}

impl ToyMethod {
    pub const ALL: [ToyMethod; 4] = [
        ToyMethod::Lora,
        ToyMethod::Hira,
        ToyMethod::Abba,
        ToyMethod::Full,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ToyMethod::Lora => "lora",
            ToyMethod::Hira => "hira",
            ToyMethod::Abba => "abba",
            ToyMethod::Full => "full",
        }
    }
}

impl fmt::Display for ToyMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

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
}

/// Makes `mlp` trainable for `method` and returns the variables to optimise. Adapters start with ΔW = 0, so every
/// method starts from the pretrained function; layer `i` draws from stream `i` of `seed`, as `inject` does.
pub fn prepare(mlp: &mut Mlp, method: ToyMethod, budget: &Budget, seed: u64) -> Result<Vec<Var>> {
    if method == ToyMethod::Full {
        return mlp.make_base_trainable();
    }
    if method == ToyMethod::Abba && (budget.rank < 2 || !budget.rank.is_multiple_of(2)) {
        return Err(AbbaError::InvalidArgument(format!(
            "rank {} cannot be split evenly into ABBA's r1 = r2 = r/2: use an even rank ≥ 2",
            budget.rank
        )));
    }
    let spec = match method {
        ToyMethod::Lora => MethodSpec::Lora {
            r: budget.rank,
            scale: LoraScale::Standard {
                alpha: budget.lora_alpha,
            },
            init: LoraInit::Standard {
                kaiming: KaimingA::Sqrt5,
            },
        },
        ToyMethod::Hira => MethodSpec::Hira {
            r: budget.rank,
            kaiming: KaimingA::Sqrt5,
        },
        ToyMethod::Abba => {
            let (r1, r2) = budget.abba_ranks();
            MethodSpec::Abba {
                r1,
                r2,
                scale: AbbaScale::Paper {
                    alpha: budget.abba_alpha,
                },
                init: AbbaInit::Paper,
            }
        }
        ToyMethod::Full => MethodSpec::Full,
    };
    let mut vars = Vec::new();
    for (index, layer) in mlp.layers_mut().into_iter().enumerate() {
        let mut rng = seeded(derive(seed, index as u64));
        let weights = initial_adapter(&layer.weight, &spec, &mut rng)?;
        vars.extend(weights.vars().into_iter().cloned());
        layer.adapter = Some(weights);
    }
    Ok(vars)
}
