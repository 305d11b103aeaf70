//! The one description of an adapter method that both halves of the crate read: the family and its size and
//! hyper-parameters ([`Method`]), its parameter count and rank bound on an m×n layer, its factors as one table
//! ([`Factor`]: name, key in saved files, shape, position), its initialisation into an ndarray adapter, and its
//! PEFT `adapter_config.json` fields.
//!
//! Each method's own facts live in its file (`lora.rs`, `hira.rs`, `abba.rs`, `chain.rs`, `full.rs`); this file
//! only dispatches. Every `match` here is exhaustive, so adding a variant makes the compiler list the places a new
//! method must fill in (see `docs/architecture.md`, "Adding a method").

use ndarray::ArrayView2;
use rand::Rng;
use serde_json::Value;

use super::abba::AbbaSpec;
use super::chain::ChainSpec;
use super::hira::HiraSpec;
use super::init::Initialised;
use super::lora::LoraSpec;
use super::scaling::{AbbaScale, LoraScale};
use super::{AnyAdapter, Full};
use crate::error::{AbbaError, Result};
use crate::linalg::Real;

/// The family a method belongs to: what a user names before sizes are known.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum MethodKind {
    Full,
    Lora,
    Hira,
    Abba,
    AbbaChain,
}

impl MethodKind {
    pub const ALL: [MethodKind; 5] = [
        MethodKind::Full,
        MethodKind::Lora,
        MethodKind::Hira,
        MethodKind::Abba,
        MethodKind::AbbaChain,
    ];

    pub fn name(self) -> &'static str {
        match self {
            MethodKind::Full => "full",
            MethodKind::Lora => "lora",
            MethodKind::Hira => "hira",
            MethodKind::Abba => "abba",
            MethodKind::AbbaChain => "abba-chain",
        }
    }

    /// The family's method with its default hyper-parameters (those of fine-tuning: α = 16, the paper's ABBA
    /// scale and init, PEFT's Kaiming init) and no size yet; [`crate::budget::matched`] sizes it.
    pub fn template(self) -> Method {
        match self {
            MethodKind::Full => Method::Full,
            MethodKind::Lora => Method::Lora(LoraSpec::default()),
            MethodKind::Hira => Method::Hira(HiraSpec::default()),
            MethodKind::Abba => Method::Abba(AbbaSpec::default()),
            MethodKind::AbbaChain => Method::AbbaChain(ChainSpec::default()),
        }
    }
}

impl std::fmt::Display for MethodKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A method with its size and hyper-parameters. A size of 0 means "not chosen yet" (a template, sized by a
/// budget); every use on a layer checks the size first ([`Method::validate`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Method {
    /// Full fine-tuning: the dense ΔW (the base weights themselves, on a model) trains.
    Full,
    /// LoRA, rsLoRA (its scale), PiSSA (its init).
    Lora(LoraSpec),
    Hira(HiraSpec),
    Abba(AbbaSpec),
    AbbaChain(ChainSpec),
}

/// One trainable factor of a method on an m×n layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Factor {
    /// The factor's name in the maths (`B1`, `A`, `delta`).
    pub name: String,
    /// Its key suffix in our adapter files, which are PEFT's where PEFT has the method (`lora_A.weight`).
    pub key: String,
    /// Its key when ABBA is saved as PEFT's LoHa (`hada_w1_a` is B1), for ABBA only.
    pub loha_key: Option<&'static str>,
    /// (rows, cols).
    pub shape: (usize, usize),
    /// Its index in the ndarray adapter's [`super::Adapter::factors`]. The table itself is in the order of the
    /// candle variables and of saved files.
    pub position: usize,
}

/// How a saved adapter names its tensors: the method's own keys, or PEFT LoHa's for an ABBA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyStyle {
    Native,
    Loha,
}

impl Factor {
    /// A factor without a LoHa spelling.
    pub fn new(name: &str, key: &str, shape: (usize, usize), position: usize) -> Factor {
        Factor {
            name: name.into(),
            key: key.into(),
            loha_key: None,
            shape,
            position,
        }
    }

    pub fn key_in(&self, style: KeyStyle) -> &str {
        match (style, self.loha_key) {
            (KeyStyle::Loha, Some(k)) => k,
            _ => &self.key,
        }
    }
}

impl Method {
    pub fn kind(&self) -> MethodKind {
        match self {
            Method::Full => MethodKind::Full,
            Method::Lora(_) => MethodKind::Lora,
            Method::Hira(_) => MethodKind::Hira,
            Method::Abba(_) => MethodKind::Abba,
            Method::AbbaChain(_) => MethodKind::AbbaChain,
        }
    }

