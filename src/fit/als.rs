//! Alternating least squares: each factor in turn is set to the exact minimiser of
//!
//! ```text
//! J(θ) = ‖T − ΔW(θ)‖²_F / ‖T‖²_F + λ·Σ‖factor‖²_F
//! ```
//!
//! with the others fixed, so J never increases from one update to the next. ABBA's four factors, a chain's pairs,
//! HiRA's two (weights W0) and LoRA's two are all row-wise weighted ridge problems ([`super::weighted_ls`]);
//! LoKr, KronA and KRAdapter have their own exact updates ([`super::kron_ls`]).

use ndarray::{Array2, ArrayView2};
use serde::{Deserialize, Serialize};

use super::weighted_ls::{Scratch, Weights, solve_rows_with};
use super::{CurveRecorder, FitOutcome, Fitted, Stop, Workspace, diverged};
use crate::error::{AbbaError, Result};
use crate::linalg::{Real, frob2, gemm};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlsSpec {
    /// Maximum number of sweeps (one sweep updates every factor once).
    pub sweeps: usize,
    /// λ in J: a ridge on every factor, relative to the normalised objective.
    pub ridge: f64,
    /// Stop when J improved by less than `plateau_tol` (relative) over `patience` sweeps; 0 = never.
    pub patience: usize,
    pub plateau_tol: f64,
    /// Stop once the objective is below this.
    pub target_objective: f64,
}

impl Default for AlsSpec {
    fn default() -> Self {
        AlsSpec {
            sweeps: 200,
            ridge: 1e-8,
            patience: 20,
            plateau_tol: 1e-5,
            target_objective: 0.0,
        }
    }
}

/// J(θ): the normalised error plus the ridge term.
pub fn regularised_objective<T: Real>(
    fitted: &Fitted<T>,
    target: ArrayView2<'_, T>,
    target_norm2: f64,
    ridge: f64,
) -> f64 {
    regularised_objective_in(
        fitted,
        target,
        target_norm2,
        ridge,
        &mut Workspace::default(),
    )
}

fn regularised_objective_in<T: Real>(
    fitted: &Fitted<T>,
    target: ArrayView2<'_, T>,
    target_norm2: f64,
    ridge: f64,
    ws: &mut Workspace<T>,
) -> f64 {
    let error = fitted.objective_in(target, target_norm2, ws);
    let penalty: f64 = fitted
        .as_adapter()
        .factors()
        .iter()
        .map(|f| frob2(f.view()))
        .sum();
    error + ridge * penalty
}

fn scaled<T: Real>(a: &Array2<T>, s: T) -> Array2<T> {
    a * s
}

/// Weights (b·a)·s, formed a tile at a time.
fn product<'a, T: Real>(b: &'a Array2<T>, a: &'a Array2<T>, scale: T) -> Weights<'a, T> {
    Weights::Product {
        b: b.view(),
        a: a.view(),
        scale,
    }
}

/// The transposed weights ((b·a)·s)ᵀ = (aᵀ·bᵀ)·s, for a column solve.
fn product_t<'a, T: Real>(b: &'a Array2<T>, a: &'a Array2<T>, scale: T) -> Weights<'a, T> {
    Weights::Product {
        b: a.t(),
        a: b.t(),
        scale,
    }
}

/// Buffers for the row solves (B factors), the column solves (A factors) and the objective, kept across sweeps.
#[derive(Default)]
pub struct AlsScratch<T> {
    rows: Scratch<T>,
    cols: Scratch<T>,
    objective: Workspace<T>,
}

/// One sweep: every factor once, in order.
pub fn sweep<T: Real>(
    fitted: &mut Fitted<T>,
    target: ArrayView2<'_, T>,
    target_norm2: f64,
    ridge: f64,
) -> Result<()> {
    sweep_with(
        &mut AlsScratch::default(),
        fitted,
        target,
        target_norm2,
        ridge,
    )
}

