//! `abba bench`: the flags of [`abba::bench`], which runs the suites beside PyTorch and writes the CSVs.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};

use abba::bench::BenchOptions;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Suite {
    /// Adam step and ALS sweep of an ABBA fit (writes --out).
    Fit,
    /// Training steps of a tiny Llama with LoRA, HiRA, ABBA, DoRA and full fine-tuning (writes --finetune-out).
    Finetune,
    /// One adapted layer, Khatri–Rao vs materialised ΔW (writes --layer-out).
    Layer,
    /// Greedy generation tokens/s of a tiny Llama beside transformers' `generate` (writes --generate-out).
    Generate,
    All,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Which benchmark to run.
    #[arg(long, value_enum, default_value = "fit")]
    pub suite: Suite,
    /// CSV of the fit suite.
    #[arg(long, short, default_value = "results/bench/fit_step.csv")]
    pub out: PathBuf,
    /// CSV of the finetune suite.
    #[arg(long, default_value = "results/bench/finetune.csv")]
    pub finetune_out: PathBuf,
    /// CSV of the layer suite.
    #[arg(long, default_value = "results/bench/layer.csv")]
    pub layer_out: PathBuf,
    /// Python with torch (and transformers + peft for the finetune suite) for the competitor
    /// (benches/torch_abba_step.py, benches/torch_finetune_step.py, benches/torch_generate.py); skipped with a
    /// warning if it fails.
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// Threads for both implementations (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// fit: timed iterations of each loop.
    #[arg(long, default_value_t = 30)]
    pub iters: usize,
    /// fit: the target is size × size.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// fit: r1 = r2.
    #[arg(long, default_value_t = 36)]
    pub rank: usize,
    /// finetune: methods to run (lora, hira, abba, dora, full).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "lora,hira,abba,dora,full"
    )]
    pub methods: Vec<String>,
    /// finetune: timed training steps per configuration.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// finetune: untimed steps first.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// finetune: sequences per batch.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// finetune: tokens per sequence.
    #[arg(long, default_value_t = 128)]
    pub seq: usize,
    /// finetune: our batch cut into this many shards run in parallel (`auto` or a count), as `[train] shards`.
    #[arg(long, default_value = "auto")]
    pub shards: abba::finetune::train::Shards,
    /// layer: the layer is size × size.
    #[arg(long, default_value_t = 4096)]
    pub layer_size: usize,
    /// layer: r1 = r2.
    #[arg(long, default_value_t = 16)]
    pub layer_rank: usize,
    /// layer: input rows (tokens) per forward, one configuration each.
    #[arg(long, value_delimiter = ',', default_value = "256,2048")]
    pub layer_batches: Vec<usize>,
    /// layer: timed forward + backward passes (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub layer_iters: usize,
    /// layer: untimed passes first.
    #[arg(long, default_value_t = 1)]
    pub layer_warmup: usize,
    /// CSV of the generate suite.
    #[arg(long, default_value = "results/bench/generate.csv")]
    pub generate_out: PathBuf,
    /// generate: prompts generated together, one configuration each (16 prompts × 64 new tokens in all).
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    pub generate_batches: Vec<usize>,
    /// Internal: run one configuration in this process and print it as a JSON line
    /// (finetune:METHOD, layer:PATH:BATCH or generate:BATCH).
    #[arg(long, hide = true)]
    pub worker: Option<String>,
}

impl BenchArgs {
    fn options(&self) -> BenchOptions {
        BenchOptions {
            suite: match self.suite {
                Suite::Fit => abba::bench::Suite::Fit,
                Suite::Finetune => abba::bench::Suite::Finetune,
                Suite::Layer => abba::bench::Suite::Layer,
                Suite::Generate => abba::bench::Suite::Generate,
                Suite::All => abba::bench::Suite::All,
            },
            fit_out: self.out.clone(),
            finetune_out: self.finetune_out.clone(),
            layer_out: self.layer_out.clone(),
            generate_out: self.generate_out.clone(),
            python: self.python.clone(),
            threads: if self.threads == 0 {
                rayon::current_num_threads()
            } else {
                self.threads
            },
            iters: self.iters,
            size: self.size,
            rank: self.rank,
            methods: self.methods.clone(),
            steps: self.steps,
            warmup: self.warmup,
            batch: self.batch,
            seq: self.seq,
            shards: self.shards,
            layer_size: self.layer_size,
            layer_rank: self.layer_rank,
            layer_batches: self.layer_batches.clone(),
            layer_iters: self.layer_iters,
            layer_warmup: self.layer_warmup,
            generate_batches: self.generate_batches.clone(),
        }
    }
}

pub fn run(args: BenchArgs) -> Result<()> {
    let opts = args.options();
    match &args.worker {
        Some(spec) => {
            // A worker process runs one measurement, as a training job does.
            abba::process::keep_freed_memory();
            abba::bench::serve_worker(spec, &opts)
        }
        None => abba::bench::run(&opts),
    }
}
