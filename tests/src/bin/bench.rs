//! `cargo xtask bench`: what namewall costs per packet, as a ratio to a
//! trivial XDP program measured in the same run, and what loading rules
//! costs in time and kernel memory. Writes BENCHMARKS.md.
#![expect(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "nanosecond and byte counts, far below 2^52; percentile indices"
)]

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use filter_user::{
    loader::{Baseline, Filter, LoadOptions},
    policy::PolicySource,
    rules::RuleSet,
};
use hickory_proto::rr::RecordType;
use maps::Action;
use namewall_tests::{dnswire, packet::Spec};

/// Rounds per measurement; the median is reported.
const ROUNDS: usize = 7;
/// Single runs per round for the cases a repeated run cannot measure.
const SINGLE_RUNS: usize = 20_000;

struct Args {
    repeat: u32,
    out: PathBuf,
}

fn parse_args() -> Args {
    let mut a = Args { repeat: 1_000_000, out: PathBuf::from("BENCHMARKS.md") };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        match k.as_str() {
            "--repeat" => a.repeat = it.next().and_then(|v| v.parse().ok()).expect("--repeat N"),
            "--out" => a.out = it.next().expect("--out FILE").into(),
            other => panic!("unknown argument {other:?} (usage: namewall-bench [--repeat N] [--out FILE])"),
        }
    }
    a
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// ns per run: the median over rounds of the mean the kernel reports for `repeat` runs.
fn repeated(run: impl Fn() -> Duration) -> f64 {
    median((0..ROUNDS).map(|_| run().as_nanos() as f64).collect())
}

/// ns per run for programs that change the packet: the answer is written
/// into it and a repeated test run would reuse the rewritten packet, so each
/// call runs once (the kernel's timer then brackets one run, on both sides).
fn single(run: impl Fn() -> Duration) -> f64 {
    median((0..ROUNDS).map(|_| median((0..SINGLE_RUNS).map(|_| run().as_nanos() as f64).collect())).collect())
}

/// `n` distinct rule names of 2 to 4 labels, like a big hosts blocklist,
/// plus the rule the matching case hits.
fn rule_list(n: usize) -> String {
    let mut s = String::with_capacity(n * 28);
    for i in 0..n {
        match i % 3 {
            0 => writeln!(s, "0.0.0.0 ads{i}.tracker{}.com", i % 977),
            1 => writeln!(s, "host{i}.cdn{}.example.net", i % 613),
            _ => writeln!(s, "site{i}.org"),
        }
        .expect("write to string");
    }
    s.push_str("blocked.example.com\n");
    s
}

/// A program with `n` rules loaded from a list file, and what loading cost.
struct Loaded {
    filter: Filter,
    rules: usize,
    parse: Duration,
    install: Duration,
    memory: u64,
}

fn load(n: usize, dir: &Path) -> Loaded {
    if n == 0 {
        let mut filter = Filter::load(LoadOptions::default()).expect("load program");
        filter.install(&RuleSet::new(1)).expect("install");
        return Loaded { filter, rules: 0, parse: Duration::ZERO, install: Duration::ZERO, memory: 0 };
    }
    let path = dir.join(format!("rules-{n}.txt"));
    std::fs::write(&path, rule_list(n)).expect("write list");
    let started = Instant::now();
    let policy =
        PolicySource { blocklists: vec![path], allowlists: vec![], strict: true }.load(rand::random()).expect("parse");
    let parse = started.elapsed();
    let opts = LoadOptions { trace: false, expected_rules: policy.rules.len(), max_flows: 0 };
    let mut filter = Filter::load(opts).expect("load program");
    filter.configure(Action::Nxdomain, false, 60).expect("configure");
    let started = Instant::now();
    filter.install(&policy.rules).expect("install");
    let install = started.elapsed();
    let memory = filter.ruleset_memory().expect("memlock") + filter.filter_memory().expect("memlock");
    Loaded { filter, rules: policy.rules.len(), parse, install, memory }
}

/// One table row: what, namewall ns, baseline ns, target.
struct Row {
    case: String,
    namewall: f64,
    baseline: f64,
    target: &'static str,
}

