//! Adapter files in Hugging Face PEFT's layout: a directory with `adapter_config.json` and
//! `adapter_model.safetensors`, tensor keys `base_model.model.<module path>.<parameter>`.
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

use crate::error::{AbbaError, Result};
use crate::finetune::layers::AdapterWeights;
use crate::finetune::model::{Llama, TargetModule};

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
const PREFIX: &str = "base_model.model.";

/// What an adapter directory holds, independent of any model.
#[derive(Clone, Debug, PartialEq)]
pub enum AdapterKind {
    Lora {
        r: usize,
        alpha: f64,
        rslora: bool,
    },
    Hira {
        r: usize,
    },
    Loha {
        r: usize,
        alpha: f64,
    },
    Abba {
        r1: usize,
        r2: usize,
        scale: f64,
        convention: String,
    },
}

impl AdapterKind {
    pub fn peft_type(&self) -> &'static str {
        match self {
            AdapterKind::Lora { .. } => "LORA",
            AdapterKind::Hira { .. } => "HIRA",
            AdapterKind::Loha { .. } => "LOHA",
            AdapterKind::Abba { .. } => "ABBA",
        }
    }

    /// (saved parameter suffix, index into [`AdapterWeights::vars`]) pairs, in file order.
    fn keys(&self) -> &'static [(&'static str, usize)] {
        match self {
            AdapterKind::Lora { .. } => &[("lora_A.weight", 0), ("lora_B.weight", 1)],
            AdapterKind::Hira { .. } => &[("hira_A", 0), ("hira_B", 1)],
            // LoHa's w1a/w2a are the B (m×r) factors and w1b/w2b the A (r×n) factors.
            AdapterKind::Loha { .. } => &[
                ("hada_w1_a", 1),
                ("hada_w1_b", 0),
                ("hada_w2_a", 3),
                ("hada_w2_b", 2),
            ],
            AdapterKind::Abba { .. } => &[
                ("abba_A1", 0),
                ("abba_B1", 1),
                ("abba_A2", 2),
                ("abba_B2", 3),
            ],
        }
    }

    /// Shapes of the vars in [`AdapterWeights::vars`] order for an m×n layer.
    fn var_shapes(&self, m: usize, n: usize) -> Vec<(usize, usize)> {
        match *self {
            AdapterKind::Lora { r, .. } | AdapterKind::Hira { r } => vec![(r, n), (m, r)],
            AdapterKind::Loha { r, .. } => vec![(r, n), (m, r), (r, n), (m, r)],
            AdapterKind::Abba { r1, r2, .. } => vec![(r1, n), (m, r1), (r2, n), (m, r2)],
        }
    }

    fn weights(&self, mut vars: Vec<Var>) -> AdapterWeights {
        let mut take = || vars.remove(0);
        match *self {
            AdapterKind::Lora { r, alpha, rslora } => AdapterWeights::Lora {
                a: take(),
                b: take(),
                scale: if rslora {
                    alpha / (r as f64).sqrt()
                } else {
                    alpha / r as f64
                },
            },
            AdapterKind::Hira { .. } => AdapterWeights::Hira {
                a: take(),
                b: take(),
            },
            AdapterKind::Loha { r, alpha } => AdapterWeights::Abba {
                a1: take(),
                b1: take(),
                a2: take(),
                b2: take(),
                scale: alpha / r as f64,
            },
            AdapterKind::Abba { scale, .. } => AdapterWeights::Abba {
                a1: take(),
                b1: take(),
                a2: take(),
                b2: take(),
                scale,
            },
        }
    }

    fn config_json(&self, targets: &[TargetModule], dropout: f32, base_model: &str) -> Value {
        let targets: Vec<&str> = targets.iter().map(|t| t.proj_name()).collect();
        let mut cfg = json!({
            "peft_type": self.peft_type(),
            "task_type": "CAUSAL_LM",
            "target_modules": targets,
            "base_model_name_or_path": base_model,
            "inference_mode": true,
            "modules_to_save": null,
            "layers_to_transform": null,
            "revision": null,
        });
        let extra = match self {
            AdapterKind::Lora { r, alpha, rslora } => json!({
                "r": r, "lora_alpha": alpha, "use_rslora": rslora, "lora_dropout": dropout,
                "bias": "none", "fan_in_fan_out": false, "init_lora_weights": true,
            }),
            AdapterKind::Hira { r } => json!({
                "r": r, "hira_dropout": dropout, "fan_in_fan_out": false, "init_weights": true,
            }),
            AdapterKind::Loha { r, alpha } => json!({
                "r": r, "alpha": alpha, "rank_dropout": 0.0, "module_dropout": 0.0,
                "use_effective_conv2d": false, "init_weights": true,
            }),
            AdapterKind::Abba {
                r1,
                r2,
                scale,
                convention,
            } => json!({
                "format_version": 1, "r1": r1, "r2": r2, "scale": scale, "scale_convention": convention,
                "dropout": dropout,
            }),
        };
        if let (Some(obj), Value::Object(more)) = (cfg.as_object_mut(), extra) {
            obj.extend(more);
        }
        cfg
    }

    fn from_config(cfg: &Value, path: &Path) -> Result<Self> {
        let bad = |message: String| AbbaError::Format {
            path: path.display().to_string(),
            format: "adapter_config.json",
            message,
        };
        let uint = |k: &str| -> Result<usize> {
            cfg.get(k)
                .and_then(Value::as_u64)
                .filter(|&r| r > 0)
                .map(|r| r as usize)
                .ok_or_else(|| bad(format!("field '{k}' must be a positive integer")))
        };
        let float = |k: &str| -> Result<f64> {
            cfg.get(k)
                .and_then(Value::as_f64)
                .ok_or_else(|| bad(format!("field '{k}' must be a number")))
        };
        let peft_type = cfg.get("peft_type").and_then(Value::as_str).unwrap_or("");
        match peft_type {
            "LORA" => {
                for unsupported in ["use_dora", "fan_in_fan_out"] {
                    if cfg.get(unsupported).and_then(Value::as_bool) == Some(true) {
                        return Err(AbbaError::Unsupported {
                            what: format!("adapter_config.json field {unsupported}"),
                            message: "true: only plain LoRA and rsLoRA load".into(),
                        });
                    }
                }
                if cfg
                    .get("rank_pattern")
                    .and_then(Value::as_object)
                    .is_some_and(|m| !m.is_empty())
                {
                    return Err(AbbaError::Unsupported {
                        what: "adapter_config.json field rank_pattern".into(),
                        message: "per-module ranks are not supported: use one r for every module"
                            .into(),
                    });
                }
                Ok(AdapterKind::Lora {
                    r: uint("r")?,
                    alpha: float("lora_alpha")?,
                    rslora: cfg
                        .get("use_rslora")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                })
            }
            "HIRA" => Ok(AdapterKind::Hira { r: uint("r")? }),
            "LOHA" => Ok(AdapterKind::Loha {
                r: uint("r")?,
                alpha: float("alpha")?,
            }),
            "ABBA" => Ok(AdapterKind::Abba {
                r1: uint("r1")?,
                r2: uint("r2")?,
                scale: float("scale")?,
                convention: cfg
                    .get("scale_convention")
                    .and_then(Value::as_str)
                    .unwrap_or("explicit")
                    .to_string(),
            }),
            other => Err(AbbaError::Unsupported {
                what: "peft_type".into(),
                message: format!("'{other}' (supported: LORA, HIRA, LOHA, ABBA)"),
            }),
        }
    }
}

