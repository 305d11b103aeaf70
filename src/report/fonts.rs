//! The bundled font: plotters' `ab_glyph` text path only draws fonts registered at run time, so images render the
//! same on any machine, with no system font library linked.

use std::sync::OnceLock;

use plotters::style::{FontStyle, register_font};

/// DejaVu Sans (Bitstream Vera licence, `assets/fonts/LICENSE`): covers the ×, ², ‖ and Greek in our labels.
static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// The family every chart asks for; plotters' own default label style uses it too.
pub(crate) const FAMILY: &str = "sans-serif";

/// Registers the bundled font under [`FAMILY`] on first use.
///
/// Every plotting function calls this first. A `OnceLock` rather than a bare `Once` keeps the outcome, so a font
/// that failed to parse is reported to every caller instead of only the first.
pub(crate) fn ensure_registered() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            register_font(FAMILY, FontStyle::Normal, DEJAVU_SANS).map_err(|_| {
                format!(
                    "the bundled font is not a valid TrueType file ({} bytes)",
                    DEJAVU_SANS.len()
                )
            })
        })
        .clone()
        .map_err(anyhow::Error::msg)
}
