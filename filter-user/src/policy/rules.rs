//! A complete rule set as the kernel will see it: one entry per name, keyed
//! by the shared name hash, with allow and block merged per name.

use std::collections::{HashMap, hash_map::Entry as MapEntry};

use nohash_hasher::BuildNoHashHasher;

use maps::{Action, Rule, layout::rule::flags};
use thiserror::Error;

use super::{
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

/// Two different names hashed to one key (odds in `maps::parse::name`); the later
/// one is left out rather than merged into the wrong rule.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{origin}: {skipped} has the same 64-bit key as {kept}; {skipped} was left out")]
pub struct Collision {
    pub kept: Domain,
    pub skipped: Domain,
    pub origin: Origin,
}

/// One list entry's own rule: what a reload needs to take the entry out
/// of a rule that several entries make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contribution {
    pub rule: Rule,
    pub origin: Origin,
}

impl Contribution {
    pub fn of(e: &Entry) -> Self {
        Self { rule: rule_of(e), origin: e.origin.clone() }
    }
}

/// Rules keyed by name hash under one seed.
#[derive(Clone, Debug)]
pub struct RuleSet {
    seed: u64,
    /// Keyed by the name hash itself: the keys are already uniform 64-bit
    /// hashes, so hashing them again (`SipHash`) would only cost time.
    rules: HashMap<u64, CompiledRule, BuildNoHashHasher<u64>>,
    /// For the few names several entries name (a name in two lists, twice
    /// in one): each entry's own rule, in list order; the compiled rule is
    /// their merge. A name named once is its own only contribution.
    shared: HashMap<u64, Vec<Contribution>, BuildNoHashHasher<u64>>,
}

/// What one key holds after a reload re-read some of its entries: its rule
/// (`None`: no entry names it any more) and, when several entries make
/// it, theirs.
#[derive(Clone, Debug)]
pub struct KeyUpdate {
    pub key: u64,
    pub rule: Option<CompiledRule>,
    shared: Option<Vec<Contribution>>,
}

/// The rule `key` gets from `items` (each entry's name and own rule, in
/// list order): what loading those entries in that order gives it, with
/// the entries whose name collides with the first one's left out.
pub fn rebuild(key: u64, items: Vec<(Domain, Contribution)>) -> (KeyUpdate, Vec<Collision>) {
    let mut one = RuleSet::new(0);
    let collisions = items
        .into_iter()
        .filter_map(|(domain, c)| one.merge(key, CompiledRule { domain, rule: c.rule, origin: c.origin }).err())
        .collect();
    (KeyUpdate { key, rule: one.rules.remove(&key), shared: one.shared.remove(&key) }, collisions)
}

/// The rule under `key` when `first` (entries for one name, the
/// operator's) come before the list's rule `own` for it: see
/// [`RuleSet::combined`].
pub fn combine(key: u64, first: &[Entry], own: Option<&CompiledRule>) -> Result<Option<CompiledRule>, Collision> {
    let mut one = RuleSet::new(0);
    for e in first {
        one.merge(key, CompiledRule { domain: e.domain.clone(), rule: rule_of(e), origin: e.origin.clone() })?;
    }
    if let Some(own) = own {
        one.merge(key, own.clone())?;
    }
    Ok(one.rules.remove(&key))
}

impl RuleSet {
    pub fn new(seed: u64) -> Self {
        Self { seed, rules: HashMap::default(), shared: HashMap::default() }
    }

    /// The entries behind `key`'s rule, in list order, and its name.
    pub fn contributions(&self, key: u64) -> Option<(&Domain, Vec<Contribution>)> {
        let r = self.rules.get(&key)?;
        let own = match self.shared.get(&key) {
            Some(all) => all.clone(),
            None => vec![Contribution { rule: r.rule, origin: r.origin.clone() }],
        };
        Some((&r.domain, own))
    }

