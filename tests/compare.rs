//! `abba compare`: a tiny grid on a random byte-level Llama (seconds), run whole, in 3 shards merged, killed
//! mid-append and re-run, and one cell at 1 and 2 threads; spec checks through the binary (one line, exit ≠ 0,
//! nothing written).

use std::path::{Path, PathBuf};
use std::process::Command;

use abba::compare::cell::{GridContext, run_cell};
use abba::compare::grid::expand;
use abba::compare::record::{CellRecord, CellStatus};
use abba::compare::store::{merge_files, read_records};
use abba::compare::{CompareOptions, CompareSpec, run_compare, write_reports};
use abba::study::Shard;
use candle_core::Device;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("abba-compare-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const SPEC: &str = r#"
task = "tiny"
metric = "loss"
seeds = [0, 1]
budgets = [2]

[model]
tokenizer = "bytes"
[model.random]
vocab_size = 259
hidden_size = 16
intermediate_size = 32
num_hidden_layers = 1
num_attention_heads = 2
num_key_value_heads = 1
max_position_embeddings = 512

[data]
synthetic = { train = 8, validation = 4, test = 4, seed = 3 }
max_len = 320

[adapter]
dropout = 0.1

[[methods]]
method = "lora"
lrs = [1e-3, 1e-2]

[[methods]]
method = "abba"
alpha = 2.0
lrs = [1e-3, 1e-2]

[[methods]]
method = "full"
lrs = [1e-4, 1e-3]

[train]
max_steps = 3
batch_size = 2
warmup_ratio = 0.0

[eval]
generate = 1
max_new_tokens = 4
batch_size = 4
"#;

fn spec() -> CompareSpec {
    CompareSpec::parse(SPEC).unwrap()
}

fn opts(shard: Option<Shard>, jobs: usize) -> CompareOptions {
    CompareOptions {
        shard,
        force: false,
        jobs: Some(jobs),
        device: Device::Cpu,
        verbose: false,
    }
}

/// Rows by cell id, with the columns that depend on the machine's load blanked.
fn canonical(mut rows: Vec<CellRecord>) -> Vec<CellRecord> {
    for r in &mut rows {
        r.train_seconds = 0.0;
        r.peak_rss_mib = 0.0;
    }
    rows.sort_by(|a, b| a.cell_id.cmp(&b.cell_id));
    rows
}

/// NaN-aware equality of the metric columns (NaN ≠ NaN for `PartialEq`).
fn same(a: &[CellRecord], b: &[CellRecord]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        let key = |r: &CellRecord| {
            let mut r = r.clone();
            for v in [
                &mut r.validation,
                &mut r.test,
                &mut r.val_loss,
                &mut r.val_accuracy,
                &mut r.val_exact_match,
                &mut r.test_loss,
                &mut r.test_accuracy,
                &mut r.test_exact_match,
                &mut r.test_kept,
            ] {
                if v.is_nan() {
                    *v = -12345.0;
                }
            }
            r
        };
        assert_eq!(key(x), key(y));
    }
}

fn ids(rows: &[CellRecord]) -> Vec<String> {
    let mut v: Vec<String> = rows.iter().map(|r| r.cell_id.clone()).collect();
    v.sort();
    v
}

