//! ABBA: ΔW = s·(B1·A1) ⊙ (B2·A2) with independent ranks r1, r2 (Singhal et al., arXiv 2505.14238).

use ndarray::{Array2, ArrayView2, ArrayViewMut2};
use rand::Rng;
use serde_json::{Value, json};

use super::factor::{Factor, PeftFields};
use super::init::{AbbaInit, InitOptions, Initialised, init_abba};
use super::khatri_rao::{col_kron, row_kron};
use super::scaling::AbbaScale;
use super::{Adapter, MethodKind, check_pair, check_shape};
use crate::error::{AbbaError, Result};
use crate::linalg::{Real, gemm};

#[derive(Clone, Debug)]
pub struct Abba<T> {
    pub b1: Array2<T>,
    pub a1: Array2<T>,
    pub b2: Array2<T>,
    pub a2: Array2<T>,
    /// The scale s actually applied.
    pub scale: T,
    /// How s was chosen (recorded with every run).
    pub convention: AbbaScale,
}

/// How ΔW·X is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardPath {
    /// Form P = B1A1, Q = B2A2 and ΔW = s·P⊙Q (m×n), then ΔW·X.
    Materialised,
    /// B_kr·(A_kr·X) with the r1r2-wide Khatri–Rao factors; never forms an m×n matrix.
    KhatriRao,
}

/// Multiply-adds and extra floats held for one ΔW·X with a batch of `batch` columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForwardCost {
    pub flops: usize,
    pub memory: usize,
}

impl ForwardPath {
    /// Cost of this path for an m×n layer with ranks r1, r2 and `batch` input columns.
    pub fn cost(self, (m, n): (usize, usize), r1: usize, r2: usize, batch: usize) -> ForwardCost {
        let k = r1 * r2;
        match self {
            ForwardPath::Materialised => ForwardCost {
                flops: (r1 + r2) * m * n + m * n + m * n * batch,
                memory: 3 * m * n,
            },
            ForwardPath::KhatriRao => ForwardCost {
                flops: k * (m + n) + k * (m + n) * batch,
                memory: k * (m + n) + k * batch,
            },
        }
    }

    /// The cheaper path in multiply-adds (ties go to Khatri–Rao, which also holds less memory).
    pub fn cheapest(shape: (usize, usize), r1: usize, r2: usize, batch: usize) -> ForwardPath {
        let kr = ForwardPath::KhatriRao.cost(shape, r1, r2, batch);
        let mat = ForwardPath::Materialised.cost(shape, r1, r2, batch);
        if kr.flops <= mat.flops {
            ForwardPath::KhatriRao
        } else {
            ForwardPath::Materialised
        }
    }
}

impl<T: Real> Abba<T> {
    pub fn new(
        b1: Array2<T>,
        a1: Array2<T>,
        b2: Array2<T>,
        a2: Array2<T>,
        convention: AbbaScale,
    ) -> Result<Self> {
        convention.validate()?;
        let (m, r1, n) = check_pair(
            &b1.view(),
            &a1.view(),
            "ABBA A1 (rows must equal B1's columns)",
        )?;
        let (m2, r2, n2) = check_pair(
            &b2.view(),
            &a2.view(),
            "ABBA A2 (rows must equal B2's columns)",
        )?;
        if (m, n) != (m2, n2) {
            return Err(AbbaError::ShapeMismatch {
                what: "ABBA second pair's update B2·A2".into(),
                expected: (m, n),
                got: (m2, n2),
            });
        }
        let scale = T::of(convention.value(r1, r2));
        Ok(Abba {
            b1,
            a1,
            b2,
            a2,
            scale,
            convention,
        })
    }

    pub fn ranks(&self) -> (usize, usize) {
        (self.a1.nrows(), self.a2.nrows())
    }

    /// P = B1·A1 and Q = B2·A2.
    pub fn pair_products(&self) -> (Array2<T>, Array2<T>) {
        (
            gemm(self.b1.view(), self.a1.view()),
            gemm(self.b2.view(), self.a2.view()),
        )
    }

    /// The exact Khatri–Rao factors with s folded into B: ΔW = B_kr·A_kr, rank ≤ r1·r2.
    pub fn khatri_rao_factors(&self) -> (Array2<T>, Array2<T>) {
        let mut bkr = row_kron(self.b1.view(), self.b2.view());
        bkr *= self.scale;
        (bkr, col_kron(self.a1.view(), self.a2.view()))
    }

    /// ΔW·X through the chosen path.
    pub fn apply_with(&self, x: ArrayView2<'_, T>, path: ForwardPath) -> Result<Array2<T>> {
        check_shape("batch X", (self.shape().1, x.ncols()), x.dim())?;
        Ok(match path {
            ForwardPath::Materialised => gemm(self.delta().view(), x),
            ForwardPath::KhatriRao => {
                let (bkr, akr) = self.khatri_rao_factors();
                gemm(bkr.view(), gemm(akr.view(), x).view())
            }
        })
    }

    /// Gradients given precomputed pair products (fitters reuse P and Q from the forward pass).
    pub fn grads_with_products(
        &self,
        g: ArrayView2<'_, T>,
        p: &Array2<T>,
        q: &Array2<T>,
    ) -> [Array2<T>; 4] {
        let mut gq = &g * q;
        gq *= self.scale;
        let mut gp = &g * p;
        gp *= self.scale;
        [
            gemm(gq.view(), self.a1.t()),
            gemm(self.b1.t(), gq.view()),
            gemm(gp.view(), self.a2.t()),
            gemm(self.b2.t(), gp.view()),
        ]
    }
}

