//! The only door to the linear-algebra engine (faer). Everything else in the crate speaks `ndarray`.
//!
//! faer matrices are borrowed from ndarray views through their raw pointer and strides, so no copy is made on the
//! way in; results come back as owned `ndarray` arrays.
//!
//! Parallelism: faer's threading is process-global. Study runners that already run fits in parallel call
//! [`set_threads`]`(1)` so the two levels never oversubscribe the cores, and so results do not depend on how a
//! product was split between threads.

use std::fmt::{Debug, Display};
use std::sync::atomic::{AtomicUsize, Ordering};

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2, LinalgScalar, ScalarOperand, s};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::AbbaError;

#[cfg(target_arch = "x86_64")]
mod sgemm_avx512;

/// The real scalars this crate computes in: `f32` for speed, `f64` for tight references.
pub trait Real:
    faer::traits::RealField
    + num_traits::Float
    + num_traits::FromPrimitive
    + LinalgScalar
    + ScalarOperand
    + Debug
    + Display
    + Default
    + Send
    + Sync
    + 'static
{
    /// Converts from `f64`, rounding to the nearest representable value.
    fn of(x: f64) -> Self {
        <Self as num_traits::FromPrimitive>::from_f64(x).expect("every f64 converts to a float")
    }
    /// Widens to `f64`.
    fn f64(self) -> f64 {
        num_traits::ToPrimitive::to_f64(&self).expect("a float always widens to f64")
    }
}
impl Real for f32 {}
impl Real for f64 {}

/// 0 means "all of rayon's threads".
static THREADS: AtomicUsize = AtomicUsize::new(0);

/// Number of threads one linear-algebra call may use (1 = sequential, 0 = all rayon threads), for the rest of the
/// process. Code that changes it for a while uses [`threads_scope`].
pub fn set_threads(n: usize) {
    THREADS.store(n, Ordering::Relaxed);
}

/// The linear-algebra thread count now (0 = all rayon threads).
pub fn threads() -> usize {
    THREADS.load(Ordering::Relaxed)
}

/// Restores the previous thread count when dropped.
#[must_use = "the previous thread count comes back when this guard is dropped"]
pub struct ThreadsScope {
    previous: usize,
}

/// Sets the linear-algebra thread count until the returned guard is dropped, then restores whatever it was.
pub fn threads_scope(n: usize) -> ThreadsScope {
    let previous = THREADS.swap(n, Ordering::Relaxed);
    ThreadsScope { previous }
}

impl Drop for ThreadsScope {
    fn drop(&mut self) {
        THREADS.store(self.previous, Ordering::Relaxed);
    }
}

fn par() -> Par {
    match THREADS.load(Ordering::Relaxed) {
        1 => Par::Seq,
        n => Par::rayon(n),
    }
}

/// The number of threads one linear-algebra call may use now ([`threads`]' 0 resolved to rayon's count).
pub fn thread_count() -> usize {
    match THREADS.load(Ordering::Relaxed) {
        0 => rayon::current_num_threads(),
        n => n,
    }
}

/// The split faer's own decompositions (SVD, QR) are computed with. Their bits follow the number of threads they
/// are split between (a 1024² SVD gave other singular values in ~900 of 1024 places at 1, 2, 3, 4 and 8 threads),
/// and faer's default, all of rayon's threads, made a study's numbers depend on the machine's cores. A fixed
/// split of 2 gives the same bits on any machine and with any `RAYON_NUM_THREADS` (rayon runs the two halves on
/// whatever threads it has); 2 is the split the committed results were computed with (faer's default on the
/// 2-core machine that made them).
const DECOMPOSITION_THREADS: usize = 2;

/// Points faer's global parallelism, which its decompositions read, at [`DECOMPOSITION_THREADS`].
fn fixed_decomposition_split() {
    faer::set_global_parallelism(Par::rayon(DECOMPOSITION_THREADS));
}

fn as_faer<'a, T: Real>(a: &'a ArrayView2<'_, T>) -> MatRef<'a, T> {
    let (r, c) = a.dim();
    let st = a.strides();
    // SAFETY: the view is valid for reads over (r, c) with these element strides for the lifetime of the borrow.
    unsafe { MatRef::from_raw_parts(a.as_ptr(), r, c, st[0], st[1]) }
}

