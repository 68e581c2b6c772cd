//! `acl`: topic access control for Seed, as an ordered list of allow/deny rules.
//!
//! Configured under `[plugins.acl]` in `seed.toml`:
//!
//! ```toml
//! [plugins.acl]
//! default = "deny"            # when no rule matches
//! [[plugins.acl.rules]]
//! permission = "allow"        # allow | deny
//! action = "subscribe"        # publish | subscribe | all (a will counts as a publish)
//! topic = "devices/%u/#"      # filter pattern; %u = user name, %c = client id
//! users = ["alice"]           # optional: only these user names
//! ```
//!
//! The shape follows Mosquitto's ACL file and EMQX's file authorizer, which operators know:
//! rules are tried in order and the first match decides. An allow answers
//! [`Outcome::Continue`] rather than a final allow, so a plugin later in the chain can still
//! refuse; a deny is final. The rules are compiled once (`rules.rs`) and kept behind an
//! `RwLock<Arc<_>>`: `authorize` clones the `Arc` and runs lock-free, and `reload` swaps a
//! fully built rule set in one step, so a bad reload leaves the old rules untouched.

mod rules;

use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;
use serde::Deserialize;

use seed_broker::hooks::{
    Action, ClientInfo, Hook, HookSettings, Outcome, Plugin, PluginContext, PluginError,
};
use seed_broker::toml;

use rules::Rules;

/// The name this plugin is configured under (`[plugins.acl]`).
pub const NAME: &str = "acl";

/// The plugin's own settings (`[plugins.acl]`, without the common hook settings).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The answer when no rule matches: `"allow"` or `"deny"`. Defaults to `"deny"`, so a
    /// forgotten rule fails closed.
    #[serde(default)]
    pub default: Permission,
    /// The rules, tried in order; the first one that matches decides.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

/// Whether a rule (or the default) lets a client through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    Allow,
    #[default]
    Deny,
}

/// What a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    /// PUBLISH, and the will message of a CONNECT.
    Publish,
    /// SUBSCRIBE (the filter without any `$share/<group>/` prefix).
    Subscribe,
    /// Both.
    All,
}

/// One `[[plugins.acl.rules]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// `"allow"` or `"deny"`.
    pub permission: Permission,
    /// `"publish"`, `"subscribe"` or `"all"`.
    pub action: RuleAction,
    /// An MQTT topic filter. `%u` stands for the client's user name and `%c` for its client
    /// id; a rule whose placeholder value is missing, empty, contains `/`, `+`, `#`, or
    /// starts with `$` where the pattern starts with the placeholder does not match.
    /// A publish matches when the topic matches the filter; a subscription matches when every
    /// topic its filter can match is matched by this one (so `#` is not granted by `a/#`).
    pub topic: String,
    /// Only for clients with one of these user names; absent means everyone.
    #[serde(default)]
    pub users: Option<Vec<String>>,
    /// Only for clients without a user name. Cannot be combined with `users`.
    #[serde(default)]
    pub anonymous: bool,
}

impl Config {
    /// Parses the plugin's table. Common hook settings (`priority`, `deadline_ms`, ...) are
    /// ignored if present, so both the factory's and a full `[plugins.acl]` table work.
    pub fn from_table(table: toml::Table) -> Result<Config, PluginError> {
        let (_, own) = HookSettings::split(table)?;
        own.try_into().map_err(|e| PluginError(format!("acl: {e}")))
    }
}

/// The ACL plugin; see the crate documentation.
#[derive(Debug)]
pub struct AclPlugin {
    rules: RwLock<Arc<Rules>>,
}

/// Builds the plugin from a parsed configuration, validating every rule.
pub fn build(config: Config) -> Result<AclPlugin, PluginError> {
    Ok(AclPlugin { rules: RwLock::new(Arc::new(Rules::compile(&config)?)) })
}

