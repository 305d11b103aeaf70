//! Adapter files in Hugging Face PEFT's layout: a directory with `adapter_config.json` and
//! `adapter_model.safetensors`, tensor keys `base_model.model.<module path>.<parameter>`.
//!
//! Which tensors a method has, their keys and shapes, and its config fields come from [`Method`] (its factor
//! table and `peft_config`); which modules a config adapts, and with which rank, from [`PeftRules`] (PEFT's
//! `target_modules` / `exclude_modules` / `layers_to_transform` / `rank_pattern` / `alpha_pattern`). This file
//! reads and writes directories.
//!
//! | method | `peft_type` | parameters (shapes for an m×n layer) |
//! |---|---|---|
//! | LoRA, rsLoRA | `LORA` | `lora_A.weight` r×n, `lora_B.weight` m×r |
//! | DoRA | `LORA` + `use_dora` | as LoRA, and `lora_magnitude_vector` [m] |
//! | PiSSA, OLoRA | `LORA` | saved converted: rank 2r, `lora_A` = [A; A0], `lora_B` = [B, −B0], for the original base |
//! | HiRA | `HIRA` | `hira_A` r×n, `hira_B` m×r |
//! | LoKr, KronA | `LOKR` | `lokr_w1` (or `_a`, `_b`), `lokr_w2` (or `_a`, `_b`) |
//! | ABBA | `LOHA` (export) or `ABBA` (ours) | `hada_w1_a` m×r … / `abba_B1` m×r1 … |
//! | ABBA chain, MoRA, KRAdapter | `ABBA_CHAIN`, `MORA`, `KRADAPTER` (ours) | `chain_A1` …, `mora_M`, `kr_U`, `kr_V` |
//!
//! Our own formats are documented in `docs/adapter-format.md`. A directory is written under a temporary name and
//! renamed into place, so a crash never leaves half of one.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use serde_json::{Value, json};

