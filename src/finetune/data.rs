//! Instruction data: JSONL reading, the Alpaca prompt the ABBA paper trains and evaluates with, tokenisation with
//! a response-only loss mask, next-token batches and a resumable seeded batch order.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::tokenizer::{SpecialIds, TextTokenizer};
use crate::error::{AbbaError, Result};

/// Which JSON keys hold the instruction, the optional input and the output.
///
/// In a TOML config it is a string (`"question/answer"`, `"query/response"`, `"instruction/input/output"`) or a
/// table `{ instruction = "prompt", input = "context", output = "completion" }` (`input` may be left out).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "FieldNamesRepr", into = "FieldNamesRepr")]
pub enum FieldNames {
    /// GSM8K: `question`, `answer`.
    #[default]
    QuestionAnswer,
    /// MetaMathQA: `query`, `response`.
    QueryResponse,
    /// Alpaca / Commonsense170K: `instruction`, `input`, `output`.
    InstructionInputOutput,
    /// Any other keys.
    Custom {
        instruction: String,
        input: Option<String>,
        output: String,
    },
}

const FIELD_NAMES_VALID: [&str; 3] = [
    "question/answer",
    "query/response",
    "instruction/input/output",
];

/// Serde form of [`FieldNames`]: a preset name or a table of keys.
#[derive(Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum FieldNamesRepr {
    Name(String),
    Keys {
        instruction: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
        output: String,
    },
}

impl TryFrom<FieldNamesRepr> for FieldNames {
    type Error = AbbaError;
    fn try_from(r: FieldNamesRepr) -> Result<Self> {
        match r {
            FieldNamesRepr::Name(s) => s.parse(),
            FieldNamesRepr::Keys {
                instruction,
                input,
                output,
            } => Ok(FieldNames::Custom {
                instruction,
                input,
                output,
            }),
        }
    }
}

impl From<FieldNames> for FieldNamesRepr {
    fn from(f: FieldNames) -> Self {
        match f {
            FieldNames::Custom {
                instruction,
                input,
                output,
            } => FieldNamesRepr::Keys {
                instruction,
                input,
                output,
            },
            preset => FieldNamesRepr::Name(preset.to_string()),
        }
    }
}

impl FromStr for FieldNames {
    type Err = AbbaError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "question/answer" => Ok(FieldNames::QuestionAnswer),
            "query/response" => Ok(FieldNames::QueryResponse),
            "instruction/input/output" => Ok(FieldNames::InstructionInputOutput),
            _ => Err(AbbaError::UnknownName {
                what: "data field names",
                name: s.into(),
                valid: FIELD_NAMES_VALID.iter().map(|v| v.to_string()).collect(),
            }),
        }
    }
}

impl fmt::Display for FieldNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (i, inp, o) = self.keys();
        match inp {
            Some(inp) => write!(f, "{i}/{inp}/{o}"),
            None => write!(f, "{i}/{o}"),
        }
    }
}

impl FieldNames {
    /// The (instruction, input, output) keys.
    pub fn keys(&self) -> (&str, Option<&str>, &str) {
        match self {
            FieldNames::QuestionAnswer => ("question", None, "answer"),
            FieldNames::QueryResponse => ("query", None, "response"),
            FieldNames::InstructionInputOutput => ("instruction", Some("input"), "output"),
            FieldNames::Custom {
                instruction,
                input,
                output,
            } => (instruction, input.as_deref(), output),
        }
    }
}

