//! How good a fit is, and what it looks like: errors against the target and rank measures of the fitted ΔW.

use ndarray::{Array1, ArrayView2};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::linalg::{frob2, singular_values};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FitMetrics {
    /// ‖T − T̂‖²_F / ‖T‖²_F (the paper's metric).
    pub error: f64,
    /// ‖T − T̂‖_F / ‖T‖_F.
    pub rel_frob: f64,
    /// ‖σ(T) − σ(T̂)‖₂ / ‖σ(T)‖₂.
    pub sv_error: f64,
    /// ‖T̂‖²_F / σ_max(T̂)².
    pub stable_rank: f64,
    /// exp(H(σ/Σσ)) of T̂ (Roy & Vetterli).
    pub effective_rank: f64,
    /// Singular values of T̂ above max(m, n)·ε·σ_max, ε of the fit's precision.
    pub numerical_rank: usize,
    /// Singular values of the fit (descending).
    pub fit_spectrum: Array1<f64>,
}

/// Normalised squared error ‖T − T̂‖²/‖T‖² (accumulated in f64).
pub fn normalised_error(target: ArrayView2<'_, f64>, fit: ArrayView2<'_, f64>) -> f64 {
    let diff: f64 = target
        .iter()
        .zip(fit.iter())
        .map(|(t, f)| (t - f) * (t - f))
        .sum();
    diff / frob2(target).max(f64::MIN_POSITIVE)
}

pub fn stable_rank(sigma: &Array1<f64>) -> f64 {
    let top = sigma.first().copied().unwrap_or(0.0);
    if top <= 0.0 {
        0.0
    } else {
        sigma.iter().map(|s| s * s).sum::<f64>() / (top * top)
    }
}

pub fn effective_rank(sigma: &Array1<f64>) -> f64 {
    let total: f64 = sigma.sum();
    if total <= 0.0 {
        return 0.0;
    }
    let entropy: f64 = sigma
        .iter()
        .map(|s| s / total)
        .filter(|&p| p > 0.0)
        .map(|p| -p * p.ln())
        .sum();
    entropy.exp()
}

pub fn numerical_rank(sigma: &Array1<f64>, shape: (usize, usize), eps: f64) -> usize {
    let top = sigma.first().copied().unwrap_or(0.0);
    let tol = top * shape.0.max(shape.1) as f64 * eps;
    sigma.iter().filter(|&&s| s > tol).count()
}

/// All metrics of a fit `fit` of `target`, given the target's singular values. `eps` is the machine epsilon of
/// the precision the fit was computed in.
pub fn evaluate(
    target: ArrayView2<'_, f64>,
    target_spectrum: &Array1<f64>,
    fit: ArrayView2<'_, f64>,
    eps: f64,
) -> Result<FitMetrics> {
    let error = normalised_error(target, fit);
    let sigma = singular_values(fit)?;
    let sv_diff: f64 = target_spectrum
        .iter()
        .zip(sigma.iter())
        .map(|(a, b)| (a - b) * (a - b))
        .sum();
    let sv_norm: f64 = target_spectrum.iter().map(|a| a * a).sum();
    Ok(FitMetrics {
        error,
        rel_frob: error.sqrt(),
        sv_error: (sv_diff / sv_norm.max(f64::MIN_POSITIVE)).sqrt(),
        stable_rank: stable_rank(&sigma),
        effective_rank: effective_rank(&sigma),
        numerical_rank: numerical_rank(&sigma, fit.dim(), eps),
        fit_spectrum: sigma,
    })
}
