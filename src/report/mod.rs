//! Figures from study records: the paper's Figure 2 with our runs beside its values, convergence curves and
//! singular-value spectra, as PNG (and SVG) drawn with a bundled font, so no system font library is needed.
//!
//! Every function returns `anyhow::Result`: a figure fails for I/O or font reasons the caller can only report.

mod convergence;
pub mod delta_summary;
mod fig2;
mod fonts;
pub mod intervals;
pub mod loss_curves;
mod paper;
pub mod ranking;
mod spectra;
mod study_report;
mod style;
pub mod summary;

use std::path::Path;

use anyhow::Context;

pub use convergence::plot_convergence;
pub use fig2::plot_fig2;
pub use paper::{PaperPoint, fig2_paper_values, paper_value};
pub use spectra::{plot_spectra, round_off_floor};
pub use study_report::write_study_reports;

/// Draws an image through `draw` and moves it into place whole ([`crate::io::write_atomic_with`]): a crash or a
/// failed render never leaves a truncated file where a reader, or a resumed report, expects a finished one.
pub(crate) fn render_atomically(
    out: &Path,
    draw: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    crate::io::write_atomic_with(out, draw).with_context(|| format!("rendering {}", out.display()))
}
