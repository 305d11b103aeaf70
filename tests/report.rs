//! Figures render to real PNG/SVG files with text, in place, from synthetic records; and the paper's Figure 2
//! table is transcribed as docs/fig2-setup.md has it.
//!
//! Set `REPORT_PREVIEW_DIR` to keep a copy of every image for looking at.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use abba::report::{fig2_paper_values, paper_value, plot_convergence, plot_fig2, plot_spectra};
use abba::study::record::{CurvePoint, RunRecord, Status};

/// A fresh directory per test: tests run in parallel and the suite may run twice at once on one machine.
fn scratch_dir(name: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "abba-report-{name}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Removes the scratch directory, first copying its images to `REPORT_PREVIEW_DIR` when that is set.
fn finish(dir: &Path) {
    if let Some(preview) = std::env::var_os("REPORT_PREVIEW_DIR") {
        std::fs::create_dir_all(&preview).unwrap();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, Path::new(&preview).join(path.file_name().unwrap())).unwrap();
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// Checks the PNG signature and reads width and height from the IHDR chunk, which the format puts first.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        bytes.len() > 24,
        "{} is too short for a PNG",
        path.display()
    );
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} lacks the PNG signature",
        path.display()
    );
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes(b.try_into().unwrap());
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

/// Nothing but the finished images: no `.name.tmp.ext` left behind by the atomic write.
fn assert_no_temp_files(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            !name.starts_with('.'),
            "temporary file {name} left in {}",
            dir.display()
        );
    }
}

fn record(
    target: &str,
    method: &str,
    rule: &str,
    solver: &str,
    budget_rank: usize,
    seed: u64,
    error: f64,
) -> RunRecord {
    let (rows, cols) = (1024, 1024);
    let (r1, r2) = match (method, rule) {
        ("abba", "half") => (budget_rank.div_ceil(2), budget_rank / 2),
        ("abba", "full") => (budget_rank, budget_rank),
        _ => (budget_rank, 0),
    };
    RunRecord {
        run_id: format!("{target}-{method}-{rule}-{solver}-{budget_rank}-{seed}"),
        study: "fig2".into(),
        target: target.into(),
        rows,
        cols,
        method: method.into(),
        rule: rule.into(),
        budget_rank,
        r1,
        r2,
        params: (r1 + r2) * (rows + cols),
        solver: solver.into(),
        init: if method == "abba" {
            "svd".into()
        } else {
            String::new()
        },
        seed,
        dtype: "f64".into(),
        scale_convention: "absorbed".into(),
        scale: 1.0,
        status: Status::Ok,
        reason: String::new(),
        error,
        rel_frob: error.sqrt(),
        sv_error: 0.1,
        stable_rank: 2.0,
        effective_rank: 10.0,
        numerical_rank: r1 * r2.max(1),
        steps: 100,
        wall_s: 0.5,
        peak_rss_mb: 100.0,
        crate_version: "0.1.0".into(),
        git_commit: "0000000".into(),
        config: "{}".into(),
    }
}

/// Figure-2-like records on all four panels: LoRA on the paper's values, ABBA (half, two seeds) a little above
/// them, ABBA full below, and a diverged run that must not show.
fn fig2_records() -> Vec<RunRecord> {
    let mut out = Vec::new();
    for p in fig2_paper_values() {
        let target = if p.panel == "random" {
            "random-uniform"
        } else {
            p.panel
        };
        out.push(record(target, "lora", "", "svd", p.r, 0, p.lora + 0.0005));
        for seed in 0..2 {
            let e = p.abba + 0.04 * (p.lora - p.abba) + 0.003 * seed as f64;
            out.push(record(target, "abba", "half", "als", p.r, seed, e));
        }
        out.push(record(target, "abba", "full", "adam", p.r, 0, p.abba * 0.8));
    }
    let mut diverged = record("orthogonal", "abba", "half", "adam", 72, 0, f64::NAN);
    diverged.status = Status::Diverged;
    out.push(diverged);
    out
}

#[test]
fn fig2_renders_png_and_svg_in_place() {
    let dir = scratch_dir("fig2");
    let png = dir.join("fig2.png");
    let svg = dir.join("fig2.svg");
    plot_fig2(&fig2_records(), &png, Some(&svg)).unwrap();
    assert_eq!(png_size(&png), (1400, 1100));
    let svg_text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        svg_text.starts_with("<svg"),
        "{}",
        &svg_text[..svg_text.len().min(80)]
    );
    assert!(svg_text.contains("abba half als (147,456 params @ r=72, 2 seeds)"));
    assert!(svg_text.contains("paper LoRA") && svg_text.contains("paper ABBA"));
    assert!(svg_text.contains("Orthogonal (1024×1024)") && svg_text.contains("Random (1024×1024)"));
    assert!(
        !svg_text.contains("abba half adam"),
        "a diverged run was plotted"
    );
    assert_no_temp_files(&dir);
    finish(&dir);
}

