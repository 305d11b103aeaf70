//! Singular-value spectra of a target and of its fits: where a fit's spectrum departs from the target's shows
//! what the adapter can express — LoRA stops dead at its rank, while a Hadamard product spreads energy over up to
//! r1·r2 directions.

use std::path::Path;

use anyhow::{Result, bail};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::fonts::{self, FAMILY};
use super::render_atomically;
use super::style::{
    AXIS_DESC_PX, COLORS, TICK_PX, TITLE_PX, draw_legend, legend_position, legend_size, log_bounds,
    trace,
};

const SIZE: (u32, u32) = (1000, 700);

/// Singular values past a fit's rank are zero up to rounding (1e-17 … 1e-30); clamping keeps them on a log axis
/// without letting rounding noise stretch it over twenty decades.
const FLOOR: f64 = 1e-12;

/// Plots singular value against its 1-based index, log y, to `out_png` (1000×700): the target as a thick black
/// line, each labelled fit in colour. Values below 1e-12 (and non-finite ones) are drawn at 1e-12. `noise_floor`
/// (value, label) draws a dashed line below which singular values are round-off, not spectrum (see
/// [`round_off_floor`]). Fails if there is nothing to draw.
pub fn plot_spectra(
    title: &str,
    target: &[f64],
    fits: &[(String, Vec<f64>)],
    noise_floor: Option<(f64, &str)>,
    out_png: &Path,
) -> Result<()> {
    fonts::ensure_registered()?;
    let clamp = |v: &[f64]| -> Vec<f64> {
        v.iter()
            .map(|&s| if s.is_finite() { s.max(FLOOR) } else { FLOOR })
            .collect()
    };
    let target = clamp(target);
    let fits: Vec<(&str, Vec<f64>)> = fits
        .iter()
        .map(|(label, s)| (label.as_str(), clamp(s)))
        .collect();
    let n = fits
        .iter()
        .map(|(_, s)| s.len())
        .chain([target.len()])
        .max()
        .unwrap_or(0);
    if n == 0 {
        bail!("{title}: no singular values to plot");
    }
    let Some(y) = log_bounds(
        target
            .iter()
            .chain(fits.iter().flat_map(|(_, s)| s.iter()))
            .copied()
            .chain(noise_floor.map(|f| f.0.max(FLOOR))),
    ) else {
        bail!("{title}: no singular values to plot");
    };
    render_atomically(out_png, |tmp| {
        render(
            BitMapBackend::new(tmp, SIZE).into_drawing_area(),
            title,
            &target,
            &fits,
            noise_floor.filter(|f| f.0.is_finite() && f.0 > 0.0),
            n,
            y,
        )
    })
}

/// The level below which the singular values of an m×n matrix with largest singular value `sigma_max`, held or
/// computed with unit round-off `epsilon`, are indistinguishable from rounding: max(m, n)·ε·σ_max, the usual
/// numerical-rank tolerance.
pub fn round_off_floor(sigma_max: f64, rows: usize, cols: usize, epsilon: f64) -> f64 {
    rows.max(cols) as f64 * epsilon * sigma_max
}

fn render<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    target: &[f64],
    fits: &[(&str, Vec<f64>)],
    noise_floor: Option<(f64, &str)>,
    n: usize,
    y: (f64, f64),
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FAMILY, TITLE_PX))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..(n as f64) * 1.02 + 1.0, (y.0..y.1).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("index i")
        .y_desc("singular value σᵢ")
        .label_style((FAMILY, TICK_PX))
        .axis_desc_style((FAMILY, AXIS_DESC_PX))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| super::style::log_tick(*y))
        .light_line_style(BLACK.mix(0.05))
        .bold_line_style(BLACK.mix(0.15))
        .draw()?;

    let indexed = |s: &[f64]| {
        s.iter()
            .enumerate()
            .map(|(i, &v)| ((i + 1) as f64, v))
            .collect::<Vec<_>>()
    };
    let base = chart.plotting_area().get_base_pixel();
    let mut samples = Vec::new();
    for s in std::iter::once(target).chain(fits.iter().map(|(_, s)| s.as_slice())) {
        let polyline: Vec<(i32, i32)> = indexed(s)
            .iter()
            .map(|c| {
                let (x, y) = chart.backend_coord(c);
                (x - base.0, y - base.1)
            })
            .collect();
        trace(&polyline, &mut samples);
    }
    let mut labels = vec!["target"];
    labels.extend(fits.iter().map(|(label, _)| *label));
    labels.extend(noise_floor.map(|f| f.1));
    let position = legend_position(
        chart.plotting_area().dim_in_pixel(),
        legend_size(&labels)?,
        &samples,
    );

    if !target.is_empty() {
        let thick = BLACK.stroke_width(4);
        chart
            .draw_series(LineSeries::new(indexed(target), thick))?
            .label("target")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], thick));
    }
    // Grey would blur against the black target line.
    let palette: Vec<RGBColor> = COLORS
        .into_iter()
        .filter(|c| c.0 != c.1 || c.1 != c.2)
        .collect();
    for (i, (label, s)) in fits.iter().enumerate() {
        let style = palette[i % palette.len()].stroke_width(2);
        chart
            .draw_series(LineSeries::new(indexed(s), style))?
            .label(*label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], style));
    }
    if let Some((level, label)) = noise_floor {
        let dashed = BLACK.mix(0.6).stroke_width(2);
        let x_end = (n as f64) * 1.02 + 1.0;
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, level), (x_end, level)],
                8,
                6,
                dashed,
            ))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], dashed));
    }
    draw_legend(&mut chart, position)?;
    root.present()?;
    Ok(())
}
