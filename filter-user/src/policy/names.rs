//! Domain names as operators write them: normalised to the lower-case ASCII
//! (punycode) form the kernel compares, and turned into rule keys with the
//! shared hash in `maps::parse::name`.

use std::fmt::{self, Write as _};

use maps::parse::name::{MAX_LABEL_LEN, MAX_NAME_WIRE};
use thiserror::Error;

/// Why a text is not a domain name we can match.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum NameError {
    #[error("empty name")]
    Empty,
    #[error("empty label (two dots in a row, or a leading dot)")]
    EmptyLabel,
    #[error("label {0:?} is longer than 63 bytes")]
    LabelTooLong(String),
    #[error("name is longer than 253 characters (255 bytes on the wire)")]
    TooLong,
    #[error("character {0:?} is not allowed in a domain name")]
    BadChar(char),
    #[error("not a valid internationalised name: {0}")]
    Idna(String),
    #[error("{0:?} is an IP address, not a domain name")]
    IpAddress(String),
    #[error("wildcard '*' is only allowed as the whole first label (\"*.example.com\")")]
    Wildcard,
}

/// A normalised domain name: lower-case ASCII, punycode for Unicode labels,
/// no trailing dot. `Example.COM.` and `example.com` are the same `Domain`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Domain(String);

impl Domain {
    /// Parses and normalises a name as written in a list or on a command line.
    pub fn parse(text: &str) -> Result<Domain, NameError> {
        let text = text.trim();
        // A trailing dot names the root explicitly: the same name.
        let text = text.strip_suffix('.').unwrap_or(text);
        if text.is_empty() {
            return Err(NameError::Empty);
        }
        if text.parse::<std::net::IpAddr>().is_ok() {
            return Err(NameError::IpAddress(text.to_owned()));
        }
        if text.contains('*') {
            return Err(NameError::Wildcard);
        }
        let ascii = if text.is_ascii() {
            text.to_ascii_lowercase()
        } else {
            idna::domain_to_ascii(text).map_err(|e| NameError::Idna(e.to_string()))?
        };
        let mut wire_len = 1;
        for label in ascii.split('.') {
            if label.is_empty() {
                return Err(NameError::EmptyLabel);
            }
            if label.len() > MAX_LABEL_LEN {
                return Err(NameError::LabelTooLong(label.to_owned()));
            }
            if let Some(c) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')) {
                return Err(NameError::BadChar(c));
            }
            wire_len += 1 + label.len();
        }
        if wire_len > MAX_NAME_WIRE {
            return Err(NameError::TooLong);
        }
        Ok(Domain(ascii))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Number of labels.
    pub fn labels(&self) -> usize {
        self.0.split('.').count()
    }

    /// Wire format (RFC 1035 §3.1), root label included.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.len() + 2);
        for label in self.0.split('.') {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        out
    }

    /// The rule key of this name under `seed`: the same function the kernel runs.
    pub fn key(&self, seed: u64) -> u64 {
        // The chain the kernel walks, from the root down, straight from the
        // text: no wire copy to build (a list of millions is keyed faster).
        self.0.rsplit('.').fold(maps::parse::name::root_key(seed), |k, label| {
            maps::parse::name::child_key(k, maps::parse::name::label_hash(seed, label.as_bytes()))
        })
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Renders a wire-format name for people: labels joined by dots, bytes
/// outside printable ASCII and dots inside labels escaped as `\DDD`
/// (RFC 4343 §2.1), the root as ".".
pub fn wire_to_text(wire: &[u8]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while let Some(&len) = wire.get(i) {
        if len == 0 || len & 0xc0 != 0 {
            break;
        }
        let Some(label) = wire.get(i + 1..i + 1 + len as usize) else { break };
        if !out.is_empty() {
            out.push('.');
        }
        push_escaped(&mut out, label, b".\\");
        i += 1 + len as usize;
    }
    if out.is_empty() { ".".to_owned() } else { out }
}

/// Renders a server name as sent (dotted text) for people: printable ASCII
/// as is, other bytes as `\DDD`.
pub fn text_to_display(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    push_escaped(&mut out, name, b"\\");
    out
}

/// Appends `bytes` to `out`: printable ASCII as is, `escaped` bytes and
/// the others as `\DDD`.
fn push_escaped(out: &mut String, bytes: &[u8], escaped: &[u8]) {
    for &b in bytes {
        if b.is_ascii_graphic() && !escaped.contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "\\{b:03}");
        }
    }
}

