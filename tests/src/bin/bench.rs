//! `cargo xtask bench`: what namewall costs per packet, as a ratio to a
//! trivial XDP program measured in the same run, and what loading rules
//! costs in time and kernel memory. Writes BENCHMARKS.md.

use std::{
    fmt::Write as _,
    io::Write as _,
    path::PathBuf,
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

/// ns per run of `f`, median over rounds.
fn measure(mut f: impl FnMut() -> Duration) -> f64 {
    median((0..ROUNDS).map(|_| f().as_nanos() as f64).collect())
}

/// A non-DNS frame: a TCP segment to port 443.
fn non_dns() -> Vec<u8> {
    Spec::udp4().tcp().dport(443).build(&[0u8; 64])
}

fn dns(name: &str) -> Vec<u8> {
    Spec::udp4().build(&dnswire::query(name, RecordType::A))
}

/// `n` distinct rule names of 2 to 4 labels, like a big hosts blocklist.
fn rule_names(n: usize) -> String {
    let mut s = String::with_capacity(n * 28);
    for i in 0..n {
        match i % 3 {
            0 => writeln!(s, "0.0.0.0 ads{i}.tracker{}.com", i % 977),
            1 => writeln!(s, "host{i}.cdn{}.example.net", i % 613),
            _ => writeln!(s, "site{i}.org"),
        }
        .expect("write to string");
    }
    s
}

struct Loaded {
    filter: Filter,
    rules: usize,
    parse: Duration,
    install: Duration,
    memory: u64,
}

fn load(n: usize, dir: &std::path::Path) -> Loaded {
    let path = dir.join(format!("rules-{n}.txt"));
    let mut text = rule_names(n);
    // The rule the matching benchmark hits.
    text.push_str("blocked.example.com\n");
    std::fs::write(&path, text).expect("write list");
    let t = Instant::now();
    let policy = PolicySource { blocklists: vec![path], allowlists: vec![], strict: true }.load(rand::random()).expect("parse list");
    let parse = t.elapsed();
    let mut filter = Filter::load(LoadOptions { trace: false, expected_rules: policy.rules.len() }).expect("load program");
    filter.configure(Action::Nxdomain, false, 60).expect("configure");
    let t = Instant::now();
    filter.install(&policy.rules).expect("install");
    let install = t.elapsed();
    let memory = filter.ruleset_memory().expect("memlock") + filter.filter_memory().expect("memlock");
    Loaded { filter, rules: policy.rules.len(), parse, install, memory }
}

fn main() {
    let args = parse_args();
    let dir = tempfile::tempdir().expect("temp dir");
    let baseline = Baseline::load().expect("load the baseline program");
    let repeat = args.repeat;

    let pkt_other = non_dns();
    let pkt_miss = dns("www.shop.example.org");
    let pkt_hit = dns("www.blocked.example.com");

    // Baseline, measured around every namewall measurement: the machine is shared.
    let base_repeat = |pkt: &[u8]| measure(|| baseline.bench(pkt, repeat).expect("baseline run").1);
    // One run per call: the matching path rewrites the packet, and repeated
    // runs of BPF_PROG_TEST_RUN would reuse the rewritten packet.
    let base_single = |pkt: &[u8]| {
        measure(|| {
            let mut v: Vec<f64> = (0..20_000).map(|_| baseline.bench(pkt, 1).expect("baseline run").1.as_nanos() as f64).collect();
            Duration::from_nanos(median(std::mem::take(&mut v)) as u64)
        })
    };

    let mut rows: Vec<(String, f64, f64, String)> = Vec::new();
    let mut loads = Vec::new();
    for n in [0usize, 100_000, 1_000_000] {
        eprintln!("bench: {n} rules");
        let l = if n == 0 {
            let mut filter = Filter::load(LoadOptions::default()).expect("load program");
            filter.install(&RuleSet::new(1)).expect("install");
            Loaded { filter, rules: 0, parse: Duration::ZERO, install: Duration::ZERO, memory: 0 }
        } else {
            load(n, dir.path())
        };
        let f = &l.filter;
        if n == 0 {
            let b = base_repeat(&pkt_other);
            let t = measure(|| f.bench(&pkt_other, repeat).expect("run").1);
            rows.push(("non-DNS packet (TCP/443)".into(), t, b, "≤ 1.3x".into()));
        }
        let b = base_repeat(&pkt_miss);
        let t = measure(|| f.bench(&pkt_miss, repeat).expect("run").1);
        let target = if n == 1_000_000 { "≤ 6x" } else { "" };
        rows.push((format!("DNS query, 4 labels, no match, {n} rules"), t, b, target.into()));
        if n > 0 {
            let (r, _) = f.bench(&pkt_hit, 1).expect("run");
            assert_eq!(r.action, 3, "the matching packet must be answered (XDP_TX)");
            let b = base_single(&pkt_hit);
            let t = measure(|| {
                let mut v: Vec<f64> = (0..20_000).map(|_| f.bench(&pkt_hit, 1).expect("run").1.as_nanos() as f64).collect();
                Duration::from_nanos(median(std::mem::take(&mut v)) as u64)
            });
            rows.push((format!("DNS query matching, NXDOMAIN rewrite, {n} rules (1 run per call)"), t, b, String::new()));
            loads.push((n, l.rules, l.parse, l.install, l.memory));
        }
    }

    let mut report = String::new();
    let uname = std::process::Command::new("uname").arg("-srm").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or_default().trim().to_owned()))
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    writeln!(report, "# namewall benchmarks\n").unwrap();
    writeln!(report, "Produced by `cargo xtask bench` (repeat {repeat}, median of {ROUNDS} rounds) on {uname}, {cpu}, {cpus} CPUs.").unwrap();
    writeln!(report, "Per-packet times come from BPF_PROG_TEST_RUN on the loaded program. Every time is paired with a trivial").unwrap();
    writeln!(report, "XDP program (bump one per-CPU counter, XDP_PASS) measured in the same run on the same packet: the ratio").unwrap();
    writeln!(report, "is the figure to compare; absolute nanoseconds drift on this shared machine.\n").unwrap();
    writeln!(report, "| case | namewall ns | baseline ns | ratio | target |\n|---|---:|---:|---:|---|").unwrap();
    for (name, t, b, target) in &rows {
        writeln!(report, "| {name} | {t:.1} | {b:.1} | {:.2}x | {target} |", t / b).unwrap();
    }
    writeln!(report, "\nRows marked \"1 run per call\" time a single run (the kernel's timer brackets one run, so both sides").unwrap();
    writeln!(report, "include its overhead): the answer is written into the packet, and a repeated test run would reuse it.\n").unwrap();
    writeln!(report, "## Loading rules\n").unwrap();
    writeln!(report, "| rules | parse + hash (user space) | install (map + batch update) | total | kernel memory | per rule | target |\n|---:|---:|---:|---:|---:|---:|---|").unwrap();
    for (n, rules, parse, install, mem) in &loads {
        let total = *parse + *install;
        let target = if *n == 1_000_000 { "≤ 2 s, ≤ 100 B/rule" } else { "" };
        writeln!(
            report,
            "| {rules} | {:.0} ms | {:.0} ms | {:.0} ms | {:.1} MiB | {:.1} B | {target} |",
            parse.as_secs_f64() * 1e3,
            install.as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3,
            *mem as f64 / (1 << 20) as f64,
            *mem as f64 / *rules as f64
        )
        .unwrap();
    }
    writeln!(report, "\nKernel memory is the rule-set map's `memlock` as the kernel accounts it in fdinfo: a preallocated").unwrap();
    writeln!(report, "hash map sized to the list plus 1/64 and 1024 entries of headroom for live additions.").unwrap();
    print!("{report}");
    std::fs::File::create(&args.out).and_then(|mut f| f.write_all(report.as_bytes())).expect("write the report");
    eprintln!("bench: wrote {}", args.out.display());
}