fn packet_rows(baseline: &Baseline, dir: &Path, repeat: u32) -> (Vec<Row>, Vec<Loaded>) {
    let other = Spec::udp4().tcp().dport(443).build(&[0u8; 64]);
    let miss = Spec::udp4().build(&dnswire::query("www.shop.example.org", RecordType::A));
    let hit = Spec::udp4().build(&dnswire::query("www.blocked.example.com", RecordType::A));
    let base_repeated = |pkt: &[u8]| repeated(|| baseline.bench(pkt, repeat).expect("baseline run").1);
    let base_single = |pkt: &[u8]| single(|| baseline.bench(pkt, 1).expect("baseline run").1);

    let mut rows = Vec::new();
    let mut loads = Vec::new();
    for n in [0usize, 100_000, 1_000_000] {
        eprintln!("bench: {n} rules");
        let l = load(n, dir);
        let f = &l.filter;
        if n == 0 {
            rows.push(Row {
                case: "non-DNS packet (TCP/443)".into(),
                namewall: repeated(|| f.bench(&other, repeat).expect("run").1),
                baseline: base_repeated(&other),
                target: "≤ 1.3x",
            });
        }
        rows.push(Row {
            case: format!("DNS query, 4 labels, no match, {n} rules"),
            namewall: repeated(|| f.bench(&miss, repeat).expect("run").1),
            baseline: base_repeated(&miss),
            target: if n == 1_000_000 { "≤ 6x" } else { "" },
        });
        if n > 0 {
            assert_eq!(f.bench(&hit, 1).expect("run").0.action, 3, "the matching query must be answered (XDP_TX)");
            rows.push(Row {
                case: format!("DNS query matching, NXDOMAIN rewrite, {n} rules (1 run per call)"),
                namewall: single(|| f.bench(&hit, 1).expect("run").1),
                baseline: base_single(&hit),
                target: "",
            });
            loads.push(l);
        }
    }
    (rows, loads)
}

/// Client-side latency of DNS over UDP through the namespace lab: a blocked
/// name (answered by namewall on the router) and an allowed one (answered by
/// dnsmasq behind it), `LATENCY_QUERIES` each, one at a time.
const LATENCY_QUERIES: usize = 500;

struct Latency {
    blocked: Vec<Duration>,
    allowed: Vec<Duration>,
}

fn latency(dir: &Path) -> Latency {
    use namewall_tests::netns::{self, Daemon, Topology, addr};
    let t = Topology::new("bench");
    let _dns = netns::start_dnsmasq(&t.server, dir, &[("example.lab", "10.12.0.80", "fd12::80")]);
    let list = dir.join("latency-block.txt");
    std::fs::write(&list, "ads.example.lab\n").expect("write list");
    let daemon =
        Daemon::start(&t.router, dir, netns::ROUTER_CLIENT_IF, &["--blocklist", list.to_str().expect("utf-8")]);
    let server: std::net::SocketAddr = format!("{}:53", addr::SERVER_V4).parse().expect("address");
    let times = netns::in_namespace(&t.client, || {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
        socket.set_read_timeout(Some(Duration::from_secs(1))).expect("timeout");
        let ask = |name: &str, rcode: u8| -> Vec<Duration> {
            let query = dnswire::query(name, RecordType::A);
            let mut buf = [0u8; 1500];
            (0..LATENCY_QUERIES)
                .map(|_| {
                    let started = Instant::now();
                    socket.send_to(&query, server).expect("send");
                    let (n, _) = socket.recv_from(&mut buf).expect("an answer within a second");
                    let took = started.elapsed();
                    assert!(
                        n >= 12 && buf[..2] == query[..2] && buf[3] & 0x0f == rcode,
                        "unexpected answer for {name}"
                    );
                    took
                })
                .collect()
        };
        Latency { blocked: ask("ads.example.lab", 3), allowed: ask("www.example.lab", 0) }
    });
    daemon.stop();
    times
}

fn percentile(v: &[Duration], p: f64) -> f64 {
    let mut v: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i]
}

fn machine() -> String {
    let uname = std::process::Command::new("uname")
        .arg("-srm")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or_default().trim().to_owned())
        })
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    format!("{uname}, {cpu}, {cpus} CPUs")
}

