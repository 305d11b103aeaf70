//! ABBA: ΔW = s·P⊙Q with P = B1·A1, Q = B2·A2. Cofactors C1 = c·R⊙Q and C2 = c·R⊙P with R = s·P⊙Q − T and
//! c = 2s/‖T‖² (the formulas, and their order of operations, of the unfused step).

use ndarray::{Array2, ArrayView2, ArrayViewMut2};

use super::{LANES, Pair, TileKernel, Tiling, Workspace, fold, row_slice};
use crate::adapter::Abba;
use crate::linalg::Real;

struct Kernel<'a, T> {
    s: T,
    c: T,
    grads: bool,
    #[cfg(target_arch = "x86_64")]
    direct: Option<Direct<'a>>,
    #[cfg(not(target_arch = "x86_64"))]
    direct: Option<std::marker::PhantomData<&'a ()>>,
}

/// What the register-tile kernel needs: B1 and B2 as f32, A1 and A2 packed (once per step).
#[cfg(target_arch = "x86_64")]
struct Direct<'a> {
    b1: ArrayView2<'a, f32>,
    b2: ArrayView2<'a, f32>,
    a1: super::abba_avx512::PackedFactor,
    a2: super::abba_avx512::PackedFactor,
}

/// `v` as the f32 view it is, when T is f32.
#[cfg(target_arch = "x86_64")]
fn as_f32<T: Real, V: AsF32<T>>(v: V) -> Option<V::F32> {
    // SAFETY: T is f32, so the cast is to the same type.
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()).then(|| unsafe { v.cast() })
}

/// A view over T re-read as the same view over f32, with the same lifetimes.
#[cfg(target_arch = "x86_64")]
trait AsF32<T> {
    type F32;
    /// # Safety
    /// T must be f32 ([`as_f32`] checks).
    unsafe fn cast(self) -> Self::F32;
}

#[cfg(target_arch = "x86_64")]
impl<'a, T: Real> AsF32<T> for ArrayView2<'a, T> {
    type F32 = ArrayView2<'a, f32>;
    unsafe fn cast(self) -> Self::F32 {
        let v = std::mem::ManuallyDrop::new(self);
        // SAFETY: T is f32 (the caller's promise), so this is the same type.
        unsafe { std::mem::transmute_copy(&*v) }
    }
}

