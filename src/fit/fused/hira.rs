//! HiRA: ΔW = P⊙W0 with P = B·A; cofactor C = G⊙W0 with G = c·R, R = P⊙W0 − T and c = 2/‖T‖² (the unfused
//! formulas' order of operations).

use ndarray::{Array2, ArrayView2, ArrayViewMut2};

use super::{LANES, Pair, TileKernel, Tiling, Workspace, fold, row_slice};
use crate::adapter::Hira;
use crate::linalg::Real;

struct Kernel<T> {
    c: T,
    grads: bool,
}

impl<T: Real> TileKernel<T> for Kernel<T> {
    fn apply(
        &self,
        bufs: &mut [ArrayViewMut2<'_, T>],
        t: ArrayView2<'_, T>,
        aux: Option<ArrayView2<'_, T>>,
        sums: &mut [f64],
    ) {
        let [p] = bufs else {
            unreachable!("HiRA has one pair")
        };
        let w0 = aux.expect("HiRA passes its W0");
        for (i, sum) in sums.iter_mut().enumerate() {
            let (t, w) = (row_slice(t, i), row_slice(w0, i));
            let p = p.row_mut(i).into_slice().expect("standard layout");
            *sum = row(p, t, w, self.c, self.grads);
        }
    }
}

super::multiversion! {
/// Σ R² over a row; with `grads`, overwrites P's row with (c·R)⊙W0.
fn row<T: Real>(p: &mut [T], t: &[T], w: &[T], c: T, grads: bool) -> f64 {
    let n = t.len();
    let (p, w) = (&mut p[..n], &w[..n]);
    let mut lanes = [0.0f64; LANES];
    let mut pc = p.chunks_exact_mut(LANES);
    let mut tc = t.chunks_exact(LANES);
    let mut wc = w.chunks_exact(LANES);
    for ((p, t), w) in (&mut pc).zip(&mut tc).zip(&mut wc) {
        let mut rr = [T::zero(); LANES];
        for l in 0..LANES {
            let r = p[l] * w[l] - t[l];
            rr[l] = r * r;
            if grads {
                p[l] = r * c * w[l];
            }
        }
        for l in 0..LANES {
            lanes[l] += rr[l].f64();
        }
    }
    let (p, t, w) = (pc.into_remainder(), tc.remainder(), wc.remainder());
    for l in 0..t.len() {
        let r = p[l] * w[l] - t[l];
        lanes[l] += (r * r).f64();
        if grads {
            p[l] = r * c * w[l];
        }
    }
    fold(lanes)
}
}

pub(super) fn run<T: Real>(
    h: &Hira<T>,
    target: ArrayView2<'_, T>,
    target_norm2: f64,
    grads: bool,
    ws: &mut Workspace<T>,
    tiling: Tiling,
    threads: usize,
) -> (f64, Vec<Array2<T>>) {
    let pairs = [Pair {
        b: h.b.view(),
        a: h.a.view(),
    }];
    let kernel = Kernel {
        c: T::of(2.0 / target_norm2),
        grads,
    };
    super::run(
        &pairs,
        target,
        Some(h.w0.view()),
        grads,
        None,
        ws,
        tiling,
        threads,
        &kernel,
    )
}
