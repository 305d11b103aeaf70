//! `abba bench`: our code beside PyTorch in one invocation, as CSV.
//!
//! Suites: `fit` (default: our Adam step and ALS sweep of an ABBA fit beside PyTorch's Adam step), `finetune`
//! (training tokens/s and peak memory of a tiny Llama with each adapter beside PyTorch + PEFT), `layer` (one
//! adapted 4096×4096 layer's forward + backward with the Khatri–Rao or the materialised ΔW path forced, beside
//! PyTorch), `all`. Every `finetune` / `layer` configuration runs in a fresh process (this executable with the
//! hidden `--worker` flag, or the Python script), so each peak-memory figure belongs to one configuration.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use abba::bench::{AbbaProblem, adam_step_ms, als_sweep_ms, gemm_floor_ms};
use abba::finetune::bench::{
    FINETUNE_METHODS, FinetuneBenchSpec, LayerProblem, current_rss_mib, finetune_steps, parse_path,
    path_name, time_layer,
};
use abba::metrics::peak_rss_mib;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Suite {
    /// Adam step and ALS sweep of an ABBA fit (writes --out).
    Fit,
    /// Training steps of a tiny Llama with LoRA, HiRA, ABBA and full fine-tuning (writes --finetune-out).
    Finetune,
    /// One adapted layer, Khatri–Rao vs materialised ΔW (writes --layer-out).
    Layer,
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
    /// (benches/torch_abba_step.py, benches/torch_finetune_step.py); skipped with a warning if it fails.
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
    /// finetune: methods to run (lora, hira, abba, full).
    #[arg(long, value_delimiter = ',', default_value = "lora,hira,abba,full")]
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
    /// Internal: run one configuration in this process and print it as a JSON line
    /// (finetune:METHOD or layer:PATH:BATCH).
    #[arg(long, hide = true)]
    pub worker: Option<String>,
}

const TORCH_SCRIPT: &str = include_str!("../../benches/torch_abba_step.py");
const TORCH_FINETUNE_SCRIPT: &str = include_str!("../../benches/torch_finetune_step.py");
/// The candle release this crate builds against (Cargo.toml), for the version column.
const CANDLE_VERSION: &str = "0.11.1";

fn ours_version() -> String {
    format!(
        "abba {} ({})",
        env!("CARGO_PKG_VERSION"),
        env!("ABBA_GIT_COMMIT")
    )
}

/// CPU time in USER_HZ ticks: the whole machine's busy and total time (`/proc/stat`), and this process's own plus
/// its waited-for children's (`/proc/self/stat`).
#[derive(Clone, Copy, Debug)]
struct CpuSnap {
    busy: u64,
    total: u64,
    ours: u64,
}

fn cpu_snap() -> Option<CpuSnap> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let f: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already inside user).
    let busy = f.first()? + f.get(1)? + f.get(2)? + f.get(5)? + f.get(6)? + f.get(7).unwrap_or(&0);
    let total = busy + f.get(3)? + f.get(4)?;
    let me = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, from ppid (field 4) on; utime stime cutime cstime are fields 14–17.
    let g: Vec<i64> = me
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ours = (g.get(10)? + g.get(11)? + g.get(12)? + g.get(13)?).max(0) as u64;
    Some(CpuSnap { busy, total, ours })
}

/// Cores kept busy by other processes between two snapshots, on average: the machine's busy time less this
/// process's and its children's, as a share of all CPU time, times the core count. Near 0 on a quiet machine.
fn other_load(before: Option<CpuSnap>, after: Option<CpuSnap>) -> f64 {
    let (Some(a), Some(b)) = (before, after) else {
        return f64::NAN;
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let total = b.total.saturating_sub(a.total).max(1) as f64;
    let others = b.busy.saturating_sub(a.busy) as f64 - b.ours.saturating_sub(a.ours) as f64;
    (others.max(0.0) / total * cores * 100.0).round() / 100.0
}

/// Runs `cmd` and reads the JSON object on the last line of its stdout, adding `other_load_cores` (see
/// [`other_load`]) for the time it ran.
fn json_line(mut cmd: Command, what: &str) -> Result<Value> {
    let before = cpu_snap();
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    let load = other_load(before, cpu_snap());
    anyhow::ensure!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or("failed")
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or("");
    let mut v: Value =
        serde_json::from_str(line).with_context(|| format!("reading {what}'s JSON line"))?;
    if let Some(obj) = v.as_object_mut() {
        obj.insert("other_load_cores".into(), json!(load));
    }
    Ok(v)
}

/// A Python script written to a temporary file for the duration of one bench run.
struct TempScript(PathBuf);

impl TempScript {
    fn new(stem: &str, text: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!("{stem}-{}.py", std::process::id()));
        std::fs::write(&path, text)?;
        Ok(TempScript(path))
    }
}

