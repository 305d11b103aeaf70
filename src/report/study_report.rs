//! Everything drawn and written for a finished (or merged) study directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::summary::{panel_of, render};
use super::{plot_convergence, plot_fig2, plot_spectra, round_off_floor};
use crate::io::write_atomic;
use crate::study::record::{RunRecord, Status};
use crate::study::store::{read_curve, read_records, read_spectrum};

fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Plot titles fit the 1000-pixel-wide images at about 60 characters: longer target names keep their end, which
/// is what tells tensors of one model apart.
fn title(target: &str, what: &str) -> String {
    const MAX: usize = 60;
    let room = MAX.saturating_sub(what.chars().count() + 2);
    let n = target.chars().count();
    let name = if n > room {
        let tail: String = target.chars().skip(n - room.saturating_sub(1)).collect();
        format!("…{tail}")
    } else {
        target.to_string()
    };
    format!("{name}: {what}")
}

/// Studies over many tensors (a model's projections) get per-target plots for the first this many targets only;
/// the summary's tables cover all of them.
const MAX_TARGET_PLOTS: usize = 12;

fn series_label(r: &RunRecord) -> String {
    let rule = if r.rule.is_empty() {
        String::new()
    } else {
        format!(" {}", r.rule)
    };
    format!("{}{rule} {}", r.method, r.solver)
}

/// Reads `dir/results.csv` and writes the Figure 2 plot (when its targets are there), convergence and spectra
/// plots per target at the largest budget, and `summary.md`. Returns the paths written.
pub fn write_study_reports(dir: &Path) -> Result<Vec<PathBuf>> {
    let records = read_records(&dir.join("results.csv"))?;
    let runs_dir = dir.join("runs");
    let mut written = Vec::new();
    if records
        .iter()
        .any(|r| r.status == Status::Ok && panel_of(&r.target).is_some())
    {
        let (png, svg) = (dir.join("fig2.png"), dir.join("fig2.svg"));
        plot_fig2(&records, &png, Some(&svg)).context("drawing fig2")?;
        written.extend([png, svg]);
    }
    let mut by_target: BTreeMap<&str, Vec<&RunRecord>> = BTreeMap::new();
    for r in records.iter().filter(|r| r.status == Status::Ok) {
        by_target.entry(&r.target).or_default().push(r);
    }
    let n_targets = by_target.len();
    for (target, runs) in by_target.into_iter().take(MAX_TARGET_PLOTS) {
        let top = runs.iter().map(|r| r.budget_rank).max().unwrap_or(0);
        let at_top: Vec<&&RunRecord> = runs
            .iter()
            .filter(|r| r.budget_rank == top && r.seed == runs[0].seed)
            .collect();
        let mut curves = Vec::new();
        for r in at_top.iter().filter(|r| r.solver != "svd") {
            let curve = read_curve(&runs_dir, &r.run_id)?;
            if !curve.is_empty() {
                curves.push((series_label(r), curve));
            }
        }
        if !curves.is_empty() {
            let path = dir.join(format!("convergence-{}.png", file_safe(target)));
            plot_convergence(
                &title(target, &format!("convergence at r = {top}")),
                &curves,
                &path,
            )?;
            written.push(path);
        }
        let mut spectra = Vec::new();
        for r in &at_top {
            let spectrum = read_spectrum(&runs_dir, &r.run_id)?;
            if !spectrum.is_empty() {
                spectra.push((series_label(r), spectrum));
            }
        }
        if let Some((_, first)) = spectra.first() {
            let target_sv: Vec<f64> = first.iter().map(|p| p.target).collect();
            let fits: Vec<(String, Vec<f64>)> = spectra
                .iter()
                .map(|(l, s)| (l.clone(), s.iter().map(|p| p.fit).collect()))
                .collect();
            let path = dir.join(format!("spectra-{}.png", file_safe(target)));
            let r0 = at_top[0];
            let epsilon = if r0.dtype == "f64" {
                f64::EPSILON
            } else {
                f32::EPSILON as f64
            };
            let sigma_max = target_sv.iter().copied().fold(0.0, f64::max);
            let floor = round_off_floor(sigma_max, r0.rows, r0.cols, epsilon);
            let floor_label = format!("{} round-off floor", r0.dtype);
            plot_spectra(
                &title(target, &format!("singular values at r = {top}")),
                &target_sv,
                &fits,
                Some((floor, &floor_label)),
                &path,
            )?;
            written.push(path);
        }
    }
    let mut spectra = super::ranking::Spectra::new();
    for r in records.iter().filter(|r| r.status == Status::Ok) {
        spectra.insert(r.run_id.clone(), read_spectrum(&runs_dir, &r.run_id)?);
    }
    let delta_png = dir.join("delta-by-budget.png");
    if super::delta_summary::plot(&records, &spectra, &delta_png)? {
        written.push(delta_png);
    }
    let summary = dir.join("summary.md");
    let mut text = render(&records)
        + &super::ranking::render(&records, &spectra)
        + &super::delta_summary::render(&records, &spectra);
    if n_targets > MAX_TARGET_PLOTS {
        text += &format!(
            "\nConvergence and spectra plots are drawn for the first {MAX_TARGET_PLOTS} of the {n_targets} targets (by name).\n"
        );
    }
    write_atomic(&summary, text.as_bytes())?;
    written.push(summary);
    Ok(written)
}
