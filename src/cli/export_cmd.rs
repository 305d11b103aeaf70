//! `abba export`: an ABBA adapter as a PEFT LoHa (exact) or LoRA (exact rank r1·r2, or truncated by SVD).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};

use abba::finetune::adapters::export::{LoraRank, to_loha, to_lora};
use abba::finetune::adapters::peft::AdapterSet;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ExportFormat {
    PeftLoha,
    PeftLora,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// ABBA (or LoHa) adapter directory.
    #[arg(long)]
    pub adapter: PathBuf,
    #[arg(long = "to", value_enum)]
    pub format: ExportFormat,
    /// For peft-lora: the rank of the truncated-SVD approximation (default: exact, rank r1·r2).
    #[arg(long)]
    pub rank: Option<usize>,
    /// Output adapter directory (written atomically).
    #[arg(long, short)]
    pub out: PathBuf,
}

pub fn run(args: ExportArgs) -> Result<()> {
    let set = AdapterSet::load_standalone(&args.adapter)?;
    let exported = match args.format {
        ExportFormat::PeftLoha => to_loha(&set)?,
        ExportFormat::PeftLora => {
            to_lora(&set, args.rank.map_or(LoraRank::Exact, LoraRank::Truncated))?
        }
    };
    exported.save(&args.out)?;
    println!(
        "wrote {} modules as {} to {}",
        exported.modules.len(),
        exported.peft_type(),
        args.out.display()
    );
    Ok(())
}
