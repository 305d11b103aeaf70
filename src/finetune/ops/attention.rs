//! Causal grouped-query attention softmax(q·kᵀ/√d + mask)·v for every (batch, head) in one op, with the heads
//! merged back into (batch, seq, heads·d) for the output projection. It replaces the composite path's repeated
//! key/value heads, score, mask, softmax and transpose tensors. Nothing but the operands is kept for the backward
//! pass: it recomputes the probabilities (b·h·t² values, 4 MiB per layer of the benchmark model — more than q, k
//! and v together — for a product and a softmax that cost a fraction of the backward pass). Backward, per head: ∂v += Pᵀ·∂O, ∂P = ∂O·vᵀ,
//! ∂S = P ⊙ (∂P − rowsum(∂O ⊙ O)), ∂q = ∂S·k/√d, ∂k += ∂Sᵀ·q/√d (summed over the query heads sharing a
//! key/value head).

use std::marker::PhantomData;

use candle_core::{CpuStorage, CustomOp3, D, DType, Device, Layout, Shape, Tensor};

use super::{Elem, SharedMut, for_units, fused, mat, mat_mut, slice, storage, tensor, with_data};
use crate::linalg::gemm_into_par;

struct Dims {
    b: usize,
    h: usize,
    kvh: usize,
    t: usize,
    tk: usize,
    d: usize,
}

impl Dims {
    fn rep(&self) -> usize {
        self.h / self.kvh
    }
    /// Key positions query row `i` sees: `lo..=hi`.
    fn visible(&self, i: usize, window: Option<usize>) -> (usize, usize) {
        let pos = self.tk - self.t + i;
        let lo = window.map_or(0, |w| (pos + 1).saturating_sub(w));
        (lo, pos)
    }
}

struct CausalAttention<T> {
    window: Option<usize>,
    _elem: PhantomData<T>,
}

fn dims(q: &Shape, k: &Shape, v: &Shape) -> candle_core::Result<Dims> {
    let (b, h, t, d) = q.dims4()?;
    let (bk, kvh, tk, dk) = k.dims4()?;
    if k != v || b != bk || d != dk || kvh == 0 || h % kvh != 0 || tk < t {
        candle_core::bail!("fused-attention: q {q:?}, k {k:?}, v {v:?} do not fit");
    }
    Ok(Dims {
        b,
        h,
        kvh,
        t,
        tk,
        d,
    })
}

/// Running maxima and sums of a softmax row: independent lanes, so neither pass is one long dependency chain.
const LANES: usize = 16;

crate::fit::fused::multiversion! {
/// x ← softmax(x): the maximum (exact in any order), eˣ⁻ᵐᵃˣ, their sum over [`LANES`] running sums folded in a
/// fixed order, then the division by it as a multiplication by 1/sum.
fn softmax_in_place<T: Elem>(x: &mut [T]) {
    let mut mx = [T::neg_infinity(); LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            mx[l] = if c[l] > mx[l] { c[l] } else { mx[l] };
        }
    }
    for (l, &v) in chunks.remainder().iter().enumerate() {
        mx[l] = if v > mx[l] { v } else { mx[l] };
    }
    let m = mx.iter().fold(T::neg_infinity(), |a, &b| if b > a { b } else { a });
    let mut sums = [T::zero(); LANES];
    let mut chunks = x.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            c[l] = (c[l] - m).exp_k();
            sums[l] += c[l];
        }
    }
    for (l, v) in chunks.into_remainder().iter_mut().enumerate() {
        *v = (*v - m).exp_k();
        sums[l] += *v;
    }
    let sum = sums.iter().fold(T::zero(), |a, &b| a + b);
    let inv = T::one() / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}
}

