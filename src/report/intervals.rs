//! Points with error bars, one colour per series, joined by lines: a metric against a budget or a learning rate
//! with its confidence interval (comparisons). The x axis can be logarithmic (learning rates, ranks).

use std::path::Path;

use anyhow::{Result, bail};
use plotters::prelude::*;

use super::fonts::{self, FAMILY};
use super::render_atomically;
use super::style::COLORS;

const SIZE: (u32, u32) = (1100, 650);

/// One point: x, the value and its interval (`low == high == y` draws no bar).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IntervalPoint {
    pub x: f64,
    pub y: f64,
    pub low: f64,
    pub high: f64,
}

/// A labelled series of points, drawn in x order.
#[derive(Clone, Debug, PartialEq)]
pub struct IntervalSeries {
    pub label: String,
    pub points: Vec<IntervalPoint>,
}

/// The axes of an interval plot.
#[derive(Clone, Copy, Debug)]
pub struct Axes<'a> {
    pub title: &'a str,
    pub x_desc: &'a str,
    pub y_desc: &'a str,
    pub log_x: bool,
}

fn tick(v: f64) -> String {
    if v != 0.0 && (v.abs() < 0.1 || v.abs() >= 1e4) {
        format!("{v:.0e}")
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

/// Draws `series` to the PNG `out`, atomically. Non-finite points are left out; bars are drawn where the
/// interval is finite.
pub fn plot_intervals(axes: Axes<'_>, series: &[IntervalSeries], out: &Path) -> Result<()> {
    fonts::ensure_registered()?;
    let series: Vec<(&str, Vec<IntervalPoint>)> = series
        .iter()
        .map(|s| {
            let mut pts: Vec<IntervalPoint> = s
                .points
                .iter()
                .copied()
                .filter(|p| p.x.is_finite() && p.y.is_finite() && (!axes.log_x || p.x > 0.0))
                .collect();
            pts.sort_by(|a, b| a.x.total_cmp(&b.x));
            (s.label.as_str(), pts)
        })
        .collect();
    let all = || series.iter().flat_map(|(_, p)| p.iter());
    if all().next().is_none() {
        bail!("{}: no finite point to plot", axes.title);
    }
    let (x_lo, x_hi) = all().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
        (a.min(p.x), b.max(p.x))
    });
    let (y_lo, y_hi) = all()
        .flat_map(|p| [p.y, p.low, p.high])
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    let pad_y = ((y_hi - y_lo) * 0.08).max(1e-9);
    let (y_lo, y_hi) = (y_lo - pad_y, y_hi + pad_y);
    render_atomically(out, |tmp| {
        let root = BitMapBackend::new(tmp, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut builder = ChartBuilder::on(&root);
        builder
            .caption(axes.title, (FAMILY, 24))
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size(80);
        // Log and linear x axes are different chart types; draw through one closure per kind.
        macro_rules! draw {
            ($chart:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .x_desc(axes.x_desc)
                    .y_desc(axes.y_desc)
                    .label_style((FAMILY, 15))
                    .axis_desc_style((FAMILY, 17))
                    .x_label_formatter(&|x| {
                        // A log axis ticks every 1–9 × 10ᵏ: label only 1, 2, 3 and 5 × 10ᵏ so labels do not collide.
                        let mantissa = x.abs() / 10f64.powf(x.abs().log10().floor());
                        let keep = [1.0, 2.0, 3.0, 5.0].iter().any(|m| (mantissa - m).abs() < 1e-6);
                        if axes.log_x && !keep { String::new() } else { tick(*x) }
                    })
                    .y_label_formatter(&|y| tick(*y))
                    .light_line_style(BLACK.mix(0.05))
                    .bold_line_style(BLACK.mix(0.15))
                    .draw()?;
                for (i, (label, pts)) in series.iter().enumerate() {
                    let color = COLORS[i % COLORS.len()];
                    let style = color.stroke_width(2);
                    chart
                        .draw_series(LineSeries::new(pts.iter().map(|p| (p.x, p.y)), style))?
                        .label(*label)
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], style));
                    chart.draw_series(pts.iter().map(|p| Circle::new((p.x, p.y), 4, color.filled())))?;
                    // Error bars: a vertical segment in data coordinates, caps 12 pixels wide at each end.
                    let bars: Vec<&IntervalPoint> = pts
                        .iter()
                        .filter(|p| p.low.is_finite() && p.high.is_finite() && p.low < p.high)
                        .collect();
                    chart.draw_series(
                        bars.iter()
                            .map(|p| PathElement::new(vec![(p.x, p.low), (p.x, p.high)], style)),
                    )?;
                    chart.draw_series(bars.iter().flat_map(|p| {
                        [p.low, p.high].map(|y| {
                            EmptyElement::at((p.x, y)) + PathElement::new(vec![(-6, 0), (6, 0)], style)
                        })
                    }))?;
                }
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::UpperLeft)
                    .margin(10)
                    .label_font((FAMILY, 16))
                    .background_style(WHITE.mix(0.9))
                    .border_style(BLACK.mix(0.4))
                    .draw()?;
            }};
        }
        if axes.log_x {
            let (a, b) = if x_lo == x_hi {
                (x_lo / 2.0, x_hi * 2.0)
            } else {
                (x_lo / 1.3, x_hi * 1.3)
            };
            draw!(builder.build_cartesian_2d((a..b).log_scale(), y_lo..y_hi)?);
        } else {
            let pad = ((x_hi - x_lo) * 0.08).max(0.5);
            draw!(builder.build_cartesian_2d(x_lo - pad..x_hi + pad, y_lo..y_hi)?);
        }
        root.present()?;
        Ok(())
    })
}
