//! The router: a trie of topic filters that finds, for a topic, every session subscribed to it.
//!
//! One level of the topic per trie level, with `+` and `#` as ordinary children, so a lookup
//! walks only the branches the topic can match: its cost grows with the topic's depth and the
//! number of matching subscriptions, not with the number of subscriptions held. Shared
//! subscriptions (`$share/{group}/{filter}`) hang off the same nodes; each publish picks one
//! member per group, round-robin, preferring members that are connected.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use crate::codec::SubscriptionOptions;
use crate::session::SessionRef;

/// One session's subscription to one filter.
#[derive(Clone)]
pub struct Subscriber {
    pub session: SessionRef,
    pub options: SubscriptionOptions,
    pub id: Option<u32>,
}

#[derive(Default)]
struct Group {
    members: Vec<Subscriber>,
    next: AtomicUsize,
}

#[derive(Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    subscribers: Vec<Subscriber>,
    groups: Vec<(Box<str>, Group)>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.subscribers.is_empty() && self.groups.is_empty()
    }

    fn collect(&self, out: &mut Vec<Subscriber>) {
        out.extend(self.subscribers.iter().cloned());
        for (_, group) in &self.groups {
            if let Some(member) = group.pick() {
                out.push(member.clone());
            }
        }
    }
}

impl Group {
    fn pick(&self) -> Option<&Subscriber> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Relaxed);
        (0..n)
            .map(|i| &self.members[(start + i) % n])
            .find(|m| m.session.is_online())
            .or_else(|| self.members.get(start % n))
    }
}

#[derive(Default)]
pub struct Router {
    root: Node,
    count: usize,
}

impl Router {
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Adds or replaces a session's subscription; returns whether it already existed.
    pub fn subscribe(&mut self, filter: &str, group: Option<&str>, subscriber: Subscriber) -> bool {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = node.children.entry(level.into()).or_default();
        }
        let list = match group {
            None => &mut node.subscribers,
            Some(name) => {
                let i = match node.groups.iter().position(|(g, _)| &**g == name) {
                    Some(i) => i,
                    None => {
                        node.groups.push((name.into(), Group::default()));
                        node.groups.len() - 1
                    }
                };
                &mut node.groups[i].1.members
            }
        };
        let client_id = subscriber.session.client_id();
        match list.iter_mut().find(|s| s.session.client_id() == client_id) {
            Some(existing) => {
                *existing = subscriber;
                true
            }
            None => {
                list.push(subscriber);
                self.count += 1;
                false
            }
        }
    }

    /// Removes a session's subscription; returns whether it existed.
    pub fn unsubscribe(&mut self, filter: &str, group: Option<&str>, client_id: &str) -> bool {
        let levels: Vec<&str> = filter.split('/').collect();
        let removed = remove(&mut self.root, &levels, group, client_id);
        if removed {
            self.count -= 1;
        }
        removed
    }

    /// Every subscription matching `topic` (one member per shared group).
    pub fn matches(&self, topic: &str, out: &mut Vec<Subscriber>) {
        let levels: Vec<&str> = topic.split('/').collect();
        let dollar = topic.starts_with('$');
        walk(&self.root, &levels, !dollar, out);
    }
}

fn walk(node: &Node, levels: &[&str], wildcards: bool, out: &mut Vec<Subscriber>) {
    if wildcards && let Some(hash) = node.children.get("#") {
        hash.collect(out);
    }
    let Some((level, rest)) = levels.split_first() else {
        node.collect(out);
        return;
    };
    if let Some(child) = node.children.get(*level) {
        walk(child, rest, true, out);
    }
    if wildcards && let Some(plus) = node.children.get("+") {
        walk(plus, rest, true, out);
    }
}

fn remove(node: &mut Node, levels: &[&str], group: Option<&str>, client_id: &str) -> bool {
    match levels.split_first() {
        None => match group {
            None => take(&mut node.subscribers, client_id),
            Some(name) => match node.groups.iter().position(|(g, _)| &**g == name) {
                Some(i) => {
                    let removed = take(&mut node.groups[i].1.members, client_id);
                    if node.groups[i].1.members.is_empty() {
                        node.groups.swap_remove(i);
                    }
                    removed
                }
                None => false,
            },
        },
        Some((level, rest)) => {
            let Some(child) = node.children.get_mut(*level) else { return false };
            let removed = remove(child, rest, group, client_id);
            if child.is_empty() {
                node.children.remove(*level);
            }
            removed
        }
    }
}

fn take(list: &mut Vec<Subscriber>, client_id: &str) -> bool {
    match list.iter().position(|s| &**s.session.client_id() == client_id) {
        Some(i) => {
            list.swap_remove(i);
            true
        }
        None => false,
    }
}

