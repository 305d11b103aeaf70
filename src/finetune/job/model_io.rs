//! Getting a model and its tokenizer from a `[model]` section, and writing a model back as a Hugging Face
//! directory (merged checkpoints, pretrained demo models).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::spec::ModelSection;
use crate::error::{AbbaError, Result};
use crate::finetune::device::parse_dtype;
use crate::finetune::model::checkpoint::save_safetensors;
use crate::finetune::model::{Checkpoint, Llama, ModelConfig};
use crate::finetune::tokenizer::{BYTE_BOS, BYTE_EOS, TextTokenizer};
use crate::io::write_dir_atomic;

pub fn load_tokenizer(section: &ModelSection) -> Result<TextTokenizer> {
    match section.tokenizer.as_str() {
        "bytes" => Ok(TextTokenizer::bytes()),
        "auto" => match &section.path {
            Some(dir) => TextTokenizer::from_file(&dir.join("tokenizer.json")),
            None => Err(AbbaError::InvalidArgument(
                "[model] tokenizer = \"auto\" needs a model path; for a random model use tokenizer = \"bytes\" or a tokenizer.json path".into(),
            )),
        },
        path => TextTokenizer::from_file(Path::new(path)),
    }
}

pub fn load_model(
    section: &ModelSection,
    tok: &TextTokenizer,
    seed: u64,
    device: &Device,
) -> Result<Llama> {
    let dtype = parse_dtype(&section.dtype, device)?;
    let model = match (&section.path, &section.random) {
        (Some(dir), _) => Llama::load(&Checkpoint::open(dir)?, dtype, device)?,
        (None, Some(shape)) => {
            let mut cfg = ModelConfig::llama(*shape)?;
            if matches!(tok, TextTokenizer::Bytes) {
                cfg.bos_token_id = Some(BYTE_BOS);
                cfg.eos_token_id = Some(BYTE_EOS);
            }
            Llama::random(cfg, 0.02, seed, device)?
        }
        (None, None) => {
            return Err(AbbaError::InvalidArgument(
                "[model] needs path or random".into(),
            ));
        }
    };
    if tok.vocab_size() > model.cfg.vocab_size {
        return Err(AbbaError::InvalidArgument(format!(
            "the tokenizer has {} tokens but the model's vocabulary only {}: use the model's own tokenizer",
            tok.vocab_size(),
            model.cfg.vocab_size
        )));
    }
    Ok(model)
}

/// Writes `model` (adapters merged into the weights when present) as config.json + model.safetensors (f32), with
/// `tokenizer.json` copied from `tokenizer_from` if given. Atomic: the directory appears complete or not at all.
pub fn save_hf_model(model: &Llama, dir: &Path, tokenizer_from: Option<&Path>) -> Result<()> {
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (name, t) in model.named_weights(true)? {
        tensors.insert(name, t.to_dtype(DType::F32)?.to_device(&Device::Cpu)?);
    }
    let config = serde_json::to_string_pretty(&model.cfg.to_hf_json())
        .map_err(|e| AbbaError::InvalidArgument(e.to_string()))?;
    write_dir_atomic(dir, |tmp| {
        save_safetensors(&tensors, &tmp.join("model.safetensors"))?;
        std::fs::write(tmp.join("config.json"), &config).map_err(|e| AbbaError::io(tmp, e))?;
        if let Some(src) = tokenizer_from.filter(|p| p.is_file()) {
            std::fs::copy(src, tmp.join("tokenizer.json")).map_err(|e| AbbaError::io(src, e))?;
        }
        Ok(())
    })
}
