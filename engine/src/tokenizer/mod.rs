//! Text ↔ token ids, built from the GGUF's own vocabulary with the `tokenizers` crate.
//!
//! - `gpt2` vocabularies: byte-level BPE over the merges, split first by the regexes that
//!   `tokenizer.ggml.pre` names (`pretokenize.rs`).
//! - `llama` (SentencePiece) vocabularies: BPE whose merge order comes from the pieces'
//!   scores, spaces as `▁`, unknown bytes as `<0xXX>` tokens.
//!
//! Control and user-defined tokens are matched in the text as whole tokens (so a chat
//! template's `<|im_start|>` is one id). Decoding goes through [`Tokenizer::token_bytes`]
//! and [`Utf8Stream`], so streamed text never shows half a character.

mod byte_map;
mod pretokenize;
mod stream;
mod vocab;

#[cfg(test)]
mod tests;

pub use stream::Utf8Stream;
pub use vocab::{TokenType, VocabKind, VocabSpec};

use thiserror::Error;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormSeq};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSeq;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior};

use crate::gguf::Metadata;

#[derive(Debug, Error)]
pub enum TokenizerError {
    #[error("tokenizer: metadata key `{0}` is missing")]
    MissingKey(String),
    #[error("tokenizer: metadata key `{key}` {why}")]
    BadValue { key: String, why: String },
    #[error("tokenizer: pre-tokenizer `{0}` is not supported (known: {known})", known = pretokenize::KNOWN)]
    UnknownPre(String),
    #[error("tokenizer: merge {index} `{merge}` is not two tokens separated by a space")]
    BadMerge { index: usize, merge: String },
    #[error("tokenizer: {0}")]
    Build(String),
}

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    spec: VocabSpec,
    /// What each token prints as (control tokens: nothing).
    bytes: Vec<Vec<u8>>,
}

fn build_err(e: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::Build(e.to_string())
}

impl Tokenizer {
    pub fn from_metadata(md: &Metadata) -> Result<Tokenizer, TokenizerError> {
        Tokenizer::from_spec(VocabSpec::from_metadata(md)?)
    }

    pub fn from_spec(spec: VocabSpec) -> Result<Tokenizer, TokenizerError> {
        let vocab: Vocab = spec
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let mut inner = match spec.kind {
            VocabKind::Gpt2 => gpt2_tokenizer(&spec, vocab)?,
            VocabKind::SentencePiece => spm_tokenizer(&spec, vocab)?,
        };
        let specials: Vec<AddedToken> = spec
            .tokens
            .iter()
            .zip(&spec.types)
            .filter(|(_, t)| matches!(t, TokenType::Control | TokenType::UserDefined))
            .map(|(s, t)| AddedToken::from(s.clone(), *t == TokenType::Control).normalized(false))
            .collect();
        inner.add_special_tokens(&specials);
        let bytes = spec
            .tokens
            .iter()
            .zip(&spec.types)
            .map(|(s, t)| piece(&spec, s, *t))
            .collect();
        Ok(Tokenizer { inner, spec, bytes })
    }

    /// Token ids of `text`, with BOS (and EOS) added when the vocabulary says so.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let mut ids = Vec::new();
        if self.spec.add_bos {
            ids.extend(self.spec.bos);
        }
        if !text.is_empty() {
            let enc = self.inner.encode_fast(text, false).map_err(build_err)?;
            ids.extend_from_slice(enc.get_ids());
        }
        if self.spec.add_eos {
            ids.extend(self.spec.eos);
        }
        Ok(ids)
    }

    /// The bytes token `id` prints as: empty for control tokens and ids out of range.
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.bytes
            .get(id as usize)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The token's string as stored in the vocabulary.
    pub fn token_str(&self, id: u32) -> Option<&str> {
        self.spec.tokens.get(id as usize).map(String::as_str)
    }

    pub fn token_id(&self, s: &str) -> Option<u32> {
        self.inner.token_to_id(s)
    }

    /// All tokens' text concatenated (lossy where a token ends mid-character).
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut s = Utf8Stream::new();
        let mut out = String::new();
        for &id in ids {
            out.push_str(&s.push(self.token_bytes(id)));
        }
        out.push_str(&s.finish());
        out
    }

    /// Whether `id` ends generation: EOS, EOT, or a control token named like one.
    pub fn is_end_of_generation(&self, id: u32) -> bool {
        if Some(id) == self.spec.eos || Some(id) == self.spec.eot {
            return true;
        }
        self.spec.types.get(id as usize) == Some(&TokenType::Control)
            && matches!(
                self.token_str(id),
                Some("<|im_end|>" | "<|eot_id|>" | "<|endoftext|>" | "<end_of_turn>" | "</s>")
            )
    }

    pub fn n_vocab(&self) -> usize {
        self.spec.tokens.len()
    }

    pub fn bos(&self) -> Option<u32> {
        self.spec.bos
    }

    pub fn eos(&self) -> Option<u32> {
        self.spec.eos
    }

    pub fn spec(&self) -> &VocabSpec {
        &self.spec
    }
}

