//! The Khatri–Rao factors of ABBA's forward pass in one op each, with hand-written backward passes:
//!
//! - by rows, for B1 (m×r1) and B2 (m×r2): `B_kr[i, j·r2 + k] = s·B1[i, j]·B2[i, k]` (m × r1r2), with
//!   ∂B1[i, j] = Σₖ s·G[i, j·r2 + k]·B2[i, k] and ∂B2[i, k] = Σⱼ s·G[i, j·r2 + k]·B1[i, j];
//! - by columns, for A1 (r1×n) and A2 (r2×n): `A_kr[j·r2 + k, c] = A1[j, c]·A2[k, c]` (r1r2 × n), with
//!   ∂A1[j, :] = Σₖ G[j·r2 + k, :] ⊙ A2[k, :] and ∂A2[k, :] = Σⱼ G[j·r2 + k, :] ⊙ A1[j, :].
//!
//! The composite form (unsqueeze, broadcast multiply, reshape, scale) is four graph nodes per factor whose
//! backward passes multiply by broadcast views and reduce over a middle axis, each allocating an m·r1r2 tensor.
//! The forward values are the composite's bit for bit (the same products, scaled afterwards as `affine` does),
//! except that a product of −0 stays −0 where `affine`'s v·s + 0 gives +0.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};

use super::{Elem, for_rows, fused, same_dtype, slice, storage, tensor, with_data};

/// Which Khatri–Rao product: of rows (the B side) or of columns (the A side).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Rows,
    Cols,
}

struct KhatriRao {
    side: Side,
    /// Applied to the product after it is formed (`None`: no scaling, no extra rounding).
    scale: Option<f64>,
}

const NAME: &str = "fused-khatri-rao";

impl KhatriRao {
    /// The scale in the element type (f64 → f32 rounds; num-traits' conversion never fails for floats).
    fn scale_as<T: Elem>(&self) -> Option<T> {
        self.scale
            .map(|s| <T as num_traits::FromPrimitive>::from_f64(s).unwrap_or_else(T::nan))
    }

    /// (outer, r1, r2): rows for [`Side::Rows`], columns for [`Side::Cols`].
    fn dims(&self, l1: &Layout, l2: &Layout) -> candle_core::Result<(usize, usize, usize)> {
        let (a, b) = (l1.shape().dims2()?, l2.shape().dims2()?);
        let dims = match self.side {
            Side::Rows if a.0 == b.0 => (a.0, a.1, b.1),
            Side::Cols if a.1 == b.1 => (a.1, a.0, b.0),
            _ => candle_core::bail!(
                "{NAME}: {:?} operands {a:?} and {b:?} do not match",
                self.side
            ),
        };
        Ok(dims)
    }

    fn fwd<T: Elem>(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (outer, r1, r2) = self.dims(l1, l2)?;
        let (f1, f2) = (slice::<T>(s1, l1, NAME)?, slice::<T>(s2, l2, NAME)?);
        let mut out = super::linear::output::<T>(outer * r1 * r2);
        let sc = self.scale_as::<T>();
        let scaled = |v: T| sc.map_or(v, |s| v * s);
        match self.side {
            Side::Rows => for_rows(&mut out, r1 * r2, |i, row| {
                let (p, q) = (&f1[i * r1..(i + 1) * r1], &f2[i * r2..(i + 1) * r2]);
                for (j, &pj) in p.iter().enumerate() {
                    for (o, &qk) in row[j * r2..(j + 1) * r2].iter_mut().zip(q) {
                        *o = scaled(pj * qk);
                    }
                }
            }),
            Side::Cols => for_rows(&mut out, outer, |jk, row| {
                let (j, k) = (jk / r2, jk % r2);
                let (a, b) = (
                    &f1[j * outer..(j + 1) * outer],
                    &f2[k * outer..(k + 1) * outer],
                );
                for ((o, &x), &y) in row.iter_mut().zip(a).zip(b) {
                    *o = scaled(x * y);
                }
            }),
        }
        let shape = match self.side {
            Side::Rows => (outer, r1 * r2),
            Side::Cols => (r1 * r2, outer),
        };
        Ok((storage(out), Shape::from(shape)))
    }

