//! `cargo xtask lab`: a client, a router running namewall and a DNS server
//! in network namespaces, real `dig`/`kdig` queries, and what happened.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use namewall_tests::{
    evasion,
    netns::{self, Daemon, NetNs, Topology, addr},
    tlslab,
};

const NS: [&str; 3] = ["nwlab-client", "nwlab-router", "nwlab-server"];

/// Names the lab's dnsmasq answers (every name under each).
const RECORDS: &[(&str, &str, &str)] = &[
    ("example.lab", "10.12.0.80", "fd12::80"),
    ("malware.lab", "10.12.0.66", "fd12::66"),
    ("cdn.lab", "10.12.0.81", "fd12::81"),
    ("xn--bcher-kva.lab", "10.12.0.82", "fd12::82"),
];

/// (name, type, server, transport)
const QUERIES: &[(&str, &str, &str, &str)] = &[
    ("www.example.lab", "A", addr::SERVER_V4, "udp"),
    ("ads.example.lab", "A", addr::SERVER_V4, "udp"),
    ("x1.ADS.Example.lab", "AAAA", addr::SERVER_V6, "udp"),
    ("good.ads.example.lab", "A", addr::SERVER_V4, "udp"),
    ("tracker.example.lab", "A", addr::SERVER_V6, "udp"),
    ("notads.example.lab", "A", addr::SERVER_V4, "udp"),
    ("dl.malware.lab", "A", addr::SERVER_V4, "udp"),
    ("refused.example.lab", "A", addr::SERVER_V4, "udp"),
    ("sinkhole.example.lab", "A", addr::SERVER_V4, "udp"),
    ("cdn.lab", "A", addr::SERVER_V4, "udp"),
    ("img.cdn.lab", "A", addr::SERVER_V4, "udp"),
    ("bücher.lab", "A", addr::SERVER_V4, "udp"),
    ("www.example.lab", "A", addr::SERVER_V4, "tcp"),
    ("ads.example.lab", "A", addr::SERVER_V4, "tcp"),
];

/// HTTPS requests: (name, port, server address). curl is told the address
/// (`--resolve`), so the name never crosses DNS, as with DNS over HTTPS or a
/// cached answer: only the ClientHello's server name can give it away.
const HTTPS: &[(&str, u16, &str)] = &[
    ("www.example.lab", 443, addr::SERVER_V4),
    ("ads.example.lab", 443, addr::SERVER_V4),
    ("x1.ADS.Example.lab", 443, addr::SERVER_V6),
    ("good.ads.example.lab", 443, addr::SERVER_V6),
    ("dl.malware.lab", 8443, addr::SERVER_V4),
    ("img.cdn.lab", 443, addr::SERVER_V6),
    ("cdn.lab", 443, addr::SERVER_V4),
];

/// Page loads in headless Chromium, whose ~1.9 KB post-quantum ClientHello
/// crosses the lab in two segments (offloads are off), the server name in
/// either: (name, server address).
const BROWSER: &[(&str, &str)] = &[("www.example.lab", addr::SERVER_V4), ("dl.malware.lab", addr::SERVER_V4)];

/// What a client's attempt came to, in a word.
fn verdict(loaded: bool, reset: bool) -> &'static str {
    match (loaded, reset) {
        (true, _) => "page loaded",
        (false, true) => "reset by namewall",
        (false, false) => "failed (no reset)",
    }
}

