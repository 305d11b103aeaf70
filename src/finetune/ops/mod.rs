//! Fused CPU kernels with hand-written backward passes for the training hot path: RMSNorm, rotary embedding with
//! the head split, causal grouped-query attention, SiLU·mul, cross-entropy, ABBA's Khatri–Rao factors and
//! x·Wᵀ through faer; and AdamW's parameter update in one pass ([`adamw`], no backward).
//!
//! Each op is a candle `CustomOp1/2/3` that computes its forward in one pass over contiguous f32/f64 CPU storage
//! and its backward from what it needs (recomputing cheap intermediates instead of keeping them), replacing a
//! chain of composite candle ops that each allocate a tensor and keep it alive for the backward pass. Every
//! public entry point checks [`fused`] and falls back to the composite ops otherwise (CUDA tensors, f16/bf16), so
//! the CUDA build and the numerics there are unchanged. Each op's file tests it against the composite ops it
//! replaces, values and gradients, in f32 and f64 (the `check` helpers).
//!
//! Products go through [`crate::linalg::gemm_into_par`] (faer); row-wise kernels are split across rayon's pool
//! when a tensor is large enough for the split to pay.

pub mod adamw;
pub mod attention;
pub mod cross_entropy;
pub mod khatri_rao;
pub mod linear;
pub mod rms_norm;
pub mod rope;
pub mod sum;
pub mod swiglu;
mod transpose;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Shape, Storage, Tensor, WithDType};
use ndarray::{ArrayView2, ArrayViewMut2, ShapeBuilder};

use crate::linalg::Real;

/// The element types the fused kernels handle.
pub trait Elem: WithDType + Real {
    /// eˣ for the kernels' inner loops: a branch-free polynomial that the compiler vectorises for f32 (relative
    /// error below 4·10⁻⁷, a few ulp; inputs are clamped to [−87.3, 88.3], so the smallest result is about
    /// 1.2·10⁻³⁸ rather than a subnormal or 0, and the largest about 2.2·10³⁸ rather than ∞), the C library's `exp`
    /// for f64 (the reference precision).
    fn exp_k(self) -> Self;
}

impl Elem for f32 {
    #[inline(always)]
    fn exp_k(self) -> f32 {
        exp_f32(self)
    }
}

impl Elem for f64 {
    #[inline(always)]
    fn exp_k(self) -> f64 {
        self.exp()
    }
}

/// eˣ = 2ᵏ·eʳ with k = round(x/ln 2) and |r| ≤ ln 2 / 2, eʳ by its degree-7 Taylor polynomial (Cody–Waite
/// split of ln 2; rounding by the 1.5·2²³ trick so no libm call or SSE4.1 instruction is needed, and every step
/// vectorises).
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.3);
    let shifted = x * LOG2E + ROUND;
    let k = shifted - ROUND;
    let r = x - k * LN2_HI - k * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // k as an integer straight from the shifted sum's bits (it is ROUND + k exactly, one exponent for every k
    // here): `k as i32` would saturate and map NaN to 0, which the compiler does one element at a time.
    let ki = shifted.to_bits() as i32 - ROUND.to_bits() as i32;
    f32::from_bits(((ki + 127) << 23) as u32) * p
}

/// Below this many elements a row-wise kernel runs on the calling thread.
pub(crate) const PAR_MIN_ELEMS: usize = 32 * 1024;

/// True when the fused CPU kernels apply to `t`: on the CPU, f32 or f64.
pub fn fused(t: &Tensor) -> bool {
    t.device().is_cpu() && matches!(t.dtype(), DType::F32 | DType::F64)
}

/// The contiguous elements a layout addresses in `storage`.
pub(crate) fn slice<'a, T: Elem>(
    storage: &'a CpuStorage,
    layout: &Layout,
    what: &str,
) -> candle_core::Result<&'a [T]> {
    let data = T::cpu_storage_as_slice(storage)?;
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what}: operand is not contiguous"),
    }
}

