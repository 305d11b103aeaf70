//! For studies of a model's fine-tuning update (`delta` targets, one per projection): how much of the update each
//! adapter family can represent at each budget, by projection type and by layer, beside two references computed
//! from each target's own spectrum — the best rank-r matrix (Eckart–Young, what LoRA at the budget reaches at
//! best) and the best rank-r1·r2 matrix (the most an ABBA with those ranks could reach if rank were all that
//! limited it).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use super::ranking::Spectra;
use crate::study::record::{RunRecord, Status};

/// (layer, projection type) of a delta target's name: `delta:layers.3.q_proj` → (3, `q_proj`). Names without a
/// layer number (or targets that are not deltas) give None.
pub fn layer_and_projection(target: &str) -> Option<(usize, String)> {
    let module = target.strip_prefix("delta:")?;
    let parts: Vec<&str> = module.split('.').collect();
    let layer = parts
        .iter()
        .position(|p| *p == "layers" || *p == "layer" || *p == "h" || *p == "blocks")
        .and_then(|i| parts.get(i + 1))
        .and_then(|p| p.parse().ok())?;
    Some((layer, parts.last()?.to_string()))
}

/// Fraction of ‖T‖²_F outside the best rank-k approximation, from T's singular values.
fn tail_energy(sigma: &[f64], k: usize) -> f64 {
    let total: f64 = sigma.iter().map(|s| s * s).sum();
    if total == 0.0 {
        return f64::NAN;
    }
    // `+ 0.0` turns the −0.0 an empty float sum starts from into 0.
    (sigma.iter().skip(k).map(|s| s * s).sum::<f64>() + 0.0) / total
}

/// A row of the tables: a method (with its ABBA rule) or a reference (names starting with `_`, shown first).
type Row = String;

const EY_ROW: &str = "best rank r (Eckart–Young)";
const R1R2_ROW: &str = "best rank r1·r2 (ABBA's rank)";

/// Mean normalised error per (row, budget, target): each method's best solver (lowest mean over seeds).
fn best_errors(
    records: &[RunRecord],
    spectra: &Spectra,
) -> BTreeMap<(usize, Row), BTreeMap<String, f64>> {
    let mut sums: BTreeMap<(usize, Row, String, String), (f64, usize)> = BTreeMap::new();
    let mut references: BTreeMap<(usize, Row), BTreeMap<String, f64>> = BTreeMap::new();
    for r in records
        .iter()
        .filter(|r| r.status == Status::Ok && r.error.is_finite())
        .filter(|r| layer_and_projection(&r.target).is_some())
    {
        let row = if r.rule.is_empty() {
            r.method.clone()
        } else {
            format!("{} ({})", r.method, r.rule)
        };
        let e = sums
            .entry((r.budget_rank, row, r.target.clone(), r.solver.clone()))
            .or_default();
        e.0 += r.error;
        e.1 += 1;
        if let Some(points) = spectra.get(&r.run_id).filter(|p| !p.is_empty()) {
            let sigma: Vec<f64> = points.iter().map(|p| p.target).collect();
            let refs = [
                (EY_ROW, r.budget_rank),
                (R1R2_ROW, if r.method == "abba" { r.r1 * r.r2 } else { 0 }),
            ];
            for (name, k) in refs.into_iter().filter(|(_, k)| *k > 0) {
                references
                    .entry((r.budget_rank, format!("_{name}")))
                    .or_default()
                    .insert(r.target.clone(), tail_energy(&sigma, k));
            }
        }
    }
    let mut best: BTreeMap<(usize, Row), BTreeMap<String, f64>> = BTreeMap::new();
    for ((budget, row, target, _), (sum, n)) in sums {
        let mean = sum / n as f64;
        let slot = best
            .entry((budget, row))
            .or_default()
            .entry(target)
            .or_insert(f64::INFINITY);
        *slot = slot.min(mean);
    }
    best.extend(references);
    best
}

