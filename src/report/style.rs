//! Look and layout shared by every figure: colours, font sizes, axis bounds and where the legend goes.

use plotters::prelude::*;

use super::fonts::FAMILY;

/// Matplotlib's `tab10` (distinct on white and for most colour-blind readers, unlike Palette99's yellow), then six
/// dark colours unlike any of them, so comparisons of up to 16 methods never give two series one colour.
pub(crate) const COLORS: [RGBColor; 16] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 0),
    RGBColor(0, 0, 120),
    RGBColor(0, 110, 110),
    RGBColor(150, 105, 0),
    RGBColor(110, 0, 30),
    RGBColor(80, 100, 40),
];

pub(crate) const TITLE_PX: u32 = 26;
pub(crate) const CAPTION_PX: u32 = 22;
pub(crate) const TICK_PX: u32 = 15;
pub(crate) const AXIS_DESC_PX: u32 = 17;
pub(crate) const LEGEND_PX: u32 = 14;
const LEGEND_MARGIN: u32 = 10;
/// Plotters' default width of the glyph column in a legend.
const LEGEND_GLYPH_PX: u32 = 30;

/// Draws the legend of `chart` at `position` in the common style.
pub(crate) fn draw_legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .position(position)
        .margin(LEGEND_MARGIN)
        .legend_area_size(LEGEND_GLYPH_PX)
        .label_font((FAMILY, LEGEND_PX))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.4))
        .draw()?;
    Ok(())
}

/// The legend's size in pixels, computed the way plotters lays it out.
pub(crate) fn legend_size<S: AsRef<str>>(labels: &[S]) -> anyhow::Result<(i32, i32)> {
    let mut text = MultiLineText::<(i32, i32), &str>::new((0, 0), (FAMILY, LEGEND_PX));
    for label in labels {
        text.push_line(label.as_ref());
    }
    let (w, h) = text.estimate_dimension()?;
    Ok((
        w + (LEGEND_GLYPH_PX + 2 * LEGEND_MARGIN) as i32,
        h + 2 * LEGEND_MARGIN as i32,
    ))
}

/// Appends points every few pixels along a polyline (pixel coordinates), so a line crossing a box counts as
/// covering it even where it has no data point inside.
pub(crate) fn trace(polyline: &[(i32, i32)], samples: &mut Vec<(i32, i32)>) {
    samples.extend(polyline.first());
    for w in polyline.windows(2) {
        let (dx, dy) = (w[1].0 - w[0].0, w[1].1 - w[0].1);
        let steps = (dx.abs().max(dy.abs()) / 3).max(1);
        samples.extend((1..=steps).map(|k| (w[0].0 + dx * k / steps, w[0].1 + dy * k / steps)));
    }
}

/// The legend position, among the corners and edge middles of a `plot`-sized area, whose box covers the fewest
/// `samples` (pixels from the plot's top-left, markers' reach included by a small inflation). Ties go to the
/// earlier candidate, so an empty plot keeps the familiar upper right.
///
/// Data differ too much between figures (falling error curves, spectra with cliffs, convergence curves that drop
/// to the floor) for one fixed corner to stay clear.
pub(crate) fn legend_position(
    plot: (u32, u32),
    legend: (i32, i32),
    samples: &[(i32, i32)],
) -> SeriesLabelPosition {
    use SeriesLabelPosition::*;
    const INFLATE: i32 = 7;
    let (pw, ph) = (plot.0 as i32, plot.1 as i32);
    let (w, h) = legend;
    let candidates = [
        (UpperRight, pw - w - 5, 5),
        (LowerLeft, 5, ph - h - 5),
        (UpperLeft, 5, 5),
        (LowerRight, pw - w - 5, ph - h - 5),
        (MiddleRight, pw - w - 5, (ph - h) / 2),
        (UpperMiddle, (pw - w) / 2, 5),
        (LowerMiddle, (pw - w) / 2, ph - h - 5),
        (MiddleLeft, 5, (ph - h) / 2),
    ];
    let covered = |x0: i32, y0: i32| {
        samples
            .iter()
            .filter(|&&(x, y)| {
                x >= x0 - INFLATE
                    && x <= x0 + w + INFLATE
                    && y >= y0 - INFLATE
                    && y <= y0 + h + INFLATE
            })
            .count()
    };
    candidates
        .into_iter()
        .min_by_key(|&(_, x0, y0)| covered(x0, y0))
        .map(|(position, _, _)| position)
        .unwrap_or(UpperRight)
}

/// Log-axis bounds for positive values, widened so the extreme points sit off the frame and a flat series still
/// gets a visible decade.
pub(crate) fn log_bounds(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .into_iter()
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return None;
    }
    if hi / lo < 10.0 {
        // Less than a decade: start at the power of ten below, so the axis has labelled sub-decade ticks
        // (plotters draws those upwards from a power of ten) without stretching the curves over decades.
        // (×0.999: plotters finds its first tick by ceil(log10(start)), which rounds 0.1 up to 1.)
        return Some((10f64.powf((lo / 1.05).log10().floor()) * 0.999, hi * 1.15));
    }
    Some((lo / 1.5, hi * 1.5))
}

/// Tick text for a log axis: plain decimals where they are short, scientific notation elsewhere.
pub(crate) fn log_tick(y: f64) -> String {
    if (1e-3..1e4).contains(&y.abs()) {
        let text = format!("{y:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{y:.0e}")
    }
}

/// `147456` → `"147,456"`: parameter counts in legends are read by eye.
pub(crate) fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(147_456), "147,456");
        assert_eq!(thousands(22_544_384), "22,544,384");
    }

    #[test]
    fn palette_colours_are_far_apart() {
        // Euclidean distance in RGB: below ~60 two lines read as one colour on a legend swatch.
        let d = |a: &RGBColor, b: &RGBColor| {
            let sq = |x: u8, y: u8| (x as f64 - y as f64).powi(2);
            (sq(a.0, b.0) + sq(a.1, b.1) + sq(a.2, b.2)).sqrt()
        };
        for (i, a) in COLORS.iter().enumerate() {
            for b in &COLORS[i + 1..] {
                assert!(d(a, b) > 60.0, "{a:?} and {b:?} are too alike");
            }
        }
    }

    #[test]
    fn log_bounds_widen_flat_series() {
        let (lo, hi) = log_bounds([0.5, 0.5]).unwrap();
        assert!(lo < 0.5 && hi > 0.5);
        assert!(log_bounds([0.0, f64::NAN]).is_none());
    }

    #[test]
    fn legend_avoids_the_data() {
        // A line along the top edge: the legend leaves the upper corners.
        let mut samples = Vec::new();
        trace(&[(0, 10), (500, 10)], &mut samples);
        assert_eq!(
            legend_position((500, 400), (150, 80), &samples),
            SeriesLabelPosition::LowerLeft
        );
        // Nothing drawn: the usual upper right.
        assert_eq!(
            legend_position((500, 400), (150, 80), &[]),
            SeriesLabelPosition::UpperRight
        );
    }
}
