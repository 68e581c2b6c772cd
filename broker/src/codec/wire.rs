//! The MQTT primitive data types (spec §1.5): big-endian integers, variable byte integers,
//! length-prefixed UTF-8 strings and binary data, read from and written to buffers.
//!
//! Reading goes through [`Reader`], a cursor over one packet's body as `Bytes`, so binary
//! fields and the PUBLISH payload come out as zero-copy slices and every length is checked
//! against the bytes actually present before anything is allocated. Writing goes through
//! the [`Sink`] trait, implemented both by `BytesMut` and by a byte [`Counter`], so the code
//! that sizes a packet is the very code that writes it and the two can never disagree.

use bytes::{Buf, Bytes, BytesMut};

use super::{DecodeError, EncodeError};

/// Largest value a variable byte integer can hold (four bytes of seven bits).
pub(super) const MAX_VARINT: usize = 268_435_455;

/// Parses a variable byte integer from the front of `bytes`: `Ok(None)` when more bytes are
/// needed, otherwise the value and how many bytes it took.
pub(super) fn parse_varint(bytes: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value = 0u32;
    for (i, &b) in bytes.iter().take(4).enumerate() {
        value |= u32::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    if bytes.len() >= 4 {
        Err(DecodeError::malformed("variable byte integer longer than 4 bytes"))
    } else {
        Ok(None)
    }
}

/// Bytes a variable byte integer takes on the wire.
pub(super) fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// A cursor over one packet's body. Running out of bytes is always a malformed packet: the
/// caller has already checked that the whole packet is present, so a short field means the
/// lengths inside the packet lie.
pub(super) struct Reader {
    buf: Bytes,
}

fn truncated() -> DecodeError {
    DecodeError::malformed("field runs past the end of the packet")
}

impl Reader {
    pub(super) fn new(buf: Bytes) -> Reader {
        Reader { buf }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(super) fn u8(&mut self) -> Result<u8, DecodeError> {
        if self.buf.is_empty() {
            return Err(truncated());
        }
        Ok(self.buf.get_u8())
    }

    pub(super) fn u16(&mut self) -> Result<u16, DecodeError> {
        if self.buf.len() < 2 {
            return Err(truncated());
        }
        Ok(self.buf.get_u16())
    }

    pub(super) fn u32(&mut self) -> Result<u32, DecodeError> {
        if self.buf.len() < 4 {
            return Err(truncated());
        }
        Ok(self.buf.get_u32())
    }

    pub(super) fn varint(&mut self) -> Result<u32, DecodeError> {
        let (value, len) = parse_varint(&self.buf)?.ok_or_else(truncated)?;
        self.buf.advance(len);
        Ok(value)
    }

    /// Splits off the next `len` bytes as a reader of their own (a property list).
    pub(super) fn take(&mut self, len: usize) -> Result<Reader, DecodeError> {
        if self.buf.len() < len {
            return Err(truncated());
        }
        Ok(Reader { buf: self.buf.split_to(len) })
    }

    /// Two-byte-length binary data, as a slice of the packet (no copy).
    pub(super) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = usize::from(self.u16()?);
        Ok(self.take(len)?.buf)
    }

    /// Two-byte-length UTF-8 string; U+0000 is forbidden ([MQTT-1.5.4-2]).
    pub(super) fn string(&mut self) -> Result<String, DecodeError> {
        let len = usize::from(self.u16()?);
        let raw = self.buf.get(..len).ok_or_else(truncated)?;
        let text = std::str::from_utf8(raw)
            .map_err(|_| DecodeError::malformed("string is not valid UTF-8"))?;
        if raw.contains(&0) {
            return Err(DecodeError::malformed("string contains U+0000"));
        }
        let text = text.to_owned();
        self.buf.advance(len);
        Ok(text)
    }

    /// Everything left (the PUBLISH payload, the SUBACK codes), without copying.
    pub(super) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// The packet must be consumed exactly by what its type defines.
    pub(super) fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::malformed("unexpected bytes after the end of the packet"))
        }
    }
}

/// Somewhere encoded bytes go: a real buffer, or a [`Counter`] that only sizes the packet.
pub(super) trait Sink {
    fn put(&mut self, bytes: &[u8]);

    fn u8(&mut self, value: u8) {
        self.put(&[value]);
    }

    fn u16(&mut self, value: u16) {
        self.put(&value.to_be_bytes());
    }

    fn u32(&mut self, value: u32) {
        self.put(&value.to_be_bytes());
    }

    /// Writes a variable byte integer; callers check `value <= MAX_VARINT` first.
    fn varint(&mut self, value: usize) {
        let mut out = [0u8; 4];
        let mut rest = value;
        let mut len = 0;
        while len < 4 {
            let byte = (rest & 0x7F) as u8;
            rest >>= 7;
            if rest == 0 {
                out[len] = byte;
                len += 1;
                break;
            }
            out[len] = byte | 0x80;
            len += 1;
        }
        self.put(&out[..len]);
    }

    fn binary(&mut self, data: &[u8]) -> Result<(), EncodeError> {
        let len = u16::try_from(data.len()).map_err(|_| EncodeError::BinaryTooLong(data.len()))?;
        self.u16(len);
        self.put(data);
        Ok(())
    }

    fn string(&mut self, text: &str) -> Result<(), EncodeError> {
        let len = u16::try_from(text.len()).map_err(|_| EncodeError::StringTooLong(text.len()))?;
        self.u16(len);
        self.put(text.as_bytes());
        Ok(())
    }
}

impl Sink for BytesMut {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Counts bytes instead of writing them.
#[derive(Default)]
pub(super) struct Counter(pub(super) usize);

impl Sink for Counter {
    fn put(&mut self, bytes: &[u8]) {
        self.0 = self.0.saturating_add(bytes.len());
    }
}
