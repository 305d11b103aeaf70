//! The paper's Figure 2 redrawn from our records: normalised squared error against the LoRA rank that sets the
//! parameter budget, one panel per target, with the paper's read-off values overlaid as hollow markers so a
//! reader sees at a glance where a solver reaches, misses or beats the published curve.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Result, bail};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::fonts::{self, FAMILY};
use super::paper::{PaperPoint, fig2_paper_values};
use super::render_atomically;
use super::style::{
    AXIS_DESC_PX, CAPTION_PX, COLORS, TICK_PX, TITLE_PX, draw_legend, legend_position, legend_size,
    thousands, trace,
};
use crate::study::record::{RunRecord, Status};

/// (name prefix in `RunRecord::target`, panel title), in the figure's order.
const PANELS: [(&str, &str); 4] = [
    ("orthogonal", "Orthogonal"),
    ("low-rank", "Low-Rank"),
    ("sparse", "Sparse"),
    ("random", "Random"),
];

const SIZE: (u32, u32) = (1400, 1100);

/// One line of a panel: the mean error over seeds at each budget rank.
struct Series {
    /// `method rule solver` plus whatever else tells apart runs the figure would otherwise average together; also
    /// the colour key, so a series keeps its colour in every panel.
    name: String,
    legend: String,
    /// (budget rank, mean error), ranks ascending.
    points: Vec<(usize, f64)>,
}

struct Panel {
    key: &'static str,
    /// The paper's values are for 1024×1024 targets: overlay them only on panels of that size.
    paper_scale: bool,
    title: String,
    series: Vec<Series>,
}

/// Draws Figure 2 from `records` to `out_png` (about 1400×1100) and, if given, to `out_svg`.
///
/// Panels appear for the targets that have `Ok` records, matched by name prefix (`orthogonal-1024` counts as
/// Orthogonal); runs that diverged or failed are left out rather than drawn as spikes. Each (method, rule, solver)
/// is one line, averaged over seeds; where runs of one such line also differ in target, size, init, dtype or scale
/// convention, those become separate lines so unlike runs are never averaged. Fails if no record belongs to a panel.
pub fn plot_fig2(records: &[RunRecord], out_png: &Path, out_svg: Option<&Path>) -> Result<()> {
    fonts::ensure_registered()?;
    let panels = collect_panels(records);
    if panels.is_empty() {
        bail!(
            "no Ok records for a Figure 2 target ({} records; targets must start with orthogonal, low-rank, sparse \
             or random)",
            records.len()
        );
    }
    let names: BTreeSet<&str> = panels
        .iter()
        .flat_map(|p| p.series.iter().map(|s| s.name.as_str()))
        .collect();
    let colors: BTreeMap<&str, RGBColor> = names
        .into_iter()
        .enumerate()
        .map(|(i, name)| (name, COLORS[i % COLORS.len()]))
        .collect();

    render_atomically(out_png, |tmp| {
        render(
            BitMapBackend::new(tmp, SIZE).into_drawing_area(),
            &panels,
            &colors,
        )
    })?;
    if let Some(svg) = out_svg {
        render_atomically(svg, |tmp| {
            render(
                SVGBackend::new(tmp, SIZE).into_drawing_area(),
                &panels,
                &colors,
            )
        })?;
    }
    Ok(())
}

fn collect_panels(records: &[RunRecord]) -> Vec<Panel> {
    PANELS
        .iter()
        .filter_map(|&(key, name)| {
            let runs: Vec<&RunRecord> = records
                .iter()
                .filter(|r| {
                    r.status == Status::Ok && r.error.is_finite() && r.target.starts_with(key)
                })
                .collect();
            if runs.is_empty() {
                return None;
            }
            let sizes: BTreeSet<String> = runs
                .iter()
                .map(|r| format!("{}×{}", r.rows, r.cols))
                .collect();
            let title = format!(
                "{name} ({})",
                sizes.into_iter().collect::<Vec<_>>().join(", ")
            );
            let paper_scale = runs.iter().all(|r| (r.rows, r.cols) == (1024, 1024));
            Some(Panel {
                key,
                paper_scale,
                title,
                series: collect_series(&runs),
            })
        })
        .collect()
}

/// Reads one field of a record as text.
type Field = fn(&RunRecord) -> String;

