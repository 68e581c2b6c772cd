//! MQTT conformance tests for the Seed broker, organised by the normative statements of the
//! MQTT 3.1.1 (OASIS, 2014) and MQTT 5.0 (OASIS, 2019) specifications.
//!
//! Each test is named after the statement it checks and quotes it (id and short text) in its
//! doc comment. Where both versions number the same rule differently the 3.1.1 id is used for
//! 3.1.1 behaviour and the 5.0 id for 5.0 behaviour. Every test starts its own in-process
//! server on an ephemeral port with a temporary data directory, so tests are independent.

mod client;
mod connect;
mod keepalive;
mod properties;
mod publish;
mod retained;
mod session;
mod subscribe;
mod will;
