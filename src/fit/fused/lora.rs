//! LoRA: ΔW = s·P with P = B·A; cofactor C = G = c·R with R = P·s − T and c = 2/‖T‖²; ∂B = (C·Aᵀ)·s and
//! ∂A = (Bᵀ·C)·s (the unfused gradients' order of operations).

use ndarray::{Array2, ArrayView2, ArrayViewMut2};

use super::{LANES, Pair, TileKernel, Tiling, Workspace, fold, row_slice};
use crate::adapter::Lora;
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
        let [p] = bufs else {
            unreachable!("LoRA has one pair")
        };
        for (i, sum) in sums.iter_mut().enumerate() {
            let t = row_slice(t, i);
            let p = p.row_mut(i).into_slice().expect("standard layout");
            *sum = row(p, t, self.s, self.c, self.grads);
        }
    }
}

super::multiversion! {
/// Σ R² over a row; with `grads`, overwrites P's row with c·R.
fn row<T: Real>(p: &mut [T], t: &[T], s: T, c: T, grads: bool) -> f64 {
    let n = t.len();
    let p = &mut p[..n];
    let mut lanes = [0.0f64; LANES];
    let mut pc = p.chunks_exact_mut(LANES);
    let mut tc = t.chunks_exact(LANES);
    for (p, t) in (&mut pc).zip(&mut tc) {
        let mut rr = [T::zero(); LANES];
        for l in 0..LANES {
            let r = p[l] * s - t[l];
            rr[l] = r * r;
            if grads {
                p[l] = r * c;
            }
        }
        for l in 0..LANES {
            lanes[l] += rr[l].f64();
        }
    }
    let (p, t) = (pc.into_remainder(), tc.remainder());
    for l in 0..t.len() {
        let r = p[l] * s - t[l];
        lanes[l] += (r * r).f64();
        if grads {
            p[l] = r * c;
        }
    }
    fold(lanes)
}
}

pub(super) fn run<T: Real>(
    l: &Lora<T>,
    target: ArrayView2<'_, T>,
    target_norm2: f64,
    grads: bool,
    ws: &mut Workspace<T>,
    tiling: Tiling,
    threads: usize,
) -> (f64, Vec<Array2<T>>) {
    let pairs = [Pair {
        b: l.b.view(),
        a: l.a.view(),
    }];
    let kernel = Kernel {
        s: l.scale,
        c: T::of(2.0 / target_norm2),
        grads,
    };
    super::run(
        &pairs,
        target,
        None,
        grads,
        Some(l.scale),
        ws,
        tiling,
        threads,
        &kernel,
    )
}
