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
