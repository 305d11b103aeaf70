//! One evaluation, shared by `abba eval` and the end of a fine-tuning run: the held-out loss (and perplexity) of
//! encoded examples, then greedy generation scored GSM8K-style on the first examples, with the generated answers
//! written as JSONL on request.

use std::path::Path;

use super::loss::mean_loss;
use super::suite::{EvalReport, GenerationSettings, evaluate_generation};
use crate::error::{AbbaError, Result};
use crate::finetune::data::{Encoded, Example, PromptStyle, collate};
use crate::finetune::model::Llama;
use crate::finetune::tokenizer::{SpecialIds, TextTokenizer};

/// What to evaluate and how.
#[derive(Clone, Copy, Debug)]
pub struct EvalOptions<'a> {
    /// Examples per batch of the loss pass.
    pub loss_batch: usize,
    /// How many examples to score by generation (0: loss only).
    pub generate: usize,
    pub max_new_tokens: usize,
    /// Prompts generated together (left-padded; each row stops at EOS).
    pub generate_batch: usize,
    /// Where to write each generated answer as JSONL.
    pub samples: Option<&'a Path>,
    /// The prompt the examples were trained with.
    pub prompt: PromptStyle,
}

/// Loss and perplexity (absent without held-out data), and the generation report (absent when nothing was
/// generated).
#[derive(Clone, Debug)]
pub struct Evaluation {
    pub loss: Option<f64>,
    pub perplexity: Option<f64>,
    pub generation: Option<EvalReport>,
}

/// Evaluates `model` on `encoded` (loss) and `examples` (generation); `on_generated(i)` with the number of answers
/// finished so far, after each batch.
pub fn evaluate(
    model: &Llama,
    tok: &TextTokenizer,
    special: &SpecialIds,
    encoded: &[Encoded],
    examples: &[Example],
    opts: EvalOptions<'_>,
    on_generated: impl FnMut(usize),
) -> Result<Evaluation> {
    if opts.loss_batch == 0 {
        return Err(AbbaError::InvalidArgument(
            "the evaluation batch size must be at least 1".into(),
        ));
    }
    let (loss, perplexity) = if encoded.is_empty() {
        (None, None)
    } else {
        let batches: Vec<_> = encoded
            .chunks(opts.loss_batch)
            .map(|c| collate(&c.iter().collect::<Vec<_>>(), special.pad))
            .collect();
        let loss = mean_loss(model, &batches)?;
        (Some(loss), Some(loss.exp()))
    };
    let n = opts.generate.min(examples.len());
    let generation = if n > 0 {
        let report = evaluate_generation(
            model,
            tok,
            special,
            &examples[..n],
            GenerationSettings {
                prompt: opts.prompt,
                max_new: opts.max_new_tokens,
                batch_size: opts.generate_batch,
            },
            on_generated,
        )?;
        if let Some(path) = opts.samples {
            let lines: Vec<String> = report
                .samples
                .iter()
                .filter_map(|s| serde_json::to_string(s).ok())
                .collect();
            crate::io::write_atomic(path, (lines.join("\n") + "\n").as_bytes())?;
        }
        Some(report)
    } else {
        None
    };
    Ok(Evaluation {
        loss,
        perplexity,
        generation,
    })
}
