//! Solvers that fit an adapter's ΔW to a target matrix: closed-form oracles, Adam, and alternating least
//! squares. All report a convergence curve (objective against step and seconds).

pub mod adam;
pub mod als;
pub mod kron_ls;
pub mod lora_pro;
pub mod oracle;
pub mod schedule;
pub mod start;
pub mod weighted_ls;

use ndarray::{Array2, ArrayView2};
use serde::{Deserialize, Serialize};

use crate::adapter::{Abba, Method, MethodKind};

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

    /// As [`Fitted::objective_and_grads`], reusing `ws`'s m×n buffers from step to step (fresh m×n allocations
    /// cost page faults that, on a small VM, took longer than the arithmetic).
    pub fn objective_and_grads_in(
        &self,
        target: ArrayView2<'_, T>,
        target_norm2: f64,
        ws: &mut Workspace<T>,
    ) -> (f64, Vec<Array2<T>>) {
        if let Fitted::Abba(a) = self {
            return abba_objective_and_grads(a, target, target_norm2, ws);
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

/// m×n scratch arrays reused across the steps of a fit.
#[derive(Default)]
pub struct Workspace<T> {
    p: Array2<T>,
    q: Array2<T>,
    gq: Array2<T>,
    gp: Array2<T>,
}

impl<T: Real> Workspace<T> {
    fn fit(&mut self, shape: (usize, usize)) {
        for buf in [&mut self.p, &mut self.q, &mut self.gq, &mut self.gp] {
            if buf.dim() != shape {
                *buf = Array2::zeros(shape);
            }
        }
    }
}

/// ABBA's hot path: P and Q into reused buffers, then one fused pass over (P, Q, T) for the objective and both
/// Hadamard-weighted gradients of ΔW, then four thin GEMMs.
fn abba_objective_and_grads<T: Real>(
    a: &Abba<T>,
    target: ArrayView2<'_, T>,
    target_norm2: f64,
    ws: &mut Workspace<T>,
) -> (f64, Vec<Array2<T>>) {
    use rayon::prelude::*;
    ws.fit(target.dim());
    crate::linalg::gemm_into(ws.p.view_mut(), false, a.b1.view(), a.a1.view(), T::one());
    crate::linalg::gemm_into(ws.q.view_mut(), false, a.b2.view(), a.a2.view(), T::one());
    let target = target.as_standard_layout();
    let (s, c) = (a.scale, T::of(2.0 / target_norm2) * a.scale);
    let n = target.ncols().max(1);
    let contiguous = "workspace buffers are contiguous";
    let (ps, qs) = (
        ws.p.as_slice().expect(contiguous),
        ws.q.as_slice().expect(contiguous),
    );
    let ts = target.as_slice().expect("standard layout");
    // Rows in parallel, each row's squared residual summed on its own (in f64), then the row sums added in
    // order: the objective does not depend on the thread count.
    let row_sums: Vec<f64> = ws
        .gq
        .as_slice_mut()
        .expect(contiguous)
        .par_chunks_mut(n)
        .zip(ws.gp.as_slice_mut().expect(contiguous).par_chunks_mut(n))
        .zip(ps.par_chunks(n).zip(qs.par_chunks(n)).zip(ts.par_chunks(n)))
        .map(|((gq, gp), ((p, q), t))| {
            let mut acc = 0.0f64;
            for k in 0..gq.len() {
                let r = s * p[k] * q[k] - t[k];
                acc += (r * r).f64();
                let g = c * r;
                gq[k] = g * q[k];
                gp[k] = g * p[k];
            }
            acc
        })
        .collect();
    let sum: f64 = row_sums.iter().sum();
    let (gq, gp) = (&ws.gq, &ws.gp);
    let grads = vec![
        crate::linalg::gemm(gq.view(), a.a1.t()),
        crate::linalg::gemm(a.b1.t(), gq.view()),
        crate::linalg::gemm(gp.view(), a.a2.t()),
        crate::linalg::gemm(a.b2.t(), gp.view()),
    ];
    (sum / target_norm2, grads)
}

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
