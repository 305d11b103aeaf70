//! Evaluation: greedy generation with a KV cache, GSM8K-style scoring, and loss / perplexity on held-out data.

pub mod bench_generate;
pub mod evaluate;
pub mod generate;
pub mod loss;
pub mod suite;

pub use evaluate::{EvalOptions, Evaluation, evaluate};
pub use generate::{greedy, greedy_batch};
pub use loss::{masked_cross_entropy, mean_loss};
pub use suite::{EvalReport, GenerationSettings, evaluate_generation};