    fn bwd_t<T: Elem>(
        &self,
        t1: &Tensor,
        t2: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (outer, r1, r2) = self.dims(t1.layout(), t2.layout())?;
        with_data::<T, _>(t1, NAME, |f1| {
            with_data::<T, _>(t2, NAME, |f2| {
                with_data::<T, _>(grad, NAME, |g| {
                    let d1 = t1
                        .track_op()
                        .then(|| self.factor_grad(g, f2, (outer, r1, r2), true))
                        .map(|d| tensor(d, t1.shape()))
                        .transpose()?;
                    let d2 = t2
                        .track_op()
                        .then(|| self.factor_grad(g, f1, (outer, r1, r2), false))
                        .map(|d| tensor(d, t2.shape()))
                        .transpose()?;
                    Ok((d1, d2))
                })
            })
        })
    }

    /// The gradient of the first factor (`first`) or of the second, from G and the other factor's values.
    fn factor_grad<T: Elem>(
        &self,
        g: &[T],
        other: &[T],
        (outer, r1, r2): (usize, usize, usize),
        first: bool,
    ) -> Vec<T> {
        let own = if first { r1 } else { r2 };
        let mut d = super::linear::output::<T>(outer * own);
        // Entry (j, k) of G for this factor's index `a` and the other's `b`.
        let at = |a: usize, b: usize| if first { a * r2 + b } else { b * r2 + a };
        let n_other = if first { r2 } else { r1 };
        let sc = self.scale_as::<T>();
        let scaled = |v: T| sc.map_or(v, |s| v * s);
        match self.side {
            Side::Rows => for_rows(&mut d, own, |i, row| {
                let (gi, oi) = (&g[i * r1 * r2..], &other[i * n_other..(i + 1) * n_other]);
                for (a, out) in row.iter_mut().enumerate() {
                    let mut acc = T::zero();
                    for (b, &o) in oi.iter().enumerate() {
                        acc += scaled(gi[at(a, b)]) * o;
                    }
                    *out = acc;
                }
            }),
            Side::Cols => for_rows(&mut d, outer, |a, row| {
                // The sum is built in place ([`output`](super::linear::output) leaves the buffer unfilled).
                row.fill(T::zero());
                for b in 0..n_other {
                    let gr = &g[at(a, b) * outer..(at(a, b) + 1) * outer];
                    let or = &other[b * outer..(b + 1) * outer];
                    for ((out, &gv), &o) in row.iter_mut().zip(gr).zip(or) {
                        *out += scaled(gv) * o;
                    }
                }
            }),
        }
        d
    }
}

impl CustomOp2 for KhatriRao {
    fn name(&self) -> &'static str {
        NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        match same_dtype(NAME, &[s1, s2])? {
            DType::F32 => self.fwd::<f32>(s1, l1, s2, l2),
            DType::F64 => self.fwd::<f64>(s1, l1, s2, l2),
            d => candle_core::bail!("{NAME}: {d:?} is not supported"),
        }
    }

    fn bwd(
        &self,
        t1: &Tensor,
        t2: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        match grad.dtype() {
            DType::F32 => self.bwd_t::<f32>(t1, t2, grad),
            DType::F64 => self.bwd_t::<f64>(t1, t2, grad),
            d => candle_core::bail!("{NAME}: {d:?} is not supported"),
        }
    }
}

fn applies(x: &Tensor, y: &Tensor) -> bool {
    fused(x) && fused(y) && x.dtype() == y.dtype() && x.rank() == 2 && y.rank() == 2
}