#[test]
fn grid_shards_resume_and_report() {
    let spec = spec();
    let cells = expand(&spec);
    assert_eq!(cells.len(), 12, "full 2×2, lora 2×2, abba 2×2");

    // The whole grid in one process, two cells at a time.
    let whole = scratch("whole");
    let (summary, _) = run_compare(&spec, &whole, &opts(None, 2)).unwrap();
    assert_eq!(summary.planned, 12);
    assert_eq!(summary.ok + summary.diverged, 12, "{summary:?}");
    let rows = canonical(read_records(&whole.join("results.csv")).unwrap());
    assert_eq!(rows.len(), 12);
    assert!(
        rows.iter()
            .all(|r| r.status == CellStatus::Ok && r.validation.is_finite())
    );
    // Equal budgets: LoRA and ABBA (r1 = r2 = 1) train the same number of parameters.
    let params = |m: &str| rows.iter().find(|r| r.method == m).unwrap().params;
    assert_eq!(params("lora"), params("abba"));
    assert!(params("full") > params("lora"));
    // Each cell is an ordinary fine-tuning run directory with its test scores.
    for r in &rows {
        let dir = whole.join("runs").join(&r.cell_id);
        assert!(dir.join("report.json").is_file() && dir.join("test.json").is_file());
    }
    let written = write_reports(&whole).unwrap();
    assert_eq!(written.len(), 3, "{written:?}");
    let md = std::fs::read_to_string(whole.join("summary.md")).unwrap();
    assert!(
        md.contains("| abba |") && md.contains("(reference)"),
        "{md}"
    );

    // Re-running does nothing.
    let (again, _) = run_compare(&spec, &whole, &opts(None, 2)).unwrap();
    assert_eq!((again.planned, again.skipped), (12, 12));

    // Three shards, merged, equal the whole grid.
    let sharded = scratch("shards");
    let mut files = Vec::new();
    for k in 0..3 {
        let shard = Some(Shard { index: k, count: 3 });
        run_compare(&spec, &sharded, &opts(shard, 1)).unwrap();
        files.push(sharded.join(format!("results-shard-{k}-of-3.csv")));
    }
    let (n, dropped) = merge_files(&files, &sharded.join("results.csv")).unwrap();
    assert_eq!((n, dropped), (12, 0));
    same(
        &canonical(read_records(&sharded.join("results.csv")).unwrap()),
        &rows,
    );

    // Killed mid-grid: keep 5 rows and half of the sixth (a torn append), delete two finished run directories'
    // reports, and re-run: every cell exactly once, with the same numbers.
    let killed = scratch("killed");
    copy_dir(&whole, &killed);
    let csv = killed.join("results.csv");
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut cut = lines[..6].join("\n");
    cut.push('\n');
    cut.push_str(&lines[6][..lines[6].len() / 2]);
    std::fs::write(&csv, cut).unwrap();
    let kept = read_records(&csv).unwrap();
    assert_eq!(kept.len(), 5);
    for r in rows
        .iter()
        .filter(|r| !kept.iter().any(|k| k.cell_id == r.cell_id))
        .take(2)
    {
        std::fs::remove_file(killed.join("runs").join(&r.cell_id).join("report.json")).unwrap();
    }
    let (resumed, _) = run_compare(&spec, &killed, &opts(None, 2)).unwrap();
    assert_eq!(resumed.skipped, 5);
    let after = canonical(read_records(&csv).unwrap());
    assert_eq!(ids(&after), ids(&rows), "no duplicate and no missing cell");
    same(&after, &rows);
}

#[test]
fn one_cell_is_identical_at_one_and_two_threads() {
    let spec = spec();
    let cell = expand(&spec)
        .into_iter()
        .find(|c| spec.methods[c.method].label == "abba")
        .unwrap();
    let run_in = |threads: usize| {
        let dir = scratch(&format!("threads{threads}"));
        let ctx = GridContext::new(&spec, None, &dir, Device::Cpu).unwrap();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| run_cell(&spec, &cell, &ctx, false))
    };
    let (one, two) = (run_in(1), run_in(2));
    assert_eq!(one.status, CellStatus::Ok, "{}", one.reason);
    same(&canonical(vec![one]), &canonical(vec![two]));
}

