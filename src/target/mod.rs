//! Target matrices for reconstruction studies: the paper's four (as inferred in docs/fig2-setup.md), other synthetic
//! families, and real matrices loaded from files.

mod checkpoint;
mod load;
mod synthetic;

use std::path::PathBuf;

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::error::{AbbaError, Result};

pub use checkpoint::{Checkpoint, selects};
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
    /// A 2-D tensor from a safetensors file; `w0` names the tensor of the same file that HiRA, DoRA, PiSSA and the
    /// paper init use as this target's base weight (the study's `w0` otherwise).
    Safetensors {
        path: PathBuf,
        tensor: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        w0: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        label: Option<String>,
    },
    /// A grey-scale image (PNG or JPEG), pixel values scaled to [0, 1].
    Image {
        path: PathBuf,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        label: Option<String>,
    },
    /// A 2-D `.npy` array (float32 or float64, C or Fortran order).
    Npy {
        path: PathBuf,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        label: Option<String>,
    },
    /// The update fine-tuning made to a weight: `tuned − base`, each a safetensors file or a Hugging Face model
    /// directory. `tensor` is a name or a glob over the model's 2-D tensors (`*.q_proj`, `layers.*.mlp.*`; see
    /// [`selects`]): a glob becomes one target per tensor. The base tensor is the target's W0.
    Delta {
        base: PathBuf,
        tuned: PathBuf,
        tensor: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        label: Option<String>,
    },
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
            TargetSpec::Safetensors { label: Some(l), .. }
            | TargetSpec::Image { label: Some(l), .. }
            | TargetSpec::Npy { label: Some(l), .. }
            | TargetSpec::Delta { label: Some(l), .. } => l.clone(),
            TargetSpec::Safetensors { path, tensor, .. } => {
                format!("safetensors:{}:{tensor}", file(path))
            }
            TargetSpec::Image { path, .. } => format!("image:{}", file(path)),
            TargetSpec::Npy { path, .. } => format!("npy:{}", file(path)),
            TargetSpec::Delta { tensor, .. } => format!("delta:{}", short_module(tensor)),
        }
    }

    /// The concrete targets this one stands for: one per tensor a `delta` glob selects (each checked to exist with
    /// one shape in both checkpoints), itself otherwise.
    pub fn expand(&self) -> Result<Vec<TargetSpec>> {
        let TargetSpec::Delta {
            base,
            tuned,
            tensor,
            label,
        } = self
        else {
            return Ok(vec![self.clone()]);
        };
        let (b, t) = (Checkpoint::open(base)?, Checkpoint::open(tuned)?);
        let names = match b.shape(tensor) {
            Some(_) => vec![tensor.clone()],
            None => b.select(tensor)?,
        };
        if label.is_some() && names.len() > 1 {
            return Err(AbbaError::InvalidArgument(format!(
                "delta target '{tensor}' selects {} tensors but has one label: drop label (each tensor is named by its module) or name one tensor",
                names.len()
            )));
        }
        names
            .into_iter()
            .map(|name| {
                let (bs, ts) = (b.shape(&name).expect("selected from base"), t.shape(&name));
                match ts {
                    None => Err(AbbaError::InvalidArgument(format!(
                        "tuned checkpoint {} has no 2-D tensor '{name}' (base {} has it): point tuned at a fine-tuned copy of the same model",
                        tuned.display(),
                        base.display()
                    ))),
                    Some(ts) if ts != bs => Err(AbbaError::InvalidArgument(format!(
                        "'{name}' is {}×{} in base {} but {}×{} in tuned {}: point both at checkpoints of the same model",
                        bs.0,
                        bs.1,
                        base.display(),
                        ts.0,
                        ts.1,
                        tuned.display()
                    ))),
                    Some(_) => Ok(TargetSpec::Delta {
                        base: base.clone(),
                        tuned: tuned.clone(),
                        tensor: name,
                        label: label.clone(),
                    }),
                }
            })
            .collect()
    }

    /// A loaded target's shape, reading no more than it must (tensor headers for checkpoints); None for generated
    /// targets, which take the study's rows × cols.
    pub fn loaded_shape(&self) -> Result<Option<(usize, usize)>> {
        Ok(match self {
            TargetSpec::Delta { base, tensor, .. } => {
                let b = Checkpoint::open(base)?;
                let name = match b.shape(tensor) {
                    Some(_) => tensor.clone(),
                    None => b.select(tensor)?.swap_remove(0),
                };
                b.shape(&name)
            }
            TargetSpec::Safetensors { path, tensor, .. } => {
                let c = Checkpoint::open(path)?;
                match c.shape(tensor) {
                    Some(s) => Some(s),
                    None => Some(c.load(tensor)?.dim()),
                }
            }
            t if t.is_loaded() => Some(t.build((0, 0), 0, None)?.dim()),
            _ => None,
        })
    }

    /// The base weight this target brings (a delta's base tensor, a safetensors target's `w0`), if any.
    pub fn own_w0(&self) -> Result<Option<Array2<f64>>> {
        Ok(match self {
            TargetSpec::Delta { base, tensor, .. } => Some(Checkpoint::open(base)?.load(tensor)?),
            TargetSpec::Safetensors {
                path, w0: Some(w0), ..
            } => Some(load_safetensors(path, w0)?),
            _ => None,
        })
    }

    pub fn has_own_w0(&self) -> bool {
        matches!(
            self,
            TargetSpec::Delta { .. } | TargetSpec::Safetensors { w0: Some(_), .. }
        )
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
            TargetSpec::Safetensors { path, tensor, .. } => load_safetensors(path, tensor)?,
            TargetSpec::Image { path, .. } => load_image(path)?,
            TargetSpec::Npy { path, .. } => load_npy(path)?,
            TargetSpec::Delta {
                base,
                tuned,
                tensor,
                ..
            } => {
                let (b, t) = (Checkpoint::open(base)?, Checkpoint::open(tuned)?);
                let (w0, w1) = (b.load(tensor)?, t.load(tensor)?);
                if w0.dim() != w1.dim() {
                    return Err(AbbaError::ShapeMismatch {
                        what: format!("tuned '{tensor}' against its base"),
                        expected: w0.dim(),
                        got: w1.dim(),
                    });
                }
                w1 - w0
            }
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
            TargetSpec::Safetensors { .. }
                | TargetSpec::Image { .. }
                | TargetSpec::Npy { .. }
                | TargetSpec::Delta { .. }
        )
    }
}

/// A tensor's module path without the parts every Llama name repeats (`model.`, `self_attn.`, `mlp.`, `.weight`):
/// `model.layers.3.self_attn.q_proj.weight` → `layers.3.q_proj`.
fn short_module(tensor: &str) -> String {
    let module = tensor.strip_suffix(".weight").unwrap_or(tensor);
    let module = module.strip_prefix("model.").unwrap_or(module);
    module
        .split('.')
        .filter(|part| !matches!(*part, "self_attn" | "mlp"))
        .collect::<Vec<_>>()
        .join(".")
}
