//! The tokenizer built from SmolLM2's GGUF vocabulary (byte-level BPE, pre-tokenizer
//! `smollm`): fixed prompts to known ids, round trips, special tokens, streamed decoding.

use strata_engine::gguf::GgufFile;
use strata_engine::tokenizer::{Tokenizer, Utf8Stream};

fn smollm2() -> Option<Tokenizer> {
    let Some(path) = strata_tests::smollm2() else {
        eprintln!("skipped: model absent (run scripts/fetch-model.sh)");
        return None;
    };
    let file = GgufFile::open(path).expect("open model");
    Some(Tokenizer::from_metadata(file.metadata()).expect("tokenizer"))
}

#[test]
fn capital_of_france_has_the_reference_ids() {
    let Some(tok) = smollm2() else { return };
    // From the issue (PyPI `tokenizers` on the same vocabulary); no BOS: add_bos_token = false.
    assert_eq!(
        tok.encode("The capital of France is").unwrap(),
        vec![504, 3575, 282, 4649, 314]
    );
}

#[test]
fn digits_split_one_by_one_and_specials_are_single_tokens() {
    let Some(tok) = smollm2() else { return };
    // smollm's pre-tokenizer isolates every digit first.
    let ids = tok.encode("2024").unwrap();
    assert_eq!(ids.len(), 4, "{ids:?}");
    let start = tok.token_id("<|im_start|>").expect("ChatML start token");
    let ids = tok.encode("<|im_start|>user\nHi").unwrap();
    assert_eq!(ids[0], start);
    assert!(
        tok.token_bytes(start).is_empty(),
        "control tokens print nothing"
    );
}

#[test]
fn text_round_trips() {
    let Some(tok) = smollm2() else { return };
    for text in [
        "Hello, world!",
        "  leading spaces and\ttabs\n\nnew lines  ",
        "Ünïcödé: naïve café — 東京 😀",
        "numbers 3.14159 and 1,000,000",
        "don't won't I'll we've",
    ] {
        let ids = tok.encode(text).unwrap();
        assert_eq!(tok.decode(&ids), text, "ids {ids:?}");
    }
}

#[test]
fn streamed_decoding_never_splits_a_character() {
    let Some(tok) = smollm2() else { return };
    let text = "東京 😀 é";
    let ids = tok.encode(text).unwrap();
    let mut s = Utf8Stream::new();
    let mut out = String::new();
    for id in ids {
        let piece = s.push(tok.token_bytes(id));
        assert!(!piece.contains('\u{FFFD}'), "piece {piece:?}");
        out.push_str(&piece);
    }
    out.push_str(&s.finish());
    assert_eq!(out, text);
}