/// Fetches every page in [`HTTPS`] with curl and [`BROWSER`] with Chromium
/// from the client; false when interrupted.
fn run_https(t: &Topology, dir: &std::path::Path, stop: &dyn Fn() -> bool) -> bool {
    let names: Vec<&str> = ["*.example.lab", "example.lab", "*.malware.lab", "cdn.lab", "*.cdn.lab"].to_vec();
    let _servers = [443, 8443].map(|port| tlslab::start_tls_server(&t.server, dir, port, &names));
    println!(
        "
== HTTPS from {} (nginx in {} on ports 443 and 8443)",
        NS[0], NS[2]
    );
    println!("  curl --resolve: the name never goes through DNS, only the ClientHello carries it");
    println!("  {:<28} {:<5} {:<16} {:<20} time", "name", "port", "via", "result");
    for (name, port, server) in HTTPS {
        if stop() {
            return false;
        }
        let url = format!("https://{name}:{port}/");
        let r = tlslab::curl(&t.client, &url, server);
        let result = verdict(r.loaded(), r.reset());
        println!("  {name:<28} {port:<5} {server:<16} {result:<20} {:.1} ms", r.time.as_secs_f64() * 1e3);
    }
    t.real_segments();
    println!(
        "
  headless Chromium (offloads off: its ClientHello crosses as MTU-sized segments)"
    );
    for (name, server) in BROWSER {
        if stop() {
            return false;
        }
        let url = format!("https://{name}/");
        let r = tlslab::chromium(&t.client, &url, server, dir);
        let result = verdict(r.loaded, r.reset());
        println!("  {name:<28} {:<5} {server:<16} {result:<20} {:.0} ms", 443, r.elapsed.as_secs_f64() * 1e3);
    }
    if stop() {
        return false;
    }
    run_tls_evasion(t, dir);
    true
}

fn usage() -> ! {
    eprintln!(
        "usage: namewall-lab [--keep | --down]\n  --keep  leave the lab running and print how to use it\n  --down  remove a lab left running by --keep"
    );
    std::process::exit(2);
}

fn lab_is_up() -> bool {
    let out = netns::sh(&["ip", "netns", "list"]);
    NS.iter().any(|n| out.lines().any(|l| l.split_whitespace().next() == Some(n)))
}

