//! What a toy run produced: per-method accuracies, losses and timings.

use std::path::PathBuf;

use serde::Serialize;

/// How a method's adaptation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// A non-finite loss stopped it; its accuracies and final loss are NaN.
    Diverged,
    /// It could not start (a budget the method cannot reach): `error` says why; the other methods go on.
    Failed,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MethodReport {
    /// The method as results name it (`lora`, `pissa`, `mora-6`, …).
    pub method: String,
    pub trainable_params: usize,
    /// Test accuracy on digits 8–9 (argmax over all ten outputs).
    pub acc_new: f64,
    /// Test accuracy on digits 0–7 after adaptation: what was retained.
    pub acc_old: f64,
    /// Mean cross-entropy over the whole 8–9 training set after adaptation.
    pub final_loss: f64,
    pub seconds: f64,
    pub status: Status,
    /// Minibatch loss of every adaptation step.
    pub losses: Vec<f64>,
    /// Why a failed method did not run.
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ToyReport {
    /// Test accuracy on 0–7 of the pretrained model.
    pub pretrain_acc_old: f64,
    /// Mean cross-entropy of the pretrained model over the 8–9 training set: where every method starts.
    pub loss_before: f64,
    pub pretrain_seconds: f64,
    pub methods: Vec<MethodReport>,
    /// The files written.
    pub files: Vec<PathBuf>,
}
