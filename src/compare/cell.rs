//! One cell = one ordinary fine-tuning run (`finetune::job`), in `<out>/runs/<cell id>/`: the job trains on the
//! train split and evaluates on the validation split as usual (its `report.json`), and before the report is
//! written the trained model is scored on the test split (`test.json`). A cell whose run directory holds both is
//! not trained again; a half-trained one resumes from its latest checkpoint.

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::grid::Cell;
use super::record::{CellRecord, CellStatus};
use super::spec::{CompareSpec, Metric};
use super::toy_cell::{ToyCellReport, run_toy_cell};
use crate::error::{AbbaError, Result};
use crate::finetune::CANDLE_VERSION;
use crate::finetune::adapters::config::AdapterSection;
use crate::finetune::data::{Example, PromptStyle, encode_example, read_jsonl};
use crate::finetune::eval::{EvalOptions, evaluate};
use crate::finetune::job::report::FinetuneReport;
use crate::finetune::job::spec::{DataSection, ModelSection, OutputSection, SyntheticSection};
use crate::finetune::job::{FinetuneSpec, RunOptions, Trained, run_finetune_then};
use crate::finetune::synthetic::{Split, synthetic_problems};

/// What every cell of a grid shares, resolved once.
pub struct GridContext {
    /// An LLM task's base model and train/validation data (absent for the toy).
    pub model: Option<ModelSection>,
    pub data: Option<DataSection>,
    pub test: Vec<Example>,
    /// The MNIST toy's spec, when the comparison is the toy.
    pub toy: Option<crate::finetune::toy::ToySpec>,
    pub runs_dir: PathBuf,
    pub device: Device,
}

impl GridContext {
    /// `base` is the model directory when the spec pretrains one (see `runner`).
    pub fn new(
        spec: &CompareSpec,
        base: Option<PathBuf>,
        out: &Path,
        device: Device,
    ) -> Result<GridContext> {
        let runs_dir = out.join("runs");
        if let Some(toy) = &spec.toy {
            return Ok(GridContext {
                model: None,
                data: None,
                test: Vec::new(),
                toy: Some(crate::finetune::toy::load_spec(toy)?),
                runs_dir,
                device,
            });
        }
        let (Some(m), Some(d)) = (&spec.model, &spec.data) else {
            return Err(AbbaError::InvalidArgument(
                "the spec needs [model] and [data], or toy = \"<toy TOML>\"".into(),
            ));
        };
        let model = ModelSection {
            path: base.or_else(|| m.path.clone()),
            random: m.random,
            tokenizer: m.tokenizer.clone(),
            dtype: m.dtype.clone(),
        };
        let (data, test) = match &d.synthetic {
            Some(s) => (
                DataSection {
                    train: None,
                    eval: None,
                    fields: d.fields.clone(),
                    text: None,
                    eval_fraction: 0.0,
                    documents: Default::default(),
                    synthetic: Some(SyntheticSection {
                        train: s.train,
                        eval: s.validation,
                        seed: s.seed,
                        task: s.task,
                        size: s.size,
                    }),
                    max_len: d.max_len,
                    limit: d.limit,
                    prompt: d.prompt,
                },
                synthetic_problems(s.task, s.size, s.test, s.seed, Split::Test)?,
            ),
            None => {
                let test_path = d.test.as_ref().expect("validated: three files");
                (
                    DataSection {
                        train: d.train.clone(),
                        eval: d.validation.clone(),
                        fields: d.fields.clone(),
                        text: None,
                        eval_fraction: 0.0,
                        documents: Default::default(),
                        synthetic: None,
                        max_len: d.max_len,
                        limit: d.limit,
                        prompt: d.prompt,
                    },
                    read_jsonl(test_path, &d.fields)?,
                )
            }
        };
        Ok(GridContext {
            model: Some(model),
            data: Some(data),
            test,
            toy: None,
            runs_dir,
            device,
        })
    }
}

/// The test split's scores, written into the run directory before `report.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TestScores {
    pub loss: Option<f64>,
    pub accuracy: Option<f64>,
    pub exact_match: Option<f64>,
    pub generated: usize,
}

