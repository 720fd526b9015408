//! Evasions end to end: packets a client crafts to slip a blocked name past
//! the filter, sent from the client namespace through the router running
//! namewall to real servers (dnsmasq, nginx). Each construction is first
//! shown to work on the server without namewall (the server answers the
//! blocked name, or the handshake completes), then shown refused with it:
//! the name never reaches the server and the counter for the reason moves.
//!
//! The packets are built with scapy by `tests/evasion.py` (see its docs),
//! run in the client namespace and bounded in count and time.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use namewall_tests::{
    evasion,
    netns::{self, Daemon, NetNs, Proc, Topology, addr, dnsmasq_queries, start_dnsmasq},
    tlslab::{self, TlsServer},
};
use serde_json::Value;

const BLOCKLIST: &str = "\
ads.lab
blocked.lab
";

/// Names dnsmasq answers (every name under each).
const RECORDS: &[(&str, &str, &str)] = &[("ads.lab", "10.12.0.66", "fd12::66"), ("www.lab", "10.12.0.80", "fd12::80")];

const FAMILIES: [(&str, &str); 2] = [(addr::CLIENT_V4, addr::SERVER_V4), (addr::CLIENT_V6, addr::SERVER_V6)];

fn get(c: &BTreeMap<String, u64>, k: &str) -> u64 {
    c.get(k).copied().unwrap_or(0)
}

fn evasion(ns: &NetNs, args: &[&str]) -> Value {
    evasion::run(ns, args).unwrap_or_else(|e| panic!("{e}"))
}

struct Lab {
    dir: tempfile::TempDir,
    t: Topology,
    block: String,
    mac: String,
}

