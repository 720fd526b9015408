//! Putting rule sets in the kernel without a packet ever being judged by a
//! mix of two sets or skipping a lookup its set needs.
//!
//! A whole set is built in a fresh map and swapped in with one update of
//! `RULESETS`. A few changes to a big set are staged in the generation of
//! the rule values packets do not read and switched over with one byte of
//! `SETTINGS`. Live updates change the active set in place. Around each,
//! the depth mask and the negative-lookup filter, which only let the
//! kernel skip lookups, are widened before and narrowed after, with an RCU
//! grace period between the steps.

use std::os::fd::{AsFd as _, AsRawFd as _, RawFd};

use aya::maps::{IterableMap as _, MapError};
use maps::{Rule, Settings};

use super::{
    error::{FilterError, map_err},
    handles::{Maps, RuleSetMap},
    sys,
};
use crate::policy::rules;

/// Writes rule sets into the kernel and keeps track of the active one.
pub struct RuleSetWriter {
    active: Option<RuleSetMap>,
    /// The filter bits of the active set, as installed: what `FILTER`
    /// holds (they change only after a write succeeded).
    installed_bits: Vec<u64>,
    /// Rules in the active set, and how many it can hold.
    active_len: usize,
    active_capacity: usize,
    /// A [`RuleSetWriter::transition`] started and did not finish: the
    /// generation packets do not read may hold rules of neither set, so no
    /// further transition may flip to it; the next change installs a fresh
    /// set.
    unsettled: bool,
}

/// Headroom for rule sets: live additions fit without rebuilding the map.
fn capacity_for(rules: usize) -> Result<u32, FilterError> {
    let cap = rules + rules / 64 + 1024;
    u32::try_from(cap).map_err(|_| FilterError::TooManyRules(rules))
}

/// Removes `key` from the active set, counting it out of `len` if it was
/// there.
fn remove_key(active: &mut RuleSetMap, len: &mut usize, key: u64) -> Result<(), FilterError> {
    match active.remove(&key) {
        Ok(()) => *len = len.saturating_sub(1),
        Err(MapError::KeyNotFound) => {}
        Err(e) => return Err(map_err("rule set")(e)),
    }
    Ok(())
}

impl RuleSetWriter {
    /// No rule set yet, and a filter of `words` words all clear.
    pub(super) fn new(words: usize) -> Self {
        Self { active: None, installed_bits: vec![0; words], active_len: 0, active_capacity: 0, unsettled: false }
    }

    /// Takes over the rule set and filter bits of the running filter whose
    /// maps were pinned (its settings already read into `maps`), so the
    /// next install widens, swaps and narrows around what packets use now.
    pub(super) fn adopt(maps: &Maps) -> Result<Self, FilterError> {
        let bits = maps.read_filter()?;
        let mask = maps.settings().filter_mask;
        if mask != bits.len() as u64 - 1 {
            return Err(FilterError::AdoptFilter { mask, words: bits.len() });
        }
        let mut me = Self::new(0);
        me.installed_bits = bits;
        me.active = maps.active_ruleset()?;
        if let Some(m) = &me.active {
            let cap = m.map().info().map_err(map_err("rule set"))?.max_entries() as usize;
            // Not counted (a walk of a million keys): the capacity is a
            // safe bound until the next install sets both.
            (me.active_len, me.active_capacity) = (cap, cap);
        }
        Ok(me)
    }

