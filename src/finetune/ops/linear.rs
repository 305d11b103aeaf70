//! Matrix products through faer — y = x·Wᵀ, y = a·b, and y = x·Wᵀ + a for a frozen W — with backward passes that
//! form only the gradients the graph needs: ∂L/∂x = G·W when x is tracked, ∂L/∂W = Gᵀ·x only when W is (a frozen
//! projection never pays for an m×n weight gradient that would be thrown away).

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};

use super::transpose::transpose_into;
use super::{Elem, fused, same_dtype, slice, storage, tensor, with_data};
use crate::linalg::gemm_into_par;

/// A buffer of `n` elements that the caller overwrites entirely before reading.
///
/// Left unfilled in release builds: memset was 7.5 % of a full fine-tuning step in perf (zero fills of kernel
/// outputs, often in memory the allocator had just freed), and leaving these buffers unfilled made that step 8 %
/// faster (158–162 vs 173–180 ms, alternated). Builds with debug assertions, `cargo test` among them, fill it with NaN
/// instead, so that an entry a kernel reads before writing, or never writes, poisons its result (the fused ops' tests
/// check every entry for that).
pub(crate) fn output<T: Elem>(n: usize) -> Vec<T> {
    if cfg!(debug_assertions) {
        return vec![T::of(f64::NAN); n];
    }
    let mut out = Vec::with_capacity(n);
    // SAFETY: strictly, `set_len` wants the elements initialised, and the callers then write them through `&mut
    // [T]` (faer, ndarray and the row kernels take slices, not `MaybeUninit`); what this relies on is that no
    // caller reads an entry before writing it, which the NaN fill above checks under test (it caught Khatri–Rao's
    // column gradient summing into its buffer). f32 and f64, the only `Elem`s, have no drop glue.
    #[allow(clippy::uninit_vec)]
    unsafe {
        out.set_len(n)
    };
    out
}

/// `op(a)·op(b)` for row-major `a` (ar×ac) and `b` (br×bc), op = transpose when the flag is set, through faer
/// on the threads [`crate::linalg::set_threads`] allows.
pub(crate) fn product<T: Elem>(
    a: &[T],
    (ar, ac): (usize, usize),
    ta: bool,
    b: &[T],
    (br, bc): (usize, usize),
    tb: bool,
) -> (Vec<T>, (usize, usize)) {
    let av = ndarray::ArrayView2::from_shape((ar, ac), a).expect("operand a matches its shape");
    let bv = ndarray::ArrayView2::from_shape((br, bc), b).expect("operand b matches its shape");
    let av = if ta { av.reversed_axes() } else { av };
    let bv = if tb { bv.reversed_axes() } else { bv };
    let (r, c) = (av.nrows(), bv.ncols());
    let mut out = output::<T>(r * c);
    if into_columns(r, av.ncols(), c) {
        let mut cols = output::<T>(r * c);
        gemm_into_par(columns(&mut cols, (r, c)), false, av, bv, T::one(), true);
        transpose_into(&cols, (c, r), &mut out);
        return (out, (r, c));
    }
    let dst =
        ndarray::ArrayViewMut2::from_shape((r, c), &mut out[..]).expect("output matches its shape");
    gemm_into_par(dst, false, av, bv, T::one(), true);
    (out, (r, c))
}

/// Whether an r×k · k×c product is faster computed into a column-major buffer and transposed back.
///
/// Into a row-major output faer packs the right operand (c×k entries) on every call, into a column-major one the
/// left (r×k): for a few rows through a large frozen weight (the 4096² layer bench's 256 rows) that is packing
/// the 16.7 M-entry weight per call against 1 M entries of x, and the product ran in 39–47 ms instead of 50–53
/// (alternated probes). Each entry is the same either way — faer walks the inner dimension in the same blocks
/// whichever operand it packs (checked bit for bit in the tests) — so this is only a speed choice. The saving
/// scales with (c − r)·k, the one or two transposes it costs with r·c; the rule asks the first to be at least
/// four times the second, and at least two rows (a single row is a vector either way).
fn into_columns(r: usize, k: usize, c: usize) -> bool {
    r >= 2 && c > r && (c - r) * k >= 4 * r * c
}

/// A buffer of r·c elements as an r×c column-major matrix.
fn columns<T>(buf: &mut [T], (r, c): (usize, usize)) -> ndarray::ArrayViewMut2<'_, T> {
    ndarray::ArrayViewMut2::from_shape((c, r), buf)
        .expect("buffer matches its shape")
        .reversed_axes()
}