impl<T: Elem> CausalAttention<T> {
    /// P = softmax(q·kᵀ/√d + mask) for every (batch, head), (b, h, t, tk).
    fn probs(&self, q: &[T], k: &[T], s: &Dims) -> Vec<T> {
        let Dims {
            h, kvh, t, tk, d, ..
        } = *s;
        let scale = T::of(1.0 / (d as f64).sqrt());
        let mut p = super::linear::output::<T>(s.b * h * t * tk);
        let pp = SharedMut(p.as_mut_ptr());
        for_units(s.b * h, |u| {
            let (bi, hi) = (u / h, u % h);
            let g = hi / s.rep();
            // SAFETY: unit u alone writes P's block u; q and k are read-only and sized b·h·t·d, b·kvh·tk·d.
            unsafe {
                let qm = mat(q.as_ptr().add(u * t * d), t, d, d);
                let km = mat(k.as_ptr().add((bi * kvh + g) * tk * d), tk, d, d);
                let pm = mat_mut(pp.get().add(u * t * tk), t, tk, tk);
                gemm_into_par(pm, false, qm, km.t(), scale, false);
                let block = std::slice::from_raw_parts_mut(pp.get().add(u * t * tk), t * tk);
                for (i, row) in block.chunks_mut(tk).enumerate() {
                    let (lo, hi_j) = s.visible(i, self.window);
                    softmax_in_place(&mut row[lo..=hi_j]);
                    row[..lo].fill(T::zero());
                    row[hi_j + 1..].fill(T::zero());
                }
            }
        });
        p
    }

    fn fwd(&self, q: &[T], k: &[T], v: &[T], s: &Dims) -> Vec<T> {
        let Dims {
            h, kvh, t, tk, d, ..
        } = *s;
        let p = self.probs(q, k, s);
        let mut out = super::linear::output::<T>(s.b * t * h * d);
        let op = SharedMut(out.as_mut_ptr());
        for_units(s.b * h, |u| {
            let (bi, hi) = (u / h, u % h);
            let g = hi / s.rep();
            // SAFETY: unit u alone writes head hi's d columns of batch bi's rows of the output.
            unsafe {
                let pm = mat(p.as_ptr().add(u * t * tk), t, tk, tk);
                let vm = mat(v.as_ptr().add((bi * kvh + g) * tk * d), tk, d, d);
                let om = mat_mut(op.get().add(bi * t * h * d + hi * d), t, d, h * d);
                gemm_into_par(om, false, pm, vm, T::one(), false);
            }
        });
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn bwd_t(
        &self,
        q: &[T],
        k: &[T],
        v: &[T],
        o: &[T],
        go: &[T],
        s: &Dims,
    ) -> (Vec<T>, Vec<T>, Vec<T>) {
        let Dims {
            h, kvh, t, tk, d, ..
        } = *s;
        let rep = s.rep();
        let scale = T::of(1.0 / (d as f64).sqrt());
        let p = self.probs(q, k, s);
        let mut dq = super::linear::output::<T>(q.len());
        let mut dk = vec![T::zero(); k.len()];
        let mut dv = vec![T::zero(); v.len()];
        let (dqp, dkp, dvp) = (
            SharedMut(dq.as_mut_ptr()),
            SharedMut(dk.as_mut_ptr()),
            SharedMut(dv.as_mut_ptr()),
        );
        for_units(s.b * kvh, |u2| {
            let (bi, g) = (u2 / kvh, u2 % kvh);
            let mut ds = vec![T::zero(); t * tk];
            // SAFETY: unit u2 alone writes key/value head u2 of dk and dv and the query heads of its group in
            // dq; everything else is read-only.
            unsafe {
                let km = mat(k.as_ptr().add(u2 * tk * d), tk, d, d);
                let vm = mat(v.as_ptr().add(u2 * tk * d), tk, d, d);
                for hi in g * rep..(g + 1) * rep {
                    let u = bi * h + hi;
                    let pm = mat(p.as_ptr().add(u * t * tk), t, tk, tk);
                    let row0 = bi * t * h * d + hi * d;
                    let gom = mat(go.as_ptr().add(row0), t, d, h * d);
                    let dvm = mat_mut(dvp.get().add(u2 * tk * d), tk, d, d);
                    gemm_into_par(dvm, true, pm.t(), gom, T::one(), false);
                    let dsm = mat_mut(ds.as_mut_ptr(), t, tk, tk);
                    gemm_into_par(dsm, false, gom, vm.t(), T::one(), false);
                    let prow = &p[u * t * tk..(u + 1) * t * tk];
                    for i in 0..t {
                        let (orow, grow) =
                            (&o[row0 + i * h * d..][..d], &go[row0 + i * h * d..][..d]);
                        let mut di = T::zero();
                        for (&a, &b) in orow.iter().zip(grow) {
                            di += a * b;
                        }
                        let (lo, hi_j) = s.visible(i, self.window);
                        let dsr = &mut ds[i * tk..(i + 1) * tk];
                        let pr = &prow[i * tk..(i + 1) * tk];
                        for (x, &p) in dsr[lo..=hi_j].iter_mut().zip(&pr[lo..=hi_j]) {
                            *x = p * (*x - di);
                        }
                        dsr[..lo].fill(T::zero());
                        dsr[hi_j + 1..].fill(T::zero());
                    }
                    let dsv = mat(ds.as_ptr(), t, tk, tk);
                    let qm = mat(q.as_ptr().add(u * t * d), t, d, d);
                    let dqm = mat_mut(dqp.get().add(u * t * d), t, d, d);
                    gemm_into_par(dqm, false, dsv, km, scale, false);
                    let dkm = mat_mut(dkp.get().add(u2 * tk * d), tk, d, d);
                    gemm_into_par(dkm, true, dsv.t(), qm, scale, false);
                }
            }
        });
        (dq, dk, dv)
    }
}

macro_rules! impl_attention {
    ($t:ty) => {
        impl CustomOp3 for CausalAttention<$t> {
            fn name(&self) -> &'static str {
                "fused-attention"
            }

            fn cpu_fwd(
                &self,
                q: &CpuStorage,
                lq: &Layout,
                k: &CpuStorage,
                lk: &Layout,
                v: &CpuStorage,
                lv: &Layout,
            ) -> candle_core::Result<(CpuStorage, Shape)> {
                let s = dims(lq.shape(), lk.shape(), lv.shape())?;
                let out = self.fwd(
                    slice::<$t>(q, lq, "fused-attention")?,
                    slice::<$t>(k, lk, "fused-attention")?,
                    slice::<$t>(v, lv, "fused-attention")?,
                    &s,
                );
                Ok((storage(out), Shape::from((s.b, s.t, s.h * s.d))))
            }

            fn bwd(
                &self,
                q: &Tensor,
                k: &Tensor,
                v: &Tensor,
                res: &Tensor,
                grad: &Tensor,
            ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
                let s = dims(q.shape(), k.shape(), v.shape())?;
                let (dq, dk, dv) = with_data::<$t, _>(q, "fused-attention", |qs| {
                    with_data::<$t, _>(k, "fused-attention", |ks| {
                        with_data::<$t, _>(v, "fused-attention", |vs| {
                            with_data::<$t, _>(res, "fused-attention", |os| {
                                with_data::<$t, _>(grad, "fused-attention", |gs| {
                                    Ok(self.bwd_t(qs, ks, vs, os, gs, &s))
                                })
                            })
                        })
                    })
                })?;
                Ok((
                    Some(tensor(dq, q.shape())?),
                    Some(tensor(dk, k.shape())?),
                    Some(tensor(dv, v.shape())?),
                ))
            }
        }
    };
}
impl_attention!(f32);
impl_attention!(f64);

