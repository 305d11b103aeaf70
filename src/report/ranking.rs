//! The leaderboard section of `summary.md`: at each target and budget, every method ranked by its error (its best
//! solver, mean ± sd over seeds), with the parameters it reached beside the budget, and two references from the
//! target's spectrum: LoRA's Eckart–Young error at the budget's rank, and the best error any matrix of the
//! method's maximum rank could reach. Also KRAdapter's two metrics: ‖ΔW − T‖_F and mean |σ_i(ΔW) − σ_i(T)|.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::adapter::Method;
use crate::study::record::{RunRecord, SpectrumPoint, Status};

/// Per run: its spectrum (target and fit singular values, index by index).
pub type Spectra = BTreeMap<String, Vec<SpectrumPoint>>;

/// The method as a record names it, with its ABBA rule.
fn entry_label(r: &RunRecord) -> String {
    match r.rule.as_str() {
        "" => r.method.clone(),
        rule => format!("{} {rule}", r.method),
    }
}

/// ‖T − T_k‖²_F / ‖T‖²_F for the best rank-k approximation T_k (Eckart–Young), from T's singular values.
fn eckart_young(sigma: &[f64], k: usize) -> f64 {
    let total: f64 = sigma.iter().map(|s| s * s).sum();
    let tail: f64 = sigma.iter().skip(k).map(|s| s * s).sum();
    if total > 0.0 { tail / total } else { f64::NAN }
}

struct Stat {
    mean: f64,
    sd: f64,
    n: usize,
}

fn stat(x: &[f64]) -> Stat {
    let n = x.len();
    let mean = x.iter().sum::<f64>() / n.max(1) as f64;
    let sd = if n > 1 {
        (x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1) as f64).sqrt()
    } else {
        0.0
    };
    Stat { mean, sd, n }
}

/// The method's rank bound on the run's layer, from its recorded sizes.
fn max_rank_of(r: &RunRecord) -> Option<usize> {
    let cfg: serde_json::Value = serde_json::from_str(&r.config).ok()?;
    Method::from_sizes_json(cfg.get("method")?).map(|m| m.max_rank((r.rows, r.cols)))
}

/// The leaderboard tables, or nothing when the study compares fewer than two methods.
pub fn render(records: &[RunRecord], spectra: &Spectra) -> String {
    let ok: Vec<&RunRecord> = records
        .iter()
        .filter(|r| r.status == Status::Ok && r.error.is_finite())
        .collect();
    let methods: std::collections::BTreeSet<String> = ok.iter().map(|r| entry_label(r)).collect();
    if methods.len() < 2 {
        return String::new();
    }
    let mut out = String::new();
    let _ = writeln!(out, "## Leaderboard\n");
    let _ = writeln!(
        out,
        "Each method at its best solver (lowest mean error), mean ± sd over seeds (targets are redrawn per seed). \
         `params` is what the method reached against the budget (LoRA's r·(m+n)); `EY@r` is LoRA's Eckart–Young \
         optimum at the budget rank; `best@max rank` is the least error any matrix of the method's maximum rank can \
         have — a method cannot go below it. ‖ΔW − T‖_F and mean |σ_i(ΔW) − σ_i(T)| are KRAdapter's metrics.\n"
    );
    // (target, budget) → label → solver → errors, with one record kept for its sizes.
    type Cell<'a> = BTreeMap<String, BTreeMap<String, Vec<&'a RunRecord>>>;
    let mut cells: BTreeMap<(String, usize), Cell> = BTreeMap::new();
    for r in &ok {
        cells
            .entry((r.target.clone(), r.budget_rank))
            .or_default()
            .entry(entry_label(r))
            .or_default()
            .entry(r.solver.clone())
            .or_default()
            .push(r);
    }
    for ((target, budget), by_method) in &cells {
        let any = by_method.values().flat_map(|s| s.values()).flatten().next();
        let Some(any) = any else { continue };
        let sigma: Vec<f64> = spectra
            .get(&any.run_id)
            .map(|s| s.iter().map(|p| p.target).collect())
            .unwrap_or_default();
        let target_norm = sigma.iter().map(|s| s * s).sum::<f64>().sqrt();
        let budget_params = budget * (any.rows + any.cols);
        let _ = writeln!(
            out,
            "### {target}, budget LoRA r = {budget} ({budget_params} parameters)\n\n\
             EY@r = {:.4}.\n\n\
             | # | method | solver | error | runs | params | max rank | best@max rank | ‖ΔW − T‖_F | mean \\|Δσ\\| |\n\
             |---|---|---|---|---|---|---|---|---|---|",
            eckart_young(&sigma, *budget)
        );
        let mut rows: Vec<(f64, String)> = Vec::new();
        for (label, by_solver) in by_method {
            let (solver, runs, s) = by_solver
                .iter()
                .map(|(solver, runs)| {
                    let s = stat(&runs.iter().map(|r| r.error).collect::<Vec<_>>());
                    (solver, runs, s)
                })
                .min_by(|a, b| a.2.mean.total_cmp(&b.2.mean))
                .expect("every method has a solver");
            let frob = stat(
                &runs
                    .iter()
                    .map(|r| r.rel_frob * target_norm)
                    .collect::<Vec<_>>(),
            );
            let dsig: Vec<f64> = runs
                .iter()
                .filter_map(|r| spectra.get(&r.run_id))
                .map(|sp| {
                    sp.iter().map(|p| (p.fit - p.target).abs()).sum::<f64>()
                        / sp.len().max(1) as f64
                })
                .collect();
            let dsig = stat(&dsig);
            let r0 = runs[0];
            let max_rank = max_rank_of(r0);
            let best = max_rank.map_or("–".into(), |k| format!("{:.4}", eckart_young(&sigma, k)));
            rows.push((
                s.mean,
                format!(
                    "| {label} | {solver} | {:.4} ± {:.4} | {} | {} | {} | {best} | {:.2} | {:.3} |",
                    s.mean,
                    s.sd,
                    s.n,
                    r0.params,
                    max_rank.map_or("–".into(), |k| k.to_string()),
                    frob.mean,
                    dsig.mean,
                ),
            ));
        }
        rows.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (i, (_, row)) in rows.iter().enumerate() {
            let _ = writeln!(out, "| {} {row}", i + 1);
        }
        let _ = writeln!(out);
    }
    out
}
