//! ABBA: ΔW = s·P⊙Q with P = B1·A1, Q = B2·A2. Cofactors C1 = c·R⊙Q and C2 = c·R⊙P with R = s·P⊙Q − T and
//! c = 2s/‖T‖² (the formulas, and their order of operations, of the unfused step).

use ndarray::{Array2, ArrayView2, ArrayViewMut2};

use super::{LANES, Pair, TileKernel, Tiling, Workspace, fold, row_slice};
use crate::adapter::Abba;
use crate::linalg::Real;

struct Kernel<T> {
    s: T,
    c: T,
    grads: bool,
}

impl<T: Real> TileKernel<T> for Kernel<T> {
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
    };
    super::run(
        &pairs, target, None, grads, None, ws, tiling, threads, &kernel,
    )
}
