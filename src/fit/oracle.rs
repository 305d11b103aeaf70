//! Closed-form optima: the truncated SVD is the best LoRA of rank r (Eckart–Young); the target itself is the
//! best full update.

use ndarray::{Array2, ArrayView2};

use super::Fitted;
use crate::adapter::lokr::{KronPart, nearest_kronecker};
use crate::adapter::mora::MoraLayout;
use crate::adapter::scaling::LoraScale;
use crate::adapter::{Full, Lokr, LokrSpec, Lora, Mora, MoraSpec};
use crate::error::Result;
use crate::linalg::{Real, Svd};

/// The rank-r Eckart–Young LoRA from a precomputed SVD of the target (scale 1, balanced factors).
pub fn lora_from_svd<T: Real>(svd: &Svd<f64>, r: usize) -> Result<Fitted<T>> {
    let (b, a) = svd.components(0, r).balanced_factors();
    Ok(Fitted::Lora(Lora::new(
        b.mapv(T::of),
        a.mapv(T::of),
        LoraScale::Explicit { scale: 1.0 },
    )?))
}

pub fn full<T: Real>(target: &Array2<f64>) -> Result<Fitted<T>> {
    Ok(Fitted::Full(Full::from_delta(target.mapv(T::of))?))
}

/// KronA's optimum: the nearest Kronecker product (Van Loan–Pitsianis) with the spec's factor split, split
/// evenly between the two factors and divided by the scale.
pub fn krona<T: Real>(target: ArrayView2<'_, T>, spec: &LokrSpec) -> Result<Fitted<T>> {
    let l = spec.layout(target.dim());
    let (a, b, _) = nearest_kronecker(target, (l.f_out, l.f_in))?;
    let root = T::of(spec.scale().sqrt());
    Ok(Fitted::Lokr(Lokr::new(
        KronPart::Full(a / root),
        KronPart::Full(b / root),
        spec.scale(),
    )?))
}

/// MoRA's optimum: ΔW[o, :] = M[a(o), :]·Ψ_{c(o)} is linear in M, so each row of M solves its own normal equations
/// M[a, :]·(Σ Ψ_c Ψ_cᵀ) = Σ T[o, :]·Ψ_cᵀ over the output rows o that read it.
pub fn mora<T: Real>(target: ArrayView2<'_, T>, spec: &MoraSpec) -> Result<Fitted<T>> {
    let layout = MoraLayout::new(target.dim(), spec.r_hat, spec.kind)?;
    let r = spec.r_hat;
    let psis: Vec<Array2<f64>> = (0..layout.chunk_count()).map(|c| layout.psi(c)).collect();
    let grams: Vec<Array2<f64>> = psis.iter().map(|p| p.dot(&p.t())).collect();
    let mut lhs = vec![Array2::<f64>::zeros((r, r)); r];
    let mut rhs = Array2::<f64>::zeros((r, r));
    for o in 0..layout.m {
        let (a, c) = layout.row_of(o);
        lhs[a] += &grams[c];
        let t: ndarray::Array1<f64> = target.row(o).iter().map(|x| x.f64()).collect();
        let mut row = rhs.row_mut(a);
        row += &psis[c].dot(&t);
    }
    let mut m = Array2::<T>::zeros((r, r));
    for a in 0..r {
        // A row no output reads stays 0; a singular Gram (rows read by too few outputs) gets its minimum-norm
        // least-squares solution through a tiny ridge.
        if lhs[a].iter().all(|&x| x == 0.0) {
            continue;
        }
        let solution = crate::fit::weighted_ls::solve_spd(&lhs[a], rhs.row(a).to_owned(), 1e-12)?;
        for b in 0..r {
            m[[a, b]] = T::of(solution[b]);
        }
    }
    Ok(Fitted::Mora(Mora::new(layout, m)?))
}
