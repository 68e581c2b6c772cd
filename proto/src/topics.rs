//! The topic scheme (DESIGN.md, "The chat protocol on MQTT"): every chat topic is built and
//! parsed here and nowhere else.
//!
//! | topic | publish | subscribe |
//! |---|---|---|
//! | `inbox/{me}` | server only | that user's devices only |
//! | `dm/{peer}` | any user not blocked by peer | nobody |
//! | `dm/{peer}/text` | same, plain UTF-8 | nobody |
//! | `g/{group}` | group members | nobody |
//! | `g/{group}/text` | group members, plain UTF-8 | nobody |
//! | `presence/{user}` | server only (retained) | per privacy setting |
//! | `sync/{me}` | that user | nobody |
//!
//! User ids are `[a-z0-9_.-]{3,32}` and are used as-is in topics; the MQTT client id of a
//! device is `{user}:{device}`.

/// A user id: 3 to 32 of `a-z`, `0-9`, `_`, `.`, `-`. Safe inside a topic level.
pub fn valid_user_id(id: &str) -> bool {
    (3..=32).contains(&id.len())
        && id.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-'))
}

/// A device id: 1 to 64 of `a-z`, `A-Z`, `0-9`, `_`, `.`, `-`.
pub fn valid_device_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A group id: same alphabet and length as a user id.
pub fn valid_group_id(id: &str) -> bool {
    valid_user_id(id)
}

pub fn inbox(user: &str) -> String {
    format!("inbox/{user}")
}

pub fn dm(peer: &str) -> String {
    format!("dm/{peer}")
}

pub fn dm_text(peer: &str) -> String {
    format!("dm/{peer}/text")
}

pub fn group(group: &str) -> String {
    format!("g/{group}")
}

pub fn group_text(group: &str) -> String {
    format!("g/{group}/text")
}

pub fn presence(user: &str) -> String {
    format!("presence/{user}")
}

pub fn sync(user: &str) -> String {
    format!("sync/{user}")
}

/// The MQTT client id of a user's device.
pub fn client_id(user: &str, device: &str) -> String {
    format!("{user}:{device}")
}

/// `{user}:{device}` split into its parts, if both are valid.
pub fn parse_client_id(client_id: &str) -> Option<(&str, &str)> {
    let (user, device) = client_id.split_once(':')?;
    (valid_user_id(user) && valid_device_id(device)).then_some((user, device))
}

/// A chat topic, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic<'a> {
    Inbox { user: &'a str },
    Dm { peer: &'a str, text: bool },
    Group { group: &'a str, text: bool },
    Presence { user: &'a str },
    Sync { user: &'a str },
}

/// Parses a topic of the chat scheme; None for anything else (including ids that are not
/// valid, so a parsed id is always safe to use).
pub fn parse(topic: &str) -> Option<Topic<'_>> {
    let mut levels = topic.split('/');
    let kind = levels.next()?;
    let id = levels.next()?;
    let rest = levels.next();
    if levels.next().is_some() {
        return None;
    }
    let text = match rest {
        None => false,
        Some("text") => true,
        Some(_) => return None,
    };
    let parsed = match kind {
        "inbox" if !text && valid_user_id(id) => Topic::Inbox { user: id },
        "dm" if valid_user_id(id) => Topic::Dm { peer: id, text },
        "g" if valid_group_id(id) => Topic::Group { group: id, text },
        "presence" if !text && valid_user_id(id) => Topic::Presence { user: id },
        "sync" if !text && valid_user_id(id) => Topic::Sync { user: id },
        _ => return None,
    };
    Some(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_and_parse_round_trip() {
        assert_eq!(parse(&inbox("alice")), Some(Topic::Inbox { user: "alice" }));
        assert_eq!(parse(&dm("bob")), Some(Topic::Dm { peer: "bob", text: false }));
        assert_eq!(parse(&dm_text("bob")), Some(Topic::Dm { peer: "bob", text: true }));
        assert_eq!(parse(&group("team-1")), Some(Topic::Group { group: "team-1", text: false }));
        assert_eq!(
            parse(&group_text("team-1")),
            Some(Topic::Group { group: "team-1", text: true })
        );
        assert_eq!(parse(&presence("carol")), Some(Topic::Presence { user: "carol" }));
        assert_eq!(parse(&sync("alice")), Some(Topic::Sync { user: "alice" }));
    }

    #[test]
    fn rejects_what_is_not_the_scheme() {
        for topic in [
            "inbox/#",
            "inbox/+",
            "inbox/al",
            "inbox/alice/text",
            "dm/bob/x",
            "dm/bob/text/x",
            "dm/BOB",
            "dm/",
            "x/alice",
            "inbox",
            "sync/alice/text",
            "dm/a+b",
            "dm/ali ce",
        ] {
            assert_eq!(parse(topic), None, "{topic}");
        }
    }

    #[test]
    fn client_ids() {
        assert_eq!(client_id("alice", "phone"), "alice:phone");
        assert_eq!(parse_client_id("alice:phone"), Some(("alice", "phone")));
        assert_eq!(parse_client_id("alice"), None);
        assert_eq!(parse_client_id("al:phone"), None);
        assert_eq!(parse_client_id("alice:"), None);
        assert_eq!(parse_client_id("alice:ph/one"), None);
    }

    #[test]
    fn user_ids() {
        assert!(valid_user_id("alice"));
        assert!(valid_user_id("a.b-c_1"));
        assert!(!valid_user_id("ab"));
        assert!(!valid_user_id("Alice"));
        assert!(!valid_user_id(&"a".repeat(33)));
        assert!(!valid_user_id("a/b"));
    }
}
