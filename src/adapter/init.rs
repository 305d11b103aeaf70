//! Initialisations: the generic building blocks (zeros, Kaiming-uniform, Gaussian, truncated SVD) and the
//! method-specific schemes built from them (LoRA's, PiSSA, HiRA's, the ABBA paper's and its Table 3 variants).
//!
//! A scheme whose ΔW is not zero at step 0 also returns the residual base `W0 − ΔW₀` that must replace W0 so the
//! adapted layer starts out computing exactly what the pretrained one did (PiSSA's rule).

use ndarray::{Array2, ArrayView2};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use super::scaling::{AbbaScale, LoraScale};
use super::{Abba, Adapter, Hira, Lora};
use crate::error::{AbbaError, Result};
use crate::linalg::{Real, Svd, check_rank, svd_randomized, svd_thin};

/// The negative slope `a` of `torch.nn.init.kaiming_uniform_`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum KaimingA {
    /// a = √5, PEFT's default for LoRA's A (bound 1/√fan_in).
    #[default]
    Sqrt5,
    /// a = 0, what the released ABBA code uses (bound √6/√fan_in).
    Zero,
}

impl KaimingA {
    /// The half-width of the uniform distribution for a given fan-in.
    pub fn bound(self, fan_in: usize) -> f64 {
        let a2: f64 = match self {
            KaimingA::Sqrt5 => 5.0,
            KaimingA::Zero => 0.0,
        };
        let gain = (2.0 / (1.0 + a2)).sqrt();
        gain * (3.0 / fan_in as f64).sqrt()
    }
}

/// U(−b, b) with b from Kaiming's rule for a `rows × cols` weight (fan-in = cols, as PyTorch).
pub fn kaiming_uniform<T: Real, R: Rng + ?Sized>(
    rows: usize,
    cols: usize,
    a: KaimingA,
    rng: &mut R,
) -> Array2<T> {
    let b = a.bound(cols.max(1));
    Array2::from_shape_simple_fn((rows, cols), || T::of(rng.random_range(-b..=b)))
}

/// i.i.d. N(0, std²).
pub fn gaussian<T: Real, R: Rng + ?Sized>(
    rows: usize,
    cols: usize,
    std: f64,
    rng: &mut R,
) -> Array2<T> {
    Array2::from_shape_simple_fn((rows, cols), || {
        let z: f64 = StandardNormal.sample(rng);
        T::of(std * z)
    })
}

/// Exact SVD, or the randomized one with `niter` power iterations (the released code: `svd_lowrank(niter=10)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SvdMethod {
    #[default]
    Exact,
    Randomized {
        niter: usize,
    },
}

/// The leading `start..start+r` singular triplets of `w`.
pub fn svd_components<T: Real, R: Rng + ?Sized>(
    w: ArrayView2<'_, T>,
    start: usize,
    r: usize,
    method: SvdMethod,
    rng: &mut R,
) -> Result<Svd<T>> {
    check_rank(start + r, w.dim())?;
    let svd = match method {
        SvdMethod::Exact => svd_thin(w)?,
        SvdMethod::Randomized { niter } => svd_randomized(w, start + r, niter, rng)?,
    };
    Ok(svd.components(start, r))
}

/// Balanced factors `(U_r Σ_r^½, Σ_r^½ V_rᵀ)` of the rank-r truncated SVD of `w`.
pub fn svd_factors<T: Real, R: Rng + ?Sized>(
    w: ArrayView2<'_, T>,
    r: usize,
    method: SvdMethod,
    rng: &mut R,
) -> Result<(Array2<T>, Array2<T>)> {
    Ok(svd_components(w, 0, r, method, rng)?.balanced_factors())
}

/// An initialised adapter and, when its ΔW₀ ≠ 0, the base that must replace W0 (W0 − ΔW₀).
#[derive(Clone, Debug)]
pub struct Initialised<A, T> {
    pub adapter: A,
    pub residual_base: Option<Array2<T>>,
}

impl<A, T> Initialised<A, T> {
    /// The same initialisation with the adapter wrapped (e.g. into [`super::AnyAdapter`]).
    pub fn map<B>(self, f: impl FnOnce(A) -> B) -> Initialised<B, T> {
        Initialised {
            adapter: f(self.adapter),
            residual_base: self.residual_base,
        }
    }
}

fn with_residual<A: Adapter<T>, T: Real>(adapter: A, w0: ArrayView2<'_, T>) -> Initialised<A, T> {
    let residual = &w0 - &adapter.delta();
    Initialised {
        adapter,
        residual_base: Some(residual),
    }
}

