//! The loss-curve figure: adaptation loss against step, one colour per method, log scale (the curves fall by
//! orders of magnitude). Minibatch losses are noisy, so each method is drawn faint as recorded and bold as a
//! trailing mean.
//!
//! `crate::report`'s font and style helpers are private to that module, so the bundled font is registered here
//! too (plotters' `ab_glyph` path draws only registered fonts); the look follows `report::style`.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::error::{AbbaError, Result};

static DEJAVU_SANS: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";
const SIZE: (u32, u32) = (1100, 650);
/// Matplotlib's tab10, as `report::style::COLORS`.
const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
];
/// A log axis cannot show 0; a loss that small is drawn at this floor.
const FLOOR: f64 = 1e-6;

fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    if *REGISTERED.get_or_init(|| register_font(FAMILY, FontStyle::Normal, DEJAVU_SANS).is_ok()) {
        Ok(())
    } else {
        Err(AbbaError::Unsupported {
            what: "plot font".into(),
            message: "the bundled DejaVu Sans did not load: check assets/fonts/DejaVuSans.ttf".into(),
        })
    }
}

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

/// Draws `curves` (label, per-step losses) to the PNG `out`, via a temporary file so a reader never sees half
/// an image. Non-finite losses (a diverged run) end that curve. `window` is the trailing-mean length.
pub fn plot_losses(title: &str, curves: &[(String, Vec<f64>)], window: usize, out: &Path) -> Result<()> {
    ensure_font()?;
    let finite = |c: &[f64]| -> Vec<f64> {
        c.iter().take_while(|v| v.is_finite()).map(|v| v.max(FLOOR)).collect()
    };
    let curves: Vec<(&str, Vec<f64>, Vec<f64>)> = curves
        .iter()
        .map(|(label, c)| {
            let raw = finite(c);
            let mean = trailing_mean(&raw, window);
            (label.as_str(), raw, mean)
        })
        .collect();
    let all = curves.iter().flat_map(|(_, raw, _)| raw.iter().copied());
    let (lo, hi) = all.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !lo.is_finite() {
        return Err(AbbaError::InvalidArgument(format!("{title}: no finite loss to plot")));
    }
    let steps = curves.iter().map(|(_, raw, _)| raw.len()).max().unwrap_or(1).max(2);
    let tmp = out.with_file_name(format!(
        ".{}.tmp.png",
        out.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
    ));
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| AbbaError::Io {
            path: dir.display().to_string(),
            message: e.to_string(),
        })?;
    }
    let drawn = draw(&tmp, title, &curves, (lo / 1.5, hi * 1.5), steps, window)
        .and_then(|_| std::fs::rename(&tmp, out).map_err(|e| e.to_string()));
    drawn.map_err(|message| {
        let _ = std::fs::remove_file(&tmp);
        AbbaError::Io {
            path: out.display().to_string(),
            message,
        }
    })
}

/// Plain decimals where short, scientific notation below 0.001 (as `report::style::log_tick`).
fn log_tick(v: f64) -> String {
    if (1e-3..1e4).contains(&v.abs()) {
        let t = format!("{v:.3}");
        t.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.0e}")
    }
}

fn draw(
    path: &Path,
    title: &str,
    curves: &[(&str, Vec<f64>, Vec<f64>)],
    y: (f64, f64),
    steps: usize,
    window: usize,
) -> std::result::Result<(), String> {
    let s = |e: &dyn std::fmt::Display| e.to_string();
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| s(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FAMILY, 24))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..(steps - 1) as f64 * 1.02, (y.0..y.1).log_scale())
        .map_err(|e| s(&e))?;
    chart
        .configure_mesh()
        .x_desc("adaptation step")
        .y_desc(format!("training loss (thin: each step; bold: mean of last {window} steps)"))
        .label_style((FAMILY, 15))
        .axis_desc_style((FAMILY, 17))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|v| log_tick(*v))
        .light_line_style(BLACK.mix(0.05))
        .bold_line_style(BLACK.mix(0.15))
        .draw()
        .map_err(|e| s(&e))?;
    for (i, (label, raw, mean)) in curves.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points = |v: &[f64]| v.iter().enumerate().map(|(k, &l)| (k as f64, l)).collect::<Vec<_>>();
        chart
            .draw_series(LineSeries::new(points(raw), color.mix(0.25).stroke_width(1)))
            .map_err(|e| s(&e))?;
        let bold = color.stroke_width(3);
        chart
            .draw_series(LineSeries::new(points(mean), bold))
            .map_err(|e| s(&e))?
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
        .draw()
        .map_err(|e| s(&e))?;
    root.present().map_err(|e| s(&e))?;
    Ok(())
}