use super::peft_rules::PeftRules;
use crate::adapter::init::{LoraInit, SvdMethod};
use crate::adapter::scaling::LoraScale;
use crate::adapter::{KeyStyle, LoraSpec, Method};
use crate::error::{AbbaError, Result};
use crate::finetune::bridge::{from_array, to_array};
use crate::finetune::layers::AdapterWeights;
use crate::finetune::model::{Llama, TargetModule};
use crate::io::write_dir_atomic;

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
const PREFIX: &str = "base_model.model.";
/// Suffix of the keys holding a factor's initial value, for adapters whose init changed the base (ours).
const INIT_SUFFIX: &str = ".init";

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
    /// Decoder layers of the model the set was made on or loaded for (None: not known, e.g. read standalone).
    pub model_layers: Option<usize>,
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
            model_layers: Some(model.cfg.num_hidden_layers),
        })
    }

    /// The method of the set's first module (every module has the method, sized for its layer).
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

    /// The set as it is saved: a LoRA whose initialisation changed the base (PiSSA, OLoRA) becomes PEFT's
    /// converted form, the rank-2r LoRA [A; A0], [B, −B0] with α doubled (×√2 with rsLoRA), which applies to the
    /// original base.
    pub fn for_original_base(&self) -> Result<AdapterSet> {
        let mut modules = Vec::with_capacity(self.modules.len());
        for (path, w) in &self.modules {
            let converted = match (&w.method, &w.origin) {
                (Method::Lora(s), Some(origin)) => Some(convert_lora(w, s, origin)?),
                _ => None,
            };
            modules.push((path.clone(), converted.unwrap_or_else(|| w.clone())));
        }
        Ok(AdapterSet {
            modules,
            ..self.clone()
        })
    }

    /// The whole `adapter_config.json`: the method's fields, per-module ranks and alphas where modules differ
    /// (PEFT's `rank_pattern` / `alpha_pattern`, keyed by full module path), and the fields every config has.
    pub fn config_json(&self) -> Result<Value> {
        // The projection names when every layer has every targeted projection; otherwise the modules' full
        // paths, which PEFT matches exactly.
        let layers = self.model_layers.unwrap_or_else(|| {
            self.modules
                .iter()
                .filter_map(|(p, _)| layer_of(p))
                .max()
                .map_or(0, |l| l + 1)
        });
        let targets: Vec<String> = if self.modules.len() == layers * self.targets.len() {
            self.targets
                .iter()
                .map(|t| t.proj_name().to_string())
                .collect()
        } else {
            self.modules.iter().map(|(p, _)| p.clone()).collect()
        };
        let mut cfg = json!({
            "task_type": "CAUSAL_LM",
            "target_modules": targets,
            "base_model_name_or_path": self.base_model,
            "inference_mode": true,
            "modules_to_save": null,
            "layers_to_transform": null,
            "revision": null,
        });
        let first = self.method().peft_config(self.style, self.dropout)?;
        let (mut ranks, mut alphas) = (serde_json::Map::new(), serde_json::Map::new());
        for (path, w) in &self.modules[1..] {
            let this = w.method.peft_config(self.style, self.dropout)?;
            let key = regex::escape(path);
            for field in ["r", "lora_alpha", "alpha"] {
                if this.get(field) != first.get(field)
                    && let Some(v) = this.get(field)
                {
                    let out = if field == "r" {
                        &mut ranks
                    } else {
                        &mut alphas
                    };
                    out.insert(key.clone(), v.clone());
                }
            }
        }
        if let (Some(obj), Value::Object(more)) = (cfg.as_object_mut(), first) {
            obj.extend(more);
            if !ranks.is_empty() {
                obj.insert("rank_pattern".into(), Value::Object(ranks));
            }
            if !alphas.is_empty() {
                obj.insert("alpha_pattern".into(), Value::Object(alphas));
            }
        }
        Ok(cfg)
    }

    /// Writes the directory atomically (a sibling temp directory renamed into place; an existing one is replaced).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let saved = self.for_original_base()?;
        let mut tensors = HashMap::new();
        for (key, t) in adapter_tensors(&saved)? {
            tensors.insert(key, t.to_dtype(DType::F32)?.to_device(&Device::Cpu)?);
        }
        let config = saved.config_json()?;
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
            if !raw.rules.adapts(&path) {
                continue;
            }
            raw.seen(target);
            let shape = lin.shape()?;
            modules.push((
                path.clone(),
                raw.take_module(&path, Some(shape), dtype, &device)?,
            ));
        }
        raw.finish(modules, Some(model.cfg.num_hidden_layers))
    }

    /// Reads an adapter directory without a model (for format conversion): every module found in the file.
    pub fn load_standalone(dir: &Path) -> Result<Self> {
        let mut raw = RawAdapter::read(dir)?;
        // A tensor is `<prefix><module path>.<factor>[.weight][.init]`.
        let mut paths: Vec<String> = raw
            .tensors
            .keys()
            .filter_map(|k| {
                let k = k.strip_prefix(PREFIX)?;
                let k = k.strip_suffix(INIT_SUFFIX).unwrap_or(k);
                let k = k.strip_suffix(".weight").unwrap_or(k);
                Some(k.rsplit_once('.')?.0.to_string())
            })
            .collect();
        paths.sort();
        paths.dedup();
        let mut modules = Vec::new();
        for path in paths {
            if let Ok(t) = path.parse::<TargetModule>().or_else(|_| {
                path.rsplit('.')
                    .next()
                    .unwrap_or("")
                    .parse::<TargetModule>()
            }) {
                raw.seen(t);
            }
            let w = raw.take_module(&path, None, DType::F32, &Device::Cpu)?;
            modules.push((path, w));
        }
        raw.finish(modules, None)
    }

    /// Attaches these adapters to `model` (replacing any it had). An adapter whose initialisation changed the
    /// base (PiSSA, OLoRA, ABBA's Table 3 variants) puts the residual W0 − ΔW(θ₀) in its layer, so the model
    /// computes W0 + ΔW(θ) − ΔW(θ₀) from the original W0, exactly as when it was trained.
    pub fn attach(&self, model: &mut Llama) -> Result<()> {
        let by_path: HashMap<&str, &AdapterWeights> =
            self.modules.iter().map(|(p, w)| (p.as_str(), w)).collect();
        for (path, _, lin) in model.linears_mut() {
            let adapter = match by_path.get(path.as_str()) {
                Some(w) => Some(with_recomputed_origin(w, &lin.weight)?),
                None => None,
            };
            if let Some(w) = &adapter
                && let Some(residual) = w.residual_base(&lin.weight)?
            {
                lin.weight = residual;
            }
            lin.adapter = adapter;
            lin.dropout = self.dropout;
        }
        Ok(())
    }
}

