//! Executes a study: expand, shard, skip what is done, run the rest in parallel with a progress bar, append each
//! record as it finishes.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;

use super::execute::{TargetCache, run_one};
use super::grid::{RunConfig, expand, shard};
use super::record::{RunRecord, Status};
use super::spec::StudySpec;
use super::store::ResultsStore;
use crate::error::{AbbaError, Result};

/// Which part of the grid this process runs: shard `index` of `count` (0-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = AbbaError;
    fn from_str(s: &str) -> Result<Shard> {
        let bad = || {
            AbbaError::InvalidArgument(format!("shard '{s}' must be K/N with 0 ≤ K < N, e.g. 0/4"))
        };
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            k.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub shard: Option<Shard>,
    /// Re-run finished runs (their old rows are dropped first).
    pub force: bool,
    /// Draw a progress bar (it is hidden anyway when stderr is not a terminal).
    pub progress: bool,
}

/// Counts of what a call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub planned: usize,
    pub skipped: usize,
    pub ok: usize,
    pub diverged: usize,
    pub failed: usize,
}

/// The results file name of a shard, so shards of one study never write the same file.
pub fn results_file_name(shard: Option<Shard>) -> String {
    match shard {
        Some(s) if s.count > 1 => format!("results-shard-{}-of-{}.csv", s.index, s.count),
        _ => "results.csv".into(),
    }
}

pub fn run_study(
    spec: &StudySpec,
    out_dir: &Path,
    opts: &RunOptions,
) -> Result<(Summary, Vec<RunRecord>)> {
    let mut runs = expand(spec)?;
    if let Some(s) = opts.shard {
        runs = shard(runs, s.index, s.count);
    }
    let (store, existing) = ResultsStore::open(out_dir, &results_file_name(opts.shard))?;
    let planned_ids: HashSet<String> = runs.iter().map(RunConfig::id).collect();
    if opts.force {
        store.remove(&planned_ids)?;
    }
    let done: HashSet<String> = if opts.force {
        HashSet::new()
    } else {
        existing.iter().map(|r| r.run_id.clone()).collect()
    };
    let pending: Vec<RunConfig> = runs
        .iter()
        .filter(|r| !done.contains(&r.id()))
        .cloned()
        .collect();
    let mut summary = Summary {
        planned: runs.len(),
        skipped: runs.len() - pending.len(),
        ..Default::default()
    };

    let bar = if opts.progress {
        ProgressBar::new(pending.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    if opts.progress {
        bar.set_draw_target(ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {pos}/{len} runs, {elapsed} elapsed, eta {eta} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(spec.name.clone());
    }
    // Runs are the unit of parallelism; each fit's linear algebra stays on its own thread so the two levels
    // never oversubscribe the cores and results do not depend on the thread count.
    let threads = crate::linalg::threads_scope(1);
    let cache = TargetCache::default();
    let write_lock = Mutex::new(());
    let outcomes: Vec<Result<RunRecord>> = pending
        .par_iter()
        .map(|config| {
            let out = run_one(&spec.name, config, &cache);
            let _guard = write_lock.lock().expect("write lock");
            store.write_artifacts(&out.record.run_id, &out.curve, &out.spectrum)?;
            store.append(&out.record)?;
            bar.set_message(format!(
                "last: {} {} r={} → {:.4}",
                out.record.target, out.record.method, out.record.budget_rank, out.record.error
            ));
            bar.inc(1);
            Ok(out.record)
        })
        .collect();
    drop(threads);
    bar.finish_and_clear();
    let mut records = Vec::with_capacity(outcomes.len());
    for o in outcomes {
        let r = o?;
        match r.status {
            Status::Ok => summary.ok += 1,
            Status::Diverged => summary.diverged += 1,
            Status::Failed => summary.failed += 1,
        }
        records.push(r);
    }
    Ok((summary, records))
}