/// s·(B1 ⊙ᵣ B2): row i is s·kron(B1[i, :], B2[i, :]). Fused for f32/f64 CPU matrices, composite otherwise.
pub fn khatri_rao_rows(b1: &Tensor, b2: &Tensor, scale: f64) -> candle_core::Result<Tensor> {
    if applies(b1, b2) {
        let op = KhatriRao {
            side: Side::Rows,
            scale: Some(scale),
        };
        return b1.contiguous()?.apply_op2(&b2.contiguous()?, op);
    }
    khatri_rao_rows_composite(b1, b2, scale)
}

/// A1 ⊙꜀ A2: column c is kron(A1[:, c], A2[:, c]). Fused for f32/f64 CPU matrices, composite otherwise.
pub fn khatri_rao_cols(a1: &Tensor, a2: &Tensor) -> candle_core::Result<Tensor> {
    if applies(a1, a2) {
        let op = KhatriRao {
            side: Side::Cols,
            scale: None,
        };
        return a1.contiguous()?.apply_op2(&a2.contiguous()?, op);
    }
    khatri_rao_cols_composite(a1, a2)
}

/// The composite ops [`khatri_rao_rows`] replaces.
pub fn khatri_rao_rows_composite(
    b1: &Tensor,
    b2: &Tensor,
    scale: f64,
) -> candle_core::Result<Tensor> {
    let (m, r1) = b1.dims2()?;
    let r2 = b2.dim(1)?;
    b1.unsqueeze(2)?
        .broadcast_mul(&b2.unsqueeze(1)?)?
        .reshape((m, r1 * r2))?
        * scale
}

/// The composite ops [`khatri_rao_cols`] replaces.
pub fn khatri_rao_cols_composite(a1: &Tensor, a2: &Tensor) -> candle_core::Result<Tensor> {
    let (r1, n) = a1.dims2()?;
    let r2 = a2.dim(0)?;
    a1.unsqueeze(1)?
        .broadcast_mul(&a2.unsqueeze(0)?)?
        .reshape((r1 * r2, n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finetune::ops::check::{DTYPES, agree, var};

    #[test]
    fn matches_the_composite_ops_in_value_and_gradient() {
        for dtype in DTYPES {
            // r1 ≠ r2 so that swapping the factors' roles fails; 11,000 rows / columns so that the forward and
            // both backward kernels pass PAR_MIN_ELEMS and run split across threads with a ragged last chunk.
            let b1 = var(&[11_000, 3], dtype, 21);
            let b2 = var(&[11_000, 5], dtype, 22);
            assert!(applies(b1.as_tensor(), b2.as_tensor()), "fused path");
            agree(
                &format!("khatri_rao_rows {dtype:?}"),
                &[&b1, &b2],
                || khatri_rao_rows(b1.as_tensor(), b2.as_tensor(), 0.375),
                || khatri_rao_rows_composite(b1.as_tensor(), b2.as_tensor(), 0.375),
            );
            let a1 = var(&[3, 11_000], dtype, 23);
            let a2 = var(&[5, 11_000], dtype, 24);
            assert!(applies(a1.as_tensor(), a2.as_tensor()), "fused path");
            agree(
                &format!("khatri_rao_cols {dtype:?}"),
                &[&a1, &a2],
                || khatri_rao_cols(a1.as_tensor(), a2.as_tensor()),
                || khatri_rao_cols_composite(a1.as_tensor(), a2.as_tensor()),
            );
        }
    }

    #[test]
    fn forward_values_are_the_composites_bit_for_bit() {
        let b1 = var(&[40, 4], DType::F32, 31);
        let b2 = var(&[40, 3], DType::F32, 32);
        let bits = |t: Tensor| -> Vec<u32> {
            let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            v.into_iter().map(f32::to_bits).collect()
        };
        let fused = khatri_rao_rows(b1.as_tensor(), b2.as_tensor(), 0.3).unwrap();
        let composite = khatri_rao_rows_composite(b1.as_tensor(), b2.as_tensor(), 0.3).unwrap();
        assert_eq!(bits(fused), bits(composite));
    }
}
