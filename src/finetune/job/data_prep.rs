//! Turning a `[data]` section into tokenised training and held-out sets.

use std::path::Path;

use super::spec::{DataSection, TextDocuments};
use crate::error::{AbbaError, Result};
use crate::finetune::data::{Encoded, Example, encode_example, lm_windows, read_jsonl};
use crate::finetune::synthetic::{Split, synthetic_problems};
use crate::finetune::tokenizer::{SpecialIds, TextTokenizer};

pub struct Prepared {
    pub train: Vec<Encoded>,
    pub eval: Vec<Encoded>,
    /// Held-out instruction examples for generation scoring (empty for plain text).
    pub eval_examples: Vec<Example>,
    /// Training examples whose response was truncated away entirely (skipped).
    pub truncated_away: usize,
}

pub fn prepare(data: &DataSection, tok: &TextTokenizer, special: &SpecialIds) -> Result<Prepared> {
    if let Some(text_path) = &data.text {
        let text = read_text(text_path)?;
        let ids = match data.documents {
            TextDocuments::Stream => tok.encode(&text)?,
            TextDocuments::Paragraphs => paragraph_stream(&text, tok, special)?,
        };
        let mut windows = lm_windows(&ids, data.max_len.saturating_sub(1).max(1));
        if windows.is_empty() {
            return Err(AbbaError::InvalidArgument(format!(
                "{} is shorter than one window of max_len {} tokens",
                text_path.display(),
                data.max_len
            )));
        }
        // The tail of the text is held out (contiguous, so no window overlaps the training part).
        let n_eval = ((windows.len() as f64) * data.eval_fraction).round() as usize;
        let eval = windows.split_off(windows.len() - n_eval);
        if let Some(limit) = data.limit {
            windows.truncate(limit);
        }
        return Ok(Prepared {
            train: windows,
            eval,
            eval_examples: Vec::new(),
            truncated_away: 0,
        });
    }
    let (mut train_ex, eval_ex) = if let Some(syn) = &data.synthetic {
        let draw = |n, split| synthetic_problems(syn.task, syn.size, n, syn.seed, split);
        (
            draw(syn.train, Split::Train)?,
            draw(syn.eval, Split::Validation)?,
        )
    } else {
        let train_path = data
            .train
            .as_ref()
            .ok_or_else(|| AbbaError::InvalidArgument("[data] train".into()))?;
        let train = read_jsonl(train_path, &data.fields)?;
        let eval = match &data.eval {
            Some(p) => read_jsonl(p, &data.fields)?,
            None => Vec::new(),
        };
        (train, eval)
    };
    if let Some(limit) = data.limit {
        train_ex.truncate(limit);
    }
    let encode = |examples: &[Example]| -> Result<Vec<Encoded>> {
        examples
            .iter()
            .map(|e| encode_example(tok, e, special, data.prompt, data.max_len))
            .collect()
    };
    let train_all = encode(&train_ex)?;
    let truncated_away = train_all
        .iter()
        .filter(|e| e.trainable_tokens() == 0)
        .count();
    Ok(Prepared {
        train: train_all
            .into_iter()
            .filter(|e| e.trainable_tokens() > 0)
            .collect(),
        eval: encode(&eval_ex)?,
        eval_examples: eval_ex,
        truncated_away,
    })
}

/// The text's blank-line-separated paragraphs, each as `[bos] paragraph eos`, in one stream.
fn paragraph_stream(text: &str, tok: &TextTokenizer, special: &SpecialIds) -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    for paragraph in text
        .replace("\r\n", "\n")
        .split("\n\n")
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        ids.extend(special.bos);
        ids.extend(tok.encode(paragraph)?);
        ids.push(special.eos);
    }
    Ok(ids)
}

/// A plain-text corpus, gzip-compressed or not (recognised by content).
fn read_text(path: &Path) -> Result<String> {
    let bytes = crate::io::read_decompressed(path).map_err(|e| {
        AbbaError::io_hint(
            path,
            e,
            "set [data] text to a UTF-8 text file (.txt or .txt.gz)",
        )
    })?;
    String::from_utf8(bytes).map_err(|e| AbbaError::Format {
        path: path.display().to_string(),
        format: "text",
        message: format!("not UTF-8 ({e}): save the file as UTF-8"),
    })
}
