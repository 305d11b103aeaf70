//! `abba bench`: our Adam step and ALS sweep beside PyTorch's Adam step, in one invocation, as CSV.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};
use clap::Args;

use abba::bench::{AbbaProblem, adam_step_ms, als_sweep_ms, gemm_floor_ms};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// CSV to write.
    #[arg(long, short, default_value = "results/bench/fit_step.csv")]
    pub out: PathBuf,
    /// Python with torch for the competitor (benches/torch_abba_step.py); skipped with a warning if it fails.
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// Threads for both implementations (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Timed iterations of each loop.
    #[arg(long, default_value_t = 30)]
    pub iters: usize,
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    #[arg(long, default_value_t = 36)]
    pub rank: usize,
}

const TORCH_SCRIPT: &str = include_str!("../../benches/torch_abba_step.py");

fn torch_ms(args: &BenchArgs, threads: usize) -> Result<(f64, String)> {
    let script = std::env::temp_dir().join(format!("abba-torch-bench-{}.py", std::process::id()));
    std::fs::write(&script, TORCH_SCRIPT)?;
    let (n, r) = (args.size.to_string(), args.rank.to_string());
    let out = Command::new(&args.python)
        .arg(&script)
        .args([
            "--m",
            &n,
            "--n",
            &n,
            "--r1",
            &r,
            "--r2",
            &r,
            "--steps",
            &args.iters.to_string(),
        ])
        .args(["--threads", &threads.to_string()])
        .output();
    let _ = std::fs::remove_file(&script);
    let out = out.with_context(|| format!("running {}", args.python))?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or("failed")
    );
    let line = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value =
        serde_json::from_str(line.trim()).context("reading the torch script's JSON line")?;
    let ms = v["ms_per_step"].as_f64().context("no ms_per_step")?;
    Ok((ms, format!("torch {}", v["torch"].as_str().unwrap_or("?"))))
}

pub fn run(args: BenchArgs) -> Result<()> {
    let threads = if args.threads == 0 {
        rayon::current_num_threads()
    } else {
        args.threads
    };
    abba::linalg::set_threads(threads);
    let (n, r) = (args.size, args.rank);
    let mut p = AbbaProblem::new(n, n, r, r, 0);
    let floor = gemm_floor_ms(&p, 3, args.iters);
    let adam = adam_step_ms(&mut p, 3, args.iters);
    let mut p = AbbaProblem::new(n, n, r, r, 0);
    let als = als_sweep_ms(&mut p, 1, (args.iters / 5).max(3));
    let ours = format!(
        "abba {} ({})",
        env!("CARGO_PKG_VERSION"),
        env!("ABBA_GIT_COMMIT")
    );
    let torch = torch_ms(&args, threads);
    let mut csv = String::from(
        "implementation,operation,m,n,r1,r2,threads,ms,ratio_to_pytorch_adam,ratio_to_gemm_floor,version\n",
    );
    let (torch_cell, torch_version) = match &torch {
        Ok((ms, v)) => (Some(*ms), v.clone()),
        Err(e) => {
            eprintln!(
                "abba: warning: PyTorch competitor skipped ({e}); pass --python PATH to a Python with torch"
            );
            (None, "unavailable".into())
        }
    };
    let ratio = |ms: f64| torch_cell.map_or(String::new(), |t| format!("{:.3}", ms / t));
    let mut row = |imp: &str, op: &str, ms: f64, to_torch: String, version: &str| {
        csv.push_str(&format!(
            "{imp},{op},{n},{n},{r},{r},{threads},{ms:.3},{to_torch},{:.3},{version}\n",
            ms / floor
        ));
    };
    row("abba", "gemm-floor-6-products", floor, String::new(), &ours);
    row("abba", "adam-step", adam, ratio(adam), &ours);
    row("abba", "als-sweep", als, String::new(), &ours);
    if let Some(t) = torch_cell {
        row("pytorch", "adam-step", t, "1.000".into(), &torch_version);
    }
    abba::study::store::write_atomic(&args.out, csv.as_bytes())?;
    print!("{csv}");
    println!("wrote {}", args.out.display());
    Ok(())
}
