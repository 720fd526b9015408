//! Prometheus metrics: a snapshot of the kernel's counters and the
//! daemon's state, rendered in the OpenMetrics text format by
//! `prometheus-client` at each scrape.
//!
//! Packets are counted per interface and outcome; the outcome also names
//! the protocol it belongs to and the verdict it got, as labels, so
//! `sum by (verdict)` or `sum by (protocol, interface)` need no mapping on
//! the Prometheus side.

use std::sync::atomic::AtomicU64;

use maps::{
    Counter,
    counters::{COUNT, CounterKind, IFACE_BUCKETS},
};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter as PCounter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// What a scrape shows.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Kernel counters, [`IFACE_BUCKETS`] rows of [`COUNT`].
    pub rows: Vec<u64>,
    /// The interfaces attached to, with their index.
    pub interfaces: Vec<(String, u32)>,
    /// Whether the "cannot judge" policy drops (the verdict of unjudged outcomes).
    pub unjudged_drop: bool,
    /// Rules in the kernel's active set.
    pub rules_active: u64,
    /// (list path, block|allow, rules, malformed lines).
    pub lists: Vec<(String, &'static str, u64, u64)>,
    pub operator_rules: u64,
    /// (rule pattern, source, hits) of the rules with the most hits.
    pub top_rules: Vec<(String, String, u64)>,
    pub reloads: u64,
    pub reload_failures: u64,
    pub last_reload_seconds: f64,
    /// Unix time of the last good reload (or the start).
    pub last_reload_success: f64,
    /// (list, failures) of lists fetched from URLs.
    pub fetch_failures: Vec<(String, u64)>,
    pub tls_flows: u64,
    /// (event log counter, value): written, dropped by the budget, lost.
    pub events: Vec<(&'static str, u64)>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PacketLabels {
    interface: String,
    protocol: &'static str,
    outcome: &'static str,
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListLabels {
    list: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: String,
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UrlLabels {
    list: String,
}

/// The protocol an outcome belongs to (`maps::counters`' table).
pub fn protocol(c: Counter) -> &'static str {
    c.protocol().name()
}

/// What happened to a packet with this outcome (`maps::counters`' table):
/// a packet that could not be judged is dropped under `--unjudged drop`.
pub fn verdict(c: Counter, unjudged_drop: bool) -> &'static str {
    c.fate(unjudged_drop).unwrap_or(maps::Fate::Pass).name()
}

/// Names each interface bucket: the attached interfaces in it, or
/// `ifindex%64=N` for packets from elsewhere (test runs, other devices).
fn bucket_names(interfaces: &[(String, u32)]) -> Vec<String> {
    (0..IFACE_BUCKETS)
        .map(|b| {
            let names: Vec<&str> =
                interfaces.iter().filter(|(_, i)| maps::counters::bucket(*i) == b).map(|(n, _)| n.as_str()).collect();
            if names.is_empty() { format!("ifindex%{IFACE_BUCKETS}={b}") } else { names.join("+") }
        })
        .collect()
}

/// A count as a gauge value (gauges are signed).
fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Renders `s` in the OpenMetrics text format.
pub fn render(s: &Snapshot) -> String {
    let mut reg = Registry::with_prefix("namewall");

    let packets = Family::<PacketLabels, PCounter>::default();
    let events = Family::<EventLabels, PCounter>::default();
    let names = bucket_names(&s.interfaces);
    for (b, row) in s.rows.chunks_exact(COUNT).enumerate() {
        for c in Counter::ALL {
            let v = row[*c as usize];
            if c.kind() == CounterKind::Extra {
                if v != 0 {
                    events.get_or_create(&EventLabels { event: c.name() }).inc_by(v);
                }
                continue;
            }
            if v == 0 {
                continue;
            }
            let labels = PacketLabels {
                interface: names[b].clone(),
                protocol: protocol(*c),
                outcome: c.name(),
                verdict: verdict(*c, s.unjudged_drop),
            };
            packets.get_or_create(&labels).inc_by(v);
        }
    }
    reg.register("packets", "Packets seen, by interface, protocol, outcome and verdict", packets);
    reg.register(
        "parser_events",
        "Events on top of a packet's outcome (drops of what cannot be judged, ECH, ...)",
        events,
    );

    let rules = Family::<SourceLabels, Gauge>::default();
    rules.get_or_create(&SourceLabels { source: "kernel" }).set(gauge(s.rules_active));
    rules.get_or_create(&SourceLabels { source: "api" }).set(gauge(s.operator_rules));
    reg.register("rules", "Rules in force: in the kernel's active set, and pushed through the API", rules);
    let lists = Family::<ListLabels, Gauge>::default();
    let malformed = Family::<ListLabels, Gauge>::default();
    for (list, kind, n, bad) in &s.lists {
        let l = ListLabels { list: list.clone(), kind };
        lists.get_or_create(&l).set(gauge(*n));
        malformed.get_or_create(&l).set(gauge(*bad));
    }
    reg.register("list_rules", "Rules each list held at its last load", lists);
    reg.register("list_malformed_lines", "Malformed lines each list had at its last load", malformed);
    let hits = Family::<RuleLabels, Gauge>::default();
    for (rule, source, n) in &s.top_rules {
        hits.get_or_create(&RuleLabels { rule: rule.clone(), source: source.clone() }).set(gauge(*n));
    }
    reg.register("rule_hits", "Hits of the rules with the most hits (kept across reloads)", hits);

    let reloads: PCounter<u64, AtomicU64> = PCounter::default();
    reloads.inc_by(s.reloads);
    reg.register("reloads", "Successful reloads of the lists", reloads);
    let failures: PCounter<u64, AtomicU64> = PCounter::default();
    failures.inc_by(s.reload_failures);
    reg.register("reload_failures", "Reloads refused (the old rule set stayed in force)", failures);
    let duration = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    duration.set(s.last_reload_seconds);
    reg.register("last_reload_duration_seconds", "How long the last reload took", duration);
    let success = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    success.set(s.last_reload_success);
    reg.register("last_reload_success_timestamp_seconds", "Unix time of the last good load of the lists", success);
    let fetch = Family::<UrlLabels, PCounter>::default();
    for (list, n) in &s.fetch_failures {
        fetch.get_or_create(&UrlLabels { list: list.clone() }).inc_by(*n);
    }
    reg.register("list_fetch_failures", "Failed fetches or parses of lists from URLs", fetch);
    let flows: Gauge = Gauge::default();
    flows.set(gauge(s.tls_flows));
    reg.register("tls_flows", "TLS flows tracked now", flows);
    let ev = Family::<EventLabels, PCounter>::default();
    for (name, n) in &s.events {
        ev.get_or_create(&EventLabels { event: name }).inc_by(*n);
    }
    reg.register("event_log", "Block events: written, dropped by the rate budget, lost (ring buffer full)", ev);

    let mut out = String::new();
    encode(&mut out, &reg).expect("writing to a String");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_has_a_protocol_and_a_verdict() {
        for c in Counter::ALL {
            if c.kind() == CounterKind::Extra {
                continue;
            }
            let v = verdict(*c, false);
            assert!(["pass", "drop", "answer", "reset"].contains(&v), "{c:?}");
            if c.kind() == CounterKind::Unjudged {
                assert_eq!(verdict(*c, true), "drop", "{c:?}");
            }
        }
        assert_eq!(protocol(Counter::Nxdomain), "dns");
        assert_eq!(protocol(Counter::TlsReset), "tls");
        assert_eq!(protocol(Counter::NotIp), "other");
    }

    #[test]
    fn renders_labelled_families() {
        let mut rows = vec![0u64; COUNT * IFACE_BUCKETS];
        rows[3 * COUNT + Counter::Nxdomain as usize] = 5;
        rows[3 * COUNT + Counter::PassNoMatch as usize] = 7;
        rows[Counter::TlsEch as usize] = 2;
        rows[9 * COUNT + Counter::NotIp as usize] = 1;
        let s = Snapshot {
            rows,
            interfaces: vec![("eth0".into(), 3), ("eth1".into(), 67)],
            lists: vec![("/etc/ads.txt".into(), "block", 10, 1)],
            top_rules: vec![("ads.example".into(), "/etc/ads.txt:1".into(), 5)],
            reloads: 2,
            ..Snapshot::default()
        };
        let text = render(&s);
        for want in [
            r#"namewall_packets_total{interface="eth0+eth1",protocol="dns",outcome="nxdomain",verdict="answer"} 5"#,
            r#"namewall_packets_total{interface="eth0+eth1",protocol="dns",outcome="pass_no_match",verdict="pass"} 7"#,
            r#"namewall_packets_total{interface="ifindex%64=9",protocol="other",outcome="not_ip",verdict="pass"} 1"#,
            r#"namewall_parser_events_total{event="tls_ech"} 2"#,
            r#"namewall_list_rules{list="/etc/ads.txt",kind="block"} 10"#,
            r#"namewall_rule_hits{rule="ads.example",source="/etc/ads.txt:1"} 5"#,
            "namewall_reloads_total 2",
            "# EOF",
        ] {
            assert!(text.contains(want), "{want} in:\n{text}");
        }
    }
}
