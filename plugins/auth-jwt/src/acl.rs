//! The chat protocol's access rules (DESIGN.md, "The chat protocol on MQTT") for a signed-in
//! user: what a device may subscribe to and publish.
//!
//! The rules are an allow-list over [`topics::parse`], so a wildcard, an unknown topic or an
//! invalid id is refused without a case of its own: a device subscribes to exactly its own
//! inbox, and publishes only to the topics the protocol gives users. Who may write to whom
//! (blocks, group membership) is the chat plugin's business; this is the shape check in front.

use seed_broker::hooks::Action;
use seed_proto::topics::{self, Topic};

/// Why an action is refused, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Only `inbox/{me}`, exactly, may be subscribed to.
    NotOwnInbox,
    /// Not a topic users publish to (or another user's `sync`).
    NotPublishable,
    /// Retained messages are the server's (presence).
    Retained,
    /// Wills are not part of the chat protocol.
    Will,
}

/// Whether `me` may do `action`.
pub fn check(me: &str, action: &Action<'_>) -> Result<(), Refusal> {
    match *action {
        Action::Subscribe { filter, .. } => match topics::parse(filter) {
            Some(Topic::Inbox { user }) if user == me => Ok(()),
            _ => Err(Refusal::NotOwnInbox),
        },
        Action::Publish { retain: true, .. } => Err(Refusal::Retained),
        Action::Publish { topic, .. } => match topics::parse(topic) {
            Some(Topic::Dm { .. } | Topic::Group { .. }) => Ok(()),
            Some(Topic::Sync { user }) if user == me => Ok(()),
            _ => Err(Refusal::NotPublishable),
        },
        Action::Will { .. } => Err(Refusal::Will),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seed_broker::codec::QoS;

    fn subscribe(filter: &str) -> Result<(), Refusal> {
        check("alice", &Action::Subscribe { filter, qos: QoS::AtLeastOnce })
    }

    fn publish(topic: &str) -> Result<(), Refusal> {
        check("alice", &Action::Publish { topic, qos: QoS::AtLeastOnce, retain: false })
    }

    #[test]
    fn subscribe_only_to_own_inbox() {
        assert_eq!(subscribe(&topics::inbox("alice")), Ok(()));
        for filter in [
            "#",
            "+",
            "+/x",
            "+/alice",
            "inbox/+",
            "inbox/#",
            "inbox/bob",
            "inbox/alice/#",
            "inbox/alice/text",
            "presence/alice",
            "presence/+",
            "dm/alice",
            "sync/alice",
            "$SYS/#",
            "anything",
            "",
        ] {
            assert_eq!(subscribe(filter), Err(Refusal::NotOwnInbox), "{filter}");
        }
    }

    #[test]
    fn publish_to_chat_topics_and_own_sync() {
        for topic in [
            topics::dm("bob"),
            topics::dm_text("bob"),
            topics::group("team-1"),
            topics::group_text("team-1"),
            topics::sync("alice"),
        ] {
            assert_eq!(publish(&topic), Ok(()), "{topic}");
        }
        for topic in [
            "inbox/alice",
            "inbox/bob",
            "presence/alice",
            "presence/bob",
            "sync/bob",
            "dm/#",
            "dm/+",
            "dm/bob/x",
            "g/BAD",
            "#",
            "hello/world",
            "",
        ] {
            assert_eq!(publish(topic), Err(Refusal::NotPublishable), "{topic}");
        }
    }

    #[test]
    fn retained_publishes_and_wills_are_refused() {
        let topic = topics::dm("bob");
        let retained = Action::Publish { topic: &topic, qos: QoS::AtLeastOnce, retain: true };
        assert_eq!(check("alice", &retained), Err(Refusal::Retained));
        let will = Action::Will { topic: &topic, qos: QoS::AtLeastOnce, retain: false };
        assert_eq!(check("alice", &will), Err(Refusal::Will));
    }
}
