//! The `finetune` suite: training steps of a tiny Llama with each adapter (and fully), ours beside PyTorch + PEFT,
//! each configuration in its own process.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::child::{self, TempScript, TorchVersions};
use super::rows::{self, round};
use super::{BenchOptions, ours_version};
use crate::adapter::Method;
use crate::finetune::CANDLE_VERSION;
use crate::finetune::bench::{FINETUNE_METHODS, FinetuneBenchSpec, bench_adapter, finetune_steps};
use crate::process::{Memory, memory_mib};

pub(super) const TORCH_SCRIPT: &str = include_str!("../../benches/torch_finetune_step.py");

/// What one process measured: ours (from [`measure`]) or PyTorch's (benches/torch_finetune_step.py).
#[derive(Serialize, Deserialize)]
struct Measure {
    #[serde(rename = "impl")]
    implementation: String,
    trainable_params: u64,
    total_params: u64,
    ms_per_step: f64,
    tokens_per_s: f64,
    final_loss: f64,
    threads: usize,
    baseline_rss_mib: f64,
    peak_rss_mib: f64,
    /// PyTorch's ABBA module: which ΔW path it took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    abba_path: Option<String>,
    #[serde(flatten, skip_serializing)]
    versions: TorchVersions,
}

/// One row of `finetune.csv`.
#[derive(Serialize)]
struct Row {
    implementation: String,
    method: String,
    ranks: String,
    trainable_params: u64,
    total_params: u64,
    batch: usize,
    seq: usize,
    /// Parallel shards of each batch (ours; PyTorch runs the batch in one pass: 1).
    shards: usize,
    warmup: usize,
    steps: usize,
    ms_per_step: f64,
    tokens_per_s: f64,
    speed_vs_pytorch: Option<f64>,
    peak_rss_mib: f64,
    baseline_rss_mib: f64,
    peak_over_baseline_mib: f64,
    threads: usize,
    other_load_cores: f64,
    final_loss: f64,
    version: String,
}

fn spec(opts: &BenchOptions) -> FinetuneBenchSpec {
    let mut spec = FinetuneBenchSpec {
        batch: opts.batch,
        seq: opts.seq,
        shards: opts.shards,
        warmup: opts.warmup,
        steps: opts.steps,
        ..Default::default()
    };
    spec.shape.max_position_embeddings = spec.shape.max_position_embeddings.max(opts.seq);
    spec
}

/// The worker side: one method's training steps in this process, as a JSON line.
pub(super) fn measure(opts: &BenchOptions, method: &str) -> Result<String> {
    let baseline = memory_mib(Memory::Current);
    let r = finetune_steps(&spec(opts), method)?;
    let m = Measure {
        implementation: "abba-rs".into(),
        trainable_params: r.trainable_params as u64,
        total_params: r.total_params as u64,
        ms_per_step: r.ms_per_step,
        tokens_per_s: r.tokens_per_s,
        final_loss: r.final_loss,
        threads: candle_core::utils::get_num_threads(),
        baseline_rss_mib: baseline,
        peak_rss_mib: memory_mib(Memory::Peak),
        abba_path: None,
        versions: TorchVersions::default(),
    };
    Ok(serde_json::to_string(&m)?)
}

/// The sizes of a benchmark method, as the `ranks` column shows them (`r=8`, `r1=4 r2=4`).
fn ranks_label(method: &Method) -> String {
    match method.ranks().as_slice() {
        [] => String::new(),
        [r] => format!("r={r}"),
        rs => rs
            .iter()
            .enumerate()
            .map(|(i, r)| format!("r{}={r}", i + 1))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

pub(super) fn run(opts: &BenchOptions) -> Result<()> {
    for m in &opts.methods {
        anyhow::ensure!(
            FINETUNE_METHODS.contains(&m.as_str()),
            "unknown method '{m}' in --methods: use {}",
            FINETUNE_METHODS.join(", ")
        );
    }
    let spec = spec(opts);
    let script = TempScript::new("abba-torch-finetune", TORCH_SCRIPT)?;
    let ours_ver = format!("{} candle {CANDLE_VERSION}", ours_version());
    let worker_args = child::flags(&[
        ("steps", opts.steps.to_string()),
        ("warmup", opts.warmup.to_string()),
        ("batch", opts.batch.to_string()),
        ("seq", opts.seq.to_string()),
        ("shards", opts.shards.to_string()),
    ]);
    let mut out = Vec::new();
    for method in &opts.methods {
        let ranks = ranks_label(&bench_adapter(method)?.resolve()?.method);
        eprintln!("abba bench: finetune {method} (abba-rs)");
        let ours: child::Measured<Measure> =
            child::our_worker(&format!("finetune:{method}"), &worker_args, opts.threads)?;
        eprintln!("abba bench: finetune {method} (pytorch)");
        let s = spec.shape;
        let mut torch_args = vec!["finetune".to_string()];
        torch_args.extend(child::flags(&[
            ("method", method.clone()),
            ("vocab", s.vocab_size.to_string()),
            ("hidden", s.hidden_size.to_string()),
            ("intermediate", s.intermediate_size.to_string()),
            ("layers", s.num_hidden_layers.to_string()),
            ("heads", s.num_attention_heads.to_string()),
            ("kv-heads", s.num_key_value_heads.to_string()),
            ("max-pos", s.max_position_embeddings.to_string()),
            ("batch", spec.batch.to_string()),
            ("seq", spec.seq.to_string()),
            ("steps", spec.steps.to_string()),
            ("warmup", spec.warmup.to_string()),
        ]));
        let torch: Option<child::Measured<Measure>> =
            child::python(&opts.python, script.path(), &torch_args, opts.threads)
                .context("the PyTorch training step")
                .inspect_err(|e| child::warn_skipped(e, "torch, transformers and peft"))
                .ok();
        let row =
            |m: &child::Measured<Measure>, version: String, vs: Option<f64>, shards: usize| {
                let v = &m.value;
                Row {
                    implementation: v.implementation.clone(),
                    method: method.clone(),
                    ranks: ranks.clone(),
                    trainable_params: v.trainable_params,
                    total_params: v.total_params,
                    batch: spec.batch,
                    seq: spec.seq,
                    shards,
                    warmup: spec.warmup,
                    steps: spec.steps,
                    ms_per_step: round(v.ms_per_step, 1),
                    tokens_per_s: round(v.tokens_per_s, 1),
                    speed_vs_pytorch: vs.map(|x| round(x, 3)),
                    peak_rss_mib: round(v.peak_rss_mib, 1),
                    baseline_rss_mib: round(v.baseline_rss_mib, 1),
                    peak_over_baseline_mib: round(v.peak_rss_mib - v.baseline_rss_mib, 1),
                    threads: v.threads,
                    other_load_cores: m.other_load_cores,
                    final_loss: round(v.final_loss, 4),
                    version,
                }
            };
        let vs = torch
            .as_ref()
            .map(|t| ours.value.tokens_per_s / t.value.tokens_per_s);
        out.push(row(
            &ours,
            ours_ver.clone(),
            vs,
            spec.shards.count(&candle_core::Device::Cpu),
        ));
        if let Some(t) = &torch {
            let path = t
                .value
                .abba_path
                .as_ref()
                .map_or(String::new(), |p| format!(" (ABBA path: {p})"));
            out.push(row(
                t,
                format!("{}{path}", t.value.versions.label()),
                Some(1.0),
                1,
            ));
        }
    }
    rows::write(&opts.finetune_out, &out)
}
