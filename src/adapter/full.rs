//! The dense update: ΔW is itself the trainable parameter (full fine-tuning).

use ndarray::{Array2, ArrayView2, ArrayViewMut2};

use super::factor::Factor;
use super::{Adapter, MethodKind, check_finite, check_shape};
use crate::error::{AbbaError, Result};
use crate::linalg::Real;

#[derive(Clone, Debug)]
pub struct Full<T> {
    pub delta: Array2<T>,
}

impl<T: Real> Full<T> {
    /// The one factor: ΔW itself, m×n. (On a model, full fine-tuning trains the base weights instead.)
    pub fn factor_table((m, n): (usize, usize)) -> Vec<Factor> {
        vec![Factor::new("delta", "delta", (m, n), 0)]
    }

    /// ΔW = 0 of shape m×n.
    pub fn zeros(m: usize, n: usize) -> Result<Self> {
        if m == 0 || n == 0 {
            return Err(AbbaError::EmptyMatrix { rows: m, cols: n });
        }
        Ok(Full {
            delta: Array2::zeros((m, n)),
        })
    }

    pub fn from_delta(delta: Array2<T>) -> Result<Self> {
        let (m, n) = delta.dim();
        if m == 0 || n == 0 {
            return Err(AbbaError::EmptyMatrix { rows: m, cols: n });
        }
        check_finite("full update", &delta.view())?;
        Ok(Full { delta })
    }
}

impl<T: Real> Adapter<T> for Full<T> {
    fn kind(&self) -> MethodKind {
        MethodKind::Full
    }
    fn shape(&self) -> (usize, usize) {
        self.delta.dim()
    }
    fn factor_names(&self) -> Vec<String> {
        vec!["delta".into()]
    }
    fn factors(&self) -> Vec<ArrayView2<'_, T>> {
        vec![self.delta.view()]
    }
    fn factors_mut(&mut self) -> Vec<ArrayViewMut2<'_, T>> {
        vec![self.delta.view_mut()]
    }
    fn delta(&self) -> Array2<T> {
        self.delta.clone()
    }
    fn grads(&self, g: ArrayView2<'_, T>) -> Result<Vec<Array2<T>>> {
        check_shape("gradient ∂L/∂ΔW", self.shape(), g.dim())?;
        Ok(vec![g.to_owned()])
    }
}
