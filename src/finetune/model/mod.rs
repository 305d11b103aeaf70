//! Our own Llama-family decoder (Llama 2/3, Mistral, Qwen2, SmolLM) whose seven projections per layer are
//! [`AdaptedLinear`](crate::finetune::layers::AdaptedLinear)s, so adapters can sit on any of them, and whose
//! forward returns logits at every position (training needs them all).

pub mod block;
pub mod cache;
pub mod checkpoint;
pub mod config;
pub mod llama;
pub mod rope;
pub mod target;

pub use cache::KvCache;
pub use checkpoint::Checkpoint;
pub use config::{LlamaShape, ModelConfig};
pub use llama::Llama;
pub use target::TargetModule;