/// One instruction-following example.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    pub instruction: String,
    /// `None` when the example has no input (an empty input string counts as none, as in Stanford Alpaca).
    pub input: Option<String>,
    pub output: String,
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses one JSONL line; the error is the message only (the caller adds path and line).
fn parse_line(text: &str, fields: &FieldNames) -> std::result::Result<Example, String> {
    const FIX: &str = "set the data field names to match the file";
    if text.trim().is_empty() {
        return Err("empty line: remove blank lines so every line is one JSON object".into());
    }
    let value: Value = serde_json::from_str(text)
        .map_err(|e| format!("invalid JSON ({e}): each line must be one JSON object"))?;
    let Value::Object(obj) = value else {
        return Err(format!(
            "the line is {}, not a JSON object: each line must be one JSON object",
            kind(&value)
        ));
    };
    let present = || {
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        if keys.is_empty() {
            "none".into()
        } else {
            keys.join(", ")
        }
    };
    let field = |key: &str, required: bool| -> std::result::Result<Option<String>, String> {
        match obj.get(key) {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            None | Some(Value::Null) if !required => Ok(None),
            None => Err(format!(
                "missing field \"{key}\" (fields present: {}): {FIX} (fields = \"{fields}\" now)",
                present()
            )),
            Some(v) => Err(format!(
                "field \"{key}\" is {}, not a string: {FIX} or fix the data",
                kind(v)
            )),
        }
    };
    let (ik, inpk, ok) = fields.keys();
    let instruction = field(ik, true)?.unwrap_or_default();
    let input = match inpk {
        Some(k) => field(k, false)?.filter(|s| !s.is_empty()),
        None => None,
    };
    let output = field(ok, true)?.unwrap_or_default();
    Ok(Example {
        instruction,
        input,
        output,
    })
}

/// Reads a JSONL file of examples, plain or gzip-compressed (recognised by content, so `.jsonl.gz` and a renamed
/// file both load). The input field, when the convention has one, may be missing, null or empty (then the example
/// has no input); every other problem is an error naming the file and 1-based line.
pub fn read_jsonl(path: &Path, fields: &FieldNames) -> Result<Vec<Example>> {
    let shown = path.display().to_string();
    let bytes = crate::io::read_decompressed(path).map_err(|e| AbbaError::Io {
        path: shown.clone(),
        message: format!("{e}: check the data path"),
    })?;
    let text = String::from_utf8(bytes).map_err(|e| AbbaError::Format {
        path: shown.clone(),
        format: "JSONL",
        message: format!("not UTF-8 ({e}): save the file as UTF-8"),
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    if text.trim().is_empty() {
        return Err(AbbaError::Format {
            path: shown,
            format: "JSONL",
            message: "the file has no examples: give one JSON object per line".into(),
        });
    }
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            parse_line(line, fields).map_err(|message| AbbaError::Data {
                path: shown.clone(),
                line: i + 1,
                message,
            })
        })
        .collect()
}

/// Stanford Alpaca's prompt for examples with an input (also the ABBA paper's).
pub const ALPACA_PROMPT_INPUT: &str = "Below is an instruction that describes a task, paired with an input that \
provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\n\
{instruction}\n\n### Input:\n{input}\n\n### Response:\n";

/// Stanford Alpaca's prompt for examples without an input (also the ABBA paper's).
pub const ALPACA_PROMPT_NO_INPUT: &str = "Below is an instruction that describes a task. Write a response that \
appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n";

/// Fills `{name}` placeholders in one pass over the template, so braces inside the values are left alone.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out =
        String::with_capacity(template.len() + values.iter().map(|v| v.1.len()).sum::<usize>());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        match values
            .iter()
            .find(|(k, _)| rest[1..].starts_with(k) && rest[1 + k.len()..].starts_with('}'))
        {
            Some((k, v)) => {
                out.push_str(v);
                rest = &rest[k.len() + 2..];
            }
            None => {
                out.push('{');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The Alpaca prompt of an example, ending in `### Response:\n` so the response follows directly.
pub fn alpaca_prompt(ex: &Example) -> String {
    match ex.input.as_deref().filter(|s| !s.is_empty()) {
        Some(input) => fill(
            ALPACA_PROMPT_INPUT,
            &[("instruction", &ex.instruction), ("input", input)],
        ),
        None => fill(ALPACA_PROMPT_NO_INPUT, &[("instruction", &ex.instruction)]),
    }
}

/// How an example becomes a prompt: the Alpaca template the ABBA paper uses, or the bare instruction (and input),
/// each followed by a newline — for small models, where ~180 bytes of boilerplate per example cost more than the task.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptStyle {
    #[default]
    Alpaca,
    Plain,
}

impl PromptStyle {
    pub fn render(self, ex: &Example) -> String {
        match self {
            PromptStyle::Alpaca => alpaca_prompt(ex),
            PromptStyle::Plain => match ex.input.as_deref().filter(|s| !s.is_empty()) {
                Some(input) => format!("{}\n{input}\n", ex.instruction),
                None => format!("{}\n", ex.instruction),
            },
        }
    }
}

impl FromStr for PromptStyle {
    type Err = AbbaError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "alpaca" => Ok(PromptStyle::Alpaca),
            "plain" => Ok(PromptStyle::Plain),
            other => Err(AbbaError::UnknownName {
                what: "prompt style",
                name: other.into(),
                valid: vec!["alpaca".into(), "plain".into()],
            }),
        }
    }
}

