//! `report.json`: what a fine-tuning run did and measured, with the versions and settings needed to trust it
//! (in the spirit of PEFT's method_comparison records).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{AbbaError, Result};
use crate::io::write_atomic;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FinetuneReport {
    pub name: String,
    /// ok | diverged
    pub status: String,
    pub method: String,
    pub trainable_params: usize,
    pub total_params: usize,
    pub device: String,
    pub dtype: String,
    pub seed: u64,
    pub weight_decay: f64,
    pub lr: f64,
    pub steps: usize,
    pub train_examples: usize,
    pub truncated_away: usize,
    pub first_loss: f64,
    pub last_loss: f64,
    pub eval_loss: Option<f64>,
    pub eval_perplexity: Option<f64>,
    pub eval_accuracy: Option<f64>,
    pub eval_exact_match: Option<f64>,
    pub eval_generated: usize,
    pub tokens: usize,
    pub tokens_per_s: f64,
    pub train_seconds: f64,
    pub wall_seconds: f64,
    /// Peak resident memory during this run (MiB): the high-water mark is reset when the run starts
    /// ([`crate::process::RunPeak`]), so earlier runs in the same process do not count.
    pub peak_rss_mib: f64,
    /// What `peak_rss_mib` covers: `run` (this run alone), `overlapping` (other runs of the process overlapped
    /// it: an upper bound) or `process` (the mark could not be reset: the process's peak since it started).
    /// Absent in reports written before it existed.
    #[serde(default)]
    pub peak_rss_scope: Option<String>,
    pub resumed_from: Option<usize>,
    /// `adamw` or `lora-pro`, and the MiB of state it kept beside the parameters.
    #[serde(default)]
    pub optimizer: String,
    #[serde(default)]
    pub optimizer_state_mib: f64,
    /// Shards each micro-batch was cut into (`[train] shards` resolved on this device). Absent in reports written
    /// before it existed.
    #[serde(default)]
    pub shards: Option<usize>,
    pub abba_version: String,
    pub git_commit: String,
    pub candle_version: String,
}

impl FinetuneReport {
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| AbbaError::InvalidArgument(e.to_string()))?;
        write_atomic(path, text.as_bytes())
    }

    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| AbbaError::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| AbbaError::Format {
            path: path.display().to_string(),
            format: "report.json",
            message: e.to_string(),
        })
    }
}
