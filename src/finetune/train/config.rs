//! The `[train]` table of a fine-tuning config. Defaults follow the ABBA paper's recipe where it states one
//! (AdamW, lr 1e-3, warmup ratio 0.02); weight decay is 0 and explicit (the released code inherited 0.01).

use serde::{Deserialize, Serialize};

use super::shards::Shards;
use crate::error::{AbbaError, Result};
use crate::finetune::optim::{AdamWConfig, Schedule};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub lr: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub schedule: Schedule,
    pub warmup_ratio: f64,
    /// Passes over the training set; ignored when `max_steps` is set.
    pub epochs: f64,
    /// Optimizer steps (each of `grad_accum` micro-batches).
    pub max_steps: Option<usize>,
    pub batch_size: usize,
    pub grad_accum: usize,
    /// Each micro-batch's rows are cut into this many consecutive shards whose forward and backward passes run in
    /// parallel on the CPU, summed in order: `auto` (4 on the CPU, 1 on a GPU) or a count, 1 = the batch in one
    /// pass. A setting, not the machine's core count, so numbers do not depend on the threads. Left out of
    /// serialised settings when 1, so ids hashed from settings written before it existed keep meaning one pass.
    #[serde(skip_serializing_if = "Shards::is_one")]
    pub shards: Shards,
    /// Global gradient-norm clip; 0 disables it.
    pub max_grad_norm: f64,
    /// Write an adapter/optimizer checkpoint every this many optimizer steps (0: only at the end).
    pub checkpoint_every: usize,
    /// `adamw` (default), or `lora-pro`: LoRA's gradients adjusted to follow Adam on the full m×n gradient
    /// (LoRA and rsLoRA only; its m×n moments are reported as optimizer memory). Left out of serialised
    /// settings when it is the default, so ids hashed from settings written before it existed stay the same.
    #[serde(default, skip_serializing_if = "OptimizerKind::is_default")]
    pub optimizer: OptimizerKind,
}

/// The optimizer of a fine-tuning run.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    #[default]
    Adamw,
    LoraPro,
}

impl OptimizerKind {
    pub fn is_default(&self) -> bool {
        *self == OptimizerKind::Adamw
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        let adam = AdamWConfig::default();
        TrainConfig {
            lr: 1e-3,
            weight_decay: 0.0,
            beta1: adam.beta1,
            beta2: adam.beta2,
            eps: adam.eps,
            schedule: Schedule::Linear,
            warmup_ratio: 0.02,
            epochs: 1.0,
            max_steps: None,
            batch_size: 8,
            grad_accum: 1,
            shards: Shards::Auto,
            max_grad_norm: 1.0,
            checkpoint_every: 0,
            optimizer: OptimizerKind::Adamw,
        }
    }
}

impl TrainConfig {
    pub fn adamw(&self) -> AdamWConfig {
        AdamWConfig {
            lr: self.lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
        }
    }

    /// Optimizer steps for `n_examples` training examples.
    pub fn total_steps(&self, n_examples: usize) -> Result<usize> {
        if self.batch_size == 0 || self.grad_accum == 0 {
            return Err(AbbaError::InvalidArgument(
                "[train] batch_size and grad_accum must be at least 1".into(),
            ));
        }
        let steps = match self.max_steps {
            Some(s) => s,
            None => {
                let micro = (n_examples as f64 / self.batch_size as f64).ceil() * self.epochs;
                (micro / self.grad_accum as f64).ceil() as usize
            }
        };
        if steps == 0 {
            return Err(AbbaError::InvalidArgument(
                "[train] gives 0 optimizer steps: raise epochs or max_steps".into(),
            ));
        }
        Ok(steps)
    }

    pub fn validate(&self) -> Result<()> {
        self.adamw().validate()?;
        if !(0.0..1.0).contains(&self.warmup_ratio) {
            return Err(AbbaError::InvalidArgument(format!(
                "[train] warmup_ratio {} is outside [0, 1)",
                self.warmup_ratio
            )));
        }
        if self.shards == Shards::Count(0) {
            return Err(AbbaError::InvalidArgument(
                "[train] shards must be `auto` or at least 1 (1 = the whole batch in one pass)"
                    .into(),
            ));
        }
        if self.max_grad_norm < 0.0 || !self.max_grad_norm.is_finite() {
            return Err(AbbaError::InvalidArgument(
                "[train] max_grad_norm must be ≥ 0 (0 disables clipping)".into(),
            ));
        }
        Ok(())
    }
}
