//! `abba eval`: score a model (optionally with an adapter) on instruction data: greedy-generation accuracy
//! (GSM8K-style last number), exact match, held-out loss and perplexity.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use abba::finetune::adapters::peft::AdapterSet;
use abba::finetune::data::{FieldNames, PromptStyle, encode_example, read_jsonl};
use abba::finetune::device::DeviceChoice;
use abba::finetune::eval::{EvalOptions, evaluate};
use abba::finetune::job::model_io::{load_model, load_tokenizer};
use abba::finetune::job::spec::ModelSection;
use abba::finetune::tokenizer::SpecialIds;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Hugging Face model directory.
    #[arg(long)]
    pub model: PathBuf,
    /// Adapter directory (PEFT LoRA / HiRA / LoHa or ABBA) to put on the model.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// JSONL evaluation data.
    #[arg(long)]
    pub data: PathBuf,
    /// Field names: question/answer, query/response or instruction/input/output.
    #[arg(long, default_value = "question/answer")]
    pub fields: FieldNames,
    /// Score this many examples by generation (0: loss only).
    #[arg(long, default_value_t = 100)]
    pub n: usize,
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// Prompts generated together (left-padded; each row stops at EOS).
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Truncation length for the loss.
    #[arg(long, default_value_t = 512)]
    pub max_len: usize,
    /// The prompt the model was trained with: alpaca (the paper's template) or plain (the instruction and a newline).
    #[arg(long, default_value = "alpaca")]
    pub prompt: PromptStyle,
    /// auto (the model's tokenizer.json), bytes, or a tokenizer.json path.
    #[arg(long, default_value = "auto")]
    pub tokenizer: String,
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// f32, or bf16 / f16 on CUDA.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Write each generated answer here as JSONL.
    #[arg(long)]
    pub samples: Option<PathBuf>,
}

pub fn run(args: EvalArgs) -> Result<()> {
    anyhow::ensure!(args.batch_size >= 1, "--batch-size must be at least 1");
    abba::process::keep_freed_memory();
    let device = args.device.select()?;
    let section = ModelSection {
        path: Some(args.model.clone()),
        random: None,
        tokenizer: args.tokenizer.clone(),
        dtype: args.dtype.clone(),
    };
    let tok = load_tokenizer(&section)?;
    let mut model = load_model(&section, &tok, 0, &device)?;
    if let Some(dir) = &args.adapter {
        AdapterSet::load(dir, &model)?.attach(&mut model)?;
    }
    let special = SpecialIds::resolve(&tok, model.cfg.bos_token_id, model.cfg.eos_token_id)?;
    let examples = read_jsonl(&args.data, &args.fields)?;
    let encoded = examples
        .iter()
        .map(|e| encode_example(&tok, e, &special, args.prompt, args.max_len))
        .collect::<abba::error::Result<Vec<_>>>()?;
    let n = args.n.min(examples.len());
    let bar = if n > 0 && std::io::stderr().is_terminal() {
        let b = ProgressBar::new(n as u64);
        b.set_style(
            ProgressStyle::with_template("{spinner} eval [{bar:30}] {pos}/{len} {elapsed}")
                .expect("valid"),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let eval = evaluate(
        &model,
        &tok,
        &special,
        &encoded,
        &examples,
        EvalOptions {
            loss_batch: 8,
            generate: n,
            max_new_tokens: args.max_new_tokens,
            generate_batch: args.batch_size,
            samples: args.samples.as_deref(),
            prompt: args.prompt,
        },
        |i| bar.set_position(i as u64),
    )?;
    bar.finish_and_clear();
    if let (Some(loss), Some(ppl)) = (eval.loss, eval.perplexity) {
        println!(
            "loss {loss:.4}, perplexity {ppl:.3} over {} examples",
            examples.len()
        );
    }
    if let Some(report) = eval.generation {
        println!(
            "accuracy {:.2}% (last number), exact match {:.2}%, n = {}",
            100.0 * report.accuracy,
            100.0 * report.exact_match,
            report.n
        );
    }
    Ok(())
}
