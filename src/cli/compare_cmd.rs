//! `abba compare SPEC.toml`: run a fine-tuning comparison grid (resumable, `--shard K/N`), then its report.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use abba::compare::{CompareOptions, CompareSpec, run_compare, write_reports};
use abba::finetune::device::DeviceChoice;
use abba::study::Shard;

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// The comparison spec (TOML), e.g. experiments/compare-arith-tiny.toml.
    pub spec: PathBuf,
    /// Output directory (default: results/compare/<task>, or the spec's `out`).
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Run only shard K of N (0-based), e.g. 3/8 from a SLURM array; join with `abba merge --report`.
    #[arg(long)]
    pub shard: Option<Shard>,
    /// Re-run cells that are already recorded (their run directories start over).
    #[arg(long)]
    pub force: bool,
    /// Cells run at once (default: the available cores).
    #[arg(long, short)]
    pub jobs: Option<usize>,
    /// Where tensors live: cpu, cuda (needs a --features cuda build) or auto.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Skip summary.md and the plots after the runs.
    #[arg(long)]
    pub no_report: bool,
    /// No line per finished cell.
    #[arg(long, short)]
    pub quiet: bool,
}

pub fn run(args: CompareArgs) -> Result<()> {
    // Every check of the spec runs here, before anything is written.
    let spec = CompareSpec::load(&args.spec)?;
    let out = args.out.clone().unwrap_or_else(|| spec.out_dir());
    let opts = CompareOptions {
        shard: args.shard,
        force: args.force,
        jobs: args.jobs,
        device: args.device.select()?,
        verbose: !args.quiet,
    };
    let (s, _) =
        run_compare(&spec, &out, &opts).with_context(|| format!("comparison '{}'", spec.task))?;
    println!(
        "{}: {} cells planned, {} already done, {} ok, {} diverged, {} failed → {}",
        spec.task,
        s.planned,
        s.skipped,
        s.ok,
        s.diverged,
        s.failed,
        out.display()
    );
    if !args.no_report && args.shard.is_none_or(|s| s.count == 1) {
        for path in write_reports(&out).context("writing the comparison's summary and plots")? {
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}
