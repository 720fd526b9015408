//! `namewall run --config FILE`: a TOML file that can say everything the
//! flags say. Its keys are `run`'s long flag names (`dns-action =
//! "refused"`, `blocklist = ["/etc/namewall/ads.txt"]`, `fail-closed =
//! true`); a flag given on the command line overrides the key.
//!
//! The file is turned into command-line arguments and parsed by the same
//! clap definition as the flags, so every value is checked the same way
//! and a bad one is reported with the same message, prefixed with the
//! file's name.

use std::path::{Path, PathBuf};

use thiserror::Error;

/// Keys whose values are paths: relative ones are resolved against the
/// config file's directory, not the daemon's working directory.
const PATH_KEYS: &[&str] = &["blocklist", "allowlist", "socket", "state-dir", "pin-dir", "events-log"];

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}:{message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: unknown key {key:?} (keys are `namewall run` long flag names: {known})")]
    UnknownKey { path: PathBuf, key: String, known: String },
    #[error("{path}: key {key:?}: {why}")]
    BadValue { path: PathBuf, key: String, why: String },
}

/// Command-line arguments equivalent to the config file at `path`, for
/// the keys in `known` (long flag names) that `given` (the flags on the
/// command line) does not name.
pub fn to_args(
    path: &Path,
    known: &[(String, bool)],
    given: &dyn Fn(&str) -> bool,
) -> Result<Vec<std::ffi::OsString>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        // toml's Display draws the line with a caret over several lines:
        // one line with line:column is what a log and a terminal want.
        let at = e.span().map_or_else(String::new, |span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("{line}:{col}: ")
        });
        ConfigError::Parse { path: path.to_owned(), message: format!("{at}TOML parse error: {}", e.message()) }
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for (key, value) in &table {
        let Some((_, takes_value)) = known.iter().find(|(k, _)| k == key) else {
            let names: Vec<&str> = known.iter().map(|(k, _)| k.as_str()).collect();
            return Err(ConfigError::UnknownKey { path: path.to_owned(), key: key.clone(), known: names.join(", ") });
        };
        if given(key) {
            continue;
        }
        let bad = |why: &str| ConfigError::BadValue { path: path.to_owned(), key: key.clone(), why: why.to_owned() };
        let flag = format!("--{key}");
        match value {
            toml::Value::Boolean(b) if !takes_value => {
                if *b {
                    out.push(flag.into());
                }
            }
            _ if !takes_value => return Err(bad("expected true or false")),
            toml::Value::Array(items) => {
                for item in items {
                    out.push(flag.clone().into());
                    out.push(scalar(key, item, base).ok_or_else(|| bad("expected a list of strings or numbers"))?);
                }
            }
            v => {
                out.push(flag.into());
                out.push(scalar(key, v, base).ok_or_else(|| bad("expected a string or a number"))?);
            }
        }
    }
    Ok(out)
}

fn scalar(key: &str, v: &toml::Value, base: &Path) -> Option<std::ffi::OsString> {
    match v {
        // `-` (stdout, for events-log) is no path.
        toml::Value::String(s) if PATH_KEYS.contains(&key) && s != "-" => Some(base.join(s).into_os_string()),
        toml::Value::String(s) => Some(s.into()),
        toml::Value::Integer(i) => Some(i.to_string().into()),
        toml::Value::Float(f) => Some(f.to_string().into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Vec<(String, bool)> {
        vec![
            ("iface".into(), true),
            ("blocklist".into(), true),
            ("fail-closed".into(), false),
            ("answer-ttl".into(), true),
        ]
    }

    fn args(text: &str, given: &[&str]) -> Result<Vec<String>, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("namewall.toml");
        std::fs::write(&path, text).unwrap();
        let given = |k: &str| given.contains(&k);
        to_args(&path, &known(), &given).map(|v| {
            v.into_iter().map(|s| s.into_string().unwrap().replace(&*dir.path().to_string_lossy(), "DIR")).collect()
        })
    }

    #[test]
    fn keys_become_flags() {
        let a = args(
            "iface = [\"eth0\", \"eth1\"]\nblocklist = \"lists/ads.txt\"\nfail-closed = true\nanswer-ttl = 30\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            a,
            [
                "--answer-ttl",
                "30",
                "--blocklist",
                "DIR/lists/ads.txt",
                "--fail-closed",
                "--iface",
                "eth0",
                "--iface",
                "eth1"
            ]
        );
        assert_eq!(args("fail-closed = false\nblocklist = \"/abs.txt\"\n", &[]).unwrap(), ["--blocklist", "/abs.txt"]);
        // Flags on the command line win: their keys are left out.
        assert_eq!(args("iface = [\"eth0\"]\nanswer-ttl = 30\n", &["iface"]).unwrap(), ["--answer-ttl", "30"]);
    }

    #[test]
    fn bad_files_say_where() {
        for (text, want) in [
            ("dns_action = \"x\"", "unknown key \"dns_action\""),
            ("fail-closed = \"yes\"", "key \"fail-closed\": expected true or false"),
            ("iface = [[\"a\"]]", "key \"iface\": expected a list"),
            ("iface = ", "namewall.toml:1:9: TOML parse error: string values must be quoted"),
        ] {
            let e = args(text, &[]).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("namewall.toml"), "{text}: {e}");
        }
    }
}
