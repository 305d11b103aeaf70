//! KRAdapter (Albert et al., ICCV 2025): a full-rank update whose rows (or columns) are Kronecker products,
//! as the published `KRAdapterLinearLayer` computes it.
//!
//! With k = min(m, n), r = ⌊√k⌋ and d the smallest integer with r(r + d) ≥ max(m, n), U is k×r and V is
//! k×(r + d). Each of the k short-side lines of ΔW is s·kron(V_i, U_i) cropped to the long side:
//! - m ≤ n: row o of ΔW is s·kron(V_o, U_o)[:n], i.e. ΔW[o, i] = s·V[o, ⌊i/r⌋]·U[o, i mod r];
//! - m > n: column i of ΔW is s·kron(V_i, U_i)[:m].
//!
//! ΔW·x never needs ΔW: for m ≤ n, y[o] = s·Σ_a V[o, a]·(U_o · x[a·r .. a·r + r]) — the Khatri–Rao structure.
//! (The published layer's `merge` adds ΔWᵀ, which is wrong for every non-square layer; ours merges ΔW.)

use ndarray::{Array2, ArrayView2, ArrayViewMut2};
use rand::Rng;
use serde_json::{Value, json};

use super::factor::{Factor, PeftFields};
use super::init::Initialised;
use super::{Adapter, MethodKind, check_finite, check_shape};
use crate::error::Result;
use crate::linalg::Real;

/// k, r and d of a KRAdapter on an m×n layer.
pub fn kr_sizes((m, n): (usize, usize)) -> (usize, usize, usize) {
    let k = m.min(n);
    let r = (k as f64).sqrt().floor() as usize;
    let r = r.max(1);
    let long = m.max(n);
    let d = long.div_ceil(r).saturating_sub(r);
    (k, r, d)
}

#[derive(Clone, Debug)]
pub struct KrAdapter<T> {
    /// k × r.
    pub u: Array2<T>,
    /// k × (r + d).
    pub v: Array2<T>,
    pub scale: T,
    shape: (usize, usize),
}

impl<T: Real> KrAdapter<T> {
    pub fn new(shape: (usize, usize), u: Array2<T>, v: Array2<T>, scale: f64) -> Result<Self> {
        let (k, r, d) = kr_sizes(shape);
        check_shape("KRAdapter U", (k, r), u.dim())?;
        check_shape("KRAdapter V", (k, r + d), v.dim())?;
        check_finite("KRAdapter U", &u.view())?;
        check_finite("KRAdapter V", &v.view())?;
        Ok(KrAdapter {
            u,
            v,
            scale: T::of(scale),
            shape,
        })
    }

    fn wide(&self) -> bool {
        self.shape.0 <= self.shape.1
    }

    /// The long side's length (n when m ≤ n).
    fn long(&self) -> usize {
        self.shape.0.max(self.shape.1)
    }
}

