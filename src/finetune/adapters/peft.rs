//! Adapter files in Hugging Face PEFT's layout: a directory with `adapter_config.json` and
//! `adapter_model.safetensors`, tensor keys `base_model.model.<module path>.<parameter>`.
//!
//! Which tensors a method has, their keys and shapes, and its config fields come from [`Method`] (its factor
//! table and `peft_config`); this file only reads and writes directories.
//!
//! | kind  | `peft_type` | parameters (shapes for an m×n layer)                                     | ΔW                      |
//! |-------|-------------|---------------------------------------------------------------------------|-------------------------|
//! | LoRA  | `LORA`      | `lora_A.weight` r×n, `lora_B.weight` m×r                                  | (α/r or α/√r)·B·A       |
//! | HiRA  | `HIRA`      | `hira_A` r×n, `hira_B` m×r                                                | W0 ⊙ (B·A)              |
//! | LoHa  | `LOHA`      | `hada_w1_a` m×r, `hada_w1_b` r×n, `hada_w2_a` m×r, `hada_w2_b` r×n        | (α/r)·(W1a·W1b)⊙(W2a·W2b) |
//! | ABBA  | `ABBA`      | `abba_B1` m×r1, `abba_A1` r1×n, `abba_B2` m×r2, `abba_A2` r2×n (ours)     | s·(B1·A1)⊙(B2·A2)       |
//!
//! PEFT has no ABBA; our `ABBA` files are documented in `docs/adapter-format.md` and export exactly to LoHa.
//! A directory is written under a temporary name and renamed into place, so a crash never leaves half of one.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use serde_json::{Value, json};

use crate::adapter::{KeyStyle, Method};
use crate::error::{AbbaError, Result};
use crate::finetune::layers::AdapterWeights;
use crate::finetune::model::{Llama, TargetModule};
use crate::io::write_dir_atomic;

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
const PREFIX: &str = "base_model.model.";

/// An adapter held as tensors per module path, ready to save or to attach to a model.
#[derive(Clone, Debug)]
pub struct AdapterSet {
    /// How the file names its tensors (an ABBA can be saved as PEFT's LoHa).
    pub style: KeyStyle,
    pub targets: Vec<TargetModule>,
    pub dropout: f32,
    pub base_model: String,
    /// Module path (`model.layers.0.self_attn.q_proj`) → weights.
    pub modules: Vec<(String, AdapterWeights)>,
}

impl AdapterSet {
    /// The adapters currently attached to `model`, to be saved with tensor names in `style`.
    pub fn from_model(
        model: &Llama,
        style: KeyStyle,
        dropout: f32,
        base_model: &str,
    ) -> Result<Self> {
        let mut modules = Vec::new();
        let mut targets = Vec::new();
        for (path, target, lin) in model.linears() {
            if let Some(a) = &lin.adapter {
                modules.push((path, a.clone()));
                if !targets.contains(&target) {
                    targets.push(target);
                }
            }
        }
        if modules.is_empty() {
            return Err(AbbaError::InvalidArgument(
                "the model carries no adapter to save".into(),
            ));
        }
        targets.sort();
        Ok(AdapterSet {
            style,
            targets,
            dropout,
            base_model: base_model.to_string(),
            modules,
        })
    }

    /// The method of the set (every module has it, sized for its layer).
    pub fn method(&self) -> &Method {
        &self.modules[0].1.method
    }

