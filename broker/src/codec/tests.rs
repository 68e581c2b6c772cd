//! Codec tests, split by concern: hand-written wire vectors checked both ways (`vectors`),
//! every rejection rule with its reason code (`reject`), and property-based round trips and
//! robustness checks (`prop`). The helpers here are shared by all three.

mod prop;
mod reject;
mod vectors;

use bytes::BytesMut;

use super::{DecodeError, Packet, Protocol, ReasonCode, decode, encode, encoded_size};

/// Decodes `bytes` as one whole packet; the packet must consume them all.
fn decode_all(bytes: &[u8], protocol: Protocol) -> Result<Packet, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    let packet = decode(&mut buf, protocol, usize::MAX)?.expect("complete packet");
    assert!(buf.is_empty(), "decode left {} bytes", buf.len());
    Ok(packet)
}

fn encode_vec(packet: &Packet, protocol: Protocol) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode(packet, protocol, &mut buf).expect("encodable packet");
    assert_eq!(buf.len(), encoded_size(packet, protocol), "encoded_size disagrees with encode");
    buf.to_vec()
}

/// `bytes` decode to `packet` and `packet` encodes to `bytes`.
fn both_ways(bytes: &[u8], packet: Packet, protocol: Protocol) {
    assert_eq!(decode_all(bytes, protocol), Ok(packet.clone()), "decoding {bytes:02x?}");
    assert_eq!(encode_vec(&packet, protocol), bytes, "encoding {packet:?}");
}

/// `bytes` are rejected with `reason`.
#[track_caller]
fn rejects(bytes: &[u8], protocol: Protocol, reason: ReasonCode) {
    let mut buf = BytesMut::from(bytes);
    match decode(&mut buf, protocol, usize::MAX) {
        Err(e) => assert_eq!(e.reason, reason, "{bytes:02x?}: {e}"),
        Ok(p) => panic!("{bytes:02x?} decoded to {p:?}, expected {reason}"),
    }
}

/// Builds a packet from a first byte and body pieces, with a one-byte remaining length.
fn packet_bytes(first: u8, body: &[&[u8]]) -> Vec<u8> {
    let body = body.concat();
    let len = u8::try_from(body.len()).expect("short test body");
    assert!(len < 128);
    [&[first, len][..], &body].concat()
}
