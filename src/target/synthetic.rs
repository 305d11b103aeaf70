//! Seeded synthetic targets, generated in f64.

use ndarray::{Array2, Axis};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::{AbbaError, Result};
use crate::linalg::{check_rank, gemm, qr_thin};
use crate::rng::seeded;

pub fn uniform01(m: usize, n: usize, seed: u64) -> Array2<f64> {
    let mut rng = seeded(seed);
    Array2::from_shape_simple_fn((m, n), || rng.random::<f64>())
}

pub fn gaussian(m: usize, n: usize, seed: u64) -> Array2<f64> {
    let mut rng = seeded(seed);
    Array2::from_shape_simple_fn((m, n), || StandardNormal.sample(&mut rng))
}

/// m×k with orthonormal columns (k ≤ m): Q of a Gaussian matrix's QR.
fn orthonormal_columns(m: usize, k: usize, seed: u64) -> Result<Array2<f64>> {
    Ok(qr_thin(gaussian(m, k, seed).view())?.0)
}

pub fn orthogonal(m: usize, n: usize, seed: u64) -> Result<Array2<f64>> {
    if m >= n {
        orthonormal_columns(m, n, seed)
    } else {
        Ok(orthonormal_columns(n, m, seed)?.reversed_axes())
    }
}

fn with_spectrum(m: usize, n: usize, sigma: &[f64], seed: u64) -> Result<Array2<f64>> {
    let k = sigma.len();
    let u = orthonormal_columns(m, k, seed)?;
    let mut v = orthonormal_columns(n, k, seed.wrapping_add(1))?;
    for (mut row, &s) in v.axis_iter_mut(Axis(1)).zip(sigma) {
        row *= s;
    }
    Ok(gemm(u.view(), v.t()))
}

pub fn low_rank(m: usize, n: usize, rank: usize, seed: u64) -> Result<Array2<f64>> {
    check_rank(rank, (m, n))?;
    with_spectrum(m, n, &vec![1.0; rank], seed)
}

pub fn power_law(m: usize, n: usize, exponent: f64, seed: u64) -> Result<Array2<f64>> {
    if !exponent.is_finite() || exponent < 0.0 {
        return Err(AbbaError::InvalidArgument(format!(
            "power-law exponent {exponent} must be finite and ≥ 0"
        )));
    }
    let sigma: Vec<f64> = (0..m.min(n))
        .map(|i| ((i + 1) as f64).powf(-exponent))
        .collect();
    with_spectrum(m, n, &sigma, seed)
}

pub fn sparse(m: usize, n: usize, density: f64, seed: u64) -> Result<Array2<f64>> {
    if !(density > 0.0 && density <= 1.0) {
        return Err(AbbaError::InvalidArgument(format!(
            "sparse density {density} must be in (0, 1]"
        )));
    }
    let mut rng = seeded(seed);
    Ok(Array2::from_shape_simple_fn((m, n), || {
        let keep = rng.random::<f64>() < density;
        let value = rng.random::<f64>();
        if keep { value } else { 0.0 }
    }))
}

/// Gaussian factors scaled by 1/√r so entries of B·A are O(1).
fn gaussian_pair(m: usize, n: usize, r: usize, seed: u64) -> Result<Array2<f64>> {
    check_rank(r, (m, n))?;
    let b = gaussian(m, r, seed) / (r as f64).sqrt();
    let a = gaussian(r, n, seed.wrapping_add(7));
    Ok(gemm(b.view(), a.view()))
}

pub fn abba_structured(m: usize, n: usize, r1: usize, r2: usize, seed: u64) -> Result<Array2<f64>> {
    Ok(gaussian_pair(m, n, r1, seed)? * gaussian_pair(m, n, r2, seed.wrapping_add(1000))?)
}

pub fn hira_structured(w0: &Array2<f64>, rank: usize, seed: u64) -> Result<Array2<f64>> {
    let (m, n) = w0.dim();
    Ok(gaussian_pair(m, n, rank, seed)? * w0)
}