impl Lab {
    fn new(tag: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let block = dir.path().join("block.txt");
        fs::write(&block, BLOCKLIST).unwrap();
        let t = Topology::new(tag);
        let mac = evasion::gw_mac(&t);
        Self { t, block: block.display().to_string(), dir, mac }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn subdir(&self, name: &str) -> PathBuf {
        let d = self.path().join(name);
        fs::create_dir_all(&d).unwrap();
        d
    }

    /// `namewall run` on the router with the blocklist and `extra` flags.
    fn daemon(&self, name: &str, extra: &[&str]) -> Daemon {
        let mut args = vec!["--blocklist", &self.block];
        args.extend_from_slice(extra);
        Daemon::start(&self.t.router, &self.subdir(name), netns::ROUTER_CLIENT_IF, &args)
    }

    fn dnsmasq(&self) -> Proc {
        start_dnsmasq(&self.t.server, self.path(), RECORDS)
    }

    /// A fragmented query from `src` to `dst` (see `evasion.py udpfrag`);
    /// returns the answer, `Value::Null` when none came.
    fn udpfrag(&self, (src, dst): (&str, &str), name: &str, split: usize, pad: usize, order: &str) -> Value {
        let (split, pad) = (split.to_string(), pad.to_string());
        let v = evasion(
            &self.t.client,
            &[
                "udpfrag", "--src", src, "--dst", dst, "--gw-mac", &self.mac, "--name", name, "--split", &split,
                "--pad", &pad, "--order", order,
            ],
        );
        v["answer"].clone()
    }
}

/// Panics unless `answer` is dnsmasq's (authoritative) answer with `addr`.
fn assert_dnsmasq_answered(what: &str, answer: &Value, addr: &str) {
    assert_eq!(answer["rcode"], 0, "{what}: {answer}");
    assert_eq!(answer["aa"], true, "{what}: answered by dnsmasq: {answer}");
    assert!(answer["answers"].as_array().is_some_and(|a| a.iter().any(|x| x == addr)), "{what}: {answer}");
}

/// Polls dnsmasq's log until it logged `query[A] NAME` (it logs after
/// answering, so the client can be first); panics after 5 s.
fn wait_logged(dns: &Proc, name: &str) {
    let want = format!("query[A] {name}");
    let start = Instant::now();
    while !dnsmasq_queries(&dns.log()).contains(&want) {
        assert!(start.elapsed() < Duration::from_secs(5), "dnsmasq never logged {want}:\n{}", dns.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_never_logged(dns: &Proc, names: &[String]) {
    let seen = dnsmasq_queries(&dns.log());
    for name in names {
        assert!(seen.iter().all(|q| !q.contains(name.as_str())), "dnsmasq saw {name}: {seen:#?}");
    }
}

/// UDP datagram bytes in the first fragment when the name is to be cut:
/// UDP header (8), DNS header (12) and 12 bytes of the question, which for
/// `xxN.ads.lab` ends inside `lab`.
const SPLIT_IN_NAME: usize = 32;
/// With 600 bytes of EDNS padding, a first fragment of 512 bytes holds the
/// whole question; the padding goes on in the later fragments.
const SPLIT_AFTER_QUESTION: usize = 512;
const PAD: usize = 600;

fn fragmented_dns(tag: &str, family: (&str, &str)) {
    let lab = Lab::new(tag);
    let dns = lab.dnsmasq();
    // The helper asks for A records, over either family.
    let (ads, www) = ("10.12.0.66", "10.12.0.80");

    // Without namewall dnsmasq reassembles both constructions and answers
    // the blocked name, fragments in order or not.
    for (name, order) in [("fa1.ads.lab", "first"), ("fa2.ads.lab", "reversed")] {
        let a = lab.udpfrag(family, name, SPLIT_IN_NAME, 0, order);
        assert_dnsmasq_answered(&format!("{name} cut in the name, {order}, no namewall"), &a, ads);
        wait_logged(&dns, name);
    }
    let a = lab.udpfrag(family, "fa3.ads.lab", SPLIT_AFTER_QUESTION, PAD, "first");
    assert_dnsmasq_answered("fa3.ads.lab padded, no namewall", &a, ads);

    let daemon = lab.daemon("run", &[]);
    let mut refused = Vec::new();
    // The name cut by the first fragment's end: not judged, dropped with
    // every later fragment that follows it; later fragments sent first
    // pass, but the server never gets the first.
    for (name, order) in [("fb1.ads.lab", "first"), ("fb2.ads.lab", "reversed")] {
        let a = lab.udpfrag(family, name, SPLIT_IN_NAME, 0, order);
        assert!(a.is_null(), "{name} cut in the name, {order}: no answer: {a}");
        refused.push(name.to_owned());
    }
    // The question whole in the first fragment: judged. Blocked: dropped
    // with its later fragments; allowed: answered by dnsmasq, later
    // fragments first or last.
    let a = lab.udpfrag(family, "fb3.ads.lab", SPLIT_AFTER_QUESTION, PAD, "first");
    assert!(a.is_null(), "fb3.ads.lab padded: no answer: {a}");
    refused.push("fb3.ads.lab".to_owned());
    for (name, order) in [("fb4.www.lab", "first"), ("fb5.www.lab", "reversed")] {
        let a = lab.udpfrag(family, name, SPLIT_AFTER_QUESTION, PAD, order);
        assert_dnsmasq_answered(&format!("{name} padded, {order}"), &a, www);
        wait_logged(&dns, name);
    }
    let counters = daemon.stop();
    assert_never_logged(&dns, &refused);
    // Each query has one later fragment (the padded ones 652 bytes in all).
    // Those after a dropped first fragment are dropped; those sent first,
    // and the allowed queries', pass.
    assert_eq!(get(&counters, "dns_fragment"), 2, "{counters:?}");
    assert_eq!(get(&counters, "drop_fragmented"), 1, "{counters:?}");
    assert_eq!(get(&counters, "fragment_dropped"), 2, "{counters:?}");
    assert_eq!(get(&counters, "ip_fragment"), 3, "{counters:?}");
    assert_eq!(get(&counters, "unjudged_drop"), 2, "{counters:?}");
    assert_eq!(get(&counters, "pass_no_match"), 2, "{counters:?}");
}

#[test]
fn dns_over_udp_in_fragments_ipv4() {
    fragmented_dns("frag4", FAMILIES[0]);
}

#[test]
fn dns_over_udp_in_fragments_ipv6() {
    fragmented_dns("frag6", FAMILIES[1]);
}

/// `evasion.py tls`: a handshake with nginx for `name`, and a GET.
fn tls(lab: &Lab, name: &str, urgent: bool) -> Value {
    let mut args = vec!["tls", "--dst", addr::SERVER_V4, "--port", "443", "--name", name];
    if urgent {
        args.push("--urgent");
    }
    evasion(&lab.t.client, &args)
}

fn assert_served(what: &str, r: &Value, name: &str) {
    let body = r["response"].as_str().unwrap_or_default();
    assert!(
        r["handshake"] == true && body.contains(tlslab::PAGE_MARKER) && body.contains(&format!("served {name}")),
        "{what}: the handshake completes and nginx serves {name}: {r}"
    );
}

/// A byte sent with `MSG_OOB` in the middle of the server name: nginx's
/// socket (no `SO_OOBINLINE`) leaves it out of the stream and reads the
/// real name, while the segments carry the name with one byte more. The
/// segment with urgent data is not judged, so the handshake never
/// completes under the default policy.
#[test]
fn urgent_byte_inside_the_server_name() {
    let lab = Lab::new("urg");
    let server: TlsServer = tlslab::start_tls_server(&lab.t.server, lab.path(), 443, &["www.lab", "blocked.lab"]);

    // Without namewall nginx takes the ClientHello the urgent byte is taken out of.
    for name in ["www.lab", "blocked.lab"] {
        let r = tls(&lab, name, true);
        assert_served(&format!("{name} with an urgent byte, no namewall"), &r, name);
    }
    server.wait_served("blocked.lab", 1, Duration::from_secs(5));
    let served_before = server.served_names().len();

    let daemon = lab.daemon("run", &[]);
    // The helper's own handshake crosses namewall when nothing is urgent.
    let r = tls(&lab, "www.lab", false);
    assert_served("www.lab, nothing urgent", &r, "www.lab");
    let r = tls(&lab, "blocked.lab", true);
    assert!(r["handshake"] == false, "blocked.lab with an urgent byte must not complete: {r}");
    let counters = daemon.stop();
    let names = server.served_names();
    assert!(
        names[served_before..].iter().all(|n| n != "blocked.lab"),
        "nginx served blocked.lab through namewall: {names:?}"
    );
    assert!(get(&counters, "tcp_urgent") >= 1, "{counters:?}");
    assert!(get(&counters, "unjudged_drop") >= 1, "{counters:?}");
    assert_eq!(get(&counters, "tls_pass_no_match"), 1, "{counters:?}");
}

/// A decoy with a wrong TCP checksum between the two halves of a
/// ClientHello cut inside the server name, carrying the rest with the
/// name's remaining letters changed: the server discards it (a filter that
/// read it would judge another name). namewall verifies the checksum of
/// every segment that would move a flow: the decoy changes nothing (and is
/// dropped, `tcp_bad_checksum`), and the real rest is judged.
#[test]
fn checksum_decoy_inside_the_server_name() {
    let lab = Lab::new("csum");
    let server: TlsServer = tlslab::start_tls_server(&lab.t.server, lab.path(), 443, &["www.lab", "blocked.lab"]);
    let decoy = |name: &str| {
        evasion(&lab.t.client, &["tls", "--dst", addr::SERVER_V4, "--port", "443", "--name", name, "--decoy"])
    };
    let daemon = lab.daemon("run", &[]);
    let r = decoy("www.lab");
    assert_served("www.lab with a checksum decoy, through namewall", &r, "www.lab");
    let r = decoy("blocked.lab");
    assert!(r["handshake"] == false, "blocked.lab with a checksum decoy must not complete: {r}");
    let counters = daemon.stop();
    let names = server.served_names();
    assert!(names.iter().all(|n| n != "blocked.lab" && !n.contains("xx")), "nginx served {names:?}");
    assert!(get(&counters, "tcp_bad_checksum") >= 2, "{counters:?}");
    assert!(get(&counters, "tls_reset") >= 1, "{counters:?}");
    assert_eq!(get(&counters, "tls_pass_no_match"), 1, "{counters:?}");
}

/// `evasion.py dnstcp`: a query over TCP written in two sends.
fn dnstcp(lab: &Lab, dst: &str, name: &str, cut: &str) -> Value {
    evasion(&lab.t.client, &["dnstcp", "--dst", dst, "--name", name, "--cut", cut])
}

/// DNS over TCP in two segments: the length prefix alone, or the name cut
/// between them. dnsmasq reads the stream whole and answers; through
/// namewall the stream is followed the same way: a blocked name never
/// reaches dnsmasq (the segment completing its question is dropped and the
/// client reset), an unlisted one is answered.
#[test]
fn dns_over_tcp_split_into_segments() {
    let lab = Lab::new("tcpsplit");
    let dns = lab.dnsmasq();
    for (_, dst) in FAMILIES {
        for (name, cut) in [("ta1.ads.lab", "prefix"), ("ta2.ads.lab", "name")] {
            let r = dnstcp(&lab, dst, name, cut);
            assert_dnsmasq_answered(
                &format!("{name} cut at the {cut} via {dst}, no namewall"),
                &r["answer"],
                "10.12.0.66",
            );
            wait_logged(&dns, name);
        }
    }
    let daemon = lab.daemon("run", &[]);
    let mut refused = Vec::new();
    for (_, dst) in FAMILIES {
        for (name, cut) in [("tb1.ads.lab", "prefix"), ("tb2.ads.lab", "name")] {
            let r = dnstcp(&lab, dst, name, cut);
            assert!(r["answer"].is_null(), "{name} cut at the {cut} via {dst}: no answer: {r}");
            refused.push(name.to_owned());
        }
        for (name, cut) in [("tb3.www.lab", "prefix"), ("tb4.www.lab", "name")] {
            let r = dnstcp(&lab, dst, name, cut);
            assert_dnsmasq_answered(
                &format!("{name} cut at the {cut} via {dst}, through namewall"),
                &r["answer"],
                "10.12.0.80",
            );
            wait_logged(&dns, name);
        }
    }
    let counters = daemon.stop();
    assert_never_logged(&dns, &refused);
    // Each first segment kept; each blocked question reset when whole.
    assert!(get(&counters, "dns_tcp_partial") >= 8, "{counters:?}");
    assert!(get(&counters, "reset_tcp") >= 4, "{counters:?}");
    assert_eq!(get(&counters, "unjudged_drop"), 0, "{counters:?}");
}

/// The flood: 20 000 SYNs to nginx from random addresses of the client's
/// /24 and random ports, spread over at most 40 s; a flow table of 1024
/// (`--max-flows`) holds SYNs for 10 s, so it stays full throughout.
const FLOOD_SYNS: &str = "20000";
const FLOOD_SECONDS: &str = "40";
const FETCHES: usize = 5;

/// A lab with nginx, namewall with a small flow table, and a SYN flood
/// under way that has filled the table; `fetch` runs while it goes on.
/// Before the flood, a blocked fetch is reset and an allowed one loads.
fn during_syn_flood(tag: &str, fetch: impl FnOnce(&Lab, &TlsServer)) -> BTreeMap<String, u64> {
    let lab = Lab::new(tag);
    let server = tlslab::start_tls_server(&lab.t.server, lab.path(), 443, &["www.lab", "blocked.lab"]);
    let daemon = lab.daemon("run", &["--max-flows", "1024"]);
    let url = |name: &str| format!("https://{name}/");
    assert!(tlslab::curl(&lab.t.client, &url("www.lab"), addr::SERVER_V4).loaded(), "www.lab before the flood");
    let r = tlslab::curl(&lab.t.client, &url("blocked.lab"), addr::SERVER_V4);
    assert!(r.reset() && !r.loaded(), "blocked.lab before the flood: {r:?}");

    let mut flood = lab.t.client.spawn(
        &[
            evasion::PYTHON,
            evasion::SCRIPT,
            "synflood",
            "--dst",
            addr::SERVER_V4,
            "--port",
            "443",
            "--gw-mac",
            &lab.mac,
            "--subnet",
            "10.11.0.0",
            "--count",
            FLOOD_SYNS,
            "--seconds",
            FLOOD_SECONDS,
        ],
        &lab.path().join("flood.log"),
    );
    // Twice the new-flow table's size: every entry of before the flood
    // has been pushed out of the LRU by flood entries.
    let start = Instant::now();
    while get(&evasion::live_counters(&lab.subdir("run").join("namewall.sock")).unwrap(), "tcp_syn") < 2048 {
        assert!(flood.wait(Duration::ZERO).is_err(), "the flood ended before the table filled:\n{}", flood.log());
        assert!(start.elapsed() < Duration::from_secs(20), "the flood never filled the table:\n{}", flood.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    fetch(&lab, &server);
    assert!(flood.wait(Duration::ZERO).is_err(), "the flood ended before the fetches did:\n{}", flood.log());
    drop(flood);
    let counters = daemon.stop();
    assert!(get(&counters, "tcp_syn") >= 2048, "{counters:?}");
    // The flood filled only the LRU of new flows: the table ClientHellos
    // in progress need was never full.
    assert_eq!(get(&counters, "flow_table_full"), 0, "{counters:?}");
    assert_eq!(get(&counters, "tls_flow_table_full"), 0, "{counters:?}");
    counters
}

/// During a SYN flood that fills the new-flow table (an LRU: the flood's
/// entries push out older ones, the flood's own), new flows are still
/// judged: blocked fetches are reset at once, nginx never serves the name,
/// and allowed fetches load.
#[test]
fn syn_flood_new_flows_still_judged() {
    let (mut blocked, mut allowed) = (Vec::new(), Vec::new());
    let counters = during_syn_flood("flood", |lab, server| {
        for _ in 0..FETCHES {
            blocked.push(tlslab::curl(&lab.t.client, "https://blocked.lab/", addr::SERVER_V4));
            allowed.push(tlslab::curl(&lab.t.client, "https://www.lab/", addr::SERVER_V4));
        }
        let served = server.served_names();
        assert!(served.iter().all(|n| n != "blocked.lab"), "nginx served blocked.lab: {served:?}");
    });
    for r in &blocked {
        assert!(r.reset() && !r.loaded(), "blocked.lab during the flood is reset: {r:?}\n{counters:?}");
    }
    for r in &allowed {
        assert!(r.loaded(), "www.lab during the flood loads: {r:?}\n{counters:?}");
    }
}
