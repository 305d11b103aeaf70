//! The training loop: AdamW over the trainable variables only, a warmup + decay schedule, gradient accumulation
//! and clipping, a per-step loss log, atomic checkpoints and exact resume.

pub mod config;
pub mod log;
pub mod lora_pro;
pub mod shards;
pub mod state;
pub mod trainer;

pub use config::{OptimizerKind, TrainConfig};
pub use shards::Shards;
pub use trainer::{TrainOutcome, TrainSetup, train};
