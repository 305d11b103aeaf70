//! Alternating least squares for the Kronecker-structured methods, each update an exact minimiser:
//! - LoKr / KronA: ‖T − s·W1⊗W2‖ = ‖R(T) − s·vec(W1)·vec(W2)ᵀ‖ (Van Loan–Pitsianis rearrangement), so with W2
//!   fixed W1 is a projection of R(T), and with W1 fixed W2 is one too — followed, for a low-rank factor, by its
//!   Eckart–Young truncation (the objective is isotropic in vec(W2), so the truncation is the exact constrained
//!   minimiser);
//! - KRAdapter: each short-side line of ΔW is s·kron(V_i, U_i) cropped, an independent rank-1 fit of the line
//!   reshaped to (r+d)×r with the cropped entries missing, solved entry by entry.

use ndarray::{Array1, Array2, ArrayView2, Axis};

use crate::adapter::lokr::{KronPart, rearrange};
use crate::adapter::{KrAdapter, Lokr};
use crate::error::Result;
use crate::linalg::{Real, svd_truncated};

/// One sweep of LoKr / KronA: W1 then W2. `lambda` is a ridge relative to ‖T‖² (added to the denominators).
pub fn lokr_sweep<T: Real>(l: &mut Lokr<T>, target: ArrayView2<'_, T>, lambda: f64) -> Result<()> {
    let (f1, f2) = part_dim(&l.w1);
    let rt = rearrange(target, (f1, f2));
    let s = l.scale.f64();
    let w2 = flat(&l.w2.matrix());
    let w1 = project(&rt, &w2, s, lambda);
    l.w1 = refit(&l.w1, w1, (f1, f2))?;
    let w1 = flat(&l.w1.matrix());
    let w2 = project(&rt.t().to_owned(), &w1, s, lambda);
    let dim2 = part_dim(&l.w2);
    l.w2 = refit(&l.w2, w2, dim2)?;
    Ok(())
}

fn part_dim<T: Real>(p: &KronPart<T>) -> (usize, usize) {
    p.matrix().dim()
}

fn flat<T: Real>(w: &Array2<T>) -> Array1<f64> {
    w.iter().map(|x| x.f64()).collect()
}

/// argmin_x ‖R − s·x·yᵀ‖² + λ‖x‖² = R·y / (s·‖y‖² + λ/s).
fn project<T: Real>(r: &Array2<T>, y: &Array1<f64>, s: f64, lambda: f64) -> Array1<f64> {
    let yy: f64 = y.iter().map(|v| v * v).sum();
    let denom = (s * yy + lambda / s.max(f64::MIN_POSITIVE)).max(f64::MIN_POSITIVE);
    r.axis_iter(Axis(0))
        .map(|row| row.iter().zip(y).map(|(a, b)| a.f64() * b).sum::<f64>() / denom)
        .collect()
}

/// The new value of a factor: the matrix itself, or its best rank-r pair (balanced Eckart–Young factors).
fn refit<T: Real>(
    old: &KronPart<T>,
    v: Array1<f64>,
    (rows, cols): (usize, usize),
) -> Result<KronPart<T>> {
    let w = Array2::from_shape_vec((rows, cols), v.to_vec())
        .expect("a factor's entries fill its shape")
        .mapv(T::of);
    Ok(match old {
        KronPart::Full(_) => KronPart::Full(w),
        KronPart::LowRank(a, _) => {
            // A rank above min(rows, cols) (PEFT allows it: W2 is low-rank whenever r < max(rows, cols)/2) adds
            // nothing: the factors carry the whole factor and zeros in the extra columns and rows.
            let r = a.ncols();
            let k = r.min(rows).min(cols);
            let (b1, b2) = svd_truncated(w.view(), k)?.balanced_factors();
            if k == r {
                KronPart::LowRank(b1, b2)
            } else {
                let mut p1 = Array2::zeros((rows, r));
                let mut p2 = Array2::zeros((r, cols));
                p1.slice_mut(ndarray::s![.., ..k]).assign(&b1);
                p2.slice_mut(ndarray::s![..k, ..]).assign(&b2);
                KronPart::LowRank(p1, p2)
            }
        }
    })
}

/// One sweep of KRAdapter: every line's U_i given V_i, then V_i given U_i, each entry in closed form.
pub fn kradapter_sweep<T: Real>(
    k: &mut KrAdapter<T>,
    target: ArrayView2<'_, T>,
    lambda: f64,
) -> Result<()> {
    let (m, n) = target.dim();
    let lines = if m <= n {
        target
    } else {
        target.reversed_axes()
    };
    let long = lines.ncols();
    let r = k.u.ncols();
    let rd = k.v.ncols();
    let s = k.scale.f64();
    for (i, t) in lines.axis_iter(Axis(0)).enumerate() {
        // U[i, b] = Σ_a V[a]·T[a, b] / (s·Σ_a V[a]² + λ/s), over the a with a·r + b inside the line.
        for b in 0..r {
            let (mut num, mut den) = (0.0, lambda / s);
            for a in (0..rd).filter(|a| a * r + b < long) {
                let v = k.v[[i, a]].f64();
                num += v * t[a * r + b].f64();
                den += s * v * v;
            }
            k.u[[i, b]] = T::of(num / den.max(f64::MIN_POSITIVE));
        }
        for a in 0..rd {
            let (mut num, mut den) = (0.0, lambda / s);
            for b in (0..r).filter(|b| a * r + b < long) {
                let u = k.u[[i, b]].f64();
                num += u * t[a * r + b].f64();
                den += s * u * u;
            }
            k.v[[i, a]] = T::of(num / den.max(f64::MIN_POSITIVE));
        }
    }
    Ok(())
}