/// y = op(a)·op(b) for row-major a and b, op = transpose where the flag is set.
struct Matmul {
    ta: bool,
    tb: bool,
}

impl Matmul {
    fn fwd<T: Elem>(
        &self,
        a: &CpuStorage,
        la: &Layout,
        b: &CpuStorage,
        lb: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (sa, sb) = (la.shape().dims2()?, lb.shape().dims2()?);
        let inner_a = if self.ta { sa.0 } else { sa.1 };
        let inner_b = if self.tb { sb.1 } else { sb.0 };
        if inner_a != inner_b {
            candle_core::bail!("fused-matmul: {sa:?} and {sb:?} do not multiply");
        }
        let (y, s) = product(
            slice::<T>(a, la, "fused-matmul")?,
            sa,
            self.ta,
            slice::<T>(b, lb, "fused-matmul")?,
            sb,
            self.tb,
        );
        Ok((storage(y), Shape::from(s)))
    }

    /// With A = op(a), B = op(b): ∂A = G·Bᵀ, ∂B = Aᵀ·G, transposed back where a or b was.
    fn bwd_t<T: Elem>(
        &self,
        a: &Tensor,
        b: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (sa, sb, sg) = (a.dims2()?, b.dims2()?, grad.dims2()?);
        let (ta, tb) = (self.ta, self.tb);
        with_data::<T, _>(grad, "fused-matmul", |g| {
            let da = if a.track_op() {
                with_data::<T, _>(b, "fused-matmul", |bd| {
                    let (d, s) = if ta {
                        product(bd, sb, tb, g, sg, true)
                    } else {
                        product(g, sg, false, bd, sb, !tb)
                    };
                    Ok(Some(tensor(d, s)?))
                })?
            } else {
                None
            };
            let db = if b.track_op() {
                with_data::<T, _>(a, "fused-matmul", |ad| {
                    let (d, s) = if tb {
                        product(g, sg, true, ad, sa, ta)
                    } else {
                        product(ad, sa, !ta, g, sg, false)
                    };
                    Ok(Some(tensor(d, s)?))
                })?
            } else {
                None
            };
            Ok((da, db))
        })
    }
}

impl CustomOp2 for Matmul {
    fn name(&self) -> &'static str {
        "fused-matmul"
    }

    fn cpu_fwd(
        &self,
        a: &CpuStorage,
        la: &Layout,
        b: &CpuStorage,
        lb: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        match same_dtype("fused-matmul", &[a, b])? {
            DType::F32 => self.fwd::<f32>(a, la, b, lb),
            DType::F64 => self.fwd::<f64>(a, la, b, lb),
            d => candle_core::bail!("fused-matmul: {d:?} is not supported"),
        }
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        match grad.dtype() {
            DType::F32 => self.bwd_t::<f32>(a, b, grad),
            DType::F64 => self.bwd_t::<f64>(a, b, grad),
            d => candle_core::bail!("fused-matmul: {d:?} is not supported"),
        }
    }
}

fn both_fused(a: &Tensor, b: &Tensor) -> bool {
    fused(a) && fused(b) && a.dtype() == b.dtype() && a.rank() == 2 && b.rank() == 2
}

/// a (N×k) · b (k×m) through faer for f32/f64 CPU matrices of one dtype, gradients to whichever operand the
/// graph tracks; `None` otherwise (the caller then uses candle's matmul).
pub fn matmul(a: &Tensor, b: &Tensor) -> candle_core::Result<Option<Tensor>> {
    if !both_fused(a, b) {
        return Ok(None);
    }
    let (a, b) = (a.contiguous()?, b.contiguous()?);
    Ok(Some(a.apply_op2(
        &b,
        Matmul {
            ta: false,
            tb: false,
        },
    )?))
}

/// y = x·Wᵀ + a for a frozen W: the adapted projection's frozen product and the adapter's contribution `a` in
/// one output, so the graph does not keep the frozen product as a tensor of its own. ∂L/∂x = G·W, ∂L/∂a = G.
struct LinearPlus {
    w: Tensor,
}

