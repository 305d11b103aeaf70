//! One fine-tuning run over tokenised examples.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;

use candle_core::Var;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::config::{OptimizerKind, TrainConfig};
use super::log::{LogRow, TrainLog};
use super::lora_pro::LoraProOptimizer;
use super::shards;
use super::state::{self, CheckpointState};
use crate::error::Result;
use crate::finetune::data::{Batcher, Encoded};
use crate::finetune::model::Llama;
use crate::finetune::optim::{
    AdamW, GradAccumulator, Optimizer, clip_grad_norm, lr_at, warmup_steps_from_ratio,
};
use crate::rng::derive;

pub struct TrainSetup<'a> {
    pub model: &'a Llama,
    /// The variables to train (adapter factors, or every weight for full fine-tuning), by saved name.
    pub vars: &'a [(String, Var)],
    pub data: &'a [Encoded],
    pub pad: u32,
    pub cfg: &'a TrainConfig,
    pub seed: u64,
    /// Holds `train_log.csv` and `checkpoints/`.
    pub out_dir: &'a Path,
    /// Continue from the latest checkpoint in `out_dir` if there is one.
    pub resume: bool,
    pub progress: bool,
    /// Stop after this optimizer step (checkpointing there) as if interrupted; the schedule still spans the
    /// full run, so a resumed run continues exactly where this one stopped.
    pub stop_at: Option<usize>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TrainOutcome {
    pub steps: usize,
    pub first_loss: f64,
    pub last_loss: f64,
    pub tokens: usize,
    pub seconds: f64,
    pub tokens_per_s: f64,
    pub resumed_from: Option<usize>,
    /// The loss became NaN or infinite; training stopped at that step.
    pub diverged: bool,
    /// MiB the optimizer keeps beside the parameters (AdamW: two moments per parameter; LoRA-Pro: two m×n
    /// moments per layer).
    pub optimizer_state_mib: f64,
}

pub fn train(s: TrainSetup<'_>) -> Result<TrainOutcome> {
    s.cfg.validate()?;
    let data: Vec<&Encoded> = s.data.iter().filter(|e| e.trainable_tokens() > 0).collect();
    if data.is_empty() {
        return Err(crate::AbbaError::InvalidArgument(
            "no training example has a response token left after truncation: raise max_len".into(),
        ));
    }
    let total = s.cfg.total_steps(data.len())?;
    let warmup = warmup_steps_from_ratio(s.cfg.warmup_ratio, total)?;
    let vars: Vec<Var> = s.vars.iter().map(|(_, v)| v.clone()).collect();
    let mut opt: Box<dyn Optimizer> = match s.cfg.optimizer {
        OptimizerKind::Adamw => Box::new(AdamW::new(vars.clone(), s.cfg.adamw())?),
        OptimizerKind::LoraPro => Box::new(LoraProOptimizer::new(s.model, s.vars, s.cfg.adamw())?),
    };
    std::fs::create_dir_all(s.out_dir).map_err(|e| crate::AbbaError::io(s.out_dir, e))?;

    let mut start = CheckpointState {
        step: 0,
        tokens: 0,
        elapsed_s: 0.0,
    };
    let mut resumed_from = None;
    if s.resume
        && let Some(dir) = state::latest(s.out_dir)
    {
        start = state::restore(&dir, s.vars, opt.as_mut())?;
        resumed_from = Some(start.step);
    }
    let mut log = TrainLog::open(&s.out_dir.join("train_log.csv"), start.step)?;
    let mut batcher = Batcher::at_step(
        data.len(),
        s.cfg.batch_size,
        s.seed,
        start.step * s.cfg.grad_accum,
    )?;
    let bar = progress_bar(total, start.step, s.progress);

    let clock = Instant::now();
    let (mut tokens, mut first_loss, mut last_loss, mut diverged) =
        (start.tokens, f64::NAN, f64::NAN, false);
    let mut step = start.step;
    let end = s.stop_at.map_or(total, |k| k.min(total));
    while step < end {
        let lr = lr_at(s.cfg.schedule, s.cfg.lr, step, total, warmup);
        let mut acc = GradAccumulator::new(&vars);
        let mut step_loss = 0.0;
        for micro in 0..s.cfg.grad_accum {
            let rows: Vec<&Encoded> = batcher
                .next_indices()
                .into_iter()
                .map(|i| data[i])
                .collect();
            tokens += rows
                .iter()
                .map(|e| e.ids.len().saturating_sub(1))
                .sum::<usize>();
            // Dropout masks depend only on (seed, step, micro-batch): a resumed run draws the same ones.
            let (loss, parts) = shards::loss_and_grads(
                s.model,
                &acc,
                &rows,
                s.pad,
                s.cfg.shards,
                derive(s.seed, (step * s.cfg.grad_accum + micro) as u64 + 1),
                s.cfg.grad_accum,
            )?;
            step_loss += loss;
            acc.add_parts(parts)?;
        }
        if !step_loss.is_finite() {
            diverged = true;
            break;
        }
        let mut grads = acc.take()?;
        let grad_norm = if s.cfg.max_grad_norm > 0.0 {
            clip_grad_norm(&mut grads, s.cfg.max_grad_norm)?
        } else {
            clip_grad_norm(&mut grads, f64::INFINITY)?
        };
        opt.step(&grads, lr)?;
        step += 1;
        if first_loss.is_nan() {
            first_loss = step_loss;
        }
        last_loss = step_loss;
        let elapsed = start.elapsed_s + clock.elapsed().as_secs_f64();
        let rate = (tokens - start.tokens) as f64 / clock.elapsed().as_secs_f64().max(1e-9);
        log.append(&LogRow {
            step,
            epoch: (step * s.cfg.grad_accum) as f64 / batcher.steps_per_epoch() as f64,
            loss: step_loss,
            lr,
            grad_norm,
            tokens,
            tokens_per_s: rate,
            elapsed_s: elapsed,
        })?;
        bar.set_position(step as u64);
        bar.set_message(format!("loss {step_loss:.4}, {rate:.0} tok/s"));
        let at_checkpoint =
            s.cfg.checkpoint_every > 0 && step.is_multiple_of(s.cfg.checkpoint_every);
        if at_checkpoint || step == end {
            let st = CheckpointState {
                step,
                tokens,
                elapsed_s: elapsed,
            };
            state::save(s.out_dir, s.vars, opt.as_ref(), &st)?;
        }
    }
    bar.finish_and_clear();
    let seconds = clock.elapsed().as_secs_f64();
    Ok(TrainOutcome {
        steps: step,
        first_loss,
        last_loss,
        tokens,
        seconds,
        tokens_per_s: (tokens - start.tokens) as f64 / seconds.max(1e-9),
        resumed_from,
        diverged,
        optimizer_state_mib: opt.state_bytes() as f64 / (1024.0 * 1024.0),
    })
}

/// A bar on stderr when it is a terminal and progress is wanted; hidden otherwise (logs and CI stay clean).
fn progress_bar(total: usize, done: usize, wanted: bool) -> ProgressBar {
    if !wanted || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} train [{bar:30}] {pos}/{len} steps, {elapsed} elapsed, eta {eta} {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_position(done as u64);
    bar
}