/// As [`sweep`], reusing `scratch` between sweeps.
pub fn sweep_with<T: Real>(
    scratch: &mut AlsScratch<T>,
    fitted: &mut Fitted<T>,
    target: ArrayView2<'_, T>,
    target_norm2: f64,
    ridge: f64,
) -> Result<()> {
    // The solver works on the unnormalised residual, so the ridge scales by ‖T‖².
    let lambda = ridge * target_norm2;
    let AlsScratch { rows, cols, .. } = scratch;
    match fitted {
        Fitted::Lora(l) => {
            l.b = solve_rows_with(
                rows,
                target,
                Weights::Ones,
                scaled(&l.a, l.scale).view(),
                lambda,
            )?;
            l.a = solve_rows_with(
                cols,
                target.t(),
                Weights::Ones,
                scaled(&l.b, l.scale).t(),
                lambda,
            )?
            .reversed_axes();
        }
        Fitted::Hira(h) => {
            let w0 = Weights::Dense(h.w0.view());
            h.b = solve_rows_with(rows, target, w0, h.a.view(), lambda)?;
            let w0t = Weights::Dense(h.w0.t());
            h.a = solve_rows_with(cols, target.t(), w0t, h.b.t(), lambda)?.reversed_axes();
        }
        Fitted::Abba(a) => {
            // The weights of one pair's problems are the other pair's product s·B·A, formed a tile at a time; a
            // column solve takes its transpose s·Aᵀ·Bᵀ.
            let s = a.scale;
            a.b1 = solve_rows_with(rows, target, product(&a.b2, &a.a2, s), a.a1.view(), lambda)?;
            a.a1 = solve_rows_with(
                cols,
                target.t(),
                product_t(&a.b2, &a.a2, s),
                a.b1.t(),
                lambda,
            )?
            .reversed_axes();
            a.b2 = solve_rows_with(rows, target, product(&a.b1, &a.a1, s), a.a2.view(), lambda)?;
            a.a2 = solve_rows_with(
                cols,
                target.t(),
                product_t(&a.b1, &a.a1, s),
                a.b2.t(),
                lambda,
            )?
            .reversed_axes();
        }
        Fitted::Chain(c) => {
            // Each pair in turn is ABBA's weighted problem, the weights s·Π_{j≠i} B_j·A_j.
            for i in 0..c.pairs.len() {
                let mut w = Array2::from_elem(target.dim(), c.scale);
                for (j, (b, a)) in c.pairs.iter().enumerate() {
                    if j != i {
                        w *= &gemm(b.view(), a.view());
                    }
                }
                let (b, a) = &mut c.pairs[i];
                *b = solve_rows_with(rows, target, Weights::Dense(w.view()), a.view(), lambda)?;
                *a = solve_rows_with(cols, target.t(), Weights::Dense(w.t()), b.t(), lambda)?
                    .reversed_axes();
            }
        }
        Fitted::Lokr(l) => super::kron_ls::lokr_sweep(l, target, lambda)?,
        Fitted::Kradapter(k) => super::kron_ls::kradapter_sweep(k, target, lambda)?,
        Fitted::Full(_) | Fitted::Dora(_) | Fitted::Mora(_) => {
            return Err(AbbaError::InvalidArgument(
                "ALS fits lora, hira, abba, abba chains, lokr/krona and kradapter; use the svd (closed-form) solver for full and mora, and adam for dora".into(),
            ));
        }
    }
    Ok(())
}

pub fn run<T: Real>(
    fitted: &mut Fitted<T>,
    target: ArrayView2<'_, T>,
    target_norm2: f64,
    spec: &AlsSpec,
) -> Result<FitOutcome> {
    let mut curve = CurveRecorder::new();
    let mut scratch = AlsScratch::default();
    let error = |f: &Fitted<T>, ws: &mut Workspace<T>| f.objective_in(target, target_norm2, ws);
    let initial = error(fitted, &mut scratch.objective);
    curve.push(0, initial);
    let mut j_at_check = regularised_objective_in(
        fitted,
        target,
        target_norm2,
        spec.ridge,
        &mut scratch.objective,
    );
    for k in 1..=spec.sweeps {
        if let Err(e) = sweep_with(&mut scratch, fitted, target, target_norm2, spec.ridge) {
            return Ok(FitOutcome {
                stop: Stop::Diverged,
                steps: k,
                curve: curve.finish(k, f64::NAN),
                reason: e.to_string(),
            });
        }
        let objective = error(fitted, &mut scratch.objective);
        curve.observe(k, objective);
        if let Some(reason) = diverged(objective, initial) {
            return Ok(FitOutcome {
                stop: Stop::Diverged,
                steps: k,
                curve: curve.finish(k, objective),
                reason,
            });
        }
        if objective < spec.target_objective {
            return Ok(FitOutcome {
                stop: Stop::Converged,
                steps: k,
                curve: curve.finish(k, objective),
                reason: String::new(),
            });
        }
        if spec.patience > 0 && k % spec.patience == 0 {
            let j = regularised_objective_in(
                fitted,
                target,
                target_norm2,
                spec.ridge,
                &mut scratch.objective,
            );
            if j_at_check - j < spec.plateau_tol * j_at_check {
                return Ok(FitOutcome {
                    stop: Stop::Plateau,
                    steps: k,
                    curve: curve.finish(k, objective),
                    reason: String::new(),
                });
            }
            j_at_check = j;
        }
    }
    let objective = error(fitted, &mut scratch.objective);
    Ok(FitOutcome {
        stop: Stop::MaxSteps,
        steps: spec.sweeps,
        curve: curve.finish(spec.sweeps, objective),
        reason: String::new(),
    })
}