/// PEFT's converted PiSSA/OLoRA: lora_A = [A; A0] (2r × n), lora_B = [B, −B0] (m × 2r), with a scale that keeps
/// s: α → 2α (α/r), α → √2·α (α/√r).
fn convert_lora(w: &AdapterWeights, s: &LoraSpec, origin: &[Tensor]) -> Result<AdapterWeights> {
    // The table's order is A, B.
    let (a, b) = (w.var("A")?.as_tensor(), w.var("B")?.as_tensor());
    let (a0, b0) = (&origin[0], &origin[1]);
    let a2 = Tensor::cat(&[a, a0], 0)?;
    let b2 = Tensor::cat(&[b, &b0.neg()?], 1)?;
    let scale = match s.scale {
        LoraScale::Standard { alpha } => LoraScale::Standard { alpha: 2.0 * alpha },
        LoraScale::Rslora { alpha } => LoraScale::Rslora {
            alpha: 2f64.sqrt() * alpha,
        },
        explicit @ LoraScale::Explicit { .. } => explicit,
    };
    let method = Method::Lora(LoraSpec {
        r: 2 * s.r,
        scale,
        init: LoraSpec::default().init,
    });
    AdapterWeights::new(
        method,
        vec![Var::from_tensor(&a2)?, Var::from_tensor(&b2)?],
        w.layer_shape(),
    )
}