/// Causal attention of q (b, heads, t, d) over k, v (b, kv_heads, tk, d), tk ≥ t (the queries are the last t
/// positions), each query seeing the keys at or before its position (and, with a sliding window, only the last
/// `window` of them). Returns (b, t, heads·d). Fused for f32/f64 CPU tensors of one dtype; `None` otherwise.
pub fn causal_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    window: Option<usize>,
) -> candle_core::Result<Option<Tensor>> {
    if !fused(q) || !fused(k) || !fused(v) || q.dtype() != k.dtype() || q.dtype() != v.dtype() {
        return Ok(None);
    }
    dims(q.shape(), k.shape(), v.shape())?;
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    Ok(Some(match q.dtype() {
        DType::F32 => q.apply_op3(
            &k,
            &v,
            CausalAttention::<f32> {
                window,
                _elem: PhantomData,
            },
        )?,
        DType::F64 => q.apply_op3(
            &k,
            &v,
            CausalAttention::<f64> {
                window,
                _elem: PhantomData,
            },
        )?,
        _ => return Ok(None),
    }))
}

/// The composite ops the fused kernel replaces (the path `Block::attention` takes on other devices): repeated
/// key/value heads, scores in f32 (f64 for f64 models), an additive −∞ mask, softmax, the product with v and the merged heads.
pub fn causal_attention_composite(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    window: Option<usize>,
) -> candle_core::Result<Tensor> {
    let (b, h, t, d) = q.dims4()?;
    let (_, kvh, tk, _) = k.dims4()?;
    let repeat = |x: &Tensor| -> candle_core::Result<Tensor> {
        let n_rep = h / kvh;
        if n_rep == 1 {
            return Ok(x.clone());
        }
        x.unsqueeze(2)?
            .broadcast_as((b, kvh, n_rep, tk, d))?
            .reshape((b, h, tk, d))
    };
    let (k, v) = (repeat(k)?, repeat(v)?);
    // Scores and softmax in f32 (as transformers' eager attention) unless the model is f64.
    let dtype = q.dtype();
    let sdtype = if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let scores = (q.to_dtype(sdtype)?.matmul(&k.to_dtype(sdtype)?.t()?)? / (d as f64).sqrt())?;
    let mask = causal_mask(t, tk, tk - t, window, q.device())?.to_dtype(sdtype)?;
    let scores = scores.broadcast_add(&mask)?;
    let probs = candle_nn::ops::softmax(&scores, D::Minus1)?.to_dtype(dtype)?;
    probs
        .matmul(&v.contiguous()?)?
        .transpose(1, 2)?
        .reshape((b, t, h * d))
}