impl Drop for TempScript {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn torch_ms(args: &BenchArgs, threads: usize) -> Result<(f64, String)> {
    let script = TempScript::new("abba-torch-bench", TORCH_SCRIPT)?;
    let (n, r) = (args.size.to_string(), args.rank.to_string());
    let mut cmd = Command::new(&args.python);
    cmd.arg(&script.0)
        .args(["--m", &n, "--n", &n, "--r1", &r, "--r2", &r])
        .args(["--steps", &args.iters.to_string()])
        .args(["--threads", &threads.to_string()]);
    let v = json_line(cmd, &args.python)?;
    let ms = v["ms_per_step"].as_f64().context("no ms_per_step")?;
    Ok((ms, format!("torch {}", v["torch"].as_str().unwrap_or("?"))))
}

fn run_fit(args: &BenchArgs, threads: usize) -> Result<()> {
    let (n, r) = (args.size, args.rank);
    let mut p = AbbaProblem::new(n, n, r, r, 0);
    let floor = gemm_floor_ms(&p, 3, args.iters);
    let adam = adam_step_ms(&mut p, 3, args.iters);
    let mut p = AbbaProblem::new(n, n, r, r, 0);
    let als = als_sweep_ms(&mut p, 1, (args.iters / 5).max(3));
    let ours = ours_version();
    let torch = torch_ms(args, threads);
    let mut csv = String::from(
        "implementation,operation,m,n,r1,r2,threads,ms,ratio_to_pytorch_adam,ratio_to_gemm_floor,version\n",
    );
    let (torch_cell, torch_version) = match &torch {
        Ok((ms, v)) => (Some(*ms), v.clone()),
        Err(e) => {
            eprintln!(
                "abba: warning: PyTorch competitor skipped ({e}); pass --python PATH to a Python with torch"
            );
            (None, "unavailable".into())
        }
    };
    let ratio = |ms: f64| torch_cell.map_or(String::new(), |t| format!("{:.3}", ms / t));
    let mut row = |imp: &str, op: &str, ms: f64, to_torch: String, version: &str| {
        csv.push_str(&format!(
            "{imp},{op},{n},{n},{r},{r},{threads},{ms:.3},{to_torch},{:.3},{version}\n",
            ms / floor
        ));
    };
    row("abba", "gemm-floor-6-products", floor, String::new(), &ours);
    row("abba", "adam-step", adam, ratio(adam), &ours);
    row("abba", "als-sweep", als, String::new(), &ours);
    if let Some(t) = torch_cell {
        row("pytorch", "adam-step", t, "1.000".into(), &torch_version);
    }
    write_csv(&args.out, &csv)
}

fn write_csv(path: &Path, csv: &str) -> Result<()> {
    abba::io::write_atomic(path, csv.as_bytes())?;
    print!("{csv}");
    println!("wrote {}", path.display());
    Ok(())
}

fn finetune_spec(args: &BenchArgs) -> FinetuneBenchSpec {
    let mut spec = FinetuneBenchSpec {
        batch: args.batch,
        seq: args.seq,
        warmup: args.warmup,
        steps: args.steps,
        ..Default::default()
    };
    spec.shape.max_position_embeddings = spec.shape.max_position_embeddings.max(args.seq);
    spec
}

/// One configuration, in this process: prints one JSON line (run by [`our_worker`] in a child process).
fn worker(spec: &str, args: &BenchArgs) -> Result<()> {
    let baseline = current_rss_mib();
    let parts: Vec<&str> = spec.split(':').collect();
    let v = match parts.as_slice() {
        ["finetune", method] => {
            let r = finetune_steps(&finetune_spec(args), method)?;
            json!({
                "impl": "abba-rs", "method": r.method, "trainable_params": r.trainable_params,
                "total_params": r.total_params, "tokens_per_step": r.tokens_per_step, "ms_per_step": r.ms_per_step,
                "tokens_per_s": r.tokens_per_s, "final_loss": r.final_loss,
                "threads": candle_core::utils::get_num_threads(),
                "baseline_rss_mib": baseline, "peak_rss_mib": peak_rss_mib(),
            })
        }
        ["layer", path, batch] => {
            let path = parse_path(path)?;
            let batch: usize = batch.parse().context("layer worker batch")?;
            let (n, r) = (args.layer_size, args.layer_rank);
            let problem = LayerProblem::new(n, n, r, r, batch, 0)?;
            let t = time_layer(&problem, path, args.layer_warmup, args.layer_iters)?;
            json!({
                "impl": "abba-rs", "m": n, "n": n, "r1": r, "r2": r, "batch": batch, "path": path_name(path),
                "cost_model_pick": path_name(problem.cost_model_pick()?), "iters": args.layer_iters,
                "median_ms": t.median(), "min_ms": t.min(),
                "threads": candle_core::utils::get_num_threads(),
                "baseline_rss_mib": baseline, "peak_rss_mib": peak_rss_mib(),
            })
        }
        _ => bail!("unknown worker '{spec}': use finetune:METHOD or layer:PATH:BATCH"),
    };
    println!("{v}");
    Ok(())
}

/// Runs [`worker`] in a fresh copy of this executable with `threads` threads (candle reads RAYON_NUM_THREADS).
fn our_worker(args: &BenchArgs, spec: &str, threads: usize) -> Result<Value> {
    let exe = std::env::current_exe().context("locating the abba executable")?;
    let mut cmd = Command::new(exe);
    cmd.env("RAYON_NUM_THREADS", threads.to_string())
        .args(["bench", "--worker", spec, "--threads", &threads.to_string()])
        .args([
            "--steps",
            &args.steps.to_string(),
            "--warmup",
            &args.warmup.to_string(),
        ])
        .args([
            "--batch",
            &args.batch.to_string(),
            "--seq",
            &args.seq.to_string(),
        ])
        .args(["--layer-size", &args.layer_size.to_string()])
        .args(["--layer-rank", &args.layer_rank.to_string()])
        .args(["--layer-iters", &args.layer_iters.to_string()])
        .args(["--layer-warmup", &args.layer_warmup.to_string()]);
    json_line(cmd, &format!("abba bench worker {spec}"))
}

fn torch_worker(
    args: &BenchArgs,
    script: &Path,
    suite_args: &[String],
    threads: usize,
) -> Result<Value> {
    let mut cmd = Command::new(&args.python);
    cmd.arg(script)
        .args(suite_args)
        .args(["--threads", &threads.to_string()]);
    json_line(cmd, &args.python)
}

fn num(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(f64::NAN)
}

fn torch_version(v: &Value) -> String {
    let mut s = format!("torch {}", v["torch"].as_str().unwrap_or("?"));
    for lib in ["transformers", "peft"] {
        if let Some(ver) = v[lib].as_str() {
            s.push_str(&format!(" {lib} {ver}"));
        }
    }
    s
}

fn warn_torch(e: &anyhow::Error) {
    eprintln!(
        "abba: warning: PyTorch competitor skipped ({e}); pass --python PATH to a Python with torch, transformers and peft"
    );
}

fn run_finetune(args: &BenchArgs, threads: usize) -> Result<()> {
    for m in &args.methods {
        anyhow::ensure!(
            FINETUNE_METHODS.contains(&m.as_str()),
            "unknown method '{m}' in --methods: use {}",
            FINETUNE_METHODS.join(", ")
        );
    }
    let spec = finetune_spec(args);
    let script = TempScript::new("abba-torch-finetune", TORCH_FINETUNE_SCRIPT)?;
    let ours_ver = format!("{} candle {CANDLE_VERSION}", ours_version());
    let mut csv = String::from(
        "implementation,method,ranks,trainable_params,total_params,batch,seq,warmup,steps,ms_per_step,tokens_per_s,\
         speed_vs_pytorch,peak_rss_mib,baseline_rss_mib,peak_over_baseline_mib,threads,other_load_cores,final_loss,version\n",
    );
    for method in &args.methods {
        let ranks = match method.as_str() {
            "abba" => "r1=4 r2=4",
            "full" => "",
            _ => "r=8",
        };
        eprintln!("abba bench: finetune {method} (abba-rs)");
        let ours = our_worker(args, &format!("finetune:{method}"), threads)?;
        eprintln!("abba bench: finetune {method} (pytorch)");
        let s = spec.shape;
        let torch_args: Vec<String> = [
            ("finetune", None),
            ("--method", Some(method.clone())),
            ("--vocab", Some(s.vocab_size.to_string())),
            ("--hidden", Some(s.hidden_size.to_string())),
            ("--intermediate", Some(s.intermediate_size.to_string())),
            ("--layers", Some(s.num_hidden_layers.to_string())),
            ("--heads", Some(s.num_attention_heads.to_string())),
            ("--kv-heads", Some(s.num_key_value_heads.to_string())),
            ("--max-pos", Some(s.max_position_embeddings.to_string())),
            ("--batch", Some(spec.batch.to_string())),
            ("--seq", Some(spec.seq.to_string())),
            ("--steps", Some(spec.steps.to_string())),
            ("--warmup", Some(spec.warmup.to_string())),
        ]
        .into_iter()
        .flat_map(|(k, v)| std::iter::once(k.to_string()).chain(v))
        .collect();
        let torch = torch_worker(args, &script.0, &torch_args, threads);
        let torch = match torch {
            Ok(v) => Some(v),
            Err(e) => {
                warn_torch(&e);
                None
            }
        };
        let mut row = |v: &Value, version: &str, vs_torch: String| {
            let (peak, base) = (num(v, "peak_rss_mib"), num(v, "baseline_rss_mib"));
            csv.push_str(&format!(
                "{},{method},{ranks},{},{},{},{},{},{},{:.1},{:.1},{vs_torch},{peak:.1},{base:.1},{:.1},{},{},{:.4},{version}\n",
                v["impl"].as_str().unwrap_or("?"),
                v["trainable_params"],
                v["total_params"],
                spec.batch,
                spec.seq,
                spec.warmup,
                spec.steps,
                num(v, "ms_per_step"),
                num(v, "tokens_per_s"),
                peak - base,
                v["threads"],
                v["other_load_cores"],
                num(v, "final_loss"),
            ));
        };
        let vs = torch.as_ref().map_or(String::new(), |t| {
            format!("{:.3}", num(&ours, "tokens_per_s") / num(t, "tokens_per_s"))
        });
        row(&ours, &ours_ver, vs);
        if let Some(t) = &torch {
            let path = t["abba_path"]
                .as_str()
                .map_or(String::new(), |p| format!(" (ABBA path: {p})"));
            row(t, &format!("{}{path}", torch_version(t)), "1.000".into());
        }
    }
    write_csv(&args.finetune_out, &csv)
}

fn run_layer(args: &BenchArgs, threads: usize) -> Result<()> {
    let script = TempScript::new("abba-torch-layer", TORCH_FINETUNE_SCRIPT)?;
    let ours_ver = format!("{} candle {CANDLE_VERSION}", ours_version());
    let (n, r) = (args.layer_size, args.layer_rank);
    let mut csv = String::from(
        "implementation,m,n,r1,r2,batch,path,cost_model_pick,warmup,iters,median_ms,min_ms,time_vs_pytorch,\
         peak_rss_mib,baseline_rss_mib,peak_over_baseline_mib,threads,other_load_cores,version\n",
    );
    for &batch in &args.layer_batches {
        for path in ["khatri-rao", "materialised"] {
            eprintln!("abba bench: layer {n}x{n} r={r} batch {batch} {path} (abba-rs)");
            let ours = our_worker(args, &format!("layer:{path}:{batch}"), threads)?;
            eprintln!("abba bench: layer {n}x{n} r={r} batch {batch} {path} (pytorch)");
            let torch_args: Vec<String> = [
                "layer",
                "--path",
                path,
                "--m",
                &n.to_string(),
                "--n",
                &n.to_string(),
                "--r1",
                &r.to_string(),
                "--r2",
                &r.to_string(),
                "--batch",
                &batch.to_string(),
                "--iters",
                &args.layer_iters.to_string(),
                "--warmup",
                &args.layer_warmup.to_string(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let torch = match torch_worker(args, &script.0, &torch_args, threads) {
                Ok(v) => Some(v),
                Err(e) => {
                    warn_torch(&e);
                    None
                }
            };
            let mut row = |v: &Value, version: &str, vs_torch: String| {
                let (peak, base) = (num(v, "peak_rss_mib"), num(v, "baseline_rss_mib"));
                csv.push_str(&format!(
                    "{},{n},{n},{r},{r},{batch},{path},{},{},{},{:.2},{:.2},{vs_torch},{peak:.1},{base:.1},{:.1},{},{},{version}\n",
                    v["impl"].as_str().unwrap_or("?"),
                    v["cost_model_pick"].as_str().unwrap_or("?"),
                    args.layer_warmup,
                    args.layer_iters,
                    num(v, "median_ms"),
                    num(v, "min_ms"),
                    peak - base,
                    v["threads"],
                    v["other_load_cores"],
                ));
            };
            let vs = torch.as_ref().map_or(String::new(), |t| {
                format!("{:.3}", num(&ours, "median_ms") / num(t, "median_ms"))
            });
            row(&ours, &ours_ver, vs);
            if let Some(t) = &torch {
                row(t, &torch_version(t), "1.000".into());
            }
        }
    }
    write_csv(&args.layer_out, &csv)
}

pub fn run(args: BenchArgs) -> Result<()> {
    let threads = if args.threads == 0 {
        rayon::current_num_threads()
    } else {
        args.threads
    };
    abba::linalg::set_threads(threads);
    if let Some(spec) = &args.worker {
        return worker(spec, &args);
    }
    if matches!(args.suite, Suite::Fit | Suite::All) {
        run_fit(&args, threads)?;
    }
    if matches!(args.suite, Suite::Finetune | Suite::All) {
        run_finetune(&args, threads)?;
    }
    if matches!(args.suite, Suite::Layer | Suite::All) {
        run_layer(&args, threads)?;
    }
    Ok(())
}
