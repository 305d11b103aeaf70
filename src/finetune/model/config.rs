//! A Llama-family `config.json`: the fields Llama 2/3, Mistral, Qwen2 and SmolLM checkpoints share.
//!
//! Both the legacy layout (`rope_theta`, `rope_scaling`) and the transformers ≥ 5 layout (`rope_parameters`) are
//! read. A field whose value would change the maths in a way we do not implement is rejected by name rather than
//! ignored: a model that silently computes something else is worse than one that refuses to load.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{AbbaError, Result};

/// How rotary frequencies are rescaled for long contexts.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    /// Position interpolation: every frequency divided by `factor`.
    Linear {
        factor: f64,
    },
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
        let text = std::fs::read_to_string(path).map_err(|e| {
            AbbaError::io_hint(
                path,
                e,
                "point --model at a Hugging Face model directory with a config.json",
            )
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
            return Err(unsupported(
                "hidden_act",
                format!("'{act}': only silu (SwiGLU) MLPs are implemented"),
            ));
        }
        if raw.mlp_bias == Some(true) {
            return Err(unsupported(
                "mlp_bias",
                "true: MLP projections with bias are not implemented".into(),
            ));
        }
        let heads = raw.num_attention_heads;
        let kv_heads = raw.num_key_value_heads.unwrap_or(heads);
        if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            return Err(unsupported(
                "num_key_value_heads",
                format!("{kv_heads} does not divide num_attention_heads {heads}"),
            ));
        }
        let head_dim = raw.head_dim.unwrap_or(raw.hidden_size / heads);
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(unsupported(
                "head_dim",
                format!("{head_dim}: rotary embeddings need an even head size"),
            ));
        }
        let rope = raw.rope_parameters.as_ref().or(raw.rope_scaling.as_ref());
        let rope_theta = raw
            .rope_theta
            .or_else(|| {
                rope.and_then(|r| r.get("rope_theta"))
                    .and_then(Value::as_f64)
            })
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
        rope.get(key).and_then(Value::as_f64).ok_or_else(|| {
            unsupported(
                "rope scaling",
                format!("'{kind}' without a numeric '{key}'"),
            )
        })
    };
    match kind {
        "default" => Ok(RopeScaling::None),
        "linear" => Ok(RopeScaling::Linear {
            factor: num("factor")?,
        }),
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

/// The shape of a small Llama built from scratch (demos, tests, benchmarks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlamaShape {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub max_position_embeddings: usize,
}

impl ModelConfig {
    /// A plain Llama configuration (no bias, untied head, θ = 10000) of the given shape.
    pub fn llama(shape: LlamaShape) -> Result<Self> {
        let json = serde_json::json!({
            "model_type": "llama",
            "vocab_size": shape.vocab_size,
            "hidden_size": shape.hidden_size,
            "intermediate_size": shape.intermediate_size,
            "num_hidden_layers": shape.num_hidden_layers,
            "num_attention_heads": shape.num_attention_heads,
            "num_key_value_heads": shape.num_key_value_heads,
            "max_position_embeddings": shape.max_position_embeddings,
            "rms_norm_eps": 1e-5,
        });
        let cfg = Self::from_json(&json.to_string())?;
        if !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads) {
            return Err(AbbaError::InvalidArgument(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                cfg.hidden_size, cfg.num_attention_heads
            )));
        }
        Ok(cfg)
    }

    /// A `config.json` that transformers (and this crate) load back to the same model, in the legacy layout
    /// (`rope_theta`, `rope_scaling`) that every transformers version reads.
    pub fn to_hf_json(&self) -> Value {
        let (architecture, model_type) = match self.model_type.as_str() {
            "qwen2" => ("Qwen2ForCausalLM", "qwen2"),
            "mistral" => ("MistralForCausalLM", "mistral"),
            _ => ("LlamaForCausalLM", "llama"),
        };
        let rope_scaling = match &self.rope_scaling {
            RopeScaling::None => Value::Null,
            RopeScaling::Linear { factor } => {
                serde_json::json!({"rope_type": "linear", "factor": factor})
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => serde_json::json!({
                "rope_type": "llama3", "factor": factor, "low_freq_factor": low_freq_factor,
                "high_freq_factor": high_freq_factor,
                "original_max_position_embeddings": *original_max_position_embeddings as u64,
            }),
        };
        let mut json = serde_json::json!({
            "architectures": [architecture],
            "model_type": model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": rope_scaling,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "torch_dtype": "float32",
        });
        if let Some(obj) = json.as_object_mut() {
            if model_type == "llama" {
                obj.insert("attention_bias".into(), Value::Bool(self.qkv_bias));
                obj.insert("mlp_bias".into(), Value::Bool(false));
            }
            if let Some(w) = self.sliding_window {
                obj.insert("sliding_window".into(), Value::from(w));
                obj.insert("use_sliding_window".into(), Value::Bool(true));
            }
        }
        json
    }
}