/// (seq, total) additive mask: query i (absolute position offset + i) sees keys j ≤ offset + i, and with a
/// sliding window only the last `window` of them.
pub fn causal_mask(
    seq: usize,
    total: usize,
    offset: usize,
    window: Option<usize>,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let mut mask = vec![0f32; seq * total];
    for i in 0..seq {
        let pos = offset + i;
        for j in 0..total {
            let too_far = window.is_some_and(|w| pos >= j + w);
            if j > pos || too_far {
                mask[i * total + j] = f32::NEG_INFINITY;
            }
        }
    }
    Tensor::from_vec(mask, (seq, total), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finetune::ops::check::{DTYPES, agree, var};

    #[test]
    fn matches_the_composite_ops_in_value_and_gradient() {
        // (query heads, key/value heads, query positions, key positions, window)
        let cases = [
            (4, 2, 6, 6, None),
            (4, 4, 5, 5, Some(3)),
            (6, 2, 3, 7, None),
            (2, 1, 4, 9, Some(4)),
            // Rows longer than the softmax's sixteen lanes, with and without a remainder.
            (2, 1, 40, 40, None),
            (2, 2, 5, 37, None),
            (2, 1, 24, 24, Some(20)),
        ];
        for dtype in DTYPES {
            for (i, &(h, kvh, t, tk, window)) in cases.iter().enumerate() {
                let d = 4;
                let q = var(&[2, h, t, d], dtype, 10 + i as u64);
                let k = var(&[2, kvh, tk, d], dtype, 20 + i as u64);
                let v = var(&[2, kvh, tk, d], dtype, 30 + i as u64);
                agree(
                    &format!("attention case {i} {dtype:?}"),
                    &[&q, &k, &v],
                    || {
                        causal_attention(q.as_tensor(), k.as_tensor(), v.as_tensor(), window)
                            .map(|o| o.expect("fused path"))
                    },
                    || {
                        causal_attention_composite(
                            q.as_tensor(),
                            k.as_tensor(),
                            v.as_tensor(),
                            window,
                        )
                    },
                );
            }
        }
    }

    #[test]
    fn a_second_backward_pass_gives_the_same_gradients() {
        let q = var(&[1, 2, 4, 4], DType::F64, 1);
        let k = var(&[1, 1, 4, 4], DType::F64, 2);
        let v = var(&[1, 1, 4, 4], DType::F64, 3);
        let y = causal_attention(q.as_tensor(), k.as_tensor(), v.as_tensor(), None)
            .unwrap()
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap();
        let first = y.backward().unwrap();
        let second = y.backward().unwrap();
        for v in [&q, &k, &v] {
            crate::finetune::ops::check::close(
                second.get(v.as_tensor()).unwrap(),
                first.get(v.as_tensor()).unwrap(),
                "second backward",
            );
        }
    }
}
