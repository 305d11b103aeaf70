//! A comparison's report from its `results.csv` alone (so merged shards are reported the same way): `summary.md`,
//! `test-vs-budget.png` (test metric at the chosen lr with its 95 % interval, per method) and
//! `validation-vs-lr.png` (mean validation metric at every lr, per method and budget: the sensitivity).

use std::path::{Path, PathBuf};

use super::protocol::{paired, select};
use super::record::CellRecord;
use super::store::read_records;
use super::summary::render;
use crate::error::{AbbaError, Result};
use crate::report::intervals::{Axes, IntervalPoint, IntervalSeries, plot_intervals};

fn plot_err(path: &Path, e: anyhow::Error) -> AbbaError {
    AbbaError::Io {
        path: path.display().to_string(),
        message: format!("{e:#}"),
    }
}

/// Writes the report of `dir/results.csv` into `dir`; returns the files written.
pub fn write_reports(dir: &Path) -> Result<Vec<PathBuf>> {
    let records = read_records(&dir.join("results.csv"))?;
    if records.is_empty() {
        return Err(AbbaError::InvalidArgument(format!(
            "{} has no rows: run the comparison (or merge its shards) first",
            dir.join("results.csv").display()
        )));
    }
    write_reports_for(&records, dir)
}

/// The report of `records` (one task) into `dir`.
pub fn write_reports_for(records: &[CellRecord], dir: &Path) -> Result<Vec<PathBuf>> {
    let reference = records[0].reference.clone();
    let metric = records[0].metric.clone();
    let selected = select(records);
    let pairs = paired(&selected, &reference);
    let mut written = Vec::new();

    let summary = dir.join("summary.md");
    crate::io::write_atomic(
        &summary,
        render(records, &selected, &pairs, &reference).as_bytes(),
    )?;
    written.push(summary);

    // Test metric against budget, one series per method; full fine-tuning is a flat series over the budgets.
    let budgets: Vec<usize> = {
        let mut b: Vec<usize> = selected
            .iter()
            .map(|s| s.budget_rank)
            .filter(|&b| b > 0)
            .collect();
        b.sort_unstable();
        b.dedup();
        b
    };
    let mut by_method: Vec<IntervalSeries> = Vec::new();
    for s in &selected {
        let Some(iv) = s.interval else { continue };
        let point = |x: usize| IntervalPoint {
            x: x as f64,
            y: iv.mean,
            low: iv.low(),
            high: iv.high(),
        };
        let xs: Vec<usize> = if s.budget_rank == 0 {
            budgets.clone()
        } else {
            vec![s.budget_rank]
        };
        let series = match by_method.iter_mut().find(|x| x.label == s.method) {
            Some(x) => x,
            None => {
                by_method.push(IntervalSeries {
                    label: s.method.clone(),
                    points: Vec::new(),
                });
                by_method.last_mut().expect("just pushed")
            }
        };
        series.points.extend(xs.into_iter().map(point));
    }
    // Methods side by side at each budget, so their intervals do not hide each other.
    let k = by_method.len() as f64;
    let log_x = budgets.len() > 1;
    for (i, series) in by_method.iter_mut().enumerate() {
        let offset = 0.04 * (i as f64 - (k - 1.0) / 2.0);
        for p in &mut series.points {
            p.x = if log_x {
                p.x * (1.0 + offset)
            } else {
                p.x + offset
            };
        }
    }
    if by_method.iter().any(|s| !s.points.is_empty()) {
        let path = dir.join("test-vs-budget.png");
        let title = format!(
            "{}: test {metric} at the lr chosen on validation (95 % t interval)",
            records[0].task
        );
        let y = format!("test {metric}");
        plot_intervals(
            Axes {
                title: &title,
                x_desc: "budget (LoRA rank with the same trainable parameters)",
                y_desc: &y,
                log_x,
            },
            &by_method,
            &path,
        )
        .map_err(|e| plot_err(&path, e))?;
        written.push(path);
    }

    // Validation metric against lr: one series per method × budget, mean over seeds with its interval.
    let sensitivity: Vec<IntervalSeries> = selected
        .iter()
        .map(|s| IntervalSeries {
            label: if s.budget_rank == 0 {
                s.method.clone()
            } else {
                format!("{} r={}", s.method, s.budget_rank)
            },
            points: s
                .trials
                .iter()
                .map(|t| {
                    let vs: Vec<f64> = t.validation.iter().map(|(_, v)| *v).collect();
                    let iv = crate::stats::t_interval(&vs, super::protocol::LEVEL);
                    IntervalPoint {
                        x: t.lr,
                        y: iv.mean,
                        low: iv.low(),
                        high: iv.high(),
                    }
                })
                .collect(),
        })
        .collect();
    if sensitivity
        .iter()
        .any(|s| s.points.iter().any(|p| p.y.is_finite()))
    {
        let path = dir.join("validation-vs-lr.png");
        let title = format!(
            "{}: validation {metric} against learning rate",
            records[0].task
        );
        let y = format!("validation {metric} (mean over seeds, 95 % t interval)");
        plot_intervals(
            Axes {
                title: &title,
                x_desc: "learning rate",
                y_desc: &y,
                log_x: true,
            },
            &sensitivity,
            &path,
        )
        .map_err(|e| plot_err(&path, e))?;
        written.push(path);
    }
    Ok(written)
}
