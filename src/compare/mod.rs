//! Fine-tuning comparisons that a reviewer can accept (`abba compare SPEC.toml`): a grid of methods × budgets
//! (equal trainable parameters through [`crate::budget`]) × an lr grid per method × seeds, each cell an ordinary
//! fine-tuning run ([`crate::finetune::job`]); the lr chosen on validation only; test metrics with Student-t
//! intervals over seeds and paired differences against LoRA ([`crate::stats`]). Resumable, shardable like studies.

pub mod cell;
pub mod grid;
pub mod protocol;
pub mod record;
pub mod report;
pub mod runner;
pub mod spec;
pub mod store;
pub mod summary;
pub mod toy_cell;

pub use report::write_reports;
pub use runner::{CompareOptions, CompareSummary, run_compare};
pub use spec::CompareSpec;
