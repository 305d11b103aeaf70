//! `abba report`: redraw a study's plots and summary from its results directory.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// A study's output directory (holding results.csv and runs/).
    pub dir: PathBuf,
}

pub fn run(args: ReportArgs) -> Result<()> {
    anyhow::ensure!(
        args.dir.join("results.csv").exists(),
        "{} has no results.csv: run a study into it first, or merge its shards with `abba merge`",
        args.dir.display()
    );
    for path in abba::report::write_study_reports(&args.dir)? {
        println!("wrote {}", path.display());
    }
    Ok(())
}
