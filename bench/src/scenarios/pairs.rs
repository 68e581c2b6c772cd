//! `pairs`: N publisher/subscriber pairs, pair i publishing on `bench/pair/{i}` with client ids
//! `bench-pub-{i}` / `bench-sub-{i}`. Measures throughput, latency, loss and duplicates.

use anyhow::Result;

use super::pubsub::{self, Layout};
use crate::Args;
use crate::stats::Summary;

pub async fn run(args: &Args) -> Result<Summary> {
    let layout = Layout {
        scenario: "pairs",
        groups: args.pairs,
        members: 1,
        topic: |i| format!("bench/pair/{i}"),
        pub_id: |i| format!("bench-pub-{i}"),
        sub_id: |i, _| format!("bench-sub-{i}"),
    };
    let mut s = pubsub::run(args, &layout).await?;
    s.pairs = Some(args.pairs);
    Ok(s)
}
