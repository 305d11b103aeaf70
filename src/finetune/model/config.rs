//! A Llama-family `config.json`: the fields Llama 2/3, Mistral, Qwen2 and SmolLM checkpoints share.
//!
//! Both the legacy layout (`rope_theta`, `rope_scaling`) and the transformers ≥ 5 layout (`rope_parameters`) are
//! read. A field whose value would change the maths in a way we do not implement is rejected by name rather than
//! ignored: a model that silently computes something else is worse than one that refuses to load.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{AbbaError, Result};

/// How rotary frequencies are rescaled for long contexts.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    /// Position interpolation: every frequency divided by `factor`.
    Linear { factor: f64 },
    /// Llama 3's piecewise rescaling by wavelength.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Bias on the q, k, v projections (Qwen2 always; Llama when `attention_bias` is true, which also biases o).
    pub qkv_bias: bool,
    pub o_bias: bool,
    /// Mistral-style sliding-window attention, when enabled.
    pub sliding_window: Option<usize>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
}

/// The raw JSON, permissive, checked by [`ModelConfig::from_raw`].
#[derive(Deserialize)]
struct Raw {
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<Value>,
    rope_parameters: Option<Value>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    hidden_act: Option<String>,
    sliding_window: Option<usize>,
    use_sliding_window: Option<bool>,
    bos_token_id: Option<Value>,
    eos_token_id: Option<Value>,
}

const SUPPORTED_TYPES: [&str; 4] = ["llama", "mistral", "qwen2", "smollm3"];

impl ModelConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| AbbaError::Io {
            path: path.display().to_string(),
            message: format!("{e}: point --model at a Hugging Face model directory with a config.json"),
        })?;
        Self::from_json(&text).map_err(|e| match e {
            AbbaError::Format { message, .. } => AbbaError::Format {
                path: path.display().to_string(),
                format: "config.json",
                message,
            },
            other => other,
        })
    }

    pub fn from_json(text: &str) -> Result<Self> {
        let raw: Raw = serde_json::from_str(text).map_err(|e| AbbaError::Format {
            path: "config.json".into(),
            format: "config.json",
            message: e.to_string(),
        })?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: Raw) -> Result<Self> {
        let model_type = raw.model_type.unwrap_or_else(|| "llama".into());
        if !SUPPORTED_TYPES.contains(&model_type.as_str()) {
            return Err(unsupported(
                "model_type",
                format!("'{model_type}' (supported: {})", SUPPORTED_TYPES.join(", ")),
            ));
        }
        if let Some(act) = raw.hidden_act.as_deref()
            && act != "silu"
        {
            return Err(unsupported("hidden_act", format!("'{act}': only silu (SwiGLU) MLPs are implemented")));
        }
        if raw.mlp_bias == Some(true) {
            return Err(unsupported("mlp_bias", "true: MLP projections with bias are not implemented".into()));
        }
        let heads = raw.num_attention_heads;
        let kv_heads = raw.num_key_value_heads.unwrap_or(heads);
        if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 {
            return Err(unsupported(
                "num_key_value_heads",
                format!("{kv_heads} does not divide num_attention_heads {heads}"),
            ));
        }
        let head_dim = raw.head_dim.unwrap_or(raw.hidden_size / heads);
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(unsupported("head_dim", format!("{head_dim}: rotary embeddings need an even head size")));
        }
        let rope = raw.rope_parameters.as_ref().or(raw.rope_scaling.as_ref());
        let rope_theta = raw
            .rope_theta
            .or_else(|| rope.and_then(|r| r.get("rope_theta")).and_then(Value::as_f64))
            .unwrap_or(10_000.0);
        let rope_scaling = parse_rope(rope)?;
        let is_qwen2 = model_type == "qwen2";
        let attention_bias = raw.attention_bias.unwrap_or(false);
        let sliding_window = match (model_type.as_str(), raw.use_sliding_window) {
            // Qwen2 keeps `sliding_window` in its config but only uses it when asked to.
            ("qwen2", Some(true)) | ("mistral", _) => raw.sliding_window,
            _ => None,
        };
        Ok(ModelConfig {
            model_type,
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(2048),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            qkv_bias: is_qwen2 || attention_bias,
            o_bias: attention_bias && !is_qwen2,
            sliding_window,
            bos_token_id: first_id(raw.bos_token_id.as_ref()),
            eos_token_id: first_id(raw.eos_token_id.as_ref()),
        })
    }
}

fn parse_rope(rope: Option<&Value>) -> Result<RopeScaling> {
    let Some(rope) = rope.filter(|v| !v.is_null()) else {
        return Ok(RopeScaling::None);
    };
    let kind = rope
        .get("rope_type")
        .or_else(|| rope.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let num = |key: &str| -> Result<f64> {
        rope.get(key)
            .and_then(Value::as_f64)
            .ok_or_else(|| unsupported("rope scaling", format!("'{kind}' without a numeric '{key}'")))
    };
    match kind {
        "default" => Ok(RopeScaling::None),
        "linear" => Ok(RopeScaling::Linear { factor: num("factor")? }),
        "llama3" => Ok(RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")?,
        }),
        other => Err(unsupported(
            "rope scaling",
            format!("rope_type '{other}' (supported: default, linear, llama3)"),
        )),
    }
}

fn first_id(v: Option<&Value>) -> Option<u32> {
    match v? {
        Value::Number(n) => n.as_u64().map(|x| x as u32),
        Value::Array(items) => items.first().and_then(Value::as_u64).map(|x| x as u32),
        _ => None,
    }
}

fn unsupported(what: &str, message: String) -> AbbaError {
    AbbaError::Unsupported {
        what: format!("config.json field {what}"),
        message,
    }
}
