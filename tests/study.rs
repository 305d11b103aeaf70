//! The study runner end to end, through the `abba` binary: reproduction, determinism, kill-and-resume, shards,
//! divergence and bad input.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use abba::study::StudySpec;
use abba::study::record::{RunRecord, Status};
use abba::study::store::read_records;

fn abba() -> Command {
    Command::new(env!("CARGO_BIN_EXE_abba"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("abba-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_spec(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("spec.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("the abba binary runs")
}

/// `abba study SPEC --out OUT EXTRA...`
fn study(spec: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = abba();
    cmd.arg("study").arg(spec).arg("--out").arg(out).args(extra);
    cmd
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Rows with the machine-dependent columns blanked, sorted.
fn deterministic_rows(records: &[RunRecord]) -> Vec<String> {
    let mut rows: Vec<String> = records
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.wall_s = 0.0;
            r.peak_rss_mb = 0.0;
            format!("{r:?}")
        })
        .collect();
    rows.sort();
    rows
}

const SMALL: &str = r#"
name = "small"
rows = 48
cols = 40
seeds = [0, 1]
methods = ["lora", "abba"]
ranks = [4, 8]
abba_rules = ["half", "full"]

[[targets]]
kind = "orthogonal"

[[targets]]
kind = "sparse"

[[solvers]]
kind = "svd"

[[solvers]]
kind = "als"
sweeps = 15
methods = ["abba"]

[[solvers]]
kind = "adam"
steps = 60
methods = ["abba"]
"#;

#[test]
fn reproduce_fig2_quick_writes_every_run_its_plots_and_a_summary() {
    let out = scratch("quick");
    let o = run(abba()
        .args(["reproduce", "fig2", "--quick", "--out"])
        .arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    let spec =
        StudySpec::from_toml(include_str!("../experiments/fig2-quick.toml"), "quick").unwrap();
    let planned = abba::study::grid::expand(&spec).unwrap().len();
    let records = read_records(&out.join("results.csv")).unwrap();
    assert_eq!(records.len(), planned);
    assert!(
        records.iter().all(|r| r.status == Status::Ok),
        "{records:#?}"
    );
    for file in [
        "fig2.png",
        "fig2.svg",
        "summary.md",
        "convergence-orthogonal.png",
        "spectra-orthogonal.png",
    ] {
        assert!(
            std::fs::metadata(out.join(file))
                .map(|m| m.len() > 0)
                .unwrap_or(false),
            "{file} missing"
        );
    }
    for r in &records {
        assert!(out.join("runs").join(&r.run_id).join("curve.csv").exists());
    }
    // Re-running finds everything done and adds nothing.
    let o = run(abba()
        .args(["reproduce", "fig2", "--quick", "--out"])
        .arg(&out));
    assert!(o.status.success());
    assert_eq!(
        read_records(&out.join("results.csv")).unwrap().len(),
        planned
    );
}

/// The deterministic rows of study `text` run once per `RAYON_NUM_THREADS` value.
fn rows_at_thread_counts<const N: usize>(
    name: &str,
    text: &str,
    threads: [&str; N],
) -> Vec<Vec<String>> {
    let dir = scratch(name);
    let spec = write_spec(&dir, text);
    threads
        .iter()
        .map(|t| {
            let out = dir.join(format!("t{t}"));
            let o = run(study(&spec, &out, &["--no-report"]).env("RAYON_NUM_THREADS", t));
            assert!(o.status.success(), "{}", stderr(&o));
            deterministic_rows(&read_records(&out.join("results.csv")).unwrap())
        })
        .collect()
}

#[test]
fn same_spec_and_seed_give_identical_rows_at_any_thread_count() {
    let rows = rows_at_thread_counts("threads", SMALL, ["1", "2"]);
    assert!(!rows[0].is_empty());
    assert_eq!(rows[0], rows[1]);
}

/// At 512² faer splits its SVDs between threads, and how many it splits them between changes their bits: with
/// faer's default (all of rayon's threads) the svd run's sv_error differed in its last digit at 1 and 2 threads.
/// 1 and 3 threads here, so that neither is the fixed split of 2.
#[test]
fn decompositions_give_the_same_bits_at_any_thread_count() {
    let rows = rows_at_thread_counts(
        "threads-svd",
        r#"
name = "svd-threads"
rows = 512
cols = 512
seeds = [0]
methods = ["lora", "abba"]
ranks = [8]
abba_rules = ["half"]

[[targets]]
kind = "random"

[[solvers]]
kind = "svd"

[[solvers]]
kind = "als"
sweeps = 2
methods = ["abba"]
"#,
        ["1", "3"],
    );
    assert_eq!(rows[0].len(), 2);
    assert_eq!(rows[0], rows[1]);
}

/// ABBA `full` at budget 4 and `half` at budget 8 are the same fit (r1 = r2 = 4): the runner fits it once and
/// records it under both labels, with the numbers the half-rule run gets when it is the only run of its study.
#[test]
fn runs_differing_only_in_rule_and_budget_share_one_fit_with_the_numbers_it_gets_alone() {
    let dir = scratch("shared-fit");
    let run_spec = |name: &str, text: &str| {
        let sub = dir.join(name);
        std::fs::create_dir_all(&sub).unwrap();
        let out = sub.join("out");
        let o = run(&mut study(&write_spec(&sub, text), &out, &["--no-report"]));
        assert!(o.status.success(), "{}", stderr(&o));
        read_records(&out.join("results.csv")).unwrap()
    };
    let both = run_spec("both", SMALL);
    let alone = run_spec(
        "alone",
        &SMALL.replace("ranks = [4, 8]", "ranks = [8]").replace(
            r#"abba_rules = ["half", "full"]"#,
            r#"abba_rules = ["half"]"#,
        ),
    );
    let halves: Vec<&RunRecord> = alone
        .iter()
        .filter(|r| r.method == "abba" && r.rule == "half")
        .collect();
    assert_eq!(halves.len(), 8); // 2 targets × 2 seeds × 2 solvers
    for half in halves {
        let same = |a: &RunRecord, b: &RunRecord| {
            deterministic_rows(std::slice::from_ref(a))
                == deterministic_rows(std::slice::from_ref(b))
        };
        let in_both = both.iter().find(|r| r.run_id == half.run_id).unwrap();
        assert!(same(in_both, half), "{in_both:?}\n{half:?}");
        let full = both
            .iter()
            .find(|r| {
                r.rule == "full"
                    && r.budget_rank == 4
                    && (&r.target, r.seed, &r.solver) == (&half.target, half.seed, &half.solver)
            })
            .unwrap();
        assert_ne!(full.run_id, half.run_id);
        assert_eq!(
            (full.r1, full.r2, full.params),
            (half.r1, half.r2, half.params)
        );
        assert_eq!((full.error, full.steps), (in_both.error, in_both.steps));
        // One fit, so one measured time (two fits never take the same nanoseconds).
        assert_eq!(full.wall_s, in_both.wall_s);
    }
}

#[test]
fn a_killed_sweep_resumes_with_no_duplicate_or_missing_row() {
    let dir = scratch("kill");
    let spec_text = SMALL
        .replace("rows = 48", "rows = 160")
        .replace("cols = 40", "cols = 160")
        .replace("sweeps = 15", "sweeps = 60");
    let spec = write_spec(&dir, &spec_text);
    let out = dir.join("out");
    let csv = out.join("results.csv");
    let mut child = study(&spec, &out, &["--no-report"]).spawn().unwrap();
    let started = Instant::now();
    loop {
        let rows = read_records(&csv).map(|r| r.len()).unwrap_or(0);
        if rows >= 3 || started.elapsed() > Duration::from_secs(120) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = read_records(&csv).unwrap().len();
    // Simulate the worst moment to die: in the middle of writing a row.
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&csv)
        .unwrap()
        .write_all(b"deadbeef,small,orth")
        .unwrap();
    let o = run(&mut study(&spec, &out, &["--no-report"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let records = read_records(&csv).unwrap();
    let planned =
        abba::study::grid::expand(&StudySpec::from_toml(&spec_text, "s").unwrap()).unwrap();
    let ids: HashSet<&str> = records.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(ids.len(), records.len(), "duplicate rows");
    assert_eq!(
        records.len(),
        planned.len(),
        "missing rows (had {before} before the kill)"
    );
    assert!(
        before < planned.len(),
        "the kill came too late to test anything"
    );
}

#[test]
fn shards_merge_into_the_whole_study() {
    let dir = scratch("shards");
    let spec = write_spec(&dir, SMALL);
    let out = dir.join("out");
    for k in ["0/3", "1/3", "2/3"] {
        let o = run(&mut study(&spec, &out, &["--shard", k]));
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let merged = out.join("results.csv");
    let o = run(abba()
        .arg("merge")
        .arg(&out)
        .arg("--out")
        .arg(&merged)
        .arg("--report"));
    assert!(o.status.success(), "{}", stderr(&o));
    let whole = dir.join("whole");
    let o = run(&mut study(&spec, &whole, &["--no-report"]));
    assert!(o.status.success());
    assert_eq!(
        deterministic_rows(&read_records(&merged).unwrap()),
        deterministic_rows(&read_records(&whole.join("results.csv")).unwrap())
    );
    assert!(out.join("fig2.png").exists());
}

#[test]
fn force_reruns_every_run_without_duplicating_rows() {
    let dir = scratch("force");
    let spec = write_spec(&dir, SMALL);
    let out = dir.join("out");
    let csv = out.join("results.csv");
    let first = run(&mut study(&spec, &out, &["--no-report"]));
    assert!(first.status.success(), "{}", stderr(&first));
    let before = read_records(&csv).unwrap();
    let again = run(&mut study(&spec, &out, &["--no-report", "--force"]));
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(String::from_utf8_lossy(&again.stdout).contains("0 already done"));
    let after = read_records(&csv).unwrap();
    let ids: HashSet<&str> = after.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!((after.len(), ids.len()), (before.len(), before.len()));
    assert_eq!(
        deterministic_rows(&after),
        deterministic_rows(&before),
        "a re-run computes the same numbers"
    );
}

#[test]
fn a_diverging_run_is_recorded_and_the_sweep_goes_on() {
    let dir = scratch("diverge");
    let spec = write_spec(&dir, &SMALL.replace("steps = 60", "steps = 60\nlr = 1e6"));
    let out = dir.join("out");
    let o = run(&mut study(&spec, &out, &["--no-report"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let records = read_records(&out.join("results.csv")).unwrap();
    let adam: Vec<&RunRecord> = records.iter().filter(|r| r.solver == "adam").collect();
    assert!(
        !adam.is_empty()
            && adam
                .iter()
                .all(|r| r.status == Status::Diverged && !r.reason.is_empty())
    );
    assert!(
        records
            .iter()
            .filter(|r| r.solver != "adam")
            .all(|r| r.status == Status::Ok)
    );
}

/// Runs a study that must be refused: exit ≠ 0, one line on stderr naming the problem, no results written.
fn refused(name: &str, spec_text: &str, out: Option<PathBuf>) -> String {
    let dir = scratch(name);
    let spec = write_spec(&dir, spec_text);
    let out = out.unwrap_or_else(|| dir.join("out"));
    let o = run(&mut study(&spec, &out, &[]));
    let err = stderr(&o);
    assert!(!o.status.success(), "{name}: accepted");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{name}: not one line: {err}"
    );
    assert!(!err.contains("panicked"), "{name}: {err}");
    assert!(!out.join("results.csv").exists(), "{name}: wrote results");
    err
}

#[test]
fn bad_input_is_one_clear_line_and_writes_nothing() {
    let err = refused(
        "toml",
        &SMALL.replace("ranks = [4, 8]", "ranks = [4, 8"),
        None,
    );
    assert!(err.contains("spec.toml:7:"), "{err}"); // line 7 holds `ranks`
    let err = refused(
        "method",
        &SMALL.replace(r#""lora", "abba""#, r#""lora", "abbba""#),
        None,
    );
    assert!(err.contains("abbba") && err.contains("hira"), "{err}");
    let err = refused(
        "target",
        &SMALL.replace(r#"kind = "orthogonal""#, r#"kind = "orthogonl""#),
        None,
    );
    assert!(
        err.contains("orthogonl") && err.contains("low-rank"),
        "{err}"
    );
    let err = refused(
        "budget",
        &SMALL.replace("ranks = [4, 8]", "ranks = [4, 80]"),
        None,
    );
    assert!(err.contains("rank 80"), "{err}");
    let err = refused(
        "rule",
        &SMALL.replace(
            r#"abba_rules = ["half", "full"]"#,
            r#"abba_rules = ["hlaf"]"#,
        ),
        None,
    );
    assert!(err.contains("hlaf") && err.contains("half"), "{err}");
    let err = refused(
        "w0",
        &SMALL.replace(r#"methods = ["lora", "abba"]"#, r#"methods = ["hira"]"#),
        None,
    );
    assert!(err.contains("W0"), "{err}");

    // A NaN in a loaded target.
    let dir = scratch("nan");
    let npy = dir.join("t.npy");
    common::write_npy_f64(
        &npy,
        4,
        3,
        &[
            1.0,
            2.0,
            3.0,
            4.0,
            5.0,
            f64::NAN,
            7.0,
            8.0,
            9.0,
            10.0,
            11.0,
            12.0,
        ],
    );
    let spec = SMALL.replace("ranks = [4, 8]", "ranks = [2]").replace(
        r#"kind = "sparse""#,
        &format!("kind = \"npy\"\npath = \"{}\"", npy.display()),
    );
    let err = refused("nan-target", &spec, None);
    assert!(err.contains("non-finite"), "{err}");

    let err = refused(
        "missing-file",
        &SMALL.replace(
            r#"kind = "sparse""#,
            "kind = \"npy\"\npath = \"/nonexistent/t.npy\"",
        ),
        None,
    );
    assert!(err.contains("/nonexistent/t.npy"), "{err}");

    // An output path that cannot be created (below a regular file).
    let blocker = scratch("unwritable").join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let err = refused("unwritable-run", SMALL, Some(blocker.join("out")));
    assert!(err.contains("cannot access"), "{err}");

    // A spec file that does not exist.
    let o = run(abba().args(["study", "/nonexistent/spec.toml"]));
    assert!(!o.status.success() && stderr(&o).contains("/nonexistent/spec.toml"));
}
