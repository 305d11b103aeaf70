//! Runs a comparison grid: pretrain the base once if the spec asks, expand, shard, skip cells already recorded,
//! run the rest in parallel (a rayon pool of `jobs` threads) and append each row as its cell finishes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::Device;
use rayon::prelude::*;

use super::cell::{GridContext, run_cell};
use super::grid::{Cell, expand, shard_cells};
use super::record::{CellRecord, CellStatus};
use super::spec::CompareSpec;
use super::store::CellStore;
use crate::error::{AbbaError, Result};
use crate::finetune::job::run::finished;
use crate::finetune::job::{FinetuneSpec, RunOptions as JobOptions, run_finetune};
use crate::study::Shard;
use crate::study::runner::results_file_name;

#[derive(Clone, Debug)]
pub struct CompareOptions {
    pub shard: Option<Shard>,
    /// Re-run cells that are recorded (their rows and run directories are dropped first).
    pub force: bool,
    /// Cells run at once; default: the available cores.
    pub jobs: Option<usize>,
    pub device: Device,
    /// One line per finished cell on stderr.
    pub verbose: bool,
}

/// Counts of what a call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompareSummary {
    pub planned: usize,
    pub skipped: usize,
    pub ok: usize,
    pub diverged: usize,
    pub failed: usize,
}

/// The base model's directory when the spec pretrains it: runs that job unless it has finished.
fn pretrained_base(spec: &CompareSpec, device: &Device, verbose: bool) -> Result<Option<PathBuf>> {
    let Some(path) = spec.model.as_ref().and_then(|m| m.pretrain.as_ref()) else {
        return Ok(None);
    };
    let job = FinetuneSpec::load(path)?;
    if !finished(&job.output.dir) {
        if verbose {
            eprintln!("pretraining the base model: {}", path.display());
        }
        run_finetune(
            &job,
            &JobOptions {
                device: device.clone(),
                resume: true,
                progress: verbose,
                out_dir: None,
            },
        )?;
    }
    let model = job.output.dir.join("model");
    if !model.join("config.json").is_file() {
        return Err(AbbaError::InvalidArgument(format!(
            "the pretraining job {} left no model in {}: it must be a full fine-tuning job (method = \"full\")",
            path.display(),
            model.display()
        )));
    }
    Ok(Some(model))
}

pub fn run_compare(
    spec: &CompareSpec,
    out: &Path,
    opts: &CompareOptions,
) -> Result<(CompareSummary, Vec<CellRecord>)> {
    let base = pretrained_base(spec, &opts.device, opts.verbose)?;
    let ctx = GridContext::new(spec, base, out, opts.device.clone())?;
    let cells = shard_cells(expand(spec), opts.shard);
    let (store, existing) = CellStore::open(out, &results_file_name(opts.shard))?;
    let ids: Vec<String> = cells.iter().map(|c| c.id(spec)).collect();
    if opts.force {
        store.remove(&ids.iter().cloned().collect())?;
    }
    let done: HashSet<String> = if opts.force {
        HashSet::new()
    } else {
        existing.iter().map(|r| r.cell_id.clone()).collect()
    };
    let pending: Vec<&Cell> = cells
        .iter()
        .zip(&ids)
        .filter(|(_, id)| !done.contains(*id))
        .map(|(c, _)| c)
        .collect();
    let mut summary = CompareSummary {
        planned: cells.len(),
        skipped: cells.len() - pending.len(),
        ..Default::default()
    };
    let jobs = opts
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs)
        .build()
        .map_err(|e| AbbaError::InvalidArgument(format!("cannot start {jobs} threads: {e}")))?;
    let write_lock = Mutex::new(());
    let total = pending.len();
    let outcomes: Vec<Result<CellRecord>> = pool.install(|| {
        pending
            .par_iter()
            .map(|cell| {
                let record = run_cell(spec, cell, &ctx, opts.force);
                let _guard = write_lock.lock().expect("write lock");
                store.append(&record)?;
                if opts.verbose {
                    eprintln!(
                        "{}: {:?} validation {:.4} test {:.4}{} ({total} pending at start)",
                        record.cell_id,
                        record.status,
                        record.validation,
                        record.test,
                        if record.reason.is_empty() {
                            String::new()
                        } else {
                            format!(" — {}", record.reason)
                        }
                    );
                }
                Ok(record)
            })
            .collect()
    });
    let mut records = Vec::with_capacity(outcomes.len());
    for o in outcomes {
        let r = o?;
        match r.status {
            CellStatus::Ok => summary.ok += 1,
            CellStatus::Diverged => summary.diverged += 1,
            CellStatus::Failed => summary.failed += 1,
        }
        records.push(r);
    }
    Ok((summary, records))
}
