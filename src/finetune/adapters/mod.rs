//! Which adapter goes where: the configuration, putting adapters into a model, and PEFT-compatible files.

pub mod config;
pub mod export;
pub mod inject;
pub mod peft;
pub mod peft_rules;

pub use config::{AdapterConfig, AdapterSection};
pub use inject::{ParamCount, inject};
