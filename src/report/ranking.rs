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

/// One target and budget: method label → solver → its runs.
type Cell<'a> = BTreeMap<String, BTreeMap<String, Vec<&'a RunRecord>>>;

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
    // An empty float sum is −0.0: start from +0.0 so "nothing left" prints as 0.
    let tail: f64 = sigma.iter().skip(k).fold(0.0, |acc, s| acc + s * s);
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
    // (target, budget) → label → solver → runs.
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
    out.push_str(&solver_gaps(&cells));
    out
}

/// Where a method ran under several solvers, how far each stops above the best of them: a budgeted protocol
/// (a fixed number of Adam steps, say) that stops short of what a converged solver reaches shows here.
fn solver_gaps(cells: &BTreeMap<(String, usize), Cell<'_>>) -> String {
    let mut lines = Vec::new();
    for ((target, budget), by_method) in cells {
        for (label, by_solver) in by_method {
            if by_solver.len() < 2 {
                continue;
            }
            let means: Vec<(&String, f64)> = by_solver
                .iter()
                .map(|(solver, runs)| {
                    (
                        solver,
                        stat(&runs.iter().map(|r| r.error).collect::<Vec<_>>()).mean,
                    )
                })
                .collect();
            let best = means.iter().map(|m| m.1).fold(f64::INFINITY, f64::min);
            for (solver, mean) in &means {
                lines.push(format!(
                    "| {target} | {budget} | {label} | {solver} | {mean:.4} | {:+.4} |",
                    mean - best
                ));
            }
        }
    }
    if lines.is_empty() {
        return String::new();
    }
    format!(
        "## Solvers side by side\n\nEach method that ran under several solvers: its mean error under each and how far that is above \
         the best of them (0 for the best). A positive gap is where that solver's protocol stops short of what the \
         method can reach.\n\n| target | budget r | method | solver | error | above best |\n|---|---|---|---|---|---|\n{}\n",
        lines.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, method: &str, solver: &str, error: f64) -> RunRecord {
        RunRecord {
            run_id: id.into(),
            target: "t".into(),
            rows: 4,
            cols: 4,
            method: method.into(),
            budget_rank: 1,
            solver: solver.into(),
            status: Status::Ok,
            error,
            config: r#"{"method":{"method":"lora","r":1}}"#.into(),
            ..RunRecord::default()
        }
    }

    #[test]
    fn methods_rank_by_their_best_solver_and_gaps_are_against_it() {
        let records = vec![
            run("a", "lora", "svd", 0.5),
            run("b", "lora", "adam", 0.7),
            run("c", "abba", "adam", 0.4),
        ];
        let spectra: Spectra = ["a", "b", "c"]
            .iter()
            .map(|id| {
                let points = [2.0, 1.0, 1.0, 0.0]
                    .iter()
                    .enumerate()
                    .map(|(index, &s)| SpectrumPoint {
                        index,
                        target: s,
                        fit: s,
                    })
                    .collect();
                (id.to_string(), points)
            })
            .collect();
        let text = render(&records, &spectra);
        // abba (0.4) above lora at its best solver, svd (0.5); EY at rank 1 is (1 + 1)/(4 + 1 + 1) = 1/3.
        let abba = text.find("| 1 | abba").expect("abba first");
        let lora = text
            .find("| 2 | lora | svd | 0.5000")
            .expect("lora second, at svd");
        assert!(abba < lora, "{text}");
        assert!(text.contains("EY@r = 0.3333"), "{text}");
        // Rank 4 leaves nothing of the spectrum: +0, not −0.
        assert_eq!(eckart_young(&[2.0, 1.0], 4).to_string(), "0");
        assert!(
            text.contains("| t | 1 | lora | adam | 0.7000 | +0.2000 |"),
            "{text}"
        );
        assert!(
            text.contains("| t | 1 | lora | svd | 0.5000 | +0.0000 |"),
            "{text}"
        );
        assert!(
            !text.contains("| abba | adam | 0.4000 | +"),
            "a single solver has no gap row"
        );
    }
}
