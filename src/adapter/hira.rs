//! HiRA: ΔW = W0 ⊙ (B·A) (Huang et al. 2025). No scale; the frozen W0 is part of the update, so the adapter
//! keeps its own copy.

use ndarray::{Array2, ArrayView2, ArrayViewMut2};

use super::{Adapter, MethodKind, check_finite, check_pair, check_shape};
use crate::error::Result;
use crate::linalg::{Real, gemm};

#[derive(Clone, Debug)]
pub struct Hira<T> {
    pub w0: Array2<T>,
    pub b: Array2<T>,
    pub a: Array2<T>,
}

impl<T: Real> Hira<T> {
    pub fn new(w0: Array2<T>, b: Array2<T>, a: Array2<T>) -> Result<Self> {
        let (m, _, n) = check_pair(&b.view(), &a.view(), "HiRA A (rows must equal B's columns)")?;
        check_shape("HiRA W0", (m, n), w0.dim())?;
        check_finite("HiRA W0", &w0.view())?;
        Ok(Hira { w0, b, a })
    }

    pub fn rank(&self) -> usize {
        self.a.nrows()
    }
}

impl<T: Real> Adapter<T> for Hira<T> {
    fn kind(&self) -> MethodKind {
        MethodKind::Hira
    }
    fn shape(&self) -> (usize, usize) {
        self.w0.dim()
    }
    fn factor_names(&self) -> Vec<String> {
        vec!["B".into(), "A".into()]
    }
    fn factors(&self) -> Vec<ArrayView2<'_, T>> {
        vec![self.b.view(), self.a.view()]
    }
    fn factors_mut(&mut self) -> Vec<ArrayViewMut2<'_, T>> {
        vec![self.b.view_mut(), self.a.view_mut()]
    }
    fn delta(&self) -> Array2<T> {
        gemm(self.b.view(), self.a.view()) * &self.w0
    }
    // ΔW·X = Σ_k diag(B[:,k])·W0·diag(A[k,:])·X costs r·m·n per column block, more than materialising: use
    // the default (materialise once, then one GEMM).
    fn grads(&self, g: ArrayView2<'_, T>) -> Result<Vec<Array2<T>>> {
        check_shape("gradient ∂L/∂ΔW", self.shape(), g.dim())?;
        let gw = &g * &self.w0;
        Ok(vec![
            gemm(gw.view(), self.a.t()),
            gemm(self.b.t(), gw.view()),
        ])
    }
}
