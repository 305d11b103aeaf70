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

/// Rows `p·r + q` (p ≤ q, packed) of A ⊙ A: `K[(p,q), j] = A[p, j]·A[q, j]`.
fn packed_self_khatri_rao<T: Real>(a: ArrayView2<'_, T>) -> (Array2<T>, Vec<(usize, usize)>) {
    let (r, n) = a.dim();
    let pairs: Vec<(usize, usize)> = (0..r).flat_map(|p| (p..r).map(move |q| (p, q))).collect();
    let k = Array2::from_shape_fn((pairs.len(), n), |(row, j)| {
        let (p, q) = pairs[row];
        a[(p, j)] * a[(q, j)]
    });
    (k, pairs)
}

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

/// Solves every row's weighted ridge problem; returns B (m×r). `weights = None` means all ones.
pub fn solve_rows<T: Real>(
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
    // Per-row Gram matrices, packed: G[i, (p,q)] = Σ_j w_ij² A[p,j] A[q,j]; and right-hand sides.
    let (grams, rhs, pairs) = match weights {
        Some(w) => {
            assert_eq!(w.dim(), (m, n), "solve_rows: weights must match the target");
            let (k, pairs) = packed_self_khatri_rao(a);
            let w2 = w.mapv(|x| x * x);
            let grams = gemm(w2.view(), k.t());
            let wt = &w * &target;
            (grams, gemm(wt.view(), a.t()), pairs)
        }
        None => {
            // Unweighted: one Gram matrix shared by every row.
            let g = gemm(a, a.t());
            let pairs: Vec<(usize, usize)> =
                (0..r).flat_map(|p| (p..r).map(move |q| (p, q))).collect();
            let packed = Array2::from_shape_fn((1, pairs.len()), |(_, c)| g[pairs[c]]);
            (packed, gemm(target, a.t()), pairs)
        }
    };
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
