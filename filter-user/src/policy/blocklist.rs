//! Block and allow lists in the formats people feed DNS filters:
//!
//! - plain names, one per line: `example.com` (the name and every name below it);
//! - `*.example.com`: only the names below it;
//! - hosts files: `0.0.0.0 a.example b.example`, `127.0.0.1 x`, `:: x`, `::1 x`,
//!   several names per line, trailing `# comments`;
//! - AdBlock/AdGuard DNS syntax: `||example.com^`, exceptions `@@||example.com^`,
//!   with the modifiers `$dnsrewrite=NXDOMAIN|REFUSED|0.0.0.0|::` and namewall's
//!   own `$action=nxdomain|refused|sinkhole|drop|reset`;
//! - `#` and `!` comments, `[Adblock Plus 2.0]` headers and blank lines;
//! - Unicode names, converted to punycode.
//!
//! A line that cannot be understood is reported with file, line, reason and
//! text, and skipped (or fails the load when the caller is strict). A rule
//! whose meaning we cannot honour (`AdGuard`'s `$important`, regular
//! expressions, cosmetic rules) is an error too, never a silent guess.

use std::{fmt, net::IpAddr, path::Path, sync::Arc};

use maps::Action;
use thiserror::Error;

use super::names::{Domain, NameError};

/// Whether a list blocks or allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListKind {
    Block,
    Allow,
}

impl ListKind {
    /// `block` or `allow`, as `status` and the metrics name lists.
    pub fn name(self) -> &'static str {
        match self {
            ListKind::Block => "block",
            ListKind::Allow => "allow",
        }
    }
}

/// Which names a rule covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// The name and every name below it.
    NameAndSubdomains,
    /// Only names below it (`*.example.com`).
    SubdomainsOnly,
}

/// Where a rule came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub file: Arc<str>,
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// One rule read from a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub domain: Domain,
    pub scope: Scope,
    pub allow: bool,
    /// For block rules; [`Action::Default`] defers to the protocol default.
    pub action: Action,
    pub origin: Origin,
}

/// Why a line was rejected.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LineErrorKind {
    #[error("{0}")]
    BadName(#[from] NameError),
    #[error("hosts entry maps to {0}, which is not a blocking address (0.0.0.0, 127.0.0.1, ::, ::1)")]
    NotSinkAddress(IpAddr),
    #[error("hosts entry without a name")]
    HostsWithoutName,
    #[error("hosts name {name:?}: {error} (the line's other names were kept)")]
    BadHostsName { name: String, error: NameError },
    #[error("several names without a hosts address in front")]
    SeveralNames,
    #[error("AdBlock rule without the '^' separator would match names that merely start with the text")]
    MissingSeparator,
    #[error("unsupported AdBlock modifier ${0}")]
    UnsupportedModifier(String),
    #[error("unsupported syntax: {0}")]
    Unsupported(&'static str),
    #[error("invalid UTF-8")]
    Utf8,
}

/// A rejected line: `file:line: reason: "text"`.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{origin}: {kind}: {text:?}")]
pub struct LineError {
    pub origin: Origin,
    pub text: String,
    pub kind: LineErrorKind,
}

/// What a list held.
#[derive(Debug, Default)]
pub struct Parsed {
    pub entries: Vec<Entry>,
    pub errors: Vec<LineError>,
    pub lines: usize,
}

/// Loading a list file failed as a whole.
#[derive(Debug, Error)]
#[error("reading {path}")]
pub struct LoadError {
    pub path: String,
    #[source]
    pub source: std::io::Error,
}

/// Reads a list file's bytes; the error names the file.
pub fn read_list(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|source| LoadError { path: path.display().to_string(), source })
}

/// Lists at least this big are parsed by several threads.
const PARALLEL_BYTES: usize = 1 << 20;

/// Parses a list held in memory; `file` names it in errors. A big list is
/// cut at line boundaries into one share per CPU (at most 8), parsed in
/// parallel and put back together in order, so it reads as if parsed
/// line by line: same entries, same order, same line numbers.
pub fn parse_bytes(bytes: &[u8], file: &str, kind: ListKind) -> Parsed {
    parse_bytes_of(bytes, &Arc::from(file), kind)
}