    /// Builds the rules given as parallel arrays of keys (hashed under
    /// `seed`) and values in a fresh map and makes it the active rule set
    /// with one update of `RULESETS`: packets see the old set or the new
    /// one, never a mix. The first rule set decides the hash seed; later
    /// ones must use it.
    pub fn install(&mut self, maps: &mut Maps, seed: u64, keys: &[u64], values: &[Rule]) -> Result<(), FilterError> {
        if self.active.is_some() && seed != maps.settings().seed {
            return Err(FilterError::SeedMismatch { got: seed, want: maps.settings().seed });
        }
        let cap = capacity_for(keys.len())?;
        let inner = RuleSetMap::create(cap, 0).map_err(map_err("rule set"))?;
        // Both generations hold the rule: a fresh set has no reload staged.
        let mut both: Vec<Rule> = values.iter().map(|v| v.both()).collect();
        self.carry_hits_over(keys, &mut both);
        sys::update_batch_parallel(&inner.map().fd().as_fd().as_raw_fd(), keys, &both)?;

        // The depth mask and the filter only let the kernel skip lookups, so
        // supersets are always safe. Widen both to old | new, wait until no
        // packet still uses the old ones, swap, wait until no packet still
        // uses the old set, then narrow them: no packet ever skips a lookup
        // its set needs. The settings and `installed_bits` always mirror
        // what the kernel holds (they change only after a write succeeded),
        // so a failure part-way leaves a consistent, safe state: at worst
        // supersets, which cost lookups and nothing else.
        let new_mask = rules::depth_mask(values);
        let new_bits = rules::filter_bits(keys, self.installed_bits.len());
        let narrowed = Settings { seed, depth_mask: new_mask, ..maps.settings() };
        let (len, capacity) = (keys.len(), cap as usize);
        if self.active.is_none() {
            self.write_filter(maps, &new_bits)?;
            maps.write_settings(narrowed)?;
            return self.swap(maps, inner, len, capacity);
        }
        let old = maps.settings().depth_mask;
        let widened = Settings { depth_mask: [old[0] | new_mask[0], old[1] | new_mask[1]], ..narrowed };
        let union: Vec<u64> = self.installed_bits.iter().zip(&new_bits).map(|(a, b)| a | b).collect();
        self.write_filter(maps, &union)?;
        maps.write_settings(widened)?;
        sys::wait_for_packets_in_flight().map_err(FilterError::Sync)?;
        self.swap(maps, inner, len, capacity)?;
        sys::wait_for_packets_in_flight().map_err(FilterError::Sync)?;
        self.write_filter(maps, &new_bits)?;
        maps.write_settings(narrowed)?;
        Ok(())
    }

    /// Makes `inner`, holding `len` rules of room for `capacity`, the
    /// active rule set: a fresh set, with no generation switch pending.
    fn swap(&mut self, maps: &mut Maps, inner: RuleSetMap, len: usize, capacity: usize) -> Result<(), FilterError> {
        maps.swap_ruleset(&inner)?;
        self.active = Some(inner);
        (self.active_len, self.active_capacity) = (len, capacity);
        self.unsettled = false;
        Ok(())
    }

    /// Changes rules of the active set in place, for live updates: `Some`
    /// inserts or replaces the rule of a key (keeping its hit count),
    /// `None` removes it. The depth mask and filter are widened first, so
    /// no packet skips a lookup a new rule needs; removals leave them wide
    /// (a superset costs a lookup, nothing else) until the next install.
    /// Packets see each key's old rule or new one. When the new keys do
    /// not fit the active map's headroom nothing is changed and
    /// [`FilterError::RuleSetFull`] says so: install a whole set instead.
    pub fn update(&mut self, maps: &mut Maps, changes: &[(u64, Option<Rule>)]) -> Result<(), FilterError> {
        let (old, _) = self.current_rules(changes)?;
        self.widen_for(maps, changes)?;
        let active = self.active.as_mut().ok_or(FilterError::NoRuleSet)?;
        for ((k, r), old) in changes.iter().zip(&old) {
            match r {
                Some(r) => {
                    let rule = Rule { hits: old.map_or(0, |o| o.hits), ..r.both() };
                    active.insert(k, rule, 0).map_err(map_err("rule set"))?;
                    if old.is_none() {
                        self.active_len += 1;
                    }
                }
                None => remove_key(active, &mut self.active_len, *k)?,
            }
        }
        Ok(())
    }

