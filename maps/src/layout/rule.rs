//! Rule keys and values, and the pure decision over a rule found at a depth.

use crate::Action;

/// Key of a rule: [`crate::parse::name`]'s 64-bit suffix hash of the rule's name.
pub type RuleKey = u64;

/// Bits of [`Rule::flags`].
pub mod flags {
    /// Block the rule's own name.
    pub const BLOCK_SELF: u8 = 1 << 0;
    /// Block every name below the rule's name.
    pub const BLOCK_SUBDOMAINS: u8 = 1 << 1;
    /// Allow the rule's own name (overrides any block of equal or lower specificity).
    pub const ALLOW_SELF: u8 = 1 << 2;
    /// Allow every name below the rule's name.
    pub const ALLOW_SUBDOMAINS: u8 = 1 << 3;
    /// All defined bits.
    pub const ALL: u8 = BLOCK_SELF | BLOCK_SUBDOMAINS | ALLOW_SELF | ALLOW_SUBDOMAINS;
}

/// Value of a rule in a rule set. 8 bytes, so a hash-map element is
/// 48 (kernel `htab_elem`) + 8 + 8 = 64 bytes.
///
/// A value holds the rule of two generations of the rule set, so a reload
/// that changes a few rules can stage them in the generation packets do
/// not read and switch every packet over at once with one byte of
/// `Settings::generation` (see `Settings`): generation 0 is the low nibble
/// of `flags` and `action`, generation 1 the high nibble of `flags` and
/// `action_next`. A generation whose flags are 0 has no rule for the key.
/// User space builds rules in generation 0 ([`Rule::both`] fills both).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    /// [`flags`] bits: which of block/allow apply to the name itself and to
    /// names below it; the low nibble for generation 0, the high for 1.
    pub flags: u8,
    /// [`Action`] codes for blocks in generation 0: the low four bits for
    /// the name itself, the high four for the names below it
    /// (`*.ads.example` and `ads.example` may ask for different actions).
    /// See [`actions`].
    pub action: u8,
    /// Labels in the rule's name. The kernel ignores a hit at another depth:
    /// that can only be a key collision.
    pub labels: u8,
    /// [`Rule::action`] for generation 1.
    pub action_next: u8,
    /// Packets this rule decided. Incremented atomically by the kernel; wraps
    /// at 2^32, so readers accumulate differences.
    pub hits: u32,
}

const _: () = assert!(core::mem::size_of::<Rule>() == 8);

impl Rule {
    /// The rule generation `generation` (0 or 1) sees, as a generation-0 rule.
    #[inline(always)]
    #[must_use]
    pub const fn in_generation(&self, generation: u8) -> Rule {
        if generation & 1 == 0 {
            Rule { flags: self.flags & 0x0f, action: self.action, labels: self.labels, action_next: 0, hits: self.hits }
        } else {
            Rule {
                flags: self.flags >> 4,
                action: self.action_next,
                labels: self.labels,
                action_next: 0,
                hits: self.hits,
            }
        }
    }

    /// This (generation-0) rule in both generations: what the kernel holds
    /// outside a reload.
    #[must_use]
    pub const fn both(self) -> Rule {
        let f = self.flags & 0x0f;
        Rule {
            flags: f | (f << 4),
            action: self.action,
            labels: self.labels,
            action_next: self.action,
            hits: self.hits,
        }
    }

    /// `self` with generation `generation` replaced by `rule` (a
    /// generation-0 rule; `None`: no rule in that generation).
    #[must_use]
    pub const fn with_generation(self, generation: u8, rule: Option<Rule>) -> Rule {
        let (f, a) = match rule {
            Some(r) => (r.flags & 0x0f, r.action),
            None => (0, 0),
        };
        if generation & 1 == 0 {
            Rule { flags: (self.flags & 0xf0) | f, action: a, ..self }
        } else {
            Rule { flags: (self.flags & 0x0f) | (f << 4), action_next: a, ..self }
        }
    }
}

/// Packs the actions for a name itself and for the names below it into
/// [`Rule::action`].
pub const fn actions(own: Action, below: Action) -> u8 {
    (own as u8 & 0x0f) | ((below as u8 & 0x0f) << 4)
}

