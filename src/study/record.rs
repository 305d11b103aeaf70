//! One CSV row per run (schema in docs/records.md), appended atomically, and the per-run curve and spectrum files.

use serde::{Deserialize, Serialize};

pub use crate::fit::CurvePoint;

/// The outcome of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Ok,
    /// The objective became non-finite or blew up; the sweep went on.
    Diverged,
    /// The run could not be carried out (bad configuration, I/O); `reason` says why.
    #[default]
    Failed,
}

/// One row of `results.csv`. Column order is field order: the header is derived from this struct, so a field
/// added, removed or moved changes the schema (and old files are refused by name rather than misread).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Hash of the resolved configuration (`config`): the run's identity for resume and merge.
    pub run_id: String,
    pub study: String,
    pub target: String,
    pub rows: usize,
    pub cols: usize,
    pub method: String,
    /// ABBA rank rule (`half`, `full`, `split-R1`); empty for other methods.
    pub rule: String,
    /// The LoRA rank whose parameter count is the budget.
    pub budget_rank: usize,
    /// LoRA/HiRA rank, or ABBA's r1.
    pub r1: usize,
    /// ABBA's r2; 0 for other methods.
    pub r2: usize,
    pub params: usize,
    pub solver: String,
    pub init: String,
    pub seed: u64,
    pub dtype: String,
    pub scale_convention: String,
    pub scale: f64,
    pub status: Status,
    pub reason: String,
    /// ‖T − T̂‖²_F / ‖T‖²_F, the paper's metric.
    pub error: f64,
    /// ‖T − T̂‖_F / ‖T‖_F.
    pub rel_frob: f64,
    /// ‖σ(T) − σ(T̂)‖₂ / ‖σ(T)‖₂.
    pub sv_error: f64,
    /// ‖T̂‖²_F / ‖T̂‖²₂.
    pub stable_rank: f64,
    /// exp(entropy of σ/Σσ) of T̂.
    pub effective_rank: f64,
    /// Singular values of T̂ above max(m, n)·ε·σ_max.
    pub numerical_rank: usize,
    pub steps: usize,
    /// Wall-clock seconds of the fit (not deterministic).
    pub wall_s: f64,
    /// Peak resident memory during the run, MiB (not deterministic): [`crate::process::RunPeak`] — this run's
    /// own peak when no other run of the process overlapped it, else the process's peak over a window covering
    /// the overlapping runs too (an upper bound).
    pub peak_rss_mb: f64,
    pub crate_version: String,
    pub git_commit: String,
    /// The resolved configuration as JSON; `run_id` is its hash.
    pub config: String,
}

impl RunRecord {
    /// Columns whose values depend on the machine and its load rather than on the configuration and seed.
    pub const NONDETERMINISTIC_COLUMNS: [&'static str; 2] = ["wall_s", "peak_rss_mb"];
}

/// Singular values of the target and of the fit, index by index.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpectrumPoint {
    pub index: usize,
    pub target: f64,
    pub fit: f64,
}
