//! Optimisation for fine-tuning: AdamW, global gradient-norm clipping, learning-rate schedules with warmup and
//! gradient accumulation, each matching the PyTorch / Hugging Face behaviour that the ABBA paper's runs relied on,
//! so results stay comparable (checked against torch and transformers in `tests/finetune_optim.rs`).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::ops::adamw::{self, AdamWStep};
use super::ops::sum::sum_in_order;
use crate::error::{AbbaError, Result};

/// Hyper-parameters of [`AdamW`]. Field names and defaults follow `torch.optim.AdamW`, except `weight_decay`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    /// Base learning rate; the [`Schedule`] scales it and [`AdamW::step`] receives the result.
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay. 0 by default: the ABBA paper's released code silently inherited the 0.01 of
    /// torch / HF `TrainingArguments`; here decay is applied only when asked for, so configs state it explicitly.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

impl AdamWConfig {
    /// Checks the ranges torch enforces (lr, eps, weight_decay ≥ 0; 0 ≤ betas < 1).
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str, v: f64, want: &str| {
            Err(AbbaError::InvalidArgument(format!(
                "AdamW {what} = {v}: use {want}"
            )))
        };
        for (what, v) in [
            ("lr", self.lr),
            ("eps", self.eps),
            ("weight_decay", self.weight_decay),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(what, v, "a finite value ≥ 0");
            }
        }
        for (what, v) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&v) {
                return bad(what, v, "a value in [0, 1)");
            }
        }
        Ok(())
    }
}

/// What the training loop asks of an optimizer.
pub trait Optimizer {
    /// One step with `grads[i]` the gradient of the i-th trained variable and `lr` this step's learning rate.
    fn step(&mut self, grads: &[Tensor], lr: f64) -> Result<()>;
    /// State for checkpoints (named tensors), saved with [`Optimizer::step_count`].
    fn state(&self) -> Vec<(String, Tensor)>;
    /// Restores what [`Optimizer::state`] returned, for the same variables.
    fn load_state(&mut self, tensors: &HashMap<String, Tensor>, step: usize) -> Result<()>;
    fn step_count(&self) -> usize;
    /// Bytes of state the optimizer keeps beside the parameters.
    fn state_bytes(&self) -> usize {
        self.state()
            .iter()
            .map(|(_, t)| t.elem_count() * t.dtype().size_in_bytes())
            .sum()
    }
}

impl Optimizer for AdamW {
    fn step(&mut self, grads: &[Tensor], lr: f64) -> Result<()> {
        AdamW::step(self, grads, lr)
    }
    fn state(&self) -> Vec<(String, Tensor)> {
        AdamW::state(self)
    }
    fn load_state(&mut self, tensors: &HashMap<String, Tensor>, step: usize) -> Result<()> {
        AdamW::load_state(self, tensors, step)
    }
    fn step_count(&self) -> usize {
        AdamW::step_count(self)
    }
}

/// AdamW with the exact update of `torch.optim.AdamW` (single-tensor path):
/// `p ← p·(1 − lr·wd)`, `m ← β1·m + (1−β1)·g`, `v ← β2·v + (1−β2)·g²`,
/// `p ← p − lr/(1−β1ᵗ) · m / (√v/√(1−β2ᵗ) + eps)`.
///
/// The update is computed in f32 whatever the parameters' dtype: bf16/f16 parameters and gradients are upcast,
/// the moments are kept in f32, and the result is rounded back to the parameter's dtype. (torch would keep the
/// moments in the parameter dtype; f32 moments avoid bf16's 8-bit mantissa swallowing small `(1−β)·g` terms.)
pub struct AdamW {
    vars: Vec<Var>,
    config: AdamWConfig,
    /// First and second moments, f32, one per var, on the var's device.
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    step: usize,
}