/// The rightmost `labels` labels of a dotted name.
pub fn suffix(name: &str, labels: usize) -> &str {
    if labels == 0 {
        return ".";
    }
    let mut seen = 0;
    for (i, b) in name.bytes().enumerate().rev() {
        if b == b'.' {
            seen += 1;
            if seen == labels {
                return &name[i + 1..];
            }
        }
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_the_wire_parser() {
        for name in
            ["a", "example.com", "www.ads.example.co.uk", "x.y-z.ab_c.example", &format!("{}.example", "l".repeat(63))]
        {
            let d = Domain::parse(name).unwrap();
            for seed in [0, 1, 0xdead_beef_cafe_f00d] {
                let (k, _) = maps::parse::name::wire_name_key(seed, &d.to_wire()).unwrap();
                assert_eq!(d.key(seed), k, "{name}");
            }
        }
    }

    #[test]
    fn normalises() {
        let cases = [
            ("Example.COM.", "example.com"),
            ("  ads.example.com  ", "ads.example.com"),
            ("bücher.de", "xn--bcher-kva.de"),
            ("BÜCHER.de", "xn--bcher-kva.de"),
            ("xn--bcher-kva.de", "xn--bcher-kva.de"),
            ("_dmarc.example.com", "_dmarc.example.com"),
            ("例え.テスト", "xn--r8jz45g.xn--zckzah"),
            ("com", "com"),
        ];
        for (input, want) in cases {
            assert_eq!(Domain::parse(input).map(|d| d.0), Ok(want.to_owned()), "{input}");
        }
    }

    #[test]
    fn rejects() {
        let long_label = "a".repeat(64);
        let long_name = ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(62)].join(".");
        let cases: Vec<(&str, NameError)> = vec![
            ("", NameError::Empty),
            (".", NameError::Empty),
            ("a..b", NameError::EmptyLabel),
            (".a.b", NameError::EmptyLabel),
            (&long_label, NameError::LabelTooLong(long_label.clone())),
            (&long_name, NameError::TooLong),
            ("exa mple.com", NameError::BadChar(' ')),
            ("example.com/path", NameError::BadChar('/')),
            ("10.0.0.1", NameError::IpAddress("10.0.0.1".into())),
            ("::1", NameError::IpAddress("::1".into())),
            ("*.example.com", NameError::Wildcard),
            ("ex*ample.com", NameError::Wildcard),
        ];
        for (input, want) in cases {
            assert_eq!(Domain::parse(input), Err(want), "{input:?}");
        }
        assert!(matches!(Domain::parse("xn--a.com"), Err(NameError::Idna(_)) | Ok(_)));
    }

    #[test]
    fn longest_name_is_accepted() {
        let name = ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61)].join(".");
        let d = Domain::parse(&name).unwrap();
        assert_eq!(d.to_wire().len(), 255);
        assert_eq!(d.labels(), 4);
    }

    #[test]
    fn keys_ignore_case_and_trailing_dot() {
        let a = Domain::parse("WWW.Example.com.").unwrap();
        let b = Domain::parse("www.example.com").unwrap();
        assert_eq!(a.key(42), b.key(42));
    }

    #[test]
    fn wire_round_trip_and_escapes() {
        let d = Domain::parse("a.b-c.example").unwrap();
        assert_eq!(wire_to_text(&d.to_wire()), "a.b-c.example");
        assert_eq!(wire_to_text(&[0]), ".");
        assert_eq!(wire_to_text(&[3, b'a', b'.', 0xff, 0]), "a\\046\\255");
    }

    #[test]
    fn suffixes() {
        assert_eq!(suffix("a.b.example.com", 2), "example.com");
        assert_eq!(suffix("a.b.example.com", 4), "a.b.example.com");
        assert_eq!(suffix("a.b.example.com", 9), "a.b.example.com");
        assert_eq!(suffix("com", 1), "com");
    }
}
