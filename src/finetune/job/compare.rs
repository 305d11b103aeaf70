//! Side-by-side results of several fine-tuning runs (one per method): `results.csv`, `summary.md`, `loss.png`,
//! and each run's report, training log and generated samples copied under `<out>/<run name>/`.
//!
//! Peak RSS is the process's high-water mark when each run ended: runs made in one invocation share it, so only
//! the first is that run's own (`abba bench --suite finetune` measures each method in a fresh process).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::report::FinetuneReport;
use crate::error::{AbbaError, Result};
use crate::finetune::train::log::read_rows;
use crate::io::write_atomic;

fn opt(x: Option<f64>, digits: usize) -> String {
    x.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

pub fn write_comparison(run_dirs: &[PathBuf], out: &Path) -> Result<Vec<FinetuneReport>> {
    let mut reports = Vec::new();
    let mut curves = Vec::new();
    for dir in run_dirs {
        let path = dir.join("report.json");
        if !path.is_file() {
            continue;
        }
        let report = FinetuneReport::read(&path)?;
        let rows = read_rows(&dir.join("train_log.csv"))?;
        curves.push((
            report.name.clone(),
            rows.iter().map(|r| r.loss).collect::<Vec<f64>>(),
        ));
        let keep = out.join(&report.name);
        std::fs::create_dir_all(&keep).map_err(|e| AbbaError::io(&keep, e))?;
        for file in ["report.json", "train_log.csv", "samples.jsonl"] {
            if let Ok(bytes) = std::fs::read(dir.join(file)) {
                write_atomic(&keep.join(file), &bytes)?;
            }
        }
        reports.push(report);
    }
    if reports.is_empty() {
        return Err(AbbaError::InvalidArgument(
            "none of the run directories holds a report.json: run the configs first".into(),
        ));
    }
    let mut csv = String::from(
        "name,method,status,trainable_params,total_params,steps,first_loss,last_loss,eval_loss,eval_perplexity,\
         eval_accuracy,eval_exact_match,eval_generated,tokens_per_s,train_seconds,peak_rss_mib,lr,weight_decay,device,git_commit\n",
    );
    let mut md = String::from(
        "| run | method | trainable params | steps | train loss first → last | held-out loss | perplexity | \
         accuracy | exact match | tokens/s | train s | process peak RSS MiB |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in &reports {
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{:.6},{:.6},{},{},{},{},{},{:.1},{:.1},{:.1},{},{},{},{}",
            r.name,
            r.method,
            r.status,
            r.trainable_params,
            r.total_params,
            r.steps,
            r.first_loss,
            r.last_loss,
            opt(r.eval_loss, 6),
            opt(r.eval_perplexity, 4),
            opt(r.eval_accuracy, 4),
            opt(r.eval_exact_match, 4),
            r.eval_generated,
            r.tokens_per_s,
            r.train_seconds,
            r.peak_rss_mib,
            r.lr,
            r.weight_decay,
            r.device,
            r.git_commit
        );
        let pct = |x: Option<f64>| x.map_or_else(|| "-".into(), |v| format!("{:.1} %", 100.0 * v));
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.3} → {:.3} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0} |",
            r.name,
            r.method,
            r.trainable_params,
            r.steps,
            r.first_loss,
            r.last_loss,
            opt(r.eval_loss, 4),
            opt(r.eval_perplexity, 3),
            pct(r.eval_accuracy),
            pct(r.eval_exact_match),
            r.tokens_per_s,
            r.train_seconds,
            r.peak_rss_mib
        );
    }
    write_atomic(&out.join("results.csv"), csv.as_bytes())?;
    write_atomic(&out.join("summary.md"), md.as_bytes())?;
    crate::report::loss_curves::plot_losses(
        "Training loss per step",
        "optimizer step",
        &curves,
        10,
        &out.join("loss.png"),
    )
    .map_err(|e| AbbaError::Io {
        path: out.join("loss.png").display().to_string(),
        message: format!("{e:#}"),
    })?;
    Ok(reports)
}
