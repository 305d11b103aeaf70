//! Solvers that fit an adapter's ΔW to a target matrix: closed-form oracles, Adam, and alternating least
//! squares. All report a convergence curve (objective against step and seconds).

pub mod adam;
pub mod als;
pub mod fused;
pub mod kron_ls;
pub mod lora_pro;
pub mod oracle;
pub mod schedule;
pub mod start;
pub mod weighted_ls;

use ndarray::{Array2, ArrayView2};
use serde::{Deserialize, Serialize};

use crate::adapter::{Method, MethodKind};

/// The adapter being fitted: the crate's one enum of adapter instances, under the name the fitters use.
pub use crate::adapter::AnyAdapter as Fitted;
use crate::linalg::Real;

pub use adam::AdamSpec;
pub use als::AlsSpec;

/// A solver and its settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SolverSpec {
    /// Closed form: truncated SVD (Eckart–Young) for LoRA, the target itself for full.
    Svd,
    Als(AlsSpec),
    Adam(AdamSpec),
    /// LoRA-Pro: adjusted gradients, Adam moments on the m×n equivalent gradient (LoRA only).
    LoraPro(lora_pro::LoraProSpec),
}

impl SolverSpec {
    pub fn name(&self) -> &'static str {
        match self {
            SolverSpec::Svd => "svd",
            SolverSpec::Als(_) => "als",
            SolverSpec::Adam(_) => "adam",
            SolverSpec::LoraPro(_) => "lora-pro",
        }
    }

    /// Whether this solver can fit `method`: closed forms for LoRA (Eckart–Young, also PiSSA/OLoRA against their
    /// shifted target), full, KronA (the nearest Kronecker product) and MoRA (least squares); ALS for the
    /// multilinear methods; Adam for all.
    pub fn supports(&self, method: &Method) -> bool {
        match self {
            SolverSpec::Svd => match method {
                Method::Lora(_) | Method::Full | Method::Mora(_) => true,
                Method::Lokr(s) => s.krona,
                _ => false,
            },
            SolverSpec::Als(_) => matches!(
                method.kind(),
                MethodKind::Lora
                    | MethodKind::Hira
                    | MethodKind::Abba
                    | MethodKind::AbbaChain
                    | MethodKind::Lokr
                    | MethodKind::Kradapter
            ),
            SolverSpec::Adam(_) => true,
            SolverSpec::LoraPro(_) => {
                matches!(method, Method::Lora(s) if !s.init.changes_base())
            }
        }
    }
}

impl<T: Real> Fitted<T> {
    /// The normalised objective ‖ΔW − T‖²/‖T‖² and its factor gradients.
    pub fn objective_and_grads(
        &self,
        target: ArrayView2<'_, T>,
        target_norm2: f64,
    ) -> (f64, Vec<Array2<T>>) {
        self.objective_and_grads_in(target, target_norm2, &mut Workspace::default())
    }

    /// As [`Fitted::objective_and_grads`], reusing `ws`'s buffers from step to step. LoRA, HiRA, ABBA and chains
    /// go through the fused kernels ([`fused`]: ΔW, residual and cofactors a block of rows at a time, on
    /// [`fused::threads`] threads, results independent of the thread count); full through the unfused maths.
    pub fn objective_and_grads_in(
        &self,
        target: ArrayView2<'_, T>,
        target_norm2: f64,
        ws: &mut Workspace<T>,
    ) -> (f64, Vec<Array2<T>>) {
        fused::objective_and_grads(
            self,
            target,
            target_norm2,
            ws,
            fused::Tiling::default(),
            fused::threads(),
        )
        .unwrap_or_else(|| self.objective_and_grads_unfused(target, target_norm2))
    }

    /// The reference the fused kernels are tested against: ΔW formed whole, the residual, then the adapter's own
    /// gradient of ⟨G, ΔW⟩.
    pub fn objective_and_grads_unfused(
        &self,
        target: ArrayView2<'_, T>,
        target_norm2: f64,
    ) -> (f64, Vec<Array2<T>>) {
        let adapter = self.as_adapter();
        let residual = adapter.delta() - target;
        let objective = crate::linalg::frob2(residual.view()) / target_norm2;
        let g = residual * T::of(2.0 / target_norm2);
        (
            objective,
            adapter
                .grads(g.view())
                .expect("shapes are consistent by construction"),
        )
    }

    /// The normalised objective alone, through the fused kernels where there is one.
    pub fn objective_in(
        &self,
        target: ArrayView2<'_, T>,
        target_norm2: f64,
        ws: &mut Workspace<T>,
    ) -> f64 {
        fused::objective(
            self,
            target,
            target_norm2,
            ws,
            fused::Tiling::default(),
            fused::threads(),
        )
        .unwrap_or_else(|| {
            crate::linalg::frob2((self.as_adapter().delta() - target).view()) / target_norm2
        })
    }
}

/// Buffers reused across the steps of a fit.
pub use fused::Workspace;

/// A point of a convergence curve.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub step: usize,
    pub seconds: f64,
    /// The normalised squared error at this step.
    pub objective: f64,
}

/// How a fit ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stop {
    /// Closed form: nothing to iterate.
    Exact,
    /// Reached the step or sweep limit.
    MaxSteps,
    /// Improvement over the patience window fell below the tolerance.
    Plateau,
    /// Reached the target objective.
    Converged,
    /// The objective became non-finite or exploded.
    Diverged,
}

/// The result of a fit.
#[derive(Clone, Debug)]
pub struct FitOutcome {
    pub stop: Stop,
    pub steps: usize,
    pub curve: Vec<CurvePoint>,
    /// Why it diverged, if it did.
    pub reason: String,
}

/// Records curve points on a roughly log-spaced grid of steps, plus the last one.
pub(crate) struct CurveRecorder {
    start: std::time::Instant,
    points: Vec<CurvePoint>,
    next: usize,
}

impl CurveRecorder {
    pub fn new() -> Self {
        CurveRecorder {
            start: std::time::Instant::now(),
            points: Vec::new(),
            next: 0,
        }
    }

    pub fn observe(&mut self, step: usize, objective: f64) {
        if step >= self.next {
            self.push(step, objective);
            self.next = (step + 1).max(step + step / 20);
        }
    }

    pub fn push(&mut self, step: usize, objective: f64) {
        if self.points.last().is_some_and(|p| p.step == step) {
            return;
        }
        self.points.push(CurvePoint {
            step,
            seconds: self.start.elapsed().as_secs_f64(),
            objective,
        });
    }

    pub fn finish(mut self, step: usize, objective: f64) -> Vec<CurvePoint> {
        self.push(step, objective);
        self.points
    }
}

/// Whether an objective means the fit has blown up (relative to where it started).
pub(crate) fn diverged(objective: f64, initial: f64) -> Option<String> {
    if !objective.is_finite() {
        Some(format!("objective became {objective}"))
    } else if objective > 1e4 * initial.max(1.0) {
        Some(format!(
            "objective {objective:.3e} exceeded 10⁴× its start {initial:.3e}"
        ))
    } else {
        None
    }
}
