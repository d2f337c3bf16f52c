//! The vocabulary as the GGUF metadata gives it (`tokenizer.ggml.*`), checked.

use super::TokenizerError;
use crate::gguf::Metadata;

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl TokenType {
    fn from_id(id: i32) -> Option<TokenType> {
        Some(match id {
            1 => TokenType::Normal,
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => return None,
        })
    }
}

/// `tokenizer.ggml.model`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VocabKind {
    /// `gpt2`: byte-level BPE with merges.
    Gpt2,
    /// `llama`: SentencePiece pieces with scores, `▁` for spaces, `<0xXX>` byte fallback.
    SentencePiece,
}

#[derive(Debug, Clone)]
pub struct VocabSpec {
    pub kind: VocabKind,
    /// `tokenizer.ggml.pre` (byte-level BPE only; absent = "default").
    pub pre: String,
    pub tokens: Vec<String>,
    pub types: Vec<TokenType>,
    /// Byte-level BPE: "left right" pairs, highest priority first.
    pub merges: Vec<String>,
    /// SentencePiece: a score per token (higher merges first).
    pub scores: Vec<f32>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub unk: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    /// SentencePiece: prepend a space to the text (`tokenizer.ggml.add_space_prefix`).
    pub add_space_prefix: bool,
}

const K_MODEL: &str = "tokenizer.ggml.model";
const K_TOKENS: &str = "tokenizer.ggml.tokens";
const K_TYPES: &str = "tokenizer.ggml.token_type";
const K_MERGES: &str = "tokenizer.ggml.merges";
const K_SCORES: &str = "tokenizer.ggml.scores";

impl VocabSpec {
    pub fn from_metadata(md: &Metadata) -> Result<VocabSpec, TokenizerError> {
        let missing = |k: &str| TokenizerError::MissingKey(k.to_string());
        let bad = |k: &str, why: String| TokenizerError::BadValue {
            key: k.to_string(),
            why,
        };

        let model = md.get_str(K_MODEL).ok_or_else(|| missing(K_MODEL))?;
        let kind = match model {
            "gpt2" => VocabKind::Gpt2,
            "llama" => VocabKind::SentencePiece,
            other => {
                return Err(bad(
                    K_MODEL,
                    format!("`{other}` is not supported (gpt2, llama)"),
                ))
            }
        };
        let tokens: Vec<String> = md
            .get_str_array(K_TOKENS)
            .ok_or_else(|| missing(K_TOKENS))?
            .into_iter()
            .map(str::to_owned)
            .collect();
        if tokens.is_empty() {
            return Err(bad(K_TOKENS, "is empty".into()));
        }
        let n = tokens.len();
        let types = match md.get_i32_array(K_TYPES) {
            None => vec![TokenType::Normal; n],
            Some(ids) => {
                if ids.len() != n {
                    return Err(bad(
                        K_TYPES,
                        format!("has {} entries for {n} tokens", ids.len()),
                    ));
                }
                ids.iter()
                    .enumerate()
                    .map(|(i, &t)| {
                        TokenType::from_id(t)
                            .ok_or_else(|| bad(K_TYPES, format!("token {i} has unknown type {t}")))
                    })
                    .collect::<Result<_, _>>()?
            }
        };
        let merges = match kind {
            VocabKind::Gpt2 => md
                .get_str_array(K_MERGES)
                .ok_or_else(|| missing(K_MERGES))?
                .into_iter()
                .map(str::to_owned)
                .collect(),
            VocabKind::SentencePiece => Vec::new(),
        };
        let scores = match kind {
            VocabKind::SentencePiece => {
                let s = md
                    .get_f32_array(K_SCORES)
                    .ok_or_else(|| missing(K_SCORES))?;
                if s.len() != n {
                    return Err(bad(
                        K_SCORES,
                        format!("has {} entries for {n} tokens", s.len()),
                    ));
                }
                s
            }
            VocabKind::Gpt2 => Vec::new(),
        };
        let id = |key: &str| -> Result<Option<u32>, TokenizerError> {
            match md.get(key) {
                None => Ok(None),
                Some(v) => match v.as_u32() {
                    Some(i) if (i as usize) < n => Ok(Some(i)),
                    _ => Err(bad(key, format!("{v:?} is not a token id below {n}"))),
                },
            }
        };
        let flag = |key: &str, default: bool| md.get_bool(key).unwrap_or(default);
        let spm = kind == VocabKind::SentencePiece;
        Ok(VocabSpec {
            kind,
            pre: md
                .get_str("tokenizer.ggml.pre")
                .unwrap_or("default")
                .to_string(),
            bos: id("tokenizer.ggml.bos_token_id")?,
            eos: id("tokenizer.ggml.eos_token_id")?,
            eot: id("tokenizer.ggml.eot_token_id")?,
            unk: id("tokenizer.ggml.unknown_token_id")?,
            // llama.cpp's defaults: SentencePiece vocabularies add BOS, byte-level ones not.
            add_bos: flag("tokenizer.ggml.add_bos_token", spm),
            add_eos: flag("tokenizer.ggml.add_eos_token", false),
            add_space_prefix: flag("tokenizer.ggml.add_space_prefix", spm),
            tokens,
            types,
            merges,
            scores,
        })
    }
}
