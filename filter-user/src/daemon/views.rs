//! Rules as `list`, `stats` and the metrics show them, and the `--match`
//! patterns that pick them.

use maps::{Action, layout::rule::flags};

use super::operator::{self, Verdict};
use crate::{control::RuleView, policy::rules::CompiledRule};

/// A rule pushed through the API, as `list` shows it.
pub(super) fn view_of_operator(pattern: &str, v: Verdict, hits: u64) -> RuleView {
    RuleView {
        pattern: pattern.to_owned(),
        rule: v.name().to_owned(),
        action: v.action_name().map(str::to_owned),
        source: operator::API_ORIGIN.to_owned(),
        hits,
    }
}

/// A list rule as the patterns it stands for: a name can be blocked and
/// allowed, for itself and for the names below it.
pub(super) fn views_of_list_rule(r: &CompiledRule, hits: u64) -> Vec<RuleView> {
    let f = r.rule.flags;
    let name = r.domain.as_str();
    let sub = format!("*.{name}");
    let mut out = Vec::new();
    let mut view = |pattern: &str, rule: &str, action: u8| {
        let action = Action::from_code(action).filter(|a| *a != Action::Default).map(|a| a.name().to_owned());
        out.push(RuleView {
            pattern: pattern.to_owned(),
            rule: rule.to_owned(),
            action,
            source: r.origin.to_string(),
            hits,
        });
    };
    if f & flags::BLOCK_SELF != 0 {
        view(name, "block", r.rule.action & 0x0f);
    } else if f & flags::BLOCK_SUBDOMAINS != 0 {
        view(&sub, "block", r.rule.action >> 4);
    }
    if f & flags::ALLOW_SELF != 0 {
        view(name, "allow", 0);
    } else if f & flags::ALLOW_SUBDOMAINS != 0 {
        view(&sub, "allow", 0);
    }
    out
}

/// `list --match`: a glob (`*` any run of characters, `?` one) over the
/// whole pattern when it has either, otherwise a substring.
pub(super) struct Matcher {
    glob: Option<Vec<char>>,
    text: String,
}

impl Matcher {
    pub(super) fn new(p: &str) -> Self {
        let p = p.trim().to_ascii_lowercase();
        Self { glob: (p.contains('*') || p.contains('?')).then(|| p.chars().collect()), text: p }
    }

    pub(super) fn matches(&self, s: &str) -> bool {
        match &self.glob {
            None => s.contains(&self.text),
            Some(g) => glob(g, &s.chars().collect::<Vec<_>>()),
        }
    }
}

/// Glob match with backtracking over the last `*` (linear in practice).
fn glob(p: &[char], s: &[char]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_substrings() {
        for (p, s, want) in [
            ("ads", "ads.example", true),
            ("ads", "example.com", false),
            ("*.example", "ads.example", true),
            ("*.example", "example", false),
            ("a?s.*", "ads.example", true),
            ("*", "x", true),
            ("*ads*", "myads.example", true),
            ("*.ads.*", "x.ads.example", true),
            ("*.ads.*", "ads.example", false),
            ("ADS", "ads.example", true),
        ] {
            assert_eq!(Matcher::new(p).matches(s), want, "{p} ~ {s}");
        }
    }
}
