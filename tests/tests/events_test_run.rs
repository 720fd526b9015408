//! Block events through `BPF_PROG_TEST_RUN` on the loaded program: what each
//! block sends through the ring buffer (addresses, ports, the name as
//! sent, the deciding rule, the action), that passes send nothing, and the
//! per-second budget and a full ring buffer are counted, never overrun.

use std::time::{Duration, Instant};

use filter_user::{
    control::EventView,
    daemon::events,
    dataplane::{LoadOptions, TlsPolicy},
};
use hickory_proto::rr::RecordType;
use maps::{Action, Counter, layout::event::Event};
use namewall_tests::{
    dnswire,
    harness::Harness,
    packet::{self, Spec, V6Ext, Vlan},
    tls::{self, Flow, HelloKind},
};

const BLOCK: &str = "ads.example\n||drop.example^$action=drop\n*.sub.example\n";
const ALLOW: &str = "ok.ads.example\n";

struct Rig {
    h: Harness,
    ring: aya::maps::RingBuf<aya::maps::MapData>,
    clock: events::Clock,
}

impl Rig {
    fn new(opts: LoadOptions, tls: TlsPolicy, budget: u32) -> Self {
        let mut h = Harness::with_options(BLOCK, ALLOW, opts, Action::Nxdomain, false, tls);
        h.filter.configure_events(budget).expect("configure events");
        let ring = h.filter.take_events().expect("the ring buffer");
        Self { h, ring, clock: events::Clock::now() }
    }

    /// Events waiting in the ring buffer, as the daemon shows them.
    fn drain(&mut self) -> Vec<EventView> {
        let mut out = Vec::new();
        while let Some(item) = self.ring.next() {
            assert_eq!(item.len(), size_of::<Event>(), "one whole event per record");
            // SAFETY: a whole Event, read unaligned.
            let e = unsafe { item.as_ptr().cast::<Event>().read_unaligned() };
            let rules = &self.h.rules;
            let rule = |k: u64| rules.get(k).map(|r| r.domain.to_string());
            out.push(events::view(&e, self.clock, &rule, &|i| format!("if{i}")));
        }
        out
    }
}

/// What an event must say: (protocol, name, rule, action, client, server).
type Want = (&'static str, &'static str, &'static str, &'static str, String, String);

fn v4(port: u16) -> String {
    format!("{}:{port}", std::net::Ipv4Addr::from(packet::CLIENT_V4))
}

fn want(
    proto: &'static str,
    name: &'static str,
    rule: &'static str,
    action: &'static str,
    v6: bool,
    dport: u16,
) -> Want {
    let (c, s) = if v6 {
        (
            format!("[{}]:40000", std::net::Ipv6Addr::from(packet::CLIENT_V6)),
            format!("[{}]:{dport}", std::net::Ipv6Addr::from(packet::SERVER_V6)),
        )
    } else {
        (v4(40000), format!("{}:{dport}", std::net::Ipv4Addr::from(packet::SERVER_V4)))
    };
    (proto, name, rule, action, c, s)
}

