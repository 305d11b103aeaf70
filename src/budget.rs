//! Equal-budget configurations: given a layer shape and a budget, the matching configuration of every method.

use serde::{Deserialize, Serialize};

use crate::adapter::MethodKind;
use crate::error::{AbbaError, Result};

/// How an ABBA configuration is derived from a LoRA rank r.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "rule")]
pub enum AbbaRankRule {
    /// r1 = ⌈r/2⌉, r2 = ⌊r/2⌋: the paper's stated equal budget, (r1+r2)(m+n) = r(m+n).
    Half,
    /// r1 = r2 = r: what the released code does, twice LoRA's parameters.
    Full,
    /// r1 given, r2 = r − r1: an uneven equal-budget split.
    Split { r1: usize },
}

impl AbbaRankRule {
    pub fn name(&self) -> String {
        match self {
            AbbaRankRule::Half => "half".into(),
            AbbaRankRule::Full => "full".into(),
            AbbaRankRule::Split { r1 } => format!("split-{r1}"),
        }
    }

    /// (r1, r2) for LoRA rank r.
    pub fn ranks(&self, r: usize) -> Result<(usize, usize)> {
        let (r1, r2) = match *self {
            AbbaRankRule::Half => (r.div_ceil(2), r / 2),
            AbbaRankRule::Full => (r, r),
            AbbaRankRule::Split { r1 } => (r1, r.saturating_sub(r1)),
        };
        if r1 == 0 || r2 == 0 {
            return Err(AbbaError::InvalidArgument(format!(
                "ABBA rule '{}' gives ranks ({r1}, {r2}) for r = {r}: both must be ≥ 1, so use r ≥ 2 \
                 (or a split with 1 ≤ r1 < r)",
                self.name()
            )));
        }
        Ok((r1, r2))
    }
}

impl std::str::FromStr for AbbaRankRule {
    type Err = AbbaError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "half" => Ok(AbbaRankRule::Half),
            "full" => Ok(AbbaRankRule::Full),
            _ => s
                .strip_prefix("split:")
                .and_then(|r| r.parse().ok())
                .map(|r1| AbbaRankRule::Split { r1 })
                .ok_or_else(|| AbbaError::UnknownName {
                    what: "ABBA rank rule",
                    name: s.into(),
                    valid: vec![
                        "half".into(),
                        "full".into(),
                        "split:R1 (e.g. split:12)".into(),
                    ],
                }),
        }
    }
}

/// A budget for one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "value")]
pub enum Budget {
    /// The parameters of a LoRA of this rank: r(m+n).
    LoraRank(usize),
    /// A number of trainable parameters; methods take the largest configuration that fits.
    Params(usize),
}

/// One method's resolved size.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "method")]
pub enum MethodConfig {
    Full,
    Lora { r: usize },
    Hira { r: usize },
    Abba { r1: usize, r2: usize },
    AbbaChain { ranks: Vec<usize> },
}

impl MethodConfig {
    pub fn kind(&self) -> MethodKind {
        match self {
            MethodConfig::Full => MethodKind::Full,
            MethodConfig::Lora { .. } => MethodKind::Lora,
            MethodConfig::Hira { .. } => MethodKind::Hira,
            MethodConfig::Abba { .. } => MethodKind::Abba,
            MethodConfig::AbbaChain { .. } => MethodKind::AbbaChain,
        }
    }

    /// Trainable parameters on an m×n layer.
    pub fn num_params(&self, (m, n): (usize, usize)) -> usize {
        match self {
            MethodConfig::Full => m * n,
            MethodConfig::Lora { r } | MethodConfig::Hira { r } => r * (m + n),
            MethodConfig::Abba { r1, r2 } => (r1 + r2) * (m + n),
            MethodConfig::AbbaChain { ranks } => ranks.iter().sum::<usize>() * (m + n),
        }
    }

