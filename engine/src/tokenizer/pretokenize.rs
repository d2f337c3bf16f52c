//! The pre-tokenizer regexes of byte-level BPE vocabularies, by `tokenizer.ggml.pre` name.
//!
//! These are facts taken from llama.cpp (`llm_tokenizer_bpe`): each name maps to a list of
//! regexes applied in sequence, every match and every gap between matches becoming its own
//! piece (the `Isolated` split behaviour). Case-insensitive groups are spelled out as
//! character classes there, so we use them as written.

/// GPT-2's regex; used alone by `gpt2` and after a digit split by `smollm`/`starcoder`.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

/// Llama 3's regex (`llama-bpe`): numbers in runs of up to three digits.
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2's: as Llama 3's but single digits.
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The regexes for pre-tokenizer `pre`, or `None` if we do not know it.
pub fn regexes(pre: &str) -> Option<Vec<&'static str>> {
    Some(match pre {
        "gpt2" | "mpt" | "olmo" | "jais" => vec![GPT2],
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" => {
            vec![r"\p{N}", GPT2]
        }
        "llama-bpe" | "llama3" | "dbrx" | "smaug-bpe" => vec![LLAMA3],
        "qwen2" | "stablelm2" | "hunyuan" => vec![QWEN2],
        "default" => vec![r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"],
        _ => return None,
    })
}

/// The names [`regexes`] knows, for error messages.
pub const KNOWN: &str = "gpt2, smollm, starcoder, llama-bpe, qwen2, default (and aliases)";