impl AdamW {
    /// Zero moments for each var; fails on an out-of-range config.
    pub fn new(vars: Vec<Var>, config: AdamWConfig) -> Result<Self> {
        config.validate()?;
        let zeros = |var: &Var| Tensor::zeros(var.shape(), DType::F32, var.device());
        let m = vars
            .iter()
            .map(zeros)
            .collect::<candle_core::Result<Vec<_>>>()?;
        let v = vars
            .iter()
            .map(zeros)
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            vars,
            config,
            m,
            v,
            step: 0,
        })
    }

    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// Number of steps taken so far (torch's `state["step"]`), i.e. the `t` of the next bias correction minus one.
    pub fn step_count(&self) -> usize {
        self.step
    }

    /// One optimiser step with `grads[i]` the gradient of `vars[i]` and `lr` this step's learning rate (from
    /// [`lr_at`]). A step with lr 0 still advances the moments and the step count, as in torch.
    pub fn step(&mut self, grads: &[Tensor], lr: f64) -> Result<()> {
        if grads.len() != self.vars.len() {
            return Err(AbbaError::InvalidArgument(format!(
                "AdamW step got {} gradients for {} parameters: pass one gradient per parameter, in order",
                grads.len(),
                self.vars.len()
            )));
        }
        if !(lr.is_finite() && lr >= 0.0) {
            return Err(AbbaError::InvalidArgument(format!(
                "AdamW step learning rate {lr}: use a finite value ≥ 0"
            )));
        }
        // Check every shape before touching anything, so a bad call leaves the optimiser unchanged.
        for (i, (var, g)) in self.vars.iter().zip(grads).enumerate() {
            if var.shape() != g.shape() {
                return Err(AbbaError::InvalidArgument(format!(
                    "AdamW gradient {i} has shape {:?} but its parameter has {:?}: pass gradients in parameter order",
                    g.dims(),
                    var.dims()
                )));
            }
        }
        self.step += 1;
        let c = self.config;
        // Scalars in f64 as torch computes them in Python floats; powf mirrors Python's `**` (libm pow).
        let t = self.step as f64;
        let step_size = lr / (1.0 - c.beta1.powf(t));
        let bias_correction2_sqrt = (1.0 - c.beta2.powf(t)).sqrt();
        let scalars = AdamWStep {
            decay: 1.0 - lr * c.weight_decay,
            beta1: c.beta1,
            beta2: c.beta2,
            inv_bias_correction2_sqrt: 1.0 / bias_correction2_sqrt,
            eps: c.eps,
            step_size,
        };
        for (i, (var, g)) in self.vars.iter().zip(grads).enumerate() {
            if var.elem_count() == 0 {
                continue; // candle returns empty tensors unchanged, and Var::set refuses its own storage
            }
            // Detached so the update never records a graph through the parameter.
            let p = var.as_detached_tensor();
            let (p, m, v) = adamw::update(&p, g, &self.m[i], &self.v[i], scalars)?;
            var.set(&p.to_dtype(var.dtype())?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    /// Optimiser state for checkpoints: `m.{i}` and `v.{i}` (f32, var shapes). Save [`Self::step_count`] with it.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let m = self
            .m
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("m.{i}"), t.clone()));
        let v = self
            .v
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("v.{i}"), t.clone()));
        m.chain(v).collect()
    }

    /// Restores what [`Self::state`] and [`Self::step_count`] returned, for the same vars in the same order.
    /// Everything is validated before anything changes; tensors move to each var's device as f32.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, step: usize) -> Result<()> {
        let n = self.vars.len();
        let names: Vec<String> = self.state().into_iter().map(|(name, _)| name).collect();
        if let Some(key) = tensors.keys().find(|k| !names.contains(k)) {
            return Err(AbbaError::InvalidArgument(format!(
                "optimizer state has unexpected entry '{key}' for {n} parameters: load the state saved for this parameter list"
            )));
        }
        let fetch = |prefix: &str, i: usize, var: &Var| -> Result<Tensor> {
            let key = format!("{prefix}.{i}");
            let t = tensors.get(&key).ok_or_else(|| {
                AbbaError::InvalidArgument(format!(
                    "optimizer state lacks '{key}': load the state saved for this parameter list"
                ))
            })?;
            if t.shape() != var.shape() {
                return Err(AbbaError::InvalidArgument(format!(
                    "optimizer state '{key}' has shape {:?} but parameter {i} has {:?}: load the state saved for this parameter list",
                    t.dims(),
                    var.dims()
                )));
            }
            Ok(t.to_dtype(DType::F32)?.to_device(var.device())?)
        };
        let mut m = Vec::with_capacity(n);
        let mut v = Vec::with_capacity(n);
        for (i, var) in self.vars.iter().enumerate() {
            m.push(fetch("m", i, var)?);
            v.push(fetch("v", i, var)?);
        }
        self.m = m;
        self.v = v;
        self.step = step;
        Ok(())
    }
}

