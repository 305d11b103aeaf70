//! An adapter configuration as written in a fine-tuning TOML (`[adapter]`) and its typed, validated form. The
//! method keys (`method`, `r`, `r1`, `r2`, `alpha`, `scale`, `init`, …) are spelled as in study specs
//! ([`MethodSection`]); `dropout` and `target_modules` belong to the model side.

use serde::{Deserialize, Deserializer, Serialize};

use crate::adapter::Method;
use crate::adapter::section::MethodSection;
use crate::error::{AbbaError, Result};
use crate::finetune::model::TargetModule;

#[derive(Clone, Debug, PartialEq)]
pub struct AdapterConfig {
    pub method: Method,
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
}

/// The layer keys; every other key goes to the method, which refuses the ones it does not know. (serde cannot
/// refuse unknown keys across a flattened struct, hence the two steps.)
#[derive(Deserialize)]
struct LayerKeys {
    #[serde(default)]
    dropout: f32,
    target_modules: Option<Vec<String>>,
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
        })
    }
}

impl AdapterSection {
    pub fn resolve(&self) -> Result<AdapterConfig> {
        let method = self.method.resolve()?;
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
            targets,
            dropout: self.dropout,
        })
    }
}
