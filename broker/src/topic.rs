//! Topic names and topic filters: validation and matching (MQTT 5.0 §4.7).
//!
//! Kept free of broker state so the router, the retained store and the ACL plugin all share
//! one definition of what `+`, `#` and `$`-topics mean.

/// A topic name a client may publish to: non-empty, no wildcards.
pub fn valid_topic_name(topic: &str) -> bool {
    !topic.is_empty() && topic.len() <= 65535 && !topic.contains(['+', '#', '\0'])
}

/// A topic filter a client may subscribe to: `+` fills a whole level, `#` is a whole last level.
pub fn valid_topic_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.len() > 65535 || filter.contains('\0') {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        match level {
            "+" => {}
            "#" if last => {}
            _ if level.contains(['+', '#']) => return false,
            _ => {}
        }
    }
    true
}

/// A shared subscription `$share/{group}/{filter}` split into its group and filter.
/// `Err(())` for a `$share` filter that is malformed ([MQTT-4.8.2-1], [MQTT-4.8.2-2]).
#[allow(clippy::result_unit_err)]
pub fn parse_shared(filter: &str) -> Result<Option<(&str, &str)>, ()> {
    let Some(rest) = filter.strip_prefix("$share/") else {
        return if filter == "$share" { Err(()) } else { Ok(None) };
    };
    let (group, inner) = rest.split_once('/').ok_or(())?;
    if group.is_empty() || group.contains(['+', '#']) || !valid_topic_filter(inner) {
        return Err(());
    }
    Ok(Some((group, inner)))
}

/// Whether `topic` matches `filter`. Topics starting with `$` are not matched by filters
/// starting with a wildcard ([MQTT-4.7.2-1]).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    for level in filter.split('/') {
        match level {
            "#" => return true,
            "+" => {
                if topic_levels.next().is_none() {
                    return false;
                }
            }
            _ => {
                if topic_levels.next() != Some(level) {
                    return false;
                }
            }
        }
    }
    topic_levels.next().is_none()
}

/// Whether every topic matched by `filter` is also matched by `pattern` (both filters).
/// Used to authorize a subscription against an ACL pattern: `chat/#` covers `chat/+/x`,
/// but `chat/+` does not cover `chat/#`.
pub fn covers(pattern: &str, filter: &str) -> bool {
    // A leading wildcard never reaches `$` topics ([MQTT-4.7.2-1]), so it cannot grant them.
    if filter.starts_with('$') && pattern.starts_with(['+', '#']) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    for level in pattern.split('/') {
        match level {
            "#" => return true,
            "+" => match filter_levels.next() {
                Some("#") | None => return false,
                Some(_) => {}
            },
            _ => {
                if filter_levels.next() != Some(level) {
                    return false;
                }
            }
        }
    }
    filter_levels.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        for ok in ["a", "a/b", "+", "#", "a/+/b", "a/#", "+/+", "/", "a//b", "+/#"] {
            assert!(valid_topic_filter(ok), "{ok}");
        }
        for bad in ["", "a+", "a/#/b", "#/a", "a/b#", "a/+b", "\0"] {
            assert!(!valid_topic_filter(bad), "{bad}");
        }
    }

    #[test]
    fn names() {
        assert!(valid_topic_name("a/b"));
        assert!(valid_topic_name("/"));
        assert!(!valid_topic_name(""));
        assert!(!valid_topic_name("a/+"));
        assert!(!valid_topic_name("a/#"));
    }

    #[test]
    fn matching() {
        let cases = [
            ("a/b", "a/b", true),
            ("a/+", "a/b", true),
            ("a/+", "a/b/c", false),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("#", "a/b", true),
            ("+/+", "/a", true),
            ("+", "/a", false),
            ("a/b", "a", false),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("a//b", "a//b", true),
            ("a/+/b", "a//b", true),
        ];
        for (filter, topic, want) in cases {
            assert_eq!(matches(filter, topic), want, "{filter} vs {topic}");
        }
    }

    #[test]
    fn covering() {
        assert!(covers("chat/#", "chat/+/x"));
        assert!(covers("chat/#", "chat/#"));
        assert!(covers("chat/+", "chat/a"));
        assert!(!covers("chat/+", "chat/#"));
        assert!(!covers("chat/+", "chat/+/x"));
        assert!(covers("chat/+", "chat/+"));
        assert!(!covers("chat/a", "chat/+"));
        assert!(!covers("inbox/alice", "inbox/#"));
        assert!(!covers("inbox/alice", "#"));
        assert!(covers("#", "#"));
        assert!(!covers("#", "$SYS/#"));
        assert!(covers("$SYS/#", "$SYS/broker/+"));
    }

    #[test]
    fn shared() {
        assert_eq!(parse_shared("$share/g/a/b"), Ok(Some(("g", "a/b"))));
        assert_eq!(parse_shared("a/b"), Ok(None));
        assert!(parse_shared("$share/g").is_err());
        assert!(parse_shared("$share//a").is_err());
        assert!(parse_shared("$share/g+/a").is_err());
        assert!(parse_shared("$share/g/a#").is_err());
    }
}
