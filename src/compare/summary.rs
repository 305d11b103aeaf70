//! `summary.md` of a comparison: per budget, each method's chosen lr (on validation), its test metric as mean ± sd
//! with the 95 % Student-t interval over seeds, and its paired difference from the reference with the p-value of
//! a paired t-test; then the validation metric at every lr tried (the sensitivity behind the choice).

use std::fmt::Write as _;

use super::protocol::{LEVEL, Paired, Selected};
use super::record::{CellRecord, CellStatus};

fn num(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e5) {
        format!("{v:.3e}")
    } else {
        format!("{v:.4}")
    }
}

fn budget_name(b: usize) -> String {
    if b == 0 {
        "full".into()
    } else {
        format!("r = {b}")
    }
}

/// The markdown summary of one task's rows.
pub fn render(
    records: &[CellRecord],
    selected: &[Selected],
    paired: &[Paired],
    reference: &str,
) -> String {
    let mut md = String::new();
    let first = records.first();
    let task = first.map_or("", |r| r.task.as_str());
    let metric = first.map_or("", |r| r.metric.as_str());
    let higher_is_better = first.is_some_and(|r| r.higher_is_better);
    let direction = if higher_is_better {
        "higher is better"
    } else {
        "lower is better"
    };
    let count = |s: CellStatus| records.iter().filter(|r| r.status == s).count();
    let seeds: std::collections::BTreeSet<u64> = records.iter().map(|r| r.seed).collect();
    let _ = writeln!(md, "# Comparison: {task}\n");
    let _ = writeln!(
        md,
        "Metric: **{metric}** ({direction}). {} cells: {} ok, {} diverged, {} failed; seeds {:?}.\n",
        records.len(),
        count(CellStatus::Ok),
        count(CellStatus::Diverged),
        count(CellStatus::Failed),
        seeds
    );
    let _ = writeln!(
        md,
        "Protocol: the lr of each method × budget is the one with the best mean **validation** {metric} over \
         seeds (an lr where a seed failed or diverged ranks last); the table gives the **test** {metric} at that \
         lr: mean ± sd over seeds and the {:.0} % Student-t interval. Δ is the per-seed paired difference \
         (method − {reference}, same seeds) with its {:.0} % interval and the two-sided paired t-test p-value; \
         * marks p < 0.05. Full fine-tuning has no budget: its row is repeated under each budget.\n",
        100.0 * LEVEL,
        100.0 * LEVEL
    );
    let mut budgets: Vec<usize> = selected
        .iter()
        .map(|s| s.budget_rank)
        .filter(|&b| b > 0)
        .collect();
    budgets.sort_unstable();
    budgets.dedup();
    if budgets.is_empty() {
        budgets.push(0);
    }
    // The MNIST toy also records accuracy kept on the pretraining digits (forgetting).
    let has_kept = records.iter().any(|r| r.test_kept.is_finite());
    let kept = |s: &Selected| -> String {
        let vs: Vec<f64> = records
            .iter()
            .filter(|r| {
                r.method == s.method
                    && r.budget_rank == s.budget_rank
                    && Some(r.lr) == s.lr
                    && r.status == CellStatus::Ok
                    && r.test_kept.is_finite()
            })
            .map(|r| r.test_kept)
            .collect();
        let iv = crate::stats::t_interval(&vs, LEVEL);
        format!(" {} ± {} |", num(iv.mean), num(iv.sd))
    };
    for b in budgets {
        let _ = writeln!(md, "## Budget {}\n", budget_name(b));
        let _ = writeln!(
            md,
            "| method | params | lr (chosen on validation) | validation at lr | test mean ± sd | 95 % interval | n | \
             Δ vs {reference} | Δ 95 % interval | p |{}\n|---|---|---|---|---|---|---|---|---|---|{}",
            if has_kept {
                " kept on 0–7 (test accuracy) |"
            } else {
                ""
            },
            if has_kept { "---|" } else { "" }
        );
        // Full fine-tuning, then the reference, then the others from best to worst test mean (none last).
        let mut rows: Vec<&Selected> = selected
            .iter()
            .filter(|s| s.budget_rank == b || s.budget_rank == 0)
            .collect();
        let sign = if higher_is_better { -1.0 } else { 1.0 };
        rows.sort_by(|x, y| {
            let rank = |s: &Selected| {
                let mean = s.interval.as_ref().map_or(f64::NAN, |iv| iv.mean);
                (
                    u8::from(s.budget_rank != 0) + u8::from(s.method != reference),
                    if mean.is_finite() {
                        sign * mean
                    } else {
                        f64::INFINITY
                    },
                )
            };
            let (a, b) = (rank(x), rank(y));
            a.0.cmp(&b.0).then(a.1.total_cmp(&b.1))
        });
        for s in rows {
            let lr = s.lr.map_or("–".into(), |v| format!("{v:e}"));
            let val =
                s.lr.and_then(|lr| s.trials.iter().find(|t| t.lr == lr))
                    .map_or("–".into(), |t| num(t.mean()));
            let (mean_sd, ci, n) = match &s.interval {
                Some(iv) => (
                    format!("{} ± {}", num(iv.mean), num(iv.sd)),
                    format!("[{}, {}]", num(iv.low()), num(iv.high())),
                    iv.n,
                ),
                None => ("–".into(), "–".into(), 0),
            };
            let p = paired
                .iter()
                .find(|p| p.method == s.method && p.budget_rank == b);
            let (diff, dci, pv) = match p {
                Some(p) if p.seeds > 0 => (
                    num(p.test.diff.mean),
                    format!("[{}, {}]", num(p.test.diff.low()), num(p.test.diff.high())),
                    format!(
                        "{}{}",
                        num(p.test.p),
                        if p.test.p < 0.05 { " *" } else { "" }
                    ),
                ),
                _ if s.method == reference => ("(reference)".into(), String::new(), String::new()),
                _ => ("–".into(), "–".into(), "–".into()),
            };
            let _ = writeln!(
                md,
                "| {} | {} | {lr} | {val} | {mean_sd} | {ci} | {n} | {diff} | {dci} | {pv} |{}",
                s.method,
                s.params,
                if has_kept { kept(s) } else { String::new() }
            );
        }
        let _ = writeln!(md);
        // A method with no result says why (e.g. a budget its discrete sizes cannot reach).
        for s in selected
            .iter()
            .filter(|s| s.budget_rank == b && s.interval.is_none())
        {
            if let Some(r) = records.iter().find(|r| {
                r.method == s.method && r.budget_rank == b && r.status == CellStatus::Failed
            }) {
                let _ = writeln!(md, "- **{}** has no result: {}", s.method, r.reason);
            }
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(md, "## Validation {metric} at every lr (mean over seeds)\n");
    let _ = writeln!(
        md,
        "| method | budget | lr | validation mean | seeds ok |\n|---|---|---|---|---|"
    );
    for s in selected {
        for t in &s.trials {
            let ok = t.validation.iter().filter(|(_, v)| v.is_finite()).count();
            let mark = if Some(t.lr) == s.lr { " ←" } else { "" };
            let _ = writeln!(
                md,
                "| {} | {} | {:e}{mark} | {} | {ok}/{} |",
                s.method,
                budget_name(s.budget_rank),
                t.lr,
                num(t.mean()),
                t.validation.len()
            );
        }
    }
    let edges: Vec<String> = selected
        .iter()
        .filter(|s| s.trials.len() > 1)
        .filter(|s| {
            s.lr.is_some_and(|lr| lr == s.trials[0].lr || lr == s.trials[s.trials.len() - 1].lr)
        })
        .map(|s| format!("{} ({})", s.method, budget_name(s.budget_rank)))
        .collect();
    if !edges.is_empty() {
        let _ = writeln!(
            md,
            "\n**The chosen lr is at the edge of its grid** for {}: the best lr may lie outside it; widen the \
             grid there (every method keeps the same number of trials).",
            edges.join(", ")
        );
    }
    let failed: Vec<&CellRecord> = records
        .iter()
        .filter(|r| r.status == CellStatus::Failed)
        .collect();
    if !failed.is_empty() {
        let _ = writeln!(md, "\n## Failed cells\n");
        for r in failed {
            let _ = writeln!(md, "- `{}`: {}", r.cell_id, r.reason);
        }
    }
    md
}
