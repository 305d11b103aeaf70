//! LoKr (PEFT / LyCORIS) and KronA (Edalati et al. 2022): a Kronecker product update
//!
//! ```text
//! ΔW = s·kron(W1, W2),   W1: f_out×f_in (the outer, block factor),   W2: (m/f_out)×(n/f_in),
//! ```
//!
//! so ΔW[i·P + p, j·Q + q] = s·W1[i, j]·W2[p, q]. LoKr makes W2 low rank (W2 = W2a·W2b) when r < max(P, Q)/2 and,
//! with `decompose_both`, W1 too; KronA keeps both factors full. The factor sizes come from PEFT's `factorization`
//! of m and n. ΔW·x never forms ΔW: with x reshaped to X (f_in × Q), ΔW·x = s·vec(W1·X·W2ᵀ).

use ndarray::{Array2, ArrayView2, ArrayViewMut2, Zip, s};
use rand::Rng;
use serde_json::{Value, json};

use super::factor::{Factor, PeftFields};
use super::init::{Initialised, KaimingA, kaiming_uniform};
use super::{Adapter, MethodKind, check_shape};
use crate::error::{AbbaError, Result};
use crate::linalg::{Real, gemm};

/// PEFT's (LyCORIS's) split of a dimension into a product (smaller first, except that a `factor` > 0 dividing it
/// is returned first as is); `factor = -1` picks the divisor pair nearest √dimension.
pub fn factorization(dimension: usize, factor: i64) -> (usize, usize) {
    if factor > 0 && dimension.is_multiple_of(factor as usize) {
        return (factor as usize, dimension / factor as usize);
    }
    let cap = if factor == -1 {
        dimension
    } else {
        factor.max(1) as usize
    };
    let (mut m, mut n) = (1, dimension);
    let length = m + n;
    while m < n {
        let mut next = m + 1;
        while !dimension.is_multiple_of(next) {
            next += 1;
        }
        let other = dimension / next;
        if next + other > length || next > cap {
            break;
        }
        (m, n) = (next, other);
    }
    (m.min(n), m.max(n))
}

/// One Kronecker factor: full, or a low-rank product a·b.
#[derive(Clone, Debug)]
pub enum KronPart<T> {
    Full(Array2<T>),
    LowRank(Array2<T>, Array2<T>),
}

impl<T: Real> KronPart<T> {
    pub fn matrix(&self) -> Array2<T> {
        match self {
            KronPart::Full(w) => w.clone(),
            KronPart::LowRank(a, b) => gemm(a.view(), b.view()),
        }
    }

    fn dim(&self) -> (usize, usize) {
        match self {
            KronPart::Full(w) => w.dim(),
            KronPart::LowRank(a, b) => (a.nrows(), b.ncols()),
        }
    }

    fn views(&self) -> Vec<ArrayView2<'_, T>> {
        match self {
            KronPart::Full(w) => vec![w.view()],
            KronPart::LowRank(a, b) => vec![a.view(), b.view()],
        }
    }

    fn views_mut(&mut self) -> Vec<ArrayViewMut2<'_, T>> {
        match self {
            KronPart::Full(w) => vec![w.view_mut()],
            KronPart::LowRank(a, b) => vec![a.view_mut(), b.view_mut()],
        }
    }

    /// Gradients of the factors given ∂L/∂(the matrix).
    fn grads(&self, g: Array2<T>) -> Vec<Array2<T>> {
        match self {
            KronPart::Full(_) => vec![g],
            KronPart::LowRank(a, b) => vec![gemm(g.view(), b.t()), gemm(a.t(), g.view())],
        }
    }
}

#[derive(Clone, Debug)]
pub struct Lokr<T> {
    /// Outer factor, f_out × f_in.
    pub w1: KronPart<T>,
    /// Inner factor, (m/f_out) × (n/f_in).
    pub w2: KronPart<T>,
    pub scale: T,
}