/// A LoRA loaded unconverted with a base-changing init (`init_lora_weights: "pissa"` / `"olora"`, which PEFT
/// re-runs on load): its initial values, recomputed from this layer's W0, so that attaching gives PEFT's model.
fn with_recomputed_origin(w: &AdapterWeights, weight: &Tensor) -> Result<AdapterWeights> {
    let Method::Lora(s) = &w.method else {
        return Ok(w.clone());
    };
    if w.origin.is_some() || !s.init.changes_base() {
        return Ok(w.clone());
    }
    let w0 = to_array(weight)?;
    let init = w
        .method
        .init::<f64, _>(w0.view(), &mut crate::rng::seeded(0))?;
    let factors = init.adapter.as_adapter().factors();
    let origin = w
        .method
        .factors(w0.dim())
        .iter()
        .map(|f| {
            from_array(
                &factors[f.position].to_owned(),
                weight.dtype(),
                weight.device(),
            )
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(w.clone().with_origin(origin))
}

/// An adapter directory's config and tensors, before they are matched to modules.
struct RawAdapter {
    method: Method,
    style: KeyStyle,
    rules: PeftRules,
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
        let (mut method, style) = Method::from_peft_config(&cfg, &cfg_path)?;
        if let Method::Lora(s) = &mut method {
            s.init = lora_init_on_load(&cfg, &cfg_path)?;
        }
        let rules = PeftRules::read(&cfg, &cfg_path)?;
        let dropout = ["lora_dropout", "hira_dropout", "dropout", "module_dropout"]
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
            rules,
            targets: Vec::new(),
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

    fn seen(&mut self, target: TargetModule) {
        if !self.targets.contains(&target) {
            self.targets.push(target);
        }
    }

    fn bad(&self, message: String) -> AbbaError {
        AbbaError::Format {
            path: self.weights_path.display().to_string(),
            format: "adapter weights",
            message,
        }
    }

    /// The method of module `path`: the config's, with the rank and alpha its patterns give it; for our
    /// self-describing formats, sized from the tensors.
    fn module_method(&self, path: &str) -> Result<Method> {
        let key = |suffix: &str| format!("{PREFIX}{path}.{suffix}");
        let dims = |suffix: &str| self.tensors.get(&key(suffix)).map(|t| t.dims().to_vec());
        Ok(match &self.method {
            Method::Mora(s) => match dims("mora_M").as_deref() {
                Some([r, _]) => Method::Mora(crate::adapter::MoraSpec { r_hat: *r, ..*s }),
                _ => self.method.clone(),
            },
            other => other.with_rank_alpha(|r, alpha| self.rules.rank_alpha(path, r, alpha)),
        })
    }

    /// The (m, n) of a module read without a model, from its tensors: B (m × r) and A (r × n) for the factored
    /// methods, the factor sizes' products for LoKr; MoRA and KRAdapter do not say.
    fn shape_from_tensors(&self, path: &str, method: &Method) -> Result<(usize, usize)> {
        let dims = |suffix: &str| {
            self.tensors
                .get(&format!("{PREFIX}{path}.{suffix}"))
                .map(|t| t.dims().to_vec())
        };
        let part = |w: &str| -> Option<(usize, usize)> {
            match (
                dims(&format!("lokr_{w}")),
                dims(&format!("lokr_{w}_a")),
                dims(&format!("lokr_{w}_b")),
            ) {
                (Some(d), _, _) if d.len() == 2 => Some((d[0], d[1])),
                (_, Some(a), Some(b)) if a.len() == 2 && b.len() == 2 => Some((a[0], b[1])),
                _ => None,
            }
        };
        let table = method.factors((1, 1));
        let found = match method {
            Method::Lokr(_) => part("w1")
                .zip(part("w2"))
                .map(|(a, b)| (a.0 * b.0, a.1 * b.1)),
            Method::Mora(_) | Method::Kradapter(_) | Method::Full => None,
            _ => {
                let key = |i: usize| table.get(i).map(|f| f.key_in(self.style).to_string());
                match (key(0).and_then(|k| dims(&k)), key(1).and_then(|k| dims(&k))) {
                    (Some(a), Some(b)) if a.len() == 2 && b.len() == 2 => Some((b[0], a[1])),
                    _ => None,
                }
            }
        };
        found.ok_or_else(|| {
            self.bad(format!(
                "module '{path}': the layer shape cannot be read off this adapter's tensors; load it with a model"
            ))
        })
    }

    /// Removes one module's tensors; with `shape` = the layer's (m, n), checks each against it.
    fn take_module(
        &mut self,
        path: &str,
        shape: Option<(usize, usize)>,
        dtype: DType,
        device: &Device,
    ) -> Result<AdapterWeights> {
        let method = self.module_method(path)?;
        let shape = match shape {
            Some(s) => s,
            None => self.shape_from_tensors(path, &method)?,
        };
        let (m, n) = shape;
        let mut found = Vec::new();
        for factor in method.factors(shape) {
            let key = format!("{PREFIX}{path}.{}", factor.key_in(self.style));
            let t = self.tensors.remove(&key).ok_or_else(|| {
                self.bad(format!(
                    "tensor '{key}' is missing, though the config's target_modules{} name this module: was this adapter made for this model?",
                    if self.rules.has_patterns() { " and patterns" } else { "" }
                ))
            })?;
            let init = self.tensors.remove(&format!("{key}{INIT_SUFFIX}"));
            found.push((key, t, init));
        }
        let table = method.factors((m, n));
        let mut vars = Vec::with_capacity(found.len());
        let mut origin = Vec::new();
        for ((key, t, init), factor) in found.into_iter().zip(&table) {
            let (em, en) = factor.shape;
            let t = if factor.vector && t.dims() == [em] {
                t.reshape((em, 1))?
            } else {
                t
            };
            if t.dims() != [em, en] {
                return Err(self.bad(format!(
                    "tensor '{key}' has shape {:?}, the {m}×{n} layer needs [{em}, {en}]: was this adapter made for this model?",
                    t.dims()
                )));
            }
            vars.push(Var::from_tensor(&t.to_dtype(dtype)?.to_device(device)?)?);
            if let Some(i) = init {
                origin.push(i.reshape((em, en))?.to_dtype(dtype)?.to_device(device)?);
            }
        }
        let w = AdapterWeights::new(method, vars, (m, n))?;
        Ok(match origin.len() {
            0 => w,
            k if k == table.len() => w.with_origin(origin),
            _ => {
                return Err(self.bad(format!(
                    "module '{path}' has initial values for only some factors"
                )));
            }
        })
    }

    fn finish(
        mut self,
        modules: Vec<(String, AdapterWeights)>,
        model_layers: Option<usize>,
    ) -> Result<AdapterSet> {
        if let Some(extra) = self.tensors.keys().min() {
            return Err(self.bad(format!(
                "tensor '{extra}' belongs to no module this config adapts on this model (check target_modules, exclude_modules and layers_to_transform)"
            )));
        }
        if modules.is_empty() {
            return Err(self.bad("no adapter tensors found".into()));
        }
        self.targets.sort();
        Ok(AdapterSet {
            style: self.style,
            targets: self.targets,
            dropout: self.dropout,
            base_model: self.base_model,
            modules,
            model_layers,
        })
    }
}

/// The decoder layer of a module path (`model.layers.3.mlp.up_proj` → 3).
fn layer_of(path: &str) -> Option<usize> {
    path.split('.')
        .skip_while(|p| *p != "layers")
        .nth(1)?
        .parse()
        .ok()
}

/// A LoRA config's `init_lora_weights`: `true` / `"gaussian"` are plain LoRA; `"pissa"` and `"olora"` mean PEFT
/// re-runs that initialisation on the base when it loads the adapter (so must we); PEFT's randomized
/// `"pissa_niter_K"` cannot be re-run identically.
fn lora_init_on_load(cfg: &Value, path: &Path) -> Result<LoraInit> {
    match cfg.get("init_lora_weights") {
        Some(Value::String(s)) if s == "pissa" => Ok(LoraInit::Pissa {
            svd: SvdMethod::Exact,
        }),
        Some(Value::String(s)) if s == "olora" => Ok(LoraInit::Olora),
        Some(Value::String(s)) if s.starts_with("pissa_niter") => Err(AbbaError::Unsupported {
            what: format!("init_lora_weights \"{s}\" in {}", path.display()),
            message: "PEFT re-runs a randomized SVD on load, which no other program can repeat; save the adapter with save_pretrained(path_initial_model_for_weight_conversion=…) so it applies to the original base"
                .into(),
        }),
        Some(Value::String(s)) if s != "gaussian" => Err(AbbaError::Unsupported {
            what: format!("init_lora_weights \"{s}\" in {}", path.display()),
            message: "it changes the base weights on load in a way abba does not implement (supported: true, gaussian, pissa, olora)"
                .into(),
        }),
        _ => Ok(LoraSpec::default().init),
    }
}

/// The tensors of a set's adapters as they would be saved (for tests and exports): each factor under its key
/// (vectors flattened), and the initial value of each factor under `<key>.init` where the init changed the base.
pub fn adapter_tensors(set: &AdapterSet) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    for (path, w) in &set.modules {
        let table = w.method.factors(w.layer_shape());
        for (i, (factor, var)) in table.iter().zip(w.vars()).enumerate() {
            let key = format!("{PREFIX}{path}.{}", factor.key_in(set.style));
            let flat = |t: &Tensor| -> Result<Tensor> {
                Ok(if factor.vector {
                    t.flatten_all()?
                } else {
                    t.clone()
                })
            };
            if let Some(origin) = &w.origin {
                out.insert(format!("{key}{INIT_SUFFIX}"), flat(&origin[i])?);
            }
            out.insert(key, flat(var.as_tensor())?);
        }
    }
    Ok(out)
}
