//! The `layer` suite: one adapted size² layer's forward + backward, the Khatri–Rao or the materialised ABBA path
//! forced, ours (the layer training uses) beside PyTorch, each configuration in its own process.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::child::{self, TempScript, TorchVersions};
use super::finetune_suite::TORCH_SCRIPT;
use super::rows::{self, round};
use super::{BenchOptions, ours_version};
use crate::finetune::CANDLE_VERSION;
use crate::finetune::bench::{LayerProblem, parse_path, path_name, time_layer};
use crate::process::{Memory, memory_mib};

/// What one process measured: ours (from [`measure`]) or PyTorch's.
#[derive(Serialize, Deserialize)]
struct Measure {
    #[serde(rename = "impl")]
    implementation: String,
    cost_model_pick: String,
    median_ms: f64,
    min_ms: f64,
    threads: usize,
    baseline_rss_mib: f64,
    peak_rss_mib: f64,
    #[serde(flatten, skip_serializing)]
    versions: TorchVersions,
}

/// One row of `layer.csv`.
#[derive(Serialize)]
struct Row {
    implementation: String,
    m: usize,
    n: usize,
    r1: usize,
    r2: usize,
    batch: usize,
    path: &'static str,
    cost_model_pick: String,
    warmup: usize,
    iters: usize,
    median_ms: f64,
    min_ms: f64,
    time_vs_pytorch: Option<f64>,
    peak_rss_mib: f64,
    baseline_rss_mib: f64,
    peak_over_baseline_mib: f64,
    threads: usize,
    other_load_cores: f64,
    version: String,
}

/// The worker side: one path and batch in this process, as a JSON line.
pub(super) fn measure(opts: &BenchOptions, path: &str, batch: &str) -> Result<String> {
    let baseline = memory_mib(Memory::Current);
    let path = parse_path(path)?;
    let batch: usize = batch.parse().context("layer worker batch")?;
    let (n, r) = (opts.layer_size, opts.layer_rank);
    let problem = LayerProblem::new(n, n, r, r, batch, 0)?;
    let t = time_layer(&problem, path, opts.layer_warmup, opts.layer_iters)?;
    let m = Measure {
        implementation: "abba-rs".into(),
        cost_model_pick: path_name(problem.cost_model_pick()?).into(),
        median_ms: t.median(),
        min_ms: t.min(),
        threads: candle_core::utils::get_num_threads(),
        baseline_rss_mib: baseline,
        peak_rss_mib: memory_mib(Memory::Peak),
        versions: TorchVersions::default(),
    };
    Ok(serde_json::to_string(&m)?)
}

pub(super) fn run(opts: &BenchOptions) -> Result<()> {
    let script = TempScript::new("abba-torch-layer", TORCH_SCRIPT)?;
    let ours_ver = format!("{} candle {CANDLE_VERSION}", ours_version());
    let (n, r) = (opts.layer_size, opts.layer_rank);
    let sizes = child::flags(&[
        ("layer-size", n.to_string()),
        ("layer-rank", r.to_string()),
        ("layer-iters", opts.layer_iters.to_string()),
        ("layer-warmup", opts.layer_warmup.to_string()),
    ]);
    let mut out = Vec::new();
    for &batch in &opts.layer_batches {
        for path in ["khatri-rao", "materialised"] {
            eprintln!("abba bench: layer {n}x{n} r={r} batch {batch} {path} (abba-rs)");
            let ours: child::Measured<Measure> =
                child::our_worker(&format!("layer:{path}:{batch}"), &sizes, opts.threads)?;
            eprintln!("abba bench: layer {n}x{n} r={r} batch {batch} {path} (pytorch)");
            let mut torch_args = vec!["layer".to_string()];
            torch_args.extend(child::flags(&[
                ("path", path.into()),
                ("m", n.to_string()),
                ("n", n.to_string()),
                ("r1", r.to_string()),
                ("r2", r.to_string()),
                ("batch", batch.to_string()),
                ("iters", opts.layer_iters.to_string()),
                ("warmup", opts.layer_warmup.to_string()),
            ]));
            let torch: Option<child::Measured<Measure>> =
                child::python(&opts.python, script.path(), &torch_args, opts.threads)
                    .context("the PyTorch layer")
                    .inspect_err(|e| child::warn_skipped(e, "torch"))
                    .ok();
            let row = |m: &child::Measured<Measure>, version: String, vs: Option<f64>| {
                let v = &m.value;
                Row {
                    implementation: v.implementation.clone(),
                    m: n,
                    n,
                    r1: r,
                    r2: r,
                    batch,
                    path,
                    cost_model_pick: v.cost_model_pick.clone(),
                    warmup: opts.layer_warmup,
                    iters: opts.layer_iters,
                    median_ms: round(v.median_ms, 2),
                    min_ms: round(v.min_ms, 2),
                    time_vs_pytorch: vs.map(|x| round(x, 3)),
                    peak_rss_mib: round(v.peak_rss_mib, 1),
                    baseline_rss_mib: round(v.baseline_rss_mib, 1),
                    peak_over_baseline_mib: round(v.peak_rss_mib - v.baseline_rss_mib, 1),
                    threads: v.threads,
                    other_load_cores: m.other_load_cores,
                    version,
                }
            };
            let vs = torch
                .as_ref()
                .map(|t| ours.value.median_ms / t.value.median_ms);
            out.push(row(&ours, ours_ver.clone(), vs));
            if let Some(t) = &torch {
                out.push(row(t, t.value.versions.label(), Some(1.0)));
            }
        }
    }
    rows::write(&opts.layer_out, &out)
}