#[test]
fn an_unreachable_budget_is_a_failed_cell_not_a_crash() {
    // KRAdapter has one size per layer; a LoRA-rank-1 budget on 16-wide layers is far from it.
    let text = SPEC
        .replace("budgets = [2]", "budgets = [1]")
        .replace("method = \"abba\"\nalpha = 2.0", "method = \"kradapter\"");
    let spec = CompareSpec::parse(&text).unwrap();
    let dir = scratch("unreachable");
    let (summary, records) = run_compare(&spec, &dir, &opts(None, 2)).unwrap();
    let failed: Vec<&CellRecord> = records
        .iter()
        .filter(|r| r.status == CellStatus::Failed)
        .collect();
    assert_eq!(summary.failed, failed.len());
    assert!(failed.iter().all(|r| r.method == "kradapter"), "{failed:?}");
    assert_eq!(failed.len(), 4);
    assert!(failed[0].reason.contains("budget"), "{}", failed[0].reason);
    write_reports(&dir).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// The spec checks, through the binary: one line naming the problem, exit ≠ 0, no output directory.
#[test]
fn bad_specs_are_refused_before_anything_is_written() {
    let dir = scratch("bad");
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "lr-negative",
            "lrs = [1e-3, 1e-2]",
            &["-1", "finite and > 0"],
        ),
        ("lr-nan", "lrs = [1e-3, 1e-2]", &["NaN", "finite and > 0"]),
        ("lr-zero", "lrs = [1e-3, 1e-2]", &["0", "finite and > 0"]),
        ("trials", "lrs = [1e-3, 1e-2]", &["same number of trials"]),
        ("one-seed", "seeds = [0, 1]", &["at least 2"]),
        ("budget-zero", "budgets = [2]", &["budget 0"]),
        ("sized", "alpha = 2.0", &["remove them"]),
        (
            "train-lr",
            "warmup_ratio = 0.0",
            &["remove lr from [train]"],
        ),
        ("reference", "task = \"tiny\"", &["reference 'dora'"]),
    ];
    for (name, from, needles) in cases {
        let to = match *name {
            "lr-negative" => "lrs = [-1.0, 1e-2]",
            "lr-nan" => "lrs = [nan, 1e-2]",
            "lr-zero" => "lrs = [0.0, 1e-2]",
            "trials" => "lrs = [1e-3]",
            "one-seed" => "seeds = [0]",
            "budget-zero" => "budgets = [2, 0]",
            "sized" => "alpha = 2.0\nr1 = 2",
            "train-lr" => "warmup_ratio = 0.0\nlr = 0.5",
            "reference" => "task = \"tiny\"\nreference = \"dora\"",
            _ => unreachable!(),
        };
        let out = dir.join(name);
        let text = format!(
            "out = \"{}\"\n{}",
            out.display(),
            SPEC.replacen(from, to, 1)
        );
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        let result = Command::new(env!("CARGO_BIN_EXE_abba"))
            .args(["compare", "--device", "cpu"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(!result.status.success(), "{name}: accepted");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{name}: {stderr}");
        for n in *needles {
            assert!(lines[0].contains(n), "{name}: '{}' lacks '{n}'", lines[0]);
        }
        assert!(!out.exists(), "{name}: wrote {}", out.display());
    }
}

/// The same one-method grid through the binary with candle's and the grid's threads at 1 and at 2 (a model wide
/// enough for candle's matrix products to split across threads): identical rows.
#[test]
fn a_grid_is_identical_with_one_and_two_threads_through_the_binary() {
    let dir = scratch("binthreads");
    let text = SPEC
        .replace("hidden_size = 16", "hidden_size = 64")
        .replace("intermediate_size = 32", "intermediate_size = 128")
        .replace("[[methods]]\nmethod = \"lora\"\nlrs = [1e-3, 1e-2]\n", "")
        .replace("[[methods]]\nmethod = \"full\"\nlrs = [1e-4, 1e-3]\n", "")
        .replace("lrs = [1e-3, 1e-2]", "lrs = [1e-2]")
        .replace("task = \"tiny\"", "task = \"tiny\"\nreference = \"abba\"");
    let spec_path = dir.join("spec.toml");
    std::fs::write(&spec_path, &text).unwrap();
    assert_eq!(expand(&CompareSpec::parse(&text).unwrap()).len(), 2);
    let run = |threads: &str| {
        let out = dir.join(format!("out{threads}"));
        let result = Command::new(env!("CARGO_BIN_EXE_abba"))
            .env("RAYON_NUM_THREADS", threads)
            .args([
                "compare",
                "--quiet",
                "--device",
                "cpu",
                "--no-report",
                "--jobs",
                threads,
            ])
            .arg(&spec_path)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            result.status.success(),
            "{}",
            String::from_utf8_lossy(&result.stderr)
        );
        canonical(read_records(&out.join("results.csv")).unwrap())
    };
    let (one, two) = (run("1"), run("2"));
    assert!(one.iter().all(|r| r.status == CellStatus::Ok), "{one:?}");
    same(&one, &two);
}

/// A grid killed by SIGKILL at several points and re-run: no duplicate and no missing cell, and the same numbers
/// as a grid run in one go.
#[test]
fn a_grid_killed_by_sigkill_and_rerun_has_every_cell_once() {
    let dir = scratch("sigkill");
    let spec_path = dir.join("spec.toml");
    std::fs::write(&spec_path, SPEC).unwrap();
    let run = |out: &Path| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_abba"));
        c.args([
            "compare",
            "--quiet",
            "--device",
            "cpu",
            "--no-report",
            "--jobs",
            "2",
        ])
        .arg(&spec_path)
        .arg("--out")
        .arg(out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
        c
    };
    let clean = dir.join("clean");
    assert!(run(&clean).status().unwrap().success());
    let reference = canonical(read_records(&clean.join("results.csv")).unwrap());

    let killed = dir.join("killed");
    // Kill points spread over the grid's run time (from the clean run's row count per second, roughly).
    let mut counts = Vec::new();
    for delay_ms in [150u64, 400, 700, 1100, 1600] {
        let mut child = run(&killed).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        counts.push(read_records(&killed.join("results.csv")).unwrap().len());
    }
    assert!(
        counts[0] < reference.len(),
        "the first kill came too late: {counts:?}"
    );
    assert!(run(&killed).status().unwrap().success());
    let after = canonical(read_records(&killed.join("results.csv")).unwrap());
    assert_eq!(
        ids(&after),
        ids(&reference),
        "no duplicate and no missing cell"
    );
    same(&after, &reference);
}