/// Scales `grads` in place so their global L2 norm is at most `max_norm`, as `torch.nn.utils.clip_grad_norm_`:
/// factor `max_norm / (norm + 1e-6)` when that is below 1. Returns the norm before clipping.
///
/// Squares are summed in f32 per tensor. A non-finite norm is returned with the gradients left as they are
/// (torch would turn them all into NaN); the caller should skip that step.
pub fn clip_grad_norm(grads: &mut [Tensor], max_norm: f64) -> Result<f64> {
    if !(max_norm.is_finite() && max_norm > 0.0) {
        return Err(AbbaError::InvalidArgument(format!(
            "max gradient norm {max_norm}: use a finite value > 0, or skip clipping"
        )));
    }
    let mut sums = Vec::with_capacity(grads.len());
    for g in grads.iter().filter(|g| g.elem_count() > 0) {
        // Moved to one device so the per-tensor sums stack; a single read-back instead of one per tensor.
        let s = g.to_dtype(DType::F32)?.sqr()?.sum_all()?;
        sums.push(s.to_device(&candle_core::Device::Cpu)?);
    }
    if sums.is_empty() {
        return Ok(0.0);
    }
    let norm = f64::from(Tensor::stack(&sums, 0)?.sum_all()?.to_scalar::<f32>()?).sqrt();
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for g in grads.iter_mut() {
            *g = g.affine(coef, 0.0)?;
        }
    }
    Ok(norm)
}

/// Learning-rate schedule after a linear warmup from 0, as transformers' `get_{constant,linear,cosine}_schedule_with_warmup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Stays at the base lr after warmup.
    Constant,
    /// Decays linearly to 0 at `total_steps` (HF's default `lr_scheduler_type`).
    #[default]
    Linear,
    /// Half a cosine down to 0 at `total_steps`.
    Cosine,
}

