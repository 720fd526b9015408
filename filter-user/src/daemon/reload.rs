//! Reloads: the lists read again (by their changed lines when the same
//! lists are still named) and the kernel moved to the rules they give with
//! the operator's on top, by a staged switch of rule generations for a few
//! changes or a new rule set for many. On any failure the old set stays.

use std::time::Instant;

use maps::Rule;
use thiserror::Error;
use tracing::{info, warn};

use super::{
    Daemon,
    effective::{effective_arrays, effective_rule},
    unix_now,
};
use crate::{
    control::Reloaded,
    dataplane::{Filter, FilterError},
    errors::chain,
    policy::{LineChanges, Policy, PolicyError, Reload, blocklist::LineError, rules},
};

/// A reload that failed; the old rule set stays in force.
#[derive(Debug, Error)]
#[error("{why}; the old rule set stays in force")]
pub struct ReloadError {
    /// What went wrong.
    pub why: ReloadFailure,
}

/// What stopped a reload. Messages carry their causes on one line.
#[derive(Debug, Error)]
pub enum ReloadFailure {
    #[error("{}", chain(.0))]
    Lists(PolicyError),
    #[error(
        "{count} malformed line(s), first {first} (fix the list, or run with --skip-bad-lines to load lists without \
         their bad lines)"
    )]
    Malformed { count: usize, first: LineError },
    /// Boxed, as aya's errors are large.
    #[error("switching to the new rule set: {}", chain(&**.0))]
    Switch(Box<FilterError>),
    #[error("installing the new rule set: {}", chain(&**.0))]
    Install(Box<FilterError>),
}

impl Daemon {
    /// Re-reads every list and swaps in the new rule set with the
    /// operator's rules on top. On any failure the old set stays.
    pub fn reload(&mut self, why: &str) -> Result<Reloaded, ReloadError> {
        let t0 = Instant::now();
        let result = self.try_reload();
        let elapsed = t0.elapsed();
        self.reloads.last_duration = elapsed;
        match result {
            Ok(mut r) => {
                self.reloads.reloads += 1;
                self.reloads.last_success = Some(Instant::now());
                self.reloads.last_success_unix = unix_now();
                self.reloads.last_error = None;
                r.duration_ms = elapsed.as_millis() as u64;
                info!(
                    why,
                    rules = r.rules,
                    changed_lines = r.changed_lines,
                    changed_rules = r.changed_rules,
                    skipped = r.skipped_lines,
                    ms = r.duration_ms,
                    "reloaded"
                );
                Ok(r)
            }
            Err(why_not) => {
                let e = ReloadError { why: why_not };
                self.reloads.failures += 1;
                self.reloads.last_error = Some(e.to_string());
                warn!(why, "reload failed: {e}");
                Err(e)
            }
        }
    }

    fn try_reload(&mut self) -> Result<Reloaded, ReloadFailure> {
        let seed = self.lists.rules.seed();
        let reply = match self.source.reload(&self.lists).map_err(ReloadFailure::Lists)? {
            Reload::Lines(changes) => {
                self.check_malformed(changes.skipped())?;
                if let Some(reply) = self.reload_lines(changes)? {
                    reply
                } else {
                    // The active set has no room for the new keys: build a
                    // new one from the lists read whole.
                    let policy = self.source.load(seed).map_err(ReloadFailure::Lists)?;
                    self.check_malformed(&policy.skipped)?;
                    self.reload_whole(policy)?
                }
            }
            Reload::Whole(policy) => {
                self.check_malformed(&policy.skipped)?;
                self.reload_whole(policy)?
            }
        };
        for e in self.lists.skipped.iter().take(20) {
            warn!("skipped {e}");
        }
        self.hits_cache = None;
        Ok(reply)
    }

    /// Refuses a reload whose lists have malformed lines, unless the
    /// operator asked to load lists without them.
    fn check_malformed(&self, skipped: &[LineError]) -> Result<(), ReloadFailure> {
        match skipped.first() {
            Some(first) if !self.skip_bad_lines => {
                Err(ReloadFailure::Malformed { count: skipped.len(), first: first.clone() })
            }
            _ => Ok(()),
        }
    }

