//! End to end: real clients (dig, kdig) in a client namespace, a real DNS
//! server (dnsmasq) in a server namespace, and `namewall run` on the
//! client-facing interface of a router namespace between them.

use std::{collections::BTreeMap, fs, path::Path};

use namewall_tests::netns::{self, Daemon, Topology, addr, dig, dnsmasq_queries, start_dnsmasq};

const BLOCKLIST: &str = "\
# ads and trackers
ads.lab
0.0.0.0 tracker.lab metrics.lab
||evil.lab^
||refuse.lab^$action=refused
";

const ALLOWLIST: &str = "\
good.ads.lab
";

/// Names dnsmasq answers (every name under each).
const RECORDS: &[(&str, &str, &str)] = &[
    ("ads.lab", "10.12.0.66", "fd12::66"),
    ("tracker.lab", "10.12.0.67", "fd12::67"),
    ("evil.lab", "10.12.0.68", "fd12::68"),
    ("refuse.lab", "10.12.0.69", "fd12::69"),
    ("www.lab", "10.12.0.80", "fd12::80"),
];

fn write_lists(dir: &Path) -> (String, String) {
    let b = dir.join("block.txt");
    let a = dir.join("allow.txt");
    fs::write(&b, BLOCKLIST).unwrap();
    fs::write(&a, ALLOWLIST).unwrap();
    (b.display().to_string(), a.display().to_string())
}

fn get(c: &BTreeMap<String, u64>, k: &str) -> u64 {
    c.get(k).copied().unwrap_or(0)
}

fn udp_over_both_families(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (block, allow) = write_lists(dir.path());
    let t = Topology::new(&format!("udp{mode}"));
    let dns = start_dnsmasq(&t.server, dir.path(), RECORDS);
    let daemon = Daemon::start(&t.router, dir.path(), netns::ROUTER_CLIENT_IF, &["--blocklist", &block, "--allowlist", &allow, "--xdp-mode", mode]);

    let mut blocked = 0;
    for server in [addr::SERVER_V4, addr::SERVER_V6] {
        for name in ["ads.lab", "x.y.ADS.lab", "tracker.lab", "deep.metrics.lab", "evil.lab"] {
            let r = dig(&t.client, server, name, "A", &[]);
            assert_eq!(r.status, "NXDOMAIN", "{name} via {server}:\n{}", r.raw);
            // Answered by namewall: recursion available, not authoritative, no EDNS echoed.
            assert_eq!(r.flags, "qr rd ra", "{name}:\n{}", r.raw);
            assert!(!r.edns, "{name}: namewall answers without OPT:\n{}", r.raw);
            blocked += 1;
        }
        let r = dig(&t.client, server, "refuse.lab", "AAAA", &[]);
        assert_eq!(r.status, "REFUSED", "per-rule action:\n{}", r.raw);
        for (name, qtype, want) in [
            ("www.lab", "A", "10.12.0.80"),
            ("www.lab", "AAAA", "fd12::80"),
            ("good.ads.lab", "A", "10.12.0.66"),
            ("sub.good.ads.lab", "A", "10.12.0.66"),
            ("notads.lab.www.lab", "A", "10.12.0.80"),
        ] {
            let r = dig(&t.client, server, name, qtype, &[]);
            assert_eq!(r.status, "NOERROR", "{name} via {server}:\n{}", r.raw);
            assert!(r.answers.iter().any(|a| a.ends_with(want)), "{name} {qtype} should resolve to {want}:\n{}", r.raw);
            assert!(r.flags.contains("aa"), "{name}: the answer comes from dnsmasq:\n{}", r.raw);
        }
    }

    let counters = daemon.stop();
    let seen = dnsmasq_queries(&dns.log());
    for q in &seen {
        for blocked_name in ["query[A] ads.lab", "x.y.ads.lab", "query[A] tracker.lab", "metrics.lab", "query[A] evil.lab", "refuse.lab"] {
            assert!(!q.to_ascii_lowercase().contains(blocked_name), "the server saw a blocked query: {q}\nall: {seen:#?}");
        }
    }
    for allowed in ["query[A] www.lab", "query[AAAA] www.lab", "query[A] good.ads.lab", "query[A] sub.good.ads.lab"] {
        assert_eq!(seen.iter().filter(|q| q.as_str() == allowed).count(), 2, "{allowed} once per family; saw {seen:#?}");
    }
    assert_eq!(get(&counters, "nxdomain"), blocked, "{counters:?}");
    assert_eq!(get(&counters, "refused"), 2, "{counters:?}");
    assert_eq!(get(&counters, "pass_allowed"), 4, "{counters:?}");
    assert_eq!(get(&counters, "pass_no_match"), 6, "{counters:?}");
    assert_eq!(get(&counters, "rewrite_failed"), 0, "{counters:?}");
}