/// A tokenised example. `loss_mask[i]` is 1.0 where token `i` is a response token or the final EOS: the loss
/// trains only on what the model should produce, as Stanford Alpaca and the ABBA paper do.
#[derive(Clone, Debug, PartialEq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub loss_mask: Vec<f32>,
}

impl Encoded {
    /// Targets that count in the loss once shifted for next-token prediction (the first token is never a target).
    /// Zero means the example teaches nothing and should be skipped.
    pub fn trainable_tokens(&self) -> usize {
        self.loss_mask.iter().skip(1).filter(|&&m| m > 0.0).count()
    }
}

/// Tokenises `[bos] + prompt + response + eos` (the prompt in `style`) and masks the prompt.
///
/// Prompt and prompt+response are tokenised as Stanford Alpaca does (the first `len(prompt ids)` tokens of the
/// joint encoding are masked), so merges across the boundary match the reference. Longer sequences are cut to
/// `max_len` from the right, keeping the prompt's start. An example whose response is cut away entirely still
/// comes back, with an all-zero mask: check [`Encoded::trainable_tokens`], skip it and count it.
pub fn encode_example(
    tok: &TextTokenizer,
    ex: &Example,
    special: &SpecialIds,
    style: PromptStyle,
    max_len: usize,
) -> Result<Encoded> {
    if max_len < 2 {
        return Err(AbbaError::InvalidArgument(format!(
            "max_len {max_len} leaves nothing to predict: use a max_len of at least 2"
        )));
    }
    let prompt = style.render(ex);
    let n_prompt = tok.encode(&prompt)?.len();
    let full = tok.encode(&format!("{prompt}{}", ex.output))?;
    let n_prompt = n_prompt.min(full.len());
    let mut ids = Vec::with_capacity(full.len() + 2);
    let mut loss_mask = Vec::with_capacity(full.len() + 2);
    if let Some(bos) = special.bos {
        ids.push(bos);
        loss_mask.push(0.0);
    }
    ids.extend_from_slice(&full);
    loss_mask.extend((0..full.len()).map(|i| if i < n_prompt { 0.0 } else { 1.0 }));
    ids.push(special.eos);
    loss_mask.push(1.0);
    ids.truncate(max_len);
    loss_mask.truncate(max_len);
    Ok(Encoded { ids, loss_mask })
}

/// A next-token batch, row-major `batch × seq`: `targets[b][t] = ids[b][t + 1]`. Short rows are right-padded
/// with the pad id and mask 0, so padding never enters the loss.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
    pub loss_mask: Vec<f32>,
    pub batch: usize,
    pub seq: usize,
}

impl Batch {
    /// Number of targets that count in the loss (the denominator of a mean token loss).
    pub fn tokens(&self) -> usize {
        self.loss_mask.iter().filter(|&&m| m > 0.0).count()
    }
}

