//! `abba finetune <config.toml>…`: run fine-tuning jobs (a Llama-family model with an adapter, or the MNIST toy).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use abba::finetune::device::DeviceChoice;
use abba::finetune::job::{FinetuneSpec, RunOptions, run_finetune};

#[derive(Args, Debug)]
pub struct FinetuneArgs {
    /// Fine-tuning configs (experiments/finetune-*.toml), run in order.
    #[arg(required = true)]
    pub configs: Vec<PathBuf>,
    /// Where tensors live: cpu, cuda (needs a --features cuda build) or auto.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Start over instead of resuming from the latest checkpoint in the output directory.
    #[arg(long)]
    pub restart: bool,
    /// Re-run jobs whose output directory already holds a report.json.
    #[arg(long)]
    pub force: bool,
    /// After the runs, compare every run of these configs side by side in this directory (results.csv,
    /// summary.md, loss.png).
    #[arg(long)]
    pub summary: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Which kind of job a config describes (`task = "mnist-toy"`, or a Llama job by default).
fn task_of(path: &std::path::Path) -> Result<String> {
    let value: toml::Table = abba::io::load_toml(path, "fine-tuning TOML")?;
    Ok(value
        .get("task")
        .and_then(|v| v.as_str())
        .unwrap_or("llm")
        .to_string())
}

pub fn run(args: FinetuneArgs) -> Result<()> {
    let device = args.device.select()?;
    if args.configs.len() == 1 {
        // One job in this process: its peak memory figure stays its own.
        abba::process::keep_freed_memory();
    }
    let mut llm_runs = Vec::new();
    for path in &args.configs {
        match task_of(path)?.as_str() {
            "mnist-toy" => {
                let spec = abba::finetune::toy::load_spec(path)?;
                let out = spec.out.clone();
                if !args.force && out.join("results.csv").is_file() {
                    eprintln!(
                        "{}: done already ({}); --force re-runs it",
                        path.display(),
                        out.display()
                    );
                    continue;
                }
                abba::finetune::toy::run_toy(&spec, &out, !args.quiet)?;
                eprintln!("{}: wrote {}", path.display(), out.display());
            }
            "llm" => {
                let spec = FinetuneSpec::load(path)?;
                let out = spec.output.dir.clone();
                llm_runs.push(out.clone());
                if !args.force && !args.restart && abba::finetune::job::run::finished(&out) {
                    eprintln!(
                        "{}: done already ({}); --force re-runs it",
                        path.display(),
                        out.display()
                    );
                    continue;
                }
                let report = run_finetune(
                    &spec,
                    &RunOptions {
                        device: device.clone(),
                        resume: !args.restart && !args.force,
                        progress: !args.quiet,
                        out_dir: None,
                    },
                )?;
                println!(
                    "{}: {} steps, loss {:.4} → {:.4}, eval loss {}, accuracy {}, {:.0} tok/s, status {}",
                    report.name,
                    report.steps,
                    report.first_loss,
                    report.last_loss,
                    report.eval_loss.map_or("-".into(), |l| format!("{l:.4}")),
                    report
                        .eval_accuracy
                        .map_or("-".into(), |a| format!("{:.1}%", 100.0 * a)),
                    report.tokens_per_s,
                    report.status
                );
            }
            other => anyhow::bail!(
                "{}: unknown task '{other}': use task = \"llm\" (default) or \"mnist-toy\"",
                path.display()
            ),
        }
    }
    if let Some(dir) = &args.summary {
        let reports = abba::finetune::job::compare::write_comparison(&llm_runs, dir)?;
        eprintln!("compared {} runs in {}", reports.len(), dir.display());
    }
    Ok(())
}