impl<T: Real> Lokr<T> {
    pub fn new(w1: KronPart<T>, w2: KronPart<T>, scale: f64) -> Result<Self> {
        for (what, part) in [("LoKr W1", &w1), ("LoKr W2", &w2)] {
            if let KronPart::LowRank(a, b) = part {
                check_shape(what, (a.ncols(), b.ncols()), b.dim())?;
            }
            let (r, c) = part.dim();
            if r == 0 || c == 0 {
                return Err(AbbaError::EmptyMatrix { rows: r, cols: c });
            }
        }
        Ok(Lokr {
            w1,
            w2,
            scale: T::of(scale),
        })
    }

    /// (f_out, f_in, P, Q).
    fn blocks(&self) -> (usize, usize, usize, usize) {
        let (f1, f2) = self.w1.dim();
        let (p, q) = self.w2.dim();
        (f1, f2, p, q)
    }
}

impl<T: Real> Adapter<T> for Lokr<T> {
    fn kind(&self) -> MethodKind {
        MethodKind::Lokr
    }
    fn shape(&self) -> (usize, usize) {
        let (f1, f2, p, q) = self.blocks();
        (f1 * p, f2 * q)
    }
    fn factor_names(&self) -> Vec<String> {
        let names = |part: &KronPart<T>, w: &str| match part {
            KronPart::Full(_) => vec![w.to_string()],
            KronPart::LowRank(..) => vec![format!("{w}_a"), format!("{w}_b")],
        };
        let mut out = names(&self.w1, "w1");
        out.extend(names(&self.w2, "w2"));
        out
    }
    fn factors(&self) -> Vec<ArrayView2<'_, T>> {
        let mut out = self.w1.views();
        out.extend(self.w2.views());
        out
    }
    fn factors_mut(&mut self) -> Vec<ArrayViewMut2<'_, T>> {
        let mut out = self.w1.views_mut();
        out.extend(self.w2.views_mut());
        out
    }
    fn delta(&self) -> Array2<T> {
        let (w1, w2) = (self.w1.matrix(), self.w2.matrix());
        let (f1, f2, p, q) = self.blocks();
        let mut d = Array2::zeros((f1 * p, f2 * q));
        for i in 0..f1 {
            for j in 0..f2 {
                let c = w1[[i, j]] * self.scale;
                Zip::from(d.slice_mut(s![i * p..(i + 1) * p, j * q..(j + 1) * q]))
                    .and(&w2)
                    .for_each(|o, &w| *o = c * w);
            }
        }
        d
    }
    fn apply(&self, x: ArrayView2<'_, T>) -> Result<Array2<T>> {
        check_shape("batch X", (self.shape().1, x.ncols()), x.dim())?;
        let (w1, w2) = (self.w1.matrix(), self.w2.matrix());
        let (f1, f2, p, q) = self.blocks();
        let mut y = Array2::zeros((f1 * p, x.ncols()));
        for (c, col) in x.columns().into_iter().enumerate() {
            let xm = Array2::from_shape_fn((f2, q), |(j, k)| col[j * q + k]);
            let out = gemm(gemm(w1.view(), xm.view()).view(), w2.t());
            for i in 0..f1 {
                for k in 0..p {
                    y[[i * p + k, c]] = self.scale * out[[i, k]];
                }
            }
        }
        Ok(y)
    }
    fn grads(&self, g: ArrayView2<'_, T>) -> Result<Vec<Array2<T>>> {
        check_shape("gradient ∂L/∂ΔW", self.shape(), g.dim())?;
        let (w1, w2) = (self.w1.matrix(), self.w2.matrix());
        let (f1, f2, p, q) = self.blocks();
        let mut g1 = Array2::zeros((f1, f2));
        let mut g2 = Array2::zeros((p, q));
        for i in 0..f1 {
            for j in 0..f2 {
                let block = g.slice(s![i * p..(i + 1) * p, j * q..(j + 1) * q]);
                g1[[i, j]] = self.scale
                    * Zip::from(&block)
                        .and(&w2)
                        .fold(T::zero(), |acc, &x, &w| acc + x * w);
                let c = self.scale * w1[[i, j]];
                Zip::from(&mut g2).and(&block).for_each(|o, &x| *o += c * x);
            }
        }
        let mut out = self.w1.grads(g1);
        out.extend(self.w2.grads(g2));
        Ok(out)
    }
}

