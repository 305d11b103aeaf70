//! How a method is spelled in TOML, the same in study specs (`methods = ["lora", { method = "abba", … }]`) and in
//! fine-tuning configs (`[adapter]`): the method's name, its sizes (`r`, or `r1`/`r2` for ABBA, `ranks` for a
//! chain), `alpha`, `scale` and `init`.

use serde::{Deserialize, Serialize};

use super::init::{AbbaInit, KaimingA, LoraInit};
use super::scaling::{AbbaScale, LoraScale};
use super::{AbbaSpec, ChainSpec, HiraSpec, LoraSpec, Method};
use crate::error::{AbbaError, Result};

/// The names a user can write, and what each starts from.
pub const METHOD_NAMES: [&str; 6] = ["lora", "rslora", "hira", "abba", "abba-chain", "full"];

/// A scale written as a convention name or a number.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ScaleEntry {
    Name(String),
    Value(f64),
}

/// One method as written in TOML.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodSection {
    /// lora | rslora | hira | abba | abba-chain | full
    pub method: String,
    /// LoRA / HiRA rank; for ABBA the default of r1 and r2.
    pub r: Option<usize>,
    pub r1: Option<usize>,
    pub r2: Option<usize>,
    /// The ranks of an ABBA chain's pairs.
    pub ranks: Option<Vec<usize>>,
    /// LoRA's lora_alpha; ABBA's α (paper scale α²/√(r1 r2)). Default 16.
    pub alpha: Option<f64>,
    /// ABBA scale convention: paper (default) | official-code | a number.
    pub scale: Option<ScaleEntry>,
    /// LoRA: kaiming (default) | gaussian. ABBA: paper (default) or a Table 3 variant.
    pub init: Option<String>,
}

/// What a section leaves out is taken from here: fine-tuning's defaults, or a study's `lora_scale` and
/// `abba_scale`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Defaults {
    pub lora_scale: Option<LoraScale>,
    pub abba_scale: Option<AbbaScale>,
}

impl Defaults {
    /// Fine-tuning's: α = 16 for every scale.
    pub const FINETUNE: Defaults = Defaults {
        lora_scale: None,
        abba_scale: None,
    };
}

const DEFAULT_ALPHA: f64 = 16.0;

fn unknown(what: &'static str, name: &str, valid: &[&str]) -> AbbaError {
    AbbaError::UnknownName {
        what,
        name: name.to_string(),
        valid: valid.iter().map(|s| s.to_string()).collect(),
    }
}

impl MethodSection {
    /// A section that only names a method.
    pub fn named(name: &str) -> MethodSection {
        MethodSection {
            method: name.into(),
            ..Default::default()
        }
    }

    /// The method with its sizes, as a fine-tuning config must give them.
    pub fn resolve(&self) -> Result<Method> {
        self.build(true, Defaults::FINETUNE)
    }

    /// The method with whatever sizes it gives (0 where it gives none: a budget will size it), hyper-parameters
    /// the section leaves out taken from `defaults`.
    pub fn template(&self, defaults: Defaults) -> Result<Method> {
        self.build(false, defaults)
    }

    fn build(&self, sized: bool, defaults: Defaults) -> Result<Method> {
        let rank = |what: &str, v: Option<usize>| -> Result<usize> {
            match v {
                Some(r) if r > 0 => Ok(r),
                None if !sized => Ok(0),
                _ => Err(AbbaError::InvalidArgument(format!(
                    "[adapter] {what} must be a positive integer"
                ))),
            }
        };
        let alpha = self.alpha.unwrap_or(DEFAULT_ALPHA);
        let written = self.alpha.is_some() || self.scale.is_some();
        Ok(match self.method.as_str() {
            "lora" | "rslora" => {
                let scale = match defaults.lora_scale {
                    Some(s) if !written && self.method == "lora" => s,
                    _ if self.method == "rslora" => LoraScale::Rslora { alpha },
                    _ => LoraScale::Standard { alpha },
                };
                let init = match self.init.as_deref().unwrap_or("kaiming") {
                    "kaiming" => LoraInit::Standard {
                        kaiming: KaimingA::Sqrt5,
                    },
                    "gaussian" => LoraInit::Gaussian,
                    other => return Err(unknown("LoRA init", other, &["kaiming", "gaussian"])),
                };
                Method::Lora(LoraSpec {
                    r: rank("r", self.r)?,
                    scale,
                    init,
                })
            }
            "hira" => Method::Hira(HiraSpec {
                r: rank("r", self.r)?,
                kaiming: KaimingA::Sqrt5,
            }),
            "abba" => {
                let init_name = self.init.as_deref().unwrap_or("paper");
                let init = AbbaInit::ALL
                    .into_iter()
                    .find(|i| i.name() == init_name)
                    .ok_or_else(|| {
                        unknown("ABBA init", init_name, &AbbaInit::ALL.map(AbbaInit::name))
                    })?;
                Method::Abba(AbbaSpec {
                    r1: rank("r1 (or r)", self.r1.or(self.r))?,
                    r2: rank("r2 (or r)", self.r2.or(self.r))?,
                    scale: self.abba_scale(alpha, written, defaults)?,
                    init,
                })
            }
            "abba-chain" => {
                let ranks = match &self.ranks {
                    Some(rs) if !rs.is_empty() && rs.iter().all(|&r| r > 0) => rs.clone(),
                    None if !sized => Vec::new(),
                    _ => {
                        return Err(AbbaError::InvalidArgument(
                            "an ABBA chain needs `ranks = [r1, r2, …]`, each a positive integer"
                                .into(),
                        ));
                    }
                };
                Method::AbbaChain(ChainSpec {
                    ranks,
                    scale: self.abba_scale(alpha, written, defaults)?,
                })
            }
            "full" => Method::Full,
            other => return Err(unknown("adapter method", other, &METHOD_NAMES)),
        })
    }

    fn abba_scale(&self, alpha: f64, written: bool, defaults: Defaults) -> Result<AbbaScale> {
        let scale = match (&self.scale, defaults.abba_scale) {
            (None, Some(s)) if !written => s,
            (None, _) => AbbaScale::Paper { alpha },
            (Some(ScaleEntry::Name(s)), _) if s == "paper" => AbbaScale::Paper { alpha },
            (Some(ScaleEntry::Name(s)), _) if s == "official-code" => AbbaScale::OfficialCode {
                alpha1: alpha,
                alpha2: alpha,
            },
            (Some(ScaleEntry::Value(x)), _) => AbbaScale::Explicit { scale: *x },
            (Some(ScaleEntry::Name(other)), _) => {
                return Err(unknown(
                    "ABBA scale",
                    &format!("\"{other}\""),
                    &["paper", "official-code", "<number>"],
                ));
            }
        };
        scale.validate()?;
        Ok(scale)
    }
}

/// A method in a study's `methods` list: a name, or a table spelled as in fine-tuning configs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MethodEntry {
    Name(String),
    Table(MethodSection),
}

impl MethodEntry {
    pub fn section(&self) -> MethodSection {
        match self {
            MethodEntry::Name(n) => MethodSection::named(n),
            MethodEntry::Table(t) => t.clone(),
        }
    }
}
