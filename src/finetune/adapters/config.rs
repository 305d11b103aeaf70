//! An adapter configuration as written in a fine-tuning TOML (`[adapter]`) and its typed, validated form.

use serde::{Deserialize, Serialize};

use crate::adapter::init::{AbbaInit, KaimingA, LoraInit};
use crate::adapter::scaling::{AbbaScale, LoraScale};
use crate::error::{AbbaError, Result};
use crate::finetune::model::TargetModule;

/// The method and its hyper-parameters, resolved.
#[derive(Clone, Debug, PartialEq)]
pub enum MethodSpec {
    Lora {
        r: usize,
        scale: LoraScale,
        init: LoraInit,
    },
    Hira {
        r: usize,
        kaiming: KaimingA,
    },
    Abba {
        r1: usize,
        r2: usize,
        scale: AbbaScale,
        init: AbbaInit,
    },
    /// Full fine-tuning: every base weight trains, no adapter.
    Full,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AdapterConfig {
    pub method: MethodSpec,
    pub targets: Vec<TargetModule>,
    pub dropout: f32,
}

/// The `[adapter]` table as a user writes it.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterSection {
    /// lora | rslora | hira | abba | full
    pub method: String,
    /// LoRA / HiRA rank; for ABBA the default of r1 and r2.
    pub r: Option<usize>,
    pub r1: Option<usize>,
    pub r2: Option<usize>,
    /// LoRA's lora_alpha; ABBA's α (paper scale α²/√(r1 r2)).
    pub alpha: Option<f64>,
    /// ABBA scale convention: paper (default) | official-code | a number.
    pub scale: Option<toml::Value>,
    /// LoRA: kaiming (default) | gaussian. ABBA: paper (default) or a Table 3 variant.
    pub init: Option<String>,
    #[serde(default)]
    pub dropout: f32,
    /// Default: all seven projections, as the paper.
    pub target_modules: Option<Vec<String>>,
}

impl AdapterSection {
    pub fn resolve(&self) -> Result<AdapterConfig> {
        let rank = |what: &str, v: Option<usize>| -> Result<usize> {
            v.filter(|&r| r > 0).ok_or_else(|| {
                AbbaError::InvalidArgument(format!("[adapter] {what} must be a positive integer"))
            })
        };
        let alpha = self.alpha.unwrap_or(16.0);
        let method = match self.method.as_str() {
            "lora" | "rslora" => {
                let r = rank("r", self.r)?;
                let scale = if self.method == "rslora" {
                    LoraScale::Rslora { alpha }
                } else {
                    LoraScale::Standard { alpha }
                };
                let init = match self.init.as_deref().unwrap_or("kaiming") {
                    "kaiming" => LoraInit::Standard {
                        kaiming: KaimingA::Sqrt5,
                    },
                    "gaussian" => LoraInit::Gaussian,
                    other => return Err(unknown("LoRA init", other, &["kaiming", "gaussian"])),
                };
                MethodSpec::Lora { r, scale, init }
            }
            "hira" => MethodSpec::Hira {
                r: rank("r", self.r)?,
                kaiming: KaimingA::Sqrt5,
            },
            "abba" => {
                let r1 = rank("r1 (or r)", self.r1.or(self.r))?;
                let r2 = rank("r2 (or r)", self.r2.or(self.r))?;
                let scale = match &self.scale {
                    None => AbbaScale::Paper { alpha },
                    Some(toml::Value::String(s)) if s == "paper" => AbbaScale::Paper { alpha },
                    Some(toml::Value::String(s)) if s == "official-code" => {
                        AbbaScale::OfficialCode {
                            alpha1: alpha,
                            alpha2: alpha,
                        }
                    }
                    Some(toml::Value::Float(x)) => AbbaScale::Explicit { scale: *x },
                    Some(toml::Value::Integer(x)) => AbbaScale::Explicit { scale: *x as f64 },
                    Some(other) => {
                        return Err(unknown(
                            "ABBA scale",
                            &other.to_string(),
                            &["paper", "official-code", "<number>"],
                        ));
                    }
                };
                scale.validate()?;
                let init_name = self.init.as_deref().unwrap_or("paper");
                let init: AbbaInit = serde_json::from_value(serde_json::Value::String(
                    init_name.into(),
                ))
                .map_err(|_| {
                    unknown(
                        "ABBA init",
                        init_name,
                        &[
                            "paper",
                            "ones-second",
                            "sqrt-both",
                            "sqrt-top-next",
                            "sqrt-next-top",
                            "svd-second",
                        ],
                    )
                })?;
                MethodSpec::Abba {
                    r1,
                    r2,
                    scale,
                    init,
                }
            }
            "full" => MethodSpec::Full,
            other => {
                return Err(unknown(
                    "adapter method",
                    other,
                    &["lora", "rslora", "hira", "abba", "full"],
                ));
            }
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
            targets,
            dropout: self.dropout,
        })
    }
}

fn unknown(what: &'static str, name: &str, valid: &[&str]) -> AbbaError {
    AbbaError::UnknownName {
        what,
        name: name.to_string(),
        valid: valid.iter().map(|s| s.to_string()).collect(),
    }
}

impl MethodSpec {
    pub fn name(&self) -> &'static str {
        match self {
            MethodSpec::Lora {
                scale: LoraScale::Rslora { .. },
                ..
            } => "rslora",
            MethodSpec::Lora { .. } => "lora",
            MethodSpec::Hira { .. } => "hira",
            MethodSpec::Abba { .. } => "abba",
            MethodSpec::Full => "full",
        }
    }
}
