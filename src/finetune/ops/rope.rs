//! A projection's output (batch, seq, heads·d) split into heads (batch, heads, seq, d) and, for queries and keys,
//! rotated by the rotary embedding (Hugging Face's non-interleaved "rotate half": dimension i pairs with
//! i + d/2) — the reshape, transpose, copy and four elementwise ops of the composite path in one pass. The
//! backward pass applies the inverse rotation and the inverse permutation.

use candle_core::{CpuStorage, CustomOp1, D, DType, Layout, Shape, Tensor};

use super::{Elem, for_rows, fused, slice, storage, tensor, with_data};

struct SplitRope<T> {
    heads: usize,
    d: usize,
    /// cos and sin, (seq, d/2) each, for the positions of this call; `None` splits without rotating.
    table: Option<(Vec<T>, Vec<T>)>,
}

impl<T: Elem> SplitRope<T> {
    fn fwd(&self, ys: &[T], shape: &Shape) -> candle_core::Result<(Vec<T>, Shape)> {
        let (b, t, hd) = shape.dims3()?;
        let (n, d) = (self.heads, self.d);
        if hd != n * d {
            candle_core::bail!("fused-rope: last dimension {hd} is not {n} heads of {d}");
        }
        let half = d / 2;
        let mut out = super::linear::output::<T>(ys.len());
        for_rows(&mut out, d, |r, o| {
            let (bi, hi, ti) = (r / (n * t), (r / t) % n, r % t);
            let src = &ys[(bi * t + ti) * hd + hi * d..][..d];
            match &self.table {
                None => o.copy_from_slice(src),
                Some((cos, sin)) => {
                    let (c, s) = (&cos[ti * half..][..half], &sin[ti * half..][..half]);
                    let (o1, o2) = o.split_at_mut(half);
                    let (x1, x2) = src.split_at(half);
                    let pairs = o1.iter_mut().zip(o2.iter_mut()).zip(x1.iter().zip(x2));
                    for (((o1, o2), (&x1, &x2)), (&c, &s)) in pairs.zip(c.iter().zip(s)) {
                        *o1 = x1 * c - x2 * s;
                        *o2 = x2 * c + x1 * s;
                    }
                }
            }
        });
        Ok((out, Shape::from((b, n, t, d))))
    }

    fn bwd(&self, gs: &[T], (n, t, d): (usize, usize, usize)) -> Vec<T> {
        let half = d / 2;
        let mut dy = super::linear::output::<T>(gs.len());
        for_rows(&mut dy, d, |r, o| {
            let (bi, ti, hi) = (r / (t * n), (r / n) % t, r % n);
            let g = &gs[((bi * n + hi) * t + ti) * d..][..d];
            match &self.table {
                None => o.copy_from_slice(g),
                Some((cos, sin)) => {
                    let (c, s) = (&cos[ti * half..][..half], &sin[ti * half..][..half]);
                    let (o1, o2) = o.split_at_mut(half);
                    let (g1, g2) = g.split_at(half);
                    let pairs = o1.iter_mut().zip(o2.iter_mut()).zip(g1.iter().zip(g2));
                    for (((o1, o2), (&g1, &g2)), (&c, &s)) in pairs.zip(c.iter().zip(s)) {
                        *o1 = g1 * c + g2 * s;
                        *o2 = g2 * c - g1 * s;
                    }
                }
            }
        });
        dy
    }
}

macro_rules! impl_split_rope {
    ($t:ty) => {
        impl CustomOp1 for SplitRope<$t> {
            fn name(&self) -> &'static str {
                "fused-rope"
            }

            fn cpu_fwd(
                &self,
                s: &CpuStorage,
                l: &Layout,
            ) -> candle_core::Result<(CpuStorage, Shape)> {
                let (out, shape) = self.fwd(slice::<$t>(s, l, "fused-rope")?, l.shape())?;
                Ok((storage(out), shape))
            }

            fn bwd(
                &self,
                arg: &Tensor,
                _res: &Tensor,
                grad: &Tensor,
            ) -> candle_core::Result<Option<Tensor>> {
                let (_, n, t, d) = grad.dims4()?;
                let dy = with_data::<$t, _>(grad, "fused-rope", |g| Ok(self.bwd(g, (n, t, d))))?;
                Ok(Some(tensor(dy, arg.shape())?))
            }
        }
    };
}
impl_split_rope!(f32);
impl_split_rope!(f64);

