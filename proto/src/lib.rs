//! Seed's wire contract: the protobuf payloads (`seed.v1`, compiled from `proto/`) and the
//! topic scheme. Clients and the server share this crate, so a topic string or a payload
//! shape is defined in exactly one place.

pub mod topics;

/// The `seed.v1` protobuf messages.
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/seed.v1.rs"));
}

pub use prost::Message as ProstMessage;
