//! The `fit` suite: timing of the hot loops (one Adam step and one ALS sweep of an ABBA fit) beside PyTorch's Adam
//! step, shared by the criterion benches and `abba bench`.

use std::time::Instant;

use anyhow::{Context, Result};
use ndarray::Array2;
use serde::{Deserialize, Serialize};

use super::child::{self, TempScript, TorchVersions};
use super::rows::{self, round};
use super::{BenchOptions, ours_version};

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

const TORCH_SCRIPT: &str = include_str!("../../benches/torch_abba_step.py");

/// One row of `fit_step.csv`.
#[derive(Serialize)]
struct FitRow {
    implementation: &'static str,
    operation: &'static str,
    m: usize,
    n: usize,
    r1: usize,
    r2: usize,
    threads: usize,
    ms: f64,
    ratio_to_pytorch_adam: Option<f64>,
    ratio_to_gemm_floor: f64,
    version: String,
}

/// What `benches/torch_abba_step.py` prints.
#[derive(Deserialize)]
struct TorchStep {
    ms_per_step: f64,
    #[serde(flatten)]
    versions: TorchVersions,
}

fn torch_step(opts: &BenchOptions) -> Result<TorchStep> {
    let script = TempScript::new("abba-torch-bench", TORCH_SCRIPT)?;
    let (n, r) = (opts.size.to_string(), opts.rank.to_string());
    let args = child::flags(&[
        ("m", n.clone()),
        ("n", n),
        ("r1", r.clone()),
        ("r2", r),
        ("steps", opts.iters.to_string()),
    ]);
    let m: child::Measured<TorchStep> =
        child::python(&opts.python, script.path(), &args, opts.threads)
            .context("the PyTorch Adam step")?;
    Ok(m.value)
}

/// Our Adam step, ALS sweep and GEMM floor beside PyTorch's Adam step, into `opts.fit_out`.
pub fn run_suite(opts: &BenchOptions) -> Result<()> {
    let (n, r) = (opts.size, opts.rank);
    let mut p = AbbaProblem::new(n, n, r, r, 0);
    let floor = gemm_floor_ms(&p, 3, opts.iters);
    let adam = adam_step_ms(&mut p, 3, opts.iters);
    let mut p = AbbaProblem::new(n, n, r, r, 0);
    let als = als_sweep_ms(&mut p, 1, (opts.iters / 5).max(3));
    let torch = torch_step(opts)
        .inspect_err(|e| child::warn_skipped(e, "torch"))
        .ok();
    let ours = ours_version();
    let row = |implementation, operation, ms: f64, to_torch: Option<f64>, version: String| FitRow {
        implementation,
        operation,
        m: n,
        n,
        r1: r,
        r2: r,
        threads: opts.threads,
        ms: round(ms, 3),
        ratio_to_pytorch_adam: to_torch.map(|x| round(x, 3)),
        ratio_to_gemm_floor: round(ms / floor, 3),
        version,
    };
    let t = torch.as_ref().map(|t| t.ms_per_step);
    let mut out = vec![
        row("abba", "gemm-floor-6-products", floor, None, ours.clone()),
        row("abba", "adam-step", adam, t.map(|t| adam / t), ours.clone()),
        row("abba", "als-sweep", als, None, ours),
    ];
    if let Some(t) = &torch {
        out.push(row(
            "pytorch",
            "adam-step",
            t.ms_per_step,
            Some(1.0),
            t.versions.label(),
        ));
    }
    rows::write(&opts.fit_out, &out)
}
