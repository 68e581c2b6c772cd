//! The compiled form of the ACL rules: what `authorize` walks on every PUBLISH and SUBSCRIBE.
//!
//! A rule's topic pattern is validated and split once, at build time, into literal text and
//! placeholder parts (`%u`, `%c`), so the hot path never parses configuration. A pattern with
//! no placeholder keeps its text as is and is checked with `topic::matches` / `topic::covers`
//! without allocating; a pattern with placeholders is substituted into one exactly-sized
//! string first. Matching always goes through `seed_broker::topic`, so the ACL and the router
//! share one definition of `+`, `#` and `$`-topics.
//!
//! A substituted value (user name or client id) is only used when it cannot change the shape
//! of the pattern: a value that is empty or contains `/`, `+`, `#` or NUL makes the rule not
//! match, as does a value starting with `$` where the pattern starts with the placeholder
//! (it would reach `$SYS`-like topics). "Not match" is the deny-safe choice: an allow rule is
//! skipped, and a deny rule being skipped can only lead to a later rule or the default.

use std::collections::HashSet;

use seed_broker::codec::ReasonCode;
use seed_broker::hooks::{Action, ClientInfo, Decision, Outcome, PluginError};
use seed_broker::topic;

use crate::{Config, Permission, RuleAction, RuleConfig};

/// A whole rule set, swapped as one on reload.
#[derive(Debug)]
pub(crate) struct Rules {
    default_allow: bool,
    rules: Box<[Rule]>,
}

#[derive(Debug)]
struct Rule {
    allow: bool,
    /// Applies to PUBLISH and wills.
    publish: bool,
    /// Applies to SUBSCRIBE.
    subscribe: bool,
    who: Who,
    pattern: Pattern,
}

/// Which clients a rule is for.
#[derive(Debug)]
enum Who {
    Everyone,
    /// Only clients without a user name.
    Anonymous,
    /// Only clients with one of these user names.
    Users(HashSet<Box<str>>),
}

#[derive(Debug)]
enum Pattern {
    /// No placeholder: the filter as written.
    Fixed(Box<str>),
    /// Literal text and placeholders in order; `literal_len` is the text's total length.
    Template { parts: Box<[Part]>, literal_len: usize },
}

#[derive(Debug, PartialEq, Eq)]
enum Part {
    Text(Box<str>),
    Username,
    ClientId,
}

impl Rules {
    /// Validates and compiles a configuration. Errors name the offending rule by its index.
    pub(crate) fn compile(config: &Config) -> Result<Rules, PluginError> {
        let rules = config
            .rules
            .iter()
            .enumerate()
            .map(|(index, rule)| {
                Rule::compile(rule).map_err(|e| PluginError(format!("acl rules[{index}]: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Rules {
            default_allow: config.default == Permission::Allow,
            rules: rules.into_boxed_slice(),
        })
    }

    /// The first matching rule's verdict, or the default.
    pub(crate) fn decide(&self, client: &ClientInfo, action: &Action<'_>) -> Outcome {
        let (subscribe, subject) = match *action {
            Action::Publish { topic, .. } | Action::Will { topic, .. } => (false, topic),
            Action::Subscribe { filter, .. } => (true, filter),
        };
        let username = client.username.as_deref();
        for (index, rule) in self.rules.iter().enumerate() {
            let applies = if subscribe { rule.subscribe } else { rule.publish };
            if applies
                && rule.who.admits(username)
                && rule.pattern.check(client, subscribe, subject)
            {
                if !rule.allow {
                    tracing::debug!(
                        client_id = &*client.client_id,
                        subject,
                        rule = index,
                        "acl: denied by rule"
                    );
                }
                return verdict(rule.allow);
            }
        }
        verdict(self.default_allow)
    }
}

fn verdict(allow: bool) -> Outcome {
    if allow {
        Outcome::Continue
    } else {
        Outcome::Stop(Decision::Deny(ReasonCode::NOT_AUTHORIZED))
    }
}

impl Rule {
    fn compile(config: &RuleConfig) -> Result<Rule, String> {
        let who = match (&config.users, config.anonymous) {
            (Some(_), true) => {
                return Err("`users` and `anonymous = true` exclude each other".to_owned());
            }
            (Some(users), false) if users.is_empty() => {
                return Err("`users` is empty; leave it out to apply the rule to everyone".into());
            }
            (Some(users), false) => Who::Users(users.iter().map(|u| u.as_str().into()).collect()),
            (None, true) => Who::Anonymous,
            (None, false) => Who::Everyone,
        };
        let (publish, subscribe) = match config.action {
            RuleAction::Publish => (true, false),
            RuleAction::Subscribe => (false, true),
            RuleAction::All => (true, true),
        };
        Ok(Rule {
            allow: config.permission == Permission::Allow,
            publish,
            subscribe,
            who,
            pattern: Pattern::compile(&config.topic)?,
        })
    }
}

impl Who {
    fn admits(&self, username: Option<&str>) -> bool {
        match (self, username) {
            (Who::Everyone, _) => true,
            (Who::Anonymous, name) => name.is_none(),
            (Who::Users(users), Some(name)) => users.contains(name),
            (Who::Users(_), None) => false,
        }
    }
}

impl Pattern {
    fn compile(pattern: &str) -> Result<Pattern, String> {
        let parts = split_placeholders(pattern);
        // Validate with a neutral stand-in for each placeholder: a value that passes `safe`
        // can only ever replace it by plain level text, so this validates every substitution.
        let probe: String = parts
            .iter()
            .map(|part| match part {
                Part::Text(text) => text,
                Part::Username | Part::ClientId => "x",
            })
            .collect();
        if !topic::valid_topic_filter(&probe) {
            return Err(format!("`{pattern}` is not a valid topic filter"));
        }
        if probe.starts_with("$share/") || probe == "$share" {
            return Err(format!(
                "`{pattern}`: subscriptions are checked without their `$share/<group>/` \
                 prefix, so a rule cannot name one"
            ));
        }
        if parts.iter().all(|part| matches!(part, Part::Text(_))) {
            return Ok(Pattern::Fixed(pattern.into()));
        }
        let literal_len = parts
            .iter()
            .map(|part| match part {
                Part::Text(text) => text.len(),
                Part::Username | Part::ClientId => 0,
            })
            .sum();
        Ok(Pattern::Template { parts: parts.into_boxed_slice(), literal_len })
    }

    /// Whether the rule's pattern takes `subject` (a topic for publish, a filter for
    /// subscribe) for this client.
    fn check(&self, client: &ClientInfo, subscribe: bool, subject: &str) -> bool {
        match self {
            Pattern::Fixed(pattern) => test(pattern, subscribe, subject),
            Pattern::Template { parts, literal_len } => {
                match substitute(parts, *literal_len, client) {
                    Some(pattern) => test(&pattern, subscribe, subject),
                    None => false,
                }
            }
        }
    }
}

fn test(pattern: &str, subscribe: bool, subject: &str) -> bool {
    if subscribe {
        // `topic::covers` has no [MQTT-4.7.2-1] rule (`covers("#", "$SYS/#")` holds), so it
        // is applied here as `topic::matches` does: a pattern starting with a wildcard does
        // not reach `$` topics, for subscriptions either.
        !(subject.starts_with('$') && pattern.starts_with(['+', '#']))
            && topic::covers(pattern, subject)
    } else {
        topic::matches(pattern, subject)
    }
}

/// Splits a pattern into text and `%u` / `%c` placeholders; any other `%` is literal text.
fn split_placeholders(pattern: &str) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut rest = pattern;
    let mut text = String::new();
    while let Some(at) = rest.find('%') {
        let (before, from) = rest.split_at(at);
        text.push_str(before);
        let placeholder = match from.as_bytes().get(1) {
            Some(b'u') => Some(Part::Username),
            Some(b'c') => Some(Part::ClientId),
            _ => None,
        };
        match placeholder {
            Some(part) => {
                if !text.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut text).into()));
                }
                parts.push(part);
                rest = &from[2..];
            }
            None => {
                text.push('%');
                rest = &from[1..];
            }
        }
    }
    text.push_str(rest);
    if !text.is_empty() {
        parts.push(Part::Text(text.into()));
    }
    parts
}

