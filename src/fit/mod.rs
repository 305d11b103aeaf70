//! Solvers that fit an adapter's ΔW to a target matrix: closed-form oracles, Adam, and alternating least
//! squares. All report a convergence curve (objective against step and seconds).

pub mod adam;
pub mod als;
pub mod oracle;
pub mod schedule;
pub mod start;
pub mod weighted_ls;

use ndarray::{Array2, ArrayView2};
use serde::{Deserialize, Serialize};

use crate::adapter::{Abba, Adapter, Full, Hira, Lora, MethodKind};
use crate::linalg::Real;
use crate::study::record::CurvePoint;

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
}

impl SolverSpec {
    pub const KINDS: [&'static str; 3] = ["svd", "als", "adam"];

    pub fn name(&self) -> &'static str {
        match self {
            SolverSpec::Svd => "svd",
            SolverSpec::Als(_) => "als",
            SolverSpec::Adam(_) => "adam",
        }
    }

    /// Whether this solver can fit `kind`.
    pub fn supports(&self, kind: MethodKind) -> bool {
        match self {
            SolverSpec::Svd => matches!(kind, MethodKind::Lora | MethodKind::Full),
            SolverSpec::Als(_) => {
                matches!(kind, MethodKind::Lora | MethodKind::Hira | MethodKind::Abba)
            }
            SolverSpec::Adam(_) => true,
        }
    }
}

/// The adapter being fitted, by family (ALS needs to know which).
#[derive(Clone, Debug)]
pub enum Fitted<T> {
    Full(Full<T>),
    Lora(Lora<T>),
    Hira(Hira<T>),
    Abba(Abba<T>),
    Chain(crate::adapter::AbbaChain<T>),
}

impl<T: Real> Fitted<T> {
    pub fn as_adapter(&self) -> &dyn Adapter<T> {
        match self {
            Fitted::Full(a) => a,
            Fitted::Lora(a) => a,
            Fitted::Hira(a) => a,
            Fitted::Abba(a) => a,
            Fitted::Chain(a) => a,
        }
    }
    pub fn as_adapter_mut(&mut self) -> &mut dyn Adapter<T> {
        match self {
            Fitted::Full(a) => a,
            Fitted::Lora(a) => a,
            Fitted::Hira(a) => a,
            Fitted::Abba(a) => a,
            Fitted::Chain(a) => a,
        }
    }

    /// The normalised objective ‖ΔW − T‖²/‖T‖² and its factor gradients.
    pub fn objective_and_grads(
        &self,
        target: ArrayView2<'_, T>,
        target_norm2: f64,
    ) -> (f64, Vec<Array2<T>>) {
        if let Fitted::Abba(a) = self {
            return abba_objective_and_grads(a, target, target_norm2);
        }
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
}

/// ABBA's hot path: one fused pass over (P, Q, T) gives the objective and both Hadamard-weighted gradients of ΔW,
/// so a step costs the six GEMMs and a single sweep over the m×n arrays.
fn abba_objective_and_grads<T: Real>(
    a: &Abba<T>,
    target: ArrayView2<'_, T>,
    target_norm2: f64,
) -> (f64, Vec<Array2<T>>) {
    let (p, q) = a.pair_products();
    let s = a.scale;
    let c = T::of(2.0 / target_norm2) * s;
    let mut gq = Array2::<T>::zeros(p.raw_dim());
    let mut gp = Array2::<T>::zeros(p.raw_dim());
    let mut sum = 0.0f64;
    ndarray::Zip::from(&mut gq)
        .and(&mut gp)
        .and(&p)
        .and(&q)
        .and(&target)
        .for_each(|gq, gp, &p, &q, &t| {
            let r = s * p * q - t;
            sum += r.f64() * r.f64();
            let g = c * r;
            *gq = g * q;
            *gp = g * p;
        });
    let grads = vec![
        crate::linalg::gemm(gq.view(), a.a1.t()),
        crate::linalg::gemm(a.b1.t(), gq.view()),
        crate::linalg::gemm(gp.view(), a.a2.t()),
        crate::linalg::gemm(a.b2.t(), gp.view()),
    ];
    (sum / target_norm2, grads)
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