impl<T: Real> Adapter<T> for Abba<T> {
    fn kind(&self) -> MethodKind {
        MethodKind::Abba
    }
    fn shape(&self) -> (usize, usize) {
        (self.b1.nrows(), self.a1.ncols())
    }
    fn factor_names(&self) -> Vec<String> {
        ["B1", "A1", "B2", "A2"].map(String::from).to_vec()
    }
    fn factors(&self) -> Vec<ArrayView2<'_, T>> {
        vec![
            self.b1.view(),
            self.a1.view(),
            self.b2.view(),
            self.a2.view(),
        ]
    }
    fn factors_mut(&mut self) -> Vec<ArrayViewMut2<'_, T>> {
        vec![
            self.b1.view_mut(),
            self.a1.view_mut(),
            self.b2.view_mut(),
            self.a2.view_mut(),
        ]
    }
    fn delta(&self) -> Array2<T> {
        let (p, q) = self.pair_products();
        let mut d = p * &q;
        d *= self.scale;
        d
    }
    fn apply(&self, x: ArrayView2<'_, T>) -> Result<Array2<T>> {
        let (r1, r2) = self.ranks();
        self.apply_with(x, ForwardPath::cheapest(self.shape(), r1, r2, x.ncols()))
    }
    fn grads(&self, g: ArrayView2<'_, T>) -> Result<Vec<Array2<T>>> {
        check_shape("gradient ∂L/∂ΔW", self.shape(), g.dim())?;
        let (p, q) = self.pair_products();
        Ok(self.grads_with_products(g, &p, &q).into())
    }
}

/// ABBA as a method: ranks, scale convention and initialisation (the paper's or a Table 3 variant).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AbbaSpec {
    pub r1: usize,
    pub r2: usize,
    pub scale: AbbaScale,
    pub init: AbbaInit,
}

impl Default for AbbaSpec {
    fn default() -> Self {
        AbbaSpec {
            r1: 0,
            r2: 0,
            scale: AbbaScale::Paper { alpha: 16.0 },
            init: AbbaInit::Paper,
        }
    }
}

impl AbbaSpec {
    /// A_i: r_i×n, B_i: m×r_i. Our files (`abba_A1` …) list A1, B1, A2, B2; the ndarray adapter holds B1, A1, B2,
    /// A2; PEFT LoHa calls B1 `hada_w1_a` and A1 `hada_w1_b` (its w·a factors are the m×r ones).
    pub fn factors(&self, (m, n): (usize, usize)) -> Vec<Factor> {
        let (r1, r2) = (self.r1, self.r2);
        let f = |name, key, loha, shape, position| Factor {
            loha_key: Some(loha),
            ..Factor::new(name, key, shape, position)
        };
        vec![
            f("A1", "abba_A1", "hada_w1_b", (r1, n), 1),
            f("B1", "abba_B1", "hada_w1_a", (m, r1), 0),
            f("A2", "abba_A2", "hada_w2_b", (r2, n), 3),
            f("B2", "abba_B2", "hada_w2_a", (m, r2), 2),
        ]
    }

    pub fn init_adapter<T: Real, R: Rng + ?Sized>(
        &self,
        w0: ArrayView2<'_, T>,
        rng: &mut R,
    ) -> Result<Initialised<Abba<T>, T>> {
        self.scale.validate()?;
        init_abba(
            w0,
            self.r1,
            self.r2,
            self.scale,
            self.init,
            InitOptions::default(),
            rng,
        )
    }

    /// Our `ABBA` config (docs/adapter-format.md): the ranks, the scale applied and the convention it came from.
    pub fn peft_config(&self, dropout: f32) -> Value {
        json!({
            "peft_type": "ABBA",
            "format_version": 1, "r1": self.r1, "r2": self.r2,
            "scale": self.scale.value(self.r1, self.r2), "scale_convention": self.scale.name(),
            "dropout": dropout,
        })
    }

    /// PEFT's `LOHA` config, for an ABBA whose pairs have one rank and whose scale is LoHa's α/r.
    pub fn loha_config(&self) -> Result<Value> {
        match self.scale {
            AbbaScale::Loha { alpha } if self.r1 == self.r2 => Ok(json!({
                "peft_type": "LOHA",
                "r": self.r1, "alpha": alpha, "rank_dropout": 0.0, "module_dropout": 0.0,
                "use_effective_conv2d": false, "init_weights": true,
            })),
            _ => Err(AbbaError::InvalidArgument(
                "only an ABBA in LoHa form (r1 = r2, scale α/r) saves as LoHa: convert it with `abba export --to peft-loha`".into(),
            )),
        }
    }

    pub fn from_peft(f: &PeftFields<'_>) -> Result<AbbaSpec> {
        Ok(AbbaSpec {
            r1: f.uint("r1")?,
            r2: f.uint("r2")?,
            scale: AbbaScale::Explicit {
                scale: f.float("scale")?,
            },
            init: AbbaInit::Paper,
        })
    }

    pub fn from_loha(f: &PeftFields<'_>) -> Result<AbbaSpec> {
        let r = f.uint("r")?;
        Ok(AbbaSpec {
            r1: r,
            r2: r,
            scale: AbbaScale::Loha {
                alpha: f.float("alpha")?,
            },
            init: AbbaInit::Paper,
        })
    }
}