    /// Moves the active set to the one `keys` and `values` describe, given
    /// `changes`: the keys whose rule differs from the active set's (`None`:
    /// no rule any more). For a reload that changes a few rules of a big
    /// set, without building a new map: the changed rules are staged in the
    /// rule generation no packet reads (see `maps::Rule`), the filter and
    /// depth mask widened, then `Settings::generation` flipped, one byte:
    /// each packet is judged wholly by the old set or wholly by the new one.
    /// After a grace period both generations are made equal again and
    /// removed keys deleted; the filter and mask stay wide until
    /// [`RuleSetWriter::narrow`] (a superset only costs lookups). When the
    /// new keys do not fit the active map, nothing changes and
    /// [`FilterError::RuleSetFull`] says so: install the set instead.
    pub fn transition(&mut self, maps: &mut Maps, changes: &[(u64, Option<Rule>)]) -> Result<(), FilterError> {
        if self.unsettled {
            return Err(FilterError::Unsettled);
        }
        let (old, new_keys) = self.current_rules(changes)?;
        // A key to remove that the set does not hold needs nothing.
        let (changes, old): (Vec<_>, Vec<_>) =
            changes.iter().copied().zip(old).filter(|((_, r), o)| r.is_some() || o.is_some()).unzip();
        let changes: &[(u64, Option<Rule>)] = &changes;
        let next = (maps.settings().generation & 1) ^ 1;
        // 1. Stage: the next generation of every changed key; the current
        // one as it is (no rule, for keys new to the set).
        let (staged_keys, staged): (Vec<u64>, Vec<Rule>) = changes
            .iter()
            .zip(&old)
            .map(|((k, r), o)| {
                let base = o.unwrap_or(Rule { labels: r.map_or(0, |r| r.labels), ..Rule::default() });
                (*k, base.with_generation(next, *r))
            })
            .unzip();
        let fd = self.active.as_ref().ok_or(FilterError::NoRuleSet)?.map().fd().as_fd().as_raw_fd();
        // From here until settled, the generation packets do not read may
        // hold a mix: a failure leaves the set in force as it is, and the
        // next change installs a fresh set rather than flip to the mix.
        self.unsettled = true;
        sys::update_batch_parallel(&fd, &staged_keys, &staged)?;
        self.active_len += new_keys;
        // 2. Widen the filter and the depth mask to cover the new rules.
        let widened = self.widen_for(maps, changes)?;
        // 3. Flip: the new set is in force.
        maps.write_settings(Settings { generation: next, ..widened })?;
        // 4, 5. Settle; a failure here only leaves the other generation
        // untidy, which `unsettled` guards.
        match self.settle(changes, fd) {
            Ok(()) => self.unsettled = false,
            Err(e) => tracing::warn!(
                "tidying the rule set after switching generations: {e}; the next reload installs a fresh set"
            ),
        }
        Ok(())
    }

    /// After a flip: waits until no packet reads the old generation, then
    /// makes both generations of the changed keys equal (hit counts kept)
    /// and deletes the keys without a rule.
    fn settle(&mut self, changes: &[(u64, Option<Rule>)], fd: RawFd) -> Result<(), FilterError> {
        sys::wait_for_packets_in_flight().map_err(FilterError::Sync)?;
        let active = self.active.as_mut().ok_or(FilterError::NoRuleSet)?;
        let mut settled_keys = Vec::with_capacity(changes.len());
        let mut settled = Vec::with_capacity(changes.len());
        for (k, r) in changes {
            match r {
                Some(r) => {
                    let hits = active.get(k, 0).map_or(0, |v| v.hits);
                    settled_keys.push(*k);
                    settled.push(Rule { hits, ..r.both() });
                }
                None => remove_key(active, &mut self.active_len, *k)?,
            }
        }
        sys::update_batch_parallel(&fd, &settled_keys, &settled)?;
        Ok(())
    }

    /// Narrows the filter and the depth mask to the active set, `rules`
    /// (each key with its rule's label count; a superset is fine), after a
    /// [`RuleSetWriter::transition`] widened them.
    pub fn narrow(&mut self, maps: &mut Maps, rules: impl IntoIterator<Item = (u64, u8)>) -> Result<(), FilterError> {
        let mut bits = vec![0u64; self.installed_bits.len()];
        let mask = bits.len() as u64 - 1;
        let mut depths = Settings::default();
        for (key, labels) in rules {
            rules::mark_filter(&mut bits, mask, key);
            depths.set_depth(labels as usize);
        }
        self.write_filter_words(maps, &bits)?;
        maps.write_settings(Settings { depth_mask: depths.depth_mask, ..maps.settings() })
    }

    /// The active set's current values of the keys `changes` names, once
    /// the new keys among them are known to fit its headroom (else
    /// [`FilterError::RuleSetFull`], and nothing changed).
    fn current_rules(&self, changes: &[(u64, Option<Rule>)]) -> Result<(Vec<Option<Rule>>, usize), FilterError> {
        let Some(active) = self.active.as_ref() else { return Err(FilterError::NoRuleSet) };
        let old: Vec<Option<Rule>> = changes.iter().map(|(k, _)| active.get(k, 0).ok()).collect();
        let new_keys = changes.iter().zip(&old).filter(|((_, r), o)| r.is_some() && o.is_none()).count();
        if self.active_len + new_keys > self.active_capacity {
            return Err(FilterError::RuleSetFull { capacity: self.active_capacity });
        }
        Ok((old, new_keys))
    }