#[test]
fn dig_over_udp_ipv4_and_ipv6_native() {
    udp_over_both_families("native");
}

#[test]
fn dig_over_udp_ipv4_and_ipv6_generic() {
    udp_over_both_families("skb");
}

#[test]
fn kdig_over_tcp_blocked_dropped_allowed_answered() {
    let dir = tempfile::tempdir().unwrap();
    let (block, allow) = write_lists(dir.path());
    let t = Topology::new("tcp");
    let dns = start_dnsmasq(&t.server, dir.path(), RECORDS);
    let daemon = Daemon::start(&t.router, dir.path(), netns::ROUTER_CLIENT_IF, &["--blocklist", &block, "--allowlist", &allow]);
    for server in [addr::SERVER_V4, addr::SERVER_V6] {
        let at = format!("@{server}");
        let out = t.client.output(&["kdig", "+tcp", "+timeout=2", "+retry=0", &at, "www.lab", "A"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("status: NOERROR") && text.contains("10.12.0.80"),
            "allowed over TCP via {server}:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = t.client.output(&["kdig", "+tcp", "+timeout=1", "+retry=0", &at, "ads.lab", "A"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("status:"), "a blocked query over TCP gets no answer:\n{text}");
    }
    let counters = daemon.stop();
    assert!(get(&counters, "drop_tcp") >= 2, "{counters:?}");
    assert!(get(&counters, "pass_no_match") >= 2, "{counters:?}");
    assert!(get(&counters, "tcp_no_payload") > 0, "handshakes and ACKs pass: {counters:?}");
    let seen = dnsmasq_queries(&dns.log());
    assert!(seen.iter().all(|q| !q.contains("ads.lab")), "{seen:#?}");
    assert_eq!(seen.iter().filter(|q| q.as_str() == "query[A] www.lab").count(), 2, "{seen:#?}");
}

#[test]
fn sinkhole_answers_zero_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let (block, allow) = write_lists(dir.path());
    let t = Topology::new("sink");
    let _dns = start_dnsmasq(&t.server, dir.path(), RECORDS);
    let daemon = Daemon::start(
        &t.router,
        dir.path(),
        netns::ROUTER_CLIENT_IF,
        &["--blocklist", &block, "--allowlist", &allow, "--dns-action", "sinkhole", "--answer-ttl", "300"],
    );
    let r = dig(&t.client, addr::SERVER_V4, "ads.lab", "A", &[]);
    assert_eq!((r.status.as_str(), r.answers.clone()), ("NOERROR", vec!["ads.lab. 300 IN A 0.0.0.0".to_owned()]), "{}", r.raw);
    let r = dig(&t.client, addr::SERVER_V6, "www.ads.lab", "AAAA", &[]);
    assert_eq!((r.status.as_str(), r.answers.clone()), ("NOERROR", vec!["www.ads.lab. 300 IN AAAA ::".to_owned()]), "{}", r.raw);
    let r = dig(&t.client, addr::SERVER_V4, "ads.lab", "TXT", &[]);
    assert_eq!((r.status.as_str(), r.answers.len()), ("NOERROR", 0), "NODATA for other types:\n{}", r.raw);
    let counters = daemon.stop();
    assert_eq!(get(&counters, "sinkhole"), 3, "{counters:?}");
}

#[test]
fn run_refuses_a_missing_interface() {
    let dir = tempfile::tempdir().unwrap();
    let (block, _) = write_lists(dir.path());
    let ns = netns::NetNs::new("noif");
    let bin = netns::namewall_bin();
    let out = ns.output(&[bin.to_str().unwrap(), "run", "--iface", "nosuch0", "--blocklist", &block]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("interface \"nosuch0\" does not exist"), "{err}");
    assert_eq!(err.lines().count(), 1, "one clear line, not a trace:\n{err}");
}
