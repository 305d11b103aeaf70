//! `summary.md`: what a study measured, as tables; for Figure 2 targets, ours against the paper point by point.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::paper::paper_value;
use crate::study::record::{RunRecord, Status};

/// The four panels of Figure 2, by target-name prefix.
pub const FIG2_PANELS: [&str; 4] = ["orthogonal", "low-rank", "sparse", "random"];

pub fn panel_of(target: &str) -> Option<&'static str> {
    FIG2_PANELS.iter().copied().find(|p| target.starts_with(p))
}

fn ok(records: &[RunRecord]) -> impl Iterator<Item = &RunRecord> {
    records
        .iter()
        .filter(|r| r.status == Status::Ok && r.error.is_finite())
}

type DeltaStepsSeconds = (f64, f64, f64);

/// Mean over seeds of (error, steps, seconds) for one (target, method, rule, solver, budget rank).
type Key = (String, String, String, String, usize);

fn averaged(records: &[RunRecord]) -> BTreeMap<Key, (f64, f64, f64, usize)> {
    let mut acc: BTreeMap<Key, (f64, f64, f64, usize)> = BTreeMap::new();
    for r in ok(records) {
        let key = (
            r.target.clone(),
            r.method.clone(),
            r.rule.clone(),
            r.solver.clone(),
            r.budget_rank,
        );
        let e = acc.entry(key).or_default();
        e.0 += r.error;
        e.1 += r.steps as f64;
        e.2 += r.wall_s;
        e.3 += 1;
    }
    acc.into_values_mut_mean()
}

trait MeanValues {
    fn into_values_mut_mean(self) -> Self;
}
impl MeanValues for BTreeMap<Key, (f64, f64, f64, usize)> {
    fn into_values_mut_mean(mut self) -> Self {
        for v in self.values_mut() {
            let n = v.3 as f64;
            *v = (v.0 / n, v.1 / n, v.2 / n, v.3);
        }
        self
    }
}

fn fmt_delta(ours: Option<f64>, paper: Option<f64>) -> String {
    match (ours, paper) {
        (Some(o), Some(p)) => format!("{:+.3}", o - p),
        _ => "–".into(),
    }
}

fn fmt_opt(x: Option<f64>) -> String {
    x.map_or("–".into(), |v| format!("{v:.3}"))
}

/// The best (lowest-error) ABBA solver for a rule at one rank of one target.
fn best_abba(
    avg: &BTreeMap<Key, (f64, f64, f64, usize)>,
    target: &str,
    rule: &str,
    r: usize,
) -> Option<(f64, String)> {
    avg.iter()
        .filter(|((t, m, ru, _, rank), _)| t == target && m == "abba" && ru == rule && *rank == r)
        .map(|((_, _, _, solver, _), v)| (v.0, solver.clone()))
        .min_by(|a, b| a.0.total_cmp(&b.0))
}

