//! Rules operators push through the control API, and the state file that
//! keeps them across reloads, restarts and crashes.
//!
//! The file is rewritten whole for every acknowledged change: a temporary
//! file beside it, fsync, rename over the old one, fsync of the directory.
//! A crash at any point leaves either the old file or the new one, never a
//! mix, and a change is acknowledged only after the rename is durable, so
//! `kill -9` loses nothing the daemon said it had done.

use std::{
    collections::BTreeMap,
    fs, io,
    path::{Path, PathBuf},
    sync::Arc,
};

use maps::Action;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::policy::{
    blocklist::{self, Entry, Origin, Scope},
    names::{Domain, NameError},
};

/// What the state file says it is; anything else is refused, not parsed.
const FORMAT: &str = "namewall-rules";
/// The state file's version; a newer one is refused.
const VERSION: u32 = 1;

/// One operator rule: block (with an action) or allow a name pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Block(Action),
    Allow,
}

impl Verdict {
    /// `block` or `allow`, as the state file and `list` write it.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Block(_) => "block",
            Verdict::Allow => "allow",
        }
    }

    /// The action a block names, if it names one (else the protocol's
    /// default applies).
    pub fn action_name(self) -> Option<&'static str> {
        match self {
            Verdict::Block(a) if a != Action::Default => Some(a.name()),
            _ => None,
        }
    }
}

/// A name as operators write it: `example.com` (the name and every name
/// below it) or `*.example.com` (only the names below it).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pattern {
    pub domain: Domain,
    pub scope: Scope,
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Self, NameError> {
        let (name, scope) = blocklist::split_wildcard(text.trim());
        Ok(Self { domain: Domain::parse(name)?, scope })
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.scope {
            Scope::NameAndSubdomains => write!(f, "{}", self.domain),
            Scope::SubdomainsOnly => write!(f, "*.{}", self.domain),
        }
    }
}

/// The operator's rules: at most one per pattern, the last verb wins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OperatorRules {
    rules: BTreeMap<Pattern, Verdict>,
}

/// Where operator rules come from in rule origins and messages.
pub const API_ORIGIN: &str = "api";

impl OperatorRules {
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn get(&self, p: &Pattern) -> Option<Verdict> {
        self.rules.get(p).copied()
    }

    /// Sets the rule for `p`; returns the one it replaced.
    pub fn set(&mut self, p: Pattern, v: Verdict) -> Option<Verdict> {
        self.rules.insert(p, v)
    }

    /// Forgets the rule for `p`; returns it.
    pub fn remove(&mut self, p: &Pattern) -> Option<Verdict> {
        self.rules.remove(p)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Pattern, Verdict)> {
        self.rules.iter().map(|(p, v)| (p, *v))
    }

    /// Reads the state file; a missing file is an empty rule set. A file
    /// that cannot be read or understood is an error: the daemon must not
    /// start and later overwrite the operator's rules with nothing.
    pub fn load(path: &Path) -> Result<Self, StateError> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => return Err(StateError::Read { path: path.to_owned(), source }),
        };
        let file: StateFile = serde_json::from_slice(&bytes)
            .map_err(|e| StateError::Corrupt { path: path.to_owned(), why: e.to_string() })?;
        if file.format != FORMAT || file.version > VERSION {
            return Err(StateError::Corrupt {
                path: path.to_owned(),
                why: format!(
                    "format {:?} version {}, this namewall reads {FORMAT:?} {VERSION}",
                    file.format, file.version
                ),
            });
        }
        let mut rules = BTreeMap::new();
        for (i, r) in file.rules.iter().enumerate() {
            let corrupt =
                |why: String| StateError::Corrupt { path: path.to_owned(), why: format!("rule {}: {why}", i + 1) };
            let p = Pattern::parse(&r.name).map_err(|e| corrupt(format!("{:?}: {e}", r.name)))?;
            let v = match (r.rule.as_str(), r.action.as_deref()) {
                ("allow", None) => Verdict::Allow,
                ("block", None) => Verdict::Block(Action::Default),
                ("block", Some(a)) => {
                    Verdict::Block(blocklist::parse_action(a).ok_or_else(|| corrupt(format!("action {a:?}")))?)
                }
                (other, _) => return Err(corrupt(format!("rule {other:?}"))),
            };
            rules.insert(p, v);
        }
        Ok(Self { rules })
    }

    /// Writes the state file atomically and durably (see the module docs).
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let file = StateFile {
            format: FORMAT.to_owned(),
            version: VERSION,
            rules: self
                .rules
                .iter()
                .map(|(p, v)| StoredRule {
                    name: p.to_string(),
                    rule: v.name().to_owned(),
                    action: v.action_name().map(str::to_owned),
                })
                .collect(),
        };
        let mut bytes = serde_json::to_vec_pretty(&file).expect("state serialises");
        bytes.push(b'\n');
        crate::files::write_atomically(path, &bytes)
            .map_err(|source| StateError::Write { path: path.to_owned(), source })
    }
}

