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
use super::dora::DoraSpec;
use super::factor::{Factor, KeyStyle, PeftFields};
use super::hira::HiraSpec;
use super::init::Initialised;
use super::kradapter::KrAdapterSpec;
use super::lokr::LokrSpec;
use super::lora::LoraSpec;
use super::mora::{MoraLayout, MoraSpec, MoraType};
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
    Dora,
    Lokr,
    Mora,
    Kradapter,
}

impl MethodKind {
    pub const ALL: [MethodKind; 9] = [
        MethodKind::Full,
        MethodKind::Lora,
        MethodKind::Hira,
        MethodKind::Abba,
        MethodKind::AbbaChain,
        MethodKind::Dora,
        MethodKind::Lokr,
        MethodKind::Mora,
        MethodKind::Kradapter,
    ];

    pub fn name(self) -> &'static str {
        match self {
            MethodKind::Full => "full",
            MethodKind::Lora => "lora",
            MethodKind::Hira => "hira",
            MethodKind::Abba => "abba",
            MethodKind::AbbaChain => "abba-chain",
            MethodKind::Dora => "dora",
            MethodKind::Lokr => "lokr",
            MethodKind::Mora => "mora",
            MethodKind::Kradapter => "kradapter",
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
            MethodKind::Dora => Method::Dora(DoraSpec::default()),
            MethodKind::Lokr => Method::Lokr(LokrSpec::default()),
            MethodKind::Mora => Method::Mora(MoraSpec::default()),
            MethodKind::Kradapter => Method::Kradapter(KrAdapterSpec::default()),
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
    /// LoRA, rsLoRA (its scale), PiSSA and OLoRA (its init).
    Lora(LoraSpec),
    Hira(HiraSpec),
    Abba(AbbaSpec),
    AbbaChain(ChainSpec),
    Dora(DoraSpec),
    /// LoKr, and KronA (both factors full).
    Lokr(LokrSpec),
    Mora(MoraSpec),
    Kradapter(KrAdapterSpec),
}

impl Method {
    pub fn kind(&self) -> MethodKind {
        match self {
            Method::Full => MethodKind::Full,
            Method::Lora(_) => MethodKind::Lora,
            Method::Hira(_) => MethodKind::Hira,
            Method::Abba(_) => MethodKind::Abba,
            Method::AbbaChain(_) => MethodKind::AbbaChain,
            Method::Dora(_) => MethodKind::Dora,
            Method::Lokr(_) => MethodKind::Lokr,
            Method::Mora(_) => MethodKind::Mora,
            Method::Kradapter(_) => MethodKind::Kradapter,
        }
    }

    /// The name a user writes (`rslora` for a LoRA with the rsLoRA scale, `pissa` for its PiSSA init, `krona`
    /// for a LoKr with both factors full).
    pub fn name(&self) -> &'static str {
        match self {
            Method::Lora(s) => s.name(),
            Method::Lokr(s) => s.name(),
            other => other.kind().name(),
        }
    }