#[cfg(target_arch = "x86_64")]
impl<'a, 'b, T: Real> AsF32<T> for &'b mut ArrayViewMut2<'a, T> {
    type F32 = &'b mut ArrayViewMut2<'a, f32>;
    unsafe fn cast(self) -> Self::F32 {
        // SAFETY: T is f32 (the caller's promise), so this is the same type.
        unsafe { &mut *(self as *mut ArrayViewMut2<'a, T>).cast::<ArrayViewMut2<'a, f32>>() }
    }
}

#[cfg(target_arch = "x86_64")]
impl<'a> Direct<'a> {
    /// The kernel's inputs, where it gives faer's bits: f32 on an AVX-512 CPU, ranks 2 to 512, at least two rows
    /// and two columns. faer sums a depth over 512 in blocks, multiplies a depth of 1 without FMA, and takes one
    /// output row or column as a dot product; the kernel does none of these.
    fn new<T: Real>(a: &'a Abba<T>) -> Option<Self> {
        let (m, n) = (a.b1.nrows(), a.a1.ncols());
        let ranks_ok = [a.a1.nrows(), a.a2.nrows()]
            .iter()
            .all(|r| (2..=512).contains(r));
        if !ranks_ok || m < 2 || n < 2 || !super::abba_avx512::available() {
            return None;
        }
        let pack = |m: &'a Array2<T>| as_f32(m.view()).map(super::abba_avx512::PackedFactor::new);
        let rows =
            |b: &'a Array2<T>| as_f32(b.view()).filter(|v| v.ncols() <= 1 || v.strides()[1] == 1);
        Some(Direct {
            b1: rows(&a.b1)?,
            b2: rows(&a.b2)?,
            a1: pack(&a.a1)?,
            a2: pack(&a.a2)?,
        })
    }
}

impl<T: Real> TileKernel<T> for Kernel<'_, T> {
    #[cfg(target_arch = "x86_64")]
    fn cofactors_direct(
        &self,
        rows: std::ops::Range<usize>,
        bufs: &mut [ArrayViewMut2<'_, T>],
        t: ArrayView2<'_, T>,
        sums: &mut [f64],
    ) -> bool {
        use super::abba_avx512::{Scalars, cofactor_tile};
        let (Some(d), [p, q]) = (&self.direct, bufs) else {
            return false;
        };
        let (Some(t), Some(c1), Some(c2)) = (as_f32(t), as_f32(p), as_f32(q)) else {
            return false;
        };
        let k = Scalars {
            s: self.s.f64() as f32,
            c: self.c.f64() as f32,
        };
        let b1 = d.b1.slice(ndarray::s![rows.clone(), ..]);
        let b2 = d.b2.slice(ndarray::s![rows, ..]);
        cofactor_tile(
            (b1, &d.a1),
            (b2, &d.a2),
            t,
            k,
            (c1.view_mut(), c2.view_mut()),
            sums,
        );
        true
    }

    fn apply(
        &self,
        bufs: &mut [ArrayViewMut2<'_, T>],
        t: ArrayView2<'_, T>,
        _aux: Option<ArrayView2<'_, T>>,
        sums: &mut [f64],
    ) {
        let [p, q] = bufs else {
            unreachable!("ABBA has two pairs")
        };
        for (i, sum) in sums.iter_mut().enumerate() {
            let t = row_slice(t, i);
            let p = p.row_mut(i).into_slice().expect("standard layout");
            let q = q.row_mut(i).into_slice().expect("standard layout");
            *sum = if self.grads {
                cofactor_row(p, q, t, self.s, self.c)
            } else {
                residual_row(p, q, t, self.s)
            };
        }
    }
}

super::multiversion! {
/// Overwrites P's row with C1 = c·R⊙Q and Q's with C2 = c·R⊙P; returns Σ R².
fn cofactor_row<T: Real>(p: &mut [T], q: &mut [T], t: &[T], s: T, c: T) -> f64 {
    let n = t.len();
    let (p, q) = (&mut p[..n], &mut q[..n]);
    let mut lanes = [0.0f64; LANES];
    let mut pc = p.chunks_exact_mut(LANES);
    let mut qc = q.chunks_exact_mut(LANES);
    let mut tc = t.chunks_exact(LANES);
    for ((p, q), t) in (&mut pc).zip(&mut qc).zip(&mut tc) {
        let mut rr = [T::zero(); LANES];
        for l in 0..LANES {
            let (pk, qk) = (p[l], q[l]);
            let r = s * pk * qk - t[l];
            rr[l] = r * r;
            let g = c * r;
            p[l] = g * qk;
            q[l] = g * pk;
        }
        for l in 0..LANES {
            lanes[l] += rr[l].f64();
        }
    }
    let (p, q, t) = (pc.into_remainder(), qc.into_remainder(), tc.remainder());
    for l in 0..t.len() {
        let (pk, qk) = (p[l], q[l]);
        let r = s * pk * qk - t[l];
        lanes[l] += (r * r).f64();
        let g = c * r;
        p[l] = g * qk;
        q[l] = g * pk;
    }
    fold(lanes)
}
}

super::multiversion! {
/// Σ (ΔW − T)² over a row, ΔW with [`Abba::delta`]'s formula (P⊙Q)·s.
fn residual_row<T: Real>(p: &[T], q: &[T], t: &[T], s: T) -> f64 {
    let n = t.len();
    let (p, q) = (&p[..n], &q[..n]);
    let mut lanes = [0.0f64; LANES];
    let (pc, qc, tc) = (
        p.chunks_exact(LANES),
        q.chunks_exact(LANES),
        t.chunks_exact(LANES),
    );
    let (pr, qr, tr) = (pc.remainder(), qc.remainder(), tc.remainder());
    for ((p, q), t) in pc.zip(qc).zip(tc) {
        for l in 0..LANES {
            let r = p[l] * q[l] * s - t[l];
            lanes[l] += (r * r).f64();
        }
    }
    for l in 0..tr.len() {
        let r = pr[l] * qr[l] * s - tr[l];
        lanes[l] += (r * r).f64();
    }
    fold(lanes)
}
}

pub(super) fn run<T: Real>(
    a: &Abba<T>,
    target: ArrayView2<'_, T>,
    target_norm2: f64,
    grads: bool,
    ws: &mut Workspace<T>,
    tiling: Tiling,
    threads: usize,
) -> (f64, Vec<Array2<T>>) {
    let pairs = [
        Pair {
            b: a.b1.view(),
            a: a.a1.view(),
        },
        Pair {
            b: a.b2.view(),
            a: a.a2.view(),
        },
    ];
    let kernel = Kernel {
        s: a.scale,
        c: T::of(2.0 / target_norm2) * a.scale,
        grads,
        #[cfg(target_arch = "x86_64")]
        direct: grads.then(|| Direct::new(a)).flatten(),
        #[cfg(not(target_arch = "x86_64"))]
        direct: None,
    };
    super::run(
        &pairs, target, None, grads, None, ws, tiling, threads, &kernel,
    )
}