    /// Widens the filter and the depth mask to cover the rules `changes`
    /// adds (a superset only costs lookups); returns the settings written.
    fn widen_for(&mut self, maps: &mut Maps, changes: &[(u64, Option<Rule>)]) -> Result<Settings, FilterError> {
        let mut widened = maps.settings();
        let mut bits = self.installed_bits.clone();
        let mask = bits.len() as u64 - 1;
        for (k, r) in changes {
            if let Some(r) = r {
                widened.set_depth(r.labels as usize);
                rules::mark_filter(&mut bits, mask, *k);
            }
        }
        // Only the words that changed are written.
        self.write_filter_words(maps, &bits)?;
        if widened.depth_mask != maps.settings().depth_mask {
            maps.write_settings(widened)?;
        }
        Ok(widened)
    }

    /// Writes the filter words that differ from `installed_bits`, one by
    /// one; the mirror follows each write.
    fn write_filter_words(&mut self, maps: &mut Maps, bits: &[u64]) -> Result<(), FilterError> {
        for (i, (have, want)) in self.installed_bits.iter_mut().zip(bits).enumerate() {
            if have != want {
                maps.write_filter_word(i as u32, *want)?;
                *have = *want;
            }
        }
        Ok(())
    }

    /// Writes the whole filter (one batch of word updates); `installed_bits`
    /// follows on success. A failed batch may have written part of it: the
    /// mirror then becomes the union, which covers both.
    fn write_filter(&mut self, maps: &Maps, bits: &[u64]) -> Result<(), FilterError> {
        if let Err(e) = maps.write_filter(bits) {
            for (have, want) in self.installed_bits.iter_mut().zip(bits) {
                *have |= want;
            }
            return Err(e.into());
        }
        self.installed_bits = bits.to_vec();
        Ok(())
    }

    /// Gives the rules of a set about to be installed the hit counts their
    /// keys have in the active set, so counts survive reloads that build a
    /// new set and restarts that adopt a pinned one (hits between this read
    /// and the swap are not carried). A failed read only loses the counts.
    fn carry_hits_over(&self, keys: &[u64], values: &mut [Rule]) {
        if self.active.is_none() {
            return;
        }
        match self.rule_hits() {
            Ok(hits) => {
                let hits: std::collections::HashMap<u64, u32, nohash_hasher::BuildNoHashHasher<u64>> =
                    hits.into_iter().collect();
                if hits.is_empty() {
                    return;
                }
                for (k, v) in keys.iter().zip(values) {
                    if let Some(h) = hits.get(k) {
                        v.hits = *h;
                    }
                }
            }
            Err(e) => tracing::warn!("hit counts start again at 0 in the new rule set: {e}"),
        }
    }

    /// Every key of the active rule set with its rule, as the kernel holds
    /// them (one walk of the map).
    pub fn active_rules(&self) -> Result<Vec<(u64, Rule)>, FilterError> {
        let Some(active) = &self.active else { return Ok(Vec::new()) };
        sys::dump_hash(&active.map().fd().as_fd().as_raw_fd()).map_err(FilterError::Dump)
    }

    /// Hit counts of the active rule set's rules that were hit at least once.
    pub fn rule_hits(&self) -> Result<Vec<(u64, u32)>, FilterError> {
        let rules = self.active_rules()?;
        Ok(rules.into_iter().filter(|(_, r)| r.hits != 0).map(|(k, r)| (k, r.hits)).collect())
    }

    /// The rule the kernel holds for `key` in the active set.
    pub fn active_rule(&self, key: u64) -> Option<Rule> {
        self.active.as_ref()?.get(&key, 0).ok()
    }

    /// Rules in the active set.
    pub fn active_len(&self) -> usize {
        self.active_len
    }

    /// Kernel memory of the active rule set, as the kernel accounts it.
    pub fn memory(&self) -> Result<u64, FilterError> {
        let Some(active) = &self.active else { return Ok(0) };
        sys::map_memlock(&active.map().fd().as_fd().as_raw_fd()).map_err(FilterError::Memory)
    }
}
