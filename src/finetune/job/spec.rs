//! The fine-tuning config (`experiments/finetune-*.toml`). Relative paths are relative to the working directory.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{AbbaError, Result};
use crate::finetune::adapters::config::AdapterSection;
use crate::finetune::data::{FieldNames, PromptStyle};
use crate::finetune::model::LlamaShape;
use crate::finetune::synthetic::SyntheticTask;
use crate::finetune::train::TrainConfig;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneSpec {
    /// `llm` (the default); the MNIST toy has its own spec (`task = "mnist-toy"`).
    #[serde(default)]
    pub task: Option<String>,
    pub name: String,
    #[serde(default)]
    pub seed: u64,
    pub model: ModelSection,
    pub data: DataSection,
    pub adapter: AdapterSection,
    #[serde(default)]
    pub train: TrainConfig,
    #[serde(default)]
    pub eval: EvalSection,
    pub output: OutputSection,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// A Hugging Face model directory (config.json, model.safetensors[.index.json], tokenizer.json).
    pub path: Option<PathBuf>,
    /// Or a freshly initialised Llama of this shape (for pretraining tiny demo models).
    pub random: Option<LlamaShape>,
    /// `auto` (the model directory's tokenizer.json), `bytes` (a 259-token byte vocabulary) or a file path.
    #[serde(default = "auto")]
    pub tokenizer: String,
    /// f32 (CPU default), bf16 or f16 (CUDA).
    #[serde(default = "f32")]
    pub dtype: String,
}

fn auto() -> String {
    "auto".into()
}
fn f32() -> String {
    "f32".into()
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// JSONL instruction data.
    pub train: Option<PathBuf>,
    pub eval: Option<PathBuf>,
    #[serde(default)]
    pub fields: FieldNames,
    /// Or plain text for language-model training (split into `max_len` windows; the last `eval_fraction` held out).
    pub text: Option<PathBuf>,
    #[serde(default = "eval_fraction")]
    pub eval_fraction: f64,
    /// How plain text is cut into documents: `stream` (one token stream, the default) or `paragraphs` (each
    /// blank-line-separated paragraph wrapped in BOS … EOS, so the model learns where a text ends and later
    /// fine-tuning, which ends every answer with EOS, starts from a model that knows the token).
    #[serde(default)]
    pub documents: TextDocuments,
    /// Or the built-in arithmetic word problems.
    pub synthetic: Option<SyntheticSection>,
    #[serde(default = "max_len")]
    pub max_len: usize,
    /// Use at most this many training examples (all by default).
    pub limit: Option<usize>,
    /// `alpaca` (the paper's template, the default) or `plain` (the instruction and a newline).
    #[serde(default)]
    pub prompt: PromptStyle,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextDocuments {
    #[default]
    Stream,
    Paragraphs,
}

fn eval_fraction() -> f64 {
    0.05
}
fn max_len() -> usize {
    256
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticSection {
    pub train: usize,
    pub eval: usize,
    #[serde(default)]
    pub seed: u64,
    /// `word-problems` (the default) or `addition`.
    #[serde(default)]
    pub task: SyntheticTask,
    /// Digits per addend (addition) or the longest word (reverse).
    #[serde(default = "size")]
    pub size: usize,
}

fn size() -> usize {
    3
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSection {
    /// Examples scored by greedy generation (instruction data only; 0 skips).
    pub generate: usize,
    pub max_new_tokens: usize,
    /// Batch size of the held-out loss.
    pub batch_size: usize,
    /// Prompts generated together (left-padded, one KV cache row each).
    pub generate_batch_size: usize,
}

impl Default for EvalSection {
    fn default() -> Self {
        EvalSection {
            generate: 100,
            max_new_tokens: 64,
            batch_size: 8,
            generate_batch_size: 16,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    pub dir: PathBuf,
    /// Also write the merged model (W0 + ΔW) as a Hugging Face checkpoint in `<dir>/merged`.
    #[serde(default)]
    pub save_merged: bool,
}

impl FinetuneSpec {
    pub fn load(path: &Path) -> Result<Self> {
        let spec: FinetuneSpec = crate::io::load_toml(path, "fine-tuning TOML")?;
        spec.validate()?;
        Ok(spec)
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(AbbaError::InvalidArgument(m.to_string()));
        if self.task.as_deref().is_some_and(|t| t != "llm") {
            return bad("this is not an LLM fine-tuning config: task must be \"llm\" (or absent)");
        }
        match (&self.model.path, &self.model.random) {
            (Some(_), Some(_)) => return bad("[model] has both path and random: choose one"),
            (None, None) => {
                return bad("[model] needs path = \"<HF model dir>\" or a [model.random] shape");
            }
            _ => {}
        }
        let sources = [
            self.data.train.is_some(),
            self.data.text.is_some(),
            self.data.synthetic.is_some(),
        ];
        if sources.iter().filter(|&&x| x).count() != 1 {
            return bad(
                "[data] needs exactly one of train = \"file.jsonl\", text = \"file.txt\" or [data.synthetic]",
            );
        }
        if let Some(syn) = &self.data.synthetic {
            crate::finetune::synthetic::validate(syn.task, syn.size)?;
        }
        if self.eval.generate_batch_size == 0 {
            return bad("[eval] generate_batch_size must be at least 1");
        }
        if !(0.0..1.0).contains(&self.data.eval_fraction) {
            return bad("[data] eval_fraction must be in [0, 1)");
        }
        if self.eval.batch_size == 0 {
            return bad("[eval] batch_size must be at least 1");
        }
        let adapter = self.adapter.resolve()?;
        if self.train.optimizer == crate::finetune::train::OptimizerKind::LoraPro
            && !matches!(adapter.method, crate::adapter::Method::Lora(_))
        {
            return Err(AbbaError::InvalidArgument(format!(
                "[train] optimizer = \"lora-pro\" adjusts LoRA's gradients, but [adapter] method is {}: use method = \"lora\" (or rslora), or optimizer = \"adamw\"",
                adapter.method.name()
            )));
        }
        self.train.validate()
    }
}
