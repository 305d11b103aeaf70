//! ABBA chains: ΔW = s·⊙_i P_i with P_i = B_i·A_i; cofactor C_i = (G·s)·⊙_{j≠i} P_j with G = c·R,
//! R = ΔW − T and c = 2/‖T‖² (the unfused formulas' order of operations: ΔW = ((s·P_1)·P_2)·…).

use ndarray::{Array2, ArrayView2, ArrayViewMut2};

use super::{LANES, MAX_CHAIN, Pair, TileKernel, Tiling, Workspace, fold, row_slice};
use crate::adapter::AbbaChain;
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
        let k = bufs.len();
        assert!(k <= MAX_CHAIN, "chains longer than MAX_CHAIN are not fused");
        for (i, sum) in sums.iter_mut().enumerate() {
            let t = row_slice(t, i);
            let mut lanes = [0.0f64; LANES];
            let mut ps = [T::zero(); MAX_CHAIN];
            for (j, &tj) in t.iter().enumerate() {
                for (pi, buf) in ps.iter_mut().zip(bufs.iter()) {
                    *pi = buf[(i, j)];
                }
                let mut d = self.s;
                for &pi in &ps[..k] {
                    d *= pi;
                }
                let r = d - tj;
                lanes[j % LANES] += (r * r).f64();
                if self.grads {
                    let g = r * self.c;
                    for (q, buf) in bufs.iter_mut().enumerate() {
                        let mut o = g * self.s;
                        for (l, &pl) in ps[..k].iter().enumerate() {
                            if l != q {
                                o *= pl;
                            }
                        }
                        buf[(i, j)] = o;
                    }
                }
            }
            *sum = fold(lanes);
        }
    }
}

pub(super) fn run<T: Real>(
    chain: &AbbaChain<T>,
    target: ArrayView2<'_, T>,
    target_norm2: f64,
    grads: bool,
    ws: &mut Workspace<T>,
    tiling: Tiling,
    threads: usize,
) -> (f64, Vec<Array2<T>>) {
    let pairs: Vec<Pair<'_, T>> = chain
        .pairs
        .iter()
        .map(|(b, a)| Pair {
            b: b.view(),
            a: a.view(),
        })
        .collect();
    let kernel = Kernel {
        s: chain.scale,
        c: T::of(2.0 / target_norm2),
        grads,
    };
    super::run(
        &pairs, target, None, grads, None, ws, tiling, threads, &kernel,
    )
}
