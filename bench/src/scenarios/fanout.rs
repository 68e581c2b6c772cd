//! `fanout`: G groups, each with one publisher on `bench/group/{g}` and M subscribers.
//! Every subscriber counts its own deliveries; msg/s counts deliveries, not publishes.

use anyhow::Result;

use super::pubsub::{self, Layout};
use crate::Args;
use crate::stats::Summary;

pub async fn run(args: &Args) -> Result<Summary> {
    let layout = Layout {
        scenario: "fanout",
        groups: args.groups,
        members: args.members,
        topic: |g| format!("bench/group/{g}"),
        pub_id: |g| format!("bench-fpub-{g}"),
        sub_id: |g, m| format!("bench-fsub-{g}-{m}"),
    };
    let mut s = pubsub::run(args, &layout).await?;
    s.groups = Some(args.groups);
    s.members = Some(args.members);
    Ok(s)
}