fn down() {
    for n in NS {
        let out = std::process::Command::new("ip").args(["netns", "pids", n]).output();
        if let Ok(out) = out {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = std::process::Command::new("kill").args(["-TERM", pid]).status();
            }
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    for n in NS {
        let _ = std::process::Command::new("ip").args(["netns", "del", n]).stderr(std::process::Stdio::null()).status();
    }
    println!("lab removed");
}

/// Queries every name in [`QUERIES`] with kdig from the client and prints
/// what came back; false when interrupted.
fn run_queries(t: &Topology, stop: &dyn Fn() -> bool) -> bool {
    println!("\n== queries from {} (kdig)", NS[0]);
    println!("  {:<24} {:<5} {:<4} {:<10} {:<9} {:<10} answer", "name", "type", "via", "status", "time", "answered");
    for (name, qtype, server, transport) in QUERIES {
        if stop() {
            return false;
        }
        let at = format!("@{server}");
        let mut args = vec!["kdig", &at, name, qtype, "+timeout=1", "+retry=0"];
        if *transport == "tcp" {
            args.push("+tcp");
        }
        let out = t.client.output(&args);
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |key: &str| -> String {
            text.lines()
                .find_map(|l| {
                    l.find(key).map(|i| l[i + key.len()..].split(';').next().unwrap_or_default().trim().to_owned())
                })
                .unwrap_or_default()
        };
        let status = field("status: ");
        let status = if status.is_empty() { "no answer".to_owned() } else { status };
        let flags = field("Flags: ");
        let time = text
            .lines()
            .find_map(|l| l.rsplit_once(") in ").map(|(_, t)| t.trim().to_owned()))
            .unwrap_or_else(|| "-".into());
        let who = if status == "no answer" {
            "dropped"
        } else if flags.split_whitespace().any(|f| f == "aa") {
            "dnsmasq"
        } else {
            "namewall"
        };
        let answer = text
            .lines()
            .skip_while(|l| !l.starts_with(";; ANSWER SECTION"))
            .skip(1)
            .take_while(|l| !l.trim().is_empty())
            .filter_map(|l| l.split_whitespace().last())
            .collect::<Vec<_>>()
            .join(" ");
        println!("  {name:<24} {qtype:<5} {transport:<4} {status:<10} {time:<9} {who:<10} {answer}");
    }

    true
}

/// One evasion tried from the client: what the client saw, and the
/// counters that moved while it ran (`namewall stats` before and after).
fn try_evasion(socket: &std::path::Path, what: &str, attempt: &dyn Fn() -> String) {
    println!("  {what}");
    let before = evasion::live_counters(socket);
    let seen = attempt();
    let after = evasion::live_counters(socket);
    let moved = match (before, after) {
        (Ok(before), Ok(after)) => after
            .iter()
            .filter(|(k, n)| judged(k) && **n > before.get(*k).copied().unwrap_or(0))
            .map(|(k, n)| format!("{k} +{}", n - before.get(k).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join(", "),
        (Err(e), _) | (_, Err(e)) => e,
    };
    println!("    client: {seen}");
    println!("    counters: {moved}");
}

/// Whether counter `name` says something about judging: not the packets
/// the filter skips (handshakes, ICMP, ...) nor the packet total.
fn judged(name: &str) -> bool {
    use maps::counters::{Counter, CounterKind};
    Counter::ALL.iter().any(|c| c.name() == name && c.kind() != CounterKind::Skipped)
}

/// What `evasion.py` said about a DNS answer, in a few words.
fn dns_outcome(r: Result<serde_json::Value, String>) -> String {
    match r {
        Ok(v) if v["answer"].is_null() && v["error"].is_null() => "no answer: refused".to_owned(),
        Ok(v) if v["answer"].is_null() => format!("no answer ({}): refused", v["error"].as_str().unwrap_or("?")),
        Ok(v) => format!("ANSWERED {}: not refused", v["answer"]),
        Err(e) => format!("could not try: {e}"),
    }
}

/// Evasions a client could try against the DNS filter, each refused:
/// printed with the counter that moved.
fn run_dns_evasions(t: &Topology, dir: &std::path::Path, stop: &dyn Fn() -> bool) -> bool {
    let socket = dir.join("namewall.sock");
    let mac = evasion::gw_mac(t);
    println!("\n== evasions a client could try (packets built with scapy: tests/evasion.py)");
    try_evasion(&socket, "x.ads.example.lab in two IPv4 fragments, the first ending inside the name", &|| {
        dns_outcome(evasion::run(
            &t.client,
            &[
                "udpfrag",
                "--src",
                addr::CLIENT_V4,
                "--dst",
                addr::SERVER_V4,
                "--gw-mac",
                &mac,
                "--name",
                "x.ads.example.lab",
                "--split",
                "32",
            ],
        ))
    });
    if stop() {
        return false;
    }
    try_evasion(&socket, "one query, two questions: www.example.lab, then ads.example.lab", &|| {
        dns_outcome(evasion::run(
            &t.client,
            &["multiq", "--dst", addr::SERVER_V4, "--name", "www.example.lab", "--second", "ads.example.lab"],
        ))
    });
    if stop() {
        return false;
    }
    try_evasion(&socket, "ads.example.lab over TCP (kdig +tcp, 10 s timeout)", &|| {
        let at = format!("@{}", addr::SERVER_V4);
        let start = std::time::Instant::now();
        let out = t.client.output(&["kdig", "+tcp", "+timeout=10", "+retry=0", &at, "ads.example.lab", "A"]);
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        // kdig says what it saw (a reset reads as "can't receive reply"); the counter says why.
        let said = text.lines().find(|l| l.contains("status:") || l.contains("WARNING")).unwrap_or("nothing");
        format!("{}, after {:.0} ms", said.trim_start_matches(";; ").trim(), start.elapsed().as_secs_f64() * 1e3)
    });
    if stop() {
        return false;
    }
    try_evasion(&socket, "ads.example.lab over TCP in two segments, the first ending inside the name", &|| {
        dns_outcome(evasion::run(
            &t.client,
            &["dnstcp", "--dst", addr::SERVER_V4, "--name", "ads.example.lab", "--cut", "name"],
        ))
    });
    !stop()
}

/// An urgent byte (`MSG_OOB`) inside a ClientHello's server name: nginx
/// drops it from the stream and would read the real name; namewall does
/// not judge such a segment, and drops it.
fn run_tls_evasion(t: &Topology, dir: &std::path::Path) {
    println!("\n  evasion: an urgent byte (MSG_OOB) inside the server name of a ClientHello to nginx");
    try_evasion(&dir.join("namewall.sock"), "ads.example.lab, one byte sent urgent in the middle of the name", &|| {
        match evasion::run(
            &t.client,
            &["tls", "--dst", addr::SERVER_V4, "--port", "443", "--name", "ads.example.lab", "--urgent"],
        ) {
            Ok(v) if v["handshake"] == true => "HANDSHAKE COMPLETED: not refused".to_owned(),
            Ok(v) => format!("no handshake ({}): refused", v["error"].as_str().unwrap_or("?")),
            Err(e) => format!("could not try: {e}"),
        }
    });
}

/// The dig status of `name` from the client, and who answered.
fn ask(t: &Topology, name: &str) -> String {
    let r = netns::dig(&t.client, addr::SERVER_V4, name, "A", &[]);
    let who = if r.flags.split_whitespace().any(|f| f == "aa") { "dnsmasq" } else { "namewall" };
    format!("{} (answered by {who})", r.status)
}

/// Operators' changes while traffic flows: the CLI verbs against the
/// running daemon's control socket, each checked with a query.
fn run_control(t: &Topology, dir: &std::path::Path, blocklist: &std::path::Path, stop: &dyn Fn() -> bool) -> bool {
    let bin = netns::namewall_bin();
    let socket = dir.join("namewall.sock");
    let ctl = |args: &[&str]| {
        println!("$ namewall {}", args.join(" "));
        let out = std::process::Command::new(&bin)
            .args(args)
            .arg("--socket")
            .arg(&socket)
            .output()
            .expect("run the namewall CLI");
        for line in String::from_utf8_lossy(&out.stdout).lines().chain(String::from_utf8_lossy(&out.stderr).lines()) {
            println!("  {line}");
        }
    };
    println!("\n== changing rules while it runs (control socket {})", socket.display());
    println!("  www.example.lab: {}", ask(t, "www.example.lab"));
    ctl(&["block", "www.example.lab", "--action", "refused"]);
    println!("  www.example.lab: {}", ask(t, "www.example.lab"));
    ctl(&["allow", "dl.malware.lab"]);
    println!("  dl.malware.lab: {}", ask(t, "dl.malware.lab"));
    ctl(&["block", "bad..name"]);
    if stop() {
        return false;
    }
    ctl(&["unblock", "www.example.lab", "dl.malware.lab"]);
    println!("  www.example.lab: {}", ask(t, "www.example.lab"));
    println!("  dl.malware.lab: {}", ask(t, "dl.malware.lab"));
    // A list edited and reloaded: refused while it has a malformed line
    // (the old set stays), then read by its changed lines only.
    let original = std::fs::read_to_string(blocklist).expect("read the lab's blocklist");
    let edit = |text: &str, what: &str| {
        println!("$ # {what}");
        std::fs::write(blocklist, text).expect("edit the lab's blocklist");
        ctl(&["reload"]);
        println!("  www.example.lab: {}", ask(t, "www.example.lab"));
    };
    let added = format!("{original}||www.example.lab^$action=refused\n");
    edit(&added, "blocklist.txt: a line added: ||www.example.lab^$action=refused");
    let without = |text: &str, what: &str| -> String {
        text.lines().filter(|l| !l.contains(what)).flat_map(|l| [l, "\n"]).collect()
    };
    let fixed = without(&added, "not a domain");
    edit(&fixed, "blocklist.txt: the malformed line removed");
    let back = without(&fixed, "www.example.lab");
    edit(&back, "blocklist.txt: the added line removed again");
    ctl(&["events", "--last", "4"]);
    ctl(&["stats", "--top", "3"]);
    !stop()
}

/// Leaves the lab running (`--keep`) and prints how to use it.
fn keep_up(t: Topology, daemon: Daemon, dns: netns::Proc, dir: tempfile::TempDir) {
    let bin = netns::namewall_bin();
    println!("\n== the lab stays up (--keep)");
    println!("  ip netns exec {} dig @{} ads.example.lab", NS[0], addr::SERVER_V4);
    println!("  ip netns exec {} kdig @{} +tcp www.example.lab", NS[0], addr::SERVER_V6);
    println!("  ip netns exec {} bash          # a shell on the router", NS[1]);
    println!("  namewall's log: {}   dnsmasq's log: {}", daemon.proc.log_path().display(), dns.log_path().display());
    println!("  replay a capture: ip netns exec {} tcpdump -i c0 -w /tmp/lab.pcap port 53, then", NS[0]);
    println!(
        "    {} replay --pcap /tmp/lab.pcap --blocklist lab/blocklist.txt --allowlist lab/allowlist.txt",
        bin.display()
    );
    let socket = dir.path().join("namewall.sock");
    println!("  push rules to the running filter (its control socket is the lab's own):");
    println!("    export NAMEWALL_SOCKET={}", socket.display());
    println!("    {0} block www.example.lab; {0} list; {0} stats; {0} unblock www.example.lab", bin.display());
    println!("  remove it: cargo xtask lab --down");
    std::mem::forget(daemon);
    std::mem::forget(dns);
    let _ = dir.keep();
    for ns in [t.client, t.router, t.server] {
        ns.keep();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let keep = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] => false,
        ["--keep"] => true,
        ["--down"] => {
            down();
            return;
        }
        _ => usage(),
    };
    if lab_is_up() {
        eprintln!("a lab is already up (namespaces {NS:?}); remove it with `cargo xtask lab --down`");
        std::process::exit(1);
    }
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = Arc::clone(&interrupted);
        ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)).expect("installing the Ctrl-C handler");
    }
    let stop = || {
        if interrupted.load(Ordering::SeqCst) {
            eprintln!("\ninterrupted: tearing the lab down");
            true
        } else {
            false
        }
    };

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::Builder::new().prefix("namewall-lab-").tempdir().expect("temp dir");
    // Copies, so the lab can edit its blocklist and reload it.
    let blocklist = dir.path().join("blocklist.txt");
    let allowlist = dir.path().join("allowlist.txt");
    std::fs::copy(root.join("lab/blocklist.txt"), &blocklist).expect("copy lab/blocklist.txt");
    std::fs::copy(root.join("lab/allowlist.txt"), &allowlist).expect("copy lab/allowlist.txt");

    println!("== topology");
    let t = Topology::build(NetNs::named(NS[0].into()), NetNs::named(NS[1].into()), NetNs::named(NS[2].into()));
    println!("  {} (c0 {} {})", NS[0], addr::CLIENT_V4, addr::CLIENT_V6);
    println!("    | veth");
    println!(
        "  {} (r0 {} {}  <- namewall attached here, r1 {} {})",
        NS[1],
        addr::ROUTER_C_V4,
        addr::ROUTER_C_V6,
        addr::ROUTER_S_V4,
        addr::ROUTER_S_V6
    );
    println!("    | veth");
    println!("  {} (s0 {} {}, dnsmasq, nginx)", NS[2], addr::SERVER_V4, addr::SERVER_V6);
    if stop() {
        return;
    }

    println!(
        "\n== dnsmasq in {}: authoritative for {}",
        NS[2],
        RECORDS.iter().map(|r| r.0).collect::<Vec<_>>().join(", ")
    );
    let dns = netns::start_dnsmasq(&t.server, dir.path(), RECORDS);
    println!("\n== namewall run --iface r0 --blocklist lab/blocklist.txt --allowlist lab/allowlist.txt");
    let daemon = Daemon::start(
        &t.router,
        dir.path(),
        netns::ROUTER_CLIENT_IF,
        &["--blocklist", blocklist.to_str().expect("utf-8"), "--allowlist", allowlist.to_str().expect("utf-8")],
    );
    for line in daemon.proc.log().lines() {
        println!("  {line}");
    }
    if stop() {
        return;
    }

    println!("\n== one blocked name in dig, as a user would type it");
    println!("$ ip netns exec {} dig @{} ads.example.lab", NS[0], addr::SERVER_V4);
    let out = t.client.output(&["dig", &format!("@{}", addr::SERVER_V4), "ads.example.lab", "+time=2", "+tries=1"]);
    for line in String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()) {
        println!("  {line}");
    }

    if !run_queries(&t, &stop) || !run_dns_evasions(&t, dir.path(), &stop) {
        return;
    }
    if !run_control(&t, dir.path(), &blocklist, &stop) {
        return;
    }
    if !run_https(&t, dir.path(), &stop) {
        return;
    }

    if keep {
        keep_up(t, daemon, dns, dir);
        return;
    }

    println!("\n== namewall stopped (SIGINT); its report");
    let (_, log) = daemon.stop_with_log();
    // What namewall prints after detaching: counters by kind, rules by hits.
    for line in log.lines().skip_while(|l| !l.contains("detached")).skip(1) {
        println!("  {line}");
    }
    println!("\n== what reached dnsmasq (blocked names never do)");
    for q in netns::dnsmasq_queries(&dns.log()) {
        println!("  {q}");
    }
    println!("\n== tearing down (namespaces {})", NS.join(", "));
}