    /// The largest rank ΔW can reach on an m×n layer (HiRA's bound needs rank(W0), taken as full here).
    pub fn max_rank(&self, (m, n): (usize, usize)) -> usize {
        let cap = m.min(n);
        match self {
            MethodConfig::Full => cap,
            MethodConfig::Lora { r } => (*r).min(cap),
            MethodConfig::Hira { r } => r.saturating_mul(cap).min(cap),
            MethodConfig::Abba { r1, r2 } => r1.saturating_mul(*r2).min(cap),
            MethodConfig::AbbaChain { ranks } => ranks
                .iter()
                .fold(1usize, |p, r| p.saturating_mul(*r))
                .min(cap),
        }
    }

    /// Every rank must be in 1..=min(m, n).
    pub fn validate(&self, (m, n): (usize, usize)) -> Result<()> {
        if m == 0 || n == 0 {
            return Err(AbbaError::EmptyMatrix { rows: m, cols: n });
        }
        let ranks: Vec<usize> = match self {
            MethodConfig::Full => vec![],
            MethodConfig::Lora { r } | MethodConfig::Hira { r } => vec![*r],
            MethodConfig::Abba { r1, r2 } => vec![*r1, *r2],
            MethodConfig::AbbaChain { ranks } if ranks.is_empty() => {
                return Err(AbbaError::InvalidArgument(
                    "an ABBA chain needs at least one rank".into(),
                ));
            }
            MethodConfig::AbbaChain { ranks } => ranks.clone(),
        };
        ranks
            .into_iter()
            .try_for_each(|r| crate::linalg::check_rank(r, (m, n)))
    }

    pub fn label(&self) -> String {
        match self {
            MethodConfig::Full => "full".into(),
            MethodConfig::Lora { r } => format!("lora r={r}"),
            MethodConfig::Hira { r } => format!("hira r={r}"),
            MethodConfig::Abba { r1, r2 } => format!("abba r1={r1} r2={r2}"),
            MethodConfig::AbbaChain { ranks } => format!(
                "abba-chain r={}",
                ranks
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join("x")
            ),
        }
    }
}

/// The LoRA rank a budget allows on an m×n layer.
pub fn lora_rank_for(budget: Budget, (m, n): (usize, usize)) -> Result<usize> {
    if m == 0 || n == 0 {
        return Err(AbbaError::EmptyMatrix { rows: m, cols: n });
    }
    let r = match budget {
        Budget::LoraRank(r) => r,
        Budget::Params(p) if p < m + n => {
            return Err(AbbaError::InfeasibleBudget {
                method: "lora".into(),
                params: p,
                rows: m,
                cols: n,
                needed: m + n,
            });
        }
        Budget::Params(p) => p / (m + n),
    };
    crate::linalg::check_rank(r, (m, n))?;
    Ok(r)
}

/// The configuration of `kind` that matches `budget` on an m×n layer (ABBA split by `rule`).
pub fn matched(
    kind: MethodKind,
    budget: Budget,
    rule: AbbaRankRule,
    shape: (usize, usize),
) -> Result<MethodConfig> {
    let (m, n) = shape;
    let config = match kind {
        MethodKind::Full => {
            if let Budget::Params(p) = budget
                && p < m * n
            {
                return Err(AbbaError::InfeasibleBudget {
                    method: "full".into(),
                    params: p,
                    rows: m,
                    cols: n,
                    needed: m * n,
                });
            }
            MethodConfig::Full
        }
        MethodKind::Lora => MethodConfig::Lora {
            r: lora_rank_for(budget, shape)?,
        },
        MethodKind::Hira => MethodConfig::Hira {
            r: lora_rank_for(budget, shape)?,
        },
        MethodKind::Abba => {
            let (r1, r2) = rule.ranks(lora_rank_for(budget, shape)?)?;
            MethodConfig::Abba { r1, r2 }
        }
        MethodKind::AbbaChain => {
            return Err(AbbaError::InvalidArgument(
                "ABBA chains have no single equal-budget split: give their ranks explicitly".into(),
            ));
        }
    };
    config.validate(shape)?;
    Ok(config)
}

/// Total trainable parameters of a configuration applied to many layers.
pub fn total_params(config: &MethodConfig, shapes: &[(usize, usize)]) -> usize {
    shapes.iter().map(|&s| config.num_params(s)).sum()
}
