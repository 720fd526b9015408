//! The daemon: what `namewall run` holds while it filters (the loaded
//! program, the rules from the lists, the operator's rules), how it
//! answers control requests and reloads, and what it reports.
//!
//! Every change is checked whole first, persisted second and put in the
//! kernel third, so a refused request changes nothing and an acknowledged
//! one survives a crash.
//!
//! - [`operator`]: the rules operators push, and the state file keeping them;
//! - `effective`: the lists' rules with the operator's on top, as the kernel
//!   holds them;
//! - `requests`: block, allow, unblock, list, stats, status, metrics
//!   (`views`: rules as those show them);
//! - `reload`: the lists read again and the kernel moved to the new rules;
//! - [`events`]: the log of blocks the kernel reports;
//! - [`metrics`]: Prometheus metrics, and [`metrics_http`] serving them;
//! - [`serve`]: the serving loop (signals, control requests, timers).

mod effective;
pub mod events;
pub mod metrics;
pub mod metrics_http;
pub mod operator;
mod reload;
mod requests;
pub mod serve;
mod views;

use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use thiserror::Error;
use tracing::{info, warn};

pub use self::{
    effective::effective_arrays,
    reload::{ReloadError, ReloadFailure},
};
use self::{
    events::EventLog,
    operator::{OperatorRules, StateError},
    views::views_of_list_rule,
};
use crate::{
    dataplane::{Filter, FilterError},
    policy::{Policy, PolicySource, fetch},
};

/// How the daemon was started, for `status`.
#[derive(Clone, Debug, Default)]
pub struct RunInfo {
    pub interfaces: Vec<String>,
    pub xdp_mode: String,
}

/// Reload bookkeeping, for `status` and metrics.
#[derive(Clone, Debug, Default)]
pub struct ReloadStats {
    pub reloads: u64,
    pub failures: u64,
    pub last_error: Option<String>,
    pub last_success: Option<Instant>,
    /// The same moment as Unix time, for metrics.
    pub last_success_unix: f64,
    pub last_duration: Duration,
}

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Why the daemon could not start with its state.
#[derive(Debug, Error)]
pub enum DaemonError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("installing the rule set")]
    Install(#[from] FilterError),
}

/// What `namewall run` holds while it filters.
pub struct Daemon {
    pub filter: Filter,
    source: PolicySource,
    lists: Policy,
    operator: OperatorRules,
    state_path: PathBuf,
    /// A reload whose lists have malformed lines loads without them
    /// instead of keeping the old set.
    skip_bad_lines: bool,
    info: RunInfo,
    started: Instant,
    pub reloads: ReloadStats,
    pub events: EventLog,
    clock: events::Clock,
    /// Rule keys of the operator's rules, to name them in events.
    operator_keys: HashMap<u64, String>,
    /// The last walk of the active set for hit counts (see `sorted_hits`).
    hits_cache: Option<(Instant, Vec<(u64, u32)>)>,
    /// How fetching each list URL went.
    pub fetches: std::collections::BTreeMap<String, FetchState>,
}

/// How fetching one list URL went.
#[derive(Clone, Debug, Default)]
pub struct FetchState {
    pub failures: u64,
    pub last_error: Option<String>,
    /// When a fetch last succeeded (a new copy or "not modified").
    pub last_ok: Option<Instant>,
}

impl Daemon {
    /// Installs the lists' rules with the operator's (from `state_path`) on
    /// top, in the loaded `filter`.
    pub fn start(
        mut filter: Filter,
        source: PolicySource,
        lists: Policy,
        state_path: PathBuf,
        skip_bad_lines: bool,
        info: RunInfo,
        events: EventLog,
    ) -> Result<Self, DaemonError> {
        let operator = OperatorRules::load(&state_path)?;
        let (keys, values) = effective_arrays(&lists.rules, &operator);
        filter.install_arrays(lists.rules.seed(), &keys, &values)?;
        Ok(Self {
            filter,
            source,
            lists,
            operator,
            state_path,
            skip_bad_lines,
            info,
            started: Instant::now(),
            reloads: ReloadStats {
                last_success: Some(Instant::now()),
                last_success_unix: unix_now(),
                ..ReloadStats::default()
            },
            events,
            clock: events::Clock::now(),
            operator_keys: HashMap::new(),
            hits_cache: None,
            fetches: std::collections::BTreeMap::new(),
        }
        .with_operator_keys())
    }

    /// Recomputes the operator's rule keys (after a change).
    fn with_operator_keys(mut self) -> Self {
        self.index_operator_keys();
        self
    }

    fn index_operator_keys(&mut self) {
        let seed = self.lists.rules.seed();
        self.operator_keys = self.operator.iter().map(|(p, _)| (p.domain.key(seed), p.to_string())).collect();
    }

    /// Records how fetching each list URL went; reloads when one brought
    /// a new copy. Returns whether it did.
    pub fn record_fetches(&mut self, results: Vec<(String, Result<fetch::Refreshed, fetch::RefreshError>)>) -> bool {
        let changed = self.note_fetches(results);
        if changed {
            let _ = self.reload("list fetched");
        }
        changed
    }

    /// [`Daemon::record_fetches`] without the reload (at start, the first
    /// load already read what was fetched); whether a copy was new.
    pub fn note_fetches(&mut self, results: Vec<(String, Result<fetch::Refreshed, fetch::RefreshError>)>) -> bool {
        let mut changed = false;
        for (url, r) in results {
            let st = self.fetches.entry(url.clone()).or_default();
            match r {
                Ok(done) => {
                    st.last_ok = Some(Instant::now());
                    st.last_error = None;
                    if let fetch::Refreshed::Updated { rules, skipped } = done {
                        changed = true;
                        info!(url, rules, skipped, "list fetched");
                    }
                }
                Err(e) => {
                    st.failures += 1;
                    warn!(url, "fetching a list failed, the last good copy (if any) stays in force: {e}");
                    st.last_error = Some(e.to_string());
                }
            }
        }
        changed
    }

    /// The pattern of the rule with `key`: a pushed rule's, or a list's.
    pub fn rule_name(&self, key: u64) -> Option<String> {
        self.operator_keys.get(&key).cloned().or_else(|| {
            self.lists.rules.get(key).and_then(|r| views_of_list_rule(r, 0).into_iter().next()).map(|v| v.pattern)
        })
    }

    /// Logs one block event from the kernel.
    pub fn record_event(&mut self, e: &maps::layout::event::Event) {
        let iface = self.events.ifname(e.ifindex);
        let v = events::view(e, self.clock, &|key| self.rule_name(key), &|_| iface.clone());
        self.events.record(v);
    }

    pub fn operator_rules(&self) -> &OperatorRules {
        &self.operator
    }

    pub fn lists(&self) -> &Policy {
        &self.lists
    }

    pub fn source(&self) -> &PolicySource {
        &self.source
    }
}
