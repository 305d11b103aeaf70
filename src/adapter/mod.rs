//! Weight-update parameterisations ("adapters") of a frozen `W0: m×n` (out × in, PyTorch's convention).
//!
//! Two views of a method, both defined here and read by every other part of the crate:
//! - [`Method`] describes it: family, size, hyper-parameters, factor table, parameter count, initialisation and
//!   PEFT config ([`method`]);
//! - [`Adapter`] computes with it on ndarray: its factors, the materialised update ΔW, the product ΔW·X, and the
//!   analytic gradients of its factors for a given ∂L/∂ΔW. [`AnyAdapter`] holds an instance of any family.
//!
//! One file per method holds both (`lora.rs`, `hira.rs`, `abba.rs`, `chain.rs`, `full.rs`). The fitters use the
//! ndarray maths; the candle layers of `finetune` take their factor names, shapes and initial values from
//! [`Method`] and implement the forward pass on tensors.

mod abba;
mod any;
mod chain;
pub mod convert;
mod dora;
pub mod factor;
mod full;
mod hira;
pub mod init;
pub mod khatri_rao;
pub mod kradapter;
pub mod lokr;
mod lora;
mod merge;
pub mod method;
pub mod mora;
pub mod scaling;
pub mod section;

pub use abba::{Abba, AbbaSpec, ForwardCost, ForwardPath};
pub use any::AnyAdapter;
pub use chain::{AbbaChain, ChainSpec};
pub use dora::{Dora, DoraSpec};
pub use factor::{Factor, KeyStyle};
pub use full::Full;
pub use hira::{Hira, HiraSpec};
pub use kradapter::{KrAdapter, KrAdapterSpec};
pub use lokr::{Lokr, LokrSpec};
pub use lora::{Lora, LoraSpec};
pub use merge::{MergedWeight, merge, unmerge};
pub use method::{Method, MethodKind};
pub use mora::{Mora, MoraSpec, MoraType};

use ndarray::{Array2, ArrayView2, ArrayViewMut2};

use crate::error::{AbbaError, Result};
use crate::linalg::Real;

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
