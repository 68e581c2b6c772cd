//! Benchmark scenarios. Each one connects its clients, runs a bounded workload and returns a
//! [`crate::stats::Summary`].

pub mod chat;
pub mod fanout;
pub mod idle;
pub mod offline;
pub mod pairs;
mod pubsub;