/// LoRA's initialisations.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum LoraInit {
    /// A Kaiming-uniform, B = 0 (PEFT's default).
    Standard { kaiming: KaimingA },
    /// A ~ N(0, 1/r²), B = 0 (PEFT's `init_lora_weights="gaussian"`).
    Gaussian,
    /// PiSSA: s·B·A = the top-r SVD part of W0; the base becomes the residual.
    Pissa { svd: SvdMethod },
    /// OLoRA: B = Q[:, :r], A = R[:r] of W0 = QR (no division by s); the base becomes W0 − s·B·A.
    Olora,
}

impl LoraInit {
    /// PiSSA and OLoRA read W0; the others only its shape.
    pub fn needs_w0(&self) -> bool {
        matches!(self, LoraInit::Pissa { .. } | LoraInit::Olora)
    }

    /// Whether the init changes the base weight (ΔW₀ ≠ 0, the residual replaces W0).
    pub fn changes_base(&self) -> bool {
        self.needs_w0()
    }

    /// The name a config writes (`kaiming`, `gaussian`, `pissa`, `olora`).
    pub fn name(&self) -> &'static str {
        match self {
            LoraInit::Standard { .. } => "kaiming",
            LoraInit::Gaussian => "gaussian",
            LoraInit::Pissa { .. } => "pissa",
            LoraInit::Olora => "olora",
        }
    }
}

pub fn init_lora<T: Real, R: Rng + ?Sized>(
    w0: ArrayView2<'_, T>,
    r: usize,
    scale: LoraScale,
    init: LoraInit,
    rng: &mut R,
) -> Result<Initialised<Lora<T>, T>> {
    let (m, n) = w0.dim();
    check_rank(r, (m, n))?;
    match init {
        LoraInit::Standard { kaiming } => Ok(Initialised {
            adapter: Lora::new(
                Array2::zeros((m, r)),
                kaiming_uniform(r, n, kaiming, rng),
                scale,
            )?,
            residual_base: None,
        }),
        LoraInit::Gaussian => Ok(Initialised {
            adapter: Lora::new(
                Array2::zeros((m, r)),
                gaussian(r, n, 1.0 / r as f64, rng),
                scale,
            )?,
            residual_base: None,
        }),
        LoraInit::Pissa { svd } => {
            let (b, a) = svd_factors(w0, r, svd, rng)?;
            // Divide by √s on each side so that s·B·A is exactly the SVD part, as PEFT does.
            let root = T::of(scale.value(r).sqrt());
            let lora = Lora::new(b / root, a / root, scale)?;
            Ok(with_residual(lora, w0))
        }
        LoraInit::Olora => {
            let (q, rr) = crate::linalg::qr_thin(w0)?;
            let b = q.slice(ndarray::s![.., ..r]).to_owned();
            let a = rr.slice(ndarray::s![..r, ..]).to_owned();
            Ok(with_residual(Lora::new(b, a, scale)?, w0))
        }
    }
}

/// HiRA's initialisation: A Kaiming-uniform, B = 0, so ΔW₀ = 0.
pub fn init_hira<T: Real, R: Rng + ?Sized>(
    w0: ArrayView2<'_, T>,
    r: usize,
    kaiming: KaimingA,
    rng: &mut R,
) -> Result<Hira<T>> {
    let (m, n) = w0.dim();
    check_rank(r, (m, n))?;
    Hira::new(
        w0.to_owned(),
        Array2::zeros((m, r)),
        kaiming_uniform(r, n, kaiming, rng),
    )
}

/// ABBA's initialisation schemes: the paper's final one and the five variants of its Table 3.
///
/// The paper describes the variants in one line each; "√W0" is read here as the pair of matrices
/// `sign(W0)·√|W0|` (first pair) and `√|W0|` (second pair), whose Hadamard product is W0. Variants whose ΔW₀ ≠ 0
/// return the residual base.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AbbaInit {
    /// B1 = UΣ^½, A1 = Σ^½Vᵀ (top r1 of W0), B2 = 0, A2 Kaiming-uniform. ΔW₀ = 0. (Table 3: 66.26 / 18.08)
    #[default]
    Paper,
    /// Pair 1 from the SVD of W0, pair 2 set so that B2·A2 is the all-ones matrix. (57.39 / 10.88)
    OnesSecond,
    /// Both pairs from the top components of √W0. (64.53 / 16.57)
    SqrtBoth,
    /// Pair 1 from the top r1 components of √W0, pair 2 from the next r2. (64.86 / 17.05)
    SqrtTopNext,
    /// Pair 2 from the top r2 components, pair 1 from the next r1. (64.79 / 17.16)
    SqrtNextTop,
    /// The paper's scheme on the second pair: B2 = UΣ^½, A2 = Σ^½Vᵀ (top r2 of W0), B1 = 0, A1 Kaiming. (66.19 / 18.06)
    SvdSecond,
}

