//! Where an iterative fit starts: a study parameter, because for a non-convex fit like ABBA's it matters.

use ndarray::Array2;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::Fitted;
use crate::adapter::init::{
    AbbaInit, InitOptions, KaimingA, LoraInit, gaussian, init_abba, init_hira, init_lora,
};
use crate::adapter::{
    Abba, AbbaChain, AbbaSpec, ChainSpec, Full, Hira, HiraSpec, Lora, LoraSpec, Method,
};
use crate::error::{AbbaError, Result};
use crate::linalg::{Real, Svd};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum FitInit {
    /// From the target's SVD: LoRA = its top-r part; ABBA pair 1 = its top-r1 part and pair 2 ≈ all-ones
    /// (1/√r2 entries with relative noise `noise`), so the fit starts at the rank-r1 optimum; HiRA and full as
    /// `paper`.
    TargetSvd {
        #[serde(default = "default_noise")]
        noise: f64,
    },
    /// Every factor i.i.d. N(0, std²).
    Random { std: f64 },
    /// The fine-tuning initialisations, from the study's W0: ABBA's paper init (B1A1 = top-r1 SVD of W0,
    /// B2 = 0), LoRA's and HiRA's (B = 0, A Kaiming-uniform). ΔW₀ = 0 for all.
    Paper,
}

fn default_noise() -> f64 {
    0.01
}

impl FitInit {
    pub fn name(&self) -> String {
        match self {
            FitInit::TargetSvd { noise } => format!("target-svd(noise={noise})"),
            FitInit::Random { std } => format!("random(std={std})"),
            FitInit::Paper => "paper".into(),
        }
    }
}

fn near_ones<T: Real, R: Rng + ?Sized>(
    rows: usize,
    cols: usize,
    r: usize,
    noise: f64,
    rng: &mut R,
) -> Array2<T> {
    let c = 1.0 / (r as f64).sqrt();
    gaussian::<f64, _>(rows, cols, noise, rng).mapv(|z| T::of(c * (1.0 + z)))
}

fn cast<T: Real>(a: &Array2<f64>) -> Array2<T> {
    a.mapv(T::of)
}

fn need_w0(w0: Option<&Array2<f64>>, what: &str) -> Result<Array2<f64>> {
    w0.cloned().ok_or_else(|| {
        AbbaError::InvalidArgument(format!(
            "{what} needs a W0: add a `w0 = {{ kind = \"gaussian\" }}` line to the study"
        ))
    })
}

