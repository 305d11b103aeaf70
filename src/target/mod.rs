//! Target matrices for reconstruction studies: the paper's four (as inferred in docs/fig2-setup.md), other synthetic
//! families, and real matrices loaded from files.

mod load;
mod synthetic;

use std::path::PathBuf;

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::error::{AbbaError, Result};

pub use load::{load_image, load_npy, load_safetensors, safetensors_2d_names};

/// What to fit. Synthetic targets take their shape from the study; loaded ones from the file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum TargetSpec {
    /// Q of a QR of a Gaussian matrix: every singular value 1 (paper panel "Orthogonal").
    Orthogonal,
    /// U_k·V_kᵀ with orthonormal factors: rank k, flat spectrum (paper panel "Low-Rank", k = 128).
    LowRank {
        #[serde(default = "default_low_rank")]
        rank: usize,
    },
    /// U[0, 1) entries kept with probability `density` (paper panel "Sparse", 10 %).
    Sparse {
        #[serde(default = "default_density")]
        density: f64,
    },
    /// i.i.d. U[0, 1) (paper panel "Random").
    Random,
    /// i.i.d. N(0, 1).
    Gaussian,
    /// U·diag((i+1)^−exponent)·Vᵀ with orthonormal U, V.
    PowerLaw { exponent: f64 },
    /// (B1A1)⊙(B2A2) with Gaussian factors of ranks r1, r2: ABBA's home ground, rank r1·r2.
    AbbaStructured { r1: usize, r2: usize },
    /// W0⊙(B·A) with the study's named W0 and Gaussian B, A of rank `rank`: HiRA's home ground.
    HiraStructured { rank: usize },
    /// KRAdapter's frequency rows: sin(2π f_i t + φ_i) with f_i spread over [low, high] and up to 5 random
    /// harmonics (high: 1000–10000, low: 1–100).
    Sinusoid { low: f64, high: f64 },
    /// KRAdapter's PCA-whitened Gaussian noise: a flat spectrum at full rank.
    PcaWhitened,
    /// Gaussian entries kept with probability `keep`, scaled by 1/keep (KRAdapter's sparse noise, keep 0.1).
    DropoutGaussian {
        #[serde(default = "default_density")]
        keep: f64,
    },
    /// A Gaussian matrix truncated to its top `rank` singular values (KRAdapter's low-rank target).
    GaussianTruncated { rank: usize },
    /// A 2-D tensor from a safetensors file.
    Safetensors { path: PathBuf, tensor: String },
    /// A grey-scale image (PNG or JPEG), pixel values scaled to [0, 1].
    Image { path: PathBuf },
    /// A 2-D `.npy` array (float32 or float64, C or Fortran order).
    Npy { path: PathBuf },
}

fn default_low_rank() -> usize {
    128
}
fn default_density() -> f64 {
    0.1
}

impl TargetSpec {
    /// A short, stable name used in records and plots (prefix = the kind).
    pub fn name(&self) -> String {
        let file = |p: &PathBuf| {
            p.file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        match self {
            TargetSpec::Orthogonal => "orthogonal".into(),
            TargetSpec::LowRank { rank } => format!("low-rank-{rank}"),
            TargetSpec::Sparse { density } => format!("sparse-{density}"),
            TargetSpec::Random => "random".into(),
            TargetSpec::Gaussian => "gaussian".into(),
            TargetSpec::PowerLaw { exponent } => format!("power-law-{exponent}"),
            TargetSpec::AbbaStructured { r1, r2 } => format!("abba-structured-{r1}x{r2}"),
            TargetSpec::HiraStructured { rank } => format!("hira-structured-{rank}"),
            TargetSpec::Sinusoid { low, high } => format!("sinusoid-{low}-{high}"),
            TargetSpec::PcaWhitened => "pca-whitened".into(),
            TargetSpec::DropoutGaussian { keep } => format!("dropout-gaussian-{keep}"),
            TargetSpec::GaussianTruncated { rank } => format!("gaussian-truncated-{rank}"),
            TargetSpec::Safetensors { path, tensor } => {
                format!("safetensors:{}:{tensor}", file(path))
            }
            TargetSpec::Image { path } => format!("image:{}", file(path)),
            TargetSpec::Npy { path } => format!("npy:{}", file(path)),
        }
    }

    /// Whether building needs the study's W0.
    pub fn needs_w0(&self) -> bool {
        matches!(self, TargetSpec::HiraStructured { .. })
    }

    /// Builds the target. `shape` applies to synthetic targets; `w0` is required by `hira-structured`.
    pub fn build(
        &self,
        shape: (usize, usize),
        seed: u64,
        w0: Option<&Array2<f64>>,
    ) -> Result<Array2<f64>> {
        let (m, n) = shape;
        if !self.is_loaded() && (m == 0 || n == 0) {
            return Err(AbbaError::EmptyMatrix { rows: m, cols: n });
        }
        let t = match self {
            TargetSpec::Orthogonal => synthetic::orthogonal(m, n, seed)?,
            TargetSpec::LowRank { rank } => synthetic::low_rank(m, n, *rank, seed)?,
            TargetSpec::Sparse { density } => synthetic::sparse(m, n, *density, seed)?,
            TargetSpec::Random => synthetic::uniform01(m, n, seed),
            TargetSpec::Gaussian => synthetic::gaussian(m, n, seed),
            TargetSpec::PowerLaw { exponent } => synthetic::power_law(m, n, *exponent, seed)?,
            TargetSpec::AbbaStructured { r1, r2 } => {
                synthetic::abba_structured(m, n, *r1, *r2, seed)?
            }
            TargetSpec::HiraStructured { rank } => {
                let w0 = w0.ok_or_else(|| {
                    AbbaError::InvalidArgument(
                        "a hira-structured target needs the study's w0 (add a [w0] table)".into(),
                    )
                })?;
                if w0.dim() != shape {
                    return Err(AbbaError::ShapeMismatch {
                        what: "study W0".into(),
                        expected: shape,
                        got: w0.dim(),
                    });
                }
                synthetic::hira_structured(w0, *rank, seed)?
            }
            TargetSpec::Sinusoid { low, high } => synthetic::sinusoid(m, n, *low, *high, seed)?,
            TargetSpec::PcaWhitened => synthetic::pca_whitened(m, n, seed)?,
            TargetSpec::DropoutGaussian { keep } => synthetic::dropout_gaussian(m, n, *keep, seed)?,
            TargetSpec::GaussianTruncated { rank } => {
                synthetic::gaussian_truncated(m, n, *rank, seed)?
            }
            TargetSpec::Safetensors { path, tensor } => load_safetensors(path, tensor)?,
            TargetSpec::Image { path } => load_image(path)?,
            TargetSpec::Npy { path } => load_npy(path)?,
        };
        if let Some(((i, j), x)) = t.indexed_iter().find(|(_, x)| !x.is_finite()) {
            return Err(AbbaError::InvalidArgument(format!(
                "target {} has a non-finite value {x} at ({i}, {j}): clean the input first",
                self.name()
            )));
        }
        Ok(t)
    }

    pub fn is_loaded(&self) -> bool {
        matches!(
            self,
            TargetSpec::Safetensors { .. } | TargetSpec::Image { .. } | TargetSpec::Npy { .. }
        )
    }
}
