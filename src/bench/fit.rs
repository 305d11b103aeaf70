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

/// Side of the square sgemm whose rate stands for the machine's peak (large enough to run at full speed, small
/// enough to time in a second).
pub const PEAK_GEMM_SIDE: usize = 2048;

/// One `side`³ f32 GEMM through our GEMM (faer), the peak the `x_peak` column divides by.
pub fn peak_gemm_ms(side: usize, warmup: usize, iters: usize) -> f64 {
    let mut rng = seeded(7);
    let a = crate::adapter::init::gaussian::<f32, _>(side, side, 1.0, &mut rng);
    let b = crate::adapter::init::gaussian::<f32, _>(side, side, 1.0, &mut rng);
    time_ms(warmup, iters, || {
        let _ = gemm(a.view(), b.view());
    })
}

/// Floating-point operations of one ABBA Adam step on m×n: six m×n×r products (P, Q and the four factor gradients,
/// r = r1 or r2), 2 flops per multiply-add; the elementwise work is O(mn) and left out.
pub fn adam_step_flops(m: usize, n: usize, r1: usize, r2: usize) -> f64 {
    6.0 * (m * n) as f64 * (r1 + r2) as f64
}

/// Floating-point operations of one ALS sweep: each of the four factors' per-row normal equations, a symmetric
/// r×r Gram over the other dimension (half of 2·r² flops per entry of the target), plus its right-hand side
/// (2·r per entry); solves are O(r³) per row and left out.
pub fn als_sweep_flops(m: usize, n: usize, r1: usize, r2: usize) -> f64 {
    let per_rank = |r: usize| 2.0 * (m * n) as f64 * ((r * r) as f64 + 2.0 * r as f64);
    per_rank(r1) + per_rank(r2)
}

const PEAK_NAME: &str = "gemm-peak";

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
    ratio_to_gemm_floor: Option<f64>,
    /// Floating-point operations of the operation and the rate it ran at.
    gflop: f64,
    gflop_per_s: f64,
    /// ms over the time the operation's flops take at the peak rate (the faster of the two peak GEMMs).
    x_peak: f64,
    version: String,
}

/// What `benches/torch_abba_step.py` prints.
#[derive(Deserialize)]
struct TorchStep {
    ms_per_step: f64,
    peak_gemm_ms: f64,
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
        ("peak-side", PEAK_GEMM_SIDE.to_string()),
    ]);
    let m: child::Measured<TorchStep> =
        child::python(&opts.python, script.path(), &args, opts.threads)
            .context("the PyTorch Adam step")?;
    Ok(m.value)
}

/// Our Adam step, ALS sweep, GEMM floor and peak GEMM beside PyTorch's Adam step and peak GEMM, into
/// `opts.fit_out`.
pub fn run_suite(opts: &BenchOptions) -> Result<()> {
    let (n, r) = (opts.size, opts.rank);
    let peak = peak_gemm_ms(PEAK_GEMM_SIDE, 1, 5);
    let mut p = AbbaProblem::new(n, n, r, r, 0);
    let floor = gemm_floor_ms(&p, 3, opts.iters);
    let adam = adam_step_ms(&mut p, 3, opts.iters);
    let mut p = AbbaProblem::new(n, n, r, r, 0);
    let als = als_sweep_ms(&mut p, 1, (opts.iters / 5).max(3));
    let torch = torch_step(opts)
        .inspect_err(|e| child::warn_skipped(e, "torch"))
        .ok();
    let peak_flops = 2.0 * (PEAK_GEMM_SIDE as f64).powi(3);
    let fastest_peak_ms = torch.as_ref().map_or(peak, |t| t.peak_gemm_ms.min(peak));
    let peak_rate = peak_flops / fastest_peak_ms; // flops per ms
    let ours = ours_version();
    let torch_adam = torch.as_ref().map(|t| t.ms_per_step);
    let adam_flops = adam_step_flops(n, n, r, r);
    let row = |implementation, operation, side: usize, ms: f64, flops: f64, version: String| {
        let is_adam = operation == "adam-step";
        let is_step = operation != PEAK_NAME; // the fit's shape and ranks, beside the floor
        FitRow {
            implementation,
            operation,
            m: side,
            n: side,
            r1: if is_step { r } else { 0 },
            r2: if is_step { r } else { 0 },
            threads: opts.threads,
            ms: round(ms, 3),
            ratio_to_pytorch_adam: torch_adam.filter(|_| is_adam).map(|t| round(ms / t, 3)),
            ratio_to_gemm_floor: is_step.then(|| round(ms / floor, 3)),
            gflop: round(flops / 1e9, 4),
            gflop_per_s: round(flops / ms / 1e6, 2),
            x_peak: round(ms / (flops / peak_rate), 3),
            version,
        }
    };
    let mut out = vec![
        row(
            "abba",
            PEAK_NAME,
            PEAK_GEMM_SIDE,
            peak,
            peak_flops,
            ours.clone(),
        ),
        row(
            "abba",
            "gemm-floor-6-products",
            n,
            floor,
            adam_flops,
            ours.clone(),
        ),
        row("abba", "adam-step", n, adam, adam_flops, ours.clone()),
        row(
            "abba",
            "als-sweep",
            n,
            als,
            als_sweep_flops(n, n, r, r),
            ours,
        ),
    ];
    if let Some(t) = &torch {
        let version = t.versions.label();
        out.push(row(
            "pytorch",
            PEAK_NAME,
            PEAK_GEMM_SIDE,
            t.peak_gemm_ms,
            peak_flops,
            version.clone(),
        ));
        out.push(row(
            "pytorch",
            "adam-step",
            n,
            t.ms_per_step,
            adam_flops,
            version,
        ));
    }
    rows::write(&opts.fit_out, &out)
}
