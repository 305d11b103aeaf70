//! The `abba` command line: argument parsing and dispatch. Each subcommand lives in its own file and calls the
//! library; errors travel up as `anyhow` with context and are printed as one line by `main`.

mod budget_cmd;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "abba",
    version,
    about = "Hadamard-product adapters (ABBA, HiRA, LoRA): expressivity studies and fine-tuning maths"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Equal-budget configurations of every method for one or more layer shapes.
    Budget(budget_cmd::BudgetArgs),
    /// (planned, issue 4) Fine-tune a Llama-family model with adapters.
    Finetune,
    /// (planned, issue 4) Evaluate a model with adapters.
    Eval,
    /// (planned, issue 4) Merge an adapter into its base checkpoint.
    MergeAdapter,
    /// (planned, issue 4) Export an ABBA adapter as a PEFT LoHa or LoRA.
    Export,
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Budget(args) => budget_cmd::run(args),
        Command::Finetune | Command::Eval | Command::MergeAdapter | Command::Export => {
            anyhow::bail!(
                "this subcommand is planned but not implemented in abba {}: see the README's roadmap",
                env!("CARGO_PKG_VERSION")
            )
        }
    }
}