/// The fine-tuning job of a cell (an LLM task's).
pub fn job_spec(spec: &CompareSpec, cell: &Cell, ctx: &GridContext) -> Result<FinetuneSpec> {
    let (Some(model), Some(data)) = (&ctx.model, &ctx.data) else {
        return Err(AbbaError::InvalidArgument(
            "the MNIST toy has no fine-tuning job: its cells run through compare::toy_cell".into(),
        ));
    };
    let entry = cell.entry(spec);
    let id = cell.id(spec);
    let mut train = entry.train_config(&spec.train);
    train.lr = cell.lr;
    Ok(FinetuneSpec {
        task: None,
        name: id.clone(),
        seed: cell.seed,
        model: model.clone(),
        data: data.clone(),
        adapter: AdapterSection {
            method: entry.method.clone(),
            dropout: spec.adapter.dropout,
            target_modules: spec.adapter.target_modules.clone(),
            budget_rank: cell.budget,
        },
        train,
        eval: spec.eval.clone(),
        output: OutputSection {
            dir: ctx.runs_dir.join(&id),
            save_merged: false,
        },
    })
}

/// Runs (or resumes, or reads back) a cell; any error becomes a failed row rather than stopping the grid.
pub fn run_cell(spec: &CompareSpec, cell: &Cell, ctx: &GridContext, force: bool) -> CellRecord {
    let entry = cell.entry(spec);
    let mut record = CellRecord {
        cell_id: cell.id(spec),
        task: spec.task.clone(),
        method: entry.label.clone(),
        kind: entry.method.method.clone(),
        budget_rank: cell.budget.unwrap_or(0),
        lr: cell.lr,
        seed: cell.seed,
        metric: spec.metric.name().into(),
        higher_is_better: spec.metric.higher_is_better(),
        reference: spec.reference.clone(),
        validation: f64::NAN,
        test: f64::NAN,
        val_loss: f64::NAN,
        val_accuracy: f64::NAN,
        val_exact_match: f64::NAN,
        test_loss: f64::NAN,
        test_accuracy: f64::NAN,
        test_exact_match: f64::NAN,
        test_kept: f64::NAN,
        crate_version: env!("CARGO_PKG_VERSION").into(),
        git_commit: env!("ABBA_GIT_COMMIT").into(),
        candle_version: CANDLE_VERSION.into(),
        ..CellRecord::default()
    };
    let outcome = match &ctx.toy {
        Some(toy) => {
            let dir = ctx.runs_dir.join(&record.cell_id);
            if force && dir.exists() {
                let _ = std::fs::remove_dir_all(&dir);
            }
            let memory = crate::process::RunPeak::start();
            let report = run_toy_cell(spec, toy, cell, &dir);
            record.peak_rss_mib = memory.read().0;
            report.map(|r| fill_toy(&mut record, spec.metric, &r))
        }
        None => train_and_score(spec, cell, ctx, force)
            .map(|(report, test)| fill(&mut record, spec.metric, &report, &test)),
    };
    if let Err(e) = outcome {
        record.status = CellStatus::Failed;
        record.reason = e.to_string();
    }
    record
}

fn fill_toy(record: &mut CellRecord, metric: Metric, r: &ToyCellReport) {
    record.params = r.params;
    record.steps = r.steps;
    record.train_seconds = r.seconds;
    record.val_loss = r.val_loss;
    record.val_accuracy = r.val_accuracy;
    record.test_loss = r.test_loss;
    record.test_accuracy = r.test_accuracy;
    record.test_kept = r.test_kept;
    let pick = |loss: f64, acc: f64| match metric {
        Metric::Accuracy => acc,
        Metric::Loss => loss,
        Metric::Perplexity => loss.exp(),
        Metric::ExactMatch => f64::NAN,
    };
    record.validation = pick(r.val_loss, r.val_accuracy);
    record.test = pick(r.test_loss, r.test_accuracy);
    record.status = if r.diverged {
        CellStatus::Diverged
    } else {
        CellStatus::Ok
    };
}

