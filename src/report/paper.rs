//! The paper's Figure 2 as read off the published plot (docs/fig2-setup.md, ±0.003): the reference our runs are drawn
//! against, never a target to tune towards.
//!
//! The paper gives neither sizes nor solver; docs/fig2-setup.md infers 1024×1024 targets and the normalised error
//! ‖M − M̂‖²_F / ‖M‖²_F, under which our LoRA (truncated SVD) curves match the LoRA columns to ±0.001.

/// One read-off point: the normalised squared error of LoRA and of ABBA (r1 = r2 = r/2) at LoRA rank `r`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PaperPoint {
    /// The target name our records use: `orthogonal`, `low-rank`, `sparse` or `random`.
    pub panel: &'static str,
    pub r: usize,
    pub lora: f64,
    pub abba: f64,
}

const fn pt(panel: &'static str, r: usize, lora: f64, abba: f64) -> PaperPoint {
    PaperPoint {
        panel,
        r,
        lora,
        abba,
    }
}

/// Transcribed column by column from the table in docs/fig2-setup.md; `tests/report.rs` spot-checks cells against it.
static FIG2: [PaperPoint; 36] = [
    pt("orthogonal", 8, 0.992, 0.947),
    pt("orthogonal", 16, 0.984, 0.863),
    pt("orthogonal", 24, 0.976, 0.781),
    pt("orthogonal", 32, 0.969, 0.705),
    pt("orthogonal", 40, 0.961, 0.637),
    pt("orthogonal", 48, 0.953, 0.574),
    pt("orthogonal", 56, 0.945, 0.516),
    pt("orthogonal", 64, 0.937, 0.464),
    pt("orthogonal", 72, 0.929, 0.416),
    pt("low-rank", 8, 0.937, 0.840),
    pt("low-rank", 16, 0.874, 0.740),
    pt("low-rank", 24, 0.812, 0.656),
    pt("low-rank", 32, 0.750, 0.578),
    pt("low-rank", 40, 0.687, 0.507),
    pt("low-rank", 48, 0.624, 0.439),
    pt("low-rank", 56, 0.562, 0.377),
    pt("low-rank", 64, 0.500, 0.317),
    pt("low-rank", 72, 0.437, 0.263),
    pt("sparse", 8, 0.898, 0.852),
    pt("sparse", 16, 0.871, 0.744),
    pt("sparse", 24, 0.846, 0.633),
    pt("sparse", 32, 0.821, 0.534),
    pt("sparse", 40, 0.797, 0.446),
    pt("sparse", 48, 0.774, 0.368),
    pt("sparse", 56, 0.752, 0.300),
    pt("sparse", 64, 0.730, 0.244),
    pt("sparse", 72, 0.709, 0.195),
    pt("random", 8, 0.243, 0.234),
    pt("random", 16, 0.236, 0.217),
    pt("random", 24, 0.229, 0.201),
    pt("random", 32, 0.222, 0.185),
    pt("random", 40, 0.216, 0.171),
    pt("random", 48, 0.209, 0.157),
    pt("random", 56, 0.203, 0.144),
    pt("random", 64, 0.197, 0.132),
    pt("random", 72, 0.192, 0.120),
];

/// All 36 points, panel by panel in the figure's order, ranks ascending within a panel.
pub fn fig2_paper_values() -> &'static [PaperPoint] {
    &FIG2
}

/// The paper's value for `panel` at rank `r`, `method` being `"lora"` or `"abba"` (any case); `None` where the
/// figure has no such point.
pub fn paper_value(panel: &str, r: usize, method: &str) -> Option<f64> {
    let point = FIG2.iter().find(|p| p.panel == panel && p.r == r)?;
    match method.to_ascii_lowercase().as_str() {
        "lora" => Some(point.lora),
        "abba" => Some(point.abba),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_panel_has_ranks_8_to_72_and_abba_beats_lora() {
        for panel in ["orthogonal", "low-rank", "sparse", "random"] {
            let ranks: Vec<usize> = FIG2
                .iter()
                .filter(|p| p.panel == panel)
                .map(|p| p.r)
                .collect();
            assert_eq!(ranks, (8..=72).step_by(8).collect::<Vec<_>>(), "{panel}");
        }
        // The figure's message; a transcription slip that swapped columns would break it.
        assert!(FIG2.iter().all(|p| p.abba < p.lora));
    }

    #[test]
    fn errors_fall_with_rank() {
        for w in FIG2.windows(2).filter(|w| w[0].panel == w[1].panel) {
            assert!(w[1].lora < w[0].lora && w[1].abba < w[0].abba, "{:?}", w);
        }
    }

    #[test]
    fn unknown_panel_rank_or_method_is_none() {
        assert_eq!(paper_value("gaussian", 8, "lora"), None);
        assert_eq!(paper_value("orthogonal", 12, "lora"), None);
        assert_eq!(paper_value("orthogonal", 8, "hira"), None);
        assert_eq!(paper_value("random", 72, "ABBA"), Some(0.120));
    }
}
