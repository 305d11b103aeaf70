//! How a method is spelled in TOML, the same in study specs (`methods = ["lora", { method = "abba", … }]`) and in
//! fine-tuning configs (`[adapter]`): the method's name, its sizes (`r`, or `r1`/`r2` for ABBA, `ranks` for a
//! chain), `alpha`, `scale` and `init`.

use serde::{Deserialize, Serialize};

use super::init::{AbbaInit, KaimingA, LoraInit, SvdMethod};
use super::scaling::{AbbaScale, LoraScale};
use super::{
    AbbaSpec, ChainSpec, DoraSpec, HiraSpec, KrAdapterSpec, LokrSpec, LoraSpec, Method, MoraSpec,
    MoraType,
};
use crate::error::{AbbaError, Result};

/// The names a user can write.
pub const METHOD_NAMES: [&str; 13] = [
    "lora",
    "rslora",
    "pissa",
    "olora",
    "dora",
    "hira",
    "abba",
    "abba-chain",
    "lokr",
    "krona",
    "mora",
    "kradapter",
    "full",
];

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
    /// LoRA / DoRA: kaiming (default) | gaussian (PiSSA and OLoRA are methods of their own). ABBA: paper
    /// (default) or a Table 3 variant.
    pub init: Option<String>,
    /// LoRA-shaped methods (lora, pissa, olora, dora): the rsLoRA scale α/√r.
    pub rslora: Option<bool>,
    /// LoKr / KronA: PEFT's `decompose_factor` (−1: the divisor pair nearest √dim).
    pub factor: Option<i64>,
    /// LoKr: also factor W1 (PEFT's `decompose_both`).
    pub decompose_both: Option<bool>,
    /// MoRA: 1 (sum of chunks) or 6 (rotated chunks, the default); `r_hat` sets r̂ directly, `r` a LoRA rank
    /// whose budget sets it.
    pub mora_type: Option<i64>,
    pub r_hat: Option<usize>,
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
        let lora_scale = |rs: bool| match defaults.lora_scale {
            Some(s) if !written && !rs => s,
            _ if rs => LoraScale::Rslora { alpha },
            _ => LoraScale::Standard { alpha },
        };
        let rslora = self.rslora.unwrap_or(false) || self.method == "rslora";
        let lora_init = |name: &str| -> Result<LoraInit> {
            match name {
                "kaiming" => Ok(LoraInit::Standard {
                    kaiming: KaimingA::Sqrt5,
                }),
                "gaussian" => Ok(LoraInit::Gaussian),
                other => Err(unknown("LoRA init", other, &["kaiming", "gaussian"])),
            }
        };
        Ok(match self.method.as_str() {
            "lora" | "rslora" | "pissa" | "olora" => {
                let init = match self.method.as_str() {
                    "pissa" => LoraInit::Pissa {
                        svd: SvdMethod::Exact,
                    },
                    "olora" => LoraInit::Olora,
                    _ => lora_init(self.init.as_deref().unwrap_or("kaiming"))?,
                };
                Method::Lora(LoraSpec {
                    r: rank("r", self.r)?,
                    scale: lora_scale(rslora),
                    init,
                })
            }
            "dora" => Method::Dora(DoraSpec {
                r: rank("r", self.r)?,
                scale: lora_scale(rslora),
                init: lora_init(self.init.as_deref().unwrap_or("kaiming"))?,
            }),
            "lokr" | "krona" => Method::Lokr(LokrSpec {
                factor: self.factor.unwrap_or(-1),
                r: if self.method == "krona" {
                    self.r.unwrap_or(0)
                } else {
                    rank("r", self.r)?
                },
                alpha: self
                    .alpha
                    .unwrap_or(if self.method == "krona" { 1.0 } else { alpha }),
                decompose_both: self.decompose_both.unwrap_or(false),
                krona: self.method == "krona",
            }),
            "mora" => {
                let kind = MoraType::from_number(self.mora_type.unwrap_or(6))?;
                let r_hat = match (self.r_hat, self.r) {
                    (Some(r), _) => r,
                    (None, Some(_)) if !sized => 0,
                    (None, _) if !sized => 0,
                    (None, _) => {
                        return Err(AbbaError::InvalidArgument(
                            "[adapter] mora needs r_hat (the side of M), or use a budget".into(),
                        ));
                    }
                };
                Method::Mora(MoraSpec { r_hat, kind })
            }
            "kradapter" => Method::Kradapter(KrAdapterSpec {
                scale: match &self.scale {
                    Some(ScaleEntry::Value(x)) => *x,
                    _ => KrAdapterSpec::default().scale,
                },
            }),
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
