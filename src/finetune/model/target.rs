//! The seven projections of a decoder layer that can carry an adapter, named as PEFT's `target_modules` names them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::AbbaError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum TargetModule {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl TargetModule {
    /// All seven, as the ABBA paper adapts them.
    pub const ALL: [TargetModule; 7] = [
        TargetModule::Q,
        TargetModule::K,
        TargetModule::V,
        TargetModule::O,
        TargetModule::Gate,
        TargetModule::Up,
        TargetModule::Down,
    ];

    pub fn proj_name(self) -> &'static str {
        match self {
            TargetModule::Q => "q_proj",
            TargetModule::K => "k_proj",
            TargetModule::V => "v_proj",
            TargetModule::O => "o_proj",
            TargetModule::Gate => "gate_proj",
            TargetModule::Up => "up_proj",
            TargetModule::Down => "down_proj",
        }
    }

    /// `model.layers.{layer}.self_attn.q_proj` and so on: the module path in HF checkpoints and PEFT keys.
    pub fn module_path(self, layer: usize) -> String {
        let group = match self {
            TargetModule::Q | TargetModule::K | TargetModule::V | TargetModule::O => "self_attn",
            _ => "mlp",
        };
        format!("model.layers.{layer}.{group}.{}", self.proj_name())
    }
}

impl fmt::Display for TargetModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.proj_name())
    }
}

impl FromStr for TargetModule {
    type Err = AbbaError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let short = s.trim().trim_end_matches("_proj");
        TargetModule::ALL
            .into_iter()
            .find(|t| t.proj_name().trim_end_matches("_proj") == short)
            .ok_or_else(|| AbbaError::UnknownName {
                what: "target module",
                name: s.to_string(),
                valid: TargetModule::ALL
                    .iter()
                    .map(|t| t.proj_name().to_string())
                    .collect(),
            })
    }
}

impl TryFrom<String> for TargetModule {
    type Error = AbbaError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<TargetModule> for String {
    fn from(t: TargetModule) -> String {
        t.proj_name().to_string()
    }
}