impl LinearPlus {
    fn fwd<T: Elem>(
        &self,
        x: &CpuStorage,
        lx: &Layout,
        a: &CpuStorage,
        la: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, n) = lx.shape().dims2()?;
        let (m, n2) = self.w.dims2()?;
        if n != n2 || la.shape().dims2()? != (rows, m) {
            candle_core::bail!(
                "fused-linear-plus: x {:?}, W {:?}, a {:?}",
                lx.shape(),
                self.w.shape(),
                la.shape()
            );
        }
        let a = slice::<T>(a, la, "fused-linear-plus")?;
        let xs = slice::<T>(x, lx, "fused-linear-plus")?;
        let by_columns = into_columns(rows, n, m);
        // a is the product's starting value (faer adds each inner-dimension block onto it, so the sums are those
        // of a + x·Wᵀ in faer's order), laid out as the product's output.
        let mut y = if by_columns {
            let mut cols = output::<T>(rows * m);
            transpose_into(a, (rows, m), &mut cols);
            cols
        } else {
            a.to_vec()
        };
        with_data::<T, _>(&self.w, "fused-linear-plus", |ws| {
            let xv = ndarray::ArrayView2::from_shape((rows, n), xs).expect("x matches its shape");
            let wv = ndarray::ArrayView2::from_shape((m, n), ws).expect("W matches its shape");
            let dst = if by_columns {
                columns(&mut y, (rows, m))
            } else {
                ndarray::ArrayViewMut2::from_shape((rows, m), &mut y[..])
                    .expect("y matches its shape")
            };
            gemm_into_par(dst, true, xv, wv.t(), T::one(), true);
            Ok(())
        })?;
        if by_columns {
            let mut out = output::<T>(rows * m);
            transpose_into(&y, (m, rows), &mut out);
            y = out;
        }
        Ok((storage(y), Shape::from((rows, m))))
    }

    fn bwd_t<T: Elem>(
        &self,
        x: &Tensor,
        a: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (rows, n) = x.dims2()?;
        let m = self.w.dim(0)?;
        let dx = if x.track_op() {
            with_data::<T, _>(grad, "fused-linear-plus", |g| {
                with_data::<T, _>(&self.w, "fused-linear-plus", |wd| {
                    let (d, s) = product(g, (rows, m), false, wd, (m, n), false);
                    Ok(Some(tensor(d, s)?))
                })
            })?
        } else {
            None
        };
        let da = if a.track_op() {
            Some(grad.clone())
        } else {
            None
        };
        Ok((dx, da))
    }
}

impl CustomOp2 for LinearPlus {
    fn name(&self) -> &'static str {
        "fused-linear-plus"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        lx: &Layout,
        a: &CpuStorage,
        la: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        match same_dtype("fused-linear-plus", &[x, a])? {
            DType::F32 => self.fwd::<f32>(x, lx, a, la),
            DType::F64 => self.fwd::<f64>(x, lx, a, la),
            d => candle_core::bail!("fused-linear-plus: {d:?} is not supported"),
        }
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        match grad.dtype() {
            DType::F32 => self.bwd_t::<f32>(x, a, grad),
            DType::F64 => self.bwd_t::<f64>(x, a, grad),
            d => candle_core::bail!("fused-linear-plus: {d:?} is not supported"),
        }
    }
}

/// x (N×n) · Wᵀ + a (a: N×m) for a frozen W (not tracked by the graph), fused when all three are f32/f64 CPU
/// tensors of one dtype; `None` otherwise.
pub fn linear_t_plus(x: &Tensor, w: &Tensor, a: &Tensor) -> candle_core::Result<Option<Tensor>> {
    let ok = [x, w, a]
        .iter()
        .all(|t| fused(t) && t.dtype() == x.dtype() && t.rank() == 2);
    if !ok || w.track_op() {
        return Ok(None);
    }
    let x = x.contiguous()?;
    let a = a.contiguous()?;
    Ok(Some(x.apply_op2(&a, LinearPlus { w: w.contiguous()? })?))
}

