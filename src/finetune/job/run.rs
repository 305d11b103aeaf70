//! Runs one fine-tuning job end to end and writes everything under `[output] dir`:
//! `train_log.csv`, `checkpoints/`, `adapter/` (or `model/` for full fine-tuning), `merged/` on request,
//! `samples.jsonl` and `report.json` (written last: its presence means the run finished).

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;

use super::data_prep::prepare;
use super::model_io::{load_model, load_tokenizer, save_hf_model};
use super::report::FinetuneReport;
use super::spec::FinetuneSpec;
use crate::adapter::{KeyStyle, Method};
use crate::error::{AbbaError, Result};
use crate::finetune::CANDLE_VERSION;
use crate::finetune::adapters::inject;
use crate::finetune::adapters::peft::AdapterSet;
use crate::finetune::device::device_name;
use crate::finetune::eval::{EvalOptions, evaluate};
use crate::finetune::model::Llama;
use crate::finetune::tokenizer::{SpecialIds, TextTokenizer};
use crate::finetune::train::{TrainSetup, train};

pub struct RunOptions {
    pub device: Device,
    /// Continue from the latest checkpoint (default); false starts over.
    pub resume: bool,
    pub progress: bool,
    /// Overrides `[output] dir`.
    pub out_dir: Option<PathBuf>,
}

pub fn run_finetune(spec: &FinetuneSpec, opts: &RunOptions) -> Result<FinetuneReport> {
    run_finetune_then(spec, opts, |_| Ok(()))
}

/// The trained model as a caller of [`run_finetune_then`] sees it, after the run's own evaluation.
pub struct Trained<'a> {
    pub model: &'a Llama,
    pub tokenizer: &'a TextTokenizer,
    pub special: &'a SpecialIds,
    pub out_dir: &'a Path,
    pub diverged: bool,
}

/// [`run_finetune`], with `after` given the trained model before `report.json` is written (so a finished run
/// has also finished what `after` writes: `abba compare` scores its test split there).
pub fn run_finetune_then(
    spec: &FinetuneSpec,
    opts: &RunOptions,
    after: impl FnOnce(&Trained<'_>) -> Result<()>,
) -> Result<FinetuneReport> {
    let wall = Instant::now();
    let memory = crate::process::RunPeak::start();
    let out = opts
        .out_dir
        .clone()
        .unwrap_or_else(|| spec.output.dir.clone());
    let adapter_cfg = spec.adapter.resolve()?;
    let tok = load_tokenizer(&spec.model)?;
    let mut model = load_model(&spec.model, &tok, spec.seed, &opts.device)?;
    if spec.data.max_len > model.max_positions() {
        return Err(AbbaError::InvalidArgument(format!(
            "[data] max_len {} exceeds the model's {} positions: lower max_len",
            spec.data.max_len,
            model.max_positions()
        )));
    }
    let special = SpecialIds::resolve(&tok, model.cfg.bos_token_id, model.cfg.eos_token_id)?;
    let data = prepare(&spec.data, &tok, &special)?;
    let (vars, params) = inject(&mut model, &adapter_cfg, spec.seed)?;
    eprintln!("{}: {} ({})", spec.name, params, adapter_cfg.method.name());

    let outcome = train(TrainSetup {
        model: &model,
        vars: &vars,
        data: &data.train,
        pad: special.pad,
        cfg: &spec.train,
        seed: spec.seed,
        out_dir: &out,
        resume: opts.resume,
        progress: opts.progress,
        stop_at: None,
    })?;

    match adapter_cfg.method {
        Method::Full => save_hf_model(
            &model,
            &out.join("model"),
            tokenizer_file(&spec.model.path).as_deref(),
        )?,
        _ => {
            let base = spec
                .model
                .path
                .as_deref()
                .map_or(String::new(), |p| p.display().to_string());
            AdapterSet::from_model(&model, KeyStyle::Native, adapter_cfg.dropout, &base)?
                .save(&out.join("adapter"))?;
        }
    }
    if spec.output.save_merged {
        save_hf_model(
            &model,
            &out.join("merged"),
            tokenizer_file(&spec.model.path).as_deref(),
        )?;
    }

    // A diverged model's answers say nothing: its held-out loss (NaN) is the record.
    let n_gen = if outcome.diverged {
        0
    } else {
        spec.eval.generate.min(data.eval_examples.len())
    };
    let samples = out.join("samples.jsonl");
    let eval = evaluate(
        &model,
        &tok,
        &special,
        &data.eval,
        &data.eval_examples,
        EvalOptions {
            loss_batch: spec.eval.batch_size,
            generate: n_gen,
            max_new_tokens: spec.eval.max_new_tokens,
            generate_batch: spec.eval.generate_batch_size,
            samples: Some(&samples),
            prompt: spec.data.prompt,
        },
        |_| {},
    )?;
    let generation = eval.generation;
    after(&Trained {
        model: &model,
        tokenizer: &tok,
        special: &special,
        out_dir: &out,
        diverged: outcome.diverged,
    })?;

    let peak = memory.read();
    let report = FinetuneReport {
        name: spec.name.clone(),
        status: if outcome.diverged { "diverged" } else { "ok" }.into(),
        method: adapter_cfg.method.name().into(),
        trainable_params: params.trainable,
        total_params: params.total,
        device: device_name(&opts.device).into(),
        dtype: spec.model.dtype.clone(),
        seed: spec.seed,
        weight_decay: spec.train.weight_decay,
        lr: spec.train.lr,
        steps: outcome.steps,
        train_examples: data.train.len(),
        truncated_away: data.truncated_away,
        first_loss: outcome.first_loss,
        last_loss: outcome.last_loss,
        eval_loss: eval.loss,
        eval_perplexity: eval.perplexity,
        eval_accuracy: generation.as_ref().map(|g| g.accuracy),
        eval_exact_match: generation.as_ref().map(|g| g.exact_match),
        eval_generated: n_gen,
        tokens: outcome.tokens,
        tokens_per_s: outcome.tokens_per_s,
        train_seconds: outcome.seconds,
        wall_seconds: wall.elapsed().as_secs_f64(),
        peak_rss_mib: peak.0,
        peak_rss_scope: Some(peak.1.name().into()),
        resumed_from: outcome.resumed_from,
        optimizer: match spec.train.optimizer {
            crate::finetune::train::config::OptimizerKind::Adamw => "adamw".into(),
            crate::finetune::train::config::OptimizerKind::LoraPro => "lora-pro".into(),
        },
        optimizer_state_mib: outcome.optimizer_state_mib,
        shards: Some(spec.train.shards.count(model.device())),
        abba_version: env!("CARGO_PKG_VERSION").into(),
        git_commit: env!("ABBA_GIT_COMMIT").into(),
        candle_version: CANDLE_VERSION.into(),
    };
    report.write(&out.join("report.json"))?;
    Ok(report)
}

fn tokenizer_file(model_path: &Option<PathBuf>) -> Option<PathBuf> {
    model_path.as_ref().map(|p| p.join("tokenizer.json"))
}

/// True when `dir` holds a finished run's report.
pub fn finished(dir: &Path) -> bool {
    dir.join("report.json").is_file()
}