fn as_faer_mut<'a, T: Real>(a: &'a mut ArrayViewMut2<'_, T>) -> MatMut<'a, T> {
    let (r, c) = a.dim();
    let st = a.strides().to_vec();
    // SAFETY: the view is valid and uniquely borrowed for reads and writes over (r, c) with these strides.
    unsafe { MatMut::from_raw_parts_mut(a.as_mut_ptr(), r, c, st[0], st[1]) }
}

fn to_ndarray<T: Real>(m: MatRef<'_, T>) -> Array2<T> {
    Array2::from_shape_fn((m.nrows(), m.ncols()), |(i, j)| m[(i, j)])
}

/// `dst = alpha·a·b + (dst if accumulate)`. Transposed operands are just `.t()` views: no copy.
pub fn gemm_into<T: Real>(
    dst: ArrayViewMut2<'_, T>,
    accumulate: bool,
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    alpha: T,
) {
    gemm_into_par(dst, accumulate, a, b, alpha, true)
}

/// As [`gemm_into`], on the calling thread only whatever [`set_threads`] says (for kernels that split the work
/// between threads themselves). Each entry of the result is the same as [`gemm_into`]'s for a matrix product:
/// faer splits it between threads by rows and columns of the output, never along the inner dimension, which it
/// walks in blocks of 512 whatever the output's shape. (For a matrix–vector product — one row or one column out —
/// faer would split the inner dimension between threads and add the partial sums, so [`gemm_into_par`] runs those
/// on one thread.)
pub fn gemm_into_seq<T: Real>(
    dst: ArrayViewMut2<'_, T>,
    accumulate: bool,
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    alpha: T,
) {
    gemm_into_par(dst, accumulate, a, b, alpha, false)
}

/// Products with fewer multiply–adds than this run on the calling thread even when allowed more: waking a
/// sleeping thread costs tens of microseconds, as much as a product of this size takes on one core. Generation
/// (a few rows per step through every projection) ran 1.4–1.9× faster in tokens/s with this floor than with every
/// product split. Most of training's products are far above it; the bench's rank-8 adapter products fall below it,
/// and its step time did not move.
pub const PARALLEL_MIN_MACS: usize = 1 << 22;

/// [`gemm_into`] on the calling thread alone when `parallel` is false (for small products that callers already
/// run in parallel with each other); with `parallel` true it uses the threads [`set_threads`] allows, from
/// [`PARALLEL_MIN_MACS`] multiply–adds up, except for matrix–vector products, which stay on one thread so that
/// their sums do not depend on the thread count.
pub fn gemm_into_par<T: Real>(
    mut dst: ArrayViewMut2<'_, T>,
    accumulate: bool,
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    alpha: T,
    parallel: bool,
) {
    assert_eq!(a.ncols(), b.nrows(), "gemm: inner dimensions differ");
    assert_eq!(
        dst.dim(),
        (a.nrows(), b.ncols()),
        "gemm: output shape differs"
    );
    if a.ncols() == 0 {
        if !accumulate {
            dst.fill(T::zero());
        }
        return;
    }
    // One row or column out: faer would split the inner dimension between threads (see gemm_into_seq).
    let split = parallel
        && a.nrows() > 1
        && b.ncols() > 1
        && a.nrows() * a.ncols() * b.ncols() >= PARALLEL_MIN_MACS;
    if faster_f32_product(&mut dst, accumulate, &a, &b, alpha, split) {
        return;
    }
    let beta = if accumulate {
        Accum::Add
    } else {
        Accum::Replace
    };
    matmul(
        as_faer_mut(&mut dst),
        beta,
        as_faer(&a),
        as_faer(&b),
        alpha,
        if split { par() } else { Par::Seq },
    );
}

/// The smallest f32 products [`sgemm_avx512`] takes over from faer, as (the output's side with unit stride, which
/// runs along its 32-row tile; the other output side; the inner dimension). Measured with
/// `examples/sgemm_shapes.rs` on 2 cores: from these sides up it was as fast as faer's kernel or faster (0.8–1.0×
/// of its time at 128–4096, 0.77–0.85× on large squares); with a unit-stride side of 16 or 36 most of its 32-row
/// tiles ran empty and it was 1.2–1.4× slower, so the fitting loop's rank-36 outputs stay with faer.
#[cfg(target_arch = "x86_64")]
const SGEMM_MIN_SIDES: (usize, usize, usize) = (128, 32, 64);