/// Runs `f` on the contiguous elements of a CPU tensor (made contiguous first if needed).
pub(crate) fn with_data<T: Elem, R>(
    t: &Tensor,
    what: &str,
    f: impl FnOnce(&[T]) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(c) => f(slice::<T>(c, layout, what)?),
        _ => candle_core::bail!("{what}: the fused kernel runs on CPU tensors only"),
    }
}

/// A tensor owning `data`, on the CPU, without graph.
pub(crate) fn tensor<T: Elem>(
    data: Vec<T>,
    shape: impl Into<Shape>,
) -> candle_core::Result<Tensor> {
    Tensor::from_vec(data, shape.into(), &candle_core::Device::Cpu)
}

/// CPU storage owning `data`.
pub(crate) fn storage<T: Elem>(data: Vec<T>) -> CpuStorage {
    T::to_cpu_storage_owned(data)
}

/// Checks that every operand has the dtype of the first (the kernels take one element type).
pub(crate) fn same_dtype(what: &str, s: &[&CpuStorage]) -> candle_core::Result<DType> {
    let d = s[0].dtype();
    if s.iter().any(|x| x.dtype() != d) {
        candle_core::bail!("{what}: operands of different dtypes");
    }
    Ok(d)
}

/// A `rows × cols` matrix view at `ptr` with row stride `rs` (unit column stride).
///
/// # Safety
/// `ptr` must be valid for reads of every addressed element for `'a`.
pub(crate) unsafe fn mat<'a, T>(
    ptr: *const T,
    rows: usize,
    cols: usize,
    rs: usize,
) -> ArrayView2<'a, T> {
    // SAFETY: guaranteed by the caller.
    unsafe { ArrayView2::from_shape_ptr((rows, cols).strides((rs, 1)), ptr) }
}

/// As [`mat`], writable.
///
/// # Safety
/// `ptr` must be valid for reads and writes of every addressed element for `'a`, and no other live reference may
/// address them.
pub(crate) unsafe fn mat_mut<'a, T>(
    ptr: *mut T,
    rows: usize,
    cols: usize,
    rs: usize,
) -> ArrayViewMut2<'a, T> {
    // SAFETY: guaranteed by the caller.
    unsafe { ArrayViewMut2::from_shape_ptr((rows, cols).strides((rs, 1)), ptr) }
}

/// A raw pointer that parallel workers may share because each writes a disjoint part of the buffer.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut<T>(pub *mut T);
// SAFETY: used only where each worker addresses elements no other worker touches.
unsafe impl<T> Send for SharedMut<T> {}
unsafe impl<T> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

/// Runs `f(row_index, row)` over the `width`-wide rows of `out`, in parallel when the buffer is large.
pub(crate) fn for_rows<T: Send>(out: &mut [T], width: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    use rayon::prelude::*;
    if width == 0 {
        return;
    }
    if out.len() >= PAR_MIN_ELEMS && rayon::current_num_threads() > 1 {
        let per = (PAR_MIN_ELEMS / 4 / width).max(1) * width;
        out.par_chunks_mut(per).enumerate().for_each(|(c, chunk)| {
            let first = c * per / width;
            for (i, row) in chunk.chunks_mut(width).enumerate() {
                f(first + i, row);
            }
        });
    } else {
        for (i, row) in out.chunks_mut(width).enumerate() {
            f(i, row);
        }
    }
}

/// Runs `f(unit)` for `0..units`, in parallel.
pub(crate) fn for_units(units: usize, f: impl Fn(usize) + Sync + Send) {
    use rayon::prelude::*;
    if units > 1 && rayon::current_num_threads() > 1 {
        (0..units).into_par_iter().for_each(f);
    } else {
        (0..units).for_each(f);
    }
}

