//! The toy's files: `results.csv` (one row per method), `loss.csv` (every step of every method), `loss.png` and
//! `summary.md`. Each is written whole or not at all.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::report::ToyReport;
use super::spec::{MNIST_TITLE, ToySpec};
use crate::error::{AbbaError, Result};
use crate::io::write_atomic;
use crate::report::loss_curves::plot_losses;

#[derive(Serialize)]
struct ResultRow<'a> {
    method: &'a str,
    trainable_params: usize,
    acc_new: f64,
    acc_old: f64,
    final_loss: f64,
    seconds: f64,
    status: super::report::Status,
}

#[derive(Serialize)]
struct LossRow<'a> {
    method: &'a str,
    step: usize,
    loss: f64,
}

fn csv_bytes<S: Serialize>(rows: impl IntoIterator<Item = S>) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for row in rows {
        w.serialize(row)
            .map_err(|e| AbbaError::InvalidArgument(format!("CSV row: {e}")))?;
    }
    w.into_inner()
        .map_err(|e| AbbaError::InvalidArgument(format!("CSV buffer: {e}")))
}

/// Writes the four files into `out_dir` and returns their paths.
pub fn write_outputs(spec: &ToySpec, report: &ToyReport, out_dir: &Path) -> Result<Vec<PathBuf>> {
    let results = out_dir.join("results.csv");
    write_atomic(
        &results,
        &csv_bytes(report.methods.iter().map(|m| ResultRow {
            method: &m.method,
            trainable_params: m.trainable_params,
            acc_new: m.acc_new,
            acc_old: m.acc_old,
            final_loss: m.final_loss,
            seconds: m.seconds,
            status: m.status,
        }))?,
    )?;
    let losses = out_dir.join("loss.csv");
    write_atomic(
        &losses,
        &csv_bytes(report.methods.iter().flat_map(|m| {
            m.losses.iter().enumerate().map(|(step, &loss)| LossRow {
                method: &m.method,
                step,
                loss,
            })
        }))?,
    )?;
    let png = out_dir.join("loss.png");
    let curves: Vec<(String, Vec<f64>)> = report
        .methods
        .iter()
        .map(|m| {
            (
                format!("{} ({} params)", m.method, m.trainable_params),
                m.losses.clone(),
            )
        })
        .collect();
    let steps_per_epoch = report
        .methods
        .first()
        .map_or(1, |m| m.losses.len() / spec.adapt_epochs.max(1));
    plot_losses(
        MNIST_TITLE,
        "adaptation step",
        &curves,
        steps_per_epoch.clamp(1, 50),
        &png,
    )
    .map_err(|e| crate::error::AbbaError::Io {
        path: png.display().to_string(),
        message: format!("{e:#}"),
    })?;
    let summary = out_dir.join("summary.md");
    write_atomic(&summary, render_summary(spec, report).as_bytes())?;
    Ok(vec![results, losses, png, summary])
}

fn pct(v: f64) -> String {
    if v.is_finite() {
        format!("{:.1}", 100.0 * v)
    } else {
        "–".into()
    }
}

/// A Markdown page: the setup in one paragraph, then the table.
pub fn render_summary(spec: &ToySpec, report: &ToyReport) -> String {
    let (r1, r2) = spec.budget().abba_ranks();
    let mut s = format!(
        "# {MNIST_TITLE}\n\n\
         MLP 784 → {h} (ReLU) → 10, pretrained on digits 0–7 ({pe} epochs, lr {plr}, batch {pb}): test accuracy \
         {acc}% on 0–7, cross-entropy {lb:.4} on the 8–9 training set. Each method then adapts that model to \
         digits 8–9 alone ({ae} epochs, lr {alr}, batch {ab}, Adam, {sched} schedule, all ten outputs kept). \
         Adapters on both layers at the budget of a LoRA of rank {r}, r·(m+n) parameters per layer: LoRA-family \
         scales α/r (α = {la}), ABBA r1 = r2 = {r1}/{r2} (paper init and scale α²/√(r1r2), α = {aa}), the \
         discrete methods (LoKr, KronA, MoRA) at the nearest size within 10 %, KRAdapter at its one size per layer. {tr} train / {te} test images per digit, seed {seed}.\n\n\
         `acc_new`: test accuracy on 8–9; `acc_old`: test accuracy on 0–7 after adaptation; `final_loss`: mean \
         cross-entropy over the 8–9 training set after adaptation.\n\n\
         | method | trainable params | acc_new % | acc_old % | final_loss | seconds | status |\n\
         |---|---:|---:|---:|---:|---:|---|\n",
        h = spec.hidden,
        pe = spec.pretrain_epochs,
        plr = spec.pretrain_lr,
        pb = spec.pretrain_batch,
        acc = pct(report.pretrain_acc_old),
        lb = report.loss_before,
        ae = spec.adapt_epochs,
        alr = spec.adapt_lr,
        ab = spec.adapt_batch,
        sched = spec.schedule,
        r = spec.rank,
        la = spec.lora_alpha,
        aa = spec.abba_alpha,
        tr = spec.train_per_class,
        te = spec.test_per_class,
        seed = spec.seed,
    );
    for m in &report.methods {
        let status = match m.status {
            super::report::Status::Ok => "ok",
            super::report::Status::Diverged => "diverged",
            super::report::Status::Failed => "failed",
        };
        let loss = if m.final_loss.is_finite() {
            format!("{:.4}", m.final_loss)
        } else {
            "–".into()
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.1} | {} |\n",
            m.method,
            m.trainable_params,
            pct(m.acc_new),
            pct(m.acc_old),
            loss,
            m.seconds,
            status
        ));
    }
    for m in report.methods.iter().filter(|m| m.error.is_some()) {
        s.push_str(&format!(
            "\n{} failed: {}\n",
            m.method,
            m.error.as_deref().unwrap_or_default()
        ));
    }
    s
}