    /// The names several entries name, with those entries (in list order).
    pub fn shared(&self) -> impl Iterator<Item = (u64, &[Contribution])> {
        self.shared.iter().map(|(k, v)| (*k, v.as_slice()))
    }

    /// Puts the rules a reload rebuilt in place.
    pub fn apply(&mut self, updates: Vec<KeyUpdate>) {
        for u in updates {
            match u.rule {
                Some(r) => self.rules.insert(u.key, r),
                None => self.rules.remove(&u.key),
            };
            match u.shared {
                Some(s) => self.shared.insert(u.key, s),
                None => self.shared.remove(&u.key),
            };
        }
    }

    /// Gives the origins `line_of` has a new line number for that number
    /// (lines moved in a list that changed).
    pub fn renumber(&mut self, line_of: impl Fn(&Origin) -> Option<usize>) {
        for r in self.rules.values_mut() {
            if let Some(line) = line_of(&r.origin) {
                r.origin.line = line;
            }
        }
        for c in self.shared.values_mut().flatten() {
            if let Some(line) = line_of(&c.origin) {
                c.origin.line = line;
            }
        }
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
        self.add_owned(e.clone())
    }

    /// Merges a compiled rule into the one for its key: flags accumulate,
    /// and for each scope the action already set stays (earlier wins).
    fn merge(&mut self, key: u64, c: CompiledRule) -> Result<(), Collision> {
        match self.rules.entry(key) {
            MapEntry::Occupied(mut o) => {
                let r = o.get_mut();
                if r.domain != c.domain {
                    return Err(Collision { kept: r.domain.clone(), skipped: c.domain, origin: c.origin });
                }
                let before = r.rule;
                r.rule.flags |= c.rule.flags;
                r.rule.action = merge_packed(r.rule.action, c.rule.action);
                let first = || vec![Contribution { rule: before, origin: r.origin.clone() }];
                self.shared.entry(key).or_insert_with(first).push(Contribution { rule: c.rule, origin: c.origin });
            }
            MapEntry::Vacant(v) => {
                v.insert(c);
            }
        }
        Ok(())
    }

    /// The rule for `domain` when `first` (entries for `domain`, the
    /// operator's) is added before this set's own rule for it: the
    /// operator's actions win, allow and block bits accumulate. `None`
    /// when neither has a rule.
    pub fn combined(&self, domain: &Domain, first: &[Entry]) -> Result<Option<CompiledRule>, Collision> {
        let key = domain.key(self.seed);
        combine(key, first, self.rules.get(&key))
    }

    /// Keys and values as parallel arrays, with `overlay` replacing or
    /// adding rules: what the kernel holds when the overlay's rules (the
    /// operator's, combined) are in force beside this set's.
    pub fn to_arrays_with(&self, overlay: &HashMap<u64, Rule>) -> (Vec<u64>, Vec<Rule>) {
        let mut keys = Vec::with_capacity(self.rules.len() + overlay.len());
        let mut values = Vec::with_capacity(self.rules.len() + overlay.len());
        for (k, v) in &self.rules {
            keys.push(*k);
            values.push(overlay.get(k).copied().unwrap_or(v.rule));
        }
        for (k, v) in overlay {
            if !self.rules.contains_key(k) {
                keys.push(*k);
                values.push(*v);
            }
        }
        (keys, values)
    }

