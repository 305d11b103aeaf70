//! The face-splitting (row-wise Kronecker) and Khatri–Rao (column-wise Kronecker) products that turn
//! (B1A1)⊙(B2A2) into one low-rank product B_kr·A_kr (ABBA paper, Thm 1).

use ndarray::{Array2, ArrayView2};

use crate::linalg::Real;

/// `B_kr[i, p·r2 + q] = B1[i, p] · B2[i, q]` (m × r1·r2).
pub fn row_kron<T: Real>(b1: ArrayView2<'_, T>, b2: ArrayView2<'_, T>) -> Array2<T> {
    assert_eq!(b1.nrows(), b2.nrows(), "row_kron: row counts differ");
    let (m, r1) = b1.dim();
    let r2 = b2.ncols();
    Array2::from_shape_fn((m, r1 * r2), |(i, k)| b1[(i, k / r2)] * b2[(i, k % r2)])
}

/// `A_kr[p·r2 + q, j] = A1[p, j] · A2[q, j]` (r1·r2 × n).
pub fn col_kron<T: Real>(a1: ArrayView2<'_, T>, a2: ArrayView2<'_, T>) -> Array2<T> {
    assert_eq!(a1.ncols(), a2.ncols(), "col_kron: column counts differ");
    let (r1, n) = a1.dim();
    let r2 = a2.nrows();
    Array2::from_shape_fn((r1 * r2, n), |(k, j)| a1[(k / r2, j)] * a2[(k % r2, j)])
}
