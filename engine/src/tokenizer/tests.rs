//! Tokenizers built from small hand-made vocabularies: every known pre-tokenizer compiles
//! and splits as its regexes say, and SentencePiece vocabularies merge by score and fall
//! back to byte tokens.

use super::*;

fn gpt2_spec(pre: &str) -> VocabSpec {
    // Every byte as a token (so any text encodes), plus a few merges.
    let mut tokens: Vec<String> = (0..=255u8)
        .map(|b| byte_map::byte_to_char(b).to_string())
        .collect();
    for t in ["Ġt", "he", "Ġthe", "12", "123"] {
        tokens.push(t.into());
    }
    tokens.push("<|end|>".into());
    let mut types = vec![TokenType::Normal; tokens.len()];
    *types.last_mut().unwrap() = TokenType::Control;
    VocabSpec {
        kind: VocabKind::Gpt2,
        pre: pre.into(),
        types,
        merges: ["Ġ t", "h e", "Ġt he", "1 2", "12 3"]
            .map(String::from)
            .to_vec(),
        scores: Vec::new(),
        bos: None,
        eos: Some(tokens.len() as u32 - 1),
        eot: None,
        unk: None,
        add_bos: false,
        add_eos: false,
        add_space_prefix: false,
        tokens,
    }
}

#[test]
fn every_known_pre_tokenizer_builds_and_round_trips() {
    for pre in [
        "gpt2",
        "smollm",
        "llama-bpe",
        "qwen2",
        "default",
        "starcoder",
    ] {
        let tok = Tokenizer::from_spec(gpt2_spec(pre)).unwrap_or_else(|e| panic!("{pre}: {e}"));
        let text = " the 12345 café<|end|>!";
        let ids = tok.encode(text).unwrap();
        assert_eq!(tok.decode(&ids), " the 12345 café!", "{pre}: {ids:?}");
        assert!(
            ids.contains(&(tok.n_vocab() as u32 - 1)),
            "{pre}: special token matched"
        );
        assert!(tok.is_end_of_generation(tok.n_vocab() as u32 - 1));
    }
}

#[test]
fn digit_grouping_follows_the_pre_tokenizer() {
    let the = |tok: &Tokenizer| tok.token_id("Ġthe").unwrap();
    let d123 = 256 + 4;
    // gpt2 keeps a number whole (" 123" is one piece: space, then "123" merged).
    let tok = Tokenizer::from_spec(gpt2_spec("gpt2")).unwrap();
    assert_eq!(tok.encode(" the123").unwrap(), vec![the(&tok), d123]);
    // smollm isolates every digit first: no "123" token.
    let tok = Tokenizer::from_spec(gpt2_spec("smollm")).unwrap();
    assert_eq!(
        tok.encode("123").unwrap(),
        vec![b'1' as u32, b'2' as u32, b'3' as u32]
    );
    // llama-bpe groups up to three digits.
    let tok = Tokenizer::from_spec(gpt2_spec("llama-bpe")).unwrap();
    assert_eq!(tok.encode("1234").unwrap(), vec![d123, b'4' as u32]);
    assert!(Tokenizer::from_spec(gpt2_spec("no-such-pre")).is_err());
}

#[test]
fn sentencepiece_merges_by_score_and_falls_back_to_bytes() {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![TokenType::Unknown, TokenType::Control, TokenType::Control];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(TokenType::Byte);
    }
    for t in [
        "▁", "h", "e", "l", "o", "▁h", "ll", "he", "▁he", "llo", "▁hello",
    ] {
        tokens.push(t.into());
        types.push(TokenType::Normal);
    }
    let n = tokens.len();
    // Longer pieces score higher, so they win.
    let scores = tokens.iter().map(|t| t.chars().count() as f32).collect();
    let spec = VocabSpec {
        kind: VocabKind::SentencePiece,
        pre: "default".into(),
        tokens,
        types,
        merges: Vec::new(),
        scores,
        bos: Some(1),
        eos: Some(2),
        eot: None,
        unk: Some(0),
        add_bos: true,
        add_eos: false,
        add_space_prefix: true,
    };
    let tok = Tokenizer::from_spec(spec).unwrap();
    let hello = tok.token_id("▁hello").unwrap();
    assert_eq!(hello as usize, n - 1);
    assert_eq!(tok.encode("hello").unwrap(), vec![1, hello]);
    // "é" is not in the vocabulary: its two UTF-8 bytes as byte tokens.
    let ids = tok.encode("hello é").unwrap();
    let byte = |b: u8| 3 + b as u32;
    assert_eq!(
        ids,
        vec![1, hello, tok.token_id("▁").unwrap(), byte(0xC3), byte(0xA9)]
    );
    assert_eq!(tok.decode(&ids), " hello é");
}