/// A rule as a list entry, with the API as its origin.
pub fn entry(p: &Pattern, v: Verdict) -> Entry {
    Entry {
        domain: p.domain.clone(),
        scope: p.scope,
        allow: v == Verdict::Allow,
        action: match v {
            Verdict::Block(a) => a,
            Verdict::Allow => Action::Default,
        },
        origin: Origin { file: Arc::from(API_ORIGIN), line: 0 },
    }
}

/// The state file on disk.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    format: String,
    version: u32,
    rules: Vec<StoredRule>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredRule {
    name: String,
    rule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    action: Option<String>,
}

#[derive(Debug, Error)]
pub enum StateError {
    #[error("reading the state file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("the state file {path} is not a namewall state file ({why}); move it aside to start without it")]
    Corrupt { path: PathBuf, why: String },
    #[error("writing the state file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).unwrap()
    }

    #[test]
    fn round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rules.json");
        assert_eq!(OperatorRules::load(&path).unwrap(), OperatorRules::default(), "no file: no rules");
        let mut r = OperatorRules::default();
        r.set(p("Ads.Example."), Verdict::Block(Action::Default));
        r.set(p("*.track.example"), Verdict::Block(Action::Drop));
        r.set(p("ok.ads.example"), Verdict::Allow);
        r.set(p("bücher.example"), Verdict::Block(Action::Refused));
        r.save(&path).unwrap();
        assert_eq!(OperatorRules::load(&path).unwrap(), r);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"*.track.example\"") && text.contains("xn--bcher-kva.example"), "{text}");
        // Only the file itself is left in the directory.
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("rules.json")]);
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rules.json");
        for (bytes, want) in [
            (&b"{"[..], "not a namewall state file"),
            (br#"{"format":"other","version":1,"rules":[]}"#, "format \"other\""),
            (br#"{"format":"namewall-rules","version":9,"rules":[]}"#, "version 9"),
            (br#"{"format":"namewall-rules","version":1,"rules":[{"name":"a..b","rule":"block"}]}"#, "rule 1"),
            (br#"{"format":"namewall-rules","version":1,"rules":[{"name":"a.b","rule":"maybe"}]}"#, "\"maybe\""),
            (
                br#"{"format":"namewall-rules","version":1,"rules":[{"name":"a.b","rule":"block","action":"x"}]}"#,
                "\"x\"",
            ),
        ] {
            fs::write(&path, bytes).unwrap();
            let e = OperatorRules::load(&path).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rules.json");
        let mut r = OperatorRules::default();
        r.set(p("a.example"), Verdict::Allow);
        r.save(&path).unwrap();
        // The target is now a directory elsewhere: rename fails.
        let bad = dir.path().join("sub");
        fs::create_dir(&bad).unwrap();
        fs::write(bad.join("x"), b"").unwrap();
        assert!(r.save(&bad).is_err());
        assert_eq!(OperatorRules::load(&path).unwrap(), r);
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
    }
}
