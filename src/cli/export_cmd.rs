//! `abba export`: an adapter as a PEFT LoRA (exact, or truncated by SVD) — any method — or an ABBA as a PEFT LoHa
//! (exact). A merged checkpoint is `abba merge-adapter`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

use abba::finetune::adapters::export::{LoraRank, to_loha, to_lora};
use abba::finetune::adapters::peft::AdapterSet;
use abba::finetune::model::{Checkpoint, Llama};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ExportFormat {
    PeftLoha,
    PeftLora,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Adapter directory (any method this project trains or loads).
    #[arg(long)]
    pub adapter: PathBuf,
    #[arg(long = "to", value_enum)]
    pub format: ExportFormat,
    /// For peft-lora: the rank of the truncated-SVD approximation (default: exact — rank r1·r2 for ABBA, the
    /// numerical rank of each module's ΔW for the other methods).
    #[arg(long)]
    pub rank: Option<usize>,
    /// The base model the adapter was trained on (Hugging Face layout): needed for HiRA and DoRA, whose ΔW reads
    /// the frozen weight; checks every tensor's shape against it when given.
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// Output adapter directory (written atomically).
    #[arg(long, short)]
    pub out: PathBuf,
}

pub fn run(args: ExportArgs) -> Result<()> {
    let model = match &args.base {
        Some(dir) => {
            let ckpt = Checkpoint::open(dir)?;
            Some(Llama::load(
                &ckpt,
                candle_core::DType::F32,
                &candle_core::Device::Cpu,
            )?)
        }
        None => None,
    };
    let set = match &model {
        Some(m) => AdapterSet::load(&args.adapter, m)?,
        None => AdapterSet::load_standalone(&args.adapter)?,
    };
    let exported = match args.format {
        ExportFormat::PeftLoha => to_loha(&set)?,
        ExportFormat::PeftLora => to_lora(
            &set,
            args.rank.map_or(LoraRank::Exact, LoraRank::Truncated),
            model.as_ref(),
        )?,
    };
    exported
        .save(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    let mut ranks: Vec<usize> = exported
        .modules
        .iter()
        .flat_map(|(_, w)| w.method.ranks())
        .collect();
    ranks.sort_unstable();
    ranks.dedup();
    println!(
        "wrote {} modules as {} (rank {}) to {}",
        exported.modules.len(),
        exported.peft_type(),
        match ranks.as_slice() {
            [r] => r.to_string(),
            [lo, .., hi] => format!("{lo}–{hi}"),
            [] => "-".into(),
        },
        args.out.display()
    );
    Ok(())
}
