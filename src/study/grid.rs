//! Expanding a study into fully resolved run configurations, each identified by a hash of itself.

use serde::Serialize;

use super::spec::{Dtype, StudySpec};
use crate::adapter::scaling::{AbbaScale, LoraScale};
use crate::adapter::{ChainSpec, Method, MethodKind};
use crate::budget::{Budget, lora_rank_for, sized};
use crate::error::{AbbaError, Result};
use crate::fit::SolverSpec;
use crate::fit::start::FitInit;
use crate::target::TargetSpec;

/// Everything that determines a run's numbers. Its JSON is hashed into the run id.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunConfig {
    pub target: TargetSpec,
    pub rows: usize,
    pub cols: usize,
    pub w0: Option<TargetSpec>,
    /// The method, sized; its scale is recorded in `abba_scale` / `lora_scale`, as it always was.
    #[serde(serialize_with = "sizes_only")]
    pub method: Method,
    /// The ABBA rule that produced `method`, if any.
    pub rule: Option<String>,
    pub budget_rank: usize,
    pub solver: SolverSpec,
    pub init: FitInit,
    pub seed: u64,
    pub dtype: Dtype,
    pub abba_scale: AbbaScale,
    pub lora_scale: LoraScale,
    /// Why this method cannot be sized to this budget (the run is recorded as failed with this reason).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreachable: Option<String>,
}

fn sizes_only<S: serde::Serializer>(m: &Method, s: S) -> Result<S::Ok, S::Error> {
    m.sizes_json().serialize(s)
}

impl RunConfig {
    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("a run configuration always serialises")
    }

    /// What the fit depends on: the configuration without the labels the grid gave it (the rule and budget that
    /// sized the method). Runs with the same key compute the same numbers, e.g. ABBA `full` at budget r and `half`
    /// at budget 2r are both r1 = r2 = r; the runner fits such a group once.
    pub fn fit_key(&self) -> String {
        RunConfig {
            rule: None,
            budget_rank: 0,
            ..self.clone()
        }
        .json()
    }

    /// 64-bit FNV-1a of the JSON, as 16 hex digits: stable across versions, platforms and runs.
    pub fn id(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.json().bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("{h:016x}")
    }
}

/// All runs of a study, in a fixed order (targets, seeds, budgets, methods, rules, solvers).
pub fn expand(spec: &StudySpec) -> Result<Vec<RunConfig>> {
    let budgets: Vec<Budget> = if spec.params.is_empty() {
        spec.ranks.iter().map(|&r| Budget::LoraRank(r)).collect()
    } else {
        spec.params.iter().map(|&p| Budget::Params(p)).collect()
    };
    let rules = spec.rules()?;
    let templates = spec.templates()?;
    let mut runs = Vec::new();
    for target in &spec.concrete_targets()? {
        // Loaded targets bring their own shape; budgets are resolved against it.
        let shape = match target.loaded_shape()? {
            Some(shape) => shape,
            None => spec.generated_shape()?,
        };
        // A target with its own base weight ignores the study's (and its id does not depend on it).
        let w0 = if target.has_own_w0() {
            None
        } else {
            spec.w0.clone()
        };
        for &seed in &spec.seeds {
            let mut push = |method: Method,
                            rule: Option<String>,
                            budget_rank: usize,
                            unreachable: Option<String>| {
                let kind = method.kind();
                let (abba_scale, lora_scale) = recorded_scales(&method, spec);
                for entry in &spec.solvers {
                    let allowed = entry.methods.as_ref().is_none_or(|m| m.contains(&kind));
                    if allowed && entry.solver.supports(&method) {
                        runs.push(RunConfig {
                            target: target.clone(),
                            rows: shape.0,
                            cols: shape.1,
                            w0: w0.clone(),
                            method: method.clone(),
                            rule: rule.clone(),
                            budget_rank,
                            solver: entry.solver.clone(),
                            init: entry.init.clone().unwrap_or_else(|| spec.init.clone()),
                            seed,
                            dtype: spec.dtype,
                            abba_scale,
                            lora_scale,
                            unreachable: unreachable.clone(),
                        });
                    }
                }
            };
            for &budget in &budgets {
                let r = lora_rank_for(budget, shape)?;
                for template in &templates {
                    match template.kind() {
                        MethodKind::Abba => {
                            for rule in &rules {
                                push(
                                    sized(template, budget, *rule, shape)?,
                                    Some(rule.name()),
                                    r,
                                    None,
                                );
                            }
                        }
                        // Chains have no equal-budget split: they come from `chains` (or their own ranks).
                        MethodKind::AbbaChain => {}
                        // A budget the method's discrete sizes cannot reach is a failed run, not a failed study.
                        _ => match sized(template, budget, rules[0], shape) {
                            Ok(method) => push(method, None, r, None),
                            Err(e @ AbbaError::UnreachableBudget { .. }) => {
                                push(template.clone(), None, r, Some(e.to_string()))
                            }
                            Err(e) => return Err(e),
                        },
                    }
                }
            }
            let chains = spec.chains.iter().map(|ranks| {
                Method::AbbaChain(ChainSpec {
                    ranks: ranks.clone(),
                    scale: spec.abba_scale,
                })
            });
            let listed = templates
                .iter()
                .filter(|t| matches!(t, Method::AbbaChain(c) if !c.ranks.is_empty()))
                .cloned();
            for method in chains.chain(listed) {
                method.validate(shape)?;
                let budget_rank = method.ranks().iter().sum();
                push(method, None, budget_rank, None);
            }
        }
    }
    Ok(runs)
}

/// The scales a run records: its method's own, and the study's for the family it does not belong to.
fn recorded_scales(method: &Method, spec: &StudySpec) -> (AbbaScale, LoraScale) {
    match method {
        Method::Abba(s) => (s.scale, spec.lora_scale),
        Method::AbbaChain(s) => (s.scale, spec.lora_scale),
        Method::Lora(s) => (spec.abba_scale, s.scale),
        Method::Dora(s) => (spec.abba_scale, s.scale),
        Method::Full
        | Method::Hira(_)
        | Method::Lokr(_)
        | Method::Mora(_)
        | Method::Kradapter(_) => (spec.abba_scale, spec.lora_scale),
    }
}

/// Shard `k` of `n` (0-based): every n-th run starting at k, so shards stay balanced across the grid.
pub fn shard(runs: Vec<RunConfig>, k: usize, n: usize) -> Vec<RunConfig> {
    runs.into_iter()
        .enumerate()
        .filter(|(i, _)| i % n == k)
        .map(|(_, r)| r)
        .collect()
}
