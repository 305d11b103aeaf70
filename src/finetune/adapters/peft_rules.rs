//! Which modules a PEFT config adapts, and with which rank and alpha, as PEFT 0.21 decides it
//! (`check_target_module_exists`, `get_pattern_key`; see tests/fixtures/peft_methods/FORMATS.md §4):
//!
//! - `exclude_modules` first: a string is a regex that must match the whole module name; a list names modules
//!   exactly or by a dotted tail (`k_proj`, `layers.0.mlp.down_proj`);
//! - `target_modules`: a string is a regex matching the whole name; a list matches a full name exactly (which
//!   skips the layer filter) or a dotted tail;
//! - `layers_to_transform` (an int or a list) with `layers_pattern`: the layer index read from the name;
//! - `rank_pattern` / `alpha_pattern`: the first key (in the file's order, which is sorted) whose regex matches a
//!   dotted tail of the name sets that module's r / alpha.
//!
//! Names are the model's module paths (`model.layers.0.self_attn.q_proj`).

use std::path::Path;

use regex::Regex;
use serde_json::Value;

use crate::error::{AbbaError, Result};

/// Modules named by a list (exact names or dotted tails) or one regex over the whole name.
#[derive(Clone, Debug)]
enum Names {
    List(Vec<String>),
    Regex(Regex),
}

impl Names {
    fn read(v: &Value, field: &str, path: &Path) -> Result<Option<Names>> {
        match v {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(Names::Regex(whole(s, field, path)?))),
            Value::Array(items) => Ok(Some(Names::List(
                items
                    .iter()
                    .map(|x| {
                        x.as_str().map(str::to_string).ok_or_else(|| {
                            bad(path, format!("every entry of '{field}' must be a string"))
                        })
                    })
                    .collect::<Result<_>>()?,
            ))),
            _ => Err(bad(
                path,
                format!("'{field}' must be a list of names or a regex string"),
            )),
        }
    }

    /// (matched, matched by an exact full name).
    fn matches(&self, key: &str) -> (bool, bool) {
        match self {
            Names::Regex(re) => (re.is_match(key), false),
            Names::List(list) => {
                let exact = list.iter().any(|t| t == key);
                (
                    exact || list.iter().any(|t| key.ends_with(&format!(".{t}"))),
                    exact,
                )
            }
        }
    }
}

/// The rules of one `adapter_config.json`.
#[derive(Clone, Debug)]
pub struct PeftRules {
    target: Names,
    exclude: Option<Names>,
    layers: Option<Vec<u64>>,
    layer_index: Vec<Regex>,
    rank_pattern: Vec<(Regex, usize)>,
    alpha_pattern: Vec<(Regex, f64)>,
}

fn bad(path: &Path, message: String) -> AbbaError {
    AbbaError::Format {
        path: path.display().to_string(),
        format: "adapter_config.json",
        message,
    }
}

/// A regex that must match the whole name (Python's `re.fullmatch`).
fn whole(pattern: &str, field: &str, path: &Path) -> Result<Regex> {
    Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| bad(path, format!("'{field}' is not a usable regex: {e}")))
}

impl PeftRules {
    pub fn read(cfg: &Value, path: &Path) -> Result<PeftRules> {
        let get = |k: &str| cfg.get(k).unwrap_or(&Value::Null);
        let target = Names::read(get("target_modules"), "target_modules", path)?
            .ok_or_else(|| bad(path, "no target_modules".into()))?;
        let exclude = Names::read(get("exclude_modules"), "exclude_modules", path)?;
        let layers =
            match get("layers_to_transform") {
                Value::Null => None,
                Value::Number(n) => Some(vec![n.as_u64().ok_or_else(|| {
                    bad(path, "layers_to_transform must be layer indices".into())
                })?]),
                Value::Array(items) => Some(
                    items
                        .iter()
                        .map(|x| {
                            x.as_u64().ok_or_else(|| {
                                bad(path, "layers_to_transform must be layer indices".into())
                            })
                        })
                        .collect::<Result<_>>()?,
                ),
                _ => {
                    return Err(bad(
                        path,
                        "layers_to_transform must be an int or a list".into(),
                    ));
                }
            };
        let patterns: Vec<String> = match get("layers_pattern") {
            Value::Null => vec![],
            Value::String(s) => vec![s.clone()],
            Value::Array(items) => items
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            _ => {
                return Err(bad(
                    path,
                    "layers_pattern must be a string or a list".into(),
                ));
            }
        };
        let layer_index = if patterns.is_empty() {
            vec![Regex::new(r"^.*?\.[^.]*\.(\d+)\.").expect("a valid regex")]
        } else {
            patterns
                .iter()
                .map(|p| {
                    Regex::new(&format!(r"^(?:|.*?\.){p}\.(\d+)\."))
                        .map_err(|e| bad(path, format!("layers_pattern '{p}': {e}")))
                })
                .collect::<Result<_>>()?
        };
        let pattern = |field: &str| -> Result<Vec<(Regex, f64)>> {
            match get(field) {
                Value::Null => Ok(vec![]),
                Value::Object(map) => map
                    .iter()
                    .map(|(k, v)| {
                        let re = Regex::new(&format!(r"^(.*\.)?({k})$"))
                            .map_err(|e| bad(path, format!("{field} key '{k}': {e}")))?;
                        let x = v.as_f64().ok_or_else(|| {
                            bad(path, format!("{field} value of '{k}' must be a number"))
                        })?;
                        Ok((re, x))
                    })
                    .collect(),
                _ => Err(bad(
                    path,
                    format!("{field} must be a table of pattern → value"),
                )),
            }
        };
        Ok(PeftRules {
            target,
            exclude,
            layers,
            layer_index,
            rank_pattern: pattern("rank_pattern")?
                .into_iter()
                .map(|(re, r)| (re, r as usize))
                .collect(),
            alpha_pattern: pattern("alpha_pattern")?,
        })
    }

    /// Whether PEFT puts an adapter on module `key`.
    pub fn adapts(&self, key: &str) -> bool {
        if let Some(ex) = &self.exclude
            && ex.matches(key).0
        {
            return false;
        }
        let (hit, exact) = self.target.matches(key);
        if !hit {
            return false;
        }
        match &self.layers {
            Some(layers) if !exact => self
                .layer_index
                .iter()
                .find_map(|re| re.captures(key))
                .and_then(|c| c[1].parse::<u64>().ok())
                .is_some_and(|i| layers.contains(&i)),
            _ => true,
        }
    }

    /// The module's (r, alpha): the first matching `rank_pattern` / `alpha_pattern` entry, else the defaults.
    pub fn rank_alpha(&self, key: &str, r: usize, alpha: f64) -> (usize, f64) {
        let first =
            |list: &[(Regex, f64)]| list.iter().find(|(re, _)| re.is_match(key)).map(|x| x.1);
        let ranks: Vec<(Regex, f64)> = self
            .rank_pattern
            .iter()
            .map(|(re, r)| (re.clone(), *r as f64))
            .collect();
        (
            first(&ranks).map_or(r, |x| x as usize),
            first(&self.alpha_pattern).unwrap_or(alpha),
        )
    }

    /// Whether any module gets its own rank or alpha.
    pub fn has_patterns(&self) -> bool {
        !self.rank_pattern.is_empty() || !self.alpha_pattern.is_empty()
    }
}