/// What a token prints as.
fn piece(spec: &VocabSpec, s: &str, ty: TokenType) -> Vec<u8> {
    match (ty, spec.kind) {
        (TokenType::Control | TokenType::Unused | TokenType::Unknown, _) => Vec::new(),
        (TokenType::UserDefined, _) => s.as_bytes().to_vec(),
        (TokenType::Byte, VocabKind::SentencePiece) => byte_token(s).into_iter().collect(),
        (_, VocabKind::Gpt2) => byte_map::decode_token(s).unwrap_or_else(|| s.as_bytes().to_vec()),
        (_, VocabKind::SentencePiece) => s.replace('▁', " ").into_bytes(),
    }
}

/// The byte of a SentencePiece byte token `<0xAB>`.
fn byte_token(s: &str) -> Option<u8> {
    let hex = s.strip_prefix("<0x")?.strip_suffix('>')?;
    u8::from_str_radix(hex, 16).ok()
}

fn gpt2_tokenizer(spec: &VocabSpec, vocab: Vocab) -> Result<tokenizers::Tokenizer, TokenizerError> {
    let regexes = pretokenize::regexes(&spec.pre)
        .ok_or_else(|| TokenizerError::UnknownPre(spec.pre.clone()))?;
    let merges = spec
        .merges
        .iter()
        .enumerate()
        .map(|(index, m)| match m.split_once(' ') {
            Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.to_string(), b.to_string())),
            _ => Err(TokenizerError::BadMerge {
                index,
                merge: m.clone(),
            }),
        })
        .collect::<Result<Vec<_>, _>>()?;
    // llama.cpp takes a whole pre-token that is in the vocabulary as one token for Llama 3.
    let ignore_merges = matches!(spec.pre.as_str(), "llama-bpe" | "llama3");
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(ignore_merges)
        .build()
        .map_err(build_err)?;
    let mut pre: Vec<PreTokenizerWrapper> = Vec::new();
    for r in regexes {
        let split = Split::new(
            SplitPattern::Regex(r.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(build_err)?;
        pre.push(split.into());
    }
    // The regexes ran on the text; now spell each piece's bytes as characters.
    pre.push(ByteLevel::new(false, false, false).into());
    let mut t = tokenizers::Tokenizer::new(bpe);
    t.with_pre_tokenizer(Some(PreSeq::new(pre)));
    Ok(t)
}

fn spm_tokenizer(spec: &VocabSpec, vocab: Vocab) -> Result<tokenizers::Tokenizer, TokenizerError> {
    // Merges: every split of a piece into two pieces, ordered by the merged piece's score
    // (higher first, then lower id), which is the order SentencePiece's BPE merges in.
    let mut merges: Vec<(f32, u32, String, String)> = Vec::new();
    for (id, (tok, ty)) in spec.tokens.iter().zip(&spec.types).enumerate() {
        if !matches!(ty, TokenType::Normal | TokenType::UserDefined) {
            continue;
        }
        for (i, _) in tok.char_indices().skip(1) {
            let (a, b) = tok.split_at(i);
            if vocab.contains_key(a) && vocab.contains_key(b) {
                merges.push((spec.scores[id], id as u32, a.to_string(), b.to_string()));
            }
        }
    }
    merges.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
    let merges = merges.into_iter().map(|(_, _, a, b)| (a, b)).collect();
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true);
    if let Some(unk) = spec.unk.and_then(|u| spec.tokens.get(u as usize)) {
        builder = builder.unk_token(unk.clone()).fuse_unk(true);
    }
    let bpe = builder.build().map_err(build_err)?;
    let mut norms: Vec<NormalizerWrapper> = Vec::new();
    if spec.add_space_prefix {
        norms.push(Prepend::new("▁".to_string()).into());
    }
    norms.push(Replace::new(" ", "▁").map_err(build_err)?.into());
    let mut t = tokenizers::Tokenizer::new(bpe);
    t.with_normalizer(Some(NormSeq::new(norms)));
    Ok(t)
}
