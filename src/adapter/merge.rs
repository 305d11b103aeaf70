//! Merging an adapter into its base weight for zero-overhead inference, and undoing it.

use ndarray::Array2;

use super::{Adapter, check_shape};
use crate::error::Result;
use crate::linalg::Real;

/// `w ← w + ΔW`.
pub fn merge<T: Real>(w: &mut Array2<T>, adapter: &dyn Adapter<T>) -> Result<()> {
    check_shape("base weight to merge into", adapter.shape(), w.dim())?;
    *w += &adapter.delta();
    Ok(())
}

/// `w ← w − ΔW`. Float subtraction is not exact; keep a [`MergedWeight`] when W0 must come back bit for bit.
pub fn unmerge<T: Real>(w: &mut Array2<T>, adapter: &dyn Adapter<T>) -> Result<()> {
    check_shape("merged weight to unmerge", adapter.shape(), w.dim())?;
    *w -= &adapter.delta();
    Ok(())
}

/// A merged weight that remembers its base, so unmerging restores W0 exactly.
#[derive(Clone, Debug)]
pub struct MergedWeight<T> {
    pub merged: Array2<T>,
    base: Array2<T>,
}

impl<T: Real> MergedWeight<T> {
    pub fn new(base: Array2<T>, adapter: &dyn Adapter<T>) -> Result<Self> {
        let mut merged = base.clone();
        merge(&mut merged, adapter)?;
        Ok(MergedWeight { merged, base })
    }

    pub fn unmerge(self) -> Array2<T> {
        self.base
    }
}