    /// Adds many entries; returns the collisions (normally none).
    pub fn extend<'a>(&mut self, entries: impl IntoIterator<Item = &'a Entry>) -> Vec<Collision> {
        entries.into_iter().filter_map(|e| self.add(e).err()).collect()
    }

    /// [`RuleSet::extend`] taking the entries: their names and origins move
    /// into the set instead of being copied (a list of millions loads
    /// faster).
    pub fn extend_owned(&mut self, entries: Vec<Entry>) -> Vec<Collision> {
        self.rules.reserve(entries.len());
        entries.into_iter().filter_map(|e| self.add_owned(e).err()).collect()
    }

    fn add_owned(&mut self, e: Entry) -> Result<(), Collision> {
        let key = e.domain.key(self.seed);
        let rule = rule_of(&e);
        self.merge(key, CompiledRule { domain: e.domain, rule, origin: e.origin })
    }

    /// Depth mask for [`maps::Settings::depth_mask`]: which label counts have rules.
    pub fn depth_mask(&self) -> [u64; 2] {
        depth_mask(self.rules.values().map(|r| &r.rule))
    }

    /// The filter bits of this set's keys, for a filter of `words` words
    /// (a power of two): see `maps::layout::filter`.
    pub fn filter_bits(&self, words: usize) -> Vec<u64> {
        filter_bits(self.rules.keys(), words)
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

/// What changes from the set `old` to the set `new` (parallel arrays of
/// keys and generation-0 rules): the keys whose rule is new or differs
/// (`Some`, the new rule) or is gone (`None`). Hit counts do not count.
pub fn diff(old_keys: &[u64], old_values: &[Rule], new_keys: &[u64], new_values: &[Rule]) -> Vec<(u64, Option<Rule>)> {
    let mut old: HashMap<u64, Rule, BuildNoHashHasher<u64>> =
        HashMap::with_capacity_and_hasher(old_keys.len(), BuildNoHashHasher::default());
    old.extend(old_keys.iter().copied().zip(old_values.iter().copied()));
    let same = |a: &Rule, b: &Rule| a.flags == b.flags && a.action == b.action && a.labels == b.labels;
    let mut out = Vec::new();
    for (k, v) in new_keys.iter().zip(new_values) {
        match old.remove(k) {
            Some(o) if same(&o, v) => {}
            _ => out.push((*k, Some(*v))),
        }
    }
    out.extend(old.into_keys().map(|k| (k, None)));
    out
}

/// The kernel rule of one list entry.
fn rule_of(e: &Entry) -> Rule {
    let bits = match (e.allow, e.scope) {
        (false, Scope::NameAndSubdomains) => flags::BLOCK_SELF | flags::BLOCK_SUBDOMAINS,
        (false, Scope::SubdomainsOnly) => flags::BLOCK_SUBDOMAINS,
        (true, Scope::NameAndSubdomains) => flags::ALLOW_SELF | flags::ALLOW_SUBDOMAINS,
        (true, Scope::SubdomainsOnly) => flags::ALLOW_SUBDOMAINS,
    };
    Rule {
        flags: bits,
        action: if e.allow { 0 } else { merge_actions(0, e.scope, e.action) },
        labels: e.domain.labels() as u8,
        action_next: 0,
        hits: 0,
    }
}

/// [`maps::Settings::depth_mask`] for `rules`: which label counts have rules.
pub fn depth_mask<'a>(rules: impl IntoIterator<Item = &'a Rule>) -> [u64; 2] {
    let mut s = maps::Settings::default();
    for r in rules {
        s.set_depth(r.labels as usize);
    }
    s.depth_mask
}

/// The filter bits of `keys` for a filter of `words` words (a power of
/// two): see `maps::layout::filter`.
pub fn filter_bits<'a>(keys: impl IntoIterator<Item = &'a u64>, words: usize) -> Vec<u64> {
    let mut bits = vec![0u64; words];
    let mask = words as u64 - 1;
    for key in keys {
        mark_filter(&mut bits, mask, *key);
    }
    bits
}

/// Sets `key`'s bit in filter words `bits` (`mask`: their count - 1).
pub fn mark_filter(bits: &mut [u64], mask: u64, key: u64) {
    let (w, b) = maps::layout::filter::position(key, mask);
    bits[w as usize] |= b;
}

/// Sets `action` for the scopes `scope` covers where none is set yet.
fn merge_actions(packed: u8, scope: Scope, action: Action) -> u8 {
    let a = action as u8;
    let own = if scope == Scope::NameAndSubdomains { a } else { Action::Default as u8 };
    merge_packed(packed, own | (a << 4))
}

