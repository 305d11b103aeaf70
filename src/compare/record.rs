//! One row of a comparison's `results.csv` per cell. Column order is field order; the header is derived from this
//! struct, so the schema and the code cannot disagree. Rows carry the task, metric and its direction, so a merged
//! file is reported on without the spec.

use serde::{Deserialize, Serialize};

/// The outcome of a cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum CellStatus {
    Ok,
    /// Training hit a non-finite loss; its metrics are not comparable (NaN loss, nothing generated).
    Diverged,
    /// The cell could not run (an unreachable budget, a bad file): `reason` says why.
    #[default]
    Failed,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CellRecord {
    /// `<label>-r<budget>-lr<lr>-s<seed>-<hash>`: the cell's identity for resume and merge, and its run directory.
    pub cell_id: String,
    pub task: String,
    /// The method's label in the spec.
    pub method: String,
    /// The method's family name (`lora`, `abba`, …, `full`).
    pub kind: String,
    /// The LoRA rank whose parameters are the budget; 0 for full fine-tuning.
    pub budget_rank: usize,
    /// Trainable parameters the run actually had (0 when it failed before training).
    pub params: usize,
    pub lr: f64,
    pub seed: u64,
    pub status: CellStatus,
    pub reason: String,
    /// The spec's metric (`accuracy`, `exact_match`, `loss`, `perplexity`) and whether higher is better.
    pub metric: String,
    pub higher_is_better: bool,
    /// The method label others are paired against.
    pub reference: String,
    /// The metric on the validation split (what chooses the lr) and on the test split (what is reported).
    pub validation: f64,
    pub test: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    pub val_exact_match: f64,
    pub test_loss: f64,
    pub test_accuracy: f64,
    pub test_exact_match: f64,
    /// The MNIST toy: accuracy kept on the pretraining digits 0–7 after adaptation (forgetting); NaN otherwise.
    pub test_kept: f64,
    pub steps: usize,
    /// Wall-clock seconds of training (not deterministic).
    pub train_seconds: f64,
    /// Peak resident memory of the process during the cell, MiB ([`crate::process::RunPeak`]): the cell's own peak
    /// when it ran alone, else the peak over a window covering the cells that overlapped it (an upper bound);
    /// not deterministic.
    pub peak_rss_mib: f64,
    pub crate_version: String,
    pub git_commit: String,
    pub candle_version: String,
}

impl CellRecord {
    /// Columns that depend on the machine and its load rather than on the cell.
    pub const NONDETERMINISTIC_COLUMNS: [&'static str; 2] = ["train_seconds", "peak_rss_mib"];

    pub fn is_full(&self) -> bool {
        self.budget_rank == 0
    }
}
