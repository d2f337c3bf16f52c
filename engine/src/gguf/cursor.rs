//! A bounds-checked little-endian reader over the file's bytes.
//!
//! Every read checks the bytes left first, so a malformed file can only produce an error,
//! never an out-of-bounds read. Errors carry a lazily built description of what was being
//! read, so the success path allocates nothing for them.

use super::GgufError;

pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    /// Offset of the next byte to read.
    pub fn pos(&self) -> u64 {
        self.pos as u64
    }

    /// Bytes left after the position.
    pub fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    /// The next `n` bytes, advancing past them.
    pub fn take(&mut self, n: u64, what: impl FnOnce() -> String) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                what: what(),
                offset: self.pos(),
                need: n,
                available: self.remaining(),
            });
        }
        let start = self.pos;
        // n <= remaining <= usize::MAX, so the cast and the addition are exact.
        self.pos += n as usize;
        Ok(&self.buf[start..self.pos])
    }

    fn array<const N: usize>(
        &mut self,
        what: impl FnOnce() -> String,
    ) -> Result<[u8; N], GgufError> {
        let bytes = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub fn u8(&mut self, what: impl FnOnce() -> String) -> Result<u8, GgufError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub fn u16(&mut self, what: impl FnOnce() -> String) -> Result<u16, GgufError> {
        self.array(what).map(u16::from_le_bytes)
    }

    pub fn u32(&mut self, what: impl FnOnce() -> String) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    pub fn u64(&mut self, what: impl FnOnce() -> String) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A GGUF string: u64 byte length, then UTF-8 bytes (no terminator). The length is
    /// checked against the bytes left before anything is allocated.
    pub fn string(&mut self, what: impl Fn() -> String) -> Result<String, GgufError> {
        let len = self.u64(|| format!("length of {}", what()))?;
        let offset = self.pos();
        let bytes = self.take(len, &what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(GgufError::InvalidUtf8 {
                what: what(),
                offset,
            }),
        }
    }

    /// Fails unless `count` items of at least `min_size` bytes each fit in the bytes left:
    /// called before any allocation sized by `count`.
    pub fn check_count(
        &self,
        count: u64,
        min_size: u64,
        what: impl FnOnce() -> String,
    ) -> Result<(), GgufError> {
        let min_bytes = u128::from(count) * u128::from(min_size);
        if min_bytes > u128::from(self.remaining()) {
            return Err(GgufError::CountTooLarge {
                what: what(),
                offset: self.pos(),
                count,
                min_bytes,
                available: self.remaining(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stop_at_the_end() {
        let bytes = [1u8, 0, 0, 0, 7];
        let mut c = Cursor::new(&bytes);
        assert_eq!(c.u32(|| "a".into()).unwrap(), 1);
        assert!(matches!(
            c.u16(|| "b".into()),
            Err(GgufError::Truncated {
                offset: 4,
                need: 2,
                available: 1,
                ..
            })
        ));
        assert_eq!(c.u8(|| "c".into()).unwrap(), 7);
        assert_eq!(c.remaining(), 0);
    }

    #[test]
    fn huge_string_length_is_refused_before_allocating() {
        let mut bytes = u64::MAX.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"abc");
        let mut c = Cursor::new(&bytes);
        let err = c.string(|| "key #0".into()).unwrap_err();
        assert!(
            matches!(
                err,
                GgufError::Truncated {
                    need: u64::MAX,
                    available: 3,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn count_check_does_not_overflow() {
        let c = Cursor::new(&[0u8; 16]);
        assert!(c.check_count(2, 8, String::new).is_ok());
        assert!(matches!(
            c.check_count(u64::MAX, u64::MAX, String::new),
            Err(GgufError::CountTooLarge { .. })
        ));
    }
}
