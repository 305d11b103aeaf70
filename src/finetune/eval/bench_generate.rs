//! Timing of greedy generation, for `abba bench --suite generate` beside transformers' `generate`
//! (`benches/torch_generate.py`, which builds the same prompts): a random byte-level Llama of the fine-tuning
//! benchmark's shape generates a fixed number of new tokens for every prompt (no EOS stopping), `batch` prompts at
//! a time. Speed is measured here, never asserted in tests.

use std::time::Instant;

use candle_core::Device;

use super::generate::greedy_batch;
use crate::error::{AbbaError, Result};
use crate::finetune::bench::FinetuneBenchSpec;
use crate::finetune::model::{Llama, LlamaShape, ModelConfig};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenerateBenchSpec {
    pub shape: LlamaShape,
    /// Prompts generated together (left-padded).
    pub batch: usize,
    /// Prompts per timed pass, `batch` at a time.
    pub prompts: usize,
    /// New tokens per prompt, exactly (no EOS).
    pub new_tokens: usize,
    /// Prompt lengths lie in `prompt_min..=prompt_max` (see [`bench_prompts`]).
    pub prompt_min: usize,
    pub prompt_max: usize,
    /// Timed passes over all prompts, after one untimed pass over the first batch.
    pub repeats: usize,
    pub seed: u64,
}

impl Default for GenerateBenchSpec {
    /// The fine-tuning benchmark's ~3M-parameter byte-level Llama; 16 prompts of 64–128 tokens, 64 new tokens
    /// each, 16 at a time; 3 timed passes.
    fn default() -> Self {
        GenerateBenchSpec {
            shape: FinetuneBenchSpec::default().shape,
            batch: 16,
            prompts: 16,
            new_tokens: 64,
            prompt_min: 64,
            prompt_max: 128,
            repeats: 3,
            seed: 0,
        }
    }
}

/// What one configuration measured. Tokens/s counts new tokens over the wall time of a whole pass, prompt
/// processing included.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateBenchResult {
    pub batch: usize,
    pub prompts: usize,
    pub new_tokens: usize,
    /// Median and fastest pass, seconds.
    pub median_s: f64,
    pub best_s: f64,
    pub tokens_per_s: f64,
    pub best_tokens_per_s: f64,
    /// CPU time of the median pass over all threads, seconds (NaN where `/proc/self/stat` is missing): less
    /// sensitive than wall time to other processes on the machine.
    pub cpu_s: f64,
}

/// CPU time of this process so far, all threads, user + system (Linux; NaN elsewhere). Tick resolution (10 ms).
fn process_cpu_s() -> f64 {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // utime and stime are fields 14 and 15, the 12th and 13th after the parenthesised command name.
            let f: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
            Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
        });
    // USER_HZ is 100 on every Linux ABI Rust targets.
    ticks.map_or(f64::NAN, |t| t / 100.0)
}

/// `n` deterministic prompts: prompt `i` has `lo + (i·37) mod (hi − lo + 1)` tokens, token `j` of it is
/// `3 + (i·131 + j·29) mod (vocab − 3)` (ids 0–2 are left to padding, BOS and EOS). The Python competitor builds
/// the same ones.
pub fn bench_prompts(n: usize, lo: usize, hi: usize, vocab: usize) -> Vec<Vec<u32>> {
    let span = hi - lo + 1;
    (0..n)
        .map(|i| {
            (0..lo + (i * 37) % span)
                .map(|j| (3 + (i * 131 + j * 29) % (vocab - 3)) as u32)
                .collect()
        })
        .collect()
}

/// Times greedy generation of a random f32 Llama of `spec.shape` on the CPU (threads as candle is configured).
pub fn generate_tokens_per_s(spec: &GenerateBenchSpec) -> Result<GenerateBenchResult> {
    let s = spec;
    if s.batch == 0 || s.prompts == 0 || s.new_tokens == 0 || s.repeats == 0 {
        return Err(AbbaError::InvalidArgument(
            "the generation benchmark needs batch, prompts, new tokens and repeats ≥ 1".into(),
        ));
    }
    if s.prompt_min == 0
        || s.prompt_min > s.prompt_max
        || s.prompt_max + s.new_tokens > s.shape.max_position_embeddings
        || s.shape.vocab_size <= 3
    {
        return Err(AbbaError::InvalidArgument(format!(
            "prompts of {}..={} tokens plus {} new ones must fit the model's {} positions (and the vocabulary \
             must exceed 3)",
            s.prompt_min, s.prompt_max, s.new_tokens, s.shape.max_position_embeddings
        )));
    }
    let model = Llama::random(ModelConfig::llama(s.shape)?, 0.02, s.seed, &Device::Cpu)?;
    let prompts = bench_prompts(s.prompts, s.prompt_min, s.prompt_max, s.shape.vocab_size);
    let pass = |prompts: &[Vec<u32>]| -> Result<usize> {
        let mut new = 0;
        for chunk in prompts.chunks(s.batch) {
            new += greedy_batch(&model, chunk, s.new_tokens, None)?
                .iter()
                .map(Vec::len)
                .sum::<usize>();
        }
        Ok(new)
    };
    pass(&prompts[..s.batch.min(prompts.len())])?;
    let mut secs = Vec::with_capacity(s.repeats);
    for _ in 0..s.repeats {
        let (t0, c0) = (Instant::now(), process_cpu_s());
        let new = pass(&prompts)?;
        secs.push((t0.elapsed().as_secs_f64(), process_cpu_s() - c0));
        if new != s.prompts * s.new_tokens {
            return Err(AbbaError::InvalidArgument(format!(
                "generated {new} tokens, expected {}",
                s.prompts * s.new_tokens
            )));
        }
    }
    secs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (median_s, cpu_s) = secs[secs.len() / 2];
    let best_s = secs[0].0;
    let tokens = (s.prompts * s.new_tokens) as f64;
    Ok(GenerateBenchResult {
        batch: s.batch,
        prompts: s.prompts,
        new_tokens: s.new_tokens,
        median_s,
        best_s,
        tokens_per_s: tokens / median_s,
        best_tokens_per_s: tokens / best_s,
        cpu_s,
    })
}
