//! LoRA-Pro (Wang et al. 2024) as its official code runs it (`DeepSpeedZeroOptimizer.lorapro_full_adjustment`):
//! a LoRA whose factor gradients are adjusted so that the low-rank update follows Adam on the full m×n
//! "equivalent gradient", with full m×n Adam moments.
//!
//! With raw gradients g_A = s·Bᵀ·G, g_B = s·G·Aᵀ, P_B = pinv(BᵀB + 10⁻⁸I), P_A = pinv(AAᵀ + 10⁻⁸I):
//!
//! ```text
//! G̃ = s·B·(P_B g_A / s²) + s·((I − B P_B Bᵀ) g_B P_A / s²)·A      equivalent gradient (m×n)
//! m, v ← Adam moments of G̃;  g = m̂ / (√v̂ + ε)                    full m×n state: 2mn floats per layer
//! g_A' = s·Bᵀ·g,  g_B' = s·g·Aᵀ
//! X solves BᵀB·X + X·AAᵀ = −P_B g_A' Aᵀ / s²
//! A ← A − lr·(P_B g_A' / s² + X·A),  B ← B − lr·((I − B P_B Bᵀ) g_B' P_A / s² − B·X)
//! ```
//!
//! Two quirks of the official code are not copied: its bias correction uses t + 1 (so its first step is ±0.744
//! rather than ±1) and it squares bf16-rounded G̃ in the second moment; `bias_offset = 1` reproduces the first
//! (the test against the official first step uses it).

use ndarray::{Array2, ArrayView2, Zip};
use serde::{Deserialize, Serialize};

use super::adam::AdamSpec;
use super::{CurveRecorder, FitOutcome, Stop, diverged};
use crate::adapter::{Adapter, Lora};
use crate::error::Result;
use crate::linalg::{Real, frob2, gemm, svd_thin};

/// LoRA-Pro's settings: Adam's (learning rate, betas, schedule, stopping) and the official code's bias offset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoraProSpec {
    #[serde(flatten)]
    pub adam: AdamSpec,
    /// Added to the step count in Adam's bias correction: 0 is Adam's, 1 the official code's.
    #[serde(default)]
    pub bias_offset: u32,
}

/// pinv(M + 10⁻⁸·I) of a small symmetric positive semi-definite M, as the official code.
fn pinv_ridged<T: Real>(m: &Array2<T>) -> Result<Array2<T>> {
    let mut r = m.clone();
    for i in 0..r.nrows() {
        r[[i, i]] += T::of(1e-8);
    }
    let svd = svd_thin(r.view())?;
    let cut = svd.s.iter().fold(0.0f64, |a, s| a.max(s.f64())) * 1e-15 * r.nrows() as f64;
    let mut us = svd.u.clone();
    for (j, s) in svd.s.iter().enumerate() {
        let inv = if s.f64() > cut {
            T::one() / *s
        } else {
            T::zero()
        };
        us.column_mut(j).mapv_inplace(|x| x * inv);
    }
    // pinv = V·S⁻¹·Uᵀ = (U·S⁻¹·Vᵀ)ᵀ.
    Ok(gemm(us.view(), svd.vt.view()).t().to_owned())
}

/// X with P·X + X·Q = C for small symmetric positive semi-definite P, Q, through their eigenbases.
pub fn solve_sylvester<T: Real>(p: &Array2<T>, q: &Array2<T>, c: &Array2<T>) -> Result<Array2<T>> {
    let (sp, sq) = (svd_thin(p.view())?, svd_thin(q.view())?);
    let ct = gemm(gemm(sp.u.t(), c.view()).view(), sq.u.view());
    let x = Array2::from_shape_fn(ct.dim(), |(i, j)| {
        let d = sp.s[i] + sq.s[j];
        if d.f64().abs() > f64::MIN_POSITIVE {
            ct[[i, j]] / d
        } else {
            T::zero()
        }
    });
    Ok(gemm(gemm(sp.u.view(), x.view()).view(), sq.u.t()))
}

/// The adjusted factor gradients (g_A*, g_B*) and X for Adam's direction projections (g_A', g_B').
pub fn adjust<T: Real>(
    b: &Array2<T>,
    a: &Array2<T>,
    s: f64,
    ga: &Array2<T>,
    gb: &Array2<T>,
) -> Result<(Array2<T>, Array2<T>, Array2<T>)> {
    let s2 = T::of(s * s);
    let bb = gemm(b.t(), b.view());
    let aa = gemm(a.view(), a.t());
    let (pb, pa) = (pinv_ridged(&bb)?, pinv_ridged(&aa)?);
    let pb_ga = gemm(pb.view(), ga.view());
    let c = gemm(pb_ga.view(), a.t()).mapv(|x| -x / s2);
    let x = solve_sylvester(&bb, &aa, &c)?;
    let mut ga_star = pb_ga.mapv(|v| v / s2);
    ga_star += &gemm(x.view(), a.view());
    let proj = project_out(b, &pb, gb);
    let mut gb_star = gemm(proj.view(), pa.view()).mapv(|v| v / s2);
    gb_star -= &gemm(b.view(), x.view());
    Ok((ga_star, gb_star, x))
}

