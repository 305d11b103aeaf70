//! A fine-tuning job from one TOML file: model, data, adapter, training, evaluation, outputs.

pub mod compare;
pub mod data_prep;
pub mod model_io;
pub mod report;
pub mod run;
pub mod spec;

pub use run::{RunOptions, run_finetune};
pub use spec::FinetuneSpec;