    /// The `peft_type` the set is saved under (`LORA`, `LOHA`, …).
    pub fn peft_type(&self) -> String {
        self.method()
            .peft_config(self.style, self.dropout)
            .ok()
            .and_then(|c| c.get("peft_type")?.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// The whole `adapter_config.json`: the method's fields and the ones every PEFT config has.
    pub fn config_json(&self) -> Result<Value> {
        let targets: Vec<&str> = self.targets.iter().map(|t| t.proj_name()).collect();
        let mut cfg = json!({
            "task_type": "CAUSAL_LM",
            "target_modules": targets,
            "base_model_name_or_path": self.base_model,
            "inference_mode": true,
            "modules_to_save": null,
            "layers_to_transform": null,
            "revision": null,
        });
        if let (Some(obj), Value::Object(more)) = (
            cfg.as_object_mut(),
            self.method().peft_config(self.style, self.dropout)?,
        ) {
            obj.extend(more);
        }
        Ok(cfg)
    }

    /// Writes the directory atomically (a sibling temp directory renamed into place; an existing one is replaced).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let mut tensors = HashMap::new();
        for (key, t) in adapter_tensors(self)? {
            tensors.insert(key, t.to_dtype(DType::F32)?.to_device(&Device::Cpu)?);
        }
        let config = self.config_json()?;
        write_dir_atomic(dir, |tmp| {
            crate::finetune::model::checkpoint::save_safetensors(
                &tensors,
                &tmp.join(WEIGHTS_FILE),
            )?;
            let text = serde_json::to_string_pretty(&config)
                .map_err(|e| AbbaError::InvalidArgument(e.to_string()))?;
            std::fs::write(tmp.join(CONFIG_FILE), text).map_err(|e| AbbaError::io(tmp, e))
        })
    }

    /// Reads an adapter directory, checking every tensor against the layer shapes of `model`.
    pub fn load(dir: &Path, model: &Llama) -> Result<Self> {
        let mut raw = RawAdapter::read(dir)?;
        let (dtype, device) = (model.dtype(), model.device().clone());
        let mut modules = Vec::new();
        for (path, target, lin) in model.linears() {
            if !raw.targets.contains(&target) {
                continue;
            }
            let (m, n) = lin.shape()?;
            modules.push((
                path.clone(),
                raw.take_module(&path, Some((m, n)), dtype, &device)?,
            ));
        }
        raw.finish(modules)
    }

    /// Reads an adapter directory without a model (for format conversion): every module found in the file.
    pub fn load_standalone(dir: &Path) -> Result<Self> {
        let mut raw = RawAdapter::read(dir)?;
        let first_suffix = raw.keys()[0].clone();
        let mut paths: Vec<String> = raw
            .tensors
            .keys()
            .filter_map(|k| {
                k.strip_prefix(PREFIX)?
                    .strip_suffix(first_suffix.as_str())?
                    .strip_suffix('.')
            })
            .map(str::to_string)
            .collect();
        paths.sort();
        let mut modules = Vec::new();
        for path in paths {
            let w = raw.take_module(&path, None, DType::F32, &Device::Cpu)?;
            modules.push((path, w));
        }
        raw.finish(modules)
    }

    /// Attaches these adapters to `model` (replacing any it had).
    pub fn attach(&self, model: &mut Llama) {
        let by_path: HashMap<&str, &AdapterWeights> =
            self.modules.iter().map(|(p, w)| (p.as_str(), w)).collect();
        for (path, _, lin) in model.linears_mut() {
            lin.adapter = by_path.get(path.as_str()).map(|w| (*w).clone());
            lin.dropout = self.dropout;
        }
    }
}

/// An adapter directory's config and tensors, before they are matched to modules.
struct RawAdapter {
    method: Method,
    style: KeyStyle,
    targets: Vec<TargetModule>,
    dropout: f32,
    base_model: String,
    weights_path: std::path::PathBuf,
    tensors: HashMap<String, Tensor>,
}

impl RawAdapter {
    fn read(dir: &Path) -> Result<Self> {
        let cfg_path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| {
            AbbaError::io_hint(
                &cfg_path,
                e,
                "an adapter directory holds adapter_config.json and adapter_model.safetensors",
            )
        })?;
        let cfg: Value = serde_json::from_str(&text).map_err(|e| AbbaError::Format {
            path: cfg_path.display().to_string(),
            format: "adapter_config.json",
            message: e.to_string(),
        })?;
        let (method, style) = Method::from_peft_config(&cfg, &cfg_path)?;
        let targets = parse_targets(&cfg, &cfg_path)?;
        let dropout = ["lora_dropout", "hira_dropout", "dropout"]
            .iter()
            .find_map(|k| cfg.get(*k).and_then(Value::as_f64))
            .unwrap_or(0.0) as f32;
        let weights_path = dir.join(WEIGHTS_FILE);
        let bytes = std::fs::read(&weights_path).map_err(|e| AbbaError::io(&weights_path, e))?;
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| {
            AbbaError::Format {
                path: weights_path.display().to_string(),
                format: "safetensors",
                message: format!(
                    "{}: the file is corrupt or truncated",
                    e.to_string().lines().next().unwrap_or("")
                ),
            }
        })?;
        Ok(RawAdapter {
            method,
            style,
            targets,
            dropout,
            base_model: cfg
                .get("base_model_name_or_path")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            weights_path,
            tensors,
        })
    }

    fn bad(&self, message: String) -> AbbaError {
        AbbaError::Format {
            path: self.weights_path.display().to_string(),
            format: "adapter weights",
            message,
        }
    }

    /// The key suffixes of one module's tensors, in factor-table order (they do not depend on the layer shape).
    fn keys(&self) -> Vec<String> {
        self.method
            .factors((0, 0))
            .iter()
            .map(|f| f.key_in(self.style).to_string())
            .collect()
    }

    /// Removes one module's tensors; with `shape` = the layer's (m, n), checks each against it.
    fn take_module(
        &mut self,
        path: &str,
        shape: Option<(usize, usize)>,
        dtype: DType,
        device: &Device,
    ) -> Result<AdapterWeights> {
        let mut found = Vec::new();
        for suffix in self.keys() {
            let key = format!("{PREFIX}{path}.{suffix}");
            let t = self.tensors.remove(&key).ok_or_else(|| {
                self.bad(format!(
                    "tensor '{key}' is missing: was this adapter made for this model?"
                ))
            })?;
            found.push((key, t));
        }
        // Without a model, the layer shape comes from the first A (r × n) and B (m × r) factors, which every
        // factor table lists first.
        let (m, n) = match shape {
            Some(s) => s,
            None => match (found.first(), found.get(1)) {
                (Some((_, a)), Some((_, b))) if a.rank() == 2 && b.rank() == 2 => {
                    (b.dims()[0], a.dims()[1])
                }
                _ => {
                    return Err(
                        self.bad(format!("module '{path}' has factors that are not matrices"))
                    );
                }
            },
        };
        let table = self.method.factors((m, n));
        let mut vars = Vec::with_capacity(found.len());
        for ((key, t), factor) in found.into_iter().zip(&table) {
            let (em, en) = factor.shape;
            if t.dims() != [em, en] {
                return Err(self.bad(format!(
                    "tensor '{key}' has shape {:?}, the {m}×{n} layer needs [{em}, {en}]: was this adapter made for this model?",
                    t.dims()
                )));
            }
            vars.push(Var::from_tensor(&t.to_dtype(dtype)?.to_device(device)?)?);
        }
        AdapterWeights::new(self.method.clone(), vars, (m, n))
    }

    fn finish(self, modules: Vec<(String, AdapterWeights)>) -> Result<AdapterSet> {
        if let Some(extra) = self.tensors.keys().min() {
            return Err(self.bad(format!(
                "tensor '{extra}' belongs to no targeted module of this model"
            )));
        }
        if modules.is_empty() {
            return Err(self.bad("no adapter tensors found".into()));
        }
        Ok(AdapterSet {
            style: self.style,
            targets: self.targets,
            dropout: self.dropout,
            base_model: self.base_model,
            modules,
        })
    }
}

fn parse_targets(cfg: &Value, path: &Path) -> Result<Vec<TargetModule>> {
    match cfg.get("target_modules") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().unwrap_or("").parse::<TargetModule>())
            .collect(),
        Some(Value::String(s)) => Err(AbbaError::Unsupported {
            what: "target_modules as a regular expression".into(),
            message: format!("'{s}' in {}: list the module names instead", path.display()),
        }),
        _ => Err(AbbaError::Format {
            path: path.display().to_string(),
            format: "adapter_config.json",
            message: "no target_modules list".into(),
        }),
    }
}

/// The tensors of a model's adapters as they would be saved (for tests and exports).
pub fn adapter_tensors(set: &AdapterSet) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    for (path, w) in &set.modules {
        let table = w.method.factors(w.layer_shape());
        for (factor, var) in table.iter().zip(w.vars()) {
            out.insert(
                format!("{PREFIX}{path}.{}", factor.key_in(set.style)),
                var.as_tensor().clone(),
            );
        }
    }
    Ok(out)
}