/// LoKr (or KronA) as a method.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LokrSpec {
    /// PEFT's `decompose_factor`: −1 picks the divisor pair nearest √m (and √n); f > 0 dividing m uses f_out = f.
    pub factor: i64,
    /// The rank of a low-rank factor (and the r of the scale α/r).
    pub r: usize,
    pub alpha: f64,
    /// Also factor W1 when it is large enough (PEFT's `decompose_both`).
    pub decompose_both: bool,
    /// KronA: both factors full whatever r is.
    pub krona: bool,
}

impl Default for LokrSpec {
    fn default() -> Self {
        LokrSpec {
            factor: -1,
            r: 0,
            alpha: 16.0,
            decompose_both: false,
            krona: false,
        }
    }
}

/// The shapes of a LoKr on one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KronLayout {
    pub f_out: usize,
    pub f_in: usize,
    pub p: usize,
    pub q: usize,
    pub w1_low_rank: bool,
    pub w2_low_rank: bool,
}

impl LokrSpec {
    pub fn name(&self) -> &'static str {
        if self.krona { "krona" } else { "lokr" }
    }

    /// PEFT's rule: W2 is low rank iff r < max(P, Q)/2; W1 too with `decompose_both` and r < max(f_out, f_in)/2.
    pub fn layout(&self, (m, n): (usize, usize)) -> KronLayout {
        let (f_out, p) = factorization(m, self.factor);
        let (f_in, q) = factorization(n, self.factor);
        let low = |a: usize, b: usize| (self.r as f64) < a.max(b) as f64 / 2.0;
        KronLayout {
            f_out,
            f_in,
            p,
            q,
            w1_low_rank: !self.krona && self.decompose_both && low(f_out, f_in),
            w2_low_rank: !self.krona && low(p, q),
        }
    }

    /// α/r, as PEFT (also when both factors are full); KronA's fixed scalar is α (r plays no part).
    pub fn scale(&self) -> f64 {
        if self.krona {
            self.alpha
        } else {
            self.alpha / self.r.max(1) as f64
        }
    }

    /// `lokr_w1` (or `lokr_w1_a`, `lokr_w1_b`), then `lokr_w2` (or `lokr_w2_a`, `lokr_w2_b`): PEFT's keys, in the
    /// order of the ndarray adapter's factors.
    pub fn factors(&self, shape: (usize, usize)) -> Vec<Factor> {
        let l = self.layout(shape);
        let mut out = Vec::new();
        let mut part = |w: &str, rows: usize, cols: usize, low: bool| {
            let at = out.len();
            if low {
                out.push(Factor::new(
                    &format!("{w}_a"),
                    key(w, "_a"),
                    (rows, self.r),
                    at,
                ));
                out.push(Factor::new(
                    &format!("{w}_b"),
                    key(w, "_b"),
                    (self.r, cols),
                    at + 1,
                ));
            } else {
                out.push(Factor::new(w, key(w, ""), (rows, cols), at));
            }
        };
        part("w1", l.f_out, l.f_in, l.w1_low_rank);
        part("w2", l.p, l.q, l.w2_low_rank);
        out
    }

    /// W1 (or W1a) = 0, everything else Kaiming-uniform (a = √5): ΔW = 0, as PEFT's default.
    pub fn init_adapter<T: Real, R: Rng + ?Sized>(
        &self,
        w0: ArrayView2<'_, T>,
        rng: &mut R,
    ) -> Result<Initialised<Lokr<T>, T>> {
        let l = self.layout(w0.dim());
        let k = |rows, cols, rng: &mut R| kaiming_uniform(rows, cols, KaimingA::Sqrt5, rng);
        let w1 = if l.w1_low_rank {
            let b = k(self.r, l.f_in, rng);
            KronPart::LowRank(Array2::zeros((l.f_out, self.r)), b)
        } else {
            KronPart::Full(Array2::zeros((l.f_out, l.f_in)))
        };
        let w2 = if l.w2_low_rank {
            let a = k(l.p, self.r, rng);
            KronPart::LowRank(a, k(self.r, l.q, rng))
        } else {
            KronPart::Full(k(l.p, l.q, rng))
        };
        Ok(Initialised {
            adapter: Lokr::new(w1, w2, self.scale())?,
            residual_base: None,
        })
    }

    /// PEFT's `LOKR` config. KronA is written as a LoKr whose r is too large for any factor to be low rank, with
    /// α = s·r so that PEFT's α/r is KronA's scale.
    pub fn peft_config(&self, dropout: f32) -> Value {
        let (r, alpha) = if self.krona {
            (KRONA_R, self.alpha * KRONA_R as f64)
        } else {
            (self.r, self.alpha)
        };
        json!({
            "peft_type": "LOKR",
            "r": r, "alpha": alpha, "decompose_factor": self.factor, "decompose_both": self.decompose_both,
            "rank_dropout": 0.0, "module_dropout": dropout, "rank_dropout_scale": false,
            "use_effective_conv2d": false, "init_weights": true,
        })
    }

    pub fn from_peft(f: &PeftFields<'_>) -> Result<LokrSpec> {
        let factor = f
            .cfg
            .get("decompose_factor")
            .and_then(Value::as_i64)
            .unwrap_or(-1);
        let r = f.uint("r")?;
        let alpha = f.float("alpha")?;
        Ok(LokrSpec {
            factor,
            r,
            alpha,
            decompose_both: f.flag("decompose_both"),
            krona: false,
        })
    }
}