/// [`parse_bytes`] with the file's name as the entries' origins will share
/// it (reloads tell lists apart by that `Arc`).
pub fn parse_bytes_of(bytes: &[u8], file: &Arc<str>, kind: ListKind) -> Parsed {
    let file = Arc::clone(file);
    if bytes.is_empty() {
        return Parsed::default();
    }
    // A final newline ends the last line; it does not start another.
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get).min(8);
    if threads == 1 || body.len() < PARALLEL_BYTES {
        return parse_lines(body, &file, 0, kind);
    }
    // Share boundaries just after a newline, and the line each share starts at.
    let mut starts = vec![(0, 0)];
    let mut line = 0;
    let mut from = 0;
    for t in 1..threads {
        let want = body.len() * t / threads;
        let Some(nl) = memchr::memchr(b'\n', &body[want..]) else { break };
        let at = want + nl + 1;
        if at <= from {
            continue;
        }
        line += memchr::memchr_iter(b'\n', &body[from..at]).count();
        starts.push((at, line));
        from = at;
    }
    let shares: Vec<(&[u8], usize)> = starts
        .iter()
        .enumerate()
        .map(|(i, &(at, line))| {
            let end = starts.get(i + 1).map_or(body.len() + 1, |n| n.0);
            (&body[at..end - 1], line)
        })
        .collect();
    let parts: Vec<Parsed> = std::thread::scope(|s| {
        let handles: Vec<_> = shares
            .iter()
            .map(|&(share, line)| {
                let file = &file;
                s.spawn(move || parse_lines(share, file, line, kind))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a list parsing thread")).collect()
    });
    let mut out = Parsed::default();
    out.entries.reserve(parts.iter().map(|p| p.entries.len()).sum());
    for p in parts {
        out.entries.extend(p.entries);
        out.errors.extend(p.errors);
        out.lines += p.lines;
    }
    out
}

/// Parses the lines of `body` (no final newline), the first being line
/// `first + 1` of `file`.
fn parse_lines(body: &[u8], file: &Arc<str>, first: usize, kind: ListKind) -> Parsed {
    let mut out = Parsed::default();
    for (i, raw) in body.split(|&b| b == b'\n').enumerate() {
        parse_line_into(raw, file, first + i, kind, &mut out);
    }
    out
}

/// Parses line `i` (from 0) of `file`, `raw` without its newline, into
/// `out`: its rules, or what was wrong with it. Reloads call it for the
/// lines that changed; a whole list is these calls in order.
pub fn parse_line_into(raw: &[u8], file: &Arc<str>, i: usize, kind: ListKind, out: &mut Parsed) {
    let origin = Origin { file: Arc::clone(file), line: i + 1 };
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    out.lines += 1;
    let Ok(line) = std::str::from_utf8(raw) else {
        out.errors.push(LineError {
            origin,
            text: String::from_utf8_lossy(raw).into_owned(),
            kind: LineErrorKind::Utf8,
        });
        return;
    };
    let line = if i == 0 { line.trim_start_matches('\u{feff}') } else { line };
    let (rules, error) = parse_line_keeping(line, kind);
    out.entries.extend(rules.into_iter().map(|(domain, scope, allow, action)| Entry {
        domain,
        scope,
        allow,
        action,
        origin: origin.clone(),
    }));
    if let Some(kind) = error {
        out.errors.push(LineError { origin, text: line.to_owned(), kind });
    }
}

/// Names hosts files map for the machine itself; never rules.
const LOCAL_NAMES: &[&str] = &[
    "localhost",
    "localhost.localdomain",
    "local",
    "broadcasthost",
    "ip6-localhost",
    "ip6-loopback",
    "ip6-localnet",
    "ip6-mcastprefix",
    "ip6-allnodes",
    "ip6-allrouters",
    "ip6-allhosts",
];

type Rule = (Domain, Scope, bool, Action);

/// Parses one line: no rules (comment or blank), one, or several (hosts).
/// A hosts line with a bad name among good ones is an error here; see
/// [`parse_line_keeping`] for the lenient form lists are read with.
pub fn parse_line(line: &str, kind: ListKind) -> Result<Vec<Rule>, LineErrorKind> {
    match parse_line_keeping(line, kind) {
        (rules, None) => Ok(rules),
        (_, Some(e)) => Err(e),
    }
}

/// Parses one line, keeping the good names of a hosts line that also has a
/// bad one: the rules it could read, and what was wrong.
pub fn parse_line_keeping(line: &str, kind: ListKind) -> (Vec<Rule>, Option<LineErrorKind>) {
    match parse_one(line, kind) {
        Ok(LineRules::Rules(rules)) => (rules, None),
        Ok(LineRules::Partial(rules, e)) => (rules, Some(e)),
        Err(e) => (Vec::new(), Some(e)),
    }
}

/// What [`parse_one`] found.
enum LineRules {
    Rules(Vec<Rule>),
    /// A hosts line's good names, and the first bad one.
    Partial(Vec<Rule>, LineErrorKind),
}

fn parse_one(line: &str, kind: ListKind) -> Result<LineRules, LineErrorKind> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
        return Ok(LineRules::Rules(Vec::new()));
    }
    if line.starts_with('[') && line.ends_with(']') {
        // "[Adblock Plus 2.0]" and similar headers.
        return Ok(LineRules::Rules(Vec::new()));
    }
    let allow_list = kind == ListKind::Allow;
    if let Some(rest) = line.strip_prefix("@@") {
        let rest = rest.strip_prefix("||").ok_or(LineErrorKind::Unsupported("exception without '||'"))?;
        let (domain, scope, _) = parse_adblock(rest)?;
        return Ok(LineRules::Rules(vec![(domain, scope, true, Action::Default)]));
    }
    if let Some(rest) = line.strip_prefix("||") {
        let (domain, scope, action) = parse_adblock(rest)?;
        return Ok(LineRules::Rules(vec![(domain, scope, allow_list, action)]));
    }
    if line.starts_with('/') || line.starts_with('|') {
        return Err(LineErrorKind::Unsupported("regular expressions and URL patterns"));
    }
    if line.contains("##") || line.contains("#@#") {
        return Err(LineErrorKind::Unsupported("cosmetic (element hiding) rules"));
    }
    // Hosts files allow comments after the entry.
    let line = match line.find(" #").or_else(|| line.find("\t#")) {
        Some(i) => line[..i].trim_end(),
        None => line,
    };
    let mut tokens = line.split_whitespace();
    let first = tokens.next().unwrap_or_default();
    // An address, possibly with a zone ("fe80::1%lo0"), starts a hosts entry.
    if let Ok(addr) = first.split('%').next().unwrap_or_default().parse::<IpAddr>() {
        if !is_sink(addr) {
            return Err(LineErrorKind::NotSinkAddress(addr));
        }
        let mut rules = Vec::new();
        let mut bad = None;
        let mut any = false;
        for name in tokens {
            any = true;
            if LOCAL_NAMES.contains(&name.to_ascii_lowercase().as_str()) || name.parse::<IpAddr>().is_ok() {
                continue;
            }
            match Domain::parse(name) {
                Ok(d) => rules.push((d, Scope::NameAndSubdomains, allow_list, Action::Default)),
                Err(error) if bad.is_none() => bad = Some(LineErrorKind::BadHostsName { name: name.to_owned(), error }),
                Err(_) => {}
            }
        }
        if !any {
            return Err(LineErrorKind::HostsWithoutName);
        }
        return Ok(match bad {
            Some(e) => LineRules::Partial(rules, e),
            None => LineRules::Rules(rules),
        });
    }
    if tokens.next().is_some() {
        return Err(LineErrorKind::SeveralNames);
    }
    let (name, scope) = split_wildcard(first);
    Ok(LineRules::Rules(vec![(Domain::parse(name)?, scope, allow_list, Action::Default)]))
}

