//! HiRA: ΔW = W0 ⊙ (B·A) (Huang et al. 2025). No scale; the frozen W0 is part of the update, so the adapter
//! keeps its own copy.

use ndarray::{Array2, ArrayView2, ArrayViewMut2};
use rand::Rng;
use serde_json::{Value, json};

use super::factor::{Factor, PeftFields};
use super::init::{KaimingA, init_hira};
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

/// HiRA as a method: rank and the Kaiming slope of A's initialisation (B = 0).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct HiraSpec {
    pub r: usize,
    pub kaiming: KaimingA,
}

impl HiraSpec {
    /// A: r×n (`hira_A`), B: m×r (`hira_B`), as PEFT's HiRA; the ndarray adapter holds (B, A).
    pub fn factors(&self, (m, n): (usize, usize)) -> Vec<Factor> {
        vec![
            Factor::new("A", "hira_A", (self.r, n), 1),
            Factor::new("B", "hira_B", (m, self.r), 0),
        ]
    }

    pub fn init_adapter<T: Real, R: Rng + ?Sized>(
        &self,
        w0: ArrayView2<'_, T>,
        rng: &mut R,
    ) -> Result<Hira<T>> {
        init_hira(w0, self.r, self.kaiming, rng)
    }

    pub fn peft_config(&self, dropout: f32) -> Value {
        json!({
            "peft_type": "HIRA",
            "r": self.r, "hira_dropout": dropout, "fan_in_fan_out": false, "init_weights": true,
        })
    }

    pub fn from_peft(f: &PeftFields<'_>) -> Result<HiraSpec> {
        Ok(HiraSpec {
            r: f.uint("r")?,
            ..HiraSpec::default()
        })
    }
}
