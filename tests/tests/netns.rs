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
    let daemon = Daemon::start(
        &t.router,
        dir.path(),
        netns::ROUTER_CLIENT_IF,
        &["--blocklist", &block, "--allowlist", &allow, "--xdp-mode", mode],
    );

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

    let (counters, log) = daemon.stop_with_log();
    // Per-rule hits, two families each: ads.lab (two names), tracker.lab, metrics.lab, evil.lab.
    let hits: Vec<(String, u64)> = log
        .lines()
        .skip_while(|l| *l != "rules by hits")
        .skip(1)
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_owned(), it.next()?.parse().ok()?))
        })
        .collect();
    for (rule, n) in [
        ("ads.lab", 4),
        ("tracker.lab", 2),
        ("metrics.lab", 2),
        ("evil.lab", 2),
        ("refuse.lab", 2),
        ("good.ads.lab", 4),
    ] {
        assert!(hits.contains(&(rule.to_owned(), n)), "{rule} should have {n} hits: {hits:?}\n{log}");
    }
    let seen = dnsmasq_queries(&dns.log());
    for q in &seen {
        for blocked_name in [
            "query[A] ads.lab",
            "x.y.ads.lab",
            "query[A] tracker.lab",
            "metrics.lab",
            "query[A] evil.lab",
            "refuse.lab",
        ] {
            assert!(
                !q.to_ascii_lowercase().contains(blocked_name),
                "the server saw a blocked query: {q}\nall: {seen:#?}"
            );
        }
    }
    for allowed in ["query[A] www.lab", "query[AAAA] www.lab", "query[A] good.ads.lab", "query[A] sub.good.ads.lab"] {
        assert_eq!(
            seen.iter().filter(|q| q.as_str() == allowed).count(),
            2,
            "{allowed} once per family; saw {seen:#?}"
        );
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
fn kdig_over_tcp_blocked_reset_allowed_answered() {
    let dir = tempfile::tempdir().unwrap();
    let (block, allow) = write_lists(dir.path());
    let t = Topology::new("tcp");
    let dns = start_dnsmasq(&t.server, dir.path(), RECORDS);
    let daemon =
        Daemon::start(&t.router, dir.path(), netns::ROUTER_CLIENT_IF, &["--blocklist", &block, "--allowlist", &allow]);
    for server in [addr::SERVER_V4, addr::SERVER_V6] {
        let at = format!("@{server}");
        let out = t.client.output(&["kdig", "+tcp", "+timeout=2", "+retry=0", &at, "www.lab", "A"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("status: NOERROR") && text.contains("10.12.0.80"),
            "allowed over TCP via {server}:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Reset at once: kdig fails without waiting for its timeout (10 s
        // here, so a drop would show as a timeout in its message).
        let out = t.client.output(&["kdig", "+tcp", "+timeout=10", "+retry=0", &at, "ads.lab", "A"]);
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!text.contains("status:"), "a blocked query over TCP gets no answer:\n{text}");
        // kdig says "can't receive reply" when the connection is reset.
        let reset = text.contains("reset") || text.contains("can't receive reply");
        assert!(reset && !text.contains("timed out"), "a blocked query over TCP is reset:\n{text}");
    }
    let counters = daemon.stop();
    assert!(get(&counters, "reset_tcp") >= 2, "{counters:?}");
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
        &[
            "--blocklist",
            &block,
            "--allowlist",
            &allow,
            "--dns-action",
            "sinkhole",
            "--answer-ttl",
            "300",
            "--stats-interval",
            "1",
        ],
    );
    let r = dig(&t.client, addr::SERVER_V4, "ads.lab", "A", &[]);
    assert_eq!(
        (r.status.as_str(), r.answers.clone()),
        ("NOERROR", vec!["ads.lab. 300 IN A 0.0.0.0".to_owned()]),
        "{}",
        r.raw
    );
    let r = dig(&t.client, addr::SERVER_V6, "www.ads.lab", "AAAA", &[]);
    assert_eq!(
        (r.status.as_str(), r.answers.clone()),
        ("NOERROR", vec!["www.ads.lab. 300 IN AAAA ::".to_owned()]),
        "{}",
        r.raw
    );
    let r = dig(&t.client, addr::SERVER_V4, "ads.lab", "TXT", &[]);
    assert_eq!((r.status.as_str(), r.answers.len()), ("NOERROR", 0), "NODATA for other types:\n{}", r.raw);
    // The periodic report shows the answers within a second or two.
    let mut daemon = daemon;
    daemon.proc.wait_for_log("sinkhole=", std::time::Duration::from_secs(10));
    let (counters, log) = daemon.stop_with(libc::SIGTERM);
    assert!(log.contains("SIGTERM: stopping"), "{log}");
    assert!(log.lines().any(|l| l.contains(" counters ") && l.contains("delta=")), "periodic counter lines:\n{log}");
    assert_eq!(get(&counters, "sinkhole"), 3, "{counters:?}");
}

#[test]
fn run_refuses_a_missing_interface() {
    let dir = tempfile::tempdir().unwrap();
    let (block, _) = write_lists(dir.path());
    let ns = netns::NetNs::new("noif");
    let bin = netns::namewall_bin();
    let socket = dir.path().join("ctl.sock");
    let state = dir.path().join("state");
    let private = ["--socket", socket.to_str().unwrap(), "--state-dir", state.to_str().unwrap()];
    let run = |args: &[&str]| ns.output(&[&[bin.to_str().unwrap(), "run"], &private[..], args].concat());
    let out = run(&["--iface", "nosuch0", "--blocklist", &block]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("interface \"nosuch0\" does not exist"), "{err}");
    assert_eq!(err.lines().count(), 1, "one clear line, not a trace:\n{err}");

    // The loopback device has no native XDP: the kernel refuses the attach.
    let out = run(&["--iface", "lo", "--xdp-mode", "native", "--blocklist", &block]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("namewall: error: attaching to lo") && last.contains("not supported"), "{err}");

    // An unreadable list: named, once.
    let out = run(&["--iface", "lo", "--blocklist", "/nonexistent/list.txt"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        "namewall: error: loading lists: reading /nonexistent/list.txt: No such file or directory (os error 2)"
    );
}

/// A real capture of a dig session, taken on the client, replayed through
/// the program: each query gets the verdict the live filter gave it.
#[test]
fn replay_of_a_captured_session() {
    let dir = tempfile::tempdir().unwrap();
    let (block, allow) = write_lists(dir.path());
    let t = Topology::new("replay");
    let _dns = start_dnsmasq(&t.server, dir.path(), RECORDS);
    let daemon =
        Daemon::start(&t.router, dir.path(), netns::ROUTER_CLIENT_IF, &["--blocklist", &block, "--allowlist", &allow]);
    for (iface, file) in [("c0", "c0.pcap"), ("any", "any.pcap")] {
        let pcap = dir.path().join(file);
        let mut tcpdump = t.client.spawn(
            &[
                "tcpdump",
                "--immediate-mode",
                "-U",
                "-Z",
                "root",
                "-n",
                "-i",
                iface,
                "-w",
                pcap.to_str().unwrap(),
                "udp port 53",
            ],
            &dir.path().join(format!("{file}.log")),
        );
        tcpdump.wait_for_log("listening on", std::time::Duration::from_secs(10));
        for (name, server) in [
            ("www.ads.lab", addr::SERVER_V4),
            ("www.lab", addr::SERVER_V4),
            ("good.ads.lab", addr::SERVER_V6),
            ("evil.lab", addr::SERVER_V6),
        ] {
            let r = dig(&t.client, server, name, "A", &[]);
            assert!(!r.status.is_empty(), "{name}: {}", r.raw);
        }
        tcpdump.signal(libc::SIGINT);
        tcpdump.wait(std::time::Duration::from_secs(10)).unwrap();

        let bin = netns::namewall_bin();
        let out = std::process::Command::new(bin)
            .args(["replay", "--json", "--pcap", pcap.to_str().unwrap(), "--blocklist", &block, "--allowlist", &allow])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let lines: Vec<serde_json::Value> =
            String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let (summary, packets) = lines.split_last().unwrap();
        assert!(summary.get("summary").is_some(), "{summary}");
        // Queries and answers, in capture order, numbered from 1; answers come
        // from port 53, not to it, so they are not judged.
        let got: Vec<(u64, String, String, String)> = packets
            .iter()
            .map(|p| {
                let s = |k: &str| p[k].as_str().unwrap_or("").to_owned();
                (p["packet"].as_u64().unwrap(), s("verdict"), s("outcome"), s("rule"))
            })
            .collect();
        let want: Vec<(u64, &str, &str, &str)> = vec![
            (1, "tx", "nxdomain", "ads.lab"),
            (2, "pass", "not_dns_port", ""),
            (3, "pass", "pass_no_match", ""),
            (4, "pass", "not_dns_port", ""),
            (5, "pass", "pass_allowed", "good.ads.lab"),
            (6, "pass", "not_dns_port", ""),
            (7, "tx", "nxdomain", "evil.lab"),
            (8, "pass", "not_dns_port", ""),
        ];
        let want: Vec<(u64, String, String, String)> =
            want.into_iter().map(|(n, v, o, r)| (n, v.to_owned(), o.to_owned(), r.to_owned())).collect();
        assert_eq!(got, want, "capture on {iface}:\n{}", String::from_utf8_lossy(&out.stdout));
    }
    daemon.stop();
}