/// Splits a leading `*.` ("only the names below") off a name.
pub fn split_wildcard(name: &str) -> (&str, Scope) {
    match name.strip_prefix("*.") {
        Some(rest) => (rest, Scope::SubdomainsOnly),
        None => (name, Scope::NameAndSubdomains),
    }
}

/// Addresses hosts-format blocklists point blocked names at.
fn is_sink(addr: IpAddr) -> bool {
    addr.is_unspecified() || addr.is_loopback()
}

/// `name^`, `name^|`, `name^$modifiers` after the leading `||`.
fn parse_adblock(rest: &str) -> Result<(Domain, Scope, Action), LineErrorKind> {
    let (name, tail) = rest.split_once('^').ok_or(LineErrorKind::MissingSeparator)?;
    let tail = tail.strip_prefix('|').unwrap_or(tail);
    let mut action = Action::Default;
    if !tail.is_empty() {
        let mods = tail.strip_prefix('$').ok_or(LineErrorKind::Unsupported("text after '^'"))?;
        for m in mods.split(',') {
            action = match m.split_once('=') {
                Some(("dnsrewrite", v)) => match v.to_ascii_uppercase().as_str() {
                    "NXDOMAIN" => Action::Nxdomain,
                    "REFUSED" => Action::Refused,
                    "0.0.0.0" | "::" => Action::Sinkhole,
                    _ => return Err(LineErrorKind::UnsupportedModifier(m.to_owned())),
                },
                Some(("action", v)) => {
                    parse_action(v).ok_or_else(|| LineErrorKind::UnsupportedModifier(m.to_owned()))?
                }
                _ => return Err(LineErrorKind::UnsupportedModifier(m.to_owned())),
            };
        }
    }
    let (name, scope) = split_wildcard(name);
    Ok((Domain::parse(name)?, scope, action))
}

