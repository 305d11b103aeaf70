//! The experiment: pretrain the MLP on digits 0–7, then adapt a copy of it to digits 8–9 with each method, and
//! write what happened.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device};

use super::adapt::prepare;
use super::mlp::Mlp;
use super::mnist::{CLASSES, MNIST_PIXELS, load_digits, split_per_class};
use super::output::write_outputs;
use super::report::{MethodReport, Status, ToyReport};
use super::spec::{FIRST_NEW_DIGIT, ToySpec};
use super::train::{TrainOpts, train};
use crate::error::{AbbaError, Result};
use crate::rng::derive;

/// Runs the toy (on the CPU, in f32) and writes `results.csv`, `loss.csv`, `loss.png` and `summary.md` into
/// `out_dir`. Same spec ⇒ same numbers, except the seconds.
pub fn run_toy(spec: &ToySpec, out_dir: &Path, progress: bool) -> Result<ToyReport> {
    spec.validate()?;
    let say = |msg: String| {
        if progress {
            eprintln!("{msg}");
        }
    };
    let (dtype, device) = (DType::F32, Device::Cpu);
    let digits = load_digits(&spec.data, MNIST_PIXELS)?;
    let split = split_per_class(
        &digits,
        spec.train_per_class,
        spec.test_per_class,
        derive(spec.seed, 0),
    )?;
    let is_old = |l: u8| l < FIRST_NEW_DIGIT;
    let is_new = |l: u8| l >= FIRST_NEW_DIGIT;
    let tensors = |keep: &dyn Fn(u8) -> bool, d: &super::mnist::Digits, what: &str| {
        let part = d.filter(keep);
        if part.is_empty() {
            return Err(AbbaError::InvalidArgument(format!(
                "{} has no {what} digits: the toy needs all ten digits 0–9",
                spec.data.display()
            )));
        }
        part.to_tensors(dtype, &device)
    };
    let (x_old, y_old) = tensors(&is_old, &split.train, "0–7")?;
    let (x_new, y_new) = tensors(&is_new, &split.train, "8–9")?;
    let (xt_old, yt_old) = tensors(&is_old, &split.test, "0–7")?;
    let (xt_new, yt_new) = tensors(&is_new, &split.test, "8–9")?;

    // Phase 1: every weight trained on 0–7.
    let started = Instant::now();
    let mut base = Mlp::new(
        MNIST_PIXELS,
        spec.hidden,
        CLASSES,
        dtype,
        &device,
        derive(spec.seed, 1),
    )?;
    let vars = base.make_base_trainable()?;
    let opts = |epochs, lr, batch, stream| TrainOpts {
        epochs,
        lr,
        batch,
        schedule: spec.schedule,
        max_grad_norm: spec.max_grad_norm,
        seed: derive(spec.seed, stream),
    };
    let pre = opts(
        spec.pretrain_epochs,
        spec.pretrain_lr,
        spec.pretrain_batch,
        2,
    );
    let log = train(&base, vars, &x_old, &y_old, &pre, |_, _| {})?;
    if log.diverged {
        return Err(AbbaError::NoConvergence {
            what: format!(
                "pretraining (loss became non-finite at step {}): lower pretrain_lr",
                log.losses.len()
            ),
        });
    }
    base.freeze()?;
    let (_, pretrain_acc_old) = base.evaluate(&xt_old, &yt_old)?;
    let (loss_before, _) = base.evaluate(&x_new, &y_new)?;
    let pretrain_seconds = started.elapsed().as_secs_f64();
    say(format!(
        "pretrained on 0–7 in {pretrain_seconds:.1}s: test accuracy {:.2}%, loss on 8–9 {loss_before:.4}",
        100.0 * pretrain_acc_old
    ));

    // Phase 2: each method from the same weights, same batches, same adapter seed.
    let adapt = opts(spec.adapt_epochs, spec.adapt_lr, spec.adapt_batch, 3);
    let mut methods = Vec::new();
    for method in spec.templates()? {
        let started = Instant::now();
        let name = method.record_name().to_string();
        let mut model = base.clone();
        let vars = match prepare(&mut model, &method, &spec.budget(), derive(spec.seed, 4)) {
            Ok(vars) => vars,
            Err(e) => {
                say(format!("{name:>9}: failed: {e}"));
                methods.push(MethodReport {
                    method: name,
                    trainable_params: 0,
                    acc_new: f64::NAN,
                    acc_old: f64::NAN,
                    final_loss: f64::NAN,
                    seconds: started.elapsed().as_secs_f64(),
                    status: Status::Failed,
                    losses: Vec::new(),
                    error: Some(e.to_string()),
                });
                continue;
            }
        };
        let trainable_params: usize = vars.iter().map(|v| v.elem_count()).sum();
        let log = train(&model, vars, &x_new, &y_new, &adapt, |_, _| {})?;
        let (final_loss, _) = model.evaluate(&x_new, &y_new)?;
        let (_, acc_new) = model.evaluate(&xt_new, &yt_new)?;
        let (_, acc_old) = model.evaluate(&xt_old, &yt_old)?;
        let status = if log.diverged || !final_loss.is_finite() {
            Status::Diverged
        } else {
            Status::Ok
        };
        let nan_if_diverged = |v: f64| if status == Status::Ok { v } else { f64::NAN };
        let report = MethodReport {
            method: name.clone(),
            trainable_params,
            acc_new: nan_if_diverged(acc_new),
            acc_old: nan_if_diverged(acc_old),
            final_loss: nan_if_diverged(final_loss),
            seconds: started.elapsed().as_secs_f64(),
            status,
            losses: log.losses,
            error: None,
        };
        say(format!(
            "{name:>9}: {trainable_params} params, loss {:.4}, 8–9 {:.2}%, 0–7 {:.2}%, {:.1}s{}",
            report.final_loss,
            100.0 * report.acc_new,
            100.0 * report.acc_old,
            report.seconds,
            if status == Status::Diverged {
                " (diverged)"
            } else {
                ""
            }
        ));
        methods.push(report);
    }
    let mut report = ToyReport {
        pretrain_acc_old,
        loss_before,
        pretrain_seconds,
        methods,
        files: Vec::new(),
    };
    report.files = write_outputs(spec, &report, out_dir)?;
    Ok(report)
}
