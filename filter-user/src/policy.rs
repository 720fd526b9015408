//! Lists on disk to a rule set: what `run` and `replay` both load.

use std::{fmt::Write as _, path::PathBuf};

use thiserror::Error;

use crate::{
    blocklist::{self, LineError, ListKind, LoadError},
    fetch::UrlList,
    rules::{Collision, RuleSet},
};

/// Which lists to load.
#[derive(Clone, Debug, Default)]
pub struct PolicySource {
    pub blocklists: Vec<PathBuf>,
    pub allowlists: Vec<PathBuf>,
    /// Fail on the first malformed line instead of skipping it.
    pub strict: bool,
    /// Lists fetched from URLs, read from their cached copies (a list not
    /// fetched yet is left out until it is).
    pub urls: Vec<UrlList>,
}

/// A loaded policy and what was wrong with its lists.
#[derive(Debug)]
pub struct Policy {
    pub rules: RuleSet,
    /// Malformed lines that were skipped (empty when strict).
    pub skipped: Vec<LineError>,
    /// Names left out because their key collided with another name's.
    pub collisions: Vec<Collision>,
    /// Lines read over all lists.
    pub lines: usize,
    /// What each list held, in the order given.
    pub lists: Vec<ListStats>,
}

/// One list's share of a policy.
#[derive(Clone, Debug)]
pub struct ListStats {
    pub path: String,
    pub kind: ListKind,
    /// Rules read (a hosts line may hold several).
    pub entries: usize,
    /// Malformed lines.
    pub skipped: usize,
}

/// Why a policy could not be loaded.
#[derive(Debug, Error)]
pub enum PolicyError {
    #[error(transparent)]
    Read(#[from] LoadError),
    /// Strict mode: the malformed lines, all of them (the message lists the first 20).
    #[error("{}", list_malformed(.0))]
    Malformed(Vec<LineError>),
}

impl PolicySource {
    /// Reads every list and builds the rule set under `seed`.
    pub fn load(&self, seed: u64) -> Result<Policy, PolicyError> {
        let mut rules = RuleSet::new(seed);
        let mut skipped = Vec::new();
        let mut collisions = Vec::new();
        let mut lines = 0;
        let lists = self
            .blocklists
            .iter()
            .map(|p| (p, ListKind::Block))
            .chain(self.allowlists.iter().map(|p| (p, ListKind::Allow)));
        let mut stats = Vec::new();
        for (path, kind) in lists {
            let parsed = blocklist::load_file(path, kind)?;
            stats.push(ListStats {
                path: path.display().to_string(),
                kind,
                entries: parsed.entries.len(),
                skipped: parsed.errors.len(),
            });
            lines += parsed.lines;
            skipped.extend(parsed.errors);
            collisions.extend(rules.extend_owned(parsed.entries));
        }
        for list in &self.urls {
            let bytes = match std::fs::read(&list.cache) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(LoadError { path: list.cache.display().to_string(), source }.into()),
            };
            let parsed = blocklist::parse_bytes(&bytes, &list.url, list.kind);
            stats.push(ListStats {
                path: list.url.clone(),
                kind: list.kind,
                entries: parsed.entries.len(),
                skipped: parsed.errors.len(),
            });
            lines += parsed.lines;
            skipped.extend(parsed.errors);
            collisions.extend(rules.extend_owned(parsed.entries));
        }
        if self.strict && !skipped.is_empty() {
            return Err(PolicyError::Malformed(skipped));
        }
        Ok(Policy { rules, skipped, collisions, lines, lists: stats })
    }
}

fn list_malformed(errors: &[LineError]) -> String {
    const SHOWN: usize = 20;
    let mut s = format!("{} malformed line(s), refused (--strict):", errors.len());
    for e in errors.iter().take(SHOWN) {
        s.push_str("\n  ");
        s.push_str(&e.to_string());
    }
    if errors.len() > SHOWN {
        let _ = write!(s, "\n  ... and {} more", errors.len() - SHOWN);
    }
    s
}