/// Whether an f32 product of these sides (and a destination whose row stride is 1 or not) runs on our AVX-512
/// kernel rather than faer's, strides allowing: the CPU has AVX-512 and the sides reach [`SGEMM_MIN_SIDES`].
#[cfg(target_arch = "x86_64")]
fn avx512_sgemm_takes(m: usize, k: usize, n: usize, unit_row_stride: bool) -> bool {
    let (tile_side, other_side) = if unit_row_stride { (m, n) } else { (n, m) };
    let (min_tile, min_other, min_inner) = SGEMM_MIN_SIDES;
    tile_side >= min_tile && other_side >= min_other && k >= min_inner && sgemm_avx512::available()
}

/// How many f32 products ran on our AVX-512 kernel in this process so far (for tests).
#[doc(hidden)]
pub fn avx512_sgemm_products() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        sgemm_avx512::PRODUCTS.load(Ordering::Relaxed)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        0
    }
}

/// Runs an f32 product through [`sgemm_avx512`] where that gives faer's bits faster: an AVX-512 CPU, all three
/// sides at least [`SGEMM_MIN_SIDES`], non-negative strides and a destination with a unit stride. Returns whether
/// it did.
#[cfg(target_arch = "x86_64")]
fn faster_f32_product<T: Real>(
    dst: &mut ArrayViewMut2<'_, T>,
    accumulate: bool,
    a: &ArrayView2<'_, T>,
    b: &ArrayView2<'_, T>,
    alpha: T,
    split: bool,
) -> bool {
    use sgemm_avx512::{Destination, Operand};
    if std::any::TypeId::of::<T>() != std::any::TypeId::of::<f32>() {
        return false;
    }
    let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
    // Every f32 product passes here, the fitting loop's many small ones too: the checks allocate nothing.
    let mut strides = a.strides().iter().chain(b.strides()).chain(dst.strides());
    if !avx512_sgemm_takes(m, k, n, dst.strides()[0] == 1)
        || strides.any(|&s| s < 0)
        || !dst.strides().contains(&1)
    {
        return false;
    }
    let operand = |v: &ArrayView2<'_, T>| Operand {
        ptr: v.as_ptr().cast::<f32>(),
        rows: v.nrows(),
        cols: v.ncols(),
        row_stride: v.strides()[0],
        col_stride: v.strides()[1],
    };
    let out = Destination {
        ptr: dst.as_mut_ptr().cast::<f32>(),
        rows: m,
        cols: n,
        row_stride: dst.strides()[0],
        col_stride: dst.strides()[1],
    };
    let threads = if split { thread_count() } else { 1 };
    // SAFETY: T is f32 (checked above); the views are valid for their shapes and strides, dst is uniquely
    // borrowed so it cannot overlap an operand, the shapes agree (asserted by the caller), the strides are
    // non-negative with a unit destination stride, and the CPU has AVX-512.
    let alpha = alpha.f64() as f32;
    unsafe { sgemm_avx512::product(out, accumulate, operand(a), operand(b), alpha, threads) };
    true
}

#[cfg(not(target_arch = "x86_64"))]
fn faster_f32_product<T: Real>(
    _: &mut ArrayViewMut2<'_, T>,
    _: bool,
    _: &ArrayView2<'_, T>,
    _: &ArrayView2<'_, T>,
    _: T,
    _: bool,
) -> bool {
    false
}

/// `a·b` as a new array.
pub fn gemm<T: Real>(a: ArrayView2<'_, T>, b: ArrayView2<'_, T>) -> Array2<T> {
    let mut out = Array2::zeros((a.nrows(), b.ncols()));
    gemm_into(out.view_mut(), false, a, b, T::one());
    out
}

/// A (possibly truncated) singular value decomposition `U·diag(s)·Vᵀ`, singular values non-increasing.
#[derive(Clone, Debug)]
pub struct Svd<T> {
    /// m × k, orthonormal columns.
    pub u: Array2<T>,
    /// k singular values, non-increasing.
    pub s: Array1<T>,
    /// k × n, orthonormal rows.
    pub vt: Array2<T>,
}

