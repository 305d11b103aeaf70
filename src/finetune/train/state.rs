//! Training checkpoints: `checkpoints/step-NNNNNN/` holds the trainable variables, the optimizer moments and the
//! step. Each is written to a temporary directory and renamed into place, so a kill mid-save leaves the previous
//! checkpoint intact; resume picks the highest complete one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{AbbaError, Result};
use crate::finetune::model::checkpoint::save_safetensors;
use crate::finetune::optim::Optimizer;
use crate::io::write_dir_atomic;

const VARS: &str = "trainable.safetensors";
const OPTIMIZER: &str = "optimizer.safetensors";
const STATE: &str = "state.json";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CheckpointState {
    pub step: usize,
    pub tokens: usize,
    pub elapsed_s: f64,
}

pub fn checkpoint_dir(out: &Path, step: usize) -> PathBuf {
    out.join("checkpoints").join(format!("step-{step:06}"))
}

pub fn save(
    out: &Path,
    vars: &[(String, Var)],
    opt: &dyn Optimizer,
    state: &CheckpointState,
) -> Result<()> {
    let cpu = |t: &Tensor| t.to_device(&Device::Cpu);
    let mut v = HashMap::new();
    for (name, var) in vars {
        v.insert(name.clone(), cpu(var.as_tensor())?);
    }
    let mut o = HashMap::new();
    for (name, t) in opt.state() {
        o.insert(name, cpu(&t)?);
    }
    let json = serde_json::to_string_pretty(state)
        .map_err(|e| AbbaError::InvalidArgument(e.to_string()))?;
    write_dir_atomic(&checkpoint_dir(out, state.step), |tmp| {
        save_safetensors(&v, &tmp.join(VARS))?;
        save_safetensors(&o, &tmp.join(OPTIMIZER))?;
        std::fs::write(tmp.join(STATE), json).map_err(|e| AbbaError::io(tmp, e))
    })
}

/// The latest complete checkpoint under `out`, if any.
pub fn latest(out: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(out.join("checkpoints")).ok()?;
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("step-"))
                && p.join(STATE).is_file()
        })
        .max()
}

/// Restores variables and optimizer from `dir`; every variable must be present with its shape.
pub fn restore(
    dir: &Path,
    vars: &[(String, Var)],
    opt: &mut dyn Optimizer,
) -> Result<CheckpointState> {
    let bad = |message: String| AbbaError::Format {
        path: dir.display().to_string(),
        format: "training checkpoint",
        message,
    };
    let text = std::fs::read_to_string(dir.join(STATE)).map_err(|e| bad(e.to_string()))?;
    let state: CheckpointState = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let device = vars
        .first()
        .map(|(_, v)| v.device().clone())
        .unwrap_or(Device::Cpu);
    let load = |file: &str| {
        candle_core::safetensors::load(dir.join(file), &device).map_err(|e| {
            bad(format!(
                "{file}: {}",
                e.to_string().lines().next().unwrap_or("")
            ))
        })
    };
    let saved = load(VARS)?;
    for (name, var) in vars {
        let t = saved.get(name).ok_or_else(|| {
            bad(format!(
                "no '{name}': the checkpoint was made with another adapter config"
            ))
        })?;
        if t.dims() != var.dims() {
            return Err(bad(format!(
                "'{name}' has shape {:?}, expected {:?}",
                t.dims(),
                var.dims()
            )));
        }
        var.set(&t.to_dtype(var.dtype())?)?;
    }
    opt.load_state(&load(OPTIMIZER)?, state.step)?;
    Ok(state)
}
