//! The ABBA paper's toy experiment (its Fig. 1): a two-layer MLP trained on MNIST digits 0–7, then adapted to
//! digits 8–9 with LoRA, HiRA and ABBA at an equal trainable-parameter budget, and with full fine-tuning.
//!
//! It runs on the CPU in a minute or two and uses the same adapter layers, initialisations and optimiser as the
//! transformer path, so it is also an end-to-end check of those pieces on a task small enough to reason about.
//!
//! - [`mnist`]: the digits CSV(.gz) and the per-class train/test split;
//! - [`mlp`]: the network, two [`crate::finetune::layers::AdaptedLinear`] layers;
//! - [`adapt`]: what each method trains, at equal budget;
//! - [`train`]: the minibatch Adam loop both phases share;
//! - [`spec`]: the spec (TOML) and its checks;
//! - [`run`]: the two phases;
//! - [`report`]: what a run produced;
//! - [`output`]: the CSV, Markdown and PNG files (the plot is [`crate::report::loss_curves`]).

pub mod adapt;
pub mod mlp;
pub mod mnist;
pub mod output;
pub mod report;
pub mod run;
pub mod spec;
pub mod train;

pub use adapt::{Budget, PAPER_METHODS, prepare};
pub use mlp::Mlp;
pub use mnist::{Digits, load_digits, split_per_class};
pub use report::{MethodReport, Status, ToyReport};
pub use run::run_toy;
pub use spec::{ToySpec, load_spec};