/// What one rule says about one name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through.
    Allow,
    /// Block it with this action code (may be [`Action::Default`]).
    Block(u8),
}

/// The rule that decided a name: its verdict, its labels (the depth of the
/// suffix it was found at) and its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Match {
    pub verdict: Verdict,
    pub depth: usize,
    pub key: RuleKey,
}

/// What `rule`, found at the suffix of `depth` labels of a name with `labels`
/// labels, says about that name; `None` when the rule has nothing to say
/// (e.g. a subdomains-only rule and the name itself). Allow beats block in
/// the same rule: at equal specificity allow wins.
#[inline(always)]
pub const fn judge(rule: &Rule, depth: usize, labels: usize) -> Option<Verdict> {
    let (allow, block) = if depth == labels {
        (flags::ALLOW_SELF, flags::BLOCK_SELF)
    } else {
        (flags::ALLOW_SUBDOMAINS, flags::BLOCK_SUBDOMAINS)
    };
    if rule.flags & allow != 0 {
        Some(Verdict::Allow)
    } else if rule.flags & block != 0 {
        let action = if depth == labels { rule.action & 0x0f } else { rule.action >> 4 };
        Some(Verdict::Block(action))
    } else {
        None
    }
}

/// The action to apply for DNS: the rule's, or the default when it defers.
/// `Reset` means nothing for UDP and becomes `Drop`.
#[inline(always)]
pub const fn dns_action(rule_action: u8, default: u8) -> u8 {
    let a = if rule_action == Action::Default as u8 { default } else { rule_action };
    match a {
        1..=4 => a,
        // No default configured: NXDOMAIN, the documented default for DNS.
        0 => Action::Nxdomain as u8,
        // Reset (no connection to reset) and unknown codes: the safest block.
        _ => Action::Drop as u8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(f: u8) -> Rule {
        Rule { flags: f, action: actions(Action::Refused, Action::Refused), labels: 2, ..Rule::default() }
    }

    #[test]
    fn judge_table() {
        use flags::*;
        let cases: &[(u8, usize, usize, Option<Verdict>)] = &[
            (BLOCK_SELF | BLOCK_SUBDOMAINS, 2, 2, Some(Verdict::Block(2))),
            (BLOCK_SELF | BLOCK_SUBDOMAINS, 2, 5, Some(Verdict::Block(2))),
            (BLOCK_SUBDOMAINS, 2, 2, None),
            (BLOCK_SUBDOMAINS, 2, 3, Some(Verdict::Block(2))),
            (BLOCK_SELF, 2, 3, None),
            (ALLOW_SELF | ALLOW_SUBDOMAINS | BLOCK_SELF | BLOCK_SUBDOMAINS, 2, 2, Some(Verdict::Allow)),
            (ALLOW_SUBDOMAINS | BLOCK_SELF, 2, 2, Some(Verdict::Block(2))),
            (ALLOW_SUBDOMAINS | BLOCK_SELF, 2, 4, Some(Verdict::Allow)),
            (0, 2, 2, None),
        ];
        for &(f, depth, labels, want) in cases {
            assert_eq!(judge(&rule(f), depth, labels), want, "flags {f:#x} depth {depth} labels {labels}");
        }
    }

    #[test]
    fn actions_per_scope() {
        let r = Rule {
            flags: flags::BLOCK_SELF | flags::BLOCK_SUBDOMAINS,
            action: actions(Action::Default, Action::Drop),
            labels: 2,
            ..Rule::default()
        };
        assert_eq!(judge(&r, 2, 2), Some(Verdict::Block(Action::Default as u8)));
        assert_eq!(judge(&r, 2, 3), Some(Verdict::Block(Action::Drop as u8)));
    }

    #[test]
    fn dns_action_defaults() {
        let nx = Action::Nxdomain as u8;
        assert_eq!(dns_action(Action::Default as u8, Action::Sinkhole as u8), Action::Sinkhole as u8);
        assert_eq!(dns_action(Action::Refused as u8, nx), Action::Refused as u8);
        assert_eq!(dns_action(Action::Reset as u8, nx), Action::Drop as u8);
        assert_eq!(dns_action(Action::Default as u8, Action::Default as u8), nx);
        assert_eq!(dns_action(200, nx), Action::Drop as u8);
    }
}
