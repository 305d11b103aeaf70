//! `abba study`: run a study spec, resumably, optionally one shard of it.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use abba::study::{RunOptions, Shard, StudySpec, Summary, run_study};

#[derive(Args, Debug)]
pub struct StudyArgs {
    /// The study spec (TOML), e.g. experiments/fig2.toml.
    pub spec: PathBuf,
    /// Output directory (results CSV, per-run curves, plots).
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Run only shard K of N (0-based), e.g. 3/8 from a SLURM array; join with `abba merge`.
    #[arg(long)]
    pub shard: Option<Shard>,
    /// Re-run runs that are already recorded.
    #[arg(long)]
    pub force: bool,
    /// Skip writing plots and summary.md after the runs.
    #[arg(long)]
    pub no_report: bool,
}

pub fn run(args: StudyArgs) -> Result<()> {
    let spec = StudySpec::load(&args.spec)?;
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from("results").join(&spec.name));
    execute(&spec, &out, args.shard, args.force, !args.no_report)
}

/// Runs a loaded spec into `out`, prints a one-line summary, and writes the reports.
pub fn execute(
    spec: &StudySpec,
    out: &std::path::Path,
    shard: Option<Shard>,
    force: bool,
    report: bool,
) -> Result<()> {
    let opts = RunOptions {
        shard,
        force,
        progress: true,
    };
    let (summary, _) =
        run_study(spec, out, &opts).with_context(|| format!("study '{}'", spec.name))?;
    print_summary(&spec.name, out, &summary);
    if report && shard.is_none_or(|s| s.count == 1) {
        let written = abba::report::write_study_reports(out)
            .context("writing the study's plots and summary")?;
        for path in written {
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}

fn print_summary(name: &str, out: &std::path::Path, s: &Summary) {
    println!(
        "{name}: {} runs planned, {} already done, {} ok, {} diverged, {} failed → {}",
        s.planned,
        s.skipped,
        s.ok,
        s.diverged,
        s.failed,
        out.display()
    );
}