    /// The name results record: [`Self::name`], with MoRA's type (`mora-1`, `mora-6`).
    pub fn record_name(&self) -> &'static str {
        match self {
            Method::Mora(s) => match s.kind {
                MoraType::Sum => "mora-1",
                MoraType::Rotated => "mora-6",
            },
            other => other.name(),
        }
    }

    /// The method a run configuration's sizes describe ([`Self::sizes_json`]), with default hyper-parameters:
    /// enough to know its parameter count and rank bound.
    pub fn from_sizes_json(v: &Value) -> Option<Method> {
        let u = |k: &str| v.get(k).and_then(Value::as_u64).map(|x| x as usize);
        let kind = v.get("method")?.as_str()?;
        let template = MethodKind::ALL
            .into_iter()
            .find(|k| k.name() == kind)?
            .template();
        Some(match template {
            Method::Full => Method::Full,
            Method::Lora(s) => Method::Lora(LoraSpec { r: u("r")?, ..s }),
            Method::Hira(s) => Method::Hira(HiraSpec { r: u("r")?, ..s }),
            Method::Dora(s) => Method::Dora(DoraSpec { r: u("r")?, ..s }),
            Method::Abba(s) => Method::Abba(AbbaSpec {
                r1: u("r1")?,
                r2: u("r2")?,
                ..s
            }),
            Method::AbbaChain(s) => Method::AbbaChain(ChainSpec {
                ranks: v
                    .get("ranks")?
                    .as_array()?
                    .iter()
                    .filter_map(Value::as_u64)
                    .map(|x| x as usize)
                    .collect(),
                ..s
            }),
            Method::Lokr(s) => Method::Lokr(LokrSpec {
                factor: v.get("factor")?.as_i64()?,
                r: u("r")?,
                decompose_both: v.get("decompose_both")?.as_bool()?,
                krona: v.get("krona")?.as_bool()?,
                ..s
            }),
            Method::Mora(_) => Method::Mora(MoraSpec {
                r_hat: u("r_hat")?,
                kind: MoraType::from_number(v.get("type")?.as_i64()?).ok()?,
            }),
            Method::Kradapter(s) => Method::Kradapter(s),
        })
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
            Method::Dora(s) => Method::Dora(DoraSpec { scale: lora, ..*s }),
            Method::Full
            | Method::Hira(_)
            | Method::Lokr(_)
            | Method::Mora(_)
            | Method::Kradapter(_) => self.clone(),
        }
    }

    /// The same method with the rank and alpha `f(r, alpha)` gives for its own (PEFT's per-module
    /// `rank_pattern` / `alpha_pattern`); methods without them are unchanged.
    pub fn with_rank_alpha(&self, f: impl Fn(usize, f64) -> (usize, f64)) -> Method {
        let lora_scale = |scale: LoraScale, alpha: f64| match scale {
            LoraScale::Standard { .. } => LoraScale::Standard { alpha },
            LoraScale::Rslora { .. } => LoraScale::Rslora { alpha },
            explicit @ LoraScale::Explicit { .. } => explicit,
        };
        let alpha_of = |scale: LoraScale| match scale {
            LoraScale::Standard { alpha } | LoraScale::Rslora { alpha } => alpha,
            LoraScale::Explicit { .. } => f64::NAN,
        };
        match self {
            Method::Lora(s) => {
                let (r, alpha) = f(s.r, alpha_of(s.scale));
                Method::Lora(LoraSpec {
                    r,
                    scale: lora_scale(s.scale, alpha),
                    ..*s
                })
            }
            Method::Dora(s) => {
                let (r, alpha) = f(s.r, alpha_of(s.scale));
                Method::Dora(DoraSpec {
                    r,
                    scale: lora_scale(s.scale, alpha),
                    ..*s
                })
            }
            Method::Hira(s) => Method::Hira(HiraSpec {
                r: f(s.r, f64::NAN).0,
                ..*s
            }),
            Method::Lokr(s) => {
                let (r, alpha) = f(s.r, s.alpha);
                Method::Lokr(LokrSpec { r, alpha, ..*s })
            }
            Method::Abba(s) => match s.scale {
                AbbaScale::Loha { alpha } => {
                    let (r, alpha) = f(s.r1, alpha);
                    Method::Abba(AbbaSpec {
                        r1: r,
                        r2: r,
                        scale: AbbaScale::Loha { alpha },
                        ..*s
                    })
                }
                _ => self.clone(),
            },
            Method::Full | Method::AbbaChain(_) | Method::Mora(_) | Method::Kradapter(_) => {
                self.clone()
            }
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
            Method::Dora(s) => vec![s.r],
            Method::Lokr(s) if s.krona => vec![],
            Method::Lokr(s) => vec![s.r],
            Method::Mora(s) => vec![s.r_hat],
            Method::Kradapter(_) => vec![],
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
            Method::Dora(_) | Method::Kradapter(_) => cap,
            Method::Lokr(s) => {
                let l = s.layout((m, n));
                let r1 = if l.w1_low_rank {
                    s.r
                } else {
                    l.f_out.min(l.f_in)
                };
                let r2 = if l.w2_low_rank { s.r } else { l.p.min(l.q) };
                product(&[r1, r2]).min(cap)
            }
            Method::Mora(s) => match s.kind {
                MoraType::Sum => s.r_hat.min(cap),
                MoraType::Rotated => cap,
            },
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
            Method::Lokr(s) => {
                if s.factor == 0 || s.factor < -1 {
                    return Err(AbbaError::InvalidArgument(format!(
                        "LoKr factor {} is not usable: use -1 (the divisor pair nearest √dim) or a positive divisor",
                        s.factor
                    )));
                }
                if !s.krona && s.r == 0 {
                    return Err(AbbaError::InvalidRank {
                        rank: 0,
                        rows: m,
                        cols: n,
                    });
                }
                return Ok(());
            }
            Method::Mora(s) => {
                MoraLayout::new((m, n), s.r_hat, s.kind)?;
                return Ok(());
            }
            Method::Kradapter(s) if !s.scale.is_finite() => {
                return Err(AbbaError::InvalidArgument(
                    "KRAdapter's scale must be a finite number".into(),
                ));
            }
            Method::Full
            | Method::Lora(_)
            | Method::Hira(_)
            | Method::Dora(_)
            | Method::Kradapter(_) => {}
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
            Method::Dora(s) => format!("dora r={}", s.r),
            Method::Lokr(s) if s.krona => format!("krona f={}", s.factor),
            Method::Lokr(s) => format!("lokr f={} r={}", s.factor, s.r),
            Method::Mora(s) => format!("mora type {} r̂={}", s.kind.number(), s.r_hat),
            Method::Kradapter(_) => "kradapter".into(),
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
            Method::Dora(s) => s.factors((m, n)),
            Method::Lokr(s) => s.factors((m, n)),
            Method::Mora(s) => s.factors((m, n)),
            Method::Kradapter(s) => s.factors((m, n)),
        }
    }

    /// Whether the method's ΔW or its initialisation reads the frozen weight W0.
    pub fn needs_w0(&self) -> bool {
        match self {
            Method::Full
            | Method::AbbaChain(_)
            | Method::Lokr(_)
            | Method::Mora(_)
            | Method::Kradapter(_) => false,
            Method::Lora(s) => s.init.needs_w0(),
            Method::Hira(_) | Method::Dora(_) => true,
            Method::Abba(s) => s.init.needs_w0(),
        }
    }

    /// Whether the method's ΔW (not only its initialisation) reads the frozen weight W0: HiRA's W0⊙(B·A) and
    /// DoRA's renormalised W0 + s·B·A.
    pub fn delta_reads_w0(&self) -> bool {
        match self {
            Method::Hira(_) | Method::Dora(_) => true,
            Method::Full
            | Method::Lora(_)
            | Method::Abba(_)
            | Method::AbbaChain(_)
            | Method::Lokr(_)
            | Method::Mora(_)
            | Method::Kradapter(_) => false,
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
            Method::AbbaChain(s) => s.init_adapter(w0, rng)?.map(AnyAdapter::Chain),
            Method::Dora(s) => s.init_adapter(w0, rng)?.map(AnyAdapter::Dora),
            Method::Lokr(s) => s.init_adapter(w0, rng)?.map(AnyAdapter::Lokr),
            Method::Mora(s) => s.init_adapter(w0)?.map(AnyAdapter::Mora),
            Method::Kradapter(s) => s.init_adapter(w0, rng)?.map(AnyAdapter::Kradapter),
        })
    }

    /// The method's fields of `adapter_config.json` (with `peft_type`), `dropout` under the method's own key.
    pub fn peft_config(&self, style: KeyStyle, dropout: f32) -> Result<Value> {
        match (self, style) {
            (Method::Lora(s), KeyStyle::Native) => Ok(s.peft_config(dropout)),
            (Method::Hira(s), KeyStyle::Native) => Ok(s.peft_config(dropout)),
            (Method::Abba(s), KeyStyle::Native) => Ok(s.peft_config(dropout)),
            (Method::Abba(s), KeyStyle::Loha) => s.loha_config(),
            (Method::AbbaChain(s), KeyStyle::Native) => Ok(s.peft_config(dropout)),
            (Method::Dora(s), KeyStyle::Native) => Ok(s.peft_config(dropout)),
            (Method::Lokr(s), KeyStyle::Native) => Ok(s.peft_config(dropout)),
            (Method::Mora(s), KeyStyle::Native) => Ok(s.peft_config(dropout)),
            (Method::Kradapter(s), KeyStyle::Native) => Ok(s.peft_config(dropout)),
            (Method::Full, _) | (_, KeyStyle::Loha) => Err(AbbaError::Unsupported {
                what: format!("saving a {} adapter as {style:?}", self.name()),
                message: "full fine-tuning saves a model, not an adapter; only ABBA saves as LoHa"
                    .into(),
            }),
        }
    }

    /// The method an `adapter_config.json` describes, and how its tensors are named.
    pub fn from_peft_config(cfg: &Value, path: &std::path::Path) -> Result<(Method, KeyStyle)> {
        let fields = PeftFields { cfg, path };
        let peft_type = cfg.get("peft_type").and_then(Value::as_str).unwrap_or("");
        let native = |m: Method| Ok((m, KeyStyle::Native));
        match peft_type {
            "LORA" if fields.flag("use_dora") => {
                native(Method::Dora(DoraSpec::from_peft(&fields)?))
            }
            "LORA" => native(Method::Lora(LoraSpec::from_peft(&fields)?)),
            "HIRA" => native(Method::Hira(HiraSpec::from_peft(&fields)?)),
            "LOHA" => Ok((Method::Abba(AbbaSpec::from_loha(&fields)?), KeyStyle::Loha)),
            "ABBA" => native(Method::Abba(AbbaSpec::from_peft(&fields)?)),
            "ABBA_CHAIN" => native(Method::AbbaChain(ChainSpec::from_peft(&fields)?)),
            "LOKR" => native(Method::Lokr(LokrSpec::from_peft(&fields)?)),
            "MORA" => native(Method::Mora(MoraSpec::from_peft(&fields)?)),
            "KRADAPTER" => native(Method::Kradapter(KrAdapterSpec::from_peft(&fields)?)),
            other => Err(AbbaError::Unsupported {
                what: "peft_type".into(),
                message: format!(
                    "'{other}' (supported: LORA with or without DoRA, HIRA, LOHA, LOKR, and ours: ABBA, \\
                     ABBA_CHAIN, MORA, KRADAPTER)"
                ),
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
            Method::Dora(s) => serde_json::json!({ "r": s.r }),
            Method::Lokr(s) => serde_json::json!({
                "factor": s.factor, "r": s.r, "decompose_both": s.decompose_both, "krona": s.krona,
            }),
            Method::Mora(s) => serde_json::json!({ "r_hat": s.r_hat, "type": s.kind.number() }),
            Method::Kradapter(_) => serde_json::json!({}),
        };
        if let (Some(obj), Value::Object(more)) = (v.as_object_mut(), extra) {
            obj.extend(more);
        }
        v
    }
}
