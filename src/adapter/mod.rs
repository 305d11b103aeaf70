//! Weight-update parameterisations ("adapters") of a frozen `W0: m×n` (out × in, PyTorch's convention).
//!
//! Every method exposes the same small surface ([`Adapter`]): its factors, its parameter count, the materialised
//! update ΔW, the product ΔW·X, and the analytic gradients of its factors for a given ∂L/∂ΔW. Fitters and the
//! fine-tuning backend only ever talk to this trait.

mod abba;
mod chain;
pub mod convert;
mod full;
mod hira;
pub mod init;
pub mod khatri_rao;
mod lora;
mod merge;
pub mod scaling;

pub use abba::{Abba, ForwardCost, ForwardPath};
pub use chain::AbbaChain;
pub use full::Full;
pub use hira::Hira;
pub use lora::Lora;
pub use merge::{MergedWeight, merge, unmerge};

use ndarray::{Array2, ArrayView2, ArrayViewMut2};

use crate::error::{AbbaError, Result};
use crate::linalg::Real;

/// The family a parameterisation belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MethodKind {
    Full,
    Lora,
    Hira,
    Abba,
    AbbaChain,
}

impl MethodKind {
    pub const ALL: [MethodKind; 5] = [
        MethodKind::Full,
        MethodKind::Lora,
        MethodKind::Hira,
        MethodKind::Abba,
        MethodKind::AbbaChain,
    ];

    pub fn name(self) -> &'static str {
        match self {
            MethodKind::Full => "full",
            MethodKind::Lora => "lora",
            MethodKind::Hira => "hira",
            MethodKind::Abba => "abba",
            MethodKind::AbbaChain => "abba-chain",
        }
    }
}

/// A trainable update of one `m×n` weight.
pub trait Adapter<T: Real>: Send + Sync {
    fn kind(&self) -> MethodKind;
    /// `(m, n)` of the adapted weight.
    fn shape(&self) -> (usize, usize);
    /// Number of trainable scalars.
    fn num_params(&self) -> usize {
        self.factors().iter().map(|f| f.len()).sum()
    }
    /// Names of the factors, in the order of [`Adapter::factors`].
    fn factor_names(&self) -> Vec<String>;
    fn factors(&self) -> Vec<ArrayView2<'_, T>>;
    fn factors_mut(&mut self) -> Vec<ArrayViewMut2<'_, T>>;
    /// The materialised update ΔW (m×n).
    fn delta(&self) -> Array2<T>;
    /// ΔW·X for a batch `X: n×b`, without forming ΔW where the method allows.
    fn apply(&self, x: ArrayView2<'_, T>) -> Result<Array2<T>> {
        check_shape("batch X", (self.shape().1, x.ncols()), x.dim())?;
        Ok(crate::linalg::gemm(self.delta().view(), x))
    }
    /// Gradients of a loss w.r.t. each factor, given `g = ∂L/∂ΔW` (m×n), in the order of [`Adapter::factors`].
    fn grads(&self, g: ArrayView2<'_, T>) -> Result<Vec<Array2<T>>>;
}

pub(crate) fn check_shape(what: &str, expected: (usize, usize), got: (usize, usize)) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(AbbaError::ShapeMismatch {
            what: what.to_string(),
            expected,
            got,
        })
    }
}

pub(crate) fn check_finite<T: Real>(what: &'static str, a: &ArrayView2<'_, T>) -> Result<()> {
    if a.iter().all(|x| x.is_finite()) {
        Ok(())
    } else {
        Err(AbbaError::NonFinite { what })
    }
}

/// Checks a `B: m×r`, `A: r×n` pair: consistent inner rank ≥ 1, non-empty, finite.
pub(crate) fn check_pair<T: Real>(
    b: &ArrayView2<'_, T>,
    a: &ArrayView2<'_, T>,
    pair: &'static str,
) -> Result<(usize, usize, usize)> {
    let (m, r) = b.dim();
    let (r2, n) = a.dim();
    if m == 0 || n == 0 {
        return Err(AbbaError::EmptyMatrix { rows: m, cols: n });
    }
    if r == 0 {
        return Err(AbbaError::InvalidRank {
            rank: 0,
            rows: m,
            cols: n,
        });
    }
    check_shape(pair, (r, n), (r2, n))?;
    check_finite(pair, b)?;
    check_finite(pair, a)?;
    Ok((m, r, n))
}
