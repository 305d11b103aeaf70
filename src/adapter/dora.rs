//! DoRA (Liu et al. 2024): a LoRA whose adapted weight is renormalised row by row to a learned magnitude,
//!
//! ```text
//! W = diag(mag / ‖W0 + s·B·A‖_row) · (W0 + s·B·A),   ΔW = W − W0,
//! ```
//!
//! with one norm per output row (PEFT's `norm(dim=1)` of the out×in weight). The fitters use the exact gradient
//! (the norm differentiated); fine-tuning detaches the norm as PEFT and the DoRA paper (§4.3) do, which the candle
//! layer implements. PEFT saves it as a LoRA with `use_dora: true` and `lora_magnitude_vector` of shape [out].

use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis, Zip};
use rand::Rng;
use serde_json::{Value, json};

use super::factor::{Factor, PeftFields};
use super::init::{Initialised, KaimingA, LoraInit, gaussian, kaiming_uniform};
use super::scaling::LoraScale;
use super::{Adapter, MethodKind, check_finite, check_pair, check_shape};
use crate::error::{AbbaError, Result};
use crate::linalg::{Real, gemm};

#[derive(Clone, Debug)]
pub struct Dora<T> {
    pub w0: Array2<T>,
    pub b: Array2<T>,
    pub a: Array2<T>,
    /// m×1: the learned norm of each output row.
    pub magnitude: Array2<T>,
    pub scale: T,
}

impl<T: Real> Dora<T> {
    pub fn new(
        w0: Array2<T>,
        b: Array2<T>,
        a: Array2<T>,
        magnitude: Array2<T>,
        scale: LoraScale,
    ) -> Result<Self> {
        let (m, r, n) = check_pair(&b.view(), &a.view(), "DoRA A (rows must equal B's columns)")?;
        check_shape("DoRA W0", (m, n), w0.dim())?;
        check_shape("DoRA magnitude", (m, 1), magnitude.dim())?;
        check_finite("DoRA W0", &w0.view())?;
        check_finite("DoRA magnitude", &magnitude.view())?;
        Ok(Dora {
            w0,
            b,
            a,
            magnitude,
            scale: T::of(scale.value(r)),
        })
    }

    /// V = W0 + s·B·A and its row norms.
    fn directions(&self) -> (Array2<T>, Vec<T>) {
        let mut v = self.w0.clone();
        crate::linalg::gemm_into(v.view_mut(), true, self.b.view(), self.a.view(), self.scale);
        let norms = row_norms(&v);
        (v, norms)
    }
}

/// ‖row‖₂ of each row, floored at the smallest positive normal number so a zero row cannot divide by zero.
pub fn row_norms<T: Real>(v: &Array2<T>) -> Vec<T> {
    v.axis_iter(Axis(0))
        .map(|row| {
            let s: f64 = row.iter().map(|x| x.f64() * x.f64()).sum();
            T::of(s.sqrt().max(f64::MIN_POSITIVE))
        })
        .collect()
}

