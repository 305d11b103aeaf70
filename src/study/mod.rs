//! Reconstruction studies: specs, grid expansion, the runner (parallel, resumable, shardable) and its records.

pub mod execute;
pub mod grid;
pub mod record;
pub mod runner;
pub mod spec;
pub mod store;

pub use runner::{RunOptions, Shard, Summary, run_study};
pub use spec::StudySpec;
