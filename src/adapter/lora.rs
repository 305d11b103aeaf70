//! LoRA: ΔW = s·B·A with B: m×r, A: r×n (Hu et al. 2021); rsLoRA differs only in s.

use ndarray::{Array2, ArrayView2, ArrayViewMut2};
use rand::Rng;
use serde_json::{Value, json};

use super::factor::{Factor, PeftFields};
use super::init::{Initialised, KaimingA, LoraInit, init_lora};
use super::scaling::LoraScale;
use super::{Adapter, MethodKind, check_pair, check_shape};
use crate::error::{AbbaError, Result};
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

/// LoRA as a method: rank, scale convention (standard α/r or rsLoRA α/√r) and initialisation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoraSpec {
    pub r: usize,
    pub scale: LoraScale,
    pub init: LoraInit,
}

impl Default for LoraSpec {
    fn default() -> Self {
        LoraSpec {
            r: 0,
            scale: LoraScale::Standard { alpha: 16.0 },
            init: LoraInit::Standard {
                kaiming: KaimingA::Sqrt5,
            },
        }
    }
}

impl LoraSpec {
    /// `pissa` / `olora` for those inits, else `rslora` or `lora` by the scale.
    pub fn name(&self) -> &'static str {
        match (self.init, self.scale) {
            (LoraInit::Pissa { .. }, _) => "pissa",
            (LoraInit::Olora, _) => "olora",
            (_, LoraScale::Rslora { .. }) => "rslora",
            _ => "lora",
        }
    }

    /// A: r×n (`lora_A.weight`), B: m×r (`lora_B.weight`); the ndarray adapter holds (B, A).
    pub fn factors(&self, (m, n): (usize, usize)) -> Vec<Factor> {
        vec![
            Factor::new("A", "lora_A.weight", (self.r, n), 1),
            Factor::new("B", "lora_B.weight", (m, self.r), 0),
        ]
    }

    pub fn init_adapter<T: Real, R: Rng + ?Sized>(
        &self,
        w0: ArrayView2<'_, T>,
        rng: &mut R,
    ) -> Result<Initialised<Lora<T>, T>> {
        init_lora(w0, self.r, self.scale, self.init, rng)
    }

    /// PEFT's `LORA` config; an explicit scale is written as α = s·r.
    pub fn peft_config(&self, dropout: f32) -> Value {
        let (alpha, rslora) = match self.scale {
            LoraScale::Standard { alpha } => (alpha, false),
            LoraScale::Rslora { alpha } => (alpha, true),
            LoraScale::Explicit { scale } => (scale * self.r as f64, false),
        };
        json!({
            "peft_type": "LORA",
            "r": self.r, "lora_alpha": alpha, "use_rslora": rslora, "lora_dropout": dropout,
            "bias": "none", "fan_in_fan_out": false, "init_lora_weights": true,
        })
    }

    pub fn from_peft(f: &PeftFields<'_>) -> Result<LoraSpec> {
        if f.flag("fan_in_fan_out") {
            return Err(AbbaError::Unsupported {
                what: "adapter_config.json field fan_in_fan_out".into(),
                message: "true (Conv1D-style transposed weights): only nn.Linear layouts load"
                    .into(),
            });
        }
        Self::read_peft(f)
    }

    /// The LoRA fields every LoRA-shaped config (plain, rsLoRA, DoRA) has: r, lora_alpha, use_rslora.
    pub fn read_peft(f: &PeftFields<'_>) -> Result<LoraSpec> {
        let alpha = f.float("lora_alpha")?;
        Ok(LoraSpec {
            r: f.uint("r")?,
            scale: if f.flag("use_rslora") {
                LoraScale::Rslora { alpha }
            } else {
                LoraScale::Standard { alpha }
            },
            init: LoraSpec::default().init,
        })
    }
}