/// Builds the starting adapter for `config` (sizes and scales) on a target with SVD `target_svd`.
pub fn initialise<T: Real, R: Rng + ?Sized>(
    config: &Method,
    target_svd: &Svd<f64>,
    w0: Option<&Array2<f64>>,
    init: &FitInit,
    rng: &mut R,
) -> Result<Fitted<T>> {
    let (m, n) = (target_svd.u.nrows(), target_svd.vt.ncols());
    config.validate((m, n))?;
    let standard = LoraInit::Standard {
        kaiming: KaimingA::Sqrt5,
    };
    Ok(match (config, init) {
        (Method::Full, _) => Fitted::Full(Full::zeros(m, n)?),
        (Method::Lora(LoraSpec { r, scale, .. }), FitInit::TargetSvd { .. }) => {
            let root = scale.value(*r).sqrt();
            let (b, a) = target_svd.components(0, *r).balanced_factors();
            Fitted::Lora(Lora::new(cast(&(b / root)), cast(&(a / root)), *scale)?)
        }
        (Method::Lora(LoraSpec { r, scale, .. }), FitInit::Random { std }) => {
            Fitted::Lora(Lora::new(
                gaussian(m, *r, *std, rng),
                gaussian(*r, n, *std, rng),
                *scale,
            )?)
        }
        (Method::Lora(LoraSpec { r, scale, .. }), FitInit::Paper) => {
            let zeros = Array2::<T>::zeros((m, n));
            Fitted::Lora(init_lora(zeros.view(), *r, *scale, standard, rng)?.adapter)
        }
        (Method::Hira(HiraSpec { r, .. }), FitInit::Random { std }) => {
            let w0 = need_w0(w0, "HiRA")?;
            Fitted::Hira(Hira::new(
                cast(&w0),
                gaussian(m, *r, *std, rng),
                gaussian(*r, n, *std, rng),
            )?)
        }
        (Method::Hira(HiraSpec { r, .. }), _) => {
            let w0 = cast::<T>(&need_w0(w0, "HiRA")?);
            Fitted::Hira(init_hira(w0.view(), *r, KaimingA::Sqrt5, rng)?)
        }
        (
            Method::Abba(AbbaSpec {
                r1,
                r2,
                scale: abba_scale,
                ..
            }),
            FitInit::TargetSvd { noise },
        ) => {
            let root = abba_scale.value(*r1, *r2).sqrt();
            let (b1, a1) = target_svd.components(0, *r1).balanced_factors();
            Fitted::Abba(Abba::new(
                cast(&(b1 / root)),
                cast(&(a1 / root)),
                near_ones(m, *r2, *r2, *noise, rng),
                near_ones(*r2, n, *r2, *noise, rng),
                *abba_scale,
            )?)
        }
        (
            Method::Abba(AbbaSpec {
                r1,
                r2,
                scale: abba_scale,
                ..
            }),
            FitInit::Random { std },
        ) => Fitted::Abba(Abba::new(
            gaussian(m, *r1, *std, rng),
            gaussian(*r1, n, *std, rng),
            gaussian(m, *r2, *std, rng),
            gaussian(*r2, n, *std, rng),
            *abba_scale,
        )?),
        (
            Method::Abba(AbbaSpec {
                r1,
                r2,
                scale: abba_scale,
                ..
            }),
            FitInit::Paper,
        ) => {
            let w0 = cast::<T>(&need_w0(w0, "ABBA's paper initialisation")?);
            let opts = InitOptions {
                kaiming: KaimingA::Zero,
                ..Default::default()
            };
            Fitted::Abba(
                init_abba(w0.view(), *r1, *r2, *abba_scale, AbbaInit::Paper, opts, rng)?.adapter,
            )
        }
        // The other methods start where their fine-tuning initialisation puts them (ΔW = 0; DoRA on the study's
        // W0), or from Gaussian factors (DoRA's magnitude then ‖W0‖_row).
        (
            Method::Dora(_) | Method::Lokr(_) | Method::Mora(_) | Method::Kradapter(_),
            FitInit::Random { std },
        ) => {
            let w0_t = match config.needs_w0() {
                true => cast::<T>(&need_w0(w0, config.name())?),
                false => Array2::zeros((m, n)),
            };
            let mut f = config.init::<T, _>(w0_t.view(), rng)?.adapter;
            let magnitude = if let Fitted::Dora(d) = &f {
                Some(d.magnitude.clone())
            } else {
                None
            };
            for mut factor in f.as_adapter_mut().factors_mut() {
                let (r, c) = factor.dim();
                factor.assign(&gaussian::<T, _>(r, c, *std, rng));
            }
            if let (Fitted::Dora(d), Some(mag)) = (&mut f, magnitude) {
                d.magnitude = mag;
            }
            f
        }
        (Method::Dora(_) | Method::Lokr(_) | Method::Mora(_) | Method::Kradapter(_), _) => {
            let w0_t = match config.needs_w0() {
                true => cast::<T>(&need_w0(w0, config.name())?),
                false => Array2::zeros((m, n)),
            };
            config.init::<T, _>(w0_t.view(), rng)?.adapter
        }
        (
            Method::AbbaChain(ChainSpec {
                ranks,
                scale: abba_scale,
            }),
            init,
        ) => {
            let mut pairs = Vec::with_capacity(ranks.len());
            for (i, &r) in ranks.iter().enumerate() {
                pairs.push(match init {
                    FitInit::Random { std } => {
                        (gaussian(m, r, *std, rng), gaussian(r, n, *std, rng))
                    }
                    FitInit::TargetSvd { noise } if i > 0 => (
                        near_ones(m, r, r, *noise, rng),
                        near_ones(r, n, r, *noise, rng),
                    ),
                    FitInit::TargetSvd { .. } => {
                        let root = abba_scale.value_for(ranks).sqrt();
                        let (b, a) = target_svd.components(0, r).balanced_factors();
                        (cast(&(b / root)), cast(&(a / root)))
                    }
                    FitInit::Paper => {
                        return Err(AbbaError::InvalidArgument(
                            "ABBA chains have no paper initialisation: use target-svd or random"
                                .into(),
                        ));
                    }
                });
            }
            Fitted::Chain(AbbaChain::new(pairs, *abba_scale)?)
        }
    })
}