/// Stacks examples into a next-token batch padded to the longest row.
pub fn collate(examples: &[&Encoded], pad: u32) -> Batch {
    let seq = examples
        .iter()
        .map(|e| e.ids.len().saturating_sub(1))
        .max()
        .unwrap_or(0);
    let n = examples.len() * seq;
    let (mut inputs, mut targets, mut loss_mask) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for e in examples {
        let len = e.ids.len().saturating_sub(1);
        inputs.extend_from_slice(&e.ids[..len]);
        targets.extend(e.ids.iter().skip(1));
        loss_mask.extend(e.loss_mask.iter().skip(1).take(len));
        inputs.resize(inputs.len() + seq - len, pad);
        targets.resize(targets.len() + seq - len, pad);
        loss_mask.resize(loss_mask.len() + seq - len, 0.0);
    }
    Batch {
        inputs,
        targets,
        loss_mask,
        batch: examples.len(),
        seq,
    }
}

/// Seeded mini-batch order: each epoch is a fresh permutation of the examples (drawn from the seed and the
/// epoch number), cut into batches of `batch_size`; the last batch of an epoch may be smaller. Because each epoch's
/// order depends only on (seed, epoch), a resumed run can jump straight to its step with [`Batcher::at_step`].
#[derive(Clone, Debug)]
pub struct Batcher {
    n: usize,
    batch_size: usize,
    seed: u64,
    step: usize,
    order: Vec<usize>,
}

impl Batcher {
    /// A batcher at step 0.
    pub fn new(n_examples: usize, batch_size: usize, seed: u64) -> Result<Self> {
        Self::at_step(n_examples, batch_size, seed, 0)
    }

    /// A batcher positioned as if `step` batches had already been drawn.
    pub fn at_step(n_examples: usize, batch_size: usize, seed: u64, step: usize) -> Result<Self> {
        if n_examples == 0 || batch_size == 0 {
            return Err(AbbaError::InvalidArgument(format!(
                "cannot batch {n_examples} examples in batches of {batch_size}: both must be at least 1"
            )));
        }
        let mut b = Batcher {
            n: n_examples,
            batch_size,
            seed,
            step,
            order: Vec::new(),
        };
        b.order = b.permutation(b.epoch());
        Ok(b)
    }

    fn permutation(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.n).collect();
        order.shuffle(&mut crate::rng::seeded(crate::rng::derive(
            self.seed,
            epoch as u64,
        )));
        order
    }

    /// Batches per epoch (the last one may be partial).
    pub fn steps_per_epoch(&self) -> usize {
        self.n.div_ceil(self.batch_size)
    }

    /// Batches drawn so far.
    pub fn step(&self) -> usize {
        self.step
    }

    /// Epoch (0-based) of the next batch, i.e. the number of epochs completed.
    pub fn epoch(&self) -> usize {
        self.step / self.steps_per_epoch()
    }

    /// Index of the next batch within its epoch.
    pub fn position(&self) -> usize {
        self.step % self.steps_per_epoch()
    }

    /// Example indices of the next batch.
    pub fn next_indices(&mut self) -> Vec<usize> {
        let start = self.position() * self.batch_size;
        let end = (start + self.batch_size).min(self.n);
        let batch = self.order[start..end].to_vec();
        self.step += 1;
        if self.position() == 0 {
            self.order = self.permutation(self.epoch());
        }
        batch
    }
}

/// Language-model windows over a token stream for pretraining on raw text: each window holds `seq_len + 1` tokens
/// (inputs and targets are `seq_len` long after the shift) with all-ones mask. Consecutive windows start
/// `seq_len` apart, sharing one boundary token, so every token after the first is a target exactly once. A tail
/// shorter than a window is dropped; `seq_len == 0` gives no windows.
pub fn lm_windows(ids: &[u32], seq_len: usize) -> Vec<Encoded> {
    if seq_len == 0 {
        return Vec::new();
    }
    (0..)
        .map(|i| i * seq_len)
        .take_while(|&start| start + seq_len < ids.len())
        .map(|start| Encoded {
            ids: ids[start..=start + seq_len].to_vec(),
            loss_mask: vec![1.0; seq_len + 1],
        })
        .collect()
}
