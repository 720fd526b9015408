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
    dataplane::{Baseline, Filter, LoadOptions},
    policy::PolicySource,
    policy::rules::RuleSet,
};
use hickory_proto::rr::RecordType;
use maps::{Action, Counter};
use namewall_tests::{
    dnswire,
    packet::{self, Spec},
    report::{self, machine},
    tls::{self, Flow, HelloKind},
};

/// Rounds per measurement; the median is reported.
const ROUNDS: usize = 11;
/// Single runs per round for the cases a repeated run cannot measure.
const SINGLE_RUNS: usize = 20_000;
/// Single runs per round for TLS cases that leave a flow behind (each run
/// needs a flow of its own, and the flow table is bounded).
const TLS_SINGLE_RUNS: usize = 1_500;
/// TCP payload of a full-sized segment at MTU 1500 with timestamps.
const MSS: usize = 1448;

struct Args {
    repeat: u32,
    out: PathBuf,
    /// Only the per-packet TLS rows and the non-DNS row, against 1000 rules,
    /// printed and not written: for working on the TLS path.
    tls_only: bool,
    /// Only the rule loads and reloads, printed (for working on them).
    loads_only: bool,
    /// Only the per-packet rows, printed: for comparing builds.
    packets_only: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        repeat: 1_000_000,
        out: PathBuf::from("BENCHMARKS.md"),
        tls_only: false,
        loads_only: false,
        packets_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        match k.as_str() {
            "--repeat" => a.repeat = it.next().and_then(|v| v.parse().ok()).expect("--repeat N"),
            "--out" => a.out = it.next().expect("--out FILE").into(),
            "--tls-only" => a.tls_only = true,
            "--loads-only" => a.loads_only = true,
            "--packets-only" => a.packets_only = true,
            other => panic!(
                "unknown argument {other:?} (usage: namewall-bench [--repeat N] [--out FILE] [--tls-only | --loads-only | --packets-only])"
            ),
        }
    }
    a
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The mean ns per run the kernel reports for one test run.
fn ns(d: Duration) -> f64 {
    d.as_nanos() as f64
}

/// The median of `runs` calls of `run`: for programs that change the
/// packet (an answer is written into it, and a repeated test run would
/// reuse the rewritten packet) each call runs once, and the kernel's timer
/// then brackets one run, on both sides.
fn singles(runs: usize, mut run: impl FnMut() -> f64) -> f64 {
    median((0..runs).map(|_| run()).collect())
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
    let policy = PolicySource { blocklists: vec![path], strict: true, ..PolicySource::default() }
        .load(rand::random())
        .expect("parse");
    let parse = started.elapsed();
    let opts = LoadOptions { expected_rules: policy.rules.len(), ..LoadOptions::default() };
    let mut filter = Filter::load(opts).expect("load program");
    filter.configure(Action::Nxdomain, false, 60).expect("configure");
    let started = Instant::now();
    filter.install(&policy.rules).expect("install");
    let install = started.elapsed();
    let memory = filter.ruleset_memory().expect("memlock") + filter.filter_memory().expect("memlock");
    Loaded { filter, rules: policy.rules.len(), parse, install, memory }
}

/// One table row: what, namewall ns, baseline ns, their ratio, target.
struct Row {
    case: String,
    namewall: f64,
    baseline: f64,
    ratio: f64,
    target: &'static str,
}

impl Row {
    /// Measures namewall and the baseline in alternating rounds, `ROUNDS`
    /// of each after one uncounted warm-up round each, and keeps each
    /// side's best round: noise on a shared machine only ever adds time, so
    /// the fastest round is the closest to what the code costs, and the
    /// ratio of the two is what drifts least from run to run.
    fn measure(
        case: impl Into<String>,
        target: &'static str,
        mut namewall: impl FnMut() -> f64,
        mut baseline: impl FnMut() -> f64,
    ) -> Self {
        namewall();
        baseline();
        let (mut ours, mut theirs) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..ROUNDS {
            ours = ours.min(namewall());
            theirs = theirs.min(baseline());
        }
        Self { case: case.into(), namewall: ours, baseline: theirs, ratio: ours / theirs, target }
    }
}