impl<T: Real> Svd<T> {
    /// Keeps the leading `r` triplets.
    pub fn truncate(self, r: usize) -> Self {
        let r = r.min(self.s.len());
        Svd {
            u: self.u.slice(s![.., ..r]).to_owned(),
            s: self.s.slice(s![..r]).to_owned(),
            vt: self.vt.slice(s![..r, ..]).to_owned(),
        }
    }

    /// Keeps triplets `start..start+r` (used by initialisations that take "the next" components).
    pub fn components(&self, start: usize, r: usize) -> Self {
        let k = self.s.len();
        let (a, b) = (start.min(k), (start + r).min(k));
        Svd {
            u: self.u.slice(s![.., a..b]).to_owned(),
            s: self.s.slice(s![a..b]).to_owned(),
            vt: self.vt.slice(s![a..b, ..]).to_owned(),
        }
    }

    /// `U·diag(s)·Vᵀ`.
    pub fn reconstruct(&self) -> Array2<T> {
        let us = &self.u * &self.s.view().insert_axis(ndarray::Axis(0));
        gemm(us.view(), self.vt.view())
    }

    /// The balanced factors `(U·Σ^½, Σ^½·Vᵀ)` whose product is the decomposition.
    pub fn balanced_factors(&self) -> (Array2<T>, Array2<T>) {
        let root = self.s.mapv(|x| x.max(T::zero()).sqrt());
        let b = &self.u * &root.view().insert_axis(ndarray::Axis(0));
        let a = &self.vt * &root.view().insert_axis(ndarray::Axis(1));
        (b, a)
    }
}

/// A matrix a factorisation can take: non-empty and finite. Returns its shape.
fn check_input<T: Real>(
    a: &ArrayView2<'_, T>,
    what: &'static str,
) -> Result<(usize, usize), AbbaError> {
    if !a.iter().all(|x| x.is_finite()) {
        return Err(AbbaError::NonFinite { what });
    }
    match a.dim() {
        (m, n) if m == 0 || n == 0 => Err(AbbaError::EmptyMatrix { rows: m, cols: n }),
        shape => Ok(shape),
    }
}

/// Exact thin SVD (k = min(m, n) triplets).
pub fn svd_thin<T: Real>(a: ArrayView2<'_, T>) -> Result<Svd<T>, AbbaError> {
    let (m, n) = check_input(&a, "matrix passed to the SVD")?;
    fixed_decomposition_split();
    let svd = as_faer(&a)
        .thin_svd()
        .map_err(|e| AbbaError::NoConvergence {
            what: format!("thin SVD of a {m}×{n} matrix ({e:?})"),
        })?;
    let k = m.min(n);
    let sdiag = svd.S().column_vector();
    let s_vals = Array1::from_shape_fn(k, |i| sdiag[i]);
    let u = to_ndarray(svd.U());
    let v = svd.V();
    let vt = Array2::from_shape_fn((k, n), |(i, j)| v[(j, i)]);
    Ok(Svd { u, s: s_vals, vt })
}

/// Exact SVD truncated to the leading `r` triplets (the Eckart–Young optimum of rank `r`).
pub fn svd_truncated<T: Real>(a: ArrayView2<'_, T>, r: usize) -> Result<Svd<T>, AbbaError> {
    check_rank(r, a.dim())?;
    Ok(svd_thin(a)?.truncate(r))
}

/// Thin QR: `a = Q·R`, Q m×k with orthonormal columns, R k×n upper triangular, k = min(m, n).
pub fn qr_thin<T: Real>(a: ArrayView2<'_, T>) -> Result<(Array2<T>, Array2<T>), AbbaError> {
    check_input(&a, "matrix passed to QR")?;
    fixed_decomposition_split();
    let qr = as_faer(&a).qr();
    let q = to_ndarray(qr.compute_thin_Q().as_ref());
    let r = to_ndarray(qr.thin_R());
    Ok((q, r))
}

fn orthonormal_basis<T: Real>(y: ArrayView2<'_, T>) -> Result<Array2<T>, AbbaError> {
    Ok(qr_thin(y)?.0)
}

