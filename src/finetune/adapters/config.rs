//! An adapter configuration as written in a fine-tuning TOML (`[adapter]`) and its typed, validated form. The
//! method keys (`method`, `r`, `r1`, `r2`, `alpha`, `scale`, `init`, …) are spelled as in study specs
//! ([`MethodSection`]); `dropout` and `target_modules` belong to the model side.

use serde::{Deserialize, Deserializer, Serialize};

use crate::adapter::Method;
use crate::adapter::section::{Defaults, MethodSection};
use crate::budget::Budget;
use crate::error::{AbbaError, Result};
use crate::finetune::model::TargetModule;

#[derive(Clone, Debug, PartialEq)]
pub struct AdapterConfig {
    /// The method; when `budget` is set, a template sized layer by layer.
    pub method: Method,
    /// Size every adapted layer to this budget ([`crate::budget::sized`]) rather than by the method's own sizes.
    pub budget: Option<Budget>,
    pub targets: Vec<TargetModule>,
    pub dropout: f32,
}

/// The `[adapter]` table as a user writes it.
#[derive(Clone, Debug, Serialize)]
pub struct AdapterSection {
    #[serde(flatten)]
    pub method: MethodSection,
    pub dropout: f32,
    /// Default: all seven projections, as the paper.
    pub target_modules: Option<Vec<String>>,
    /// Size each layer's adapter to the parameters of a LoRA of this rank on that layer (every method at one
    /// budget); MoRA's `r` means the same.
    pub budget_rank: Option<usize>,
}

/// The layer keys; every other key goes to the method, which refuses the ones it does not know. (serde cannot
/// refuse unknown keys across a flattened struct, hence the two steps.)
#[derive(Deserialize)]
struct LayerKeys {
    #[serde(default)]
    dropout: f32,
    target_modules: Option<Vec<String>>,
    budget_rank: Option<usize>,
    #[serde(flatten)]
    method: toml::Table,
}

impl<'de> Deserialize<'de> for AdapterSection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let keys = LayerKeys::deserialize(d)?;
        let method = MethodSection::deserialize(toml::Value::Table(keys.method))
            .map_err(serde::de::Error::custom)?;
        Ok(AdapterSection {
            method,
            dropout: keys.dropout,
            target_modules: keys.target_modules,
            budget_rank: keys.budget_rank,
        })
    }
}

impl AdapterSection {
    pub fn resolve(&self) -> Result<AdapterConfig> {
        // A MoRA given by the LoRA rank it should match is sized per layer, like an explicit budget.
        let mora_rank = (self.method.method == "mora" && self.method.r_hat.is_none())
            .then_some(self.method.r)
            .flatten();
        let budget = self.budget_rank.or(mora_rank).map(Budget::LoraRank);
        let method = match budget {
            Some(_) => self.method.template(Defaults::FINETUNE)?,
            None => self.method.resolve()?,
        };
        let targets = match &self.target_modules {
            None => TargetModule::ALL.to_vec(),
            Some(names) if names.is_empty() => {
                return Err(AbbaError::InvalidArgument(
                    "[adapter] target_modules is empty: name at least one of q_proj … down_proj"
                        .into(),
                ));
            }
            Some(names) => names
                .iter()
                .map(|n| n.parse())
                .collect::<Result<Vec<_>>>()?,
        };
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(AbbaError::InvalidArgument(format!(
                "[adapter] dropout {} is outside [0, 1)",
                self.dropout
            )));
        }
        Ok(AdapterConfig {
            method,
            budget,
            targets,
            dropout: self.dropout,
        })
    }
}
