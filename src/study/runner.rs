//! Executes a study: expand, shard, skip what is done, run the rest in parallel with a progress bar, append each
//! record as it finishes.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::execute::{RunOutput, TargetCache, run_one};
use super::grid::{RunConfig, expand, shard};
use super::record::{RunRecord, Status};
use super::spec::StudySpec;
use super::store::ResultsStore;
use crate::adapter::Method;
use crate::error::{AbbaError, Result};
use crate::fit::SolverSpec;

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
    // Fits are the unit of parallelism: one worker per core takes the most expensive fit left, and each fit's
    // linear algebra stays on its worker's thread so the two levels never oversubscribe the cores. Once no run
    // is left to start, the runs still going share the idle cores (the fused kernels and ALS solves give the
    // same numbers at any thread count; everything else stays on one thread). Runs that differ only in their
    // labels share one fit.
    let cores = rayon::current_num_threads().max(1);
    let jobs = same_fit_groups(&pending);
    let fits = jobs.len();
    let queue = Mutex::new(jobs.into_iter());
    let busy = Mutex::new(0usize);
    let threads = crate::linalg::threads_scope(1);
    crate::fit::fused::set_threads(1);
    let cache = TargetCache::default();
    let write_lock = Mutex::new(());
    let save = |out: &RunOutput| -> Result<RunRecord> {
        let _guard = write_lock.lock().expect("write lock");
        store.write_artifacts(&out.record.run_id, &out.curve, &out.spectrum)?;
        store.append(&out.record)?;
        bar.set_message(format!(
            "last: {} {} r={} → {:.4}",
            out.record.target, out.record.method, out.record.budget_rank, out.record.error
        ));
        bar.inc(1);
        Ok(out.record.clone())
    };
    // One fit per group; its other members get the same results under their own labels.
    let run = |group: &[usize]| -> Vec<(usize, Result<RunRecord>)> {
        let out = run_one(&spec.name, &pending[group[0]], &cache);
        let mut saved = vec![(group[0], save(&out))];
        for &i in &group[1..] {
            saved.push((i, save(&out.relabelled(&pending[i]))));
        }
        saved
    };
    let worker = || {
        let mut done = Vec::new();
        loop {
            let next = {
                let mut busy = busy.lock().expect("scheduler lock");
                let next = queue.lock().expect("scheduler lock").next();
                match next {
                    Some(_) => *busy += 1,
                    None => {
                        // Nothing left to start: this core goes idle, so give it to the runs still going.
                        crate::fit::fused::set_threads((cores / (*busy).max(1)).max(1));
                    }
                }
                next
            };
            let Some(group) = next else { break };
            done.extend(run(&group));
            *busy.lock().expect("scheduler lock") -= 1;
        }
        done
    };
    let mut outcomes: Vec<(usize, Result<RunRecord>)> = if cores > 1 && fits > 1 {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..cores.min(fits)).map(|_| scope.spawn(worker)).collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("study worker panicked"))
                .collect()
        })
    } else {
        worker()
    };
    crate::fit::fused::set_threads(0);
    drop(threads);
    bar.finish_and_clear();
    // Records in grid order, whatever order the runs finished in.
    outcomes.sort_by_key(|(i, _)| *i);
    let outcomes = outcomes.into_iter().map(|(_, o)| o);
    let mut records = Vec::with_capacity(pending.len());
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

/// A run's rough cost in floating-point operations: its iterations times the work of one (fits), plus the SVD
/// behind its metrics. Only the order matters.
pub fn estimated_cost(c: &RunConfig) -> f64 {
    let (m, n) = (c.rows as f64, c.cols as f64);
    let mn = m * n;
    let ranks: Vec<f64> = c.method.ranks().iter().map(|&r| r as f64).collect();
    let sum: f64 = ranks.iter().sum();
    let squares: f64 = ranks.iter().map(|r| r * r).sum();
    let fit = match &c.solver {
        SolverSpec::Svd => 0.0,
        // Forward products, then ∂B and ∂A: 6·m·n·Σr per step (a few m·n for full).
        SolverSpec::Adam(a) => a.steps as f64 * mn * (6.0 * sum).max(8.0),
        // LoRA-Pro: Adam's products plus its m×n equivalent gradient and moments.
        SolverSpec::LoraPro(p) => p.adam.steps as f64 * mn * (6.0 * sum + 8.0),
        // Each factor's Gram matrices: m·n·r(r+1); unweighted LoRA needs only the right-hand sides.
        SolverSpec::Als(a) => {
            let per_sweep = match &c.method {
                Method::Lora(_) => 8.0 * mn * sum,
                _ => 2.0 * mn * (squares + 3.0 * sum),
            };
            a.sweeps as f64 * per_sweep
        }
    };
    fit + 10.0 * mn * m.min(n)
}

/// Indices of `runs` grouped by [`RunConfig::fit_key`] (each group in grid order), the groups most expensive
/// first (ties in grid order of their first run).
fn same_fit_groups(runs: &[RunConfig]) -> Vec<Vec<usize>> {
    let mut slot: HashMap<String, usize> = HashMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        match slot.entry(run.fit_key()) {
            Entry::Occupied(g) => groups[*g.get()].push(i),
            Entry::Vacant(v) => {
                v.insert(groups.len());
                groups.push(vec![i]);
            }
        }
    }
    let costs: Vec<f64> = groups.iter().map(|g| estimated_cost(&runs[g[0]])).collect();
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by(|&a, &b| costs[b].total_cmp(&costs[a]));
    order
        .into_iter()
        .map(|g| std::mem::take(&mut groups[g]))
        .collect()
}
