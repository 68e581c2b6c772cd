//! Fuzzes the MQTT decoder: any input, in every protocol version, must decode without
//! panicking, and every packet that decodes must survive encode → decode unchanged, with
//! `encoded_size` matching what `encode` writes. The input is read as a stream, the way a
//! connection reads it, so sequences of packets are exercised too.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use seed_broker::codec::{Protocol, decode, encode, encoded_size};

fuzz_target!(|data: &[u8]| {
    for protocol in [Protocol::V3_1, Protocol::V3_1_1, Protocol::V5] {
        // Once with no size limit, once with a small one to exercise PACKET_TOO_LARGE.
        for max_packet_size in [usize::MAX, 64] {
            let mut buf = BytesMut::from(data);
            while let Ok(Some(packet)) = decode(&mut buf, protocol, max_packet_size) {
                let mut again = BytesMut::new();
                encode(&packet, protocol, &mut again).expect("a decoded packet re-encodes");
                assert_eq!(again.len(), encoded_size(&packet, protocol));
                let decoded = decode(&mut again, protocol, usize::MAX);
                assert_eq!(decoded, Ok(Some(packet)), "round trip changed the packet");
                assert!(again.is_empty(), "re-encoded packet has trailing bytes");
            }
        }
    }
});
