//! A Hugging Face model directory on disk: `config.json`, `model.safetensors` or a sharded
//! `model.safetensors.index.json`, and optionally `tokenizer.json`. Tensors are memory-mapped and read one at a
//! time, with their shapes checked against what the config implies.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use super::config::ModelConfig;
use crate::error::{AbbaError, Result};

pub struct Checkpoint {
    pub dir: PathBuf,
    pub config: ModelConfig,
    tensors: MmapedSafetensors,
    files: Vec<PathBuf>,
}

impl Checkpoint {
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(AbbaError::Io {
                path: dir.display().to_string(),
                message: "not a directory: point --model at a Hugging Face model directory".into(),
            });
        }
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        let files = weight_files(dir)?;
        for f in &files {
            check_header(f)?;
        }
        // SAFETY: the files are opened read-only; like every mmap user we assume nobody truncates them while we run.
        let tensors =
            unsafe { MmapedSafetensors::multi(&files) }.map_err(|e| AbbaError::Format {
                path: dir.display().to_string(),
                format: "safetensors",
                message: format!(
                    "{}: the checkpoint is corrupt or truncated",
                    first_line(&e.to_string())
                ),
            })?;
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            config,
            tensors,
            files,
        })
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.get(name).is_ok()
    }

    /// Loads `name`, checks its shape and converts it to `dtype` on `device`.
    pub fn tensor(
        &self,
        name: &str,
        shape: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let t = self.tensors.load(name, &Device::Cpu).map_err(|_| AbbaError::Format {
            path: self.dir.display().to_string(),
            format: "model checkpoint",
            message: format!("tensor '{name}' is missing: is this a Llama-family checkpoint matching config.json?"),
        })?;
        if t.dims() != shape {
            return Err(AbbaError::Format {
                path: self.dir.display().to_string(),
                format: "model checkpoint",
                message: format!(
                    "tensor '{name}' has shape {:?} but config.json implies {shape:?}: the weights and config.json disagree",
                    t.dims()
                ),
            });
        }
        Ok(t.to_dtype(dtype)?.to_device(device)?)
    }
}

/// The weight files of a checkpoint: the single file, or every shard the index names.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if !index.is_file() {
        return Err(AbbaError::Io {
            path: dir.display().to_string(),
            message: "no model.safetensors or model.safetensors.index.json: save the model with safe_serialization"
                .into(),
        });
    }
    let text = std::fs::read_to_string(&index).map_err(|e| AbbaError::io(&index, e))?;
    let bad = |message: String| AbbaError::Format {
        path: index.display().to_string(),
        format: "safetensors index",
        message,
    };
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("no 'weight_map' object".into()))?;
    let mut names: Vec<&str> = map.values().filter_map(|v| v.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let files: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
    if let Some(missing) = files.iter().find(|f| !f.is_file()) {
        return Err(AbbaError::Io {
            path: missing.display().to_string(),
            message:
                "shard named by model.safetensors.index.json is missing: copy the whole checkpoint"
                    .into(),
        });
    }
    Ok(files)
}

/// Reads only a safetensors header and checks that the file is long enough for every tensor it declares, so a
/// truncated or corrupt file is reported by name before mapping (without reading gigabytes of weights).
fn check_header(path: &Path) -> Result<()> {
    use std::io::Read;
    let corrupt = |message: String| AbbaError::Format {
        path: path.display().to_string(),
        format: "safetensors",
        message: format!("{message}: the file is corrupt or truncated; re-copy or re-save it"),
    };
    let io = |e: std::io::Error| AbbaError::io(path, e);
    let mut file = std::fs::File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|_| corrupt("shorter than a header".into()))?;
    let header_len = u64::from_le_bytes(len);
    if header_len > file_len.saturating_sub(8) || header_len > 100_000_000 {
        return Err(corrupt(format!(
            "header of {header_len} bytes does not fit in the file"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header)
        .map_err(|e| corrupt(e.to_string()))?;
    let json: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| corrupt(format!("header: {e}")))?;
    let data_len = file_len - 8 - header_len;
    let end = json
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
        .filter_map(|t| t.get("data_offsets")?.as_array()?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    if end > data_len {
        return Err(corrupt(format!(
            "tensors need {end} data bytes, the file holds {data_len}"
        )));
    }
    Ok(())
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// Writes named tensors as one safetensors file atomically ([`crate::io::write_atomic_with`]).
pub fn save_safetensors(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    crate::io::write_atomic_with(path, |tmp| {
        candle_core::safetensors::save(tensors, tmp).map_err(|e| AbbaError::Io {
            path: tmp.display().to_string(),
            message: first_line(&e.to_string()).to_string(),
        })
    })
}
