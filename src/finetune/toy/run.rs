//! The experiment: pretrain the MLP on digits 0–7, then adapt a copy of it to digits 8–9 with each method, and
//! write what happened.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

use super::adapt::{Budget, ToyMethod, prepare};
use super::mlp::Mlp;
use super::mnist::{CLASSES, MNIST_PIXELS, load_digits, split_per_class};
use super::output::write_outputs;
use super::train::{TrainOpts, train};
use crate::error::{AbbaError, Result};
use crate::finetune::optim::Schedule;
use crate::rng::derive;

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
    /// LoRA and HiRA rank; ABBA uses r1 = r2 = rank/2, the same parameter count.
    #[serde(default = "defaults::rank")]
    pub rank: usize,
    /// LoRA scale α/r.
    #[serde(default = "defaults::lora_alpha")]
    pub lora_alpha: f64,
    /// ABBA paper scale α²/√(r1·r2).
    #[serde(default = "defaults::abba_alpha")]
    pub abba_alpha: f64,
    #[serde(default = "defaults::methods")]
    pub methods: Vec<ToyMethod>,
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
    pub fn methods() -> Vec<ToyMethod> {
        ToyMethod::ALL.to_vec()
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
            return bad(
                "methods is empty: list some of \"lora\", \"hira\", \"abba\", \"full\"".into(),
            );
        }
        if self.methods.contains(&ToyMethod::Abba) && !self.rank.is_multiple_of(2) {
            return bad(format!(
                "rank {} is odd, so ABBA cannot match it with r1 = r2 = rank/2: use an even rank",
                self.rank
            ));
        }
        let max_rank = self.hidden.min(CLASSES);
        let adapted = self.methods.iter().any(|m| *m != ToyMethod::Full);
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
    let text = std::fs::read_to_string(path).map_err(|e| AbbaError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let spec: ToySpec = toml::from_str(&text).map_err(|e| {
        let (line, col) = e.span().map_or((0, 0), |s| {
            let before = &text[..s.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            (line, col)
        });
        AbbaError::Format {
            path: format!("{}:{line}:{col}", path.display()),
            format: "toy TOML",
            message: e.message().replace('\n', " "),
        }
    })?;
    spec.validate()?;
    Ok(spec)
}

/// How a method's adaptation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// A non-finite loss stopped it; its accuracies and final loss are NaN.
    Diverged,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MethodReport {
    pub method: ToyMethod,
    pub trainable_params: usize,
    /// Test accuracy on digits 8–9 (argmax over all ten outputs).
    pub acc_new: f64,
    /// Test accuracy on digits 0–7 after adaptation: what was retained.
    pub acc_old: f64,
    /// Mean cross-entropy over the whole 8–9 training set after adaptation.
    pub final_loss: f64,
    pub seconds: f64,
    pub status: Status,
    /// Minibatch loss of every adaptation step.
    pub losses: Vec<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ToyReport {
    /// Test accuracy on 0–7 of the pretrained model.
    pub pretrain_acc_old: f64,
    /// Mean cross-entropy of the pretrained model over the 8–9 training set: where every method starts.
    pub loss_before: f64,
    pub pretrain_seconds: f64,
    pub methods: Vec<MethodReport>,
    /// The files written.
    pub files: Vec<PathBuf>,
}

/// Runs the toy (on the CPU, in f32) and writes `results.csv`, `loss.csv`, `loss.png` and `summary.md` into
/// `out_dir`. Same spec ⇒ same numbers, except the seconds.
pub fn run_toy(spec: &ToySpec, out_dir: &Path, progress: bool) -> Result<ToyReport> {
    spec.validate()?;
    let say = |msg: String| {
        if progress {
            eprintln!("{msg}");
        }
    };
    let (dtype, device) = (DType::F32, Device::Cpu);
    let digits = load_digits(&spec.data, MNIST_PIXELS)?;
    let split = split_per_class(
        &digits,
        spec.train_per_class,
        spec.test_per_class,
        derive(spec.seed, 0),
    )?;
    let is_old = |l: u8| l < FIRST_NEW_DIGIT;
    let is_new = |l: u8| l >= FIRST_NEW_DIGIT;
    let tensors = |keep: &dyn Fn(u8) -> bool, d: &super::mnist::Digits, what: &str| {
        let part = d.filter(keep);
        if part.is_empty() {
            return Err(AbbaError::InvalidArgument(format!(
                "{} has no {what} digits: the toy needs all ten digits 0–9",
                spec.data.display()
            )));
        }
        part.to_tensors(dtype, &device)
    };
    let (x_old, y_old) = tensors(&is_old, &split.train, "0–7")?;
    let (x_new, y_new) = tensors(&is_new, &split.train, "8–9")?;
    let (xt_old, yt_old) = tensors(&is_old, &split.test, "0–7")?;
    let (xt_new, yt_new) = tensors(&is_new, &split.test, "8–9")?;

    // Phase 1: every weight trained on 0–7.
    let started = Instant::now();
    let mut base = Mlp::new(
        MNIST_PIXELS,
        spec.hidden,
        CLASSES,
        dtype,
        &device,
        derive(spec.seed, 1),
    )?;
    let vars = base.make_base_trainable()?;
    let opts = |epochs, lr, batch, stream| TrainOpts {
        epochs,
        lr,
        batch,
        schedule: spec.schedule,
        max_grad_norm: spec.max_grad_norm,
        seed: derive(spec.seed, stream),
    };
    let pre = opts(
        spec.pretrain_epochs,
        spec.pretrain_lr,
        spec.pretrain_batch,
        2,
    );
    let log = train(&base, vars, &x_old, &y_old, &pre, |_, _| {})?;
    if log.diverged {
        return Err(AbbaError::NoConvergence {
            what: format!(
                "pretraining (loss became non-finite at step {}): lower pretrain_lr",
                log.losses.len()
            ),
        });
    }
    base.freeze()?;
    let (_, pretrain_acc_old) = base.evaluate(&xt_old, &yt_old)?;
    let (loss_before, _) = base.evaluate(&x_new, &y_new)?;
    let pretrain_seconds = started.elapsed().as_secs_f64();
    say(format!(
        "pretrained on 0–7 in {pretrain_seconds:.1}s: test accuracy {:.2}%, loss on 8–9 {loss_before:.4}",
        100.0 * pretrain_acc_old
    ));

    // Phase 2: each method from the same weights, same batches, same adapter seed.
    let adapt = opts(spec.adapt_epochs, spec.adapt_lr, spec.adapt_batch, 3);
    let mut methods = Vec::new();
    for &method in &spec.methods {
        let started = Instant::now();
        let mut model = base.clone();
        let vars = prepare(&mut model, method, &spec.budget(), derive(spec.seed, 4))?;
        let trainable_params: usize = vars.iter().map(|v| v.elem_count()).sum();
        let log = train(&model, vars, &x_new, &y_new, &adapt, |_, _| {})?;
        let (final_loss, _) = model.evaluate(&x_new, &y_new)?;
        let (_, acc_new) = model.evaluate(&xt_new, &yt_new)?;
        let (_, acc_old) = model.evaluate(&xt_old, &yt_old)?;
        let status = if log.diverged || !final_loss.is_finite() {
            Status::Diverged
        } else {
            Status::Ok
        };
        let nan_if_diverged = |v: f64| if status == Status::Ok { v } else { f64::NAN };
        let report = MethodReport {
            method,
            trainable_params,
            acc_new: nan_if_diverged(acc_new),
            acc_old: nan_if_diverged(acc_old),
            final_loss: nan_if_diverged(final_loss),
            seconds: started.elapsed().as_secs_f64(),
            status,
            losses: log.losses,
        };
        say(format!(
            "{method:>5}: {trainable_params} params, loss {:.4}, 8–9 {:.2}%, 0–7 {:.2}%, {:.1}s{}",
            report.final_loss,
            100.0 * report.acc_new,
            100.0 * report.acc_old,
            report.seconds,
            if status == Status::Diverged {
                " (diverged)"
            } else {
                ""
            }
        ));
        methods.push(report);
    }
    let mut report = ToyReport {
        pretrain_acc_old,
        loss_before,
        pretrain_seconds,
        methods,
        files: Vec::new(),
    };
    report.files = write_outputs(spec, &report, out_dir)?;
    Ok(report)
}
