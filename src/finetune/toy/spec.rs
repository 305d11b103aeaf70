//! The toy's spec, as read from TOML (`experiments/finetune-mnist.toml`), and its checks.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::adapt::{Budget, PAPER_METHODS};
use super::mnist::CLASSES;
use crate::adapter::section::{METHOD_NAMES, MethodEntry};
use crate::adapter::{Method, MethodKind};
use crate::error::{AbbaError, Result};
use crate::finetune::optim::Schedule;

/// The task name a spec must carry.
pub const TASK: &str = "mnist-toy";
/// Title of the figure and the summary.
pub const MNIST_TITLE: &str = "MNIST toy: a 0–7 classifier adapted to digits 8–9";
/// Digits below this are the pretraining task; the rest are the new task.
pub const FIRST_NEW_DIGIT: u8 = 8;

/// A toy run, as read from TOML (`experiments/finetune-mnist.toml`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToySpec {
    /// Always "mnist-toy"; lets `abba finetune` tell this spec from a transformer one.
    pub task: String,
    /// The digits CSV (.csv or .csv.gz): 784 pixels 0–255 then the label, one image per line. A relative path
    /// is taken from the working directory.
    pub data: PathBuf,
    /// Where results go (relative to the working directory).
    pub out: PathBuf,
    #[serde(default)]
    pub seed: u64,
    /// Images per digit for training and for testing, drawn from the file with `seed`.
    #[serde(default = "defaults::train_per_class")]
    pub train_per_class: usize,
    #[serde(default = "defaults::test_per_class")]
    pub test_per_class: usize,
    #[serde(default = "defaults::hidden")]
    pub hidden: usize,
    #[serde(default = "defaults::pretrain_epochs")]
    pub pretrain_epochs: usize,
    #[serde(default = "defaults::lr")]
    pub pretrain_lr: f64,
    #[serde(default = "defaults::batch")]
    pub pretrain_batch: usize,
    #[serde(default = "defaults::adapt_epochs")]
    pub adapt_epochs: usize,
    #[serde(default = "defaults::lr")]
    pub adapt_lr: f64,
    #[serde(default = "defaults::batch")]
    pub adapt_batch: usize,
    /// Learning-rate schedule of both phases (no warmup).
    #[serde(default = "defaults::schedule")]
    pub schedule: Schedule,
    /// Global gradient-norm clip for both phases; none by default.
    #[serde(default)]
    pub max_grad_norm: Option<f64>,
    /// The budget, as a LoRA rank: every adapter trains about rank·(m+n) parameters per layer (ABBA
    /// r1 = r2 = rank/2; the discrete methods the nearest size within 10 %; KRAdapter its one size).
    #[serde(default = "defaults::rank")]
    pub rank: usize,
    /// LoRA scale α/r.
    #[serde(default = "defaults::lora_alpha")]
    pub lora_alpha: f64,
    /// ABBA paper scale α²/√(r1·r2).
    #[serde(default = "defaults::abba_alpha")]
    pub abba_alpha: f64,
    /// The methods, spelled as in studies: a name (`"dora"`) or a table (`{ method = "mora", mora_type = 6 }`).
    #[serde(default = "defaults::methods")]
    pub methods: Vec<MethodEntry>,
}

mod defaults {
    use super::*;
    pub fn train_per_class() -> usize {
        400
    }
    pub fn test_per_class() -> usize {
        100
    }
    pub fn hidden() -> usize {
        128
    }
    pub fn pretrain_epochs() -> usize {
        10
    }
    pub fn adapt_epochs() -> usize {
        10
    }
    pub fn lr() -> f64 {
        1e-3
    }
    pub fn batch() -> usize {
        64
    }
    pub fn schedule() -> Schedule {
        Schedule::Constant
    }
    pub fn rank() -> usize {
        8
    }
    pub fn lora_alpha() -> f64 {
        16.0
    }
    pub fn abba_alpha() -> f64 {
        4.0
    }
    pub fn methods() -> Vec<MethodEntry> {
        PAPER_METHODS
            .iter()
            .map(|k| MethodEntry::Name(k.name().into()))
            .collect()
    }
}

impl ToySpec {
    pub fn budget(&self) -> Budget {
        Budget {
            rank: self.rank,
            lora_alpha: self.lora_alpha,
            abba_alpha: self.abba_alpha,
        }
    }

    /// Each entry of `methods` as an unsized method with the toy's scales.
    pub fn templates(&self) -> Result<Vec<Method>> {
        let budget = self.budget();
        self.methods
            .iter()
            .map(|e| budget.template(&e.section()))
            .collect()
    }

    /// Checks what serde cannot: the task name, sizes, learning rates and the ABBA rank split.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(AbbaError::InvalidArgument(m));
        if self.task != TASK {
            return bad(format!(
                "task '{}' is not the toy: set task = \"{TASK}\"",
                self.task
            ));
        }
        for (name, v) in [
            ("train_per_class", self.train_per_class),
            ("test_per_class", self.test_per_class),
            ("hidden", self.hidden),
            ("pretrain_batch", self.pretrain_batch),
            ("adapt_batch", self.adapt_batch),
            ("rank", self.rank),
        ] {
            if v == 0 {
                return bad(format!("{name} = 0: use at least 1"));
            }
        }
        for (name, v) in [
            ("pretrain_lr", self.pretrain_lr),
            ("adapt_lr", self.adapt_lr),
            ("lora_alpha", self.lora_alpha),
            ("abba_alpha", self.abba_alpha),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(format!("{name} = {v}: use a finite value > 0"));
            }
        }
        if self.methods.is_empty() {
            return bad(format!(
                "methods is empty: list some of {}",
                METHOD_NAMES.join(", ")
            ));
        }
        let methods = self.templates()?;
        if methods.iter().any(|m| m.kind() == MethodKind::Abba) && !self.rank.is_multiple_of(2) {
            return bad(format!(
                "rank {} is odd, so ABBA cannot match it with r1 = r2 = rank/2: use an even rank",
                self.rank
            ));
        }
        let max_rank = self.hidden.min(CLASSES);
        let adapted = methods.iter().any(|m| *m != Method::Full);
        if adapted && self.rank > max_rank {
            return bad(format!(
                "rank {} exceeds the {CLASSES}×{} output layer: use a rank ≤ {max_rank}",
                self.rank, self.hidden
            ));
        }
        Ok(())
    }
}

/// Reads and validates a spec; TOML errors name `path:line:col`.
pub fn load_spec(path: &Path) -> Result<ToySpec> {
    let spec: ToySpec = crate::io::load_toml(path, "toy TOML")?;
    spec.validate()?;
    Ok(spec)
}