/// KRAdapter's frequency rows: row i is sin(2π f_i t + φ_i) on t_j = j/n, f_i evenly spaced in [low, high], φ_i
/// uniform in [0, 1) (radians, as the harness), plus 0–5 extra harmonics sin(2π f t) with f uniform in
/// [low, high), amplitude 1, no normalisation. High frequencies alias heavily (Nyquist is n/2): as the harness.
pub fn sinusoid(m: usize, n: usize, low: f64, high: f64, seed: u64) -> Result<Array2<f64>> {
    if !(low.is_finite() && high.is_finite() && low >= 0.0 && high >= low) {
        return Err(AbbaError::InvalidArgument(format!(
            "sinusoid frequencies [{low}, {high}] must be finite with 0 ≤ low ≤ high"
        )));
    }
    let mut rng = seeded(seed);
    let two_pi = 2.0 * std::f64::consts::PI;
    let mut t = Array2::zeros((m, n));
    for (i, mut row) in t.axis_iter_mut(Axis(0)).enumerate() {
        let f = if m > 1 {
            low + (high - low) * i as f64 / (m - 1) as f64
        } else {
            low
        };
        let phase: f64 = rng.random();
        let extra: Vec<f64> = (0..rng.random_range(0..=5))
            .map(|_| low + (high - low) * rng.random::<f64>())
            .collect();
        for (j, x) in row.iter_mut().enumerate() {
            let tj = j as f64 / n as f64;
            *x = (two_pi * f * tj + phase).sin()
                + extra.iter().map(|&h| (two_pi * h * tj).sin()).sum::<f64>();
        }
    }
    Ok(t)
}

/// KRAdapter's PCA-whitened noise: X Gaussian, centred per column, rotated onto the eigenvectors of its column
/// covariance and scaled by 1/√(λ + 10⁻⁵), so every singular value is ≈ √(m − 1): a flat spectrum.
pub fn pca_whitened(m: usize, n: usize, seed: u64) -> Result<Array2<f64>> {
    let mut x = gaussian(m, n, seed);
    let mean = x.mean_axis(Axis(0)).expect("m ≥ 1");
    x -= &mean;
    // The covariance's eigenvectors are X's right singular vectors, its eigenvalues σ²/(m − 1).
    let svd = crate::linalg::svd_thin(x.view())?;
    let mut rotated = gemm(x.view(), svd.vt.t());
    let denom = (m.max(2) - 1) as f64;
    for (mut col, s) in rotated.axis_iter_mut(Axis(1)).zip(svd.s.iter()) {
        col /= (s * s / denom + 1e-5).sqrt();
    }
    Ok(rotated)
}

/// A Gaussian matrix with dropout: entries kept with probability `keep` and scaled by 1/keep (KRAdapter's
/// `F.dropout(randn, 0.9)`, keep = 0.1).
pub fn dropout_gaussian(m: usize, n: usize, keep: f64, seed: u64) -> Result<Array2<f64>> {
    if !(keep > 0.0 && keep <= 1.0) {
        return Err(AbbaError::InvalidArgument(format!(
            "dropout-gaussian keep {keep} must be in (0, 1]"
        )));
    }
    let mut rng = seeded(seed);
    Ok(Array2::from_shape_simple_fn((m, n), || {
        let z: f64 = StandardNormal.sample(&mut rng);
        if rng.random::<f64>() < keep {
            z / keep
        } else {
            0.0
        }
    }))
}

/// A Gaussian matrix with all but its top `rank` singular values zeroed (KRAdapter's low-rank target).
pub fn gaussian_truncated(m: usize, n: usize, rank: usize, seed: u64) -> Result<Array2<f64>> {
    check_rank(rank, (m, n))?;
    let svd = crate::linalg::svd_thin(gaussian(m, n, seed).view())?;
    let (b, a) = svd.components(0, rank).balanced_factors();
    Ok(gemm(b.view(), a.view()))
}