/// Shared checks for the ops' tests: a fused op and the composite ops it replaces agree in value and in the
/// gradient of ⟨y, G⟩ for a random G with respect to every variable.
#[cfg(test)]
pub(crate) mod check {
    use candle_core::{DType, Device, Tensor, Var};
    use rand_distr::{Distribution, StandardNormal};

    pub fn randn(shape: &[usize], dtype: DType, seed: u64) -> Tensor {
        let mut rng = crate::rng::seeded(seed);
        let n: usize = shape.iter().product();
        let data: Vec<f64> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
        Tensor::from_vec(data, shape, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    pub fn var(shape: &[usize], dtype: DType, seed: u64) -> Var {
        Var::from_tensor(&randn(shape, dtype, seed)).unwrap()
    }

    fn max_abs(t: &Tensor) -> f64 {
        t.to_dtype(DType::F64)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    pub fn close(got: &Tensor, want: &Tensor, what: &str) {
        assert_eq!(got.dims(), want.dims(), "{what}: shapes");
        assert_eq!(got.dtype(), want.dtype(), "{what}: dtypes");
        let tol = if got.dtype() == DType::F64 {
            1e-11
        } else {
            2e-5
        };
        // Entry by entry first: candle's max skips a NaN past the first entry, and a NaN is what an entry a
        // kernel never wrote holds under test (`linear::output`).
        let flat = |t: &Tensor| {
            t.to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
        };
        for (i, (g, w)) in flat(got).iter().zip(flat(want)).enumerate() {
            assert!(
                g.is_finite() || !w.is_finite(),
                "{what}: entry {i} is {g}, the reference {w}"
            );
        }
        let d = max_abs(&(got - want).unwrap());
        let scale = max_abs(want).max(1.0);
        assert!(d <= tol * scale, "{what}: max diff {d} vs scale {scale}");
    }

    /// `fused` must have taken the fused path (the test would otherwise compare the composite with itself).
    pub fn agree(
        what: &str,
        vars: &[&Var],
        fused: impl Fn() -> candle_core::Result<Tensor>,
        composite: impl Fn() -> candle_core::Result<Tensor>,
    ) {
        let yf = fused().unwrap();
        let yc = composite().unwrap();
        close(&yf, &yc, &format!("{what}: value"));
        let up = randn(yf.dims(), yf.dtype(), 99);
        let gf = (&yf * &up).unwrap().sum_all().unwrap().backward().unwrap();
        let gc = (&yc * &up).unwrap().sum_all().unwrap().backward().unwrap();
        for (i, v) in vars.iter().enumerate() {
            let want = gc.get(v.as_tensor()).expect("composite gradient");
            let got = gf
                .get(v.as_tensor())
                .unwrap_or_else(|| panic!("{what}: no fused gradient for variable {i}"));
            close(got, want, &format!("{what}: gradient {i}"));
        }
    }

    pub const DTYPES: [DType; 2] = [DType::F32, DType::F64];

    #[test]
    fn the_kernels_exp_is_accurate_to_a_few_ulp() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let got = super::exp_f32(x) as f64;
            let want = (x as f64).exp();
            worst = worst.max(((got - want) / want).abs());
            x += 0.013;
        }
        assert!(worst < 4e-7, "relative error {worst}");
        assert!(super::exp_f32(-1e4) >= 0.0 && super::exp_f32(-1e4) < 1e-37);
        assert!(super::exp_f32(f32::NEG_INFINITY) < 1e-37);
        // The clamp's ends: the smallest and largest k the exponent bits are built from.
        for x in [-87.3f32, 88.3] {
            let (got, want) = (super::exp_f32(x) as f64, (x as f64).exp());
            assert!(
                ((got - want) / want).abs() < 4e-7,
                "exp({x}) = {got}, want {want}"
            );
        }
        let big = super::exp_f32(f32::INFINITY);
        assert!(big.is_finite() && big > 2e38, "exp(+inf) = {big}");
        assert!(super::exp_f32(f32::NAN).is_nan());
    }
}
