//! The `generate` suite: greedy generation tokens/s of the fine-tuning benchmark's tiny Llama, ours beside
//! transformers' `generate` (benches/torch_generate.py, the same prompts), each batch size in its own process.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::child::{self, TempScript, TorchVersions};
use super::rows::{self, round};
use super::{BenchOptions, ours_version};
use crate::finetune::CANDLE_VERSION;
use crate::finetune::eval::bench_generate::{GenerateBenchSpec, generate_tokens_per_s};
use crate::process::{Memory, memory_mib};

const TORCH_SCRIPT: &str = include_str!("../../benches/torch_generate.py");

/// What one process measured: ours (from [`measure`]) or transformers' (benches/torch_generate.py).
#[derive(Serialize, Deserialize)]
struct Measure {
    #[serde(rename = "impl")]
    implementation: String,
    batch: usize,
    prompts: usize,
    new_tokens: usize,
    prompt_min: usize,
    prompt_max: usize,
    repeats: usize,
    median_s: f64,
    best_s: f64,
    /// CPU time of the median pass over all threads (less sensitive to other load than wall time).
    cpu_s: f64,
    tokens_per_s: f64,
    best_tokens_per_s: f64,
    threads: usize,
    baseline_rss_mib: f64,
    peak_rss_mib: f64,
    /// transformers' attention implementation (eager, sdpa).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    attn_implementation: Option<String>,
    #[serde(flatten, skip_serializing)]
    versions: TorchVersions,
}

/// One row of `generate.csv`.
#[derive(Serialize)]
struct Row {
    implementation: String,
    batch: usize,
    prompts: usize,
    prompt_min: usize,
    prompt_max: usize,
    new_tokens: usize,
    repeats: usize,
    median_s: f64,
    best_s: f64,
    tokens_per_s: f64,
    best_tokens_per_s: f64,
    speed_vs_transformers: Option<f64>,
    cpu_s: f64,
    tokens_per_cpu_s: f64,
    cpu_vs_transformers: Option<f64>,
    peak_rss_mib: f64,
    threads: usize,
    other_load_cores: f64,
    version: String,
}

/// The worker side: generation at batch `batch` in this process, as a JSON line.
pub(super) fn measure(batch: &str) -> Result<String> {
    let baseline = memory_mib(Memory::Current);
    let spec = GenerateBenchSpec {
        batch: batch.parse().context("generate worker batch")?,
        ..Default::default()
    };
    let r = generate_tokens_per_s(&spec)?;
    let m = Measure {
        implementation: "abba-rs".into(),
        batch: r.batch,
        prompts: r.prompts,
        new_tokens: r.new_tokens,
        prompt_min: spec.prompt_min,
        prompt_max: spec.prompt_max,
        repeats: spec.repeats,
        median_s: r.median_s,
        best_s: r.best_s,
        cpu_s: r.cpu_s,
        tokens_per_s: r.tokens_per_s,
        best_tokens_per_s: r.best_tokens_per_s,
        threads: candle_core::utils::get_num_threads(),
        baseline_rss_mib: baseline,
        peak_rss_mib: memory_mib(Memory::Peak),
        attn_implementation: None,
        versions: TorchVersions::default(),
    };
    Ok(serde_json::to_string(&m)?)
}

pub(super) fn run(opts: &BenchOptions) -> Result<()> {
    let script = TempScript::new("abba-torch-generate", TORCH_SCRIPT)?;
    let ours_ver = format!("{} candle {CANDLE_VERSION}", ours_version());
    let spec = GenerateBenchSpec::default();
    let mut out = Vec::new();
    for &batch in &opts.generate_batches {
        eprintln!("abba bench: generate batch {batch} (abba-rs)");
        let ours: child::Measured<Measure> =
            child::our_worker(&format!("generate:{batch}"), &[], opts.threads)?;
        eprintln!("abba bench: generate batch {batch} (transformers)");
        let s = spec.shape;
        let torch_args = child::flags(&[
            ("batch", batch.to_string()),
            ("prompts", spec.prompts.to_string()),
            ("new-tokens", spec.new_tokens.to_string()),
            ("prompt-min", spec.prompt_min.to_string()),
            ("prompt-max", spec.prompt_max.to_string()),
            ("repeats", spec.repeats.to_string()),
            ("vocab", s.vocab_size.to_string()),
            ("hidden", s.hidden_size.to_string()),
            ("intermediate", s.intermediate_size.to_string()),
            ("layers", s.num_hidden_layers.to_string()),
            ("heads", s.num_attention_heads.to_string()),
            ("kv-heads", s.num_key_value_heads.to_string()),
            ("max-pos", s.max_position_embeddings.to_string()),
        ]);
        let torch: Option<child::Measured<Measure>> =
            child::python(&opts.python, script.path(), &torch_args, opts.threads)
                .context("transformers' generate")
                .inspect_err(|e| child::warn_skipped(e, "torch and transformers"))
                .ok();
        let per_cpu = |v: &Measure| (v.prompts * v.new_tokens) as f64 / v.cpu_s;
        let row = |m: &child::Measured<Measure>, version: String, vs: Option<(f64, f64)>| {
            let v = &m.value;
            Row {
                implementation: v.implementation.clone(),
                batch,
                prompts: v.prompts,
                prompt_min: v.prompt_min,
                prompt_max: v.prompt_max,
                new_tokens: v.new_tokens,
                repeats: v.repeats,
                median_s: round(v.median_s, 3),
                best_s: round(v.best_s, 3),
                tokens_per_s: round(v.tokens_per_s, 1),
                best_tokens_per_s: round(v.best_tokens_per_s, 1),
                speed_vs_transformers: vs.map(|x| round(x.0, 3)),
                cpu_s: round(v.cpu_s, 3),
                tokens_per_cpu_s: round(per_cpu(v), 1),
                cpu_vs_transformers: vs.map(|x| round(x.1, 3)),
                peak_rss_mib: round(v.peak_rss_mib, 1),
                threads: v.threads,
                other_load_cores: m.other_load_cores,
                version,
            }
        };
        let vs = torch.as_ref().map(|t| {
            (
                ours.value.tokens_per_s / t.value.tokens_per_s,
                per_cpu(&ours.value) / per_cpu(&t.value),
            )
        });
        out.push(row(&ours, ours_ver.clone(), vs));
        if let Some(t) = &torch {
            let attn = t.value.attn_implementation.as_deref().unwrap_or("?");
            let version = format!("{} ({attn} attention)", t.value.versions.label());
            out.push(row(t, version, Some((1.0, 1.0))));
        }
    }
    rows::write(&opts.generate_out, &out)
}
