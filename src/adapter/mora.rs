//! MoRA (Jiang et al. 2024): one square r̂×r̂ matrix M between a fixed compression of the input and a fixed
//! decompression of the output, as the official `peft-mora` code computes them.
//!
//! The input x (length n) is padded cyclically to a multiple of r̂ (its first `pad` entries appended) and cut into
//! c chunks x_0 … x_{c−1} of length r̂.
//! - **Type 1** (large r): z = M·Σ_c x_c, and output row o is z[o mod r̂].
//! - **Type 6** (small r): z_c = M·R_c·x_c per chunk, R_c rotating the pairs (j, j + r̂/2) by c·θ_j,
//!   θ_j = 10000^(−2j/r̂); the outputs are the concatenation of the z_c (length L = c·r̂), tiled with period L and
//!   cropped to m.
//!
//! Either way output row o reads one row a(o) of M against a fixed r̂-vector Ψ_{c(o)}·x ("the compression" of x
//! for that row's chunk), so ΔW[o, :] = M[a(o), :]·Ψ_{c(o)}: linear in M, which is why least squares is exact.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut2};
use serde_json::{Value, json};

use super::factor::Factor;
use super::init::Initialised;
use super::{Adapter, MethodKind, check_finite, check_shape};
use crate::error::{AbbaError, Result};
use crate::linalg::Real;

/// Which compression: 1 (sum of chunks) or 6 (rotated chunks, block-diagonal).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MoraType {
    #[serde(rename = "1")]
    Sum,
    #[serde(rename = "6")]
    Rotated,
}

impl MoraType {
    pub fn number(self) -> u8 {
        match self {
            MoraType::Sum => 1,
            MoraType::Rotated => 6,
        }
    }

    pub fn from_number(t: i64) -> Result<MoraType> {
        match t {
            1 => Ok(MoraType::Sum),
            6 => Ok(MoraType::Rotated),
            other => Err(AbbaError::Unsupported {
                what: format!("MoRA type {other}"),
                message: "types 1 (sum of chunks, large r) and 6 (rotated chunks, small r) are implemented"
                    .into(),
            }),
        }
    }
}

/// The fixed geometry of a MoRA on an m×n layer.
#[derive(Clone, Debug)]
pub struct MoraLayout {
    pub m: usize,
    pub n: usize,
    pub r_hat: usize,
    pub kind: MoraType,
    /// Padded-input entries appended (the first `pad` inputs again).
    pub pad: usize,
    /// Chunks of the padded input.
    pub chunks: usize,
    /// cos and sin of c·θ_j for chunk c and j < r̂/2 (type 6).
    cos: Vec<f64>,
    sin: Vec<f64>,
}

impl MoraLayout {
    pub fn new((m, n): (usize, usize), r_hat: usize, kind: MoraType) -> Result<MoraLayout> {
        if r_hat == 0 || (kind == MoraType::Rotated && !r_hat.is_multiple_of(2)) {
            return Err(AbbaError::InvalidArgument(format!(
                "MoRA r̂ = {r_hat} is not usable: it must be ≥ 1 (and even for type 6)"
            )));
        }
        let pad = (r_hat - n % r_hat) % r_hat;
        if pad > n {
            return Err(AbbaError::InvalidArgument(format!(
                "MoRA r̂ = {r_hat} needs padding {pad} > n = {n}: use r̂ ≤ n (or a smaller rank)"
            )));
        }
        let chunks = (n + pad) / r_hat;
        let half = r_hat / 2;
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        if kind == MoraType::Rotated {
            for c in 0..chunks {
                for j in 0..half {
                    let theta = 10000f64.powf(-2.0 * j as f64 / r_hat as f64);
                    cos.push((c as f64 * theta).cos());
                    sin.push((c as f64 * theta).sin());
                }
            }
        }
        Ok(MoraLayout {
            m,
            n,
            r_hat,
            kind,
            pad,
            chunks,
            cos,
            sin,
        })
    }

    /// The row of M and the chunk that output row o reads.
    pub fn row_of(&self, o: usize) -> (usize, usize) {
        match self.kind {
            MoraType::Sum => (o % self.r_hat, 0),
            MoraType::Rotated => {
                let l = o % (self.chunks * self.r_hat);
                (l % self.r_hat, l / self.r_hat)
            }
        }
    }