/// Rows for every packet case, the rule loads, and the instructions the
/// verifier processed to accept the program.
fn packet_rows(baseline: &Baseline, dir: &Path, repeat: u32) -> (Vec<Row>, Vec<Loaded>, Verified) {
    // NTP: traffic namewall neither parses nor tracks (every TCP segment is
    // a TLS candidate; see the TLS rows).
    let other = Spec::udp4().dport(123).build(&[0x23; 48]);
    let miss = Spec::udp4().build(&dnswire::query("www.shop.example.org", RecordType::A));
    let hit = Spec::udp4().build(&dnswire::query("www.blocked.example.com", RecordType::A));
    let base = |pkt: &[u8]| ns(baseline.bench(pkt, repeat).expect("baseline run").1);
    let base_single = |pkt: &[u8]| singles(SINGLE_RUNS, || ns(baseline.bench(pkt, 1).expect("baseline run").1));

    let mut rows = Vec::new();
    let mut loads = Vec::new();
    let mut verified = Vec::new();
    for n in [0usize, 100_000, 1_000_000] {
        eprintln!("bench: {n} rules");
        let l = load(n, dir);
        let f = &l.filter;
        if n == 0 {
            verified = verified_budget(f);
            rows.push(Row::measure(
                "other traffic (UDP/123)",
                "≤ 1.3x",
                || ns(f.bench(&other, repeat).expect("run").1),
                || base(&other),
            ));
        }
        rows.push(Row::measure(
            format!("DNS query, 4 labels, no match, {n} rules"),
            if n == 1_000_000 { "≤ 6x" } else { "" },
            || ns(f.bench(&miss, repeat).expect("run").1),
            || base(&miss),
        ));
        if n > 0 {
            assert_eq!(f.bench(&hit, 1).expect("run").0.action, 3, "the matching query must be answered (XDP_TX)");
            rows.push(Row::measure(
                format!("DNS query matching, NXDOMAIN rewrite, {n} rules (1 run per call)"),
                "",
                || singles(SINGLE_RUNS, || ns(f.bench(&hit, 1).expect("run").1)),
                || base_single(&hit),
            ));
            if n == 1_000_000 {
                rows.extend(tls_rows(f, baseline, repeat));
                rows.extend(evasion_rows(f, baseline, repeat));
            }
            loads.push(l);
        }
    }
    (rows, loads, verified)
}

