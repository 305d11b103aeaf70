//! Learning-rate schedules: linear warmup, then cosine, linear or no decay.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Decay {
    Constant,
    #[default]
    Cosine,
    Linear,
}

/// Multiplier of the base learning rate at `step` (0-based) of `total`: ramps linearly over `warmup` steps,
/// then decays from 1 to `min_ratio`.
pub fn lr_factor(step: usize, total: usize, warmup: usize, decay: Decay, min_ratio: f64) -> f64 {
    if step < warmup {
        return (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).clamp(0.0, 1.0);
    let shape = match decay {
        Decay::Constant => 1.0,
        Decay::Linear => 1.0 - progress,
        Decay::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
    };
    min_ratio + (1.0 - min_ratio) * shape
}