/// The r a KronA is saved with in PEFT's LoKr format: larger than twice any layer dimension, so both factors load
/// full.
const KRONA_R: usize = 1 << 24;

fn key(w: &str, suffix: &str) -> &'static str {
    match (w, suffix) {
        ("w1", "") => "lokr_w1",
        ("w1", "_a") => "lokr_w1_a",
        ("w1", _) => "lokr_w1_b",
        (_, "") => "lokr_w2",
        (_, "_a") => "lokr_w2_a",
        _ => "lokr_w2_b",
    }
}

/// The nearest Kronecker product (Van Loan & Pitsianis 1993): the A (f1×f2) and B (p×q) minimising ‖W − A⊗B‖_F,
/// from the rank-1 SVD of the rearrangement R(W)[i1·f2 + j1, i2·q + j2] = W[i1·p + i2, j1·q + j2], which maps
/// A⊗B to vec(A)·vec(B)ᵀ. Returns (A, B, the error ‖W − A⊗B‖_F).
pub fn nearest_kronecker<T: Real>(
    w: ArrayView2<'_, T>,
    (f1, f2): (usize, usize),
) -> Result<(Array2<T>, Array2<T>, f64)> {
    let (m, n) = w.dim();
    if f1 == 0 || f2 == 0 || !m.is_multiple_of(f1) || !n.is_multiple_of(f2) {
        return Err(AbbaError::InvalidArgument(format!(
            "a {f1}×{f2} outer factor does not tile a {m}×{n} matrix: both must divide"
        )));
    }
    let (p, q) = (m / f1, n / f2);
    let r = rearrange(w, (f1, f2));
    let svd = crate::linalg::svd_thin(r.view())?;
    let root = svd.s[0].f64().sqrt();
    let a = Array2::from_shape_fn((f1, f2), |(i, j)| svd.u[[i * f2 + j, 0]] * T::of(root));
    let b = Array2::from_shape_fn((p, q), |(i, j)| svd.vt[[0, i * q + j]] * T::of(root));
    let tail: f64 = svd.s.iter().skip(1).map(|x| x.f64() * x.f64()).sum();
    Ok((a, b, tail.sqrt()))
}

/// R(W) of [`nearest_kronecker`]: (f1·f2) × (p·q).
pub fn rearrange<T: Real>(w: ArrayView2<'_, T>, (f1, f2): (usize, usize)) -> Array2<T> {
    let (m, n) = w.dim();
    let (p, q) = (m / f1, n / f2);
    Array2::from_shape_fn((f1 * f2, p * q), |(row, col)| {
        let (i1, j1) = (row / f2, row % f2);
        let (i2, j2) = (col / q, col % q);
        w[[i1 * p + i2, j1 * q + j2]]
    })
}
