//! Study specs that cannot run are refused before anything is written (issue 10, item 5): a learning rate ≤ 0 or
//! not finite in a solver, and matrices that cannot fit in memory — one line naming the problem, exit ≠ 0, no
//! output directory.

use std::process::Command;

const SPEC: &str = r#"
name = "checks"
rows = 16
cols = 12
seeds = [0]
methods = ["lora", "abba"]
ranks = [2]

[[targets]]
kind = "random"

[[solvers]]
kind = "adam"
steps = 5
lr = 0.01
"#;

#[test]
fn bad_study_specs_are_one_line_errors_and_write_nothing() {
    let dir = std::env::temp_dir().join(format!("abba-study-checks-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cases: &[(&str, &str, &str, &[&str])] = &[
        (
            "nan",
            "lr = 0.01",
            "lr = nan",
            &["lr = NaN", "finite and > 0"],
        ),
        (
            "negative",
            "lr = 0.01",
            "lr = -1.0",
            &["lr = -1", "finite and > 0"],
        ),
        (
            "zero",
            "lr = 0.01",
            "lr = 0.0",
            &["lr = 0", "finite and > 0"],
        ),
        (
            "huge",
            "rows = 16\ncols = 12",
            "rows = 1000000\ncols = 1000000",
            &["1000000 × 1000000", "TB", "smaller rows and cols"],
        ),
    ];
    for (name, from, to, needles) in cases {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, SPEC.replacen(from, to, 1)).unwrap();
        let out_dir = dir.join(format!("{name}-out"));
        let out = Command::new(env!("CARGO_BIN_EXE_abba"))
            .arg("study")
            .arg(&path)
            .arg("--out")
            .arg(&out_dir)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: accepted");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{name}: {stderr}");
        for n in *needles {
            assert!(lines[0].contains(n), "{name}: '{}' lacks '{n}'", lines[0]);
        }
        assert!(!out_dir.exists(), "{name}: wrote {}", out_dir.display());
    }
    // The same spec with a sound lr is accepted (the checks do not refuse everything).
    let path = dir.join("ok.toml");
    std::fs::write(&path, SPEC).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_abba"))
        .arg("study")
        .arg(&path)
        .arg("--out")
        .arg(dir.join("ok-out"))
        .arg("--no-report")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