/// The pattern with this client's values filled in, or `None` when a value is missing or
/// could change the pattern's shape (see the module documentation).
fn substitute(parts: &[Part], literal_len: usize, client: &ClientInfo) -> Option<String> {
    if let Some(first @ (Part::Username | Part::ClientId)) = parts.first()
        && value(first, client)?.starts_with('$')
    {
        return None;
    }
    let mut len = literal_len;
    for part in parts {
        if !matches!(part, Part::Text(_)) {
            len += value(part, client)?.len();
        }
    }
    let mut pattern = String::with_capacity(len);
    for part in parts {
        pattern.push_str(value(part, client)?);
    }
    Some(pattern)
}

/// What a part stands for with this client: `None` for a missing or unsafe value.
fn value<'a>(part: &'a Part, client: &'a ClientInfo) -> Option<&'a str> {
    match part {
        Part::Text(text) => Some(text),
        Part::Username => client.username.as_deref().filter(|v| safe(v)),
        Part::ClientId => Some(&*client.client_id).filter(|v| safe(v)),
    }
}

/// A value that can only ever stand for plain text inside one topic level.
fn safe(value: &str) -> bool {
    !value.is_empty() && !value.contains(['/', '+', '#', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_placeholders() {
        assert_eq!(
            split_placeholders("devices/%u/%c-x/100%"),
            vec![
                Part::Text("devices/".into()),
                Part::Username,
                Part::Text("/".into()),
                Part::ClientId,
                Part::Text("-x/100%".into()),
            ]
        );
        assert_eq!(split_placeholders("%%u"), vec![Part::Text("%".into()), Part::Username]);
        assert_eq!(split_placeholders("a/%x"), vec![Part::Text("a/%x".into())]);
        assert_eq!(split_placeholders("%u"), vec![Part::Username]);
    }

    #[test]
    fn fixed_patterns_stay_fixed() {
        assert!(matches!(Pattern::compile("a/+/#"), Ok(Pattern::Fixed(_))));
        assert!(matches!(Pattern::compile("a/%u/#"), Ok(Pattern::Template { .. })));
        assert!(Pattern::compile("a/%u#").is_err());
        assert!(Pattern::compile("a/#/b").is_err());
        assert!(Pattern::compile("").is_err());
        assert!(Pattern::compile("$share/g/a").is_err());
    }

    #[test]
    fn safe_values() {
        for bad in ["", "a/b", "+", "#", "a#", "\0"] {
            assert!(!safe(bad), "{bad:?}");
        }
        assert!(safe("alice"));
        assert!(safe("$x"));
    }
}