#[test]
fn fig2_with_one_panel_renders() {
    let dir = scratch_dir("fig2-one-panel");
    let png = dir.join("fig2-sparse.png");
    let records: Vec<RunRecord> = fig2_records()
        .into_iter()
        .filter(|r| r.target == "sparse" && r.budget_rank <= 32)
        .collect();
    plot_fig2(&records, &png, None).unwrap();
    assert_eq!(png_size(&png), (1400, 1100));
    assert_no_temp_files(&dir);
    finish(&dir);
}

#[test]
fn fig2_without_matching_records_fails_and_writes_nothing() {
    let dir = scratch_dir("fig2-empty");
    let png = dir.join("fig2.png");
    let mut gaussian = record("gaussian", "lora", "", "svd", 8, 0, 0.5);
    assert!(plot_fig2(std::slice::from_ref(&gaussian), &png, None).is_err());
    gaussian.target = "orthogonal".into();
    gaussian.status = Status::Failed;
    assert!(plot_fig2(&[gaussian], &png, None).is_err());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn convergence_renders_with_zero_and_nonfinite_objectives() {
    let dir = scratch_dir("convergence");
    let png = dir.join("convergence.png");
    let curve = |rate: f64, secs_per_step: f64| -> Vec<CurvePoint> {
        (0..=200)
            .map(|step| CurvePoint {
                step,
                seconds: step as f64 * secs_per_step,
                objective: 0.4 + 0.6 * (-rate * step as f64).exp(),
            })
            .collect()
    };
    let mut exact = curve(0.2, 0.002);
    exact.last_mut().unwrap().objective = 0.0;
    let mut diverging = curve(0.01, 0.0005);
    diverging[150].objective = f64::NAN;
    diverging[151].objective = f64::INFINITY;
    let curves = vec![
        ("als".to_string(), curve(0.05, 0.01)),
        ("adam lr=1e-2".to_string(), diverging),
        ("exact".to_string(), exact),
    ];
    plot_convergence("orthogonal 1024×1024, abba half, r=72", &curves, &png).unwrap();
    assert_eq!(png_size(&png), (1400, 600));
    assert_no_temp_files(&dir);
    assert!(
        plot_convergence(
            "empty",
            &[("none".to_string(), vec![])],
            &dir.join("empty.png")
        )
        .is_err()
    );
    finish(&dir);
}

#[test]
fn spectra_render_with_zero_tails() {
    let dir = scratch_dir("spectra");
    let png = dir.join("spectra.png");
    let target: Vec<f64> = (0..256).map(|i| 1.0 / (1.0 + i as f64).sqrt()).collect();
    let lora: Vec<f64> = target
        .iter()
        .enumerate()
        .map(|(i, &s)| if i < 32 { s } else { 1e-18 })
        .collect();
    let abba: Vec<f64> = target
        .iter()
        .enumerate()
        .map(|(i, &s)| s * (1.0 - 0.004 * i as f64).max(0.0))
        .collect();
    let fits = vec![
        ("lora r=32".to_string(), lora),
        ("abba 16+16".to_string(), abba),
    ];
    plot_spectra(
        "orthogonal-like, 256 singular values",
        &target,
        &fits,
        Some((1e-9, "round-off floor")),
        &png,
    )
    .unwrap();
    assert_eq!(png_size(&png), (1000, 700));
    assert_no_temp_files(&dir);
    finish(&dir);
}

#[test]
fn paper_table_matches_design() {
    assert_eq!(paper_value("orthogonal", 72, "abba"), Some(0.416));
    assert_eq!(paper_value("orthogonal", 8, "lora"), Some(0.992));
    // A cell from each other panel, first and last rows, so a shifted column or row shows.
    assert_eq!(paper_value("low-rank", 8, "abba"), Some(0.840));
    assert_eq!(paper_value("sparse", 72, "lora"), Some(0.709));
    assert_eq!(paper_value("random", 40, "abba"), Some(0.171));
    assert_eq!(fig2_paper_values().len(), 36);
}