impl<T: Real> Adapter<T> for KrAdapter<T> {
    fn kind(&self) -> MethodKind {
        MethodKind::Kradapter
    }
    fn shape(&self) -> (usize, usize) {
        self.shape
    }
    fn factor_names(&self) -> Vec<String> {
        vec!["U".into(), "V".into()]
    }
    fn factors(&self) -> Vec<ArrayView2<'_, T>> {
        vec![self.u.view(), self.v.view()]
    }
    fn factors_mut(&mut self) -> Vec<ArrayViewMut2<'_, T>> {
        vec![self.u.view_mut(), self.v.view_mut()]
    }
    fn delta(&self) -> Array2<T> {
        let r = self.u.ncols();
        let mut lines = Array2::zeros((self.u.nrows(), self.long()));
        for ((mut line, u), v) in lines
            .rows_mut()
            .into_iter()
            .zip(self.u.rows())
            .zip(self.v.rows())
        {
            for (j, x) in line.iter_mut().enumerate() {
                *x = self.scale * v[j / r] * u[j % r];
            }
        }
        if self.wide() {
            lines
        } else {
            lines.reversed_axes().as_standard_layout().to_owned()
        }
    }
    fn apply(&self, x: ArrayView2<'_, T>) -> Result<Array2<T>> {
        check_shape("batch X", (self.shape.1, x.ncols()), x.dim())?;
        let r = self.u.ncols();
        let (m, n) = self.shape;
        let mut y = Array2::zeros((m, x.ncols()));
        if self.wide() {
            // y[o] = s·Σ_a V[o, a]·Σ_b U[o, b]·x[a·r + b].
            for (b, col) in x.columns().into_iter().enumerate() {
                for o in 0..m {
                    let (u, v) = (self.u.row(o), self.v.row(o));
                    let mut acc = T::zero();
                    for (a, &va) in v.iter().enumerate() {
                        let mut inner = T::zero();
                        for (c, &uc) in u.iter().enumerate() {
                            let i = a * r + c;
                            if i < n {
                                inner += uc * col[i];
                            }
                        }
                        acc += va * inner;
                    }
                    y[[o, b]] = self.scale * acc;
                }
            }
        } else {
            // Column i of ΔW is s·kron(V_i, U_i)[:m]: y += x[i]·that column.
            for (b, col) in x.columns().into_iter().enumerate() {
                for i in 0..n {
                    let xi = self.scale * col[i];
                    let (u, v) = (self.u.row(i), self.v.row(i));
                    for o in 0..m {
                        y[[o, b]] += xi * v[o / r] * u[o % r];
                    }
                }
            }
        }
        Ok(y)
    }
    fn grads(&self, g: ArrayView2<'_, T>) -> Result<Vec<Array2<T>>> {
        check_shape("gradient ∂L/∂ΔW", self.shape, g.dim())?;
        let r = self.u.ncols();
        let lines = if self.wide() { g } else { g.reversed_axes() };
        let mut gu = Array2::zeros(self.u.dim());
        let mut gv = Array2::zeros(self.v.dim());
        for (line_idx, line) in lines.rows().into_iter().enumerate() {
            let (u, v) = (self.u.row(line_idx), self.v.row(line_idx));
            for (j, &gj) in line.iter().enumerate() {
                let (a, b) = (j / r, j % r);
                gu[[line_idx, b]] += self.scale * gj * v[a];
                gv[[line_idx, a]] += self.scale * gj * u[b];
            }
        }
        Ok(vec![gu, gv])
    }
}

/// KRAdapter as a method: only its scale (the sizes follow from the layer shape).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KrAdapterSpec {
    pub scale: f64,
}

impl Default for KrAdapterSpec {
    /// The published layer's default scale, 2.
    fn default() -> Self {
        KrAdapterSpec { scale: 2.0 }
    }
}

impl KrAdapterSpec {
    /// `kr_U` (k × r), `kr_V` (k × (r + d)).
    pub fn factors(&self, shape: (usize, usize)) -> Vec<Factor> {
        let (k, r, d) = kr_sizes(shape);
        vec![
            Factor::new("U", "kr_U", (k, r), 0),
            Factor::new("V", "kr_V", (k, r + d), 1),
        ]
    }

    /// U = 0, V Kaiming-uniform with a = 5 (not √5) over fan-in r + d, as the published layer: ΔW = 0.
    pub fn init_adapter<T: Real, R: Rng + ?Sized>(
        &self,
        w0: ArrayView2<'_, T>,
        rng: &mut R,
    ) -> Result<Initialised<KrAdapter<T>, T>> {
        let shape = w0.dim();
        let (k, r, d) = kr_sizes(shape);
        let fan_in = (r + d) as f64;
        // kaiming_uniform_(a = 5): gain √(2/(1 + 25)), bound gain·√(3/fan_in).
        let bound = (2.0f64 / 26.0).sqrt() * (3.0 / fan_in).sqrt();
        let v =
            Array2::from_shape_simple_fn((k, r + d), || T::of(rng.random_range(-bound..=bound)));
        Ok(Initialised {
            adapter: KrAdapter::new(shape, Array2::zeros((k, r)), v, self.scale)?,
            residual_base: None,
        })
    }

    /// Our format (docs/adapter-format.md): PEFT has no KRAdapter.
    pub fn peft_config(&self, dropout: f32) -> Value {
        json!({
            "peft_type": "KRADAPTER", "format_version": 1, "scale": self.scale, "dropout": dropout,
        })
    }

    pub fn from_peft(f: &PeftFields<'_>) -> Result<KrAdapterSpec> {
        Ok(KrAdapterSpec {
            scale: f.float("scale")?,
        })
    }
}
