//! GPT-2's reversible byte ↔ character map: byte-level BPE vocabularies spell every byte as
//! a printable character (printable Latin-1 bytes as themselves, the other 68 bytes as
//! U+0100 onwards, in byte order).

/// The character byte `b` is spelled with.
pub fn byte_to_char(b: u8) -> char {
    BYTE_TO_CHAR.with(|t| t[b as usize])
}

/// The byte the character `c` spells, if it is one of the 256.
pub fn char_to_byte(c: char) -> Option<u8> {
    let u = c as usize;
    CHAR_TO_BYTE.with(|t| t.get(u).copied().flatten())
}

fn is_self_mapped(b: u32) -> bool {
    (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b)
}

thread_local! {
    static BYTE_TO_CHAR: [char; 256] = {
        let mut t = ['\0'; 256];
        let mut n = 0u32;
        for b in 0u32..256 {
            t[b as usize] = if is_self_mapped(b) {
                char::from_u32(b).unwrap_or('\0')
            } else {
                n += 1;
                char::from_u32(255 + n).unwrap_or('\0')
            };
        }
        t
    };
    /// Indexed by code point; every mapped character is below U+0100 + 68.
    static CHAR_TO_BYTE: [Option<u8>; 324] = {
        let mut t = [None; 324];
        for b in 0..=255u8 {
            t[byte_to_char(b) as usize] = Some(b);
        }
        t
    };
}

/// The raw bytes a byte-level token string stands for; `None` if it has a character
/// outside the map (then the token is not byte-level text).
pub fn decode_token(token: &str) -> Option<Vec<u8>> {
    token.chars().map(char_to_byte).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_byte() {
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(byte_to_char(b)), Some(b));
        }
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(decode_token("ĠParis"), Some(b" Paris".to_vec()));
    }
}
