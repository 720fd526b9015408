//! The daemon's answers to control requests (block, allow, unblock, list,
//! stats, events, status) and to metrics scrapes.

use std::{
    collections::{BTreeSet, HashMap},
    fmt::Write as _,
    time::{Duration, Instant},
};

use maps::{Action, Rule, layout::rule::flags};
use tracing::info;

use super::{
    Daemon,
    effective::{effective_arrays, operator_entries},
    metrics,
    operator::{OperatorRules, Pattern, Verdict},
    views::{Matcher, view_of_operator, views_of_list_rule},
};
use crate::{
    control::{
        self, Changed, DEFAULT_EVENTS, DEFAULT_LIST_LIMIT, DEFAULT_TOP, ErrorBody, Reply, Request, RuleList, RuleView,
    },
    dataplane::{FilterError, counters, sys},
    errors::chain,
    policy::{blocklist, names::Domain},
};

/// How long a walk of the active set for hit counts is reused.
const HITS_FRESH_FOR: Duration = Duration::from_secs(5);

impl Daemon {
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
            Request::Reload => {
                self.reload("control request").map(Reply::Reloaded).map_err(|e| ErrorBody::new(e.to_string()))
            }
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
            let restore_failed = if let Err(e) = self.operator.save(&self.state_path) {
                Some(e.to_string())
            } else {
                let (keys, values) = effective_arrays(&self.lists.rules, &self.operator);
                self.filter.install_arrays(seed, &keys, &values).err().map(|e| chain(&e))
            };
            let mut msg = format!("updating the kernel maps: {}; nothing was changed", chain(&e));
            if let Some(r) = restore_failed {
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
        let counters = counters::totals(&rows);
        let unjudged_drop = self.filter.settings().unjudged == maps::layout::settings::UNJUDGED_DROP;
        let mut interfaces = std::collections::BTreeMap::new();
        for name in &self.info.interfaces {
            let Some(ifindex) = sys::if_index(name) else { continue };
            let b = maps::counters::bucket(ifindex);
            let row = &rows[b * maps::counters::COUNT..(b + 1) * maps::counters::COUNT];
            let mut by_verdict = std::collections::BTreeMap::new();
            for c in maps::Counter::ALL {
                if c.kind() != maps::counters::CounterKind::Extra && row[*c as usize] != 0 {
                    *by_verdict.entry(metrics::verdict(*c, unjudged_drop).to_owned()).or_insert(0) += row[*c as usize];
                }
            }
            interfaces.insert(name.clone(), by_verdict);
        }
        Ok(Reply::Stats(control::Stats {
            counters: counters::non_zero(&counters).into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            packets: counters::packets(&counters),
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
        let totals = counters::totals(&rows);
        let events = vec![
            ("written", self.events.written),
            ("over_budget", totals[maps::Counter::EventOverBudget as usize]),
            ("lost", totals[maps::Counter::EventLost as usize]),
            ("write_errors", self.events.write_errors),
        ];
        Ok(metrics::Snapshot {
            rows,
            interfaces: self.info.interfaces.iter().filter_map(|i| Some((i.clone(), sys::if_index(i)?))).collect(),
            unjudged_drop: self.filter.settings().unjudged == maps::layout::settings::UNJUDGED_DROP,
            rules_active: self.filter.active_len() as u64,
            lists: self
                .lists
                .lists
                .iter()
                .map(|l| {
                    let kind = l.kind.name();
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
                    let kind = u.kind.name();
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
