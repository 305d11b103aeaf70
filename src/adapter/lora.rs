//! LoRA: ΔW = s·B·A with B: m×r, A: r×n (Hu et al. 2021); rsLoRA differs only in s.

use ndarray::{Array2, ArrayView2, ArrayViewMut2};

use super::scaling::LoraScale;
use super::{Adapter, MethodKind, check_pair, check_shape};
use crate::error::Result;
use crate::linalg::{Real, gemm};

#[derive(Clone, Debug)]
pub struct Lora<T> {
    pub b: Array2<T>,
    pub a: Array2<T>,
    /// The scale s actually applied.
    pub scale: T,
}

impl<T: Real> Lora<T> {
    /// From factors `B: m×r`, `A: r×n` and a scale convention evaluated at r.
    pub fn new(b: Array2<T>, a: Array2<T>, scale: LoraScale) -> Result<Self> {
        let (_, r, _) = check_pair(&b.view(), &a.view(), "LoRA A (rows must equal B's columns)")?;
        Ok(Lora {
            b,
            a,
            scale: T::of(scale.value(r)),
        })
    }

    pub fn rank(&self) -> usize {
        self.a.nrows()
    }
}

impl<T: Real> Adapter<T> for Lora<T> {
    fn kind(&self) -> MethodKind {
        MethodKind::Lora
    }
    fn shape(&self) -> (usize, usize) {
        (self.b.nrows(), self.a.ncols())
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
        let mut d = gemm(self.b.view(), self.a.view());
        d *= self.scale;
        d
    }
    fn apply(&self, x: ArrayView2<'_, T>) -> Result<Array2<T>> {
        check_shape("batch X", (self.shape().1, x.ncols()), x.dim())?;
        let mut y = gemm(self.b.view(), gemm(self.a.view(), x).view());
        y *= self.scale;
        Ok(y)
    }
    fn grads(&self, g: ArrayView2<'_, T>) -> Result<Vec<Array2<T>>> {
        check_shape("gradient ∂L/∂ΔW", self.shape(), g.dim())?;
        let mut gb = gemm(g, self.a.t());
        gb *= self.scale;
        let mut ga = gemm(self.b.t(), g);
        ga *= self.scale;
        Ok(vec![gb, ga])
    }
}