fn train_and_score(
    spec: &CompareSpec,
    cell: &Cell,
    ctx: &GridContext,
    force: bool,
) -> Result<(FinetuneReport, TestScores)> {
    let job = job_spec(spec, cell, ctx)?;
    let dir = job.output.dir.clone();
    let (report_path, test_path) = (dir.join("report.json"), dir.join("test.json"));
    if force && dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| AbbaError::io(&dir, e))?;
    }
    if report_path.is_file() && test_path.is_file() {
        return Ok((FinetuneReport::read(&report_path)?, read_test(&test_path)?));
    }
    let opts = RunOptions {
        device: ctx.device.clone(),
        resume: true,
        progress: false,
        out_dir: None,
    };
    let report = run_finetune_then(&job, &opts, |trained| {
        let scores = score_test(trained, &ctx.test, spec)?;
        let text = serde_json::to_string_pretty(&scores)
            .map_err(|e| AbbaError::InvalidArgument(e.to_string()))?;
        crate::io::write_atomic(&test_path, text.as_bytes())
    })?;
    Ok((report, read_test(&test_path)?))
}

fn read_test(path: &Path) -> Result<TestScores> {
    let text = crate::io::read_to_string(path)?;
    serde_json::from_str(&text).map_err(|e| AbbaError::Format {
        path: path.display().to_string(),
        format: "test.json",
        message: e.to_string(),
    })
}

/// The trained model on the test split: loss always, generation as for validation (none after divergence).
fn score_test(trained: &Trained<'_>, test: &[Example], spec: &CompareSpec) -> Result<TestScores> {
    let encoded = test
        .iter()
        .map(|e| {
            encode_example(
                trained.tokenizer,
                e,
                trained.special,
                prompt_style(spec),
                trained_max_len(spec),
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let generate = if trained.diverged {
        0
    } else {
        spec.eval.generate.min(test.len())
    };
    let eval = evaluate(
        trained.model,
        trained.tokenizer,
        trained.special,
        &encoded,
        test,
        EvalOptions {
            loss_batch: spec.eval.batch_size,
            generate,
            max_new_tokens: spec.eval.max_new_tokens,
            generate_batch: spec.eval.generate_batch_size,
            samples: Some(&trained.out_dir.join("test_samples.jsonl")),
            prompt: prompt_style(spec),
        },
        |_| {},
    )?;
    Ok(TestScores {
        loss: eval.loss,
        accuracy: eval.generation.as_ref().map(|g| g.accuracy),
        exact_match: eval.generation.as_ref().map(|g| g.exact_match),
        generated: generate,
    })
}

/// The value of `metric` from a loss and generation scores (NaN where the split has none).
pub fn metric_value(
    metric: Metric,
    loss: Option<f64>,
    accuracy: Option<f64>,
    exact: Option<f64>,
) -> f64 {
    let v = match metric {
        Metric::Accuracy => accuracy,
        Metric::ExactMatch => exact,
        Metric::Loss => loss,
        Metric::Perplexity => loss.map(f64::exp),
    };
    v.unwrap_or(f64::NAN)
}

fn fill(record: &mut CellRecord, metric: Metric, report: &FinetuneReport, test: &TestScores) {
    let nan = |v: Option<f64>| v.unwrap_or(f64::NAN);
    record.params = report.trainable_params;
    record.steps = report.steps;
    record.train_seconds = report.train_seconds;
    record.peak_rss_mib = report.peak_rss_mib;
    record.val_loss = nan(report.eval_loss);
    record.val_accuracy = nan(report.eval_accuracy);
    record.val_exact_match = nan(report.eval_exact_match);
    record.test_loss = nan(test.loss);
    record.test_accuracy = nan(test.accuracy);
    record.test_exact_match = nan(test.exact_match);
    record.validation = metric_value(
        metric,
        report.eval_loss,
        report.eval_accuracy,
        report.eval_exact_match,
    );
    record.test = metric_value(metric, test.loss, test.accuracy, test.exact_match);
    record.status = if report.status == "ok" {
        CellStatus::Ok
    } else {
        CellStatus::Diverged
    };
}

fn prompt_style(spec: &CompareSpec) -> PromptStyle {
    spec.data
        .as_ref()
        .map_or_else(PromptStyle::default, |d| d.prompt)
}

fn trained_max_len(spec: &CompareSpec) -> usize {
    spec.data.as_ref().map_or(256, |d| d.max_len)
}