    /// The chunks output rows read (type 1: the one summed chunk).
    pub fn chunk_count(&self) -> usize {
        match self.kind {
            MoraType::Sum => 1,
            MoraType::Rotated => self.chunks,
        }
    }

    /// Ψ_c·x: the r̂-vector output rows of chunk c read (type 1: Σ_c x_c; type 6: R_c·x_c).
    pub fn compress<T: Real>(&self, x: ArrayView1<'_, T>, c: usize) -> Array1<T> {
        let r = self.r_hat;
        let at = |p: usize| x[p % self.n];
        match self.kind {
            MoraType::Sum => {
                let mut z = Array1::zeros(r);
                for p in 0..self.n + self.pad {
                    z[p % r] += at(p);
                }
                z
            }
            MoraType::Rotated => {
                let h = r / 2;
                let mut z = Array1::zeros(r);
                for j in 0..h {
                    let (co, si): (T, T) = self.angle(c, j);
                    let (a, b) = (at(c * r + j), at(c * r + j + h));
                    z[j] = a * co - b * si;
                    z[j + h] = b * co + a * si;
                }
                z
            }
        }
    }

    /// The adjoint of [`Self::compress`]: adds Ψ_cᵀ·z into `out` (length n).
    pub fn expand_into<T: Real>(&self, z: ArrayView1<'_, T>, c: usize, out: &mut Array1<T>) {
        let r = self.r_hat;
        let n = self.n;
        match self.kind {
            MoraType::Sum => {
                for p in 0..n + self.pad {
                    out[p % n] += z[p % r];
                }
            }
            MoraType::Rotated => {
                let h = r / 2;
                for j in 0..h {
                    let (co, si): (T, T) = self.angle(c, j);
                    let (pa, pb) = ((c * r + j) % n, (c * r + j + h) % n);
                    out[pa] = out[pa] + z[j] * co + z[j + h] * si;
                    out[pb] = out[pb] - z[j] * si + z[j + h] * co;
                }
            }
        }
    }

    fn angle<T: Real>(&self, c: usize, j: usize) -> (T, T) {
        let i = c * (self.r_hat / 2) + j;
        (T::of(self.cos[i]), T::of(self.sin[i]))
    }

    /// cos and sin of c·θ_j, chunk-major (c, j), for j < r̂/2 (type 6; empty for type 1).
    pub fn rotation_tables(&self) -> (Vec<f64>, Vec<f64>) {
        (self.cos.clone(), self.sin.clone())
    }

    /// Ψ_c as an r̂ × n matrix (for dense ΔW and least squares).
    pub fn psi<T: Real>(&self, c: usize) -> Array2<T> {
        let mut psi = Array2::zeros((self.r_hat, self.n));
        for i in 0..self.n {
            let mut e = Array1::zeros(self.n);
            e[i] = T::one();
            psi.column_mut(i).assign(&self.compress(e.view(), c));
        }
        psi
    }
}

#[derive(Clone, Debug)]
pub struct Mora<T> {
    pub layout: MoraLayout,
    /// M, r̂ × r̂.
    pub mat: Array2<T>,
}

impl<T: Real> Mora<T> {
    pub fn new(layout: MoraLayout, mat: Array2<T>) -> Result<Self> {
        check_shape("MoRA M", (layout.r_hat, layout.r_hat), mat.dim())?;
        check_finite("MoRA M", &mat.view())?;
        Ok(Mora { layout, mat })
    }
}

