//! The byte framing of what the store packs into blobs (inbox chunks, journal records):
//! big-endian fixed-width integers and length-prefixed byte strings.
//!
//! Fixed-width lengths keep the format writable from SQL (`unhex(printf('%08X', n))`), which
//! a migration uses. Reading never panics: a short or malformed blob is `None`, which the
//! callers report as a damaged file.

use bytes::Bytes;

pub fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_be_bytes());
}

pub fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_be_bytes());
}

/// A length (u32) and the bytes.
pub fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, len32(bytes.len()));
    out.extend_from_slice(bytes);
}

/// 0 for none, else the length + 1 (u32) and the bytes.
pub fn put_optional(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        None => put_u32(out, 0),
        Some(text) => {
            put_u32(out, len32(text.len()) + 1);
            out.extend_from_slice(text.as_bytes());
        }
    }
}

/// Lengths are bounded far below 4 GiB by the broker's maximum packet size.
fn len32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// A blob that does not parse (the file is damaged): what it was, and where in it (an inbox
/// chunk's seq, a journal record's item) reading went wrong.
#[derive(Debug)]
pub struct Damaged {
    pub what: &'static str,
    pub at: u64,
}

impl std::fmt::Display for Damaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "damaged {} at {}", self.what, self.at)
    }
}

impl std::error::Error for Damaged {}

/// Reads a blob front to back.
pub struct Reader(Bytes);

impl Reader {
    pub fn new(blob: Bytes) -> Reader {
        Reader(blob)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?[..].try_into().ok()?))
    }

    pub fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?[..].try_into().ok()?))
    }

    /// What [`put_bytes`] wrote, without copying.
    pub fn bytes(&mut self) -> Option<Bytes> {
        let len = self.u32()?;
        self.take(len as usize)
    }

    pub fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }

    /// What [`put_optional`] wrote.
    pub fn optional(&mut self) -> Option<Option<String>> {
        match self.u32()? {
            0 => Some(None),
            n => String::from_utf8(self.take(n as usize - 1)?.to_vec()).ok().map(Some),
        }
    }

    fn take(&mut self, len: usize) -> Option<Bytes> {
        (self.0.len() >= len).then(|| self.0.split_to(len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_short_input() {
        let mut out = Vec::new();
        out.push(7);
        put_u64(&mut out, u64::MAX - 1);
        put_bytes(&mut out, b"body");
        put_optional(&mut out, None);
        put_optional(&mut out, Some("phone"));
        let mut reader = Reader::new(Bytes::from(out.clone()));
        assert_eq!(reader.u8(), Some(7));
        assert_eq!(reader.u64(), Some(u64::MAX - 1));
        assert_eq!(reader.bytes().as_deref(), Some(&b"body"[..]));
        assert_eq!(reader.optional(), Some(None));
        assert_eq!(reader.optional(), Some(Some("phone".to_owned())));
        assert!(reader.is_empty());

        // Every truncation is None somewhere, never a panic.
        for cut in 0..out.len() {
            let mut reader = Reader::new(Bytes::copy_from_slice(&out[..cut]));
            let whole = (|| {
                reader.u8()?;
                reader.u64()?;
                reader.bytes()?;
                reader.optional()?;
                reader.optional()
            })();
            assert!(whole.is_none(), "cut at {cut}");
        }
    }
}