    /// A reload that read only the lines that changed: the names they
    /// touch whose rule in force (with the operator's on top) changed are
    /// staged and switched over in one step (`Filter::transition`). `None`
    /// when the active set cannot take them (nothing changed then).
    fn reload_lines(&mut self, changes: LineChanges) -> Result<Option<Reloaded>, ReloadFailure> {
        let mut kernel = Vec::new();
        for u in changes.updates() {
            let before = self.lists.rules.get(u.key);
            let Some(domain) = u.rule.as_ref().or(before).map(|r| &r.domain) else { continue };
            let old = effective_rule(u.key, before, domain, &self.operator);
            let new = effective_rule(u.key, u.rule.as_ref(), domain, &self.operator);
            if old != new {
                kernel.push((u.key, new));
            }
        }
        if !kernel.is_empty() && !self.try_transition(&kernel, self.filter.active_len())? {
            return Ok(None);
        }
        let list_rules = changes.list_rules(&self.lists);
        let changed_lines = changes.changed_lines();
        self.lists.apply(changes);
        if !kernel.is_empty() {
            let seed = self.lists.rules.seed();
            let ops = self.operator.iter().map(|(p, _)| (p.domain.key(seed), p.domain.labels() as u8));
            let lists = self.lists.rules.iter().map(|(k, r)| (k, r.rule.labels));
            narrow_or_warn(&mut self.filter, lists.chain(ops));
        }
        Ok(Some(Reloaded {
            rules: self.filter.active_len(),
            list_rules,
            operator_rules: self.operator.len(),
            skipped_lines: self.lists.skipped.len(),
            changed_lines: Some(changed_lines),
            changed_rules: kernel.len(),
            duration_ms: 0,
        }))
    }

    /// Stages `changes` to a set of about `total` rules in the running set
    /// and switches over in one step (`Filter::transition`). `Ok(false)`,
    /// nothing changed, when they are more than a 20th of the set (a new
    /// set is built faster) or the running set cannot take them.
    fn try_transition(&mut self, changes: &[(u64, Option<Rule>)], total: usize) -> Result<bool, ReloadFailure> {
        if changes.len() > (total / 20).max(1024) {
            return Ok(false);
        }
        match self.filter.transition(changes) {
            Ok(()) => Ok(true),
            Err(FilterError::RuleSetFull { .. } | FilterError::NoRuleSet | FilterError::Unsettled) => Ok(false),
            Err(e) => Err(ReloadFailure::Switch(Box::new(e))),
        }
    }

    /// A reload with every list read whole: the rule sets in force before
    /// and after are compared; a few changes are staged and switched over
    /// in one step, many get a new set built and swapped in.
    fn reload_whole(&mut self, policy: Policy) -> Result<Reloaded, ReloadFailure> {
        let seed = self.lists.rules.seed();
        let (keys, values) = effective_arrays(&policy.rules, &self.operator);
        let (old_keys, old_values) = effective_arrays(&self.lists.rules, &self.operator);
        let changes = rules::diff(&old_keys, &old_values, &keys, &values);
        let staged = self.try_transition(&changes, keys.len())?;
        if staged {
            narrow_or_warn(&mut self.filter, keys.iter().copied().zip(values.iter().map(|r| r.labels)));
        } else {
            self.filter.install_arrays(seed, &keys, &values).map_err(|e| ReloadFailure::Install(Box::new(e)))?;
        }
        let reply = Reloaded {
            rules: keys.len(),
            list_rules: policy.rules.len(),
            operator_rules: self.operator.len(),
            skipped_lines: policy.skipped.len(),
            changed_lines: None,
            changed_rules: changes.len(),
            duration_ms: 0,
        };
        let old = std::mem::replace(&mut self.lists, policy);
        // Freeing a million names takes a tenth of a second: not on the
        // reload's path (nor the serving loop's).
        std::thread::spawn(move || drop(old));
        Ok(reply)
    }
}

/// Narrows the filter and depth mask after a switch of rule generations.
/// The switch is done by then: a failure only leaves them wider than
/// needed (lookups that find nothing), so it is logged, not reported as a
/// failed reload.
fn narrow_or_warn(filter: &mut Filter, rules: impl IntoIterator<Item = (u64, u8)>) {
    if let Err(e) = filter.narrow(rules) {
        warn!("narrowing the filter after a reload: {}", chain(&e));
    }
}
