//! One micro-batch's loss and gradients with its rows cut into shards whose forward and backward passes run in
//! parallel on the CPU. A decoder's training step is a long chain of operations too small to share between cores
//! well (the benchmark model trained about as fast on one thread as on two), while shards are independent work.
//!
//! Shard s's loss is its mean token loss times its share of the batch's loss tokens, so the shards' losses and
//! gradients add up to the whole batch's, up to rounding. The number of shards is a setting of the run
//! ([`crate::finetune::train::TrainConfig::shards`]), never taken from the machine, so a run gives the same
//! numbers at any thread count; parts are summed in shard order.

use candle_core::{Device, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Result;
use crate::finetune::data::{Batch, Encoded, collate};
use crate::finetune::eval::loss::{batch_tensors, masked_cross_entropy};
use crate::finetune::layers::ForwardCtx;
use crate::finetune::model::Llama;
use crate::finetune::optim::GradAccumulator;
use crate::rng::derive;

/// How many shards a micro-batch is cut into: `auto` (the default) is [`AUTO_CPU_SHARDS`] on the CPU and 1 on a
/// GPU, where one pass over the whole batch keeps the device busiest; or a fixed count (1 = one pass). Written as
/// `"auto"` or a number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Shards {
    #[default]
    Auto,
    Count(usize),
}

/// `auto`'s shards on the CPU: enough to keep a few cores busy while each shard's products stay large; the bench
/// model (batch 8) trains about as fast with 2, and with less memory than with 2 (one shard's activations per core).
pub const AUTO_CPU_SHARDS: usize = 4;

impl Shards {
    /// The number of shards on `device`.
    pub fn count(self, device: &Device) -> usize {
        match self {
            Shards::Auto if device.is_cpu() => AUTO_CPU_SHARDS,
            Shards::Auto => 1,
            Shards::Count(n) => n,
        }
    }

    /// One pass over the whole batch, as before shards existed.
    pub fn is_one(&self) -> bool {
        *self == Shards::Count(1)
    }
}

impl std::str::FromStr for Shards {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "auto" => Ok(Shards::Auto),
            n => match n.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(Shards::Count(n)),
                _ => Err(format!("shards '{s}' must be `auto` or a whole number ≥ 1")),
            },
        }
    }
}

impl std::fmt::Display for Shards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shards::Auto => f.write_str("auto"),
            Shards::Count(n) => write!(f, "{n}"),
        }
    }
}

impl Serialize for Shards {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Shards::Auto => s.serialize_str("auto"),
            Shards::Count(n) => s.serialize_u64(*n as u64),
        }
    }
}

impl<'de> Deserialize<'de> for Shards {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(i64),
            Word(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Count(n) => n.to_string(),
            Raw::Word(w) => w,
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A micro-batch's summed loss (each shard's divided by `loss_divisor`, the number of micro-batches per step)
/// and its shards' gradients of `acc`'s vars, in shard order, for [`GradAccumulator::add_parts`].
///
/// With one shard (or one row) this is the unsharded step: the batch's mean loss over `loss_divisor`, dropout drawn from
/// `dropout_seed`. With more, shard s draws its dropout from `derive(dropout_seed, s)`. On the CPU the shards run
/// in parallel; elsewhere one after another.
pub fn loss_and_grads(
    model: &Llama,
    acc: &GradAccumulator,
    rows: &[&Encoded],
    pad: u32,
    shards: Shards,
    dropout_seed: u64,
    loss_divisor: usize,
) -> Result<(f64, Vec<Vec<Option<Tensor>>>)> {
    let shards = shards.count(model.device());
    let per_shard = rows
        .len()
        .div_ceil(shards.clamp(1, rows.len().max(1)))
        .max(1);
    let mut batches: Vec<Batch> = rows
        .chunks(per_shard)
        .map(|part| collate(part, pad))
        .collect();
    // The loss mask's mass, as the masked mean counts it (masks are 0/1, so a shard's mass is 0 or ≥ 1 and its
    // mean divides by exactly that mass).
    let mass = |b: &Batch| b.loss_mask.iter().map(|&m| m as f64).sum::<f64>();
    let total: f64 = batches.iter().map(mass).sum();
    if batches.len() > 1 && total == 0.0 {
        // No loss token anywhere: nothing to share out; the one-pass loss is 0.
        batches = vec![collate(rows, pad)];
    }
    let sharded = batches.len() > 1;
    let shard = |(s, batch): (usize, &Batch)| -> Result<(f64, Vec<Option<Tensor>>)> {
        let share = mass(batch) / total;
        if sharded && share == 0.0 {
            return Ok((0.0, vec![None; acc.var_count()]));
        }
        let (x, y, m) = batch_tensors(model, batch)?;
        let seed = if sharded {
            derive(dropout_seed, s as u64)
        } else {
            dropout_seed
        };
        let logits = model.forward(&x, &ForwardCtx::train(seed), None)?;
        let mut loss = masked_cross_entropy(&logits, &y, &m)?;
        if sharded {
            loss = (loss * share)?;
        }
        let loss = (loss / loss_divisor as f64)?;
        let value = loss.to_scalar::<f32>()? as f64;
        Ok((value, acc.pick(&loss.backward()?)?))
    };
    let done: Vec<Result<(f64, Vec<Option<Tensor>>)>> = if sharded && model.device().is_cpu() {
        batches.par_iter().enumerate().map(shard).collect()
    } else {
        batches.iter().enumerate().map(shard).collect()
    };
    let mut loss = 0.0;
    let mut grads = Vec::with_capacity(done.len());
    for d in done {
        let (value, g) = d?;
        loss += value;
        grads.push(g);
    }
    Ok((loss, grads))
}
