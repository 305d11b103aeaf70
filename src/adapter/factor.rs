//! The vocabulary each method's file speaks to describe itself: a factor of the method's table, how saved files
//! name factors, and typed reads of `adapter_config.json` fields.

use serde_json::Value;

use crate::error::{AbbaError, Result};

/// One trainable factor of a method on an m×n layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Factor {
    /// The factor's name in the maths (`B1`, `A`, `delta`).
    pub name: String,
    /// Its key suffix in our adapter files, which are PEFT's where PEFT has the method (`lora_A.weight`).
    pub key: String,
    /// Its key when ABBA is saved as PEFT's LoHa (`hada_w1_a` is B1), for ABBA only.
    pub loha_key: Option<&'static str>,
    /// (rows, cols).
    pub shape: (usize, usize),
    /// Its index in the ndarray adapter's [`super::Adapter::factors`]. The table itself is in the order of the
    /// candle variables and of saved files.
    pub position: usize,
    /// Saved as a vector of its `rows` entries (DoRA's magnitude), though held as a rows×1 matrix.
    pub vector: bool,
}

/// How a saved adapter names its tensors: the method's own keys, or PEFT LoHa's for an ABBA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyStyle {
    Native,
    Loha,
}

impl Factor {
    /// A factor without a LoHa spelling.
    pub fn new(name: &str, key: &str, shape: (usize, usize), position: usize) -> Factor {
        Factor {
            name: name.into(),
            key: key.into(),
            loha_key: None,
            shape,
            position,
            vector: false,
        }
    }

    pub fn key_in(&self, style: KeyStyle) -> &str {
        match (style, self.loha_key) {
            (KeyStyle::Loha, Some(k)) => k,
            _ => &self.key,
        }
    }
}

/// Typed reads of `adapter_config.json` fields, each failure naming the file and the field.
pub struct PeftFields<'a> {
    pub cfg: &'a Value,
    pub path: &'a std::path::Path,
}

impl PeftFields<'_> {
    pub fn bad(&self, message: String) -> AbbaError {
        AbbaError::Format {
            path: self.path.display().to_string(),
            format: "adapter_config.json",
            message,
        }
    }

    pub fn uint(&self, key: &str) -> Result<usize> {
        self.cfg
            .get(key)
            .and_then(Value::as_u64)
            .filter(|&r| r > 0)
            .map(|r| r as usize)
            .ok_or_else(|| self.bad(format!("field '{key}' must be a positive integer")))
    }

    pub fn float(&self, key: &str) -> Result<f64> {
        self.cfg
            .get(key)
            .and_then(Value::as_f64)
            .ok_or_else(|| self.bad(format!("field '{key}' must be a number")))
    }

    pub fn flag(&self, key: &str) -> bool {
        self.cfg.get(key).and_then(Value::as_bool).unwrap_or(false)
    }

    pub fn string(&self, key: &str) -> Option<&str> {
        self.cfg.get(key).and_then(Value::as_str)
    }
}
