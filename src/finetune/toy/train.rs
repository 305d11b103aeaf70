//! Minibatch training of the toy MLP with the crate's AdamW (weight decay 0: plain Adam), used by both phases:
//! pretraining (every weight trainable) and adaptation (only what [`super::adapt::prepare`] returned).

use candle_core::{Tensor, Var};
use rand::seq::SliceRandom;

use super::mlp::Mlp;
use crate::error::{AbbaError, Result};
use crate::finetune::layers::ForwardCtx;
use crate::finetune::optim::{AdamW, AdamWConfig, Schedule, clip_grad_norm, lr_at};
use crate::rng::{derive, seeded};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainOpts {
    pub epochs: usize,
    pub lr: f64,
    pub batch: usize,
    pub schedule: Schedule,
    /// Global gradient-norm clip, if any.
    pub max_grad_norm: Option<f64>,
    /// Seeds the batch order: epoch `e` shuffles with stream `e` of it. Equal seeds give every method the
    /// same batches, so their curves differ only by the method.
    pub seed: u64,
}

/// The minibatch loss of every step taken, and whether training stopped on a non-finite loss.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainLog {
    pub losses: Vec<f64>,
    pub diverged: bool,
}

/// Optimisation steps `train` takes for `n` examples.
pub fn total_steps(n: usize, opts: &TrainOpts) -> usize {
    opts.epochs * n.div_ceil(opts.batch.max(1))
}

/// Trains `vars` (which must be what `mlp`'s forward pass reads) on rows `x`, labels `y` (u32). `on_step`
/// sees each step's index and loss. Stops early, with `diverged`, at the first non-finite loss, leaving the
/// parameters as they were before that step.
pub fn train(
    mlp: &Mlp,
    vars: Vec<Var>,
    x: &Tensor,
    y: &Tensor,
    opts: &TrainOpts,
    mut on_step: impl FnMut(usize, f64),
) -> Result<TrainLog> {
    if opts.batch == 0 {
        return Err(AbbaError::InvalidArgument(
            "batch size 0: use a batch of at least 1".into(),
        ));
    }
    let n = x.dim(0)?;
    let total = total_steps(n, opts);
    let mut optimizer = AdamW::new(
        vars.clone(),
        AdamWConfig {
            lr: opts.lr,
            weight_decay: 0.0,
            ..AdamWConfig::default()
        },
    )?;
    // Adapter dropout is 0 in the toy; a training context is still passed so the layers run in training mode.
    let ctx = ForwardCtx::train(derive(opts.seed, u64::MAX));
    let mut log = TrainLog::default();
    let mut order: Vec<u32> = (0..n as u32).collect();
    for epoch in 0..opts.epochs {
        order.sort_unstable();
        order.shuffle(&mut seeded(derive(opts.seed, epoch as u64)));
        for chunk in order.chunks(opts.batch) {
            let step = log.losses.len();
            let ids = Tensor::from_slice(chunk, chunk.len(), x.device())?;
            let (xb, yb) = (x.index_select(&ids, 0)?, y.index_select(&ids, 0)?);
            let loss = mlp.loss(&xb, &yb, &ctx)?;
            let value = loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
            log.losses.push(value);
            on_step(step, value);
            if !value.is_finite() {
                log.diverged = true;
                return Ok(log);
            }
            let store = loss.backward()?;
            let mut grads = vars
                .iter()
                .map(|v| match store.get(v.as_tensor()) {
                    Some(g) => Ok(g.clone()),
                    None => Ok(v.as_tensor().zeros_like()?),
                })
                .collect::<Result<Vec<_>>>()?;
            if let Some(max_norm) = opts.max_grad_norm {
                clip_grad_norm(&mut grads, max_norm)?;
            }
            optimizer.step(&grads, lr_at(opts.schedule, opts.lr, step, total, 0))?;
        }
    }
    Ok(log)
}
