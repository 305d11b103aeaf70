//! `abba reproduce fig2`: the paper's Figure 2 from the committed study spec.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};

use abba::study::StudySpec;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Figure {
    /// Reconstruction error vs rank on Orthogonal, Low-Rank, Sparse and Random 1024×1024 targets.
    Fig2,
}

#[derive(Args, Debug)]
pub struct ReproduceArgs {
    pub figure: Figure,
    /// A small version that runs in seconds (what the tests use).
    #[arg(long)]
    pub quick: bool,
    /// Output directory (default results/fig2, or results/fig2-quick with --quick).
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Re-run runs that are already recorded.
    #[arg(long)]
    pub force: bool,
}

const FIG2: &str = include_str!("../../experiments/fig2.toml");
const FIG2_QUICK: &str = include_str!("../../experiments/fig2-quick.toml");

pub fn run(args: ReproduceArgs) -> Result<()> {
    let (text, origin) = match (args.figure, args.quick) {
        (Figure::Fig2, false) => (FIG2, "experiments/fig2.toml"),
        (Figure::Fig2, true) => (FIG2_QUICK, "experiments/fig2-quick.toml"),
    };
    let spec = StudySpec::from_toml(text, origin)?;
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from("results").join(&spec.name));
    super::study_cmd::execute(&spec, &out, None, args.force, true)
}
