//! The messages of the control API: one JSON request per connection, one
//! JSON reply (with `events --follow`, event lines after it).
//!
//! Requests are bounded in size ([`MAX_REQUEST`]) and in entries
//! ([`MAX_ENTRIES`]); a request is checked whole before anything changes.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Where `namewall run` listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/namewall/namewall.sock";
/// Largest request the daemon reads, newline included.
pub const MAX_REQUEST: usize = 4 << 20;
/// Most names one request may carry.
pub const MAX_ENTRIES: usize = 100_000;
/// Rules a `list` request returns unless it asks for another limit.
pub const DEFAULT_LIST_LIMIT: usize = 1000;
/// Events `events` lists unless asked otherwise.
pub const DEFAULT_EVENTS: usize = 20;
/// Rules `stats` lists by hits unless asked otherwise.
pub const DEFAULT_TOP: usize = 10;

/// A request, as JSON: `{"verb": "block", "domains": ["ads.example"]}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Block names (`example.com`: it and every name below; `*.example.com`:
    /// only the names below), with an action or the protocol's default.
    Block {
        domains: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        action: Option<String>,
    },
    /// Allow names: never blocked, whatever the lists say.
    Allow { domains: Vec<String> },
    /// Forget the rules pushed for names (block or allow); list rules stay.
    Unblock { domains: Vec<String> },
    /// The rules in force, lists' and operator's, optionally filtered.
    List {
        #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
        pattern: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    /// Counters and the top rules by hits.
    Stats {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        top: Option<usize>,
    },
    /// Re-read every list and swap the rule set.
    Reload,
    /// What the daemon runs with.
    Status,
    /// Detach from every interface, remove the pinned state and exit.
    Stop,
    /// The last block events; with `follow`, every new one after them, one
    /// JSON line each, until the client hangs up.
    Events {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last: Option<usize>,
        #[serde(default)]
        follow: bool,
    },
}

/// A reply: `{"ok": true, "reply": {...}}` or `{"ok": false, "error": {...}}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Reply>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl Response {
    pub fn ok(reply: Reply) -> Self {
        Self { ok: true, reply: Some(reply), error: None }
    }

    pub fn err(e: ErrorBody) -> Self {
        Self { ok: false, reply: None, error: Some(e) }
    }
}

/// Why a request was refused; nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Error)]
#[error("{message}")]
pub struct ErrorBody {
    pub message: String,
    /// The offending entry of a batch: its position (1-based) and text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

impl ErrorBody {
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), entry: None, domain: None }
    }

    /// Entry `index` (0-based) of a batch, `domain`, was wrong.
    pub fn at(index: usize, domain: &str, why: impl std::fmt::Display) -> Self {
        Self {
            message: format!("entry {} ({domain:?}): {why}; nothing was changed", index + 1),
            entry: Some(index + 1),
            domain: Some(domain.to_owned()),
        }
    }
}

/// What a request did or found.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reply {
    Changed(Changed),
    Rules(RuleList),
    Stats(Stats),
    Reloaded(Reloaded),
    Status(Status),
    /// The daemon is detaching and exiting.
    Stopping,
    Events(EventList),
}

/// Recent block events, and what became of the others.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EventList {
    pub events: Vec<EventView>,
    /// Sequence number of the last event listed (followers get later ones).
    pub last_seq: u64,
    /// Events logged since the start, events over the kernel's per-second
    /// budget (not sent) and events the ring buffer had no room for.
    pub written: u64,
    pub over_budget: u64,
    pub lost: u64,
}

/// One block, as written to the log and sent to the CLI.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventView {
    /// Numbers events from 1 since the daemon started.
    #[serde(default)]
    pub seq: u64,
    /// RFC 3339, UTC, microseconds.
    pub time: String,
    pub interface: String,
    /// Source address and port.
    pub client: String,
    /// Destination address and port.
    pub server: String,
    /// `dns` (UDP), `dns-tcp` or `tls`.
    pub protocol: String,
    /// The name asked for: the QNAME, or the server name as sent.
    pub name: String,
    /// The deciding rule (`example.com`, `*.example.com`), or `policy:ech`
    /// / `policy:no-sni` when a policy blocked.
    pub rule: String,
    /// What the packet got: nxdomain, refused, sinkhole, drop, reset.
    pub action: String,
}

/// A block, allow or unblock batch, applied.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Changed {
    /// Patterns changed, as normalised.
    pub changed: Vec<String>,
    /// Patterns that already had this rule.
    pub unchanged: Vec<String>,
    /// Things worth knowing, e.g. a name a list still blocks after unblock.
    pub notes: Vec<String>,
    pub operator_rules: usize,
}

/// One rule in force.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RuleView {
    /// `example.com` or `*.example.com`.
    pub pattern: String,
    /// `block` or `allow`.
    pub rule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// `api` or `file:line`.
    pub source: String,
    pub hits: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RuleList {
    pub rules: Vec<RuleView>,
    /// Rules that matched, before `limit`.
    pub matched: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stats {
    /// Counter name to total since the program was loaded.
    pub counters: std::collections::BTreeMap<String, u64>,
    pub packets: u64,
    pub top_rules: Vec<RuleView>,
    /// Block events logged since the daemon started (those over the
    /// budget or lost are the `event_over_budget` and `event_lost` counters).
    #[serde(default)]
    pub events_written: u64,
    /// Per interface (attached ones, named; see the metrics on shared
    /// rows): packets by verdict (pass, drop, answer, reset).
    #[serde(default)]
    pub interfaces: std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Reloaded {
    pub rules: usize,
    pub list_rules: usize,
    pub operator_rules: usize,
    pub skipped_lines: usize,
    /// Lines added to or removed from the lists that were read; `None`
    /// when every list was read whole.
    #[serde(default)]
    pub changed_lines: Option<usize>,
    /// Rules in the kernel that changed (new, different or gone).
    #[serde(default)]
    pub changed_rules: usize,
    pub duration_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    pub uptime_s: u64,
    pub interfaces: Vec<String>,
    pub xdp_mode: String,
    pub rules: usize,
    pub list_rules: usize,
    pub operator_rules: usize,
    pub lists: Vec<String>,
    pub state_file: String,
    pub reloads: u64,
    pub reload_failures: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reload_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reload_ago_s: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_as_json() {
        let r: Request = serde_json::from_str(r#"{"verb":"block","domains":["a.example"],"action":"drop"}"#).unwrap();
        assert_eq!(r, Request::Block { domains: vec!["a.example".into()], action: Some("drop".into()) });
        let r: Request = serde_json::from_str(r#"{"verb":"list","match":"*.ads.*"}"#).unwrap();
        assert_eq!(r, Request::List { pattern: Some("*.ads.*".into()), limit: None });
        assert_eq!(serde_json::from_str::<Request>(r#"{"verb":"status"}"#).unwrap(), Request::Status);
        for bad in [
            r#"{"verb":"explode"}"#,
            r#"{"verb":"block"}"#,
            r#"{"verb":"block","domains":"a.example"}"#,
            r#"{"verb":"allow","domains":[],"action":"drop"}"#,
            r#"{"domains":[]}"#,
            "[]",
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
        }
        let text = serde_json::to_string(&Request::Unblock { domains: vec!["x".into()] }).unwrap();
        assert_eq!(text, r#"{"verb":"unblock","domains":["x"]}"#);
    }
}
