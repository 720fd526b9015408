//! A complete rule set as the kernel will see it: one entry per name, keyed
//! by the shared name hash, with allow and block merged per name.

use std::collections::{HashMap, hash_map::Entry as MapEntry};

use maps::{Action, Rule, rule::flags};
use thiserror::Error;

use crate::{
    blocklist::{Entry, Origin, Scope},
    names::Domain,
};

/// A rule ready for the kernel, with where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledRule {
    pub domain: Domain,
    pub rule: Rule,
    pub origin: Origin,
}

/// Two different names hashed to one key (odds in `maps::name`); the later
/// one is left out rather than merged into the wrong rule.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{origin}: {skipped} has the same 64-bit key as {kept}; {skipped} was left out")]
pub struct Collision {
    pub kept: Domain,
    pub skipped: Domain,
    pub origin: Origin,
}

/// Rules keyed by name hash under one seed.
#[derive(Clone, Debug)]
pub struct RuleSet {
    seed: u64,
    rules: HashMap<u64, CompiledRule>,
}

impl RuleSet {
    pub fn new(seed: u64) -> Self {
        Self { seed, rules: HashMap::new() }
    }

    pub fn with_capacity(seed: u64, n: usize) -> Self {
        Self { seed, rules: HashMap::with_capacity(n) }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Adds a list entry, merging it with an existing rule for the same name:
    /// allow and block bits accumulate (allow wins at equal specificity in
    /// the kernel), and the first explicit action for each scope (the name
    /// itself, the names below it) is kept.
    pub fn add(&mut self, e: &Entry) -> Result<(), Collision> {
        let bits = match (e.allow, e.scope) {
            (false, Scope::NameAndSubdomains) => flags::BLOCK_SELF | flags::BLOCK_SUBDOMAINS,
            (false, Scope::SubdomainsOnly) => flags::BLOCK_SUBDOMAINS,
            (true, Scope::NameAndSubdomains) => flags::ALLOW_SELF | flags::ALLOW_SUBDOMAINS,
            (true, Scope::SubdomainsOnly) => flags::ALLOW_SUBDOMAINS,
        };
        let key = e.domain.key(self.seed);
        match self.rules.entry(key) {
            MapEntry::Occupied(mut o) => {
                let r = o.get_mut();
                if r.domain != e.domain {
                    return Err(Collision {
                        kept: r.domain.clone(),
                        skipped: e.domain.clone(),
                        origin: e.origin.clone(),
                    });
                }
                r.rule.flags |= bits;
                if !e.allow {
                    r.rule.action = merge_actions(r.rule.action, e.scope, e.action);
                }
            }
            MapEntry::Vacant(v) => {
                v.insert(CompiledRule {
                    domain: e.domain.clone(),
                    rule: Rule {
                        flags: bits,
                        action: if e.allow { 0 } else { merge_actions(0, e.scope, e.action) },
                        labels: e.domain.labels() as u8,
                        pad: 0,
                        hits: 0,
                    },
                    origin: e.origin.clone(),
                });
            }
        }
        Ok(())
    }

    /// Adds many entries; returns the collisions (normally none).
    pub fn extend<'a>(&mut self, entries: impl IntoIterator<Item = &'a Entry>) -> Vec<Collision> {
        entries.into_iter().filter_map(|e| self.add(e).err()).collect()
    }

    /// Depth mask for [`maps::Settings::depth_mask`]: which label counts have rules.
    pub fn depth_mask(&self) -> [u64; 2] {
        let mut s = maps::Settings::default();
        for r in self.rules.values() {
            s.set_depth(r.rule.labels as usize);
        }
        s.depth_mask
    }

    /// The filter bits of this set's keys, for a filter of `words` words
    /// (a power of two): see `maps::filter`.
    pub fn filter_bits(&self, words: usize) -> Vec<u64> {
        let mut bits = vec![0u64; words];
        let mask = words as u64 - 1;
        for key in self.rules.keys() {
            let (w, b) = maps::filter::position(*key, mask);
            bits[w as usize] |= b;
        }
        bits
    }

    pub fn get(&self, key: u64) -> Option<&CompiledRule> {
        self.rules.get(&key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, &CompiledRule)> {
        self.rules.iter().map(|(k, v)| (*k, v))
    }

    /// Keys and values as parallel arrays, for batch updates.
    pub fn to_arrays(&self) -> (Vec<u64>, Vec<Rule>) {
        self.rules.iter().map(|(k, v)| (*k, v.rule)).unzip()
    }

    /// Counts of block and allow rules.
    pub fn counts(&self) -> (usize, usize) {
        let allow =
            self.rules.values().filter(|r| r.rule.flags & (flags::ALLOW_SELF | flags::ALLOW_SUBDOMAINS) != 0).count();
        (self.rules.len() - allow, allow)
    }
}

/// Sets `action` for the scopes `scope` covers where none is set yet.
fn merge_actions(packed: u8, scope: Scope, action: Action) -> u8 {
    let own = packed & 0x0f;
    let below = packed >> 4;
    let a = action as u8;
    let own = if scope == Scope::NameAndSubdomains && own == Action::Default as u8 { a } else { own };
    let below = if below == Action::Default as u8 { a } else { below };
    own | (below << 4)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn entry(name: &str, allow: bool, scope: Scope, action: Action) -> Entry {
        Entry {
            domain: Domain::parse(name).unwrap(),
            scope,
            allow,
            action,
            origin: Origin { file: Arc::from("t"), line: 1 },
        }
    }

    #[test]
    fn merges_per_name() {
        let mut set = RuleSet::new(5);
        set.add(&entry("example.com", false, Scope::SubdomainsOnly, Action::Default)).unwrap();
        set.add(&entry("Example.com.", false, Scope::NameAndSubdomains, Action::Refused)).unwrap();
        set.add(&entry("example.com", true, Scope::NameAndSubdomains, Action::Default)).unwrap();
        set.add(&entry("example.com", false, Scope::NameAndSubdomains, Action::Drop)).unwrap();
        assert_eq!(set.len(), 1);
        let r = set.get(Domain::parse("example.com").unwrap().key(5)).unwrap();
        assert_eq!(r.rule.flags, flags::ALL);
        assert_eq!(r.rule.action, maps::rule::actions(Action::Refused, Action::Refused));
        assert_eq!(r.rule.labels, 2);
    }

    #[test]
    fn actions_are_kept_per_scope() {
        let mut set = RuleSet::new(5);
        set.add(&entry("ads.example", false, Scope::SubdomainsOnly, Action::Drop)).unwrap();
        set.add(&entry("ads.example", false, Scope::NameAndSubdomains, Action::Default)).unwrap();
        let r = set.get(Domain::parse("ads.example").unwrap().key(5)).unwrap();
        assert_eq!(r.rule.action, maps::rule::actions(Action::Default, Action::Drop));
        let mut set = RuleSet::new(5);
        set.add(&entry("ads.example", false, Scope::NameAndSubdomains, Action::Refused)).unwrap();
        set.add(&entry("ads.example", false, Scope::SubdomainsOnly, Action::Drop)).unwrap();
        let r = set.get(Domain::parse("ads.example").unwrap().key(5)).unwrap();
        assert_eq!(r.rule.action, maps::rule::actions(Action::Refused, Action::Refused));
    }

    #[test]
    fn depth_mask_has_each_label_count() {
        let mut set = RuleSet::new(1);
        for n in ["com", "a.example.com", "b.example.com"] {
            set.add(&entry(n, false, Scope::NameAndSubdomains, Action::Default)).unwrap();
        }
        assert_eq!(set.depth_mask(), [0b101, 0]);
    }
}