/// Collapses several matching subscriptions of one session into one delivery: the highest
/// QoS, every subscription identifier ([MQTT-3.3.4-3], [MQTT-3.3.4-5]).
pub fn merge_by_session(matches: Vec<Subscriber>) -> Vec<(Subscriber, Vec<u32>)> {
    let mut merged: Vec<(Subscriber, Vec<u32>)> = Vec::with_capacity(matches.len());
    let mut index: HashMap<*const (), usize> = HashMap::new();
    for sub in matches {
        let key = Arc::as_ptr(&sub.session) as *const ();
        let slot = if merged.len() < 8 {
            merged.iter().position(|(s, _)| Arc::as_ptr(&s.session) as *const () == key)
        } else {
            if index.is_empty() {
                for (i, (s, _)) in merged.iter().enumerate() {
                    index.insert(Arc::as_ptr(&s.session) as *const (), i);
                }
            }
            index.get(&key).copied()
        };
        match slot {
            Some(i) => {
                let (existing, ids) = &mut merged[i];
                existing.options.qos = existing.options.qos.max(sub.options.qos);
                existing.options.retain_as_published |= sub.options.retain_as_published;
                existing.options.no_local &= sub.options.no_local;
                ids.extend(sub.id);
            }
            None => {
                if !index.is_empty() {
                    index.insert(key, merged.len());
                }
                let ids = sub.id.into_iter().collect();
                merged.push((sub, ids));
            }
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::SessionHandle;

    fn sub(client: &str) -> Subscriber {
        Subscriber {
            session: SessionHandle::new_ref(client.into(), 0),
            options: SubscriptionOptions::default(),
            id: None,
        }
    }

    fn clients(router: &Router, topic: &str) -> Vec<String> {
        let mut out = Vec::new();
        router.matches(topic, &mut out);
        let mut ids: Vec<String> = out.iter().map(|s| s.session.client_id().to_string()).collect();
        ids.sort();
        ids
    }

    #[test]
    fn wildcards_and_dollar_topics() {
        let mut router = Router::default();
        router.subscribe("a/b", None, sub("exact"));
        router.subscribe("a/+", None, sub("plus"));
        router.subscribe("a/#", None, sub("hash"));
        router.subscribe("#", None, sub("all"));
        router.subscribe("$SYS/#", None, sub("sys"));
        assert_eq!(clients(&router, "a/b"), ["all", "exact", "hash", "plus"]);
        assert_eq!(clients(&router, "a"), ["all", "hash"]);
        assert_eq!(clients(&router, "a/b/c"), ["all", "hash"]);
        assert_eq!(clients(&router, "$SYS/x"), ["sys"]);
        assert_eq!(router.len(), 5);
        assert!(router.unsubscribe("a/+", None, "plus"));
        assert!(!router.unsubscribe("a/+", None, "plus"));
        assert_eq!(clients(&router, "a/b"), ["all", "exact", "hash"]);
        assert_eq!(router.len(), 4);
    }

    #[test]
    fn resubscribing_replaces() {
        let mut router = Router::default();
        assert!(!router.subscribe("t", None, sub("c")));
        assert!(router.subscribe("t", None, sub("c")));
        assert_eq!(clients(&router, "t"), ["c"]);
    }

    #[test]
    fn shared_groups_take_turns() {
        let mut router = Router::default();
        router.subscribe("jobs/+", Some("g"), sub("w1"));
        router.subscribe("jobs/+", Some("g"), sub("w2"));
        router.subscribe("jobs/+", None, sub("audit"));
        let mut seen = Vec::new();
        for _ in 0..4 {
            let got = clients(&router, "jobs/1");
            assert_eq!(got.len(), 2);
            assert!(got.contains(&"audit".to_string()));
            seen.extend(got.into_iter().filter(|c| c != "audit"));
        }
        assert_eq!(seen.iter().filter(|c| *c == "w1").count(), 2);
        assert_eq!(seen.iter().filter(|c| *c == "w2").count(), 2);
        assert!(router.unsubscribe("jobs/+", Some("g"), "w1"));
        assert_eq!(clients(&router, "jobs/1"), ["audit", "w2"]);
    }

    #[test]
    fn merge_keeps_highest_qos_and_all_ids() {
        let a = sub("a");
        let mut a2 = a.clone();
        a2.options.qos = crate::codec::QoS::ExactlyOnce;
        a2.id = Some(2);
        let mut a1 = a;
        a1.id = Some(1);
        let merged = merge_by_session(vec![a1, sub("b"), a2]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].0.options.qos, crate::codec::QoS::ExactlyOnce);
        assert_eq!(merged[0].1, [1, 2]);
    }
}