fn report(rows: &[Row], loads: &[Loaded], lat: &Latency, repeat: u32) -> String {
    let mut r = String::new();
    let w = &mut r;
    let _ = writeln!(w, "# namewall benchmarks\n");
    let _ =
        writeln!(w, "Produced by `cargo xtask bench` (repeat {repeat}, median of {ROUNDS} rounds) on {}.", machine());
    let _ =
        writeln!(w, "Per-packet times come from BPF_PROG_TEST_RUN on the loaded program. Every time is paired with a");
    let _ =
        writeln!(w, "trivial XDP program (bump one per-CPU counter, XDP_PASS) measured in the same run on the same");
    let _ =
        writeln!(w, "packet: the ratio is the figure to compare; absolute nanoseconds drift on this shared machine.\n");
    let _ = writeln!(w, "| case | namewall ns | baseline ns | ratio | target |\n|---|---:|---:|---:|---|");
    for row in rows {
        let ratio = row.namewall / row.baseline;
        let _ =
            writeln!(w, "| {} | {:.1} | {:.1} | {ratio:.2}x | {} |", row.case, row.namewall, row.baseline, row.target);
    }
    let _ =
        writeln!(w, "\nRows marked \"1 run per call\" time single runs (the kernel's timer brackets one run, so both");
    let _ = writeln!(
        w,
        "sides include its overhead): the answer is written into the packet, and a repeated test run would"
    );
    let _ = writeln!(w, "reuse the rewritten packet.\n");
    let _ = writeln!(w, "## Loading rules\n");
    let _ = writeln!(
        w,
        "| rules | parse + hash (user space) | install (maps, batch updates) | total | kernel memory | per rule | target |"
    );
    let _ = writeln!(w, "|---:|---:|---:|---:|---:|---:|---|");
    for l in loads {
        let total = l.parse + l.install;
        let target = if l.rules > 1_000_000 { "≤ 2 s, ≤ 100 B/rule" } else { "" };
        let _ = writeln!(
            w,
            "| {} | {:.0} ms | {:.0} ms | {:.0} ms | {:.1} MiB | {:.1} B | {target} |",
            l.rules,
            l.parse.as_secs_f64() * 1e3,
            l.install.as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3,
            l.memory as f64 / f64::from(1 << 20),
            l.memory as f64 / l.rules as f64
        );
    }
    let _ = writeln!(w, "\nKernel memory is the `memlock` the kernel accounts in fdinfo for the rule-set hash map");
    let _ =
        writeln!(w, "(preallocated, sized to the list plus 1/64 and 1024 entries of headroom for live additions) and");
    let _ = writeln!(w, "for the negative-lookup bit filter (16 bits per rule, rounded up to a power of two).");
    let _ = writeln!(w, "\n## Latency at the client\n");
    let _ = writeln!(
        w,
        "{LATENCY_QUERIES} DNS queries over UDP, one at a time, from the lab's client namespace through the"
    );
    let _ = writeln!(
        w,
        "router (namewall attached in native mode) to the server namespace (dnsmasq), all on this machine.\n"
    );
    let _ = writeln!(w, "| query | answered by | median µs | p99 µs | target |\n|---|---|---:|---:|---|");
    for (what, who, v, target) in [
        ("blocked name", "namewall (NXDOMAIN, XDP_TX)", &lat.blocked, "< 1 ms"),
        ("allowed name", "dnsmasq", &lat.allowed, ""),
    ] {
        let _ = writeln!(w, "| {what} | {who} | {:.0} | {:.0} | {target} |", percentile(v, 0.5), percentile(v, 0.99));
    }
    r
}

fn main() {
    let args = parse_args();
    let dir = tempfile::tempdir().expect("temp dir");
    let baseline = Baseline::load().expect("load the baseline program");
    let (rows, loads) = packet_rows(&baseline, dir.path(), args.repeat);
    eprintln!("bench: latency through the namespace lab");
    let lat = latency(dir.path());
    let text = report(&rows, &loads, &lat, args.repeat);
    print!("{text}");
    std::fs::write(&args.out, text).expect("write the report");
    eprintln!("bench: wrote {}", args.out.display());
}
