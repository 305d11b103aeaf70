//! Benchmarks beside PyTorch in one invocation, written as CSV (`abba bench`). Speed is measured here and in the
//! criterion benches, never asserted in tests.
//!
//! Suites: `fit` (an ABBA fit's Adam step and ALS sweep beside PyTorch's Adam step, and the GEMM floor), `finetune`
//! (training tokens/s and peak memory of a tiny Llama with each adapter beside PyTorch + PEFT), `layer` (one adapted
//! 4096² layer's forward + backward with the Khatri–Rao or the materialised ΔW path forced, beside PyTorch),
//! `generate` (greedy generation tokens/s of the same tiny Llama at batch 1 and 16 beside transformers'
//! `generate`). Every `finetune` / `layer` / `generate` configuration runs in a fresh process ([`child`]), so each
//! peak-memory figure belongs to one configuration.

pub mod child;
mod finetune_suite;
pub mod fit;
mod generate_suite;
mod layer_suite;
mod rows;

use std::path::PathBuf;

use anyhow::{Result, bail};

pub use fit::{AbbaProblem, adam_step_ms, als_sweep_ms, gemm_floor_ms, time_ms};

/// Which benchmark to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suite {
    Fit,
    Finetune,
    Layer,
    Generate,
    All,
}

/// Everything a bench run needs; the CLI fills it from its flags.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub suite: Suite,
    /// CSV of each suite.
    pub fit_out: PathBuf,
    pub finetune_out: PathBuf,
    pub layer_out: PathBuf,
    pub generate_out: PathBuf,
    /// Python with torch (and transformers + peft for finetune and layer) for the competitor.
    pub python: String,
    /// Threads for both implementations.
    pub threads: usize,
    /// fit: timed iterations, target size × size, r1 = r2 = rank.
    pub iters: usize,
    pub size: usize,
    pub rank: usize,
    /// finetune: methods, timed and untimed steps, batch × seq.
    pub methods: Vec<String>,
    pub steps: usize,
    pub warmup: usize,
    pub batch: usize,
    pub seq: usize,
    /// finetune: shards per batch (`[train] shards`) on our side.
    pub shards: crate::finetune::train::Shards,
    /// layer: size × size, r1 = r2, input rows per configuration, timed and untimed passes.
    pub layer_size: usize,
    pub layer_rank: usize,
    pub layer_batches: Vec<usize>,
    pub layer_iters: usize,
    pub layer_warmup: usize,
    /// generate: prompts generated together, one configuration each.
    pub generate_batches: Vec<usize>,
}

/// The version column of our rows.
pub fn ours_version() -> String {
    format!(
        "abba {} ({})",
        env!("CARGO_PKG_VERSION"),
        env!("ABBA_GIT_COMMIT")
    )
}

/// Runs the chosen suites and writes their CSVs (printing each).
pub fn run(opts: &BenchOptions) -> Result<()> {
    crate::linalg::set_threads(opts.threads);
    if matches!(opts.suite, Suite::Fit | Suite::All) {
        fit::run_suite(opts)?;
    }
    if matches!(opts.suite, Suite::Finetune | Suite::All) {
        finetune_suite::run(opts)?;
    }
    if matches!(opts.suite, Suite::Layer | Suite::All) {
        layer_suite::run(opts)?;
    }
    if matches!(opts.suite, Suite::Generate | Suite::All) {
        generate_suite::run(opts)?;
    }
    Ok(())
}

/// One configuration in this process (`finetune:METHOD`, `layer:PATH:BATCH` or `generate:BATCH`), printed as one
/// JSON line: what
/// [`child::our_worker`] runs.
pub fn serve_worker(spec: &str, opts: &BenchOptions) -> Result<()> {
    crate::linalg::set_threads(opts.threads);
    let parts: Vec<&str> = spec.split(':').collect();
    let line = match parts.as_slice() {
        ["finetune", method] => finetune_suite::measure(opts, method)?,
        ["layer", path, batch] => layer_suite::measure(opts, path, batch)?,
        ["generate", batch] => generate_suite::measure(batch)?,
        _ => bail!(
            "unknown worker '{spec}': use finetune:METHOD, layer:PATH:BATCH or generate:BATCH"
        ),
    };
    println!("{line}");
    Ok(())
}
