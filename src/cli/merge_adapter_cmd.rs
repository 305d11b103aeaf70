//! `abba merge-adapter`: fold an adapter into its base (W0 + ΔW) and save a full Hugging Face checkpoint.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use abba::finetune::adapters::peft::AdapterSet;
use abba::finetune::device::DeviceChoice;
use abba::finetune::job::model_io::save_hf_model;
use abba::finetune::model::{Checkpoint, Llama};

#[derive(Args, Debug)]
pub struct MergeAdapterArgs {
    /// Base model directory (Hugging Face layout).
    #[arg(long)]
    pub model: PathBuf,
    /// Adapter directory (PEFT LoRA / HiRA / LoHa or ABBA).
    #[arg(long)]
    pub adapter: PathBuf,
    /// Output directory for the merged checkpoint (written atomically).
    #[arg(long, short)]
    pub out: PathBuf,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
}

pub fn run(args: MergeAdapterArgs) -> Result<()> {
    let device = args.device.select()?;
    let ckpt = Checkpoint::open(&args.model)?;
    let mut model = Llama::load(&ckpt, candle_core::DType::F32, &device)?;
    let set = AdapterSet::load(&args.adapter, &model)?;
    set.attach(&mut model)?;
    save_hf_model(&model, &args.out, Some(&args.model.join("tokenizer.json")))?;
    println!(
        "merged {} {} modules into {}",
        set.modules.len(),
        set.peft_type(),
        args.out.display()
    );
    Ok(())
}
