//! A fine-tuning job from one TOML file: model, data, adapter, training, evaluation, outputs.

pub mod compare;
pub mod data_prep;
pub mod model_io;
pub mod report;
pub mod run;
pub mod spec;

pub use run::{RunOptions, Trained, run_finetune, run_finetune_then};
pub use spec::FinetuneSpec;
