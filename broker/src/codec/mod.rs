//! The MQTT wire format: bytes in, [`Packet`]s out, and back.
//!
//! `decode` is strict: anything the spec calls malformed or a protocol error comes back as a
//! [`DecodeError`] carrying the reason code the server answers with (5.0) before it closes the
//! connection. It never panics on any input (see the fuzz target in `broker/fuzz`). Payloads
//! are slices of the read buffer (`bytes::Bytes`), never copied.

mod decode;
mod encode;
mod packet;
mod properties;
mod props_codec;
mod reason;
#[cfg(test)]
mod tests;
mod wire;

pub use decode::{DecodeError, decode};
pub use encode::{EncodeError, encode, encoded_size};
pub use packet::*;
pub use properties::{Properties, id as property_id};
pub use reason::ReasonCode;