/// `y` (batch, seq, heads·d) as (batch, heads, seq, d), rotated by `cos`/`sin` ((seq, d/2) each, the rows of
/// this call's positions) when given. Fused for f32/f64 CPU tensors; `None` otherwise (the caller then uses the
/// composite path).
pub fn split_heads_rope(
    y: &Tensor,
    heads: usize,
    d: usize,
    cos_sin: Option<(&Tensor, &Tensor)>,
) -> candle_core::Result<Option<Tensor>> {
    if !fused(y) || y.rank() != 3 || !d.is_multiple_of(2) {
        return Ok(None);
    }
    let y = y.contiguous()?;
    let read = |t: &Tensor| -> candle_core::Result<Option<Tensor>> {
        Ok(Some(
            t.to_dtype(y.dtype())?.to_device(y.device())?.contiguous()?,
        ))
    };
    let table = match cos_sin {
        None => None,
        Some((c, s)) => Some((read(c)?, read(s)?)),
    };
    Ok(Some(match y.dtype() {
        DType::F32 => y.apply_op1(SplitRope::<f32> {
            heads,
            d,
            table: vecs(table)?,
        })?,
        DType::F64 => y.apply_op1(SplitRope::<f64> {
            heads,
            d,
            table: vecs(table)?,
        })?,
        _ => return Ok(None),
    }))
}

#[allow(clippy::type_complexity)]
fn vecs<T: Elem>(
    table: Option<(Option<Tensor>, Option<Tensor>)>,
) -> candle_core::Result<Option<(Vec<T>, Vec<T>)>> {
    match table {
        Some((Some(c), Some(s))) => Ok(Some((
            c.flatten_all()?.to_vec1::<T>()?,
            s.flatten_all()?.to_vec1::<T>()?,
        ))),
        _ => Ok(None),
    }
}

/// The composite ops the fused kernel replaces: reshape, transpose, copy, then rotate-half with the tables
/// broadcast over batch and heads.
pub fn split_heads_rope_composite(
    y: &Tensor,
    heads: usize,
    d: usize,
    cos_sin: Option<(&Tensor, &Tensor)>,
) -> candle_core::Result<Tensor> {
    let (b, t, _) = y.dims3()?;
    let x = y.reshape((b, t, heads, d))?.transpose(1, 2)?.contiguous()?;
    let Some((cos, sin)) = cos_sin else {
        return Ok(x);
    };
    let cos = Tensor::cat(&[cos, cos], D::Minus1)?
        .unsqueeze(0)?
        .unsqueeze(0)?;
    let sin = Tensor::cat(&[sin, sin], D::Minus1)?
        .unsqueeze(0)?
        .unsqueeze(0)?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finetune::ops::check::{DTYPES, agree, randn, var};

    #[test]
    fn matches_the_composite_ops_in_value_and_gradient() {
        for dtype in DTYPES {
            let (heads, d, t) = (3, 6, 5);
            let y = var(&[2, t, heads * d], dtype, 5);
            let cos = randn(&[t, d / 2], dtype, 6);
            let sin = randn(&[t, d / 2], dtype, 7);
            let fused = |table: Option<(&Tensor, &Tensor)>| {
                split_heads_rope(y.as_tensor(), heads, d, table).map(|t| t.expect("fused path"))
            };
            agree(
                &format!("rope {dtype:?}"),
                &[&y],
                || fused(Some((&cos, &sin))),
                || split_heads_rope_composite(y.as_tensor(), heads, d, Some((&cos, &sin))),
            );
            agree(
                &format!("split without rotation {dtype:?}"),
                &[&y],
                || fused(None),
                || split_heads_rope_composite(y.as_tensor(), heads, d, None),
            );
        }
    }
}
