//! The least-squares step every alternating solver is built from: with all other factors fixed, the rows of one
//! factor solve independent weighted ridge problems
//!
//! ```text
//! b_i = argmin_b ‖t_i − (b·A) ⊙ w_i‖² + λ‖b‖²,
//! ```
//!
//! i.e. (A·diag(w_i²)·Aᵀ + λI)·b_i = A·(w_i ⊙ t_i). All m Gram matrices come out of one GEMM against the
//! packed symmetric Khatri–Rao square of A, so the cost is one m×n×r(r+1)/2 product plus m small Cholesky solves.

use ndarray::{Array2, ArrayView2, Axis};
use rayon::prelude::*;

use crate::error::{AbbaError, Result};
use crate::linalg::{Real, gemm};

/// In-place Cholesky solve of a small SPD system (f64). Returns false when the matrix is not positive definite.
fn cholesky_solve(g: &mut [f64], b: &mut [f64], r: usize) -> bool {
    for j in 0..r {
        let mut d = g[j * r + j];
        for k in 0..j {
            d -= g[j * r + k] * g[j * r + k];
        }
        if d <= 0.0 || !d.is_finite() {
            return false;
        }
        let d = d.sqrt();
        g[j * r + j] = d;
        for i in j + 1..r {
            let mut s = g[i * r + j];
            for k in 0..j {
                s -= g[i * r + k] * g[j * r + k];
            }
            g[i * r + j] = s / d;
        }
    }
    for i in 0..r {
        let mut s = b[i];
        for k in 0..i {
            s -= g[i * r + k] * b[k];
        }
        b[i] = s / g[i * r + i];
    }
    for i in (0..r).rev() {
        let mut s = b[i];
        for k in i + 1..r {
            s -= g[k * r + i] * b[k];
        }
        b[i] = s / g[i * r + i];
    }
    true
}

/// Solves the small SPD system (G + λ·tr(G)/r·I)·x = b in f64 (λ relative to G's mean diagonal, so a singular G
/// gets a minimum-norm-like answer); an error if it is still not positive definite.
pub fn solve_spd(g: &Array2<f64>, b: ndarray::Array1<f64>, lambda: f64) -> Result<Vec<f64>> {
    let r = g.nrows();
    let mean_diag = (0..r).map(|i| g[[i, i]]).sum::<f64>() / r.max(1) as f64;
    let mut flat: Vec<f64> = g.iter().copied().collect();
    for i in 0..r {
        flat[i * r + i] += lambda * mean_diag.max(f64::MIN_POSITIVE);
    }
    let mut x = b.to_vec();
    if cholesky_solve(&mut flat, &mut x, r) {
        Ok(x)
    } else {
        Err(AbbaError::NoConvergence {
            what: "a least-squares solve (the system is not positive definite)".into(),
        })
    }
}

/// m×n and m×r(r+1)/2 buffers reused from one solve to the next (fresh large allocations cost page faults that,
/// on a small VM, rival the arithmetic).
#[derive(Default)]
pub struct Scratch<T> {
    k: Array2<T>,
    w2: Array2<T>,
    wt: Array2<T>,
    grams: Array2<T>,
}

fn reshape<T: Real>(buf: &mut Array2<T>, shape: (usize, usize)) {
    if buf.dim() != shape {
        *buf = Array2::zeros(shape);
    }
}

/// Solves every row's weighted ridge problem; returns B (m×r). `weights = None` means all ones.
pub fn solve_rows<T: Real>(
    target: ArrayView2<'_, T>,
    weights: Option<ArrayView2<'_, T>>,
    a: ArrayView2<'_, T>,
    lambda: f64,
) -> Result<Array2<T>> {
    solve_rows_with(&mut Scratch::default(), target, weights, a, lambda)
}

/// As [`solve_rows`], reusing `scratch`'s buffers.
pub fn solve_rows_with<T: Real>(
    scratch: &mut Scratch<T>,
    target: ArrayView2<'_, T>,
    weights: Option<ArrayView2<'_, T>>,
    a: ArrayView2<'_, T>,
    lambda: f64,
) -> Result<Array2<T>> {
    let (m, n) = target.dim();
    let r = a.nrows();
    assert_eq!(
        a.ncols(),
        n,
        "solve_rows: A must have as many columns as the target"
    );
    let pairs: Vec<(usize, usize)> = (0..r).flat_map(|p| (p..r).map(move |q| (p, q))).collect();
    // Per-row Gram matrices, packed: G[i, (p,q)] = Σ_j w_ij² A[p,j] A[q,j]; and right-hand sides.
    let rhs = match weights {
        Some(w) => {
            assert_eq!(w.dim(), (m, n), "solve_rows: weights must match the target");
            let Scratch { k, w2, wt, grams } = scratch;
            reshape(k, (pairs.len(), n));
            for (row, &(p, q)) in pairs.iter().enumerate() {
                ndarray::Zip::from(k.row_mut(row))
                    .and(a.row(p))
                    .and(a.row(q))
                    .for_each(|k, &x, &y| *k = x * y);
            }
            reshape(w2, (m, n));
            ndarray::Zip::from(&mut *w2)
                .and(&w)
                .for_each(|o, &x| *o = x * x);
            reshape(grams, (m, pairs.len()));
            crate::linalg::gemm_into(grams.view_mut(), false, w2.view(), k.t(), T::one());
            reshape(wt, (m, n));
            ndarray::Zip::from(&mut *wt)
                .and(&w)
                .and(&target)
                .for_each(|o, &x, &t| *o = x * t);
            gemm(wt.view(), a.t())
        }
        None => {
            // Unweighted: one Gram matrix shared by every row.
            let g = gemm(a, a.t());
            scratch.grams = Array2::from_shape_fn((1, pairs.len()), |(_, c)| g[pairs[c]]);
            gemm(target, a.t())
        }
    };
    let grams = &scratch.grams;
    let shared = grams.nrows() == 1;
    let rows: Vec<Option<Vec<T>>> = (0..m)
        .into_par_iter()
        .map(|i| {
            let packed = grams.row(if shared { 0 } else { i });
            let mut g = vec![0.0f64; r * r];
            for (c, &(p, q)) in pairs.iter().enumerate() {
                let v = packed[c].f64();
                g[p * r + q] = v;
                g[q * r + p] = v;
            }
            for d in 0..r {
                g[d * r + d] += lambda;
            }
            let mut b: Vec<f64> = rhs.row(i).iter().map(|x| x.f64()).collect();
            cholesky_solve(&mut g, &mut b, r).then(|| b.into_iter().map(T::of).collect())
        })
        .collect();
    let mut out = Array2::zeros((m, r));
    for (i, row) in rows.into_iter().enumerate() {
        let row = row.ok_or_else(|| AbbaError::NoConvergence {
            what: format!(
                "least-squares update of row {i} (singular system: raise the ridge term)"
            ),
        })?;
        out.index_axis_mut(Axis(0), i)
            .assign(&ndarray::Array1::from(row));
    }
    Ok(out)
}