#[test]
fn blocks_send_one_event_passes_none() {
    let mut rig = Rig::new(LoadOptions::default(), TlsPolicy::default(), 10_000);
    let query = |name: &str| dnswire::query(name, RecordType::A);
    let dns_tcp = Spec::udp4().tcp().build(&packet::tcp_dns(&query("x.drop.example")));
    let hello = tls::client_hello(Some("Www.Ads.Example"), HelloKind::Small);
    let ok_hello = tls::client_hello(Some("ok.ads.example"), HelloKind::Small);
    let flow = Flow::v4().sport(40000);
    let pq = tls::client_hello(Some("deep.sub.example"), HelloKind::PostQuantum);
    let pq_flow = Flow::new(Spec::udp6().tcp().dport(443)).sport(40000);
    let cut = tls::find(&pq, b"deep.sub.example").expect("the name") + 4;
    let pq_segs = pq_flow.segments(&pq, &[cut]);
    let rows: Vec<(&str, Vec<u8>, Counter, Option<Want>)> = vec![
        (
            "DNS A over IPv4",
            Spec::udp4().build(&query("WWW.Ads.Example")),
            Counter::Nxdomain,
            Some(want("dns", "WWW.Ads.Example", "ads.example", "nxdomain", false, 53)),
        ),
        (
            "DNS over IPv6 with extension headers and QinQ",
            Spec::udp6().v6_ext(V6Ext::All).vlan(Vlan::Double(5, 6)).build(&query("ads.example")),
            Counter::Nxdomain,
            Some(want("dns", "ads.example", "ads.example", "nxdomain", true, 53)),
        ),
        (
            "DNS, the rule's own action",
            Spec::udp4().v4_options(&[1, 1, 1, 0]).build(&query("a.drop.example")),
            Counter::Drop,
            Some(want("dns", "a.drop.example", "drop.example", "drop", false, 53)),
        ),
        (
            "DNS over TCP",
            dns_tcp,
            Counter::DropTcp,
            Some(want("dns-tcp", "x.drop.example", "drop.example", "drop", false, 53)),
        ),
        ("DNS allowed", Spec::udp4().build(&query("ok.ads.example")), Counter::PassAllowed, None),
        ("DNS unlisted", Spec::udp4().build(&query("example.org")), Counter::PassNoMatch, None),
        ("DNS *.sub spares sub itself", Spec::udp4().build(&query("sub.example")), Counter::PassNoMatch, None),
        ("TLS SYN", flow.syn(), Counter::TcpSyn, None),
        (
            "TLS ClientHello in one segment",
            flow.segment(0, &hello),
            Counter::TlsReset,
            Some(want("tls", "Www.Ads.Example", "ads.example", "reset", false, 443)),
        ),
        (
            "TLS blocked flow's next segment: no second event",
            flow.segment(hello.len(), b"more"),
            Counter::TlsBlockedFlow,
            None,
        ),
        ("TLS allowed", Flow::v4().sport(40001).segment(0, &ok_hello), Counter::TlsPassAllowed, None),
        ("TLS, IPv6, the name across two segments: first", pq_segs[0].clone(), Counter::TlsPending, None),
        (
            "TLS, IPv6, the name across two segments: second",
            pq_segs[1].clone(),
            Counter::TlsReset,
            Some(want("tls", "deep.sub.example", "sub.example", "reset", true, 443)),
        ),
    ];
    let mut failures = Vec::new();
    for (desc, frame, outcome, expected) in &rows {
        let seen = rig.h.run(frame);
        let got = rig.drain();
        if seen.outcome != *outcome {
            failures.push(format!("{desc}: outcome {:?}, expected {outcome:?}", seen.outcome));
            continue;
        }
        let got: Vec<Want> = got
            .into_iter()
            .map(|e| {
                let p: &'static str = e.protocol.leak();
                let n: &'static str = e.name.leak();
                let r: &'static str = e.rule.leak();
                let a: &'static str = e.action.leak();
                (p, n, r, a, e.client, e.server)
            })
            .collect();
        let expected: Vec<Want> = expected.iter().cloned().collect();
        if got != expected {
            failures.push(format!("{desc}: events {got:?}, expected {expected:?}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} rows failed:\n{}", failures.len(), rows.len(), failures.join("\n"));
}

#[test]
fn policy_blocks_name_the_policy() {
    let tls = TlsPolicy { no_sni_block: true, ech_block: true, ..TlsPolicy::default() };
    let mut rig = Rig::new(LoadOptions::default(), tls, 10_000);
    let none = tls::client_hello(None, HelloKind::Small);
    assert_eq!(rig.h.run(&Flow::v4().segment(0, &none)).outcome, Counter::TlsReset);
    let ev = rig.drain();
    assert_eq!((ev.len(), ev[0].rule.as_str(), ev[0].name.as_str()), (1, "policy:no-sni", ""), "{ev:?}");
    let ech = tls::client_hello(Some("fine.example"), HelloKind::Ech);
    assert_eq!(rig.h.run(&Flow::v4().sport(40002).segment(0, &ech)).outcome, Counter::TlsReset);
    let ev = rig.drain();
    assert_eq!((ev.len(), ev[0].rule.as_str(), ev[0].name.as_str()), (1, "policy:ech", "fine.example"), "{ev:?}");
}

#[test]
fn the_budget_and_a_full_ring_are_counted() {
    let q = Spec::udp4().build(&dnswire::query("ads.example", RecordType::A));
    // Three a second per CPU (test runs stay on one CPU).
    let mut rig = Rig::new(LoadOptions::default(), TlsPolicy::default(), 3);
    let start = Instant::now();
    let mut over = 0;
    for _ in 0..10 {
        over += rig.h.run(&q).delta[Counter::EventOverBudget as usize];
    }
    let sent = rig.drain().len() as u64;
    assert_eq!(sent + over, 10, "every block is sent or counted over budget");
    if start.elapsed() < Duration::from_millis(900) {
        assert_eq!((sent, over), (3, 7), "within one second");
    } else {
        assert!((3..=6).contains(&sent), "at most two seconds' budget: {sent}");
    }

    // None at all with a budget of 0.
    let mut rig = Rig::new(LoadOptions::default(), TlsPolicy::default(), 0);
    let o = rig.h.run(&q);
    assert_eq!((o.outcome, o.delta[Counter::EventOverBudget as usize]), (Counter::Nxdomain, 0));
    assert!(rig.drain().is_empty());

    // A ring buffer of one page holds a dozen events; the rest are lost, counted.
    let opts = LoadOptions { event_buffer: 4096, ..LoadOptions::default() };
    let mut rig = Rig::new(opts, TlsPolicy::default(), 10_000);
    let mut lost = 0;
    for _ in 0..30 {
        let o = rig.h.run(&q);
        assert_eq!(o.outcome, Counter::Nxdomain, "a full ring never changes the verdict");
        lost += o.delta[Counter::EventLost as usize];
    }
    let kept = rig.drain().len() as u64;
    assert!(kept >= 10 && kept + lost == 30, "kept {kept}, lost {lost}");
}
