//! Generation-based evaluation of instruction data: greedy answers to prompts (Alpaca or plain), scored GSM8K-style (the
//! last number of the output against the number after `####` in the reference) and by exact match.

use serde::Serialize;

use super::generate::greedy_batch;
use crate::error::Result;
use crate::finetune::data::{Example, PromptStyle};
use crate::finetune::model::Llama;
use crate::finetune::scoring::{exact_match, is_correct, reference_answer};
use crate::finetune::tokenizer::{SpecialIds, TextTokenizer};

#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub question: String,
    pub output: String,
    pub reference: String,
    pub correct: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    pub n: usize,
    /// Fraction whose last number equals the reference answer (GSM8K accuracy).
    pub accuracy: f64,
    /// Fraction whose whole output equals the whole reference, whitespace-trimmed.
    pub exact_match: f64,
    pub samples: Vec<Sample>,
}

/// How examples are generated: their prompt, the most new tokens, and prompts per batch.
#[derive(Clone, Copy, Debug)]
pub struct GenerationSettings {
    pub prompt: PromptStyle,
    pub max_new: usize,
    pub batch_size: usize,
}

/// Greedy-decodes up to `max_new` tokens for each example and scores it. A reference without `####` is scored
/// by its own last number. Examples are generated `batch_size` at a time (at least 1), grouped by prompt length
/// so that little padding is computed; the report keeps their order. `on_done` gets the number finished so far.
pub fn evaluate_generation(
    model: &Llama,
    tok: &TextTokenizer,
    special: &SpecialIds,
    examples: &[Example],
    settings: GenerationSettings,
    mut on_done: impl FnMut(usize),
) -> Result<EvalReport> {
    let GenerationSettings {
        prompt: style,
        max_new,
        batch_size,
    } = settings;
    let prompts = examples
        .iter()
        .map(|ex| {
            let mut prompt = Vec::new();
            prompt.extend(special.bos);
            prompt.extend(tok.encode(&style.render(ex))?);
            Ok(prompt)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut order: Vec<usize> = (0..prompts.len()).collect();
    order.sort_by_key(|&i| prompts[i].len());
    let mut outputs: Vec<Vec<u32>> = vec![Vec::new(); prompts.len()];
    let mut done = 0;
    for chunk in order.chunks(batch_size.max(1)) {
        let batch: Vec<&[u32]> = chunk.iter().map(|&i| prompts[i].as_slice()).collect();
        for (&i, new) in chunk
            .iter()
            .zip(greedy_batch(model, &batch, max_new, Some(special.eos))?)
        {
            outputs[i] = new;
        }
        done += chunk.len();
        on_done(done);
    }
    let mut samples = Vec::with_capacity(examples.len());
    for (ex, new) in examples.iter().zip(&outputs) {
        let output = tok.decode(new)?;
        let reference = reference_answer(&ex.output).unwrap_or_else(|| ex.output.clone());
        samples.push(Sample {
            question: ex.instruction.clone(),
            correct: is_correct(&output, &reference),
            output,
            reference: ex.output.clone(),
        });
    }
    let n = samples.len();
    let frac = |k: usize| if n == 0 { 0.0 } else { k as f64 / n as f64 };
    Ok(EvalReport {
        n,
        accuracy: frac(samples.iter().filter(|s| s.correct).count()),
        exact_match: frac(
            samples
                .iter()
                .filter(|s| exact_match(&s.output, &s.reference))
                .count(),
        ),
        samples,
    })
}
