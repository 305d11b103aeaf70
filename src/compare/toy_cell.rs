//! A cell of the MNIST toy (paper Fig. 1) as a comparison: the toy's own pieces (`finetune::toy`) run for one
//! method, one budget, one lr and one seed. The seed draws the split and the base: the MLP is pretrained on digits
//! 0–7 (the same for every method at that seed), then adapted to 8–9. The toy's training images are split once
//! more, per class, into train and validation (`validation_fraction`); the toy's test images are the test split.
//! Metric: accuracy on 8–9; `test_kept` is the accuracy kept on 0–7 (forgetting). The run directory holds
//! `report.json` (this cell's numbers), written last.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

use super::grid::Cell;
use super::spec::CompareSpec;
use crate::error::{AbbaError, Result};
use crate::finetune::toy::mnist::{CLASSES, Digits, MNIST_PIXELS, load_digits, split_per_class};
use crate::finetune::toy::spec::FIRST_NEW_DIGIT;
use crate::finetune::toy::train::{TrainOpts, train};
use crate::finetune::toy::{Budget, Mlp, ToySpec, prepare};
use crate::rng::derive;

/// What a toy cell measured (its `report.json`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ToyCellReport {
    pub diverged: bool,
    pub params: usize,
    pub steps: usize,
    pub val_loss: f64,
    pub val_accuracy: f64,
    pub test_loss: f64,
    pub test_accuracy: f64,
    /// Accuracy on 0–7 test images after adaptation.
    pub test_kept: f64,
    pub seconds: f64,
}

/// Per class, the first `fraction` of `train`'s images (in their shuffled order) go to validation.
fn carve_validation(train: &Digits, fraction: f64) -> (Digits, Digits) {
    let (mut keep, mut val) = (train.filter(|_| false), train.filter(|_| false));
    for class in 0..CLASSES as u8 {
        let part = train.filter(|l| l == class);
        let n_val = ((part.len() as f64) * fraction).round() as usize;
        for i in 0..part.len() {
            let target = if i < n_val { &mut val } else { &mut keep };
            target.images.extend_from_slice(part.image(i));
            target.labels.push(class);
        }
    }
    (keep, val)
}

/// Runs one toy cell into `dir` (or reads its finished report).
pub fn run_toy_cell(
    spec: &CompareSpec,
    toy: &ToySpec,
    cell: &Cell,
    dir: &Path,
) -> Result<ToyCellReport> {
    let report_path = dir.join("report.json");
    if report_path.is_file() {
        let text = crate::io::read_to_string(&report_path)?;
        return serde_json::from_str(&text).map_err(|e| AbbaError::Format {
            path: report_path.display().to_string(),
            format: "toy cell report.json",
            message: e.to_string(),
        });
    }
    let started = Instant::now();
    let fraction = spec.toy_validation_fraction;
    let (dtype, device) = (DType::F32, Device::Cpu);
    let digits = load_digits(&toy.data, MNIST_PIXELS)?;
    let split = split_per_class(
        &digits,
        toy.train_per_class,
        toy.test_per_class,
        derive(cell.seed, 0),
    )?;
    let (train_set, val_set) = carve_validation(&split.train, fraction);
    let old = |l: u8| l < FIRST_NEW_DIGIT;
    let new = |l: u8| l >= FIRST_NEW_DIGIT;
    let t = |d: &Digits| d.to_tensors(dtype, &device);
    let (x_old, y_old) = t(&train_set.filter(old))?;
    let (x_new, y_new) = t(&train_set.filter(new))?;
    let (xv_new, yv_new) = t(&val_set.filter(new))?;
    let (xt_new, yt_new) = t(&split.test.filter(new))?;
    let (xt_old, yt_old) = t(&split.test.filter(old))?;

    let opts = |epochs, lr, batch, stream| TrainOpts {
        epochs,
        lr,
        batch,
        schedule: toy.schedule,
        max_grad_norm: toy.max_grad_norm,
        seed: derive(cell.seed, stream),
    };
    let mut base = Mlp::new(
        MNIST_PIXELS,
        toy.hidden,
        CLASSES,
        dtype,
        &device,
        derive(cell.seed, 1),
    )?;
    let budget = Budget {
        rank: cell.budget.unwrap_or(toy.rank),
        lora_alpha: toy.lora_alpha,
        abba_alpha: toy.abba_alpha,
    };
    let method = budget.template(&cell.entry(spec).method)?;
    // The toy demo lets KRAdapter keep its one size where the budget cannot size it; a comparison is at equal
    // budget or not at all, so such a cell fails with the sizes the method reaches, as LLM cells do (checked
    // before the base is pretrained, so a refused cell costs nothing).
    if let Some(rank) = cell.budget
        && method != crate::adapter::Method::Full
    {
        for layer in base.layers() {
            crate::budget::sized(
                &method,
                crate::budget::Budget::LoraRank(rank),
                crate::budget::AbbaRankRule::Half,
                layer.weight.dims2()?,
            )?;
        }
    }
    let vars = base.make_base_trainable()?;
    let pre = opts(toy.pretrain_epochs, toy.pretrain_lr, toy.pretrain_batch, 2);
    if train(&base, vars, &x_old, &y_old, &pre, |_, _| {})?.diverged {
        return Err(AbbaError::NoConvergence {
            what: "pretraining on 0–7: lower the toy's pretrain_lr".into(),
        });
    }
    base.freeze()?;

    let mut model = base.clone();
    let vars = prepare(&mut model, &method, &budget, derive(cell.seed, 4))?;
    let params = vars.iter().map(|v| v.elem_count()).sum();
    let adapt = opts(toy.adapt_epochs, cell.lr, toy.adapt_batch, 3);
    let log = train(&model, vars, &x_new, &y_new, &adapt, |_, _| {})?;
    let (val_loss, val_accuracy) = model.evaluate(&xv_new, &yv_new)?;
    let (test_loss, test_accuracy) = model.evaluate(&xt_new, &yt_new)?;
    let (_, test_kept) = model.evaluate(&xt_old, &yt_old)?;
    let diverged = log.diverged || !val_loss.is_finite();
    let nan_if = |v: f64| if diverged { f64::NAN } else { v };
    let report = ToyCellReport {
        diverged,
        params,
        steps: log.losses.len(),
        val_loss: nan_if(val_loss),
        val_accuracy: nan_if(val_accuracy),
        test_loss: nan_if(test_loss),
        test_accuracy: nan_if(test_accuracy),
        test_kept: nan_if(test_kept),
        seconds: started.elapsed().as_secs_f64(),
    };
    let text = serde_json::to_string_pretty(&report)
        .map_err(|e| AbbaError::InvalidArgument(e.to_string()))?;
    crate::io::write_atomic(&report_path, text.as_bytes())?;
    Ok(report)
}
