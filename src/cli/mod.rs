//! The `abba` command line: argument parsing and dispatch. Each subcommand lives in its own file and calls the
//! library; errors travel up as `anyhow` with context and are printed as one line by `main`.

mod bench_cmd;
mod budget_cmd;
mod compare_cmd;
mod eval_cmd;
mod export_cmd;
mod finetune_cmd;
mod merge_adapter_cmd;
mod merge_cmd;
mod report_cmd;
mod reproduce_cmd;
mod study_cmd;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "abba",
    version,
    about = "Hadamard-product adapters (ABBA) and their rivals (LoRA, PiSSA, DoRA, HiRA, LoKr, MoRA, KRAdapter, LoRA-Pro): expressivity studies and full-model fine-tuning"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Reproduce a figure of the ABBA paper (fig2: matrix reconstruction error vs rank).
    Reproduce(reproduce_cmd::ReproduceArgs),
    /// Run a reconstruction study from a TOML spec (resumable; --shard K/N for clusters).
    Study(study_cmd::StudyArgs),
    /// Join result files of a study's shards into one, dropping duplicate runs.
    Merge(merge_cmd::MergeArgs),
    /// Redraw a study's plots and summary.md from its results directory.
    Report(report_cmd::ReportArgs),
    /// Benchmarks beside PyTorch, as CSV: --suite fit (Adam step, ALS sweep), finetune (training tokens/s and
    /// peak memory per adapter, vs PEFT), layer (Khatri–Rao vs materialised 4096² layer), generate (greedy
    /// generation tokens/s vs transformers), all.
    Bench(bench_cmd::BenchArgs),
    /// Equal-budget configurations of every method for one or more layer shapes.
    Budget(budget_cmd::BudgetArgs),
    /// Compare fine-tuning methods at equal budgets: lr tuned on validation, test metric over seeds with
    /// intervals and paired tests against LoRA (resumable; --shard K/N for clusters).
    Compare(compare_cmd::CompareArgs),
    /// Fine-tune a Llama-family model with any adapter (or fully) from a TOML config, or run the MNIST toy; resumable.
    Finetune(finetune_cmd::FinetuneArgs),
    /// Evaluate a model, optionally with an adapter: generation accuracy, exact match, loss, perplexity.
    Eval(eval_cmd::EvalArgs),
    /// Merge an adapter into its base model and save a full Hugging Face checkpoint.
    MergeAdapter(merge_adapter_cmd::MergeAdapterArgs),
    /// Export any adapter as a PEFT LoRA (exact or truncated), or an ABBA as a PEFT LoHa (exact).
    Export(export_cmd::ExportArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Reproduce(args) => reproduce_cmd::run(args),
        Command::Study(args) => study_cmd::run(args),
        Command::Merge(args) => merge_cmd::run(args),
        Command::Report(args) => report_cmd::run(args),
        Command::Bench(args) => bench_cmd::run(args),
        Command::Budget(args) => budget_cmd::run(args),
        Command::Compare(args) => compare_cmd::run(args),
        Command::Finetune(args) => finetune_cmd::run(args),
        Command::Eval(args) => eval_cmd::run(args),
        Command::MergeAdapter(args) => merge_adapter_cmd::run(args),
        Command::Export(args) => export_cmd::run(args),
    }
}