/// "r = 4: 4, r = 8: 16" — ABBA's r1·r2 at each budget of the study.
fn abba_ranks(records: &[RunRecord]) -> String {
    let ranks: BTreeMap<usize, usize> = records
        .iter()
        .filter(|r| r.method == "abba" && r.status == Status::Ok)
        .map(|r| (r.budget_rank, r.r1 * r.r2))
        .collect();
    if ranks.is_empty() {
        return "– (no ABBA run)".into();
    }
    ranks
        .iter()
        .map(|(b, k)| format!("{k} at r = {b}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Mean error over every delta target against the budget, one line per method and reference, to `out`; false
/// when the study has no delta targets.
pub fn plot(
    records: &[RunRecord],
    spectra: &Spectra,
    out: &std::path::Path,
) -> anyhow::Result<bool> {
    use super::intervals::{Axes, IntervalPoint, IntervalSeries, plot_intervals};
    let errors = best_errors(records, spectra);
    if errors.is_empty() {
        return Ok(false);
    }
    let mut series: BTreeMap<&str, Vec<IntervalPoint>> = BTreeMap::new();
    for ((budget, row), m) in &errors {
        let mean = m.values().sum::<f64>() / m.len() as f64;
        series.entry(row).or_default().push(IntervalPoint {
            x: *budget as f64,
            y: mean,
            low: mean,
            high: mean,
        });
    }
    let series: Vec<IntervalSeries> = series
        .into_iter()
        .map(|(row, points)| IntervalSeries {
            label: row.strip_prefix('_').unwrap_or(row).to_string(),
            points,
        })
        .collect();
    plot_intervals(
        Axes {
            title: "fine-tuning update: error of each adapter, mean over tensors",
            x_desc: "budget (LoRA rank r)",
            y_desc: "‖ΔW − T‖² / ‖T‖²",
            log_x: true,
        },
        &series,
        out,
    )?;
    Ok(true)
}

fn fmt(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.4}"),
        _ => "–".into(),
    }
}

/// The markdown section, or an empty string when the study has no delta targets with a layer number.
pub fn render(records: &[RunRecord], spectra: &Spectra) -> String {
    let errors = best_errors(records, spectra);
    if errors.is_empty() {
        return String::new();
    }
    let targets: BTreeSet<String> = errors.values().flat_map(|m| m.keys().cloned()).collect();
    let parsed: BTreeMap<&String, (usize, String)> = targets
        .iter()
        .filter_map(|t| layer_and_projection(t).map(|lp| (t, lp)))
        .collect();
    let projections: BTreeSet<&str> = parsed.values().map(|(_, p)| p.as_str()).collect();
    let layers: BTreeSet<usize> = parsed.values().map(|(l, _)| *l).collect();
    let budgets: BTreeSet<usize> = errors.keys().map(|(b, _)| *b).collect();

    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## The fine-tuning update, by projection and layer\n\n{} tensors ({} projection types × {} layers). \
         Normalised error ‖ΔW − T‖²_F / ‖T‖²_F, mean over seeds, each method at its best solver; a column is the \
         mean over the tensors it groups. The references are computed from each target's singular values: \
         `best rank r` is Eckart–Young at the budget's LoRA rank r, `best rank r1·r2` the best matrix of ABBA's \
         rank at that budget (r1·r2 = {}) — the most any update of that rank could reach. \
         `delta-by-budget.png` plots the `all` column against the budget.",
        targets.len(),
        projections.len(),
        layers.len(),
        abba_ranks(records)
    );
    for budget in budgets {
        let rows: Vec<(&Row, &BTreeMap<String, f64>)> = errors
            .iter()
            .filter(|((b, _), _)| *b == budget)
            .map(|((_, row), m)| (row, m))
            .collect();
        let mean_over = |m: &BTreeMap<String, f64>, keep: &dyn Fn(&(usize, String)) -> bool| {
            let vals: Vec<f64> = m
                .iter()
                .filter(|(t, _)| parsed.get(t).is_some_and(keep))
                .map(|(_, v)| *v)
                .collect();
            (!vals.is_empty()).then(|| vals.iter().sum::<f64>() / vals.len() as f64)
        };
        let show = |row: &str| row.strip_prefix('_').unwrap_or(row).to_string();
        // Each column groups the tensors whose (layer, projection) it keeps.
        type Column<'a> = (String, Box<dyn Fn(&(usize, String)) -> bool + 'a>);
        let by_projection: Vec<Column> = projections
            .iter()
            .map(|&p| -> Column { (p.to_string(), Box::new(move |lp| lp.1 == p)) })
            .chain(std::iter::once((
                "all".to_string(),
                Box::new(|_: &(usize, String)| true) as Box<dyn Fn(&(usize, String)) -> bool>,
            )))
            .collect();
        let by_layer: Vec<Column> = layers
            .iter()
            .map(|&l| -> Column { (format!("layer {l}"), Box::new(move |lp| lp.0 == l)) })
            .collect();
        for (title, columns) in [
            ("by projection type", by_projection),
            ("by layer", by_layer),
        ] {
            let _ = writeln!(out, "\n### Budget r = {budget}: {title}\n");
            let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
            let _ = writeln!(
                out,
                "| method | {} |\n|---|{}",
                names.join(" | "),
                "---|".repeat(columns.len())
            );
            for (row, m) in &rows {
                let cells: Vec<String> = columns
                    .iter()
                    .map(|(_, keep)| fmt(mean_over(m, keep.as_ref())))
                    .collect();
                let _ = writeln!(out, "| {} | {} |", show(row), cells.join(" | "));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_and_projection_come_from_the_module_path() {
        assert_eq!(
            layer_and_projection("delta:layers.3.q_proj"),
            Some((3, "q_proj".into()))
        );
        assert_eq!(
            layer_and_projection("delta:encoder.layer.0.attention.self.query"),
            Some((0, "query".into()))
        );
        assert_eq!(layer_and_projection("delta:lm_head"), None);
        assert_eq!(layer_and_projection("random"), None);
    }

    #[test]
    fn tail_energy_is_the_eckart_young_error() {
        let sigma = [3.0, 2.0, 1.0];
        assert_eq!(tail_energy(&sigma, 0), 1.0);
        assert!((tail_energy(&sigma, 1) - 5.0 / 14.0).abs() < 1e-15);
        assert!(tail_energy(&sigma, 3).is_sign_positive() && tail_energy(&sigma, 3) == 0.0);
    }
}
