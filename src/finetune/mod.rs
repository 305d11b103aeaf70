//! Full-model fine-tuning on candle: a Llama-family decoder whose projections carry LoRA / HiRA / ABBA adapters,
//! with training, evaluation, PEFT-compatible adapter I/O and merging.
//!
//! candle is reached only from this module tree; the matrix maths (initialisation, conversions) comes from
//! [`crate::adapter`] through ndarray ([`bridge`]), so the two halves of the crate agree by construction.

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
pub mod optim;
pub mod scoring;
pub mod tokenizer;
pub mod toy;
pub mod train;