/// A toy spec (hidden 16, rank 4, the shipped 5k MNIST sample) in `dir`, with the given sizes and epochs (TOML
/// lines) and toy methods (a TOML list); its path.
fn write_toy(dir: &Path, sizes: &str, methods: &str) -> PathBuf {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist/mnist_5k.csv.gz");
    let toy = dir.join("toy.toml");
    std::fs::write(
        &toy,
        format!(
            "task = \"mnist-toy\"\ndata = \"{}\"\nout = \"{}\"\n{sizes}\nhidden = 16\nrank = 4\nmethods = {methods}\n",
            data.display(),
            dir.join("unused").display()
        ),
    )
    .unwrap();
    toy
}

/// The MNIST toy as a comparison: every cell pretrains the seed's base on 0–7 and adapts it to 8–9; LoRA and
/// ABBA train the same parameter count; accuracy kept on 0–7 is recorded.
#[test]
fn the_mnist_toy_runs_as_a_comparison() {
    let dir = scratch("toy");
    let toy = write_toy(
        &dir,
        "train_per_class = 30\ntest_per_class = 10\npretrain_epochs = 2\nadapt_epochs = 2",
        "[\"lora\", \"abba\", \"full\"]",
    );
    let text = format!(
        "task = \"toy\"\nmetric = \"accuracy\"\nseeds = [0, 1]\nbudgets = [2, 4]\ntoy = \"{}\"\n\
         [[methods]]\nmethod = \"lora\"\nlrs = [1e-3, 1e-2]\n[[methods]]\nmethod = \"abba\"\nlrs = [1e-3, 1e-2]\n\
         [[methods]]\nmethod = \"full\"\nlrs = [1e-3, 1e-2]\n",
        toy.display()
    );
    let spec = CompareSpec::parse(&text).unwrap();
    let out = dir.join("out");
    let (summary, records) = run_compare(&spec, &out, &opts(None, 2)).unwrap();
    assert_eq!(summary.planned, 4 + 2 * 2 * 4);
    assert_eq!(summary.failed, 0, "{records:?}");
    let at = |m: &str, b: usize| {
        records
            .iter()
            .find(|r| r.method == m && r.budget_rank == b)
            .unwrap()
    };
    assert_eq!(at("lora", 2).params, at("abba", 2).params);
    assert_eq!(at("lora", 4).params, 2 * at("lora", 2).params);
    assert!(
        records
            .iter()
            .all(|r| r.test_kept.is_finite() && r.validation.is_finite())
    );
    assert_eq!(write_reports(&out).unwrap().len(), 3);
    // Re-running reads every cell back.
    let (again, _) = run_compare(&spec, &out, &opts(None, 2)).unwrap();
    assert_eq!(again.skipped, again.planned);

    // An LLM-only metric is refused for the toy.
    let err = CompareSpec::parse(&text.replace("\"accuracy\"", "\"exact_match\"")).unwrap_err();
    assert!(
        err.to_string().contains("not measured by the MNIST toy"),
        "{err}"
    );
}

/// A comparison is at equal budget or not at all: in the toy, a method whose sizes cannot reach the budget
/// (KRAdapter has one size per layer shape) is a failed cell naming its sizes, never a run at another size.
#[test]
fn toy_cells_train_every_method_at_the_budget_or_fail() {
    let dir = scratch("toy-budget");
    let toy = write_toy(
        &dir,
        "train_per_class = 20\ntest_per_class = 5\npretrain_epochs = 1\nadapt_epochs = 1",
        "[\"lora\"]",
    );
    let text = format!(
        "task = \"toy-budget\"\nmetric = \"accuracy\"\nseeds = [0, 1]\nbudgets = [2]\ntoy = \"{}\"\n\
         [[methods]]\nmethod = \"lora\"\nlrs = [1e-3]\n[[methods]]\nmethod = \"kradapter\"\nlrs = [1e-3]\n",
        toy.display()
    );
    let spec = CompareSpec::parse(&text).unwrap();
    let (_, records) = run_compare(&spec, &dir.join("out"), &opts(None, 2)).unwrap();
    let lora = records.iter().find(|r| r.method == "lora").unwrap().params as f64;
    for r in records.iter().filter(|r| r.method == "kradapter") {
        match r.status {
            CellStatus::Failed => assert!(r.reason.contains("cannot reach"), "{}", r.reason),
            _ => assert!(
                (r.params as f64 - lora).abs() <= 0.1 * lora,
                "kradapter trained {} parameters at a budget of {lora}",
                r.params
            ),
        }
    }
}