/// Instructions the verifier processed for each program of the object.
type Verified = Vec<(&'static str, u32)>;

/// The verifier's limit on the instructions it processes per program.
const VERIFIER_LIMIT: u32 = 1_000_000;

/// Each program's verified instruction count; fails loudly when one
/// crosses 60% of the verifier's limit (the target is 40%): the stages are
/// split so that each has room to grow, and a program near the limit is
/// one change away from not loading at all.
fn verified_budget(f: &Filter) -> Verified {
    let counts: Verified = f
        .verified_instructions()
        .expect("program info")
        .into_iter()
        .map(|(name, n)| (name, n.expect("the kernel reports verified instruction counts")))
        .collect();
    for (name, n) in &counts {
        assert!(
            *n <= VERIFIER_LIMIT / 100 * 60,
            "program {name} takes the verifier {n} instructions, past 60% of its limit of {VERIFIER_LIMIT}: split \
             its stage further (see maps::layout::stage)"
        );
    }
    counts
}

/// Runs `pkt` once and checks that it moved `counter`: a benchmark of the
/// wrong path would be worse than none.
fn expect(f: &Filter, pkt: &[u8], counter: Counter, what: &str) -> u32 {
    let before = f.counters().expect("counters")[counter as usize];
    let action = f.run(pkt).expect("run").action;
    let after = f.counters().expect("counters")[counter as usize];
    assert_eq!(after, before + 1, "{what}: expected outcome {}", counter.name());
    action
}

/// One round of single timed runs of `timed(i)`, each after the untimed
/// `setup(i)` frames, for `i` on from `*next` (flows of their own).
fn singles_after(
    f: &Filter,
    next: &mut usize,
    setup: impl Fn(usize) -> Vec<Vec<u8>>,
    timed: impl Fn(usize) -> Vec<u8>,
) -> f64 {
    singles(TLS_SINGLE_RUNS, || {
        *next += 1;
        for p in setup(*next) {
            f.run(&p).expect("setup run");
        }
        ns(f.bench(&timed(*next), 1).expect("run").1)
    })
}

/// A flow of its own for run `i` (unique below 60 000): client port and
/// address vary.
fn flow_no(i: usize) -> Flow {
    let ip = std::net::Ipv4Addr::new(10, 64, (i >> 8) as u8 & 0x3f, i as u8);
    Flow::v4().sport(1024 + (i % 60_000) as u16).with_client_ip(ip.into())
}

/// TLS: a ClientHello in one segment, each segment of a post-quantum
/// ClientHello split at MTU 1500 (with the server name in the first and in
/// the second segment), a data segment of an established flow, and a
/// later packet of a blocked flow.
fn tls_rows(f: &Filter, baseline: &Baseline, repeat: u32) -> Vec<Row> {
    let mut rows = Vec::new();
    let base = |pkt: &[u8]| ns(baseline.bench(pkt, repeat).expect("baseline run").1);
    let timed = |pkt: &[u8]| ns(f.bench(pkt, repeat).expect("run").1);
    let allowed = "www.shop.example.org";
    let flow = Flow::v4();

    // One segment: untracked, parsed and judged on every run.
    let small = tls::client_hello(Some(allowed), HelloKind::Small);
    let small_seg = flow.segment(0, &small);
    expect(f, &small_seg, Counter::TlsPassNoMatch, "small ClientHello");
    rows.push(Row::measure(
        format!("TLS ClientHello in one segment ({} B), name allowed", small.len()),
        "≤ 10x",
        || timed(&small_seg),
        || base(&small_seg),
    ));

    // Post-quantum: the extension order is random (rustls shuffles it, as
    // Chromium does); the name first, so it is in segment 1...
    let shuffled = tls::client_hello(Some(allowed), HelloKind::PostQuantum);
    let pq = tls::with_extensions(&shuffled, |exts| {
        let at = exts.iter().position(|(t, _)| *t == 0).expect("server_name");
        let sni = exts.remove(at);
        exts.insert(0, sni);
    });
    assert!(tls::find(&pq, allowed.as_bytes()).expect("name") + allowed.len() < MSS);
    let [pq1, pq2] = <[Vec<u8>; 2]>::try_from(flow.segments(&pq, &[MSS])).expect("two segments");
    expect(f, &pq1, Counter::TlsPassNoMatch, "PQ segment 1 with the name");
    expect(f, &pq2, Counter::TcpOther, "PQ segment 2 after the verdict");
    rows.push(Row::measure(
        format!("TLS {} B ClientHello, name in segment 1: segment 1 ({MSS} B)", pq.len()),
        "≤ 10x",
        || timed(&pq1),
        || base(&pq1),
    ));
    rows.push(Row::measure(
        format!("TLS {} B ClientHello, name in segment 1: segment 2 ({} B)", pq.len(), pq.len() - MSS),
        "",
        || timed(&pq2),
        || base(&pq2),
    ));

    // An established flow's data: no state, a hash and a hint word; then
    // with a quarter of the default table tracked, where the flow's hint
    // counter may be shared with a tracked flow's (a lookup, then).
    let mut data = vec![0x17, 0x03, 0x03, 0x05, 0xa8];
    data.resize(MSS, 0x5a);
    let mid = flow.segment(5000, &data);
    expect(f, &mid, Counter::TcpOther, "mid-flow segment");
    rows.push(Row::measure(
        format!("TLS data segment of an established flow ({MSS} B), flow table empty"),
        "≤ 2x",
        || timed(&mid),
        || base(&mid),
    ));
    let tracked = 16_384;
    for i in 0..tracked {
        let ip = std::net::Ipv4Addr::new(10, 65, (i >> 8) as u8, i as u8);
        f.run(&Flow::v4().sport(2000).with_client_ip(ip.into()).syn()).expect("SYN");
    }
    assert!(f.new_flow_count().expect("flow count") >= tracked);
    // 64 established flows of other clients, averaged: the few whose hint
    // counter is shared pay for a lookup.
    let others: Vec<Vec<u8>> = (0..64u8)
        .map(|i| Flow::v4().with_client_ip(std::net::Ipv4Addr::new(10, 66, 0, i).into()).segment(5000, &data))
        .collect();
    let share = (repeat / 64).max(1);
    let mean = |run: &dyn Fn(&[u8]) -> f64| others.iter().map(|p| run(p)).sum::<f64>() / others.len() as f64;
    rows.push(Row::measure(
        format!("TLS data segment of an established flow ({MSS} B), {tracked} flows tracked (mean of 64 flows)"),
        "≤ 2x",
        || mean(&|p| ns(f.bench(p, share).expect("run").1)),
        || mean(&|p| ns(baseline.bench(p, share).expect("baseline run").1)),
    ));

    rows.extend(tls_state_rows(f, baseline, repeat, &pq, &data));
    rows
}

/// TLS with flow state: a ClientHello whose name is in its second segment
/// (the first parsed and its state kept, the second parsed from it), and a
/// blocked flow (its reset, then its later packets dropped).
fn tls_state_rows(f: &Filter, baseline: &Baseline, repeat: u32, pq: &[u8], data: &[u8]) -> Vec<Row> {
    let mut rows = Vec::new();
    let base = |pkt: &[u8]| ns(baseline.bench(pkt, repeat).expect("baseline run").1);
    let timed = |pkt: &[u8]| ns(f.bench(pkt, repeat).expect("run").1);
    let base_single = |pkt: &[u8]| singles(TLS_SINGLE_RUNS, || ns(baseline.bench(pkt, 1).expect("baseline run").1));
    let allowed = "www.shop.example.org";
    // ...and last, in segment 2: the first segment is parsed and its state
    // kept, the second parsed from that state.
    let late = tls::with_extensions(pq, |exts| {
        let sni = exts.remove(0);
        exts.push(sni);
    });
    assert!(tls::find(&late, allowed.as_bytes()).expect("name") > MSS);
    let late_segs = |i: usize| flow_no(i).segments(&late, &[MSS]);
    let probe = late_segs(0);
    expect(f, &probe[0], Counter::TlsPending, "late-name segment 1");
    expect(f, &probe[1], Counter::TlsPassNoMatch, "late-name segment 2");
    let mut next = 0;
    rows.push(Row::measure(
        format!("TLS {} B ClientHello, name in segment 2: segment 1, state kept (1 run per call)", late.len()),
        "",
        || singles_after(f, &mut next, |_| Vec::new(), |i| late_segs(i)[0].clone()),
        || base_single(&probe[0]),
    ));
    let mut next = 18_000;
    rows.push(Row::measure(
        format!("TLS {} B ClientHello, name in segment 2: segment 2, judged (1 run per call)", late.len()),
        "",
        || singles_after(f, &mut next, |i| vec![late_segs(i)[0].clone()], |i| late_segs(i)[1].clone()),
        || base_single(&probe[1]),
    ));

    // A blocked flow: a reset once, then its packets dropped from the table.
    let blocked = tls::client_hello(Some("www.blocked.example.com"), HelloKind::Small);
    let bflow = Flow::v4().sport(999);
    assert_eq!(expect(f, &bflow.segment(0, &blocked), Counter::TlsReset, "blocked ClientHello"), 3);
    let later = bflow.segment(blocked.len(), data);
    expect(f, &later, Counter::TlsBlockedFlow, "blocked flow's data");
    let mut next = 36_000;
    rows.push(Row::measure(
        "TLS ClientHello in one segment, name blocked: RST written (1 run per call)",
        "",
        || singles_after(f, &mut next, |_| Vec::new(), |i| flow_no(i).segment(0, &blocked)),
        || base_single(&bflow.segment(0, &blocked)),
    ));
    rows.push(Row::measure(
        format!("TLS data segment of a blocked flow, dropped ({MSS} B)"),
        "",
        || timed(&later),
        || base(&later),
    ));
    rows
}

/// What judging costs for what a client trying to slip past sends: a DNS
/// query in IP fragments (its first fragment judged), a query inside PPPoE,
/// the most parse work one segment can cause (a ClientHello taking all
/// the parser steps a segment may, behind four VLAN tags and eight IPv6
/// extension headers), and a SYN of a flood (each one a new `NEW_FLOWS`
/// entry, the LRU evicting the oldest).
fn evasion_rows(f: &Filter, baseline: &Baseline, repeat: u32) -> Vec<Row> {
    let mut rows = Vec::new();
    let base = |pkt: &[u8]| ns(baseline.bench(pkt, repeat).expect("baseline run").1);
    let timed = |pkt: &[u8]| ns(f.bench(pkt, repeat).expect("run").1);
    let allowed = "www.shop.example.org";

    let padded = dnswire::with_padding(&dnswire::query(allowed, RecordType::A), 1400);
    let first = packet::fragments_v4(&Spec::udp4().build(&padded), 14, 7, &[1000])[0].clone();
    expect(f, &first, Counter::PassNoMatch, "first fragment of a DNS query");
    rows.push(Row::measure(
        "DNS query in IPv4 fragments: the first, question whole, no match",
        "≤ 8x",
        || timed(&first),
        || base(&first),
    ));
    let pppoe = packet::pppoe(&Spec::udp4().build(&dnswire::query(allowed, RecordType::A)), 0x0101);
    expect(f, &pppoe, Counter::PassNoMatch, "DNS query in PPPoE");
    rows.push(Row::measure("DNS query in PPPoE, no match", "≤ 6x", || timed(&pppoe), || base(&pppoe)));

    // DNS over TCP: each run a connection of its own (a repeat would be a
    // retransmission), its stream kept in `DNS_STREAMS`, which is emptied
    // (untimed) before it fills.
    let query = packet::tcp_dns(&dnswire::query(allowed, RecordType::A));
    let conn = |i: usize| {
        if i.is_multiple_of(4096) {
            f.forget_dns_streams().expect("empty DNS_STREAMS");
        }
        flow_no(i).dport(53)
    };
    let base_single = |pkt: &[u8]| singles(TLS_SINGLE_RUNS, || ns(baseline.bench(pkt, 1).expect("baseline run").1));
    f.forget_dns_streams().expect("empty DNS_STREAMS");
    expect(f, &conn(0).segment(0, &query), Counter::PassNoMatch, "DNS query over TCP");
    let mut next = 0;
    rows.push(Row::measure(
        "DNS query over TCP, one segment, no match (1 run per call)",
        "",
        || singles_after(f, &mut next, |_| Vec::new(), |i| conn(i).segment(0, &query)),
        || base_single(&conn(0).segment(0, &query)),
    ));
    f.forget_dns_streams().expect("empty DNS_STREAMS");
    let mut next = 0;
    rows.push(Row::measure(
        "DNS query over TCP split inside the name: segment 2, judged (1 run per call)",
        "",
        || {
            singles_after(
                f,
                &mut next,
                |i| vec![conn(i).segment(0, &query[..20])],
                |i| conn(i).segment(20, &query[20..]),
            )
        },
        || base_single(&conn(0).segment(20, &query[20..])),
    ));
    f.forget_dns_streams().expect("empty DNS_STREAMS");

    // The worst segment: the most parser steps one segment may take
    // (`SEGMENT_STEPS`), each as dear as a step gets (an extension: empty
    // ones, before the name, which comes last), the ClientHello still
    // judged, behind the deepest headers. Steps over records cost less
    // (one-byte records, measured: about 900 ns at the bound against
    // 1200-1300 ns for extensions).
    let hello = tls::client_hello(Some(allowed), HelloKind::Small);
    let with_empties = |n: usize| {
        tls::with_extensions(&hello, |exts| {
            let at = exts.iter().position(|(t, _)| *t == 0).expect("server_name");
            let sni = exts.remove(at);
            exts.extend((0..n).map(|t| (0x7000 + t as u16, Vec::new())));
            exts.push(sni);
        })
    };
    let n = (0..400)
        .take_while(|&n| parser_steps(&with_empties(n)) <= maps::parse::tls::SEGMENT_STEPS as usize)
        .last()
        .expect("a ClientHello within the bound");
    let walk = with_empties(n);
    let mut deep = packet::udp6_with_dest_opts(8, &[0; 8]);
    for t in 0..4 {
        deep = packet::push_vlan(&deep, 0x88a8, 100 + t);
    }
    let worst = tcp_behind(&deep, &walk);
    expect(f, &worst, Counter::TlsPassNoMatch, "worst-case segment");
    expect(f, &tcp_behind(&deep, &with_empties(n + 1)), Counter::TlsSegmentBound, "one step over the bound");
    rows.push(Row::measure(
        format!(
            "worst segment: ClientHello of {} steps ({n} empty extensions, {} B), 4 VLAN tags, 8 IPv6 ext headers",
            maps::parse::tls::SEGMENT_STEPS,
            walk.len()
        ),
        "≤ 30x",
        || timed(&worst),
        || base(&worst),
    ));

    // A SYN flood: a new flow per SYN (one run each).
    let syn = |i: usize| {
        let ip = std::net::Ipv4Addr::new(10, 80, (i >> 8) as u8, i as u8);
        Flow::v4().sport(3000 + (i % 50_000) as u16).with_client_ip(ip.into()).syn()
    };
    expect(f, &syn(0), Counter::TcpSyn, "SYN");
    let mut next = 1;
    rows.push(Row::measure(
        "SYN flood: a SYN of a new flow, LRU full (1 run per call)",
        "≤ 10x",
        || singles_after(f, &mut next, |_| Vec::new(), syn),
        || singles(TLS_SINGLE_RUNS, || ns(baseline.bench(&syn(0), 1).expect("baseline run").1)),
    ));
    rows
}

/// Parser steps a segment holding all of `stream` takes to its verdict,
/// counted as the program counts them (the call that returns it included).
fn parser_steps(stream: &[u8]) -> usize {
    use maps::parse::tls::{Step, TLS_BUF, TlsState, step};
    let mut st = TlsState::new();
    let mut buf = Box::new([0u8; TLS_BUF]);
    buf[..stream.len()].copy_from_slice(stream);
    let (mut pos, mut steps) = (0, 0);
    loop {
        steps += 1;
        if step(&mut st, &buf, stream.len(), &mut pos) != Step::Continue {
            return steps;
        }
    }
}

/// A TCP segment to port 443 carrying `payload`, with the layer-2 and IP
/// headers of `frame` (an IPv6 packet with eight destination-options
/// headers ending in UDP with 8 bytes of payload, as
/// `packet::udp6_with_dest_opts(8, ..)` builds it, behind any VLAN tags):
/// the last extension header's next header and the payload length
/// rewritten.
fn tcp_behind(frame: &[u8], payload: &[u8]) -> Vec<u8> {
    // The UDP header and its 8 bytes of payload go; the IPv6 header and its
    // eight 8-byte extension headers stay.
    let mut f = frame[..frame.len() - 16].to_vec();
    let l3 = f.len() - 8 * 8 - 40;
    // The last destination-options header names TCP next.
    let last_ext = f.len() - 8;
    f[last_ext] = 6;
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&443u16.to_be_bytes());
    tcp[4..8].copy_from_slice(&0x1000_0001u32.to_be_bytes());
    tcp[8..12].copy_from_slice(&0x2000_0001u32.to_be_bytes());
    tcp[12] = 0x50;
    tcp[13] = 0x18;
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    f.extend_from_slice(&tcp);
    f.extend_from_slice(payload);
    let payload_len = (f.len() - l3 - 40) as u16;
    f[l3 + 4..l3 + 6].copy_from_slice(&payload_len.to_be_bytes());
    // A wrong TCP checksum would make the segment a decoy, not judged.
    packet::fix_tcp_checksum(&mut f, l3);
    f
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

/// Loads and reloads at scale: a 10M-rule list, reloads of a 1M-rule list
/// with 1% of its lines changed, and the daemon's memory across 100 reloads.
struct Scale {
    big: Loaded,
    /// Reload times of the 1M list with 1% changed, through the daemon's own path.
    reloads_1pct: Vec<Duration>,
    /// What the first of them said: changed lines read, rules changed.
    reload_reply: Option<(Option<usize>, usize)>,
    /// (reloads done, resident set size in bytes) along 100 reloads.
    rss: Vec<(usize, u64)>,
}

/// This process's resident set size.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// `list` with 1% of its lines changed, spread over it: of every hundred
/// lines, one in turn replaced by a new name, deleted, or given a new
/// name inserted before it (so the lines after move).
fn changed_1pct(list: &str, round: usize) -> String {
    let mut out = String::with_capacity(list.len() + list.len() / 50);
    for (i, line) in list.lines().enumerate() {
        if i % 100 != 0 {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        match (i / 100) % 3 {
            0 => {
                let _ = writeln!(out, "changed{round}x{i}.example.net");
            }
            1 => {}
            _ => {
                let _ = writeln!(out, "added{round}x{i}.example.net\n{line}");
            }
        }
    }
    out
}

fn scale(dir: &Path) -> Scale {
    eprintln!("bench: 10M rules");
    let big = load(10_000_000, dir);
    // Its 800 MiB of kernel maps are not needed past the figures.
    let big = Loaded { filter: Filter::load(LoadOptions::default()).expect("load program"), ..big };

    let (reloads_1pct, reload_reply, rss) = scale_reloads(dir, 100);
    Scale { big, reloads_1pct, reload_reply, rss }
}

/// `rounds` reloads of a 1M-rule list, every other one with 1% of its
/// lines changed: the first five times, and the resident memory along.
#[allow(clippy::type_complexity)]
fn scale_reloads(dir: &Path, rounds: usize) -> (Vec<Duration>, Option<(Option<usize>, usize)>, Vec<(usize, u64)>) {
    eprintln!("bench: reloads of 1M rules, 1% changed");
    let path = dir.join("reload-1m.txt");
    let original = rule_list(1_000_000);
    std::fs::write(&path, &original).expect("write list");
    let source = PolicySource { blocklists: vec![path.clone()], ..PolicySource::default() };
    let policy = source.load(rand::random()).expect("parse");
    let opts = LoadOptions { expected_rules: policy.rules.len(), ..LoadOptions::default() };
    let filter = Filter::load(opts).expect("load program");
    let log = filter_user::daemon::events::EventLog::open(None, 1 << 20).expect("event log");
    let info = filter_user::daemon::RunInfo::default();
    let mut daemon =
        filter_user::daemon::Daemon::start(filter, source, policy, dir.join("state.json"), false, info, log)
            .expect("start");
    let mut reloads_1pct = Vec::new();
    let mut reply = None;
    let mut rss = vec![(0, rss_bytes())];
    for round in 1..=rounds {
        let text = if round % 2 == 1 { changed_1pct(&original, round) } else { original.clone() };
        std::fs::write(&path, text).expect("write list");
        let started = Instant::now();
        let r = daemon.reload("bench").expect("reload");
        if round <= 5 {
            reloads_1pct.push(started.elapsed());
        }
        reply.get_or_insert((r.changed_lines, r.changed_rules));
        if [1, 10, 50, 100].contains(&round) {
            rss.push((round, rss_bytes()));
        }
    }
    (reloads_1pct, reply, rss)
}

/// The reload section of the report.
fn report_reloads(w: &mut String, scale: &Scale) {
    let _ = writeln!(w, "\n## Reloads\n");
    let times: Vec<String> = scale.reloads_1pct.iter().map(|d| format!("{:.0} ms", d.as_secs_f64() * 1e3)).collect();
    let mid = median(scale.reloads_1pct.iter().map(Duration::as_secs_f64).collect());
    let (lines, rules) = scale.reload_reply.unwrap_or_default();
    let lines = lines.map_or_else(|| "the lists read whole".to_owned(), |n| format!("{n} changed lines read"));
    let _ = writeln!(
        w,
        "A 1M-rule list with 1% of its lines changed (of every hundred lines one replaced, deleted or given a new\n\
         line before it, in turn, so the lines after move), reloaded through the daemon's own path (read the\n\
         list, pair its lines with the last copy's, parse the changed ones, rebuild the rules of the names they\n\
         touch, stage those in the other rule generation, flip; {lines}, {rules} rules changed):\n\
         {} (median {:.0} ms; target ≤ 500 ms).\n",
        times.join(", "),
        mid * 1e3
    );
    let _ = writeln!(
        w,
        "The daemon runs inside the benchmark process; its resident memory includes the benchmark's own\n\
         (the lists' text, the 10M-rule run before).\n"
    );
    let _ = writeln!(w, "| reloads done | resident memory (benchmark process) | target |\n|---:|---:|---|");
    let first = scale.rss.get(1).map_or(0, |r| r.1);
    for (n, bytes) in &scale.rss {
        let target = if *n == 100 {
            format!("≤ 1.1 × after 1 ({:.0} MiB)", first as f64 * 1.1 / f64::from(1 << 20))
        } else {
            String::new()
        };
        let _ = writeln!(w, "| {n} | {:.0} MiB | {target} |", *bytes as f64 / f64::from(1 << 20));
    }
}

fn report(rows: &[Row], loads: &[Loaded], scale: &Scale, verified: &Verified, lat: &Latency, repeat: u32) -> String {
    let mut r = String::new();
    let w = &mut r;
    let _ = writeln!(w, "# namewall benchmarks\n");
    let _ = writeln!(w, "Produced by `cargo xtask bench` (repeat {repeat}, best of {ROUNDS} rounds) on {}.", machine());
    let _ =
        writeln!(w, "Per-packet times come from BPF_PROG_TEST_RUN on the loaded program. Every time is paired with a");
    let _ =
        writeln!(w, "trivial XDP program (bump one per-CPU counter, XDP_PASS) measured in the same run on the same");
    let _ =
        writeln!(w, "packet: the ratio is the figure to compare; absolute nanoseconds drift on this shared machine.\n");
    let _ = writeln!(w, "| case | namewall ns | baseline ns | ratio | target |\n|---|---:|---:|---:|---|");
    for row in rows {
        let _ = writeln!(
            w,
            "| {} | {:.1} | {:.1} | {:.2}x | {} |",
            row.case, row.namewall, row.baseline, row.ratio, row.target
        );
    }
    let _ = writeln!(w, "\nEach figure is the best of the rounds (namewall and the baseline alternate, after one");
    let _ = writeln!(w, "warm-up round each): noise only adds time. Rows marked \"1 run per call\" time single runs");
    let _ =
        writeln!(w, "(the kernel's timer brackets one run, so both sides include its overhead): the program rewrites");
    let _ = writeln!(w, "the packet (an answer, a reset) or changes flow state, so a repeated test run would measure");
    let _ = writeln!(w, "something else; each such TLS run uses a flow of its own.\n");
    let _ = writeln!(w, "TLS rows: real ClientHellos written by rustls (the post-quantum one with X25519MLKEM768 and");
    let _ = writeln!(w, "ECH GREASE, its extensions reordered to put the name first or last), in TCP segments of at");
    let _ =
        writeln!(w, "most 1448 bytes (MTU 1500 with timestamps), against the 1M-rule set. A ClientHello whose first");
    let _ =
        writeln!(w, "segment holds the name is read in place; one whose name is in its second segment goes through");
    let _ =
        writeln!(w, "the state machine and the flow table for both. An established flow's segment costs a hash and");
    let _ =
        writeln!(w, "a hint word; with 16384 flows tracked, the few established flows whose hint counter they share");
    let _ = writeln!(w, "also pay a hash-map lookup (the row averages 64 such flows).\n");
    let _ = writeln!(w, "## Verifier budget\n");
    let _ =
        writeln!(w, "Instructions the verifier processes to accept each program of the object: the entry program and");
    let _ =
        writeln!(w, "the stages it tail-calls (`maps::layout::stage`), each verified on its own against the limit of");
    let _ = writeln!(w, "{VERIFIER_LIMIT}. The bench fails when one passes 60%.\n");
    let _ = writeln!(w, "| program | verified instructions | share of the limit | target |\n|---|---:|---:|---|");
    for (name, n) in verified {
        let _ = writeln!(w, "| {name} | {n} | {:.1}% | ≤ 40% |", f64::from(*n) * 100.0 / f64::from(VERIFIER_LIMIT));
    }
    let _ = writeln!(w);
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
    let b = &scale.big;
    let _ = writeln!(
        w,
        "| {} | {:.0} ms | {:.0} ms | {:.0} ms | {:.1} MiB | {:.1} B | ≤ 20 s, ≤ 100 B/rule |",
        b.rules,
        b.parse.as_secs_f64() * 1e3,
        b.install.as_secs_f64() * 1e3,
        (b.parse + b.install).as_secs_f64() * 1e3,
        b.memory as f64 / f64::from(1 << 20),
        b.memory as f64 / b.rules as f64
    );
    let _ = writeln!(w, "\nKernel memory is the `memlock` the kernel accounts in fdinfo for the rule-set hash map");
    let _ =
        writeln!(w, "(preallocated, sized to the list plus 1/64 and 1024 entries of headroom for live additions) and");
    let _ = writeln!(w, "for the negative-lookup bit filter (16 bits per rule, rounded up to a power of two).");
    report_reloads(w, scale);
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
    if args.tls_only {
        let l = load(1000, dir.path());
        for row in tls_rows(&l.filter, &baseline, args.repeat).into_iter().chain(evasion_rows(
            &l.filter,
            &baseline,
            args.repeat,
        )) {
            println!("{:>8.1} {:>6.1} {:>6.2}x  {}", row.namewall, row.baseline, row.ratio, row.case);
        }
        return;
    }
    if args.loads_only {
        let n = 1_000_000;
        let l = load(n, dir.path());
        println!("{n} rules: parse {:?} install {:?} {:.1} B/rule", l.parse, l.install, l.memory as f64 / n as f64);
        let (times, reply, _) = scale_reloads(dir.path(), 6);
        println!("reloads of 1M, 1% changed: {times:?} ({reply:?})");
        return;
    }
    let (rows, loads, verified) = packet_rows(&baseline, dir.path(), args.repeat);
    if args.packets_only {
        for row in &rows {
            println!("{:>8.1} {:>6.1} {:>6.2}x  {}", row.namewall, row.baseline, row.ratio, row.case);
        }
        return;
    }
    let scale = scale(dir.path());
    eprintln!("bench: latency through the namespace lab");
    let lat = latency(dir.path());
    let text = report(&rows, &loads, &scale, &verified, &lat, args.repeat);
    print!("{text}");
    // The fuzz run's record (`cargo xtask fuzz --record`) stays.
    let old = std::fs::read_to_string(&args.out).unwrap_or_default();
    let text = match report::section(&old, report::FUZZ_HEADING) {
        Some(fuzzing) => report::with_section(&text, fuzzing),
        None => text,
    };
    std::fs::write(&args.out, text).expect("write the report");
    eprintln!("bench: wrote {}", args.out.display());
}