/// (I − B·P_B·Bᵀ)·g.
fn project_out<T: Real>(b: &Array2<T>, pb: &Array2<T>, g: &Array2<T>) -> Array2<T> {
    let inner = gemm(pb.view(), gemm(b.t(), g.view()).view());
    g - &gemm(b.view(), inner.view())
}

/// The equivalent gradient G̃ for raw factor gradients.
pub fn equivalent_gradient<T: Real>(
    b: &Array2<T>,
    a: &Array2<T>,
    s: f64,
    ga: &Array2<T>,
    gb: &Array2<T>,
) -> Result<Array2<T>> {
    let st = T::of(s);
    let s2 = T::of(s * s);
    let bb = gemm(b.t(), b.view());
    let aa = gemm(a.view(), a.t());
    let (pb, pa) = (pinv_ridged(&bb)?, pinv_ridged(&aa)?);
    let ga1 = gemm(pb.view(), ga.view()).mapv(|v| v / s2);
    let gb1 = gemm(project_out(b, &pb, gb).view(), pa.view()).mapv(|v| v / s2);
    let mut gt = gemm(b.view(), ga1.view());
    gt += &gemm(gb1.view(), a.view());
    Ok(gt.mapv(|v| v * st))
}

/// Full m×n Adam moments of the equivalent gradient.
pub struct LoraProState<T> {
    m: Array2<T>,
    v: Array2<T>,
    t: i32,
}

impl<T: Real> LoraProState<T> {
    pub fn new(shape: (usize, usize)) -> Self {
        LoraProState {
            m: Array2::zeros(shape),
            v: Array2::zeros(shape),
            t: 0,
        }
    }

    /// Floats the optimiser keeps per layer: 2·m·n.
    pub fn state_floats(&self) -> usize {
        self.m.len() + self.v.len()
    }
}

/// One LoRA-Pro step on the normalised objective ‖ΔW − T‖²/‖T‖² from its full gradient; returns the objective
/// before the step.
pub fn step<T: Real>(
    lora: &mut Lora<T>,
    state: &mut LoraProState<T>,
    target: ArrayView2<'_, T>,
    target_norm2: f64,
    lr: f64,
    spec: &LoraProSpec,
) -> Result<f64> {
    let residual = lora.delta() - target;
    let objective = frob2(residual.view()) / target_norm2;
    if !objective.is_finite() {
        return Ok(objective);
    }
    let g = residual * T::of(2.0 / target_norm2);
    let grads = lora.grads(g.view())?;
    let (gb, ga) = (&grads[0], &grads[1]);
    let s = lora.scale.f64();
    let gt = equivalent_gradient(&lora.b, &lora.a, s, ga, gb)?;
    state.t += 1;
    let (b1, b2, eps) = (spec.adam.beta1, spec.adam.beta2, spec.adam.eps);
    let t = state.t + spec.bias_offset as i32;
    let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
    let mut dir = Array2::zeros(gt.dim());
    Zip::from(&mut dir)
        .and(&mut state.m)
        .and(&mut state.v)
        .and(&gt)
        .for_each(|d, m, v, &x| {
            *m = T::of(b1) * *m + T::of(1.0 - b1) * x;
            *v = T::of(b2) * *v + T::of(1.0 - b2) * x * x;
            *d = (*m / T::of(c1)) / ((*v / T::of(c2)).sqrt() + T::of(eps));
        });
    let st = T::of(s);
    let ga_p = gemm(lora.b.t(), dir.view()).mapv(|x| x * st);
    let gb_p = gemm(dir.view(), lora.a.t()).mapv(|x| x * st);
    let (ga_star, gb_star, _) = adjust(&lora.b, &lora.a, s, &ga_p, &gb_p)?;
    let lr = T::of(lr);
    lora.a.zip_mut_with(&ga_star, |p, &g| *p -= lr * g);
    lora.b.zip_mut_with(&gb_star, |p, &g| *p -= lr * g);
    Ok(objective)
}

/// Runs LoRA-Pro with Adam's schedule and stopping rules.
pub fn run<T: Real>(
    lora: &mut Lora<T>,
    target: ArrayView2<'_, T>,
    target_norm2: f64,
    spec: &LoraProSpec,
) -> Result<FitOutcome> {
    let a = &spec.adam;
    let mut state = LoraProState::new(lora.shape());
    let mut curve = CurveRecorder::new();
    let mut initial = f64::NAN;
    for k in 0..a.steps {
        let lr = a.lr * super::schedule::lr_factor(k, a.steps, a.warmup, a.decay, a.min_lr_ratio);
        let objective = step(lora, &mut state, target, target_norm2, lr, spec)?;
        if k == 0 {
            initial = objective;
        }
        curve.observe(k, objective);
        if let Some(reason) = diverged(objective, initial) {
            return Ok(FitOutcome {
                stop: Stop::Diverged,
                steps: k + 1,
                curve: curve.finish(k, objective),
                reason,
            });
        }
        if objective < a.target_objective {
            return Ok(FitOutcome {
                stop: Stop::Converged,
                steps: k + 1,
                curve: curve.finish(k, objective),
                reason: String::new(),
            });
        }
    }
    let objective = frob2((lora.delta() - target).view()) / target_norm2;
    Ok(FitOutcome {
        stop: if objective.is_finite() {
            Stop::MaxSteps
        } else {
            Stop::Diverged
        },
        steps: a.steps,
        curve: curve.finish(a.steps, objective),
        reason: String::new(),
    })
}