impl<T: Real> Adapter<T> for Mora<T> {
    fn kind(&self) -> MethodKind {
        MethodKind::Mora
    }
    fn shape(&self) -> (usize, usize) {
        (self.layout.m, self.layout.n)
    }
    fn factor_names(&self) -> Vec<String> {
        vec!["M".into()]
    }
    fn factors(&self) -> Vec<ArrayView2<'_, T>> {
        vec![self.mat.view()]
    }
    fn factors_mut(&mut self) -> Vec<ArrayViewMut2<'_, T>> {
        vec![self.mat.view_mut()]
    }
    fn delta(&self) -> Array2<T> {
        let l = &self.layout;
        let rows: Vec<Array2<T>> = (0..l.chunk_count())
            .map(|c| crate::linalg::gemm(self.mat.view(), l.psi::<T>(c).view()))
            .collect();
        let mut d = Array2::zeros((l.m, l.n));
        for o in 0..l.m {
            let (a, c) = l.row_of(o);
            d.row_mut(o).assign(&rows[c].row(a));
        }
        d
    }
    fn apply(&self, x: ArrayView2<'_, T>) -> Result<Array2<T>> {
        check_shape("batch X", (self.shape().1, x.ncols()), x.dim())?;
        let l = &self.layout;
        let mut y = Array2::zeros((l.m, x.ncols()));
        for (b, col) in x.columns().into_iter().enumerate() {
            let z: Vec<Array1<T>> = (0..l.chunk_count())
                .map(|c| self.mat.dot(&l.compress(col, c)))
                .collect();
            for o in 0..l.m {
                let (a, c) = l.row_of(o);
                y[[o, b]] = z[c][a];
            }
        }
        Ok(y)
    }
    fn grads(&self, g: ArrayView2<'_, T>) -> Result<Vec<Array2<T>>> {
        check_shape("gradient ∂L/∂ΔW", self.shape(), g.dim())?;
        let l = &self.layout;
        // ∂M[a, :] = Σ_{o: a(o) = a} Ψ_{c(o)}·G[o, :]ᵀ.
        let mut grad = Array2::zeros((l.r_hat, l.r_hat));
        for o in 0..l.m {
            let (a, c) = l.row_of(o);
            let z = l.compress(g.row(o), c);
            let mut row = grad.row_mut(a);
            row += &z;
        }
        Ok(vec![grad])
    }
}

/// MoRA as a method: r̂ and the compression type.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MoraSpec {
    pub r_hat: usize,
    pub kind: MoraType,
}

impl Default for MoraSpec {
    fn default() -> Self {
        MoraSpec {
            r_hat: 0,
            kind: MoraType::Rotated,
        }
    }
}

impl MoraSpec {
    /// MoRA's own rule for the r̂ of a LoRA rank r: round(√((m+n)·r)), rounded down to even for type 6.
    pub fn r_hat_for(lora_rank: usize, (m, n): (usize, usize), kind: MoraType) -> usize {
        let r = (((m + n) * lora_rank) as f64).sqrt() + 0.5;
        let r = r as usize;
        match kind {
            MoraType::Sum => r,
            MoraType::Rotated => r / 2 * 2,
        }
    }

    /// One factor, `mora_M` (r̂ × r̂).
    pub fn factors(&self, _shape: (usize, usize)) -> Vec<Factor> {
        vec![Factor::new("M", "mora_M", (self.r_hat, self.r_hat), 0)]
    }

    /// M = 0: ΔW = 0.
    pub fn init_adapter<T: Real>(&self, w0: ArrayView2<'_, T>) -> Result<Initialised<Mora<T>, T>> {
        let layout = MoraLayout::new(w0.dim(), self.r_hat, self.kind)?;
        Ok(Initialised {
            adapter: Mora::new(layout, Array2::zeros((self.r_hat, self.r_hat)))?,
            residual_base: None,
        })
    }

    /// Our format (docs/adapter-format.md): upstream PEFT has no MoRA.
    pub fn peft_config(&self, dropout: f32) -> Value {
        json!({
            "peft_type": "MORA", "format_version": 1,
            "r_hat": self.r_hat, "mora_type": self.kind.number(), "dropout": dropout,
        })
    }

    pub fn from_peft(f: &super::factor::PeftFields<'_>) -> Result<MoraSpec> {
        let kind = MoraType::from_number(
            f.cfg
                .get("mora_type")
                .and_then(Value::as_i64)
                .ok_or_else(|| f.bad("field 'mora_type' must be 1 or 6".into()))?,
        )?;
        Ok(MoraSpec {
            r_hat: f.uint("r_hat")?,
            kind,
        })
    }
}