/// Parses an action name as lists and flags write it: `nxdomain`,
/// `refused`, `sinkhole`, `drop` or `reset` (for TLS; DNS over UDP has no
/// connection to reset and drops instead). `default` is not an action.
pub fn parse_action(text: &str) -> Option<Action> {
    Action::ALL.into_iter().filter(|a| *a != Action::Default).find(|a| a.name().eq_ignore_ascii_case(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Result<Vec<(String, Scope, bool, Action)>, LineErrorKind> {
        parse_line(line, ListKind::Block)
            .map(|v| v.into_iter().map(|(d, s, a, act)| (d.to_string(), s, a, act)).collect())
    }

    fn ok(name: &str) -> (String, Scope, bool, Action) {
        (name.to_owned(), Scope::NameAndSubdomains, false, Action::Default)
    }

    type Parsed = (String, Scope, bool, Action);

    #[test]
    fn formats() {
        use Scope::*;
        let cases: Vec<(&str, Vec<Parsed>)> = vec![
            ("", vec![]),
            ("   ", vec![]),
            ("# comment", vec![]),
            ("! adblock comment", vec![]),
            ("[Adblock Plus 2.0]", vec![]),
            ("example.com", vec![ok("example.com")]),
            ("  Example.COM.  ", vec![ok("example.com")]),
            ("*.example.com", vec![("example.com".into(), SubdomainsOnly, false, Action::Default)]),
            ("0.0.0.0 ads.example", vec![ok("ads.example")]),
            ("127.0.0.1\tads.example  # tracker", vec![ok("ads.example")]),
            ("0.0.0.0 a.example b.example c.example", vec![ok("a.example"), ok("b.example"), ok("c.example")]),
            (":: ads.example", vec![ok("ads.example")]),
            ("::1 ads.example", vec![ok("ads.example")]),
            ("127.0.0.1 localhost", vec![]),
            ("::1 localhost ip6-localhost ip6-loopback", vec![]),
            ("0.0.0.0 0.0.0.0", vec![]),
            ("||ads.example^", vec![ok("ads.example")]),
            ("||ads.example^|", vec![ok("ads.example")]),
            ("||*.ads.example^", vec![("ads.example".into(), SubdomainsOnly, false, Action::Default)]),
            ("@@||good.example^", vec![("good.example".into(), NameAndSubdomains, true, Action::Default)]),
            ("||x.example^$dnsrewrite=REFUSED", vec![("x.example".into(), NameAndSubdomains, false, Action::Refused)]),
            ("||x.example^$dnsrewrite=0.0.0.0", vec![("x.example".into(), NameAndSubdomains, false, Action::Sinkhole)]),
            ("||x.example^$action=drop", vec![("x.example".into(), NameAndSubdomains, false, Action::Drop)]),
            ("bücher.de", vec![ok("xn--bcher-kva.de")]),
            ("0.0.0.0 bücher.de", vec![ok("xn--bcher-kva.de")]),
        ];
        for (line, want) in cases {
            assert_eq!(one(line), Ok(want), "{line:?}");
        }
    }

    #[test]
    fn malformed_lines() {
        let long_label = "a".repeat(64);
        let cases: Vec<(&str, LineErrorKind)> = vec![
            ("192.168.1.1 printer.lan", LineErrorKind::NotSinkAddress("192.168.1.1".parse().unwrap())),
            ("0.0.0.0", LineErrorKind::HostsWithoutName),
            ("a.example b.example", LineErrorKind::SeveralNames),
            ("||ads.example", LineErrorKind::MissingSeparator),
            ("||ads.example^$important", LineErrorKind::UnsupportedModifier("important".into())),
            ("||ads.example^$dnsrewrite=1.2.3.4", LineErrorKind::UnsupportedModifier("dnsrewrite=1.2.3.4".into())),
            ("||ads.example^$action=explode", LineErrorKind::UnsupportedModifier("action=explode".into())),
            ("||ads.example^junk", LineErrorKind::Unsupported("text after '^'")),
            ("@@good.example", LineErrorKind::Unsupported("exception without '||'")),
            ("/ads[0-9]+/", LineErrorKind::Unsupported("regular expressions and URL patterns")),
            ("|https://x.example/", LineErrorKind::Unsupported("regular expressions and URL patterns")),
            ("example.com##.banner", LineErrorKind::Unsupported("cosmetic (element hiding) rules")),
            ("exa mple", LineErrorKind::SeveralNames),
            ("a..example", LineErrorKind::BadName(NameError::EmptyLabel)),
            ("bad!name.example", LineErrorKind::BadName(NameError::BadChar('!'))),
            (
                "0.0.0.0 bad/name",
                LineErrorKind::BadHostsName { name: "bad/name".into(), error: NameError::BadChar('/') },
            ),
            ("||x.example^$action=default", LineErrorKind::UnsupportedModifier("action=default".into())),
            ("10.1.2.3", LineErrorKind::NotSinkAddress("10.1.2.3".parse().unwrap())),
            ("ex*ample.com", LineErrorKind::BadName(NameError::Wildcard)),
            (&long_label, LineErrorKind::BadName(NameError::LabelTooLong(long_label.clone()))),
        ];
        for (line, want) in cases {
            assert_eq!(one(line), Err(want), "{line:?}");
        }
    }

    #[test]
    fn allowlist_lines_allow() {
        let r = parse_line("good.example", ListKind::Allow).unwrap();
        assert!(r[0].2);
        let r = parse_line("||good.example^", ListKind::Allow).unwrap();
        assert!(r[0].2);
    }

    #[test]
    fn errors_name_file_and_line_and_keep_going() {
        let text = b"# list\nads.example\n\nbad name here\n\xff\xfe\n0.0.0.0 t.example\r\n";
        let p = parse_bytes(text, "lists/block.txt", ListKind::Block);
        assert_eq!(p.lines, 6);
        let names: Vec<_> = p.entries.iter().map(|e| (e.domain.to_string(), e.origin.line)).collect();
        assert_eq!(names, vec![("ads.example".into(), 2), ("t.example".into(), 6)]);
        assert_eq!(p.errors.len(), 2);
        assert_eq!(
            p.errors[0].to_string(),
            "lists/block.txt:4: several names without a hosts address in front: \"bad name here\""
        );
        assert_eq!(p.errors[1].origin.line, 5);
        assert_eq!(p.errors[1].kind, LineErrorKind::Utf8);
    }

    #[test]
    fn a_bad_hosts_name_keeps_the_good_ones() {
        let p = parse_bytes(b"0.0.0.0 a.example bad!name b.example\n", "hosts", ListKind::Block);
        let names: Vec<_> = p.entries.iter().map(|e| e.domain.to_string()).collect();
        assert_eq!(names, ["a.example", "b.example"]);
        assert_eq!(p.errors.len(), 1);
        assert_eq!(
            p.errors[0].to_string(),
            "hosts:1: hosts name \"bad!name\": character '!' is not allowed in a domain name (the line's other names were kept): \"0.0.0.0 a.example bad!name b.example\""
        );
    }

    #[test]
    fn bom_is_ignored() {
        let p = parse_bytes("\u{feff}ads.example\n".as_bytes(), "f", ListKind::Block);
        assert_eq!(p.entries.len(), 1);
        assert!(p.errors.is_empty());
    }
}
