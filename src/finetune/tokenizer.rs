//! Text ↔ token ids: a Hugging Face `tokenizer.json` for real checkpoints, or a 259-symbol byte vocabulary so tiny
//! demo models can be trained offline without any tokenizer file.
//!
//! Special tokens are never added by [`TextTokenizer::encode`]: the data pipeline places BOS/EOS itself from
//! [`SpecialIds`], so the same code path serves every tokenizer family.

use std::path::Path;

use crate::error::{AbbaError, Result};

/// Byte-vocabulary id of `<bos>`.
pub const BYTE_BOS: u32 = 256;
/// Byte-vocabulary id of `<eos>`.
pub const BYTE_EOS: u32 = 257;
/// Byte-vocabulary id of `<pad>`.
pub const BYTE_PAD: u32 = 258;
/// Size of the byte vocabulary: 256 bytes and three specials.
pub const BYTE_VOCAB: usize = 259;

/// A tokenizer: Hugging Face (boxed, it is large) or the byte-level demo vocabulary.
#[derive(Clone, Debug)]
pub enum TextTokenizer {
    Hf(Box<tokenizers::Tokenizer>),
    Bytes,
}

/// HF errors may be chained or multi-line; keep the first line so our messages stay one line.
fn first_line(e: impl std::fmt::Display) -> String {
    e.to_string()
        .lines()
        .next()
        .unwrap_or("unknown error")
        .to_string()
}

impl TextTokenizer {
    /// Loads a Hugging Face `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| {
            AbbaError::io_hint(path, e, "give the path of the model's tokenizer.json")
        })?;
        let tok = tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| AbbaError::Format {
            path: path.display().to_string(),
            format: "tokenizer.json",
            message: format!(
                "{}: use a tokenizer.json saved by Hugging Face tokenizers",
                first_line(e)
            ),
        })?;
        Ok(TextTokenizer::Hf(Box::new(tok)))
    }

    /// The byte-level vocabulary: ids 0..=255 are bytes, then `<bos>`, `<eos>`, `<pad>`.
    pub fn bytes() -> Self {
        TextTokenizer::Bytes
    }

    /// Token ids of `text`, without special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            TextTokenizer::Bytes => Ok(text.bytes().map(u32::from).collect()),
            TextTokenizer::Hf(tok) => tok
                .encode(text, false)
                .map(|enc| enc.get_ids().to_vec())
                .map_err(|e| {
                    AbbaError::InvalidArgument(format!(
                        "the tokenizer could not encode the text ({}): check the text and tokenizer.json",
                        first_line(e)
                    ))
                }),
        }
    }

    /// Text of `ids`, skipping special tokens. Byte sequences that are not UTF-8 decode lossily.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match self {
            TextTokenizer::Bytes => {
                if let Some(&bad) = ids.iter().find(|&&id| id as usize >= BYTE_VOCAB) {
                    return Err(AbbaError::InvalidArgument(format!(
                        "token id {bad} is outside the byte vocabulary (0..{BYTE_VOCAB}): the model's vocabulary \
                         must match the byte tokenizer"
                    )));
                }
                let bytes: Vec<u8> = ids
                    .iter()
                    .filter_map(|&id| u8::try_from(id).ok())
                    .collect();
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
            TextTokenizer::Hf(tok) => tok.decode(ids, true).map_err(|e| {
                AbbaError::InvalidArgument(format!(
                    "the tokenizer could not decode {} ids ({}): the model's vocabulary must match tokenizer.json",
                    ids.len(),
                    first_line(e)
                ))
            }),
        }
    }

    /// Number of ids the tokenizer can produce, added tokens included.
    pub fn vocab_size(&self) -> usize {
        match self {
            TextTokenizer::Bytes => BYTE_VOCAB,
            TextTokenizer::Hf(tok) => tok.get_vocab_size(true),
        }
    }

    /// The id of a token string (special or ordinary), if the vocabulary has it.
    /// The byte vocabulary knows its three specials and every one-byte string.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        match self {
            TextTokenizer::Bytes => match token {
                "<bos>" => Some(BYTE_BOS),
                "<eos>" => Some(BYTE_EOS),
                "<pad>" => Some(BYTE_PAD),
                _ if token.len() == 1 => Some(u32::from(token.as_bytes()[0])),
                _ => None,
            },
            TextTokenizer::Hf(tok) => tok.token_to_id(token),
        }
    }
}

/// The special ids the data pipeline needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpecialIds {
    /// Prepended to every example when the model family uses one (Llama does, Qwen does not).
    pub bos: Option<u32>,
    /// Appended after every response, so the model learns to stop.
    pub eos: u32,
    /// Fills short rows of a batch; never trained on, so any valid id works.
    pub pad: u32,
}

/// BOS spellings of common families, tried in order when config.json gives none.
const BOS_CANDIDATES: &[&str] = &["<s>", "<|begin_of_text|>", "<bos>"];
/// EOS spellings of common families (Llama 2, Llama 3 base, GPT-2/Qwen base, ChatML, Gemma/byte), in order.
const EOS_CANDIDATES: &[&str] = &[
    "</s>",
    "<|end_of_text|>",
    "<|endoftext|>",
    "<|im_end|>",
    "<eos>",
];

impl SpecialIds {
    /// Resolves the special ids: ids from the model's config.json win (they are what the model was trained
    /// with); otherwise common token spellings are looked up. Pad is `<pad>` when the vocabulary has one and
    /// EOS otherwise, as Hugging Face fine-tuning scripts do (padding is masked out of the loss).
    pub fn resolve(
        tok: &TextTokenizer,
        config_bos: Option<u32>,
        config_eos: Option<u32>,
    ) -> Result<SpecialIds> {
        let vocab = tok.vocab_size();
        for (name, id) in [("bos_token_id", config_bos), ("eos_token_id", config_eos)] {
            if let Some(id) = id.filter(|&id| id as usize >= vocab) {
                return Err(AbbaError::InvalidArgument(format!(
                    "config.json {name} = {id} is outside the tokenizer's vocabulary of {vocab}: \
                     use the tokenizer.json that belongs to the model"
                )));
            }
        }
        let lookup = |names: &[&str]| names.iter().find_map(|n| tok.token_id(n));
        let bos = config_bos.or_else(|| lookup(BOS_CANDIDATES));
        let eos = config_eos.or_else(|| lookup(EOS_CANDIDATES)).ok_or_else(|| {
            AbbaError::InvalidArgument(format!(
                "cannot find the end-of-sequence token (tried {}): set eos_token_id in the model's config.json",
                EOS_CANDIDATES.join(", ")
            ))
        })?;
        let pad = tok.token_id("<pad>").unwrap_or(eos);
        Ok(SpecialIds { bos, eos, pad })
    }
}