/// Packed actions (`maps::Rule::action`: the name's own in the low
/// nibble, the names below's in the high one) with `later`'s filling the
/// scopes `earlier` leaves at the default: the first explicit one wins.
fn merge_packed(earlier: u8, later: u8) -> u8 {
    let pick = |e: u8, l: u8| if e == Action::Default as u8 { l } else { e };
    pick(earlier & 0x0f, later & 0x0f) | (pick(earlier >> 4, later >> 4) << 4)
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
        assert_eq!(r.rule.action, maps::layout::rule::actions(Action::Refused, Action::Refused));
        assert_eq!(r.rule.labels, 2);
    }

    #[test]
    fn actions_are_kept_per_scope() {
        let mut set = RuleSet::new(5);
        set.add(&entry("ads.example", false, Scope::SubdomainsOnly, Action::Drop)).unwrap();
        set.add(&entry("ads.example", false, Scope::NameAndSubdomains, Action::Default)).unwrap();
        let r = set.get(Domain::parse("ads.example").unwrap().key(5)).unwrap();
        assert_eq!(r.rule.action, maps::layout::rule::actions(Action::Default, Action::Drop));
        let mut set = RuleSet::new(5);
        set.add(&entry("ads.example", false, Scope::NameAndSubdomains, Action::Refused)).unwrap();
        set.add(&entry("ads.example", false, Scope::SubdomainsOnly, Action::Drop)).unwrap();
        let r = set.get(Domain::parse("ads.example").unwrap().key(5)).unwrap();
        assert_eq!(r.rule.action, maps::layout::rule::actions(Action::Refused, Action::Refused));
    }

    #[test]
    fn operator_rules_come_first() {
        let mut lists = RuleSet::new(5);
        lists.add(&entry("ads.example", false, Scope::NameAndSubdomains, Action::Refused)).unwrap();
        let domain = Domain::parse("ads.example").unwrap();
        let op = [entry("ads.example", false, Scope::SubdomainsOnly, Action::Drop)];
        let r = lists.combined(&domain, &op).unwrap().unwrap();
        assert_eq!(r.rule.flags, flags::BLOCK_SELF | flags::BLOCK_SUBDOMAINS);
        assert_eq!(
            r.rule.action,
            maps::layout::rule::actions(Action::Refused, Action::Drop),
            "operator's below, list's own"
        );
        let allow = [entry("ads.example", true, Scope::NameAndSubdomains, Action::Default)];
        let r = lists.combined(&domain, &allow).unwrap().unwrap();
        assert_eq!(r.rule.flags, flags::ALL);
        let other = Domain::parse("other.example").unwrap();
        assert_eq!(lists.combined(&other, &[]).unwrap(), None);
        let mut overlay = HashMap::new();
        overlay.insert(domain.key(5), r.rule);
        overlay.insert(other.key(5), Rule { labels: 2, ..Rule::default() });
        let (keys, values) = lists.to_arrays_with(&overlay);
        assert_eq!(keys.len(), 2);
        assert_eq!(values[keys.iter().position(|k| *k == domain.key(5)).unwrap()].flags, flags::ALL);
    }

    #[test]
    fn diff_names_new_changed_and_gone_keys() {
        let r = |flags: u8, hits: u32| Rule { flags, action: 0, labels: 2, action_next: 0, hits };
        let d = diff(&[1, 2, 3], &[r(1, 0), r(1, 5), r(2, 0)], &[2, 3, 4], &[r(1, 9), r(1, 0), r(4, 0)]);
        let mut d: Vec<_> = d.into_iter().map(|(k, v)| (k, v.map(|v| v.flags))).collect();
        d.sort_unstable();
        assert_eq!(d, vec![(1, None), (3, Some(1)), (4, Some(4))], "2 differs only in hits");
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
