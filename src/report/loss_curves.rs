//! Training-loss curves: loss against step, one colour per run, log scale (adaptation losses fall by orders of
//! magnitude). Minibatch losses are noisy, so each run is drawn faint as recorded and bold as a trailing mean.

use std::path::Path;

use anyhow::{Result, bail};
use plotters::prelude::*;

use super::fonts::{self, FAMILY};
use super::render_atomically;
use super::style::{COLORS, log_tick};

const SIZE: (u32, u32) = (1100, 650);
/// A log axis cannot show 0; a loss that small is drawn at this floor.
const FLOOR: f64 = 1e-6;

/// Trailing mean over up to `window` points, so the first points are not held back.
pub fn trailing_mean(values: &[f64], window: usize) -> Vec<f64> {
    let window = window.max(1);
    let mut sum = 0.0;
    (0..values.len())
        .map(|i| {
            sum += values[i];
            if i >= window {
                sum -= values[i - window];
            }
            sum / (i + 1).min(window) as f64
        })
        .collect()
}

/// Draws `curves` (label, per-step losses) to the PNG `out`, atomically. Non-finite losses (a diverged run) end
/// that curve. `window` is the trailing-mean length; `x_desc` names the step axis.
pub fn plot_losses(
    title: &str,
    x_desc: &str,
    curves: &[(String, Vec<f64>)],
    window: usize,
    out: &Path,
) -> Result<()> {
    fonts::ensure_registered()?;
    let curves: Vec<(&str, Vec<f64>, Vec<f64>)> = curves
        .iter()
        .map(|(label, c)| {
            let raw: Vec<f64> = c
                .iter()
                .take_while(|v| v.is_finite())
                .map(|v| v.max(FLOOR))
                .collect();
            let mean = trailing_mean(&raw, window);
            (label.as_str(), raw, mean)
        })
        .collect();
    let (lo, hi) = curves
        .iter()
        .flat_map(|(_, raw, _)| raw.iter().copied())
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        bail!("{title}: no finite loss to plot");
    }
    let steps = curves
        .iter()
        .map(|(_, raw, _)| raw.len())
        .max()
        .unwrap_or(1)
        .max(2);
    render_atomically(out, |tmp| {
        let root = BitMapBackend::new(tmp, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FAMILY, 24))
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(
                0.0..(steps - 1) as f64 * 1.02,
                (lo / 1.5..hi * 1.5).log_scale(),
            )?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(format!(
                "training loss (thin: each step; bold: mean of last {window})"
            ))
            .label_style((FAMILY, 15))
            .axis_desc_style((FAMILY, 17))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|v| log_tick(*v))
            .light_line_style(BLACK.mix(0.05))
            .bold_line_style(BLACK.mix(0.15))
            .draw()?;
        for (i, (label, raw, mean)) in curves.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let points = |v: &[f64]| {
                v.iter()
                    .enumerate()
                    .map(|(k, &l)| (k as f64, l))
                    .collect::<Vec<_>>()
            };
            chart.draw_series(LineSeries::new(
                points(raw),
                color.mix(0.25).stroke_width(1),
            ))?;
            let bold = color.stroke_width(3);
            chart
                .draw_series(LineSeries::new(points(mean), bold))?
                .label(*label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], bold));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .margin(10)
            .label_font((FAMILY, 16))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.4))
            .draw()?;
        root.present()?;
        Ok(())
    })
}