impl Schedule {
    pub const NAMES: [&'static str; 3] = ["constant", "linear", "cosine"];

    pub fn name(self) -> &'static str {
        match self {
            Schedule::Constant => "constant",
            Schedule::Linear => "linear",
            Schedule::Cosine => "cosine",
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Schedule {
    type Err = AbbaError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "constant" => Ok(Schedule::Constant),
            "linear" => Ok(Schedule::Linear),
            "cosine" => Ok(Schedule::Cosine),
            _ => Err(AbbaError::UnknownName {
                what: "learning-rate schedule",
                name: s.to_string(),
                valid: Self::NAMES.iter().map(|n| n.to_string()).collect(),
            }),
        }
    }
}

/// Learning rate of the 0-based optimiser step `step`: `base_lr` times HF's LambdaLR multiplier at that step.
/// So step 0 of a warmup has lr 0, like HF's first step. The HF formulas are copied as they are, including past
/// `total_steps` (linear stays at 0, cosine rises again) and `warmup_steps > total_steps`.
pub fn lr_at(
    schedule: Schedule,
    base_lr: f64,
    step: usize,
    total_steps: usize,
    warmup_steps: usize,
) -> f64 {
    // i128 keeps HF's signed integer arithmetic (total - step can be negative) exact.
    let (step, total, warmup) = (step as i128, total_steps as i128, warmup_steps as i128);
    let multiplier = if step < warmup {
        step as f64 / warmup.max(1) as f64
    } else {
        let decay_len = (total - warmup).max(1) as f64;
        match schedule {
            Schedule::Constant => 1.0,
            Schedule::Linear => ((total - step) as f64 / decay_len).max(0.0),
            Schedule::Cosine => {
                let progress = (step - warmup) as f64 / decay_len;
                // HF: math.pi * num_cycles(0.5) * 2.0 * progress; the constant factor is exactly π.
                (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
            }
        }
    };
    base_lr * multiplier
}

/// Warmup steps for a warmup ratio, `ceil(ratio · total)` in f64 like HF's `TrainingArguments.get_warmup_steps`,
/// including its float rounding (0.07 · 100 = 7.000000000000001 gives 8). Unlike transformers 5, which reads a
/// `warmup_steps` of exactly 1.0 as one step, a ratio of 1.0 here means the whole run. The ratio must be in [0, 1].
pub fn warmup_steps_from_ratio(ratio: f64, total_steps: usize) -> Result<usize> {
    if !(0.0..=1.0).contains(&ratio) {
        return Err(AbbaError::InvalidArgument(format!(
            "warmup ratio {ratio}: use a fraction of the training steps in [0, 1]"
        )));
    }
    Ok((total_steps as f64 * ratio).ceil() as usize)
}

/// Sums gradients of a fixed list of vars over micro-batches (in f32), for gradient accumulation.
/// As in HF, the caller divides each micro-batch loss by the number of micro-batches, so the sum is the mean.
pub struct GradAccumulator {
    vars: Vec<Var>,
    sums: Vec<Option<Tensor>>,
    micro_batches: usize,
}

impl GradAccumulator {
    pub fn new(vars: &[Var]) -> Self {
        Self {
            vars: vars.to_vec(),
            sums: vec![None; vars.len()],
            micro_batches: 0,
        }
    }

    /// The number of vars (the length of a [`Self::pick`]ed part).
    pub fn var_count(&self) -> usize {
        self.vars.len()
    }

    /// Micro-batches added since the last [`Self::take`].
    pub fn micro_batches(&self) -> usize {
        self.micro_batches
    }

    /// Adds one backward pass's gradients; a var absent from `grads` (unused by the loss) contributes zero.
    pub fn add(&mut self, grads: &GradStore) -> Result<()> {
        let picked = self.pick(grads)?;
        self.add_parts(vec![picked])
    }

    /// The vars' gradients in `grads`, in f32 (None for a var the loss did not use): all of a backward pass
    /// that [`Self::add_parts`] needs, so the rest of its store can be freed at once.
    pub fn pick(&self, grads: &GradStore) -> Result<Vec<Option<Tensor>>> {
        self.vars
            .iter()
            .map(|var| {
                grads
                    .get(var.as_tensor())
                    .map(|g| g.to_dtype(DType::F32))
                    .transpose()
                    .map_err(Into::into)
            })
            .collect()
    }

    /// Adds one micro-batch's gradients, given as the [`Self::pick`]ed gradients of its parts (the shards of a
    /// sharded batch), summed in order.
    pub fn add_parts(&mut self, parts: Vec<Vec<Option<Tensor>>>) -> Result<()> {
        // Each var's running sum, then its parts in order, added in one pass.
        let mut terms: Vec<Vec<Tensor>> = self
            .sums
            .iter_mut()
            .map(|s| s.take().into_iter().collect())
            .collect();
        for part in parts {
            for (g, t) in part.into_iter().zip(terms.iter_mut()) {
                t.extend(g);
            }
        }
        for (t, sum) in terms.into_iter().zip(self.sums.iter_mut()) {
            if !t.is_empty() {
                *sum = Some(sum_in_order(t)?);
            }
        }
        self.micro_batches += 1;
        Ok(())
    }

    /// The summed gradients, one f32 tensor per var in order (zeros where no gradient came), and a reset.
    pub fn take(&mut self) -> Result<Vec<Tensor>> {
        let out = self
            .vars
            .iter()
            .zip(self.sums.iter_mut())
            .map(|(var, sum)| match sum.take() {
                Some(s) => Ok(s),
                None => Ok(Tensor::zeros(var.shape(), DType::F32, var.device())?),
            })
            .collect::<Result<Vec<_>>>();
        self.micro_batches = 0;
        out
    }
}