/// An adapter held as tensors per module path, ready to save or to attach to a model.
#[derive(Clone, Debug)]
pub struct AdapterSet {
    pub kind: AdapterKind,
    pub targets: Vec<TargetModule>,
    pub dropout: f32,
    pub base_model: String,
    /// Module path (`model.layers.0.self_attn.q_proj`) → weights.
    pub modules: Vec<(String, AdapterWeights)>,
}

impl AdapterSet {
    /// The adapters currently attached to `model`, described as `kind`.
    pub fn from_model(
        model: &Llama,
        kind: AdapterKind,
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
            kind,
            targets,
            dropout,
            base_model: base_model.to_string(),
            modules,
        })
    }

    /// Writes the directory atomically (a sibling temp directory renamed into place; an existing one is replaced).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let mut tensors = HashMap::new();
        for (path, w) in &self.modules {
            let vars = w.vars();
            for (suffix, idx) in self.kind.keys() {
                let t = vars[*idx]
                    .as_tensor()
                    .to_dtype(DType::F32)?
                    .to_device(&Device::Cpu)?;
                tensors.insert(format!("{PREFIX}{path}.{suffix}"), t);
            }
        }
        let config = self
            .kind
            .config_json(&self.targets, self.dropout, &self.base_model);
        write_dir_atomically(dir, |tmp| {
            crate::finetune::model::checkpoint::save_safetensors(
                &tensors,
                &tmp.join(WEIGHTS_FILE),
            )?;
            let text = serde_json::to_string_pretty(&config)
                .map_err(|e| AbbaError::InvalidArgument(e.to_string()))?;
            std::fs::write(tmp.join(CONFIG_FILE), text).map_err(|e| io_err(tmp, e))
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
        let first_suffix = raw.kind.keys()[0].0;
        let mut paths: Vec<String> = raw
            .tensors
            .keys()
            .filter_map(|k| {
                k.strip_prefix(PREFIX)?
                    .strip_suffix(first_suffix)?
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
    kind: AdapterKind,
    targets: Vec<TargetModule>,
    dropout: f32,
    base_model: String,
    weights_path: std::path::PathBuf,
    tensors: HashMap<String, Tensor>,
}

impl RawAdapter {
    fn read(dir: &Path) -> Result<Self> {
        let cfg_path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| AbbaError::Io {
            path: cfg_path.display().to_string(),
            message: format!(
                "{e}: an adapter directory holds adapter_config.json and adapter_model.safetensors"
            ),
        })?;
        let cfg: Value = serde_json::from_str(&text).map_err(|e| AbbaError::Format {
            path: cfg_path.display().to_string(),
            format: "adapter_config.json",
            message: e.to_string(),
        })?;
        let kind = AdapterKind::from_config(&cfg, &cfg_path)?;
        let targets = parse_targets(&cfg, &cfg_path)?;
        let dropout = ["lora_dropout", "hira_dropout", "dropout"]
            .iter()
            .find_map(|k| cfg.get(*k).and_then(Value::as_f64))
            .unwrap_or(0.0) as f32;
        let weights_path = dir.join(WEIGHTS_FILE);
        let bytes = std::fs::read(&weights_path).map_err(|e| io_err(&weights_path, e))?;
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
            kind,
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

    /// Removes one module's tensors; with `shape` = the layer's (m, n), checks each against it.
    fn take_module(
        &mut self,
        path: &str,
        shape: Option<(usize, usize)>,
        dtype: DType,
        device: &Device,
    ) -> Result<AdapterWeights> {
        let keys = self.kind.keys();
        let mut vars: Vec<Option<Var>> = vec![None; keys.len()];
        let mut found = Vec::new();
        for (suffix, idx) in keys {
            let key = format!("{PREFIX}{path}.{suffix}");
            let t = self.tensors.remove(&key).ok_or_else(|| {
                self.bad(format!(
                    "tensor '{key}' is missing: was this adapter made for this model?"
                ))
            })?;
            found.push((key, *idx, t));
        }
        // Without a model, the layer shape comes from the first B (m × r) and A (r × n) factors.
        let (m, n) = match shape {
            Some(s) => s,
            None => {
                let dims = |i: usize| found.iter().find(|f| f.1 == i).map(|f| f.2.dims().to_vec());
                match (dims(1), dims(0)) {
                    (Some(b), Some(a)) if b.len() == 2 && a.len() == 2 => (b[0], a[1]),
                    _ => {
                        return Err(
                            self.bad(format!("module '{path}' has factors that are not matrices"))
                        );
                    }
                }
            }
        };
        let shapes = self.kind.var_shapes(m, n);
        for (key, idx, t) in found {
            let (em, en) = shapes[idx];
            if t.dims() != [em, en] {
                return Err(self.bad(format!(
                    "tensor '{key}' has shape {:?}, the {m}×{n} layer needs [{em}, {en}]: was this adapter made for this model?",
                    t.dims()
                )));
            }
            vars[idx] = Some(Var::from_tensor(&t.to_dtype(dtype)?.to_device(device)?)?);
        }
        Ok(self.kind.weights(vars.into_iter().flatten().collect()))
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
            kind: self.kind,
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

fn io_err(path: &Path, e: std::io::Error) -> AbbaError {
    AbbaError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Fills a fresh sibling directory with `fill`, then swaps it into `dir`; on failure the temp is removed and
/// `dir` is untouched.
pub fn write_dir_atomically(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = dir.file_name().ok_or_else(|| {
        AbbaError::InvalidArgument(format!("{} is not a directory name", dir.display()))
    })?;
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
    let tmp = parent.join(format!(
        ".{}.partial-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).map_err(|e| io_err(&tmp, e))?;
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let old = parent.join(format!(
        ".{}.old-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(|e| io_err(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| io_err(dir, e))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// The tensors of a model's adapters as they would be saved (for tests and exports).
pub fn adapter_tensors(set: &AdapterSet) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    for (path, w) in &set.modules {
        for (suffix, idx) in set.kind.keys() {
            out.insert(
                format!("{PREFIX}{path}.{suffix}"),
                w.vars()[*idx].as_tensor().clone(),
            );
        }
    }
    Ok(out)
}