pub fn render(records: &[RunRecord]) -> String {
    let mut out = String::new();
    let study = records.first().map_or("(empty)", |r| r.study.as_str());
    let count = |s: Status| records.iter().filter(|r| r.status == s).count();
    let _ = writeln!(out, "# Study `{study}`\n");
    let mut versions: Vec<String> = records
        .iter()
        .map(|r| format!("abba {} ({})", r.crate_version, r.git_commit))
        .collect();
    versions.sort();
    versions.dedup();
    let _ = writeln!(
        out,
        "{} runs: {} ok, {} diverged, {} failed. Code: {}. Errors are ‖T − T̂‖²_F / ‖T‖²_F; seconds are wall-clock \
         on the machine that ran the study, with runs in parallel.\n",
        records.len(),
        count(Status::Ok),
        count(Status::Diverged),
        count(Status::Failed),
        versions.join(", ")
    );
    let avg = averaged(records);
    let targets: Vec<String> = {
        let mut t: Vec<String> = records.iter().map(|r| r.target.clone()).collect();
        t.sort();
        t.dedup();
        t
    };
    let ranks = |target: &str| {
        let mut r: Vec<usize> = ok(records)
            .filter(|x| x.target == target)
            .map(|x| x.budget_rank)
            .collect();
        r.sort();
        r.dedup();
        r
    };

    let fig2_targets: Vec<&String> = targets.iter().filter(|t| panel_of(t).is_some()).collect();
    if !fig2_targets.is_empty() {
        let _ = writeln!(out, "## Figure 2: ours against the paper\n");
        let _ = writeln!(
            out,
            "Paper values are read off the figure (±0.003). `half`: r1 = r2 = r/2, the paper's stated equal budget; \
             `full`: r1 = r2 = r, what the released code does (twice the parameters). For ABBA the best of our \
             solvers at each rank is shown, with its name. Δ = ours − paper.\n"
        );
        for target in &fig2_targets {
            let panel = panel_of(target).expect("filtered");
            let _ = writeln!(out, "### {target}\n");
            let _ = writeln!(
                out,
                "| r | paper LoRA | ours LoRA (svd) | Δ | paper ABBA | ours ABBA half | Δ | ours ABBA full | Δ |\n|---|---|---|---|---|---|---|---|---|"
            );
            for r in ranks(target) {
                let lora = avg
                    .get(&(
                        (*target).clone(),
                        "lora".into(),
                        String::new(),
                        "svd".into(),
                        r,
                    ))
                    .map(|v| v.0);
                let half = best_abba(&avg, target, "half", r);
                let full = best_abba(&avg, target, "full", r);
                let (pl, pa) = (paper_value(panel, r, "lora"), paper_value(panel, r, "abba"));
                let show = |x: &Option<(f64, String)>| {
                    x.as_ref()
                        .map_or("–".into(), |(e, s)| format!("{e:.3} ({s})"))
                };
                let _ = writeln!(
                    out,
                    "| {r} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    fmt_opt(pl),
                    fmt_opt(lora),
                    fmt_delta(lora, pl),
                    fmt_opt(pa),
                    show(&half),
                    fmt_delta(half.as_ref().map(|h| h.0), pa),
                    show(&full),
                    fmt_delta(full.as_ref().map(|h| h.0), pa),
                );
            }
            let _ = writeln!(out);
        }
    }

    if !fig2_targets.is_empty() {
        let _ = writeln!(out, "### Distance to the paper's ABBA values\n");
        let _ = writeln!(
            out,
            "Over every (panel, r) point that both have; Δ = ours − paper.\n"
        );
        let _ = writeln!(
            out,
            "| rule | solver | points | mean Δ | min Δ | max Δ | mean steps | mean seconds |\n|---|---|---|---|---|---|---|---|"
        );
        // (rule, solver) → [(Δ, steps, seconds)]
        let mut groups: BTreeMap<(String, String), Vec<DeltaStepsSeconds>> = BTreeMap::new();
        for ((target, method, rule, solver, r), (error, steps, secs, _)) in &avg {
            let paper = panel_of(target).and_then(|p| paper_value(p, *r, "abba"));
            if let (true, Some(p)) = (method == "abba", paper) {
                groups
                    .entry((rule.clone(), solver.clone()))
                    .or_default()
                    .push((error - p, *steps, *secs));
            }
        }
        for ((rule, solver), d) in &groups {
            let n = d.len() as f64;
            let mean = |f: fn(&(f64, f64, f64)) -> f64| d.iter().map(f).sum::<f64>() / n;
            let min = d.iter().map(|x| x.0).fold(f64::INFINITY, f64::min);
            let max = d.iter().map(|x| x.0).fold(f64::NEG_INFINITY, f64::max);
            let _ = writeln!(
                out,
                "| {rule} | {solver} | {} | {:+.3} | {min:+.3} | {max:+.3} | {:.0} | {:.1} |",
                d.len(),
                mean(|x| x.0),
                mean(|x| x.1),
                mean(|x| x.2)
            );
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "## Every solver\n");
    let _ = writeln!(
        out,
        "Mean over seeds. Steps are Adam steps or ALS sweeps.\n"
    );
    let _ = writeln!(
        out,
        "| target | method | rule | solver | r | error | steps | seconds |\n|---|---|---|---|---|---|---|---|"
    );
    for ((target, method, rule, solver, r), (error, steps, secs, _)) in &avg {
        let _ = writeln!(
            out,
            "| {target} | {method} | {rule} | {solver} | {r} | {error:.4} | {steps:.0} | {secs:.1} |"
        );
    }
    let problems: Vec<&RunRecord> = records.iter().filter(|r| r.status != Status::Ok).collect();
    if !problems.is_empty() {
        let _ = writeln!(
            out,
            "\n## Runs that did not finish\n\n| run | target | method | solver | r | status | reason |\n|---|---|---|---|---|---|---|"
        );
        for r in problems {
            let status = format!("{:?}", r.status).to_lowercase();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {status} | {} |",
                r.run_id,
                r.target,
                r.method,
                r.solver,
                r.budget_rank,
                r.reason.replace('|', "/")
            );
        }
    }
    out
}
