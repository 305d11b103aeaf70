//! Equal-budget configurations: given a layer shape and a budget, the matching configuration of every method.

use serde::{Deserialize, Serialize};

use crate::adapter::{
    AbbaSpec, DoraSpec, HiraSpec, LokrSpec, LoraSpec, Method, MethodKind, MoraSpec, MoraType,
};
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

/// How far (relative) a method's parameter count may fall from the budget it is matched to. Methods whose sizes
/// are discrete (LoKr, KronA, MoRA, KRAdapter, DoRA's extra magnitude) take the size nearest the budget inside
/// this window; outside it the budget is unreachable and the error lists the nearest sizes.
pub const BUDGET_TOLERANCE: f64 = 0.10;

/// `template` with the size that matches `budget` on an m×n layer (ABBA split by `rule`); its hyper-parameters
/// are kept. LoRA-shaped methods (LoRA, HiRA, ABBA) match exactly; the others take the size whose count is
/// nearest the budget within [`BUDGET_TOLERANCE`] (ties to the smaller), so `num_params` of the result is the
/// achieved count to print beside the target.
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
        Method::Dora(s) => nearest(
            template,
            target(budget, shape),
            shape,
            |r| Method::Dora(DoraSpec { r, ..*s }),
            1..=m.min(n),
        )?,
        Method::Lokr(s) if s.krona => krona_sized(s, target(budget, shape), shape)?,
        Method::Lokr(s) => {
            // Every rank of each factor split (the spec's; with factor −1 also every power of two that divides m,
            // since budgets need bigger blocks than the nearest-√m split allows): low-rank W2 below
            // r = max(P, Q)/2, full at and beyond it.
            let factors: Vec<i64> = if s.factor == -1 {
                std::iter::once(-1)
                    .chain(
                        (1..=10)
                            .map(|k| 1i64 << k)
                            .filter(|f| m.is_multiple_of(*f as usize)),
                    )
                    .collect()
            } else {
                vec![s.factor]
            };
            let mut grid = Vec::new();
            for &factor in &factors {
                let l = LokrSpec { factor, ..*s }.layout(shape);
                for r in 1..=l.p.max(l.q).div_ceil(2).max(1) {
                    grid.push((factor, r));
                }
            }
            nearest(
                template,
                target(budget, shape),
                shape,
                |i| {
                    let (factor, r) = grid[i];
                    Method::Lokr(LokrSpec { factor, r, ..*s })
                },
                0..grid.len(),
            )?
        }
        Method::Mora(s) => {
            // r̂² parameters: the candidates around √budget (even ones for type 6).
            let t = target(budget, shape);
            let step = if s.kind == MoraType::Rotated { 2 } else { 1 };
            let root = (t as f64).sqrt() as usize / step;
            nearest(
                template,
                t,
                shape,
                |k| {
                    Method::Mora(MoraSpec {
                        r_hat: k * step,
                        ..*s
                    })
                },
                root.saturating_sub(2).max(1)..=root + 2,
            )?
        }
        Method::Kradapter(_) => nearest(
            template,
            target(budget, shape),
            shape,
            |_| template.clone(),
            0..=0,
        )?,
    };
    config.validate(shape)?;
    Ok(config)
}

/// A budget as a parameter count on an m×n layer.
fn target(budget: Budget, (m, n): (usize, usize)) -> usize {
    match budget {
        Budget::LoraRank(r) => r * (m + n),
        Budget::Params(p) => p,
    }
}

/// The size of `make(k)`, over `ks`, whose count is nearest `target` within the tolerance (ties: fewer
/// parameters); otherwise an error naming the nearest sizes below and above.
fn nearest(
    template: &Method,
    target: usize,
    shape: (usize, usize),
    make: impl Fn(usize) -> Method,
    ks: impl Iterator<Item = usize>,
) -> Result<Method> {
    let candidates: Vec<(usize, Method)> = ks
        .map(&make)
        .filter(|c| c.validate(shape).is_ok())
        .map(|c| (c.num_params(shape), c))
        .collect();
    let gap = |p: usize| p.abs_diff(target);
    let best = candidates
        .iter()
        .min_by_key(|(p, _)| (gap(*p), *p))
        .filter(|(p, _)| gap(*p) as f64 <= BUDGET_TOLERANCE * target as f64);
    if let Some((_, c)) = best {
        return Ok(c.clone());
    }
    let below = candidates
        .iter()
        .filter(|(p, _)| *p <= target)
        .max_by_key(|(p, _)| *p);
    let above = candidates
        .iter()
        .filter(|(p, _)| *p > target)
        .min_by_key(|(p, _)| *p);
    Err(AbbaError::UnreachableBudget {
        method: template.name().into(),
        target,
        rows: shape.0,
        cols: shape.1,
        tolerance_pct: (BUDGET_TOLERANCE * 100.0).round() as usize,
        nearest: below
            .into_iter()
            .chain(above)
            .map(|(p, c)| (*p, c.label()))
            .collect(),
    })
}

/// KronA: both factors full, so the size is set by the split alone: every outer factor f that divides both m and
/// n (f_out = f_in = f), nearest the budget.
fn krona_sized(s: &LokrSpec, target: usize, shape: (usize, usize)) -> Result<Method> {
    let (m, n) = shape;
    let divisors: Vec<usize> = (1..=m.min(n))
        .filter(|f| m.is_multiple_of(*f) && n.is_multiple_of(*f))
        .collect();
    let template = Method::Lokr(*s);
    nearest(
        &template,
        target,
        shape,
        |i| {
            Method::Lokr(LokrSpec {
                factor: divisors[i] as i64,
                ..*s
            })
        },
        0..divisors.len(),
    )
}

/// Total trainable parameters of a configuration applied to many layers.
pub fn total_params(config: &Method, shapes: &[(usize, usize)]) -> usize {
    shapes.iter().map(|&s| config.num_params(s)).sum()
}
