//! The rules the kernel holds: the lists' rules with the operator's
//! combined on top, for every key or for one.

use std::collections::{BTreeSet, HashMap};

use maps::Rule;
use tracing::warn;

use super::operator::{self, OperatorRules, Pattern};
use crate::policy::{
    blocklist::{self, Scope},
    names::Domain,
    rules::{self, CompiledRule, RuleSet},
};

/// The operator's entries for one domain (its two scopes).
pub(super) fn operator_entries(ops: &OperatorRules, domain: &Domain) -> Vec<blocklist::Entry> {
    [Scope::NameAndSubdomains, Scope::SubdomainsOnly]
        .into_iter()
        .filter_map(|scope| {
            let p = Pattern { domain: domain.clone(), scope };
            ops.get(&p).map(|v| operator::entry(&p, v))
        })
        .collect()
}

/// The rule the kernel holds for `key` when the lists' rule for it is
/// `own`: the operator's rules for `domain` combined on top (as
/// [`effective_arrays`] does for every key).
pub(super) fn effective_rule(
    key: u64,
    own: Option<&CompiledRule>,
    domain: &Domain,
    ops: &OperatorRules,
) -> Option<Rule> {
    let first = operator_entries(ops, domain);
    if first.is_empty() {
        return own.map(|r| r.rule);
    }
    match rules::combine(key, &first, own) {
        Ok(r) => r.map(|r| r.rule),
        Err(_) => own.map(|r| r.rule),
    }
}

/// What the kernel holds: the lists' rules with the operator's combined
/// on top. An operator rule whose name collides with a list name's key
/// (64-bit hash, practically never) is left out with a warning.
pub fn effective_arrays(lists: &RuleSet, ops: &OperatorRules) -> (Vec<u64>, Vec<Rule>) {
    let mut overlay = HashMap::new();
    let domains: BTreeSet<&Domain> = ops.iter().map(|(p, _)| &p.domain).collect();
    for domain in domains {
        match lists.combined(domain, &operator_entries(ops, domain)) {
            Ok(Some(r)) => {
                overlay.insert(domain.key(lists.seed()), r.rule);
            }
            Ok(None) => {}
            Err(c) => warn!("operator rule left out: {c}"),
        }
    }
    lists.to_arrays_with(&overlay)
}