/// Randomized truncated SVD with power iterations (Halko, Martinsson & Tropp, Alg. 4.4), the algorithm of
/// PyTorch's `svd_lowrank(a, q, niter)` that the released ABBA code uses: a Gaussian sketch of `q` columns,
/// `niter` rounds of re-orthonormalised power iteration, then an exact SVD of the small projected matrix.
pub fn svd_randomized<T: Real, R: Rng + ?Sized>(
    a: ArrayView2<'_, T>,
    q: usize,
    niter: usize,
    rng: &mut R,
) -> Result<Svd<T>, AbbaError> {
    check_rank(q, a.dim())?;
    let (_, n) = check_input(&a, "matrix passed to the randomized SVD")?;
    let sketch = Array2::from_shape_fn((n, q), |_| {
        let x: f64 = StandardNormal.sample(rng);
        T::of(x)
    });
    let mut basis = orthonormal_basis(gemm(a, sketch.view()).view())?;
    for _ in 0..niter {
        let z = orthonormal_basis(gemm(a.t(), basis.view()).view())?;
        basis = orthonormal_basis(gemm(a, z.view()).view())?;
    }
    let projected = gemm(basis.t(), a);
    let small = svd_thin(projected.view())?;
    Ok(Svd {
        u: gemm(basis.view(), small.u.view()),
        s: small.s,
        vt: small.vt,
    })
}

/// The leading `r` triplets from a randomized SVD sketched with `r + oversample` columns, the usual way to make
/// the last kept triplets accurate (Halko et al. recommend an oversampling of 5–10).
pub fn svd_randomized_truncated<T: Real, R: Rng + ?Sized>(
    a: ArrayView2<'_, T>,
    r: usize,
    oversample: usize,
    niter: usize,
    rng: &mut R,
) -> Result<Svd<T>, AbbaError> {
    check_rank(r, a.dim())?;
    let q = (r + oversample).min(a.nrows().min(a.ncols()));
    Ok(svd_randomized(a, q, niter, rng)?.truncate(r))
}

/// A rank must be at least 1 and at most min(m, n).
pub fn check_rank(r: usize, (m, n): (usize, usize)) -> Result<(), AbbaError> {
    if r == 0 || r > m.min(n) {
        Err(AbbaError::InvalidRank {
            rank: r,
            rows: m,
            cols: n,
        })
    } else {
        Ok(())
    }
}

/// Squared Frobenius norm, accumulated in f64.
pub fn frob2<T: Real>(a: ArrayView2<'_, T>) -> f64 {
    a.iter().map(|x| x.f64() * x.f64()).sum()
}

/// Singular values only (descending).
pub fn singular_values<T: Real>(a: ArrayView2<'_, T>) -> Result<Array1<T>, AbbaError> {
    let (m, n) = check_input(&a, "matrix passed to the SVD")?;
    fixed_decomposition_split();
    let s = as_faer(&a)
        .singular_values()
        .map_err(|e| AbbaError::NoConvergence {
            what: format!("singular values of a {m}×{n} matrix ({e:?})"),
        })?;
    Ok(Array1::from(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A product with one output row or column sums its whole inner dimension per entry; summed on one thread or
    /// split between two, its bits must be the same (the study runners and `abba fit` promise thread-count
    /// independence).
    #[test]
    fn a_matrix_vector_product_is_the_same_at_any_thread_count() {
        let k = PARALLEL_MIN_MACS + 12_345;
        let x = Array2::from_shape_fn((1, k), |(_, j)| ((j * 7_919) % 1_000) as f32 / 999.0 - 0.5);
        let y = Array2::from_shape_fn((k, 2), |(j, c)| {
            ((j * 104_729 + c) % 997) as f32 / 996.0 - 0.5
        });
        let at = |threads: usize| {
            let _scope = threads_scope(threads);
            // A row out (1×k · k×1) and a column out (2×k · k×1, through the transposes).
            let row = gemm(x.view(), y.slice(ndarray::s![.., 0..1]));
            let col = gemm(y.t(), x.t());
            (
                row[[0, 0]].to_bits(),
                col[[0, 0]].to_bits(),
                col[[1, 0]].to_bits(),
            )
        };
        assert_eq!(at(1), at(2));
    }
}