impl<T: Real> Adapter<T> for Dora<T> {
    fn kind(&self) -> MethodKind {
        MethodKind::Dora
    }
    fn shape(&self) -> (usize, usize) {
        self.w0.dim()
    }
    fn factor_names(&self) -> Vec<String> {
        ["B", "A", "magnitude"].map(String::from).to_vec()
    }
    fn factors(&self) -> Vec<ArrayView2<'_, T>> {
        vec![self.b.view(), self.a.view(), self.magnitude.view()]
    }
    fn factors_mut(&mut self) -> Vec<ArrayViewMut2<'_, T>> {
        vec![
            self.b.view_mut(),
            self.a.view_mut(),
            self.magnitude.view_mut(),
        ]
    }
    fn delta(&self) -> Array2<T> {
        let (mut v, norms) = self.directions();
        for ((mut row, n), mag) in v
            .axis_iter_mut(Axis(0))
            .zip(&norms)
            .zip(self.magnitude.column(0))
        {
            row *= *mag / *n;
        }
        v - &self.w0
    }
    fn grads(&self, g: ArrayView2<'_, T>) -> Result<Vec<Array2<T>>> {
        check_shape("gradient ∂L/∂ΔW", self.shape(), g.dim())?;
        let (v, norms) = self.directions();
        let m = v.nrows();
        // ∂L/∂mag_i = ⟨G_i, V_i⟩/n_i;  ∂L/∂V_ij = g_i·G_ij − (mag_i/n_i³)·⟨G_i, V_i⟩·V_ij, g_i = mag_i/n_i.
        let mut gmag = Array2::zeros((m, 1));
        let mut gv = Array2::zeros(v.dim());
        for i in 0..m {
            let dot = Zip::from(g.row(i))
                .and(v.row(i))
                .fold(T::zero(), |acc, &x, &y| acc + x * y);
            let (n, mag) = (norms[i], self.magnitude[[i, 0]]);
            gmag[[i, 0]] = dot / n;
            let (gi, ci) = (mag / n, mag * dot / (n * n * n));
            Zip::from(gv.row_mut(i))
                .and(g.row(i))
                .and(v.row(i))
                .for_each(|o, &x, &y| *o = gi * x - ci * y);
        }
        let mut gb = gemm(gv.view(), self.a.t());
        gb *= self.scale;
        let mut ga = gemm(self.b.t(), gv.view());
        ga *= self.scale;
        Ok(vec![gb, ga, gmag])
    }
}

/// DoRA as a method: LoRA's rank, scale and initialisation, plus the magnitude vector.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DoraSpec {
    pub r: usize,
    pub scale: LoraScale,
    pub init: LoraInit,
}

impl Default for DoraSpec {
    fn default() -> Self {
        DoraSpec {
            r: 0,
            scale: LoraScale::Standard { alpha: 16.0 },
            init: LoraInit::Standard {
                kaiming: KaimingA::Sqrt5,
            },
        }
    }
}

impl DoraSpec {
    /// PEFT's keys: LoRA's two, then `lora_magnitude_vector` (saved as a vector of length m, no `.weight`).
    pub fn factors(&self, (m, n): (usize, usize)) -> Vec<Factor> {
        vec![
            Factor::new("A", "lora_A.weight", (self.r, n), 1),
            Factor::new("B", "lora_B.weight", (m, self.r), 0),
            Factor {
                vector: true,
                ..Factor::new("magnitude", "lora_magnitude_vector", (m, 1), 2)
            },
        ]
    }

    /// A Kaiming-uniform (or Gaussian), B = 0, magnitude = ‖W0‖_row: ΔW = 0, as PEFT.
    pub fn init_adapter<T: Real, R: Rng + ?Sized>(
        &self,
        w0: ArrayView2<'_, T>,
        rng: &mut R,
    ) -> Result<Initialised<Dora<T>, T>> {
        let (m, n) = w0.dim();
        let r = self.r;
        let a = match self.init {
            LoraInit::Standard { kaiming } => kaiming_uniform(r, n, kaiming, rng),
            LoraInit::Gaussian => gaussian(r, n, 1.0 / r as f64, rng),
            other => {
                return Err(AbbaError::Unsupported {
                    what: format!("DoRA with the {} initialisation", other.name()),
                    message: "DoRA starts from B = 0 and ‖W0‖_row: use init kaiming or gaussian"
                        .into(),
                });
            }
        };
        let w0 = w0.to_owned();
        let norms = row_norms(&w0);
        let magnitude = Array2::from_shape_fn((m, 1), |(i, _)| norms[i]);
        Ok(Initialised {
            adapter: Dora::new(w0, Array2::zeros((m, r)), a, magnitude, self.scale)?,
            residual_base: None,
        })
    }

    pub fn peft_config(&self, dropout: f32) -> Value {
        let mut cfg = super::LoraSpec {
            r: self.r,
            scale: self.scale,
            init: self.init,
        }
        .peft_config(dropout);
        cfg["use_dora"] = json!(true);
        cfg
    }

    pub fn from_peft(f: &PeftFields<'_>) -> Result<DoraSpec> {
        let lora = super::LoraSpec::read_peft(f)?;
        Ok(DoraSpec {
            r: lora.r,
            scale: lora.scale,
            init: lora.init,
        })
    }
}
