//! Model checkpoints as sources of 2-D tensors: one safetensors file, or a Hugging Face model directory
//! (`model.safetensors`, or the shards listed in `model.safetensors.index.json`). Only headers are read up front;
//! a tensor's bytes are read when it is loaded, so selecting projections of a large model stays cheap.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use ndarray::Array2;
use serde::Deserialize;

use super::load::decode_floats;
use crate::error::{AbbaError, Result};

/// Where one tensor's bytes are.
#[derive(Clone, Debug)]
struct Entry {
    file: PathBuf,
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    /// Absolute byte range in `file`.
    start: u64,
    end: u64,
}

/// The tensors of a checkpoint, by name.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    path: PathBuf,
    tensors: BTreeMap<String, Entry>,
}

#[derive(Deserialize)]
struct HeaderEntry {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

fn format_err(path: &Path, message: impl Into<String>) -> AbbaError {
    AbbaError::Format {
        path: path.display().to_string(),
        format: "safetensors",
        message: message.into(),
    }
}

/// Reads a safetensors header: tensor names, dtypes, shapes and absolute byte ranges.
fn read_header(file: &Path) -> Result<BTreeMap<String, Entry>> {
    let mut f = std::fs::File::open(file).map_err(|e| AbbaError::io(file, e))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|_| format_err(file, "shorter than the 8-byte header length"))?;
    let n = u64::from_le_bytes(len);
    let size = f.metadata().map_err(|e| AbbaError::io(file, e))?.len();
    if n > size.saturating_sub(8) {
        return Err(format_err(
            file,
            format!("header length {n} exceeds the file size {size}"),
        ));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .map_err(|e| AbbaError::io(file, e))?;
    let mut raw: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| format_err(file, format!("header is not JSON: {e}")))?;
    raw.remove("__metadata__");
    let body = 8 + n;
    raw.into_iter()
        .map(|(name, v)| {
            let h: HeaderEntry = serde_json::from_value(v)
                .map_err(|e| format_err(file, format!("tensor '{name}': {e}")))?;
            let (start, end) = (body + h.data_offsets.0, body + h.data_offsets.1);
            if end > size || start > end {
                return Err(format_err(
                    file,
                    format!("tensor '{name}' lies outside the file"),
                ));
            }
            Ok((
                name,
                Entry {
                    file: file.to_path_buf(),
                    dtype: h.dtype,
                    shape: h.shape,
                    start,
                    end,
                },
            ))
        })
        .collect()
}