/// The [`seed_broker::hooks::PluginFactory`] for `[plugins.acl]`.
pub fn factory(
    table: toml::Table,
    _context: &mut PluginContext,
) -> Result<Arc<dyn Plugin>, PluginError> {
    Ok(Arc::new(build(Config::from_table(table)?)?))
}

impl AclPlugin {
    fn current(&self) -> Arc<Rules> {
        // Nothing panics while the lock is held, but a poisoned lock still holds valid rules.
        self.rules.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

#[async_trait]
impl Plugin for AclPlugin {
    fn name(&self) -> &'static str {
        NAME
    }

    fn hooks(&self) -> &'static [Hook] {
        &[Hook::Authorize]
    }

    fn reload(&self, config: toml::Table) -> Result<(), PluginError> {
        let rules = Rules::compile(&Config::from_table(config)?)?;
        *self.rules.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(rules);
        Ok(())
    }

    async fn authorize(
        &self,
        client: &ClientInfo,
        action: &Action<'_>,
    ) -> Result<Outcome, PluginError> {
        Ok(self.current().decide(client, action))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The factory as the registry calls it, with a fresh context.
    fn factory(table: toml::Table) -> Result<Arc<dyn Plugin>, PluginError> {
        super::factory(table, &mut PluginContext::default())
    }
    use seed_broker::codec::{Protocol, QoS, ReasonCode};
    use seed_broker::hooks::Decision;

    const DENY: Outcome = Outcome::Stop(Decision::Deny(ReasonCode::NOT_AUTHORIZED));
    const ALLOW: Outcome = Outcome::Continue;

    fn client(client_id: &str, username: Option<&str>) -> ClientInfo {
        ClientInfo {
            client_id: client_id.into(),
            username: username.map(Into::into),
            protocol: Protocol::V5,
            peer: "127.0.0.1:1".parse().unwrap(),
            listener: "tcp",
        }
    }

    fn plugin(config: &str) -> Arc<dyn Plugin> {
        factory(config.parse::<toml::Table>().unwrap()).unwrap()
    }

    async fn publish(plugin: &dyn Plugin, client: &ClientInfo, topic: &str) -> Outcome {
        let action = Action::Publish { topic, qos: QoS::AtMostOnce, retain: false };
        plugin.authorize(client, &action).await.unwrap()
    }

    async fn will(plugin: &dyn Plugin, client: &ClientInfo, topic: &str) -> Outcome {
        let action = Action::Will { topic, qos: QoS::AtMostOnce, retain: false };
        plugin.authorize(client, &action).await.unwrap()
    }

    async fn subscribe(plugin: &dyn Plugin, client: &ClientInfo, filter: &str) -> Outcome {
        let action = Action::Subscribe { filter, qos: QoS::AtMostOnce };
        plugin.authorize(client, &action).await.unwrap()
    }

    #[tokio::test]
    async fn name_and_hooks() {
        let _: seed_broker::hooks::PluginFactory = super::factory;
        let acl = plugin("");
        assert_eq!(acl.name(), "acl");
        assert_eq!(acl.hooks(), &[Hook::Authorize]);
    }

    #[tokio::test]
    async fn default_is_deny() {
        let acl = plugin("");
        let alice = client("c1", Some("alice"));
        assert_eq!(publish(&*acl, &alice, "a").await, DENY);
        assert_eq!(subscribe(&*acl, &alice, "a").await, DENY);
    }

    #[tokio::test]
    async fn default_allow_and_deny() {
        let alice = client("c1", Some("alice"));
        let acl = plugin(r#"default = "allow""#);
        assert_eq!(publish(&*acl, &alice, "a").await, ALLOW);
        assert_eq!(subscribe(&*acl, &alice, "#").await, ALLOW);
        let acl = plugin(r#"default = "deny""#);
        assert_eq!(publish(&*acl, &alice, "a").await, DENY);
        assert_eq!(subscribe(&*acl, &alice, "#").await, DENY);
    }

    #[tokio::test]
    async fn action_kinds() {
        let acl = plugin(
            r#"
            [[rules]]
            permission = "allow"
            action = "publish"
            topic = "pub/#"
            [[rules]]
            permission = "allow"
            action = "subscribe"
            topic = "sub/#"
            [[rules]]
            permission = "allow"
            action = "all"
            topic = "both/#"
            "#,
        );
        let c = client("c1", Some("alice"));
        assert_eq!(publish(&*acl, &c, "pub/x").await, ALLOW);
        assert_eq!(will(&*acl, &c, "pub/x").await, ALLOW);
        assert_eq!(subscribe(&*acl, &c, "pub/x").await, DENY);
        assert_eq!(publish(&*acl, &c, "sub/x").await, DENY);
        assert_eq!(will(&*acl, &c, "sub/x").await, DENY);
        assert_eq!(subscribe(&*acl, &c, "sub/x").await, ALLOW);
        assert_eq!(subscribe(&*acl, &c, "sub/#").await, ALLOW);
        assert_eq!(publish(&*acl, &c, "both/x").await, ALLOW);
        assert_eq!(will(&*acl, &c, "both/x").await, ALLOW);
        assert_eq!(subscribe(&*acl, &c, "both/+").await, ALLOW);
        assert_eq!(publish(&*acl, &c, "other").await, DENY);
    }

    #[tokio::test]
    async fn deny_rules_and_first_match() {
        let acl = plugin(
            r#"
            default = "allow"
            [[rules]]
            permission = "allow"
            action = "all"
            topic = "secret/open"
            [[rules]]
            permission = "deny"
            action = "all"
            topic = "secret/#"
            [[rules]]
            permission = "allow"
            action = "all"
            topic = "secret/closed"
            "#,
        );
        let c = client("c1", Some("alice"));
        assert_eq!(publish(&*acl, &c, "secret/open").await, ALLOW);
        assert_eq!(publish(&*acl, &c, "secret/closed").await, DENY);
        assert_eq!(publish(&*acl, &c, "secret").await, DENY);
        assert_eq!(subscribe(&*acl, &c, "secret/#").await, DENY);
        assert_eq!(subscribe(&*acl, &c, "secret/open").await, ALLOW);
        assert_eq!(publish(&*acl, &c, "public").await, ALLOW);
        // A subscription the deny rule does not cover falls through to the default, even when
        // it overlaps: `covers` is about the whole filter.
        assert_eq!(subscribe(&*acl, &c, "#").await, ALLOW);
    }

    #[tokio::test]
    async fn users_and_anonymous() {
        let acl = plugin(
            r#"
            [[rules]]
            permission = "allow"
            action = "all"
            topic = "staff/#"
            users = ["alice", "bob"]
            [[rules]]
            permission = "allow"
            action = "all"
            topic = "lobby/#"
            anonymous = true
            [[rules]]
            permission = "allow"
            action = "publish"
            topic = "everyone"
            "#,
        );
        let alice = client("c1", Some("alice"));
        let carol = client("c2", Some("carol"));
        let anon = client("c3", None);
        assert_eq!(publish(&*acl, &alice, "staff/x").await, ALLOW);
        assert_eq!(publish(&*acl, &carol, "staff/x").await, DENY);
        assert_eq!(publish(&*acl, &anon, "staff/x").await, DENY);
        assert_eq!(publish(&*acl, &anon, "lobby/x").await, ALLOW);
        assert_eq!(publish(&*acl, &alice, "lobby/x").await, DENY);
        for c in [&alice, &carol, &anon] {
            assert_eq!(publish(&*acl, c, "everyone").await, ALLOW);
        }
    }

    #[tokio::test]
    async fn placeholders() {
        let acl = plugin(
            r#"
            [[rules]]
            permission = "allow"
            action = "all"
            topic = "devices/%u/#"
            [[rules]]
            permission = "allow"
            action = "publish"
            topic = "clients/%c/status"
            [[rules]]
            permission = "allow"
            action = "subscribe"
            topic = "mix/%u-%c"
            "#,
        );
        let alice = client("phone", Some("alice"));
        assert_eq!(publish(&*acl, &alice, "devices/alice/temp").await, ALLOW);
        assert_eq!(publish(&*acl, &alice, "devices/alice").await, ALLOW);
        assert_eq!(subscribe(&*acl, &alice, "devices/alice/#").await, ALLOW);
        assert_eq!(publish(&*acl, &alice, "devices/bob/temp").await, DENY);
        assert_eq!(subscribe(&*acl, &alice, "devices/+/temp").await, DENY);
        assert_eq!(publish(&*acl, &alice, "clients/phone/status").await, ALLOW);
        assert_eq!(publish(&*acl, &alice, "clients/other/status").await, DENY);
        assert_eq!(subscribe(&*acl, &alice, "mix/alice-phone").await, ALLOW);
        assert_eq!(subscribe(&*acl, &alice, "mix/alice-other").await, DENY);
        // %u with an anonymous client: the rule does not match.
        let anon = client("phone", None);
        assert_eq!(publish(&*acl, &anon, "devices//x").await, DENY);
        assert_eq!(publish(&*acl, &anon, "clients/phone/status").await, ALLOW);
    }

    #[tokio::test]
    async fn placeholder_values_cannot_widen_a_rule() {
        let acl = plugin(
            r#"
            [[rules]]
            permission = "allow"
            action = "all"
            topic = "devices/%u/#"
            [[rules]]
            permission = "allow"
            action = "all"
            topic = "%c/#"
            "#,
        );
        for name in ["a/#", "+", "#", "a/b", "a+b", ""] {
            let evil = client("cid", Some(name));
            assert_eq!(publish(&*acl, &evil, "devices/bob/x").await, DENY, "{name:?}");
            assert_eq!(subscribe(&*acl, &evil, "devices/#").await, DENY, "{name:?}");
            assert_eq!(subscribe(&*acl, &evil, "devices/+/x").await, DENY, "{name:?}");
            assert_eq!(subscribe(&*acl, &evil, "#").await, DENY, "{name:?}");
            assert_eq!(publish(&*acl, &evil, &format!("devices/{name}/x")).await, DENY);
        }
        for id in ["#", "+", "a/b", "$SYS"] {
            let evil = client(id, None);
            assert_eq!(publish(&*acl, &evil, "anything/x").await, DENY, "{id:?}");
            assert_eq!(subscribe(&*acl, &evil, "#").await, DENY, "{id:?}");
            assert_eq!(publish(&*acl, &evil, "$SYS/x").await, DENY, "{id:?}");
        }
        // A benign value still works after the refused ones.
        assert_eq!(publish(&*acl, &client("cid", Some("bob")), "devices/bob/x").await, ALLOW);
        assert_eq!(publish(&*acl, &client("cid", None), "cid/x").await, ALLOW);
    }

    #[tokio::test]
    async fn subscribe_must_be_covered() {
        let acl = plugin(
            r#"
            [[rules]]
            permission = "allow"
            action = "all"
            topic = "inbox/%u"
            "#,
        );
        let alice = client("c1", Some("alice"));
        assert_eq!(subscribe(&*acl, &alice, "inbox/alice").await, ALLOW);
        assert_eq!(subscribe(&*acl, &alice, "#").await, DENY);
        assert_eq!(subscribe(&*acl, &alice, "inbox/+").await, DENY);
        assert_eq!(subscribe(&*acl, &alice, "inbox/#").await, DENY);
        assert_eq!(subscribe(&*acl, &alice, "+/alice").await, DENY);
        assert_eq!(subscribe(&*acl, &alice, "inbox/alice/#").await, DENY);
    }

    #[tokio::test]
    async fn wildcard_patterns_do_not_reach_dollar_topics() {
        let acl = plugin(
            r##"
            [[rules]]
            permission = "allow"
            action = "all"
            topic = "#"
            [[rules]]
            permission = "allow"
            action = "subscribe"
            topic = "$SYS/broker/+"
            "##,
        );
        let c = client("c1", Some("alice"));
        assert_eq!(subscribe(&*acl, &c, "a/#").await, ALLOW);
        assert_eq!(subscribe(&*acl, &c, "$SYS/#").await, DENY);
        assert_eq!(subscribe(&*acl, &c, "$SYS/broker/#").await, DENY);
        assert_eq!(subscribe(&*acl, &c, "$SYS/broker/load").await, ALLOW);
        assert_eq!(publish(&*acl, &c, "$SYS/x").await, DENY);
    }

    #[tokio::test]
    async fn bad_configs_are_rejected() {
        let cases = [
            (r#"default = "maybe""#, "default"),
            ("surprise = 1", "surprise"),
            ("[[rules]]\npermission = \"allow\"\naction = \"all\"\ntopic = \"a/#/b\"", "rules[0]"),
            (
                "[[rules]]\npermission = \"allow\"\naction = \"all\"\ntopic = \"ok\"\n\
                 [[rules]]\npermission = \"deny\"\naction = \"all\"\ntopic = \"x%u+\"",
                "rules[1]",
            ),
            ("[[rules]]\npermission = \"allow\"\naction = \"all\"\ntopic = \"\"", "rules[0]"),
            ("[[rules]]\npermission = \"allow\"\naction = \"read\"\ntopic = \"a\"", "read"),
            ("[[rules]]\npermission = \"allow\"\naction = \"all\"\ntopic = \"a\"\nx = 1", "x"),
            (
                "[[rules]]\npermission = \"allow\"\naction = \"all\"\ntopic = \"a\"\n\
                 users = [\"a\"]\nanonymous = true",
                "rules[0]",
            ),
            (
                "[[rules]]\npermission = \"allow\"\naction = \"all\"\ntopic = \"a\"\nusers = []",
                "rules[0]",
            ),
            (
                "[[rules]]\npermission = \"allow\"\naction = \"all\"\ntopic = \"$share/g/a\"",
                "rules[0]",
            ),
        ];
        for (config, needle) in cases {
            let error = factory(config.parse::<toml::Table>().unwrap()).err().expect(config);
            assert!(error.0.contains(needle), "{config}: {error}");
        }
    }

    #[tokio::test]
    async fn common_settings_are_ignored() {
        let acl = plugin("priority = 10\ndeadline_ms = 50\ndefault = \"allow\"");
        assert_eq!(publish(&*acl, &client("c", None), "a").await, ALLOW);
    }

    #[tokio::test]
    async fn reload_swaps_rules_and_bad_reload_keeps_them() {
        let acl = plugin("[[rules]]\npermission = \"allow\"\naction = \"all\"\ntopic = \"old/#\"");
        let c = client("c1", Some("alice"));
        assert_eq!(publish(&*acl, &c, "old/x").await, ALLOW);
        assert_eq!(publish(&*acl, &c, "new/x").await, DENY);

        let new = "[[rules]]\npermission = \"allow\"\naction = \"all\"\ntopic = \"new/#\"";
        acl.reload(new.parse().unwrap()).unwrap();
        assert_eq!(publish(&*acl, &c, "old/x").await, DENY);
        assert_eq!(publish(&*acl, &c, "new/x").await, ALLOW);

        let bad = "[[rules]]\npermission = \"allow\"\naction = \"all\"\ntopic = \"ok/#\"\n\
                   [[rules]]\npermission = \"allow\"\naction = \"all\"\ntopic = \"#/bad\"";
        let error = acl.reload(bad.parse().unwrap()).unwrap_err();
        assert!(error.0.contains("rules[1]"), "{error}");
        assert_eq!(publish(&*acl, &c, "new/x").await, ALLOW);
        assert_eq!(publish(&*acl, &c, "ok/x").await, DENY);

        let error = acl.reload(r#"default = 3"#.parse().unwrap()).unwrap_err();
        assert!(error.0.contains("default"), "{error}");
        assert_eq!(publish(&*acl, &c, "new/x").await, ALLOW);
    }
}
