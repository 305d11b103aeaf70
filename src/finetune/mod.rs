//! Full-model fine-tuning on candle: a Llama-family decoder whose projections carry LoRA / HiRA / ABBA adapters,
//! with training, evaluation, PEFT-compatible adapter I/O and merging.
//!
//! The library reaches candle only from this module tree (and the benchmark driver, `crate::bench`, which runs its
//! measurements); the command line calls into it for fine-tuning commands. What a method is — its factors, their
//! names and shapes, its initial values — comes from [`crate::adapter::Method`] through ndarray ([`bridge`]), so
//! the two halves of the crate agree by construction.

/// The candle release this crate builds against (Cargo.toml), for version columns and reports.
pub const CANDLE_VERSION: &str = "0.11.1";

pub mod adapters;
pub mod arith;
pub mod bench;
pub mod bridge;
pub mod data;
pub mod device;
pub mod eval;
pub mod job;
pub mod layers;
pub mod model;
pub mod ops;
pub mod optim;
pub mod scoring;
pub mod synthetic;
pub mod tokenizer;
pub mod toy;
pub mod train;