impl AbbaInit {
    /// Whether the scheme's ΔW₀ ≠ 0, so that the residual W0 − ΔW₀ replaces the base (all but the paper's final
    /// scheme and its mirror image).
    pub fn changes_base(&self) -> bool {
        !matches!(self, AbbaInit::Paper | AbbaInit::SvdSecond)
    }

    /// Every scheme starts from the SVD (or square root) of W0.
    pub fn needs_w0(&self) -> bool {
        true
    }

    /// The name a config writes (`paper`, `ones-second`, …).
    pub fn name(self) -> &'static str {
        match self {
            AbbaInit::Paper => "paper",
            AbbaInit::OnesSecond => "ones-second",
            AbbaInit::SqrtBoth => "sqrt-both",
            AbbaInit::SqrtTopNext => "sqrt-top-next",
            AbbaInit::SqrtNextTop => "sqrt-next-top",
            AbbaInit::SvdSecond => "svd-second",
        }
    }

    pub const ALL: [AbbaInit; 6] = [
        AbbaInit::Paper,
        AbbaInit::OnesSecond,
        AbbaInit::SqrtBoth,
        AbbaInit::SqrtTopNext,
        AbbaInit::SqrtNextTop,
        AbbaInit::SvdSecond,
    ];
}

/// Options shared by the SVD-based schemes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct InitOptions {
    pub kaiming: KaimingA,
    pub svd: SvdMethod,
}

pub fn init_abba<T: Real, R: Rng + ?Sized>(
    w0: ArrayView2<'_, T>,
    r1: usize,
    r2: usize,
    scale: AbbaScale,
    init: AbbaInit,
    opts: InitOptions,
    rng: &mut R,
) -> Result<Initialised<Abba<T>, T>> {
    let (m, n) = w0.dim();
    check_rank(r1, (m, n))?;
    check_rank(r2, (m, n))?;
    if !w0.iter().all(|x| x.is_finite()) {
        return Err(AbbaError::NonFinite {
            what: "W0 given to the ABBA initialisation",
        });
    }
    let signed_sqrt = || w0.mapv(|x| x.signum() * x.abs().sqrt());
    let abs_sqrt = || w0.mapv(|x| x.abs().sqrt());
    let from = |w: &Array2<T>, start: usize, r: usize, rng: &mut R| {
        svd_components(w.view(), start, r, opts.svd, rng).map(|s| s.balanced_factors())
    };
    match init {
        AbbaInit::Paper | AbbaInit::SvdSecond => {
            let (r_svd, r_zero) = if init == AbbaInit::Paper {
                (r1, r2)
            } else {
                (r2, r1)
            };
            let (bs, as_) = svd_factors(w0, r_svd, opts.svd, rng)?;
            let (bz, az) = (
                Array2::zeros((m, r_zero)),
                kaiming_uniform(r_zero, n, opts.kaiming, rng),
            );
            let abba = if init == AbbaInit::Paper {
                Abba::new(bs, as_, bz, az, scale)?
            } else {
                Abba::new(bz, az, bs, as_, scale)?
            };
            Ok(Initialised {
                adapter: abba,
                residual_base: None,
            })
        }
        AbbaInit::OnesSecond => {
            let (b1, a1) = svd_factors(w0, r1, opts.svd, rng)?;
            let c = T::of(1.0 / (r2 as f64).sqrt());
            let abba = Abba::new(
                b1,
                a1,
                Array2::from_elem((m, r2), c),
                Array2::from_elem((r2, n), c),
                scale,
            )?;
            Ok(with_residual(abba, w0))
        }
        AbbaInit::SqrtBoth | AbbaInit::SqrtTopNext | AbbaInit::SqrtNextTop => {
            let (start1, start2) = match init {
                AbbaInit::SqrtBoth => (0, 0),
                AbbaInit::SqrtTopNext => (0, r1),
                _ => (r2, 0),
            };
            let (b1, a1) = from(&signed_sqrt(), start1, r1, rng)?;
            let (b2, a2) = from(&abs_sqrt(), start2, r2, rng)?;
            Ok(with_residual(Abba::new(b1, a1, b2, a2, scale)?, w0))
        }
    }
}
