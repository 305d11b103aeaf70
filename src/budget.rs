//! Equal-budget configurations: given a layer shape and a budget, the matching configuration of every method.

use serde::{Deserialize, Serialize};

use crate::adapter::{AbbaSpec, HiraSpec, LoraSpec, Method, MethodKind};
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

/// The configuration of `kind` (with its default hyper-parameters) that matches `budget` on an m×n layer (ABBA
/// split by `rule`).
pub fn matched(
    kind: MethodKind,
    budget: Budget,
    rule: AbbaRankRule,
    shape: (usize, usize),
) -> Result<Method> {
    sized(&kind.template(), budget, rule, shape)
}

/// `template` with the size that matches `budget` on an m×n layer (ABBA split by `rule`); its hyper-parameters
/// are kept.
pub fn sized(
    template: &Method,
    budget: Budget,
    rule: AbbaRankRule,
    shape: (usize, usize),
) -> Result<Method> {
    let (m, n) = shape;
    let config = match template {
        Method::Full => {
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
            Method::Full
        }
        Method::Lora(s) => Method::Lora(LoraSpec {
            r: lora_rank_for(budget, shape)?,
            ..*s
        }),
        Method::Hira(s) => Method::Hira(HiraSpec {
            r: lora_rank_for(budget, shape)?,
            ..*s
        }),
        Method::Abba(s) => {
            let (r1, r2) = rule.ranks(lora_rank_for(budget, shape)?)?;
            Method::Abba(AbbaSpec { r1, r2, ..*s })
        }
        Method::AbbaChain(_) => {
            return Err(AbbaError::InvalidArgument(
                "ABBA chains have no single equal-budget split: give their ranks explicitly".into(),
            ));
        }
    };
    config.validate(shape)?;
    Ok(config)
}

/// Total trainable parameters of a configuration applied to many layers.
pub fn total_params(config: &Method, shapes: &[(usize, usize)]) -> usize {
    shapes.iter().map(|&s| config.num_params(s)).sum()
}
