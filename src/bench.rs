//! Timing of the hot loops (one Adam step and one ALS sweep of an ABBA fit), shared by the criterion benches and
//! `abba bench`. Speed is measured here, never asserted in tests.

use std::time::Instant;

use ndarray::Array2;

use crate::adapter::Abba;
use crate::adapter::scaling::AbbaScale;
use crate::fit::adam::{AdamSpec, AdamState};
use crate::fit::{Fitted, als};
use crate::linalg::{frob2, gemm};
use crate::rng::seeded;

/// A seeded ABBA fit problem: target U[0,1) (m×n), factors N(0, 0.1²), s = 1 (as benches/torch_abba_step.py).
pub struct AbbaProblem {
    pub target: Array2<f32>,
    pub norm2: f64,
    pub fitted: Fitted<f32>,
}

impl AbbaProblem {
    pub fn new(m: usize, n: usize, r1: usize, r2: usize, seed: u64) -> AbbaProblem {
        let target = crate::target::TargetSpec::Random
            .build((m, n), seed, None)
            .expect("valid shape")
            .mapv(|x| x as f32);
        let mut rng = seeded(seed + 1);
        let g = |r: usize, c: usize, rng: &mut _| {
            crate::adapter::init::gaussian::<f32, _>(r, c, 0.1, rng)
        };
        let abba = Abba::new(
            g(m, r1, &mut rng),
            g(r1, n, &mut rng),
            g(m, r2, &mut rng),
            g(r2, n, &mut rng),
            AbbaScale::Explicit { scale: 1.0 },
        )
        .expect("valid ranks");
        let norm2 = frob2(target.view());
        AbbaProblem {
            target,
            norm2,
            fitted: Fitted::Abba(abba),
        }
    }
}

/// Mean milliseconds of `f` over `iters` calls after `warmup` untimed ones.
pub fn time_ms(warmup: usize, iters: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        f();
    }
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed().as_secs_f64() * 1000.0 / iters.max(1) as f64
}

/// One Adam step (objective, gradients, update) — the same work as the PyTorch script's step.
pub fn adam_step_ms(p: &mut AbbaProblem, warmup: usize, iters: usize) -> f64 {
    let spec = AdamSpec {
        lr: 1e-3,
        ..Default::default()
    };
    let mut state = AdamState::new(&p.fitted);
    let (target, norm2) = (p.target.view(), p.norm2);
    let fitted = &mut p.fitted;
    time_ms(warmup, iters, || {
        crate::fit::adam::step(fitted, &mut state, target, norm2, spec.lr, &spec);
    })
}

/// One ALS sweep (all four factors).
pub fn als_sweep_ms(p: &mut AbbaProblem, warmup: usize, iters: usize) -> f64 {
    let (target, norm2) = (p.target.view(), p.norm2);
    let fitted = &mut p.fitted;
    let mut scratch = als::AlsScratch::default();
    time_ms(warmup, iters, || {
        als::sweep_with(&mut scratch, fitted, target, norm2, 1e-8).expect("well-posed sweep");
    })
}

/// The GEMM floor of an Adam step: the six products it needs (P, Q and four gradients), timed alone.
pub fn gemm_floor_ms(p: &AbbaProblem, warmup: usize, iters: usize) -> f64 {
    let Fitted::Abba(a) = &p.fitted else {
        unreachable!("AbbaProblem holds an ABBA fit")
    };
    let dense = p.target.clone();
    time_ms(warmup, iters, || {
        let pm = gemm(a.b1.view(), a.a1.view());
        let qm = gemm(a.b2.view(), a.a2.view());
        let _ = gemm(dense.view(), a.a1.t());
        let _ = gemm(a.b1.t(), dense.view());
        let _ = gemm(pm.view(), a.a2.t());
        let _ = gemm(a.b2.t(), qm.view());
    })
}