    /// The name a user writes (`rslora` for a LoRA with the rsLoRA scale).
    pub fn name(&self) -> &'static str {
        match self {
            Method::Lora(s) => s.name(),
            other => other.kind().name(),
        }
    }

    /// A LoRA of rank r with the default hyper-parameters.
    pub fn lora(r: usize) -> Method {
        Method::Lora(LoraSpec {
            r,
            ..LoraSpec::default()
        })
    }

    /// A HiRA of rank r with the default hyper-parameters.
    pub fn hira(r: usize) -> Method {
        Method::Hira(HiraSpec {
            r,
            ..HiraSpec::default()
        })
    }

    /// An ABBA of ranks (r1, r2) with the default hyper-parameters.
    pub fn abba(r1: usize, r2: usize) -> Method {
        Method::Abba(AbbaSpec {
            r1,
            r2,
            ..AbbaSpec::default()
        })
    }

    /// An ABBA chain with these ranks and the default scale.
    pub fn abba_chain(ranks: Vec<usize>) -> Method {
        Method::AbbaChain(ChainSpec {
            ranks,
            ..ChainSpec::default()
        })
    }

    /// The same method with these scale conventions in place of its own (a study's `lora_scale` and
    /// `abba_scale`).
    pub fn with_scales(&self, lora: LoraScale, abba: AbbaScale) -> Method {
        match self {
            Method::Lora(s) => Method::Lora(LoraSpec { scale: lora, ..*s }),
            Method::Abba(s) => Method::Abba(AbbaSpec { scale: abba, ..*s }),
            Method::AbbaChain(s) => Method::AbbaChain(ChainSpec {
                scale: abba,
                ..s.clone()
            }),
            Method::Full | Method::Hira(_) => self.clone(),
        }
    }

    /// The ranks that size this method (empty for full fine-tuning).
    pub fn ranks(&self) -> Vec<usize> {
        match self {
            Method::Full => vec![],
            Method::Lora(s) => vec![s.r],
            Method::Hira(s) => vec![s.r],
            Method::Abba(s) => vec![s.r1, s.r2],
            Method::AbbaChain(s) => s.ranks.clone(),
        }
    }

    /// Trainable parameters on an m×n layer.
    pub fn num_params(&self, shape: (usize, usize)) -> usize {
        self.factors(shape)
            .iter()
            .map(|f| f.shape.0 * f.shape.1)
            .sum()
    }

    /// The largest rank ΔW can reach on an m×n layer (HiRA's bound needs rank(W0), taken as full here).
    pub fn max_rank(&self, (m, n): (usize, usize)) -> usize {
        let cap = m.min(n);
        let product = |rs: &[usize]| rs.iter().fold(1usize, |p, r| p.saturating_mul(*r));
        match self {
            Method::Full => cap,
            Method::Lora(s) => s.r.min(cap),
            Method::Hira(s) => s.r.saturating_mul(cap).min(cap),
            Method::Abba(s) => product(&[s.r1, s.r2]).min(cap),
            Method::AbbaChain(s) => product(&s.ranks).min(cap),
        }
    }

    /// Every rank must be in 1..=min(m, n), and the hyper-parameters usable.
    pub fn validate(&self, (m, n): (usize, usize)) -> Result<()> {
        if m == 0 || n == 0 {
            return Err(AbbaError::EmptyMatrix { rows: m, cols: n });
        }
        if let Method::AbbaChain(s) = self
            && s.ranks.is_empty()
        {
            return Err(AbbaError::InvalidArgument(
                "an ABBA chain needs at least one rank".into(),
            ));
        }
        match self {
            Method::Abba(s) => s.scale.validate()?,
            Method::AbbaChain(s) => s.scale.validate()?,
            Method::Full | Method::Lora(_) | Method::Hira(_) => {}
        }
        self.ranks()
            .into_iter()
            .try_for_each(|r| crate::linalg::check_rank(r, (m, n)))
    }

    /// A short description with the sizes, e.g. `abba r1=16 r2=16`.
    pub fn label(&self) -> String {
        match self {
            Method::Full => "full".into(),
            Method::Lora(s) => format!("lora r={}", s.r),
            Method::Hira(s) => format!("hira r={}", s.r),
            Method::Abba(s) => format!("abba r1={} r2={}", s.r1, s.r2),
            Method::AbbaChain(s) => format!(
                "abba-chain r={}",
                s.ranks
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join("x")
            ),
        }
    }

    /// The factor table for an m×n layer, in the order of candle variables and saved files.
    pub fn factors(&self, (m, n): (usize, usize)) -> Vec<Factor> {
        match self {
            Method::Full => Full::<f64>::factor_table((m, n)),
            Method::Lora(s) => s.factors((m, n)),
            Method::Hira(s) => s.factors((m, n)),
            Method::Abba(s) => s.factors((m, n)),
            Method::AbbaChain(s) => s.factors((m, n)),
        }
    }

    /// Whether the method's ΔW or its initialisation reads the frozen weight W0.
    pub fn needs_w0(&self) -> bool {
        match self {
            Method::Full | Method::AbbaChain(_) => false,
            Method::Lora(s) => s.init.needs_w0(),
            Method::Hira(_) => true,
            Method::Abba(s) => s.init.needs_w0(),
        }
    }

    /// The adapter this method starts from on a layer with frozen weight `w0` (the fine-tuning initialisation),
    /// with the residual base when its ΔW₀ ≠ 0.
    pub fn init<T: Real, R: Rng + ?Sized>(
        &self,
        w0: ArrayView2<'_, T>,
        rng: &mut R,
    ) -> Result<Initialised<AnyAdapter<T>, T>> {
        self.validate(w0.dim())?;
        Ok(match self {
            Method::Full => Initialised {
                adapter: AnyAdapter::Full(Full::zeros(w0.nrows(), w0.ncols())?),
                residual_base: None,
            },
            Method::Lora(s) => s.init_adapter(w0, rng)?.map(AnyAdapter::Lora),
            Method::Hira(s) => Initialised {
                adapter: AnyAdapter::Hira(s.init_adapter(w0, rng)?),
                residual_base: None,
            },
            Method::Abba(s) => s.init_adapter(w0, rng)?.map(AnyAdapter::Abba),
            Method::AbbaChain(_) => {
                return Err(AbbaError::Unsupported {
                    what: "initialising an ABBA chain on a layer".into(),
                    message: "chains are fitted in matrix studies only".into(),
                });
            }
        })
    }

    /// The method's fields of `adapter_config.json` (with `peft_type`), `dropout` under the method's own key.
    pub fn peft_config(&self, style: KeyStyle, dropout: f32) -> Result<Value> {
        match (self, style) {
            (Method::Lora(s), KeyStyle::Native) => Ok(s.peft_config(dropout)),
            (Method::Hira(s), KeyStyle::Native) => Ok(s.peft_config(dropout)),
            (Method::Abba(s), KeyStyle::Native) => Ok(s.peft_config(dropout)),
            (Method::Abba(s), KeyStyle::Loha) => s.loha_config(),
            (Method::Full | Method::AbbaChain(_), _) | (_, KeyStyle::Loha) => {
                Err(AbbaError::Unsupported {
                    what: format!("saving a {} adapter as {style:?}", self.name()),
                    message: "adapter files hold LoRA, rsLoRA, HiRA or ABBA (ABBA also as LoHa)"
                        .into(),
                })
            }
        }
    }

    /// The method an `adapter_config.json` describes, and how its tensors are named.
    pub fn from_peft_config(cfg: &Value, path: &std::path::Path) -> Result<(Method, KeyStyle)> {
        let fields = PeftFields { cfg, path };
        let peft_type = cfg.get("peft_type").and_then(Value::as_str).unwrap_or("");
        match peft_type {
            "LORA" => Ok((
                Method::Lora(LoraSpec::from_peft(&fields)?),
                KeyStyle::Native,
            )),
            "HIRA" => Ok((
                Method::Hira(HiraSpec::from_peft(&fields)?),
                KeyStyle::Native,
            )),
            "LOHA" => Ok((Method::Abba(AbbaSpec::from_loha(&fields)?), KeyStyle::Loha)),
            "ABBA" => Ok((
                Method::Abba(AbbaSpec::from_peft(&fields)?),
                KeyStyle::Native,
            )),
            other => Err(AbbaError::Unsupported {
                what: "peft_type".into(),
                message: format!("'{other}' (supported: LORA, HIRA, LOHA, ABBA)"),
            }),
        }
    }

    /// The family and sizes as JSON, in the form study run configurations have always recorded (and hashed into
    /// run ids): `{"method":"abba","r1":16,"r2":16}`.
    pub fn sizes_json(&self) -> Value {
        let mut v = serde_json::json!({ "method": self.kind().name() });
        let extra = match self {
            Method::Full => serde_json::json!({}),
            Method::Lora(s) => serde_json::json!({ "r": s.r }),
            Method::Hira(s) => serde_json::json!({ "r": s.r }),
            Method::Abba(s) => serde_json::json!({ "r1": s.r1, "r2": s.r2 }),
            Method::AbbaChain(s) => serde_json::json!({ "ranks": s.ranks }),
        };
        if let (Some(obj), Value::Object(more)) = (v.as_object_mut(), extra) {
            obj.extend(more);
        }
        v
    }
}

/// Typed reads of `adapter_config.json` fields, each failure naming the file and the field.
pub struct PeftFields<'a> {
    pub cfg: &'a Value,
    pub path: &'a std::path::Path,
}

impl PeftFields<'_> {
    pub fn bad(&self, message: String) -> AbbaError {
        AbbaError::Format {
            path: self.path.display().to_string(),
            format: "adapter_config.json",
            message,
        }
    }

    pub fn uint(&self, key: &str) -> Result<usize> {
        self.cfg
            .get(key)
            .and_then(Value::as_u64)
            .filter(|&r| r > 0)
            .map(|r| r as usize)
            .ok_or_else(|| self.bad(format!("field '{key}' must be a positive integer")))
    }

    pub fn float(&self, key: &str) -> Result<f64> {
        self.cfg
            .get(key)
            .and_then(Value::as_f64)
            .ok_or_else(|| self.bad(format!("field '{key}' must be a number")))
    }

    pub fn flag(&self, key: &str) -> bool {
        self.cfg.get(key).and_then(Value::as_bool).unwrap_or(false)
    }

    pub fn string(&self, key: &str) -> Option<&str> {
        self.cfg.get(key).and_then(Value::as_str)
    }
}