impl Checkpoint {
    /// Opens a safetensors file or an HF model directory.
    pub fn open(path: &Path) -> Result<Checkpoint> {
        let files: Vec<PathBuf> = if path.is_dir() {
            let single = path.join("model.safetensors");
            let index = path.join("model.safetensors.index.json");
            if single.is_file() {
                vec![single]
            } else if index.is_file() {
                let text = crate::io::read_to_string(&index)?;
                let idx: ShardIndex =
                    serde_json::from_str(&text).map_err(|e| AbbaError::Format {
                        path: index.display().to_string(),
                        format: "safetensors index",
                        message: e.to_string(),
                    })?;
                let mut shards: Vec<String> = idx.weight_map.into_values().collect();
                shards.sort();
                shards.dedup();
                shards.into_iter().map(|s| path.join(s)).collect()
            } else {
                return Err(AbbaError::InvalidArgument(format!(
                    "{} holds neither model.safetensors nor model.safetensors.index.json: point at a safetensors file or a Hugging Face model directory",
                    path.display()
                )));
            }
        } else if path.is_file() {
            vec![path.to_path_buf()]
        } else {
            return Err(AbbaError::Io {
                path: path.display().to_string(),
                message: "no such file or directory: check the checkpoint path".into(),
            });
        };
        let mut tensors = BTreeMap::new();
        for file in &files {
            tensors.extend(read_header(file)?);
        }
        Ok(Checkpoint {
            path: path.to_path_buf(),
            tensors,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Names of the 2-D tensors, sorted.
    pub fn names_2d(&self) -> Vec<String> {
        self.tensors
            .iter()
            .filter(|(_, e)| e.shape.len() == 2)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The shape of a 2-D tensor, or None when there is no such 2-D tensor.
    pub fn shape(&self, name: &str) -> Option<(usize, usize)> {
        self.tensors
            .get(name)
            .filter(|e| e.shape.len() == 2)
            .map(|e| (e.shape[0], e.shape[1]))
    }

    /// The 2-D tensors `pattern` selects (see [`selects`]), sorted by name; an error when it selects none.
    pub fn select(&self, pattern: &str) -> Result<Vec<String>> {
        let names: Vec<String> = self
            .names_2d()
            .into_iter()
            .filter(|n| selects(pattern, n))
            .collect();
        if names.is_empty() {
            let all = self.names_2d();
            let shown: Vec<&str> = all.iter().take(6).map(String::as_str).collect();
            return Err(AbbaError::InvalidArgument(format!(
                "{} has no 2-D tensor matching '{pattern}': its {} 2-D tensors include {}; use a full name or a glob such as \"*.q_proj\"",
                self.path.display(),
                all.len(),
                shown.join(", ")
            )));
        }
        Ok(names)
    }

    /// The 2-D tensor `name`, as f64.
    pub fn load(&self, name: &str) -> Result<Array2<f64>> {
        let Some(e) = self.tensors.get(name).filter(|e| e.shape.len() == 2) else {
            return Err(AbbaError::InvalidArgument(format!(
                "{} has no 2-D tensor '{name}': check the name (or use a glob such as \"*.q_proj\")",
                self.path.display()
            )));
        };
        let mut f = std::fs::File::open(&e.file).map_err(|err| AbbaError::io(&e.file, err))?;
        f.seek(SeekFrom::Start(e.start))
            .map_err(|err| AbbaError::io(&e.file, err))?;
        let mut bytes = vec![0u8; (e.end - e.start) as usize];
        f.read_exact(&mut bytes)
            .map_err(|err| AbbaError::io(&e.file, err))?;
        let values = decode_floats(&e.file, e.dtype, &bytes)?;
        Array2::from_shape_vec((e.shape[0], e.shape[1]), values)
            .map_err(|err| format_err(&e.file, format!("tensor '{name}': {err}")))
    }
}

/// Whether `pattern` selects the tensor `name`. A pattern is matched against the name and against its module
/// (the name without a trailing `.weight`), in full or as a suffix starting after a dot, as PEFT's
/// `target_modules` are: `q_proj` and `*.q_proj` select every layer's query projection, `layers.*.mlp.*` every MLP
/// projection, `model.layers.0.self_attn.q_proj.weight` that one tensor. `*` matches any run of characters
/// (dots included), `?` one character.
pub fn selects(pattern: &str, name: &str) -> bool {
    let module = name.strip_suffix(".weight").unwrap_or(name);
    [name, module].iter().any(|full| {
        std::iter::once(*full)
            .chain(full.match_indices('.').map(|(i, _)| &full[i + 1..]))
            .any(|tail| glob(pattern.as_bytes(), tail.as_bytes()))
    })
}

/// `*` and `?` wildcard matching, iterative with one backtrack point (linear in practice).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_select_projections_as_peft_target_modules_do() {
        let q0 = "model.layers.0.self_attn.q_proj.weight";
        let up1 = "model.layers.1.mlp.up_proj.weight";
        assert!(selects("*.q_proj", q0) && selects("q_proj", q0) && selects(q0, q0));
        assert!(!selects("*.q_proj", up1) && !selects("proj", q0) && !selects("_proj", q0));
        assert!(selects("layers.*.mlp.*", up1) && !selects("layers.*.mlp.*", q0));
        assert!(selects("layers.1.*", up1) && !selects("layers.1.*", q0));
        assert!(selects("model.layers.?.self_attn.q_proj", q0));
        assert!(!selects("layers.0.q_proj", q0));
    }
}