/// Record fields that, when they vary within one (method, rule, solver), split it into separate lines.
const DISTINGUISHING: [(&str, Field); 5] = [
    ("target", |r| r.target.clone()),
    ("size", |r| format!("{}×{}", r.rows, r.cols)),
    ("init", |r| r.init.clone()),
    ("dtype", |r| r.dtype.clone()),
    ("scale", |r| r.scale_convention.clone()),
];

fn collect_series(runs: &[&RunRecord]) -> Vec<Series> {
    let mut by_base: BTreeMap<String, Vec<&RunRecord>> = BTreeMap::new();
    for &run in runs {
        let base = [run.method.as_str(), run.rule.as_str(), run.solver.as_str()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        by_base.entry(base).or_default().push(run);
    }

    let mut out = Vec::new();
    for (base, group) in by_base {
        let varying: Vec<_> = DISTINGUISHING
            .iter()
            .filter(|(_, field)| {
                group
                    .iter()
                    .map(|r| field(r))
                    .collect::<BTreeSet<_>>()
                    .len()
                    > 1
            })
            .collect();
        let mut by_name: BTreeMap<String, Vec<&RunRecord>> = BTreeMap::new();
        for run in group {
            let mut name = base.clone();
            if !varying.is_empty() {
                let extra: Vec<String> = varying
                    .iter()
                    .map(|(label, field)| format!("{label}={}", field(run)))
                    .collect();
                name = format!("{name} [{}]", extra.join(", "));
            }
            by_name.entry(name).or_default().push(run);
        }
        out.extend(
            by_name
                .into_iter()
                .map(|(name, runs)| summarise(name, &runs)),
        );
    }
    out
}

/// Averages seeds per rank and writes the legend: parameter count at the largest rank, because a budget rank
/// alone hides that rules such as `full` spend twice LoRA's parameters.
fn summarise(name: String, runs: &[&RunRecord]) -> Series {
    // rank → (sum of errors, runs, largest parameter count)
    let mut by_rank: BTreeMap<usize, (f64, usize, usize)> = BTreeMap::new();
    for run in runs {
        let cell = by_rank.entry(run.budget_rank).or_insert((0.0, 0, 0));
        cell.0 += run.error;
        cell.1 += 1;
        cell.2 = cell.2.max(run.params);
    }
    let points = by_rank
        .iter()
        .map(|(&r, &(sum, n, _))| (r, sum / n as f64))
        .collect();
    let (&r_max, &(_, _, params)) = by_rank
        .last_key_value()
        .expect("a series has at least one run");
    let most_runs = by_rank.values().map(|&(_, n, _)| n).max().unwrap_or(1);
    let mean_note = if most_runs > 1 {
        format!(", {most_runs} seeds")
    } else {
        String::new()
    };
    let legend = format!(
        "{name} ({} params @ r={r_max}{mean_note})",
        thousands(params)
    );
    Series {
        name,
        legend,
        points,
    }
}

fn render<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    panels: &[Panel],
    colors: &BTreeMap<&str, RGBColor>,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let body = root.margin(6, 0, 0, 0).titled(
        "Matrix reconstruction error against the budget rank r — lines: our runs (mean over seeds), hollow markers: paper \
         Figure 2",
        (FAMILY, TITLE_PX).into_font().color(&BLACK),
    )?;
    // One panel fills the page; two sit side by side; three or four make the paper's 2×2 grid.
    let grid = match panels.len() {
        1 => (1, 1),
        2 => (1, 2),
        _ => (2, 2),
    };
    for (area, panel) in body.split_evenly(grid).iter().zip(panels) {
        draw_panel(area, panel, colors)?;
    }
    root.present()?;
    Ok(())
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
    colors: &BTreeMap<&str, RGBColor>,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let paper: Vec<&PaperPoint> = fig2_paper_values()
        .iter()
        .filter(|p| panel.paper_scale && p.panel == panel.key)
        .collect();
    let ranks: BTreeSet<usize> = panel
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .chain(paper.iter().map(|p| p.r))
        .collect();
    let errors = panel
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .chain(paper.iter().flat_map(|p| [p.lora, p.abba]));
    let (x_range, ticks) = x_axis(&ranks);
    let y_range = y_axis(errors);

    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, (FAMILY, CAPTION_PX))
        .margin(12)
        .x_label_area_size(50)
        .y_label_area_size(65)
        .build_cartesian_2d(x_range.with_key_points(ticks), y_range)?;
    chart
        .configure_mesh()
        .x_desc("LoRA rank r setting the parameter budget")
        .y_desc("normalised error ‖M − M̂‖² / ‖M‖²")
        .label_style((FAMILY, TICK_PX))
        .axis_desc_style((FAMILY, AXIS_DESC_PX))
        .y_label_formatter(&|y| format!("{y:.2}"))
        .light_line_style(BLACK.mix(0.05))
        .bold_line_style(BLACK.mix(0.15))
        .draw()?;

    let base = chart.plotting_area().get_base_pixel();
    let pixel = |r: usize, e: f64| {
        let (x, y) = chart.backend_coord(&(r as i32, e));
        (x - base.0, y - base.1)
    };
    let mut samples = Vec::new();
    for series in &panel.series {
        trace(
            &series
                .points
                .iter()
                .map(|&(r, e)| pixel(r, e))
                .collect::<Vec<_>>(),
            &mut samples,
        );
    }
    samples.extend(
        paper
            .iter()
            .flat_map(|p| [pixel(p.r, p.lora), pixel(p.r, p.abba)]),
    );
    let mut labels: Vec<&str> = panel.series.iter().map(|s| s.legend.as_str()).collect();
    labels.extend(["paper LoRA", "paper ABBA"]);
    let position = legend_position(
        chart.plotting_area().dim_in_pixel(),
        legend_size(&labels)?,
        &samples,
    );

    for series in &panel.series {
        let color = colors.get(series.name.as_str()).copied().unwrap_or(BLACK);
        let line = color.stroke_width(2);
        let points = || series.points.iter().map(|&(r, e)| (r as i32, e));
        chart
            .draw_series(LineSeries::new(points(), line))?
            .label(series.legend.as_str())
            .legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(0, 0), (22, 0)], line)
                    + Circle::new((11, 0), 3, color.filled())
            });
        chart.draw_series(points().map(|p| Circle::new(p, 3, color.filled())))?;
    }

    // Hollow and black, with no line: the paper's points are read-offs to compare against, not a series of ours.
    let ring = BLACK.stroke_width(2);
    chart
        .draw_series(
            paper
                .iter()
                .map(|p| Circle::new((p.r as i32, p.lora), 7, ring)),
        )?
        .label("paper LoRA")
        .legend(move |(x, y)| Circle::new((x + 11, y), 6, ring));
    chart
        .draw_series(paper.iter().map(|p| {
            EmptyElement::at((p.r as i32, p.abba)) + PathElement::new(TRIANGLE.to_vec(), ring)
        }))?
        .label("paper ABBA")
        .legend(move |(x, y)| {
            EmptyElement::at((x + 11, y)) + PathElement::new(TRIANGLE.to_vec(), ring)
        });

    draw_legend(&mut chart, position)
}

