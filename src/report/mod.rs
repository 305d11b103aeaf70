//! Figures from study records: the paper's Figure 2 with our runs beside its values, convergence curves and
//! singular-value spectra, as PNG (and SVG) drawn with a bundled font, so no system font library is needed.
//!
//! Every function returns `anyhow::Result`: a figure fails for I/O or font reasons the caller can only report.

mod atomic;
mod convergence;
mod fig2;
mod fonts;
pub mod loss_curves;
mod paper;
mod spectra;
mod study_report;
mod style;
pub mod summary;

pub use convergence::plot_convergence;
pub use fig2::plot_fig2;
pub use paper::{PaperPoint, fig2_paper_values, paper_value};
pub use spectra::plot_spectra;
pub use study_report::write_study_reports;