/// x (N×n) · Wᵀ (W: m×n) through faer when both are f32/f64 CPU matrices of one dtype; `None` otherwise (the
/// caller then uses candle's matmul). Gradients flow to whichever of x and W the graph tracks.
pub fn linear_t(x: &Tensor, w: &Tensor) -> candle_core::Result<Option<Tensor>> {
    if !both_fused(x, w) {
        return Ok(None);
    }
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    Ok(Some(x.apply_op2(
        &w,
        Matmul {
            ta: false,
            tb: true,
        },
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finetune::ops::check::{DTYPES, agree, var};

    #[test]
    fn matches_candle_matmul_in_value_and_gradient() {
        for dtype in DTYPES {
            let x = var(&[7, 5], dtype, 11);
            let w = var(&[3, 5], dtype, 12);
            let fused = |w: &Tensor| linear_t(x.as_tensor(), w).map(|y| y.expect("fused path"));
            agree(
                &format!("linear, trainable W {dtype:?}"),
                &[&x, &w],
                || fused(w.as_tensor()),
                || x.as_tensor().matmul(&w.as_tensor().t()?),
            );
            let frozen = w.as_tensor().detach();
            agree(
                &format!("linear, frozen W {dtype:?}"),
                &[&x],
                || fused(&frozen),
                || x.as_tensor().matmul(&frozen.t()?),
            );
            let b = var(&[5, 4], dtype, 14);
            agree(
                &format!("matmul {dtype:?}"),
                &[&x, &b],
                || matmul(x.as_tensor(), b.as_tensor()).map(|y| y.expect("fused path")),
                || x.as_tensor().matmul(b.as_tensor()),
            );
            let a = var(&[7, 3], dtype, 13);
            agree(
                &format!("linear plus adapter term {dtype:?}"),
                &[&x, &a],
                || {
                    linear_t_plus(x.as_tensor(), &frozen, a.as_tensor())
                        .map(|y| y.expect("fused path"))
                },
                || x.as_tensor().matmul(&frozen.t()?)? + a.as_tensor(),
            );
        }
    }

    /// Few rows through a wide weight, with an inner dimension over faer's 512-deep blocks: the shapes that take
    /// the column-major route.
    const WIDE: (usize, usize, usize) = (3, 1100, 90);

    #[test]
    fn the_column_major_route_matches_candle_in_value_and_gradient() {
        let (rows, n, m) = WIDE;
        assert!(into_columns(rows, n, m) && !into_columns(m, n, rows));
        for dtype in DTYPES {
            let x = var(&[rows, n], dtype, 21);
            let w = var(&[m, n], dtype, 22);
            agree(
                &format!("wide linear, trainable W {dtype:?}"),
                &[&x, &w],
                || linear_t(x.as_tensor(), w.as_tensor()).map(|y| y.expect("fused path")),
                || x.as_tensor().matmul(&w.as_tensor().t()?),
            );
            let frozen = w.as_tensor().detach();
            let a = var(&[rows, m], dtype, 23);
            agree(
                &format!("wide linear plus adapter term {dtype:?}"),
                &[&x, &a],
                || {
                    linear_t_plus(x.as_tensor(), &frozen, a.as_tensor())
                        .map(|y| y.expect("fused path"))
                },
                || x.as_tensor().matmul(&frozen.t()?)? + a.as_tensor(),
            );
        }
    }

    /// The route is a speed choice only: every entry has the bits of faer's product into a row-major output, for
    /// a product faer cuts into 512-deep blocks (WIDE) and for one small enough that it sums in one pass (M·N·K ≤
    /// 4096), in f32 and f64 (whose AVX-512 kernels differ by layout).
    #[test]
    fn the_column_major_route_keeps_the_row_major_bits() {
        fn check<T: Elem>(dtype: DType, (rows, n, m): (usize, usize, usize)) {
            assert!(
                into_columns(rows, n, m),
                "{rows}×{n}·{n}×{m} takes the column route"
            );
            let data = |shape: &[usize], seed| var(shape, dtype, seed).as_tensor().detach();
            let (x, w, a) = (
                data(&[rows, n], 31),
                data(&[m, n], 32),
                data(&[rows, m], 33),
            );
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<T>().unwrap();
            let (xs, ws, az) = (flat(&x), flat(&w), flat(&a));
            let xv = ndarray::ArrayView2::from_shape((rows, n), &xs[..]).unwrap();
            let wv = ndarray::ArrayView2::from_shape((m, n), &ws[..]).unwrap();
            let row_major = |start: &[T], accumulate: bool| {
                let mut y = start.to_vec();
                let dst = ndarray::ArrayViewMut2::from_shape((rows, m), &mut y[..]).unwrap();
                gemm_into_par(dst, accumulate, xv, wv.t(), T::one(), true);
                y
            };
            let bits = |v: &[T]| v.iter().map(|e| e.f64().to_bits()).collect::<Vec<_>>();
            let plain = linear_t(&x, &w).unwrap().expect("fused path");
            assert_eq!(
                bits(&flat(&plain)),
                bits(&row_major(&vec![T::zero(); rows * m], false)),
                "{dtype:?} {rows}×{n}×{m}"
            );
            let plus = linear_t_plus(&x, &w, &a).unwrap().expect("fused path");
            assert_eq!(
                bits(&flat(&plus)),
                bits(&row_major(&az, true)),
                "{dtype:?} {rows}×{n}×{m} plus"
            );
        }
        for shape in [WIDE, (2, 40, 3)] {
            check::<f32>(DType::F32, shape);
            check::<f64>(DType::F64, shape);
        }
    }
}