/// Outline of the paper-ABBA marker in pixels around its point: plotters' `TriangleMarker` is always filled, and
/// an outline keeps our own filled points visible underneath.
const TRIANGLE: [(i32, i32); 4] = [(0, -8), (7, 5), (-7, 5), (0, -8)];

/// The x range spans data and paper ranks with a little room; ticks sit on the ranks themselves (thinned to at
/// most a dozen) because budget ranks are multiples of 8 and round-number ticks would fall between them.
fn x_axis(ranks: &BTreeSet<usize>) -> (std::ops::Range<i32>, Vec<i32>) {
    let lo = *ranks.first().unwrap_or(&0) as i32;
    let hi = *ranks.last().unwrap_or(&1) as i32;
    let pad = ((hi - lo) / 20).max(2);
    let stride = ranks.len().div_ceil(12).max(1);
    let ticks = ranks.iter().step_by(stride).map(|&r| r as i32).collect();
    ((lo - pad).max(0)..hi + pad, ticks)
}

/// Errors are in [0, 1] and differ by as little as 0.02 on the Random panel, so the range hugs the data (never
/// below zero) instead of always showing [0, 1].
fn y_axis(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let margin = 0.06 * (hi - lo).max(0.02);
    let floor = if lo >= 0.0 { 0.0 } else { f64::NEG_INFINITY };
    (lo - margin).max(floor)..hi + margin
}
