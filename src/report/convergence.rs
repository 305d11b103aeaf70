//! Convergence of iterative fits: the objective against steps and against wall-clock seconds side by side, since a
//! solver that needs fewer steps can still lose on time (an ALS sweep costs far more than an Adam step).

use std::path::Path;

use anyhow::{Result, bail};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::fonts::{self, FAMILY};
use super::render_atomically;
use super::style::{
    AXIS_DESC_PX, CAPTION_PX, COLORS, TICK_PX, TITLE_PX, draw_legend, legend_position, legend_size,
    log_bounds, trace,
};
use crate::study::record::CurvePoint;

const SIZE: (u32, u32) = (1400, 600);

/// A log axis cannot show zero, and an exact fit (or a rounding undershoot) reaches it; 1e-16 sits at f64's
/// relative precision, below any error a fit can meaningfully claim.
const FLOOR: f64 = 1e-16;

/// Plots each labelled curve's objective against step (left) and seconds (right) on a log y axis, to `out_png`
/// (1400×600).
///
/// Objectives ≤ 0 are drawn at 1e-16; NaN and infinite points (a diverging run) are dropped, so the line stops
/// where the run blew up. Fails if no curve has a finite point.
pub fn plot_convergence(
    title: &str,
    curves: &[(String, Vec<CurvePoint>)],
    out_png: &Path,
) -> Result<()> {
    fonts::ensure_registered()?;
    let curves: Vec<(&str, Vec<CurvePoint>)> = curves
        .iter()
        .map(|(label, points)| {
            let kept = points
                .iter()
                .filter(|p| {
                    !p.objective.is_nan() && p.objective != f64::INFINITY && p.seconds.is_finite()
                })
                .map(|p| CurvePoint {
                    objective: p.objective.max(FLOOR),
                    ..*p
                })
                .collect();
            (label.as_str(), kept)
        })
        .collect();
    let Some(y) = log_bounds(
        curves
            .iter()
            .flat_map(|(_, c)| c.iter().map(|p| p.objective)),
    ) else {
        bail!("{title}: no curve has a finite objective to plot");
    };
    render_atomically(out_png, |tmp| {
        render(
            BitMapBackend::new(tmp, SIZE).into_drawing_area(),
            title,
            &curves,
            y,
        )
    })
}

fn render<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    curves: &[(&str, Vec<CurvePoint>)],
    y: (f64, f64),
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let body = root
        .margin(6, 0, 0, 0)
        .titled(title, (FAMILY, TITLE_PX).into_font().color(&BLACK))?;
    let (left, right) = body.split_horizontally(SIZE.0 / 2);
    let max_step = curves
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.step))
        .max()
        .unwrap_or(0);
    let max_seconds = curves
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.seconds))
        .fold(0.0, f64::max);
    panel(&left, "step", (max_step as f64).max(1.0), y, curves, |p| {
        p.step as f64
    })?;
    panel(
        &right,
        "seconds",
        if max_seconds > 0.0 { max_seconds } else { 1.0 },
        y,
        curves,
        |p| p.seconds,
    )?;
    root.present()?;
    Ok(())
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    x_desc: &str,
    x_max: f64,
    y: (f64, f64),
    curves: &[(&str, Vec<CurvePoint>)],
    x_of: impl Fn(&CurvePoint) -> f64,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let mut chart = ChartBuilder::on(area)
        .caption(format!("objective vs {x_desc}"), (FAMILY, CAPTION_PX))
        .margin(12)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..x_max * 1.02, (y.0..y.1).log_scale())?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("normalised squared error")
        .label_style((FAMILY, TICK_PX))
        .axis_desc_style((FAMILY, AXIS_DESC_PX))
        .x_label_formatter(&|x| short(*x))
        .y_label_formatter(&|y| super::style::log_tick(*y))
        .light_line_style(BLACK.mix(0.05))
        .bold_line_style(BLACK.mix(0.15))
        .draw()?;

    let base = chart.plotting_area().get_base_pixel();
    let mut samples = Vec::new();
    for (_, points) in curves {
        let polyline: Vec<(i32, i32)> = points
            .iter()
            .map(|p| {
                let (x, y) = chart.backend_coord(&(x_of(p), p.objective));
                (x - base.0, y - base.1)
            })
            .collect();
        trace(&polyline, &mut samples);
    }
    let labels: Vec<&str> = curves.iter().map(|(label, _)| *label).collect();
    let position = legend_position(
        chart.plotting_area().dim_in_pixel(),
        legend_size(&labels)?,
        &samples,
    );

    for (i, (label, points)) in curves.iter().enumerate() {
        let style = COLORS[i % COLORS.len()].stroke_width(2);
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (x_of(p), p.objective)),
                style,
            ))?
            .label(*label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], style));
    }
    draw_legend(&mut chart, position)
}

/// Tick labels without float noise: `2000` not `2000.0000`, `0.25` not `0.25000000000000006`.
fn short(x: f64) -> String {
    if x == x.round() && x.abs() < 1e9 {
        format!("{x:.0}")
    } else {
        let s = format!("{x:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}
