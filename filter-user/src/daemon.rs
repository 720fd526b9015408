//! What `namewall run` holds while it filters: the loaded program, the
//! rules from the lists, the operator's rules, and the answers to control
//! requests. Every change is checked whole first, persisted second and put
//! in the kernel third, so a refused request changes nothing and an
//! acknowledged one survives a crash.

use std::{
    collections::{BTreeSet, HashMap},
    fmt::Write as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use maps::{Action, Rule, rule::flags};
use thiserror::Error;
use tracing::{info, warn};

use crate::{
    control::{
        self, Changed, DEFAULT_EVENTS, DEFAULT_LIST_LIMIT, DEFAULT_TOP, ErrorBody, Reloaded, Reply, Request, RuleList,
        RuleView,
    },
    dataplane::{Filter, FilterError, counters as stats, sys},
    events::{self, EventLog},
    metrics,
    policy::{
        LineChanges, Policy, PolicySource, Reload,
        blocklist::{self, Scope},
        fetch,
        names::Domain,
        rules::{self, CompiledRule, RuleSet},
    },
    state::{self, OperatorRules, Pattern, Verdict},
};

/// How long a walk of the active set for hit counts is reused.
const HITS_FRESH_FOR: Duration = Duration::from_secs(5);

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
    State(#[from] state::StateError),
    #[error("installing the rule set")]
    Install(#[from] FilterError),
}

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
    pub fn record_fetches(&mut self, results: Vec<(String, Result<fetch::Refreshed, String>)>) -> bool {
        let changed = self.note_fetches(results);
        if changed {
            let _ = self.reload("list fetched");
        }
        changed
    }

    /// [`Daemon::record_fetches`] without the reload (at start, the first
    /// load already read what was fetched); whether a copy was new.
    pub fn note_fetches(&mut self, results: Vec<(String, Result<fetch::Refreshed, String>)>) -> bool {
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
                    st.last_error = Some(e);
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
    pub fn record_event(&mut self, e: &maps::event::Event) {
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

    /// Answers one control request.
    pub fn handle(&mut self, req: Request) -> control::Response {
        let result = match req {
            Request::Block { domains, action } => match action.as_deref().map(parse_block_action).transpose() {
                Ok(a) => self.change(&domains, Change::Set(Verdict::Block(a.unwrap_or(Action::Default)))),
                Err(e) => Err(e),
            },
            Request::Allow { domains } => self.change(&domains, Change::Set(Verdict::Allow)),
            Request::Unblock { domains } => self.change(&domains, Change::Forget),
            Request::List { pattern, limit } => Ok(self.list(pattern.as_deref(), limit.unwrap_or(DEFAULT_LIST_LIMIT))),
            Request::Stats { top } => self.stats(top.unwrap_or(DEFAULT_TOP)),
            Request::Reload => self.reload("control request").map(Reply::Reloaded).map_err(ErrorBody::new),
            Request::Status => Ok(Reply::Status(self.status())),
            Request::Events { last, .. } => self.recent_events(last.unwrap_or(DEFAULT_EVENTS)),
            // The serving loop answers it: stopping ends the loop.
            Request::Stop => Err(ErrorBody::new("stop is handled by the serving loop")),
        };
        match result {
            Ok(r) => control::Response::ok(r),
            Err(e) => control::Response::err(e),
        }
    }

    /// Applies a batch: every name parsed and every rule computed first,
    /// then the state file written, then the kernel maps changed.
    fn change(&mut self, domains: &[String], change: Change) -> Result<Reply, ErrorBody> {
        if domains.is_empty() {
            return Err(ErrorBody::new("no names given"));
        }
        if domains.len() > control::MAX_ENTRIES {
            return Err(ErrorBody::new(format!(
                "{} names in one request, at most {} allowed; nothing was changed",
                domains.len(),
                control::MAX_ENTRIES
            )));
        }
        let mut next = self.operator.clone();
        let mut changed = Vec::new();
        let mut unchanged = Vec::new();
        let mut touched: Vec<(usize, Domain)> = Vec::new();
        for (i, text) in domains.iter().enumerate() {
            let p = Pattern::parse(text).map_err(|e| ErrorBody::at(i, text, e))?;
            let before = next.get(&p);
            match change {
                Change::Set(v) => {
                    next.set(p.clone(), v);
                }
                Change::Forget => {
                    next.remove(&p);
                }
            }
            if next.get(&p) == before {
                unchanged.push(p.to_string());
            } else {
                changed.push(p.to_string());
                touched.push((i, p.domain));
            }
        }
        let seed = self.lists.rules.seed();
        let mut updates = Vec::new();
        let mut done = BTreeSet::new();
        for (i, domain) in &touched {
            if !done.insert(domain.clone()) {
                continue;
            }
            let entries = operator_entries(&next, domain);
            let rule = self
                .lists
                .rules
                .combined(domain, &entries)
                .map_err(|c| ErrorBody::at(*i, &domains[*i], format!("{c}")))?;
            updates.push((domain.key(seed), rule.map(|r| r.rule)));
        }
        let mut notes = Vec::new();
        if matches!(change, Change::Forget) {
            for p in &unchanged {
                notes.push(format!("{p} had no rule pushed through the API"));
            }
            let named: BTreeSet<Domain> =
                domains.iter().filter_map(|t| Pattern::parse(t).ok()).map(|p| p.domain).collect();
            for domain in named {
                if let Some(r) = self.lists.rules.get(domain.key(seed))
                    && r.rule.flags & (flags::BLOCK_SELF | flags::BLOCK_SUBDOMAINS) != 0
                {
                    notes.push(format!("{domain} is still blocked by {} (allow it to override)", r.origin));
                }
            }
        }
        if changed.is_empty() {
            return Ok(Reply::Changed(Changed { changed, unchanged, notes, operator_rules: self.operator.len() }));
        }
        if let Err(e) = next.save(&self.state_path) {
            // The failure may come after the rename (the directory's fsync):
            // the old rules go back, so the file says what is in force.
            let _ = self.operator.save(&self.state_path);
            return Err(ErrorBody::new(format!("{e}; nothing was changed")));
        }
        if let Err(e) = self.put_in_kernel(&updates, &next) {
            // The kernel refused part of it: put the old state back, on
            // disk and in the maps, and say so.
            let restore = self.operator.save(&self.state_path).map_err(|e| e.to_string()).and_then(|()| {
                let (keys, values) = effective_arrays(&self.lists.rules, &self.operator);
                self.filter.install_arrays(seed, &keys, &values).map_err(chained)
            });
            let mut msg = format!("updating the kernel maps: {}; nothing was changed", chained(e));
            if let Err(r) = restore {
                let _ = write!(msg, " (restoring the old rules also failed: {r})");
            }
            return Err(ErrorBody::new(msg));
        }
        self.operator = next;
        self.index_operator_keys();
        self.hits_cache = None;
        info!(changed = changed.len(), operator_rules = self.operator.len(), "operator rules changed");
        Ok(Reply::Changed(Changed { changed, unchanged, notes, operator_rules: self.operator.len() }))
    }

    /// Changes the given keys in place, or installs the whole effective
    /// set when the active map has no room left.
    fn put_in_kernel(&mut self, updates: &[(u64, Option<Rule>)], next: &OperatorRules) -> Result<(), FilterError> {
        match self.filter.update_rules(updates) {
            Err(FilterError::RuleSetFull { .. }) => {
                let (keys, values) = effective_arrays(&self.lists.rules, next);
                self.filter.install_arrays(self.lists.rules.seed(), &keys, &values)
            }
            r => r,
        }
    }

    /// Re-reads every list and swaps in the new rule set with the
    /// operator's rules on top. On any failure the old set stays.
    pub fn reload(&mut self, why: &str) -> Result<Reloaded, String> {
        let t0 = Instant::now();
        let result = self.try_reload();
        let elapsed = t0.elapsed();
        self.reloads.last_duration = elapsed;
        match result {
            Ok(mut r) => {
                self.reloads.reloads += 1;
                self.reloads.last_success = Some(Instant::now());
                self.reloads.last_success_unix = unix_now();
                self.reloads.last_error = None;
                r.duration_ms = elapsed.as_millis() as u64;
                info!(
                    why,
                    rules = r.rules,
                    changed_lines = r.changed_lines,
                    changed_rules = r.changed_rules,
                    skipped = r.skipped_lines,
                    ms = r.duration_ms,
                    "reloaded"
                );
                Ok(r)
            }
            Err(e) => {
                let e = format!("{e}; the old rule set stays in force");
                self.reloads.failures += 1;
                self.reloads.last_error = Some(e.clone());
                warn!(why, "reload failed: {e}");
                Err(e)
            }
        }
    }

    fn try_reload(&mut self) -> Result<Reloaded, String> {
        let seed = self.lists.rules.seed();
        let reply = match self.source.reload(&self.lists).map_err(chained)? {
            Reload::Lines(changes) => {
                self.check_malformed(changes.skipped())?;
                if let Some(reply) = self.reload_lines(changes)? {
                    reply
                } else {
                    // The active set has no room for the new keys: build a
                    // new one from the lists read whole.
                    let policy = self.source.load(seed).map_err(chained)?;
                    self.check_malformed(&policy.skipped)?;
                    self.reload_whole(policy)?
                }
            }
            Reload::Whole(policy) => {
                self.check_malformed(&policy.skipped)?;
                self.reload_whole(policy)?
            }
        };
        for e in self.lists.skipped.iter().take(20) {
            warn!("skipped {e}");
        }
        self.hits_cache = None;
        Ok(reply)
    }

    /// Refuses a reload whose lists have malformed lines, unless the
    /// operator asked to load lists without them.
    fn check_malformed(&self, skipped: &[blocklist::LineError]) -> Result<(), String> {
        match skipped.first() {
            Some(first) if !self.skip_bad_lines => Err(format!(
                "{} malformed line(s), first {first} (fix the list, or run with --skip-bad-lines to load lists \
                 without their bad lines)",
                skipped.len()
            )),
            _ => Ok(()),
        }
    }

    /// A reload that read only the lines that changed: the names they
    /// touch whose rule in force (with the operator's on top) changed are
    /// staged and switched over in one step (`Filter::transition`). `None`
    /// when the active set cannot take them (nothing changed then).
    fn reload_lines(&mut self, changes: LineChanges) -> Result<Option<Reloaded>, String> {
        let mut kernel = Vec::new();
        for u in changes.updates() {
            let before = self.lists.rules.get(u.key);
            let Some(domain) = u.rule.as_ref().or(before).map(|r| &r.domain) else { continue };
            let old = effective_rule(u.key, before, domain, &self.operator);
            let new = effective_rule(u.key, u.rule.as_ref(), domain, &self.operator);
            if old != new {
                kernel.push((u.key, new));
            }
        }
        if !kernel.is_empty() && !self.try_transition(&kernel, self.filter.active_len())? {
            return Ok(None);
        }
        let list_rules = changes.list_rules(&self.lists);
        let changed_lines = changes.changed_lines();
        self.lists.apply(changes);
        if !kernel.is_empty() {
            let seed = self.lists.rules.seed();
            let ops = self.operator.iter().map(|(p, _)| (p.domain.key(seed), p.domain.labels() as u8));
            let lists = self.lists.rules.iter().map(|(k, r)| (k, r.rule.labels));
            narrow_or_warn(&mut self.filter, lists.chain(ops));
        }
        Ok(Some(Reloaded {
            rules: self.filter.active_len(),
            list_rules,
            operator_rules: self.operator.len(),
            skipped_lines: self.lists.skipped.len(),
            changed_lines: Some(changed_lines),
            changed_rules: kernel.len(),
            duration_ms: 0,
        }))
    }

    /// Stages `changes` to a set of about `total` rules in the running set
    /// and switches over in one step (`Filter::transition`). `Ok(false)`,
    /// nothing changed, when they are more than a 20th of the set (a new
    /// set is built faster) or the running set cannot take them.
    fn try_transition(&mut self, changes: &[(u64, Option<Rule>)], total: usize) -> Result<bool, String> {
        if changes.len() > (total / 20).max(1024) {
            return Ok(false);
        }
        match self.filter.transition(changes) {
            Ok(()) => Ok(true),
            Err(FilterError::RuleSetFull { .. } | FilterError::NoRuleSet | FilterError::Unsettled) => Ok(false),
            Err(e) => Err(format!("switching to the new rule set: {}", chained(e))),
        }
    }

    /// A reload with every list read whole: the rule sets in force before
    /// and after are compared; a few changes are staged and switched over
    /// in one step, many get a new set built and swapped in.
    fn reload_whole(&mut self, policy: Policy) -> Result<Reloaded, String> {
        let seed = self.lists.rules.seed();
        let (keys, values) = effective_arrays(&policy.rules, &self.operator);
        let (old_keys, old_values) = effective_arrays(&self.lists.rules, &self.operator);
        let changes = rules::diff(&old_keys, &old_values, &keys, &values);
        let staged = self.try_transition(&changes, keys.len())?;
        if staged {
            narrow_or_warn(&mut self.filter, keys.iter().copied().zip(values.iter().map(|r| r.labels)));
        } else {
            self.filter
                .install_arrays(seed, &keys, &values)
                .map_err(|e| format!("installing the new rule set: {}", chained(e)))?;
        }
        let reply = Reloaded {
            rules: keys.len(),
            list_rules: policy.rules.len(),
            operator_rules: self.operator.len(),
            skipped_lines: policy.skipped.len(),
            changed_lines: None,
            changed_rules: changes.len(),
            duration_ms: 0,
        };
        let old = std::mem::replace(&mut self.lists, policy);
        // Freeing a million names takes a tenth of a second: not on the
        // reload's path (nor the serving loop's).
        std::thread::spawn(move || drop(old));
        Ok(reply)
    }

    fn list(&self, pattern: Option<&str>, limit: usize) -> Reply {
        let matcher = pattern.map(Matcher::new);
        let keep = |text: &str| matcher.as_ref().is_none_or(|m| m.matches(text));
        let seed = self.lists.rules.seed();
        let mut rules = Vec::new();
        let mut found = 0;
        // Hit counts are looked up (a system call each) only for the rules shown.
        let mut push = |v: RuleView, key: u64| {
            found += 1;
            if rules.len() < limit {
                rules.push(RuleView { hits: self.hits(key), ..v });
            }
        };
        for (p, v) in self.operator.iter() {
            let text = p.to_string();
            if keep(&text) {
                push(view_of_operator(&text, v, 0), p.domain.key(seed));
            }
        }
        for (key, r) in self.lists.rules.iter() {
            if keep(r.domain.as_str()) {
                for v in views_of_list_rule(r, 0) {
                    push(v, key);
                }
            }
        }
        Reply::Rules(RuleList { rules, matched: found })
    }

    fn hits(&self, key: u64) -> u64 {
        self.filter.active_rule(key).map_or(0, |r| u64::from(r.hits))
    }

    /// Rules with hits, most first. Finding them walks the whole active set
    /// (two system calls a rule), so the answer is kept for
    /// [`HITS_FRESH_FOR`]: scrapes and `stats` in a row cost one walk.
    fn sorted_hits(&mut self) -> Result<Vec<(u64, u32)>, FilterError> {
        if let Some((at, hits)) = &self.hits_cache
            && at.elapsed() < HITS_FRESH_FOR
        {
            return Ok(hits.clone());
        }
        let mut hits = self.filter.rule_hits()?;
        hits.sort_by_key(|h| std::cmp::Reverse(h.1));
        self.hits_cache = Some((Instant::now(), hits.clone()));
        Ok(hits)
    }

    fn stats(&mut self, top: usize) -> Result<Reply, ErrorBody> {
        let top_rules = self.top_rules(top).map_err(|e| ErrorBody::new(format!("reading rule hits: {e}")))?;
        let rows = self.filter.counter_rows().map_err(|e| ErrorBody::new(format!("reading counters: {e}")))?;
        let counters = stats::totals(&rows);
        let fail_closed = self.filter.settings().fail_closed != 0;
        let mut interfaces = std::collections::BTreeMap::new();
        for name in &self.info.interfaces {
            let Some(ifindex) = sys::if_index(name) else { continue };
            let b = maps::counters::bucket(ifindex);
            let row = &rows[b * maps::counters::COUNT..(b + 1) * maps::counters::COUNT];
            let mut by_verdict = std::collections::BTreeMap::new();
            for c in maps::Counter::ALL {
                if c.kind() != maps::counters::CounterKind::Extra && row[*c as usize] != 0 {
                    *by_verdict.entry(metrics::verdict(*c, fail_closed).to_owned()).or_insert(0) += row[*c as usize];
                }
            }
            interfaces.insert(name.clone(), by_verdict);
        }
        Ok(Reply::Stats(control::Stats {
            counters: stats::non_zero(&counters).into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            packets: stats::packets(&counters),
            top_rules,
            events_written: self.events.written,
            interfaces,
        }))
    }

    /// The `top` rules with the most hits, as `list` shows them.
    fn top_rules(&mut self, top: usize) -> Result<Vec<RuleView>, FilterError> {
        if top == 0 {
            return Ok(Vec::new());
        }
        let hits = self.sorted_hits()?;
        let seed = self.lists.rules.seed();
        let by_key: HashMap<u64, (&Pattern, Verdict)> =
            self.operator.iter().map(|(p, v)| (p.domain.key(seed), (p, v))).collect();
        Ok(hits
            .iter()
            .take(top)
            .filter_map(|(key, n)| {
                let n = u64::from(*n);
                match by_key.get(key) {
                    Some((p, v)) => Some(view_of_operator(&p.to_string(), *v, n)),
                    None => self.lists.rules.get(*key).and_then(|r| views_of_list_rule(r, n).into_iter().next()),
                }
            })
            .collect())
    }

    fn recent_events(&self, n: usize) -> Result<Reply, ErrorBody> {
        let c = self.filter.counters().map_err(|e| ErrorBody::new(format!("reading counters: {e}")))?;
        Ok(Reply::Events(control::EventList {
            events: self.events.recent(n),
            last_seq: self.events.seq,
            written: self.events.written,
            over_budget: c[maps::Counter::EventOverBudget as usize],
            lost: c[maps::Counter::EventLost as usize],
        }))
    }

    /// What a metrics scrape shows now.
    pub fn metrics(&mut self, top: usize) -> Result<metrics::Snapshot, FilterError> {
        let rows = self.filter.counter_rows()?;
        let top_rules =
            self.top_rules(top).unwrap_or_default().into_iter().map(|r| (r.pattern, r.source, r.hits)).collect();
        let totals = stats::totals(&rows);
        let events = vec![
            ("written", self.events.written),
            ("over_budget", totals[maps::Counter::EventOverBudget as usize]),
            ("lost", totals[maps::Counter::EventLost as usize]),
            ("write_errors", self.events.write_errors),
        ];
        Ok(metrics::Snapshot {
            rows,
            interfaces: self.info.interfaces.iter().filter_map(|i| Some((i.clone(), sys::if_index(i)?))).collect(),
            fail_closed: self.filter.settings().fail_closed != 0,
            rules_active: self.filter.active_len() as u64,
            lists: self
                .lists
                .lists
                .iter()
                .map(|l| {
                    let kind = if l.kind == blocklist::ListKind::Allow { "allow" } else { "block" };
                    (l.path.clone(), kind, l.entries as u64, l.skipped as u64)
                })
                .collect(),
            operator_rules: self.operator.len() as u64,
            top_rules,
            reloads: self.reloads.reloads,
            reload_failures: self.reloads.failures,
            last_reload_seconds: self.reloads.last_duration.as_secs_f64(),
            last_reload_success: self.reloads.last_success_unix,
            fetch_failures: self.fetches.iter().map(|(u, f)| (u.clone(), f.failures)).collect(),
            tls_flows: self.filter.flow_count().unwrap_or(0) as u64,
            events,
        })
    }

    pub fn status(&self) -> control::Status {
        let source = &self.source;
        control::Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            uptime_s: self.started.elapsed().as_secs(),
            interfaces: self.info.interfaces.clone(),
            xdp_mode: self.info.xdp_mode.clone(),
            rules: self.filter.active_len(),
            list_rules: self.lists.rules.len(),
            operator_rules: self.operator.len(),
            lists: source
                .blocklists
                .iter()
                .map(|p| format!("block {}", p.display()))
                .chain(source.allowlists.iter().map(|p| format!("allow {}", p.display())))
                .chain(source.urls.iter().map(|u| {
                    let kind = if u.kind == blocklist::ListKind::Allow { "allow" } else { "block" };
                    let f = self.fetches.get(&u.url).cloned().unwrap_or_default();
                    let ok = f.last_ok.map_or_else(
                        || "never fetched".to_owned(),
                        |t| format!("fetched {} s ago", t.elapsed().as_secs()),
                    );
                    let err = f.last_error.map_or_else(String::new, |e| format!(", last error: {e}"));
                    format!("{kind} {} ({ok}, {} failures{err})", u.url, f.failures)
                }))
                .collect(),
            state_file: self.state_path.display().to_string(),
            reloads: self.reloads.reloads,
            reload_failures: self.reloads.failures,
            last_reload_error: self.reloads.last_error.clone(),
            last_reload_ago_s: self.reloads.last_success.map(|t| t.elapsed().as_secs()),
        }
    }
}

#[derive(Clone, Copy)]
enum Change {
    Set(Verdict),
    Forget,
}

/// `--action` of `block`: any action a list may name.
fn parse_block_action(text: &str) -> Result<Action, ErrorBody> {
    blocklist::parse_action(text).ok_or_else(|| {
        ErrorBody::new(format!(
            "{text:?} is not an action (nxdomain, refused, sinkhole, drop, reset); nothing was changed"
        ))
    })
}

/// The operator's entries for one domain (its two scopes).
fn operator_entries(ops: &OperatorRules, domain: &Domain) -> Vec<blocklist::Entry> {
    [Scope::NameAndSubdomains, Scope::SubdomainsOnly]
        .into_iter()
        .filter_map(|scope| {
            let p = Pattern { domain: domain.clone(), scope };
            ops.get(&p).map(|v| state::entry(&p, v))
        })
        .collect()
}

/// The rule the kernel holds for `key` when the lists' rule for it is
/// `own`: the operator's rules for `domain` combined on top (as
/// [`effective_arrays`] does for every key).
fn effective_rule(key: u64, own: Option<&CompiledRule>, domain: &Domain, ops: &OperatorRules) -> Option<Rule> {
    let first = operator_entries(ops, domain);
    if first.is_empty() {
        return own.map(|r| r.rule);
    }
    match rules::combine(key, &first, own) {
        Ok(r) => r.map(|r| r.rule),
        Err(_) => own.map(|r| r.rule),
    }
}

/// Narrows the filter and depth mask after a switch of rule generations.
/// The switch is done by then: a failure only leaves them wider than
/// needed (lookups that find nothing), so it is logged, not reported as a
/// failed reload.
fn narrow_or_warn(filter: &mut Filter, rules: impl IntoIterator<Item = (u64, u8)>) {
    if let Err(e) = filter.narrow(rules) {
        warn!("narrowing the filter after a reload: {}", chained(e));
    }
}

/// An error with its causes, on one line (`{:#}` of anyhow).
fn chained(e: impl Into<anyhow::Error>) -> String {
    format!("{:#}", e.into())
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

fn view_of_operator(pattern: &str, v: Verdict, hits: u64) -> RuleView {
    let (rule, action) = match v {
        Verdict::Allow => ("allow", None),
        Verdict::Block(a) => ("block", (a != Action::Default).then(|| a.name().to_owned())),
    };
    RuleView { pattern: pattern.to_owned(), rule: rule.to_owned(), action, source: state::API_ORIGIN.to_owned(), hits }
}

/// A list rule as the patterns it stands for: a name can be blocked and
/// allowed, for itself and for the names below it.
fn views_of_list_rule(r: &CompiledRule, hits: u64) -> Vec<RuleView> {
    let f = r.rule.flags;
    let name = r.domain.as_str();
    let sub = format!("*.{name}");
    let mut out = Vec::new();
    let mut view = |pattern: &str, rule: &str, action: u8| {
        let action = Action::ALL
            .get(usize::from(action))
            .copied()
            .filter(|a| *a != Action::Default)
            .map(|a| a.name().to_owned());
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
struct Matcher {
    glob: Option<Vec<char>>,
    text: String,
}

impl Matcher {
    fn new(p: &str) -> Self {
        let p = p.trim().to_ascii_lowercase();
        Self { glob: (p.contains('*') || p.contains('?')).then(|| p.chars().collect()), text: p }
    }

    fn matches(&self, s: &str) -> bool {
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
