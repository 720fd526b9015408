//! `BPF_PROG_TEST_RUN` tables for the loaded XDP program, in katran's style:
//! every row is a frame and what the program must do with it (XDP action,
//! outcome counter, deciding rule, and for answers a check of the frame it
//! wrote). One program is loaded per rule set and reused for its rows; a
//! table collects every failing row, each named by its description.
//!
//! Every row also checks the counter invariant: exactly one outcome counter
//! moves, by one, and it is the outcome the program traced; extra counters
//! move only where the row says so.

use std::{
    collections::{BTreeMap, HashSet},
    fmt::Write as _,
    net::IpAddr,
};

use filter_user::{dataplane::action_name, policy::names::Domain};
use hickory_proto::{
    op::{MessageType, OpCode, ResponseCode},
    rr::{DNSClass, RData, RecordType},
};
use maps::{
    Action, Counter,
    counters::CounterKind,
    layout::rule::{self, Verdict},
    parse::name::{self, LABEL_SLOTS, NameError, QUESTION_BUF},
};
use namewall_tests::{
    dnswire,
    harness::{Harness, Observed},
    packet::{
        self, CLIENT_MAC, CLIENT_V4, CLIENT_V6, Ip, SERVER_MAC, SERVER_V4, SERVER_V6, Spec, Transport, V6Ext, Vlan,
    },
    tls,
};
use rand::{Rng as _, SeedableRng as _, rngs::StdRng};

const XDP_ABORTED: u32 = 0;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
/// TTL the harness configures for sinkhole answers.
const ANSWER_TTL: u32 = 60;
/// TTL / hop limit of the IP header of answers.
const ANSWER_HOP_LIMIT: u8 = 64;

/// The record a sinkhole answer carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rr {
    /// None: NXDOMAIN, REFUSED, or NODATA for types other than A/AAAA.
    None,
    /// `A 0.0.0.0`.
    A,
    /// `AAAA ::`.
    Aaaa,
}

/// How the query's frame was built: what its answer must mirror.
#[derive(Clone, Debug)]
struct Client {
    v6: bool,
    vlans: Vec<u16>,
    sport: u16,
    dport: u16,
}

impl Client {
    fn of(spec: &Spec) -> Self {
        Self { v6: matches!(spec.ip, Ip::V6 { .. }), vlans: spec.vlan_ids(), sport: spec.sport, dport: spec.dport }
    }
}

/// What an `XDP_TX` row's answer must be.
#[derive(Clone, Debug)]
struct Answer {
    /// The DNS message the answer answers, as sent.
    query: Vec<u8>,
    client: Client,
    rcode: ResponseCode,
    rr: Rr,
}

/// One row: a frame and everything the program must do with it.
struct Row {
    desc: String,
    packet: Vec<u8>,
    action: u32,
    outcome: Counter,
    /// The deciding rule's name, `None` when no rule decided.
    rule: Option<String>,
    /// Extra counters that must move by one (all others must stay).
    extras: Vec<Counter>,
    answer: Option<Answer>,
    /// The key the program must compute for the whole QNAME, when the row says.
    name_key: Option<u64>,
    /// For a blocked query over TCP: the reset's sequence and acknowledgment numbers.
    reset: Option<(u32, u32)>,
}

impl Row {
    /// Passes unchanged without a rule deciding.
    fn pass(desc: impl Into<String>, packet: Vec<u8>, outcome: Counter) -> Self {
        Self {
            desc: desc.into(),
            packet,
            action: XDP_PASS,
            outcome,
            rule: None,
            extras: Vec::new(),
            answer: None,
            name_key: None,
            reset: None,
        }
    }

    /// Passes unchanged because the allow rule `rule` decided.
    fn allowed(desc: impl Into<String>, packet: Vec<u8>, rule: &str) -> Self {
        Self { rule: Some(rule.to_owned()), ..Self::pass(desc, packet, Counter::PassAllowed) }
    }

    /// Dropped, with `outcome`, by `rule` if a rule decided.
    fn dropped(desc: impl Into<String>, packet: Vec<u8>, outcome: Counter, rule: Option<&str>) -> Self {
        Self { action: XDP_DROP, rule: rule.map(str::to_owned), ..Self::pass(desc, packet, outcome) }
    }

    /// Answered (`XDP_TX`) by `rule`; the answer mirrors the query `msg` sent as `spec` says.
    fn answered(
        desc: impl Into<String>,
        spec: &Spec,
        msg: &[u8],
        outcome: Counter,
        rule: &str,
        rcode: ResponseCode,
        rr: Rr,
    ) -> Self {
        let answer = Answer { query: msg.to_vec(), client: Client::of(spec), rcode, rr };
        Self {
            action: XDP_TX,
            rule: Some(rule.to_owned()),
            answer: Some(answer),
            ..Self::pass(desc, frame(spec, msg), outcome)
        }
    }

    /// Blocked by `rule` under the NXDOMAIN default: answered over UDP, reset over TCP.
    fn blocked(desc: impl Into<String>, spec: &Spec, msg: &[u8], rule: &str) -> Self {
        match spec.transport {
            Transport::Udp => {
                Self::answered(desc, spec, msg, Counter::Nxdomain, rule, ResponseCode::NXDomain, Rr::None)
            }
            Transport::Tcp => Self::reset(desc, frame(spec, msg), Some(rule)),
        }
    }

    /// A blocked query over TCP (`segment` as `Spec` builds it: sequence
    /// number 1000, acknowledgment 2000): the client reset at the server's
    /// next sequence number, acknowledging the query.
    fn reset(desc: impl Into<String>, segment: Vec<u8>, rule: Option<&str>) -> Self {
        let payload = tls::parse_tcp(&segment).expect("a TCP segment").payload_len as u32;
        Self {
            action: XDP_TX,
            rule: rule.map(str::to_owned),
            reset: Some((2000, 1000 + payload)),
            ..Self::pass(desc, segment, Counter::ResetTcp)
        }
    }

    /// Not blocked and no allow rule: passes unchanged.
    fn unmatched(desc: impl Into<String>, spec: &Spec, msg: &[u8]) -> Self {
        Self::pass(desc, frame(spec, msg), Counter::PassNoMatch)
    }

    #[must_use]
    fn extra(mut self, c: Counter) -> Self {
        self.extras.push(c);
        self
    }

    #[must_use]
    fn keyed(mut self, name_key: u64) -> Self {
        self.name_key = Some(name_key);
        self
    }
}

/// The frame carrying DNS message `msg` as `spec` says (with the TCP length prefix over TCP).
fn frame(spec: &Spec, msg: &[u8]) -> Vec<u8> {
    match spec.transport {
        Transport::Udp => spec.build(msg),
        Transport::Tcp => spec.build(&packet::tcp_dns(msg)),
    }
}

/// Runs every row and fails once, listing each failing row by its description.
fn run_table(h: &Harness, table: &str, rows: &[Row]) {
    let mut seen = HashSet::new();
    for row in rows {
        assert!(seen.insert(row.desc.as_str()), "{table}: two rows are described {:?}", row.desc);
    }
    let failures: Vec<String> = rows
        .iter()
        .filter_map(|row| check(h, row, &h.run(&row.packet)).err().map(|e| format!("{}: {e}", row.desc)))
        .collect();
    assert!(
        failures.is_empty(),
        "{table}: {} of {} rows failed:\n  {}",
        failures.len(),
        rows.len(),
        failures.join("\n  ")
    );
}

fn check(h: &Harness, row: &Row, o: &Observed) -> Result<(), String> {
    let mut errs = Vec::new();
    if o.action == XDP_ABORTED {
        errs.push("XDP_ABORTED, which is reserved for bugs".to_owned());
    }
    if let Err(e) = o.one_outcome() {
        errs.push(e);
    }
    if o.action != row.action {
        errs.push(format!("action {}, want {}", o.action_name(), action_name(row.action)));
    }
    if o.trace.xdp_action != o.action {
        errs.push(format!("traced action {} but returned {}", o.trace.xdp_action, o.action));
    }
    if o.outcome != row.outcome {
        errs.push(format!("outcome {}, want {}", o.outcome.name(), row.outcome.name()));
    }
    for &c in Counter::ALL.iter().filter(|c| c.kind() == CounterKind::Extra) {
        let want = u64::from(row.extras.contains(&c));
        if o.delta[c as usize] != want {
            errs.push(format!("extra counter {} moved by {}, want {want}", c.name(), o.delta[c as usize]));
        }
    }
    let rule = h.rule_name(o);
    if rule != row.rule {
        errs.push(format!("deciding rule {rule:?}, want {:?}", row.rule));
    } else if let Some(r) = &row.rule {
        let labels = Domain::parse(r).map_err(|e| format!("rule {r:?}: {e}"))?.labels();
        if usize::from(o.trace.rule_labels) != labels {
            errs.push(format!("traced rule labels {}, want {labels}", o.trace.rule_labels));
        }
    }
    if let Some(k) = row.name_key
        && o.trace.name_key != k
    {
        errs.push(format!("kernel's name key {:#018x}, user space's {k:#018x}", o.trace.name_key));
    }
    // A later fragment of a dropped datagram is a verdict without a name.
    if o.outcome.kind() == CounterKind::Verdict
        && o.outcome != Counter::FragmentDropped
        && let Err(e) = traced_name(row, o)
    {
        errs.push(e);
    }
    match row.action {
        XDP_PASS if o.output != row.packet => errs.push("passed, but the frame was changed".to_owned()),
        XDP_TX => match (&row.answer, row.reset) {
            (Some(a), _) => {
                if let Err(e) = check_answer(a, &o.output) {
                    errs.push(format!("bad answer: {e}"));
                }
            }
            (None, Some((seq, ack))) => {
                if let Err(e) = check_reset(&row.packet, &o.output, seq, ack) {
                    errs.push(format!("bad reset: {e}"));
                }
            }
            (None, None) => errs.push("row wants XDP_TX but says nothing about the answer".to_owned()),
        },
        _ => {}
    }
    if errs.is_empty() { Ok(()) } else { Err(errs.join("; ")) }
}

/// A judged packet's trace points at its QNAME in the frame as received.
fn traced_name(row: &Row, o: &Observed) -> Result<(), String> {
    let t = &o.trace;
    let (off, len) = (usize::from(t.name_offset), usize::from(t.name_len));
    let wire =
        row.packet.get(off..off + len).ok_or_else(|| format!("traced name at {off}+{len} is outside the frame"))?;
    let parsed =
        name::wire_name_key(0, wire).map_err(|e| format!("traced name at {off}+{len} does not parse: {e:?}"))?.1;
    if parsed.len != len || parsed.labels != usize::from(t.name_labels) {
        return Err(format!(
            "traced name at {off}+{len} with {} labels, but the bytes there are {parsed:?}",
            t.name_labels
        ));
    }
    if t.l4_proto == 17 || t.l4_proto == 6 { Ok(()) } else { Err(format!("traced l4 protocol {}", t.l4_proto)) }
}

/// Checks an answer frame against the query it answers: everything every
/// answer must satisfy (RFC 1035 §4.1.1 header, the question echoed byte for
/// byte, addresses/ports/MACs swapped, VLAN tags kept, no IP options or
/// extension headers, no OPT record) and the row's RCODE and record.
/// A reset toward the client of TCP segment `query`, as a receiving stack
/// checks it (checksums, lengths): addresses, ports and VLAN tags swapped
/// back, RST|ACK with the numbers given, no payload or IP extras.
fn check_reset(query: &[u8], frame: &[u8], seq: u32, ack: u32) -> Result<(), String> {
    let q = tls::parse_tcp(query)?;
    let r = tls::parse_rst(frame)?;
    let mut errs = Vec::new();
    if (r.src, r.dst, r.sport, r.dport) != (q.dst, q.src, q.dport, q.sport) {
        errs.push(format!("{r} does not go back to {q}"));
    }
    if (r.src_mac, r.dst_mac, &r.vlan_ids) != (q.dst_mac, q.src_mac, &q.vlan_ids) {
        errs.push("MACs or VLAN tags not sent back".to_owned());
    }
    if r.flags != tls::flags::RST | tls::flags::ACK || (r.seq, r.ack) != (seq, ack) {
        errs.push(format!("{r}: want RST|ACK seq {seq} ack {ack}"));
    }
    if (r.payload_len, r.ip_ext_len, r.trailing) != (0, 0, 0) {
        errs.push(format!("{r}: payload, IP extras or trailing bytes"));
    }
    if errs.is_empty() { Ok(()) } else { Err(errs.join("; ")) }
}

fn check_answer(want: &Answer, frame: &[u8]) -> Result<(), String> {
    let ans = dnswire::parse_answer(frame)?;
    let client = &want.client;
    let mut errs = Vec::new();
    let mut expect = |ok: bool, what: String| {
        if !ok {
            errs.push(what);
        }
    };
    expect(
        ans.dst_mac == CLIENT_MAC && ans.src_mac == SERVER_MAC,
        format!("MACs {:x?} <- {:x?} not swapped", ans.dst_mac, ans.src_mac),
    );
    expect(ans.vlan_ids == client.vlans, format!("VLAN ids {:?}, want {:?}", ans.vlan_ids, client.vlans));
    let (client_ip, server_ip): (IpAddr, IpAddr) =
        if client.v6 { (CLIENT_V6.into(), SERVER_V6.into()) } else { (CLIENT_V4.into(), SERVER_V4.into()) };
    expect(
        ans.src_ip == server_ip && ans.dst_ip == client_ip,
        format!("addresses {} -> {} not swapped", ans.src_ip, ans.dst_ip),
    );
    expect(
        ans.sport == client.dport && ans.dport == client.sport,
        format!("ports {} -> {} not swapped", ans.sport, ans.dport),
    );
    expect(ans.ip_extras == 0, format!("{} bytes of IP options or extension headers kept", ans.ip_extras));
    expect(ans.ttl == ANSWER_HOP_LIMIT, format!("TTL/hop limit {}", ans.ttl));

    let query = &want.query;
    let qlen = dnswire::question_len(query).ok_or("the row's query has no whole question")?;
    let qflags = u16::from_be_bytes([query[2], query[3]]);
    let rr_len = match want.rr {
        Rr::None => 0,
        Rr::A => 16,
        Rr::Aaaa => 28,
    };
    let payload = &ans.payload;
    expect(
        payload.len() == 12 + qlen + rr_len,
        format!("DNS message of {} bytes, want {}", payload.len(), 12 + qlen + rr_len),
    );
    expect(payload.get(..2) == query.get(..2), "ID not echoed".to_owned());
    // QR, RD as asked, RA, CD as asked, the RCODE; opcode 0, AA=TC=Z=AD=0.
    let flags = 0x8000 | (qflags & 0x0100) | 0x0080 | (qflags & 0x0010) | u16::from(want.rcode);
    expect(
        payload.get(2..4) == Some(&flags.to_be_bytes()[..]),
        format!("flags {:02x?}, want {flags:#06x}", payload.get(2..4)),
    );
    let ancount = u16::from(want.rr != Rr::None);
    let counts = [0, 1, 0, ancount as u8, 0, 0, 0, 0];
    expect(
        payload.get(4..12) == Some(&counts[..]),
        format!("QD/AN/NS/ARCOUNT {:?}, want {counts:?}", payload.get(4..12)),
    );
    expect(payload.get(12..12 + qlen) == query.get(12..12 + qlen), "question not echoed byte for byte".to_owned());

    let msg = &ans.message;
    expect(
        msg.message_type() == MessageType::Response && msg.op_code() == OpCode::Query,
        "not a QUERY response".to_owned(),
    );
    expect(msg.recursion_available() && msg.recursion_desired() == (qflags & 0x0100 != 0), "RA/RD wrong".to_owned());
    expect(msg.response_code() == want.rcode, format!("RCODE {:?}, want {:?}", msg.response_code(), want.rcode));
    expect(msg.queries().len() == 1, format!("{} questions", msg.queries().len()));
    expect(msg.name_servers().is_empty() && msg.additionals().is_empty(), "authority or additional records".to_owned());
    expect(msg.extensions().is_none(), "an OPT record".to_owned());
    match want.rr {
        Rr::None => expect(msg.answers().is_empty(), format!("answers {:?}, want none", msg.answers())),
        Rr::A | Rr::Aaaa => {
            let ok = match msg.answers() {
                [record] => {
                    let data_ok = match (want.rr, record.data()) {
                        (Rr::A, RData::A(v4)) => v4.0.is_unspecified(),
                        (Rr::Aaaa, RData::AAAA(v6)) => v6.0.is_unspecified(),
                        _ => false,
                    };
                    data_ok
                        && record.ttl() == ANSWER_TTL
                        && record.dns_class() == DNSClass::IN
                        && msg.queries().first().is_some_and(|question| record.name() == question.name())
                        // The owner is a pointer to the question's name (RFC 1035 §4.1.4).
                        && payload.get(12 + qlen..14 + qlen) == Some(&[0xc0, 12][..])
                }
                _ => false,
            };
            expect(
                ok,
                format!("answers {:?}, want one {:?} record 0.0.0.0/:: with TTL {ANSWER_TTL}", msg.answers(), want.rr),
            );
        }
    }
    if errs.is_empty() { Ok(()) } else { Err(errs.join("; ")) }
}

fn vlans() -> [(&'static str, Vlan); 3] {
    [("untagged", Vlan::None), ("802.1Q", Vlan::Single(100)), ("802.1ad+802.1Q", Vlan::Double(200, 300))]
}

fn ip_layers() -> Vec<(&'static str, Ip)> {
    // 39 NOPs and an end-of-options: the longest IPv4 header (60 bytes).
    let mut max_options = vec![1u8; 39];
    max_options.push(0);
    vec![
        ("IPv4", Ip::V4 { options: Vec::new() }),
        ("IPv4+router-alert", Ip::V4 { options: vec![0x94, 4, 0, 0] }),
        ("IPv4+40B-options", Ip::V4 { options: max_options }),
        ("IPv6", Ip::V6 { ext: V6Ext::None }),
        ("IPv6+hop-by-hop", Ip::V6 { ext: V6Ext::HopByHop }),
        ("IPv6+routing", Ip::V6 { ext: V6Ext::Routing }),
        ("IPv6+dest-opts", Ip::V6 { ext: V6Ext::DestOpts }),
        ("IPv6+hbh+routing+dest-opts", Ip::V6 { ext: V6Ext::All }),
    ]
}

fn spec(vlan: Vlan, ip: Ip, transport: Transport) -> Spec {
    Spec { vlan, ip, transport, sport: 40000, dport: 53 }
}

fn tname(t: Transport) -> &'static str {
    match t {
        Transport::Udp => "UDP",
        Transport::Tcp => "TCP",
    }
}

/// Every VLAN, IP and transport layout: a blocked name is answered over
/// UDP and dropped over TCP, an unknown name passes untouched.
#[test]
fn layers() {
    let blocked = dnswire::query("Ads.Example.COM", RecordType::A);
    let unknown = dnswire::query("www.Example.org", RecordType::A);
    // Answers must echo the question byte for byte; that proves the client's
    // case is kept only if the query carries mixed case.
    assert!(blocked.windows(8).any(|w| w == b"\x07Example"), "the query fixture lost the name's case");
    let h = Harness::new("example.com\n", "");
    let mut rows = Vec::new();
    for (vname, vlan) in vlans() {
        for (iname, ip) in ip_layers() {
            for t in [Transport::Udp, Transport::Tcp] {
                let s = spec(vlan, ip.clone(), t);
                let at = format!("{vname}/{iname}/{}", tname(t));
                rows.push(Row::blocked(format!("{at}: blocked"), &s, &blocked, "example.com"));
                rows.push(Row::unmatched(format!("{at}: unknown"), &s, &unknown));
            }
        }
    }
    assert_eq!(rows.len(), 96);
    run_table(&h, "layers", &rows);
}

/// UDP/IPv4 query rows for names: blocked by a rule, allowed by a rule, or unmatched.
fn name_rows(rows: &mut Vec<Row>, cases: &[(&str, Option<&str>)], allows: &[&str]) {
    let s = Spec::udp4();
    for &(qname, rule) in cases {
        let msg = dnswire::query(qname, RecordType::A);
        rows.push(match rule {
            Some(r) if allows.contains(&r) => Row::allowed(qname, frame(&s, &msg), r),
            Some(r) => Row::blocked(qname, &s, &msg, r),
            None => Row::unmatched(qname, &s, &msg),
        });
    }
}

/// Suffix matching, case, list syntaxes, allow versus block.
#[test]
fn rules() {
    let block = "\
# plain names, one per line
example.com
*.wild.example
Rooted.Example.
bücher.example
||adblock.example^
@@||fine.adblock.example^
0.0.0.0 hosts-a.example hosts-b.example  # two names on one hosts line
127.0.0.1 localhost
bad.good.example.com
both.example
";
    let allow = "good.example.com\nboth.example\n";
    let h = Harness::new(block, allow);
    let allows = ["good.example.com", "both.example", "fine.adblock.example"];
    let cases: &[(&str, Option<&str>)] = &[
        ("example.com", Some("example.com")),
        ("www.example.com", Some("example.com")),
        ("a.b.c.example.com", Some("example.com")),
        ("WwW.ExAmPlE.CoM", Some("example.com")),
        ("EXAMPLE.COM.", Some("example.com")),
        ("notexample.com", None),
        ("example.com.evil.net", None),
        ("example.co", None),
        ("com", None),
        ("xample.com", None),
        ("wild.example", None),
        ("x.wild.example", Some("wild.example")),
        ("a.b.WILD.example", Some("wild.example")),
        ("rooted.example", Some("rooted.example")),
        ("sub.ROOTED.example", Some("rooted.example")),
        ("xn--bcher-kva.example", Some("xn--bcher-kva.example")),
        ("www.XN--BCHER-KVA.example", Some("xn--bcher-kva.example")),
        ("bcher.example", None),
        ("adblock.example", Some("adblock.example")),
        ("ads.adblock.example", Some("adblock.example")),
        ("fine.adblock.example", Some("fine.adblock.example")),
        ("x.fine.adblock.example", Some("fine.adblock.example")),
        ("hosts-a.example", Some("hosts-a.example")),
        ("hosts-b.example", Some("hosts-b.example")),
        ("x.hosts-b.example", Some("hosts-b.example")),
        ("hosts-c.example", None),
        ("localhost", None),
        ("good.example.com", Some("good.example.com")),
        ("x.good.example.com", Some("good.example.com")),
        ("bad.good.example.com", Some("bad.good.example.com")),
        ("deep.bad.good.example.com", Some("bad.good.example.com")),
        ("notbad.good.example.com", Some("good.example.com")),
        ("both.example", Some("both.example")),
        ("x.both.example", Some("both.example")),
        ("example", None),
    ];
    let mut rows = Vec::new();
    name_rows(&mut rows, cases, &allows);
    run_table(&h, "rules", &rows);

    // A rule on a top-level domain blocks everything below it.
    let h = Harness::new("com\n", "ok.com\n");
    let cases: &[(&str, Option<&str>)] = &[
        ("com", Some("com")),
        ("example.com", Some("com")),
        ("a.b.c.d.example.COM", Some("com")),
        ("ok.com", Some("ok.com")),
        ("x.ok.com", Some("ok.com")),
        ("nok.com", Some("com")),
        ("example.org", None),
        ("comx", None),
        ("com.org", None),
    ];
    let mut rows = Vec::new();
    name_rows(&mut rows, cases, &["ok.com"]);
    run_table(&h, "rules on a TLD", &rows);
}

/// Query rows for one name in every QTYPE the actions treat differently,
/// with and without EDNS, over IPv4 and IPv6.
fn action_rows(rows: &mut Vec<Row>, qname: &str, rule: &str, action: Action) {
    for s in [Spec::udp4(), Spec::udp6().vlan(Vlan::Single(7))] {
        let ip = if matches!(s.ip, Ip::V4 { .. }) { "IPv4" } else { "IPv6" };
        for qtype in [RecordType::A, RecordType::AAAA, RecordType::TXT, RecordType::MX] {
            for (edns, msg) in [("EDNS", dnswire::query(qname, qtype)), ("no EDNS", dnswire::query_plain(qname, qtype))]
            {
                let desc = format!("{action:?}: {qname} {qtype} {edns} {ip}");
                let rr = match qtype {
                    RecordType::A => Rr::A,
                    RecordType::AAAA => Rr::Aaaa,
                    _ => Rr::None,
                };
                rows.push(match action {
                    Action::Nxdomain => {
                        Row::answered(desc, &s, &msg, Counter::Nxdomain, rule, ResponseCode::NXDomain, Rr::None)
                    }
                    Action::Refused => {
                        Row::answered(desc, &s, &msg, Counter::Refused, rule, ResponseCode::Refused, Rr::None)
                    }
                    Action::Sinkhole => {
                        Row::answered(desc, &s, &msg, Counter::Sinkhole, rule, ResponseCode::NoError, rr)
                    }
                    _ => Row::dropped(desc, frame(&s, &msg), Counter::Drop, Some(rule)),
                });
            }
        }
    }
}

/// Default actions, per-rule actions, sinkhole records at odd and even offsets.
#[test]
fn actions() {
    for action in [Action::Nxdomain, Action::Refused, Action::Sinkhole, Action::Drop] {
        let h = Harness::with("blocked.example\n", "", action, false);
        let mut rows = Vec::new();
        action_rows(&mut rows, "www.Blocked.example", "blocked.example", action);
        action_rows(&mut rows, "blocked.example", "blocked.example", action);
        // TCP is reset whatever the answer (an answer in the stream would
        // desynchronise it), unless the action is a drop.
        let tcp = Spec::udp4().tcp();
        let msg = dnswire::query("blocked.example", RecordType::A);
        let desc = format!("{action:?}: over TCP");
        rows.push(if action == Action::Drop {
            Row::dropped(desc, frame(&tcp, &msg), Counter::DropTcp, Some("blocked.example"))
        } else {
            Row::reset(desc, frame(&tcp, &msg), Some("blocked.example"))
        });
        rows.push(Row::unmatched(
            format!("{action:?}: unblocked"),
            &Spec::udp4(),
            &dnswire::query("other.example", RecordType::A),
        ));
        if action == Action::Sinkhole {
            sinkhole_rows(&mut rows);
        }
        run_table(&h, &format!("default action {action:?}"), &rows);
    }

    let per_rule = "\
||refused.example^$action=refused
||rewrite-refused.example^$dnsrewrite=REFUSED
||sink.example^$dnsrewrite=0.0.0.0
||sink6.example^$dnsrewrite=::
||sinkhole.example^$action=sinkhole
||drop.example^$action=drop
||reset.example^$action=reset
||nx.example^$dnsrewrite=NXDOMAIN
plain.example
";
    let h = Harness::with(per_rule, "", Action::Nxdomain, false);
    let mut rows = Vec::new();
    action_rows(&mut rows, "refused.example", "refused.example", Action::Refused);
    action_rows(&mut rows, "x.rewrite-refused.example", "rewrite-refused.example", Action::Refused);
    action_rows(&mut rows, "sink.example", "sink.example", Action::Sinkhole);
    action_rows(&mut rows, "a.sink6.example", "sink6.example", Action::Sinkhole);
    action_rows(&mut rows, "sinkhole.example", "sinkhole.example", Action::Sinkhole);
    action_rows(&mut rows, "drop.example", "drop.example", Action::Drop);
    // Reset has no connection to reset over UDP: it drops.
    action_rows(&mut rows, "reset.example", "reset.example", Action::Drop);
    action_rows(&mut rows, "nx.example", "nx.example", Action::Nxdomain);
    action_rows(&mut rows, "plain.example", "plain.example", Action::Nxdomain);
    let tcp = Spec::udp6().tcp();
    let msg = dnswire::query("sink.example", RecordType::A);
    rows.push(Row::reset("sinkhole rule over TCP", frame(&tcp, &msg), Some("sink.example")));
    run_table(&h, "per-rule actions, NXDOMAIN default", &rows);

    // A rule's own action beats the default.
    let h = Harness::with("||nx.example^$action=nxdomain\nplain.example\n", "", Action::Sinkhole, false);
    let mut rows = Vec::new();
    action_rows(&mut rows, "nx.example", "nx.example", Action::Nxdomain);
    action_rows(&mut rows, "plain.example", "plain.example", Action::Sinkhole);
    run_table(&h, "per-rule actions, sinkhole default", &rows);

    // Actions are kept per scope: the subdomains-only rule's action does not
    // leak onto the name itself.
    let h = Harness::with("||*.ads.example^$action=drop\nads.example\n", "", Action::Nxdomain, false);
    let mut rows = Vec::new();
    action_rows(&mut rows, "ads.example", "ads.example", Action::Nxdomain);
    action_rows(&mut rows, "x.ads.example", "ads.example", Action::Drop);
    run_table(&h, "per-scope actions", &rows);
}

/// Sinkhole answers whose record starts at odd and even offsets (the
/// checksum handles both), header bits echoed, and classes other than IN.
fn sinkhole_rows(rows: &mut Vec<Row>) {
    let specs = [
        ("IPv4", Spec::udp4()),
        ("IPv6+all-ext", Spec::udp6().v6_ext(V6Ext::All)),
        ("QinQ/IPv4+40B-options", spec(Vlan::Double(8, 9), ip_layers()[2].1.clone(), Transport::Udp)),
    ];
    for (ip, s) in specs {
        for first in 1..=6 {
            let qname = format!("{}.blocked.example", "q".repeat(first));
            let qlen = qname.len() + 2 + 4;
            let parity = if qlen % 2 == 0 { "even" } else { "odd" };
            for (qtype, rr) in [(RecordType::A, Rr::A), (RecordType::AAAA, Rr::Aaaa)] {
                for (edns, msg) in
                    [("EDNS", dnswire::query(&qname, qtype)), ("no EDNS", dnswire::query_plain(&qname, qtype))]
                {
                    let desc = format!("sinkhole {qtype} {ip} {edns}, question of {qlen} bytes ({parity})");
                    rows.push(Row::answered(
                        desc,
                        &s,
                        &msg,
                        Counter::Sinkhole,
                        "blocked.example",
                        ResponseCode::NoError,
                        rr,
                    ));
                }
            }
        }
    }
    let s = Spec::udp4();
    let qname = dnswire::wire_name("Odd.Blocked.Example");
    let question = |qtype: u16, qclass: u16| {
        let mut q = qname.clone();
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&qclass.to_be_bytes());
        q
    };
    let cases: [(&str, u16, Vec<u8>, Rr); 6] = [
        ("RD clear", 0x0000, question(1, 1), Rr::A),
        ("RD and CD set", 0x0110, question(1, 1), Rr::A),
        ("AD and Z bits in the query", 0x0160, question(28, 1), Rr::Aaaa),
        ("class CH: NODATA", 0x0100, question(1, 3), Rr::None),
        ("QTYPE ANY: NODATA", 0x0100, question(255, 1), Rr::None),
        ("QTYPE 65535: NODATA", 0x0100, question(65535, 1), Rr::None),
    ];
    for (desc, flags, q, rr) in cases {
        let msg = dnswire::raw_message(flags, 1, &q);
        rows.push(Row::answered(
            format!("sinkhole: {desc}"),
            &s,
            &msg,
            Counter::Sinkhole,
            "blocked.example",
            ResponseCode::NoError,
            rr,
        ));
    }
}

/// `n` labels of one character each, the last ones `tail`, e.g. `a.b.c...x.y.z`.
fn one_byte_labels(n: usize, tail: &[&str]) -> String {
    let mut labels: Vec<String> = (0..n - tail.len()).map(|i| char::from(b'a' + (i % 26) as u8).to_string()).collect();
    labels.extend(tail.iter().map(|t| (*t).to_owned()));
    labels.join(".")
}

/// The longest names, and everything the parser refuses or skips.
#[test]
fn names_and_malformed() {
    let long4 = |last: char| {
        format!("{}.{}.{}.{}", "a".repeat(63), "b".repeat(63), "c".repeat(63), last.to_string().repeat(61))
    };
    let rule255 = format!("{}.{}", "c".repeat(63), "d".repeat(61));
    let deep_rule = ["k"; 127].join(".");
    let block = format!("example.com\n{rule255}\ny.z\n{deep_rule}\n");
    let h = Harness::new(&block, "");
    let s = Spec::udp4();
    let q = |name: &str| dnswire::query(name, RecordType::A);
    let near = format!("j{}", &deep_rule[1..]);
    let mut rows = vec![
        Row::blocked("255 bytes: labels of 63,63,63,61, rule on the last two", &s, &q(&long4('d')), &rule255),
        Row::unmatched("255 bytes: labels of 63,63,63,61, unmatched", &s, &q(&long4('e'))),
        Row::blocked(
            "255 bytes: 127 one-byte labels, rule on the last two",
            &s,
            &q(&one_byte_labels(127, &["y", "z"])),
            "y.z",
        ),
        Row::unmatched("255 bytes: 127 one-byte labels, unmatched", &s, &q(&one_byte_labels(127, &["y", "q"]))),
        Row::blocked("255 bytes: 127 labels, a rule of all 127", &s, &q(&deep_rule.to_uppercase()), &deep_rule),
        Row::unmatched("255 bytes: 127 labels, leftmost differs from the 127-label rule", &s, &q(&near)),
        Row::unmatched("the root name", &s, &q(".")).keyed(name::root_key(h.rules.seed())),
        Row::blocked("a 63-byte label under a rule", &s, &q(&format!("{}.example.com", "x".repeat(63))), "example.com"),
    ];

    let raw = |wire: &[u8]| s.build(&dnswire::raw_query(wire));
    let too_long = [
        (
            "256 bytes: labels of 63,63,63,62",
            dnswire::wire_name(&format!("{}.{}.{}.{}", "a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(62))),
        ),
        ("257 bytes: four 63-byte labels", dnswire::wire_name(&vec!["x".repeat(63); 4].join("."))),
        ("257 bytes: 128 one-byte labels", dnswire::wire_name(&one_byte_labels(128, &["y", "z"]))),
        (
            "300 bytes ending in example.com",
            dnswire::wire_name(&format!("{}.example.com", vec!["m".repeat(60); 5].join("."))),
        ),
    ];
    for (desc, wire) in too_long {
        rows.push(Row::pass(format!("too long: {desc}"), raw(&wire), Counter::DnsNameTooLong));
    }
    let malformed: [(&str, &[u8], Counter); 9] = [
        ("compression pointer after a label", &[3, b'w', b'w', b'w', 0xc0, 12], Counter::DnsCompressed),
        ("compression pointer as the whole name", &[0xc0, 12], Counter::DnsCompressed),
        ("label type 0x40 (extended)", &[3, b'w', b'w', b'w', 0x41, b'x', 0], Counter::DnsBadLabel),
        ("label type 0x80 (reserved)", &[0x80, 0], Counter::DnsBadLabel),
        ("name without its root label", &[7, b'e', b'x', b'a', b'm', b'p', b'l', b'e'], Counter::DnsTruncated),
        ("label longer than the message", &[20, b'a', b'b'], Counter::DnsTruncated),
        ("no QTYPE/QCLASS", &[3, b'c', b'o', b'm', 0], Counter::DnsTruncated),
        ("half a QCLASS", &[3, b'c', b'o', b'm', 0, 0, 1, 0], Counter::DnsTruncated),
        ("empty question section", &[], Counter::DnsTruncated),
    ];
    for (desc, bytes, counter) in malformed {
        rows.push(Row::pass(desc, s.build(&dnswire::raw_message(0x0100, 1, bytes)), counter));
    }
    let blocked_question = {
        let mut v = dnswire::wire_name("example.com");
        v.extend_from_slice(&[0, 1, 0, 1]);
        v
    };
    let two_questions = [blocked_question.clone(), blocked_question.clone()].concat();
    let not_judged: [(&str, u16, u16, &[u8], Counter); 6] = [
        ("QDCOUNT 0", 0x0100, 0, &[], Counter::DnsNoQuestion),
        ("QDCOUNT 2", 0x0100, 2, &two_questions, Counter::DnsMultiQuestion),
        ("QDCOUNT 65535", 0x0100, 0xffff, &blocked_question, Counter::DnsMultiQuestion),
        ("a response (QR=1)", 0x8180, 1, &blocked_question, Counter::DnsResponse),
        ("opcode NOTIFY", 4 << 11, 1, &blocked_question, Counter::DnsNotQuery),
        ("opcode UPDATE", 5 << 11, 1, &blocked_question, Counter::DnsNotQuery),
    ];
    for (desc, flags, qd, question, counter) in not_judged {
        rows.push(Row::pass(desc, s.build(&dnswire::raw_message(flags, qd, question)), counter));
    }
    rows.push(Row::pass("UDP payload of 11 bytes", s.build(&[0; 11]), Counter::DnsShortHeader));
    rows.push(Row::pass("UDP without payload", s.build(&[]), Counter::DnsShortHeader));
    rows.extend(header_rows());
    run_table(&h, "names and malformed", &rows);

    let h = Harness::with("example.com\n", "", Action::Nxdomain, true);
    run_table(&h, "--unjudged drop", &unjudged_rows());
}

/// Frames the header parser skips or refuses before any DNS is read.
fn header_rows() -> Vec<Row> {
    let s = Spec::udp4();
    let blocked = dnswire::query("www.example.com", RecordType::A);
    let ipv4_frag = |word: u16| {
        let mut f = s.build(&blocked);
        packet::set_ipv4_frag(&mut f, s.l3_offset(), word);
        f
    };
    let from53 = Spec { sport: 53, dport: 40000, ..s.clone() };
    let double = s.clone().vlan(Vlan::Double(1, 2));
    let eight = Row::blocked("8 IPv6 dest-opts headers (the most followed)", &Spec::udp6(), &blocked, "example.com");
    let mut rows = vec![
        Row::pass("UDP to port 5353", s.clone().dport(5353).build(&blocked), Counter::NotDnsPort),
        // DNS over TCP to another port is only a TCP stream that does not start like TLS.
        Row::pass("DNS over TCP to port 853", frame(&s.clone().tcp().dport(853), &blocked), Counter::TcpOther),
        Row::pass("UDP from port 53 (a server's answer)", from53.build(&blocked), Counter::NotDnsPort),
        Row::pass("ARP", packet::arp_request(), Counter::NotIp),
        Row::pass("ARP in 802.1Q", packet::push_vlan(&packet::arp_request(), 0x8100, 5), Counter::NotIp),
        Row::pass("ICMP echo", packet::icmp4_echo(), Counter::NotUdpTcp),
        Row::pass(
            "five VLAN tags",
            packet::push_vlan(
                &packet::push_vlan(&packet::push_vlan(&double.build(&blocked), 0x88a8, 3), 0x88a8, 4),
                0x88a8,
                5,
            ),
            Counter::VlanTooDeep,
        ),
        Row::pass("IPv4 later fragment of a datagram not seen", ipv4_frag(0x2004), Counter::IpFragment),
        // The first fragment holds the whole question: judged, and blocked
        // it is dropped (an answer would need the whole datagram)...
        Row::dropped("IPv4 first fragment (MF)", ipv4_frag(0x2000), Counter::DropFragmented, Some("example.com")),
        // ...and so are its datagram's later fragments (same identification).
        Row::dropped("IPv4 middle fragment (MF, offset 32)", ipv4_frag(0x2005), Counter::FragmentDropped, None),
        Row::dropped("IPv4 last fragment (offset 32, no MF)", ipv4_frag(0x0004), Counter::FragmentDropped, None),
        Row { packet: ipv4_frag(0x4000), ..Row::blocked("IPv4 with DF (not a fragment)", &s, &blocked, "example.com") },
        Row::dropped(
            "IPv6 first fragment",
            Spec::udp6().v6_ext(V6Ext::Fragment).build(&blocked),
            Counter::DropFragmented,
            Some("example.com"),
        ),
        Row::dropped(
            "IPv6 fragment, offset 8",
            {
                let mut f = Spec::udp6().v6_ext(V6Ext::Fragment).build(&blocked);
                f[14 + 40 + 3] = 8 << 3;
                f
            },
            Counter::FragmentDropped,
            None,
        ),
        Row::pass(
            "IPv6 payload length 0 without a jumbo option",
            {
                let mut f = Spec::udp6().build(&blocked);
                packet::set_be16(&mut f, 14 + 4, 0);
                f
            },
            Counter::BadHeader,
        ),
        // The first segment of a connection is taken for a message's start;
        // one too short for the message's head is kept for the next.
        Row::pass("TCP length prefix alone", Spec::udp4().tcp().build(&[0, 40]), Counter::DnsTcpPartial),
        Row::pass(
            "TCP query without its length prefix (its ID read as a length)",
            Spec::udp4().tcp().build(&dnswire::query("example.com", RecordType::A)),
            Counter::DnsTcpPartial,
        ),
        // Each message of a segment is judged in turn: the blocked second
        // one resets the connection.
        Row::reset(
            "TCP: an unknown name, then a blocked one, in one segment",
            Spec::udp4().tcp().build(
                &[
                    packet::tcp_dns(&dnswire::query("example.org", RecordType::A)),
                    packet::tcp_dns(&dnswire::query("example.com", RecordType::A)),
                ]
                .concat(),
            ),
            Some("example.com"),
        ),
        Row::pass(
            "TCP: three unknown names in one segment",
            Spec::udp4().tcp().build(
                &[
                    packet::tcp_dns(&dnswire::query("example.org", RecordType::A)),
                    packet::tcp_dns(&dnswire::query("www.example.org", RecordType::AAAA)),
                    packet::tcp_dns(&dnswire::query("example.net", RecordType::A)),
                ]
                .concat(),
            ),
            Counter::PassNoMatch,
        ),
        Row::pass("9 IPv6 dest-opts headers", packet::udp6_with_dest_opts(9, &blocked), Counter::Ipv6ExtTooDeep),
        Row { packet: packet::udp6_with_dest_opts(8, &blocked), ..eight },
        Row::pass("TCP pure ACK to 53", s.clone().tcp().build_ack(), Counter::TcpNoPayload),
        Row::pass(
            "TCP segment from the middle of a message (its QDCOUNT read as a length)",
            s.clone().tcp().build(&blocked[4..]),
            Counter::TcpNotMessageStart,
        ),
    ];
    rows.extend(length_rows());
    rows
}

/// Length fields against the frame: Ethernet padding, datagrams shorter
/// than their IP packet, lengths that overrun, multi-buffer frames.
fn length_rows() -> Vec<Row> {
    let s = Spec::udp4();
    let blocked = dnswire::query("www.example.com", RecordType::A);
    let answer = |desc: &str, packet: Vec<u8>| Row { packet, ..Row::blocked(desc, &s, &blocked, "example.com") };
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut v = s.build(&blocked);
        f(&mut v);
        v
    };
    // Offsets in an untagged IPv4/UDP frame.
    let (ip_total, ip_vihl, udp_len, udp_sum) = (16, 14, 38, 40);
    let udp_total = 8 + blocked.len() as u16;
    let mut rows = vec![
        answer("blocked, 20 bytes of Ethernet trailer", with(&|f| f.extend_from_slice(&[0xee; 20]))),
        Row::pass(
            "root query padded to 60 bytes",
            {
                let mut f = s.build(&dnswire::query_plain(".", RecordType::NS));
                f.resize(60, 0);
                f
            },
            Counter::PassNoMatch,
        ),
        // The IP packet carries 16 bytes after the datagram (its checksum
        // cleared: IPv4 UDP without checksum): only the datagram is the query.
        answer("blocked, UDP length shorter than the IP payload", {
            let mut f = s.build(&[blocked.clone(), vec![0xee; 16]].concat());
            packet::set_be16(&mut f, udp_len, udp_total);
            packet::set_be16(&mut f, udp_sum, 0);
            f
        }),
        Row::pass(
            "UDP length beyond the IP payload",
            with(&|f| packet::set_be16(f, udp_len, udp_total + 1)),
            Counter::BadHeader,
        ),
        Row::pass("UDP length 7", with(&|f| packet::set_be16(f, udp_len, 7)), Counter::BadHeader),
        Row::pass(
            "IPv4 total length beyond the frame",
            with(&|f| {
                let total = u16::from_be_bytes([f[ip_total], f[ip_total + 1]]);
                packet::set_be16(f, ip_total, total + 1);
            }),
            Counter::BadHeader,
        ),
        Row::pass(
            "IPv4 total length below the header length",
            with(&|f| packet::set_be16(f, ip_total, 19)),
            Counter::BadHeader,
        ),
        Row::pass("IPv4 header length 16", with(&|f| f[ip_vihl] = 0x44), Counter::BadHeader),
        Row::pass("IP version 6 under EtherType IPv4", with(&|f| f[ip_vihl] = 0x65), Counter::BadHeader),
        Row::pass(
            "IPv6 payload length beyond the frame",
            {
                let mut f = Spec::udp6().build(&blocked);
                let len = u16::from_be_bytes([f[18], f[19]]);
                packet::set_be16(&mut f, 18, len + 1);
                f
            },
            Counter::BadHeader,
        ),
        Row::pass(
            "TCP pure ACK with a data offset past the packet's end",
            {
                let mut f = s.clone().tcp().build_ack();
                f[34 + 12] = 0xf0;
                f
            },
            Counter::BadHeader,
        ),
        Row::pass(
            "TCP data offset 4",
            {
                let mut f = frame(&s.clone().tcp(), &blocked);
                f[34 + 12] = 0x40;
                f
            },
            Counter::BadHeader,
        ),
    ];
    // Longer than a page: BPF_PROG_TEST_RUN hands the program a multi-buffer
    // frame, the question in the first buffer, the padding in fragments.
    let padded = dnswire::with_padding(&dnswire::query_plain("www.example.com", RecordType::A), 6000);
    rows.push(Row::blocked(
        "blocked, 6000 bytes of EDNS padding (multi-buffer)",
        &Spec::udp6(),
        &padded,
        "example.com",
    ));
    let padded = dnswire::with_padding(&dnswire::query_plain("www.example.org", RecordType::A), 6000);
    rows.push(Row::unmatched("unknown, 6000 bytes of EDNS padding (multi-buffer)", &Spec::udp6(), &padded));
    rows
}

fn unjudged_rows() -> Vec<Row> {
    let s = Spec::udp4();
    let raw = |flags: u16, qd: u16, q: &[u8]| s.build(&dnswire::raw_message(flags, qd, q));
    let question = {
        let mut v = dnswire::wire_name("example.com");
        v.extend_from_slice(&[0, 1, 0, 1]);
        v
    };
    let fc = |desc: &str, packet: Vec<u8>, c: Counter| Row::dropped(desc, packet, c, None).extra(Counter::UnjudgedDrop);
    // A query for an unknown name, its question cut by the first fragment's end.
    let unknown = dnswire::query("www.example.org", RecordType::A);
    let v4 = packet::fragments_v4(&s.build(&unknown), 14, 0x4321, &[24]);
    let v6 = packet::fragments_v6(&Spec::udp6().build(&unknown), 14, 0x8765_4321, &[24]);
    vec![
        fc("compressed name", raw(0x0100, 1, &[3, b'w', b'w', b'w', 0xc0, 12, 0, 1, 0, 1]), Counter::DnsCompressed),
        fc("truncated question", raw(0x0100, 1, &question[..5]), Counter::DnsTruncated),
        fc("two questions", raw(0x0100, 2, &[question.clone(), question.clone()].concat()), Counter::DnsMultiQuestion),
        fc("bad label type", raw(0x0100, 1, &[0x40, 0, 0, 1, 0, 1]), Counter::DnsBadLabel),
        fc(
            "name too long",
            raw(0x0100, 1, &dnswire::wire_name(&vec!["x".repeat(63); 5].join("."))),
            Counter::DnsNameTooLong,
        ),
        fc("short header", s.build(&[1, 2, 3]), Counter::DnsShortHeader),
        Row::pass("not DNS (port 5353)", s.clone().dport(5353).build(&[0; 3]), Counter::NotDnsPort),
        Row::pass("a response", raw(0x8180, 1, &question), Counter::DnsResponse),
        Row::pass("no question", raw(0x0100, 0, &[]), Counter::DnsNoQuestion),
        Row::pass("ARP", packet::arp_request(), Counter::NotIp),
        fc("IPv6 first fragment, question cut", v6[0].clone(), Counter::DnsFragment),
        Row::dropped("IPv6 its later fragment", v6[1].clone(), Counter::FragmentDropped, None),
        fc("IPv4 first fragment, question cut", v4[0].clone(), Counter::DnsFragment),
        Row::dropped("IPv4 its later fragment", v4[1].clone(), Counter::FragmentDropped, None),
        Row::pass("TCP length prefix alone", s.clone().tcp().build(&[0, 40]), Counter::DnsTcpPartial),
        fc(
            "TCP response",
            s.clone().tcp().build(&packet::tcp_dns(&{
                let mut m = dnswire::query("example.com", RecordType::A);
                m[2..4].copy_from_slice(&0x8180u16.to_be_bytes());
                m
            })),
            Counter::TcpNotMessageStart,
        ),
        Row::reset(
            "TCP: an unknown name, then a blocked one, in one segment",
            s.clone().tcp().build(
                &[
                    packet::tcp_dns(&dnswire::query("example.org", RecordType::A)),
                    packet::tcp_dns(&dnswire::query("example.com", RecordType::A)),
                ]
                .concat(),
            ),
            Some("example.com"),
        ),
        fc(
            "TCP: 40 unknown names in one segment, more than the stage judges in a row",
            s.clone().tcp().build(&packet::tcp_dns(&dnswire::query("example.org", RecordType::A)).repeat(40)),
            Counter::TcpPipelined,
        ),
        Row::pass("TCP pure ACK", s.clone().tcp().build_ack(), Counter::TcpNoPayload),
        Row::blocked("blocked name", &s, &dnswire::query("example.com", RecordType::A), "example.com"),
        Row::unmatched("unknown name", &s, &dnswire::query("example.org", RecordType::A)),
    ]
}

/// Valid queries the truncation sweeps cut: several layouts, blocked and
/// unblocked names, UDP and TCP.
fn sweep_queries() -> Vec<(&'static str, Spec, Vec<u8>, Option<&'static str>)> {
    let blocked = dnswire::query("Www.Example.com", RecordType::A);
    let plain_blocked = dnswire::query_plain("a.example.com", RecordType::AAAA);
    let unknown = dnswire::query("www.example.org", RecordType::A);
    vec![
        ("UDP/IPv4 blocked", Spec::udp4(), blocked.clone(), Some("example.com")),
        ("UDP/IPv4 blocked, no EDNS", Spec::udp4(), plain_blocked.clone(), Some("example.com")),
        ("UDP/IPv4 unknown", Spec::udp4(), unknown.clone(), None),
        (
            "UDP/802.1Q/IPv4+options blocked",
            Spec::udp4().vlan(Vlan::Single(9)).v4_options(&[0x94, 4, 0, 0]),
            blocked.clone(),
            Some("example.com"),
        ),
        (
            "UDP/QinQ/IPv6+all-ext blocked",
            Spec::udp6().vlan(Vlan::Double(1, 2)).v6_ext(V6Ext::All),
            blocked.clone(),
            Some("example.com"),
        ),
        ("UDP/IPv6 unknown", Spec::udp6(), unknown.clone(), None),
        ("TCP/IPv4 blocked", Spec::udp4().tcp(), blocked.clone(), Some("example.com")),
        (
            "TCP/802.1Q/IPv6+hop-by-hop blocked",
            Spec::udp6().tcp().vlan(Vlan::Single(4)).v6_ext(V6Ext::HopByHop),
            plain_blocked,
            Some("example.com"),
        ),
        ("TCP/IPv6 unknown", Spec::udp6().tcp(), unknown, None),
    ]
}

/// Every frame cut short at every byte.
///
/// A frame shorter than its IP header says is not a packet any host would
/// accept (Linux drops it in `ip_rcv_core`/`ipv6_rcv` as truncated, and a
/// UDP length beyond the IP payload in `udp_rcv`): the program must not act
/// on it, even when the cut spares the whole question (e.g. it only removes
/// the EDNS OPT record). So every cut passes the frame unchanged and counts
/// `truncated_header` while the headers the program reads to find the
/// destination port are incomplete (the fixed IP header, extension headers,
/// 8 bytes of UDP or 13 of TCP), and `bad_header` (IP length beyond the
/// frame) from there on: the length is checked after the port, so traffic
/// to other ports pays nothing for it. Cuts start at 14 bytes:
/// `BPF_PROG_TEST_RUN` refuses XDP frames shorter than an Ethernet header (EINVAL).
fn raw_cut_rows(rows: &mut Vec<Row>, desc: &str, s: &Spec, msg: &[u8]) {
    let full = frame(s, msg);
    let (l4_header, l4_read) = match s.transport {
        Transport::Udp => (8, 8),
        Transport::Tcp => (20, 13),
    };
    let payload = match s.transport {
        Transport::Udp => msg.len(),
        Transport::Tcp => msg.len() + 2,
    };
    let ports_read = full.len() - payload - l4_header + l4_read;
    for cut in 14..full.len() {
        let outcome = if cut < ports_read { Counter::TruncatedHeader } else { Counter::BadHeader };
        rows.push(Row::pass(
            format!("{desc}: frame cut to {cut} of {} bytes", full.len()),
            full[..cut].to_vec(),
            outcome,
        ));
    }
}

/// The DNS payload cut at every byte, the frame rebuilt around it with
/// consistent IP/UDP lengths. Over UDP the program judges the query if and
/// only if the whole question is present (a query whose additional records
/// are cut, which a server may answer). Over TCP a cut segment is the first
/// of a message split over several: kept until the message's head (all of
/// a message this short) is whole, then judged.
fn payload_cut_rows(rows: &mut Vec<Row>, desc: &str, s: &Spec, msg: &[u8], rule: Option<&str>) {
    let qlen = dnswire::question_len(msg).expect("a whole question");
    match s.transport {
        Transport::Udp => {
            for k in 0..=msg.len() {
                let cut = &msg[..k];
                let d = format!("{desc}: DNS message cut to {k} of {} bytes", msg.len());
                rows.push(match (k, rule) {
                    (k, _) if k < 12 => Row::pass(d, s.build(cut), Counter::DnsShortHeader),
                    (k, _) if k < 12 + qlen => Row::pass(d, s.build(cut), Counter::DnsTruncated),
                    (_, Some(r)) => Row::blocked(d, s, cut, r),
                    (_, None) => Row::unmatched(d, s, cut),
                });
            }
        }
        Transport::Tcp => {
            let stream = packet::tcp_dns(msg);
            for k in 0..=stream.len() {
                let segment = s.build(&stream[..k]);
                let d = format!("{desc}: TCP payload cut to {k} of {} bytes", stream.len());
                rows.push(match (k, rule) {
                    (0, _) => Row::pass(d, segment, Counter::TcpNoPayload),
                    // The message's head (all of a message this short) is
                    // still to come: kept, and judged when it is whole.
                    (k, _) if k < stream.len() => Row::pass(d, segment, Counter::DnsTcpPartial),
                    (_, Some(r)) => Row::reset(d, segment, Some(r)),
                    (_, None) => Row::pass(d, segment, Counter::PassNoMatch),
                });
            }
        }
    }
}

/// The same row under `--unjudged drop`: a query that cannot be judged is
/// dropped (its outcome unchanged, `unjudged_drop` counted on top).
fn unjudged_drop(row: Row) -> Row {
    if row.outcome.kind() == CounterKind::Unjudged {
        Row { action: XDP_DROP, ..row }.extra(Counter::UnjudgedDrop)
    } else {
        row
    }
}

/// Truncation sweeps: see [`raw_cut_rows`] and [`payload_cut_rows`] for the rules.
#[test]
fn truncation() {
    let mut raw = Vec::new();
    let mut rebuilt = Vec::new();
    for (desc, s, msg, rule) in sweep_queries() {
        raw_cut_rows(&mut raw, desc, &s, &msg);
        payload_cut_rows(&mut rebuilt, desc, &s, &msg, rule);
    }
    let h = Harness::new("example.com\n", "");
    run_table(&h, "frames cut short", &raw);
    run_table(&h, "DNS payloads cut short, lengths consistent", &rebuilt);

    // Fail-closed drops what it should have judged and could not; a frame
    // cut short is not such a query, so it still passes. A TCP segment that
    // ends inside a message's head passes either way: its bytes are kept
    // and the question judged with the segment that completes it
    // (`dns_stream_test_run`).
    let h = Harness::with("example.com\n", "", Action::Nxdomain, true);
    let rebuilt: Vec<Row> = rebuilt.into_iter().map(unjudged_drop).collect();
    assert!(
        rebuilt.iter().any(|r| r.desc.starts_with("UDP") && r.action == XDP_DROP),
        "no --unjudged drop UDP drops in the sweep"
    );
    run_table(&h, "frames cut short, --unjudged drop", &raw);
    run_table(&h, "DNS payloads cut short, lengths consistent, --unjudged drop", &rebuilt);
}

/// What the program must decide for the DNS message `dns`, carried whole
/// over UDP to port 53: the outcome and the deciding rule's key. Computed on
/// the host with the shared name parser and rule decision (`maps::parse::name`,
/// `maps::layout::rule`) over the harness's rule set, as the reference for fuzz rows.
fn model(h: &Harness, dns: &[u8]) -> (Counter, Option<u64>) {
    if dns.len() < 12 {
        return (Counter::DnsShortHeader, None);
    }
    let flags = u16::from_be_bytes([dns[2], dns[3]]);
    let qdcount = u16::from_be_bytes([dns[4], dns[5]]);
    let skipped = match () {
        () if flags & 0x8000 != 0 => Some(Counter::DnsResponse),
        () if (flags >> 11) & 0xf != 0 => Some(Counter::DnsNotQuery),
        () if qdcount == 0 => Some(Counter::DnsNoQuestion),
        () if qdcount > 1 => Some(Counter::DnsMultiQuestion),
        () => None,
    };
    if let Some(c) = skipped {
        return (c, None);
    }
    let avail = (dns.len() - 12).min(name::MAX_QUESTION);
    if avail == 0 {
        return (Counter::DnsTruncated, None);
    }
    let mut buf = [0u8; QUESTION_BUF];
    buf[..avail].copy_from_slice(&dns[12..12 + avail]);
    let seed = h.rules.seed();
    let mut hashes = [0u64; LABEL_SLOTS];
    let parsed = match name::parse_wire_name(&buf, avail, seed, &mut hashes) {
        Ok(n) if n.len + 4 <= avail => n,
        Ok(_) | Err(NameError::Truncated) => return (Counter::DnsTruncated, None),
        Err(NameError::Compressed) => return (Counter::DnsCompressed, None),
        Err(NameError::BadLabelType | NameError::EmptyLabel | NameError::LabelTooLong) => {
            return (Counter::DnsBadLabel, None);
        }
        Err(NameError::TooLong) => return (Counter::DnsNameTooLong, None),
    };
    let labels = parsed.labels;
    let mut best = None;
    for depth in 1..=labels {
        let key = name::suffix_key(seed, &hashes[..labels], depth);
        let Some(r) = h.rules.get(key) else { continue };
        if usize::from(r.rule.labels) == depth
            && let Some(v) = rule::judge(&r.rule, depth, labels)
        {
            best = Some((v, key));
        }
    }
    match best {
        None => (Counter::PassNoMatch, None),
        Some((Verdict::Allow, key)) => (Counter::PassAllowed, Some(key)),
        Some((Verdict::Block(a), key)) => {
            let c = match rule::dns_action(a, h.filter.settings().dns_action) {
                1 => Counter::Nxdomain,
                2 => Counter::Refused,
                3 => Counter::Sinkhole,
                _ => Counter::Drop,
            };
            (c, Some(key))
        }
    }
}

/// The row the reference model expects for `dns` sent as `s` says.
fn modelled_row(h: &Harness, desc: String, s: &Spec, dns: &[u8]) -> Row {
    let (outcome, key) = model(h, dns);
    let rule = key.map(|k| h.rules.get(k).map_or_else(|| format!("?{k:#x}"), |r| r.domain.to_string()));
    let rule = rule.as_deref().unwrap_or("");
    if s.transport == Transport::Tcp {
        let segment = frame(s, dns);
        return match outcome {
            // Over TCP, bytes that do not start a query are taken for the
            // middle of a stream; any block is a drop.
            Counter::DnsShortHeader | Counter::DnsResponse | Counter::DnsNotQuery | Counter::DnsNoQuestion => {
                Row::pass(desc, segment, Counter::TcpNotMessageStart)
            }
            Counter::Drop => Row::dropped(desc, segment, Counter::DropTcp, Some(rule)),
            Counter::Nxdomain | Counter::Refused | Counter::Sinkhole => Row::reset(desc, segment, Some(rule)),
            Counter::PassAllowed => Row::allowed(desc, segment, rule),
            other => Row::pass(desc, segment, other),
        };
    }
    let qtype_class = dnswire::question_len(dns).map(|n| {
        let at = 12 + n - 4;
        (u16::from_be_bytes([dns[at], dns[at + 1]]), u16::from_be_bytes([dns[at + 2], dns[at + 3]]))
    });
    match outcome {
        Counter::Nxdomain => Row::answered(desc, s, dns, outcome, rule, ResponseCode::NXDomain, Rr::None),
        Counter::Refused => Row::answered(desc, s, dns, outcome, rule, ResponseCode::Refused, Rr::None),
        Counter::Sinkhole => {
            let rr = match qtype_class {
                Some((1, 1)) => Rr::A,
                Some((28, 1)) => Rr::Aaaa,
                _ => Rr::None,
            };
            Row::answered(desc, s, dns, outcome, rule, ResponseCode::NoError, rr)
        }
        Counter::Drop => Row::dropped(desc, s.build(dns), outcome, Some(rule)),
        Counter::PassAllowed => Row::allowed(desc, s.build(dns), rule),
        _ => Row::pass(desc, s.build(dns), outcome),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, b| {
        write!(out, "{b:02x}").expect("formatting into a String");
        out
    })
}

/// A QNAME of random labels, sometimes ending in a rule's name, sometimes
/// with a pointer or a reserved label type, sometimes longer than 255 bytes.
fn random_qname(rng: &mut StdRng) -> Vec<u8> {
    const SUFFIXES: [&str; 4] = ["example.com", "sink.example", "ok.example.com", "a"];
    let mut q = Vec::new();
    let labels = match rng.random_range(0..4) {
        0 => rng.random_range(0..=4),
        1 => rng.random_range(0..=20),
        _ => rng.random_range(100..=130),
    };
    for _ in 0..labels {
        match rng.random_range(0..200) {
            0 => return [q, vec![0xc0 | rng.random_range(0..0x40), rng.random()]].concat(),
            1 => q.push(0x40 | rng.random_range(0..0x40)),
            2 => q.push(0x80 | rng.random_range(0..0x40)),
            _ => {}
        }
        let len = match rng.random_range(0..4) {
            0 => 63,
            1 => rng.random_range(1..=63),
            _ => rng.random_range(1..=3),
        };
        q.push(len);
        for _ in 0..len {
            q.push(if rng.random_bool(0.8) { rng.random_range(b'A'..=b'z') } else { rng.random() });
        }
    }
    if rng.random_bool(0.4) {
        q.extend_from_slice(&dnswire::wire_name(SUFFIXES[rng.random_range(0..SUFFIXES.len())]));
    } else {
        q.push(0);
    }
    q
}

/// Random messages to port 53 over UDP and TCP in several layouts, checked against
/// the reference model: never aborted, one outcome each, answers valid.
#[test]
fn fuzz() {
    let block = "example.com\n||sink.example^$action=sinkhole\n||refused.example^$action=refused\n||drop.example^$action=drop\na\n";
    let h = Harness::new(block, "ok.example.com\n");
    let mut rng = StdRng::seed_from_u64(0x6e61_6d65_7761_6c6c);
    let specs = [
        ("UDP/IPv4", Spec::udp4()),
        ("UDP/IPv6", Spec::udp6()),
        ("UDP/802.1Q/IPv4+options", Spec::udp4().vlan(Vlan::Single(3)).v4_options(&[1, 1, 1, 0])),
        ("UDP/QinQ/IPv6+all-ext", Spec::udp6().vlan(Vlan::Double(5, 6)).v6_ext(V6Ext::All)),
        ("TCP/IPv4", Spec::udp4().tcp()),
        ("TCP/802.1Q/IPv6+hop-by-hop", Spec::udp6().tcp().vlan(Vlan::Single(8)).v6_ext(V6Ext::HopByHop)),
    ];
    let seeds = [
        dnswire::query("www.example.com", RecordType::A),
        dnswire::query_plain("x.Sink.example", RecordType::AAAA),
        dnswire::query("sink.example", RecordType::A),
        dnswire::query("refused.example", RecordType::TXT),
        dnswire::query("a.ok.example.com", RecordType::A),
        dnswire::query_plain("drop.example", RecordType::A),
        dnswire::query_plain("a", RecordType::MX),
        dnswire::query(&one_byte_labels(127, &["a"]), RecordType::A),
    ];
    let mut rows = Vec::new();
    for i in 0..4000 {
        let (mode, dns) = match i % 4 {
            0 => ("random bytes", (0..rng.random_range(0..=40)).map(|_| rng.random()).collect::<Vec<u8>>()),
            1 => {
                let flags = [0x0100, 0x0000, 0x0110, rng.random()][rng.random_range(0..4)];
                let qd = if rng.random_bool(0.9) { 1 } else { rng.random() };
                let question: Vec<u8> = (0..rng.random_range(0..=300)).map(|_| rng.random()).collect();
                ("random question", dnswire::raw_message(flags, qd, &question))
            }
            2 => {
                let mut q = random_qname(&mut rng);
                let (qtype, qclass): (u16, u16) =
                    [(1, 1), (28, 1), (16, 1), (1, 3), (rng.random(), rng.random())][rng.random_range(0..5)];
                q.extend_from_slice(&qtype.to_be_bytes());
                q.extend_from_slice(&qclass.to_be_bytes());
                if rng.random_bool(0.2) {
                    q.truncate(rng.random_range(0..=q.len()));
                }
                if rng.random_bool(0.2) {
                    q.extend((0..rng.random_range(1..40)).map(|_| rng.random::<u8>()));
                }
                ("random name", dnswire::raw_message([0x0100, 0x0110, 0][rng.random_range(0..3)], 1, &q))
            }
            _ => {
                let mut m = seeds[rng.random_range(0..seeds.len())].clone();
                for _ in 0..rng.random_range(1..=3) {
                    match rng.random_range(0..4) {
                        0 if !m.is_empty() => {
                            let at = rng.random_range(0..m.len());
                            m[at] = rng.random();
                        }
                        1 if !m.is_empty() => {
                            let at = rng.random_range(0..m.len());
                            m[at] ^= 1 << rng.random_range(0..8);
                        }
                        2 => m.truncate(rng.random_range(0..=m.len())),
                        _ => {
                            let at = rng.random_range(0..=m.len());
                            m.insert(at, rng.random());
                        }
                    }
                }
                ("mutated query", m)
            }
        };
        let (sname, s) = &specs[rng.random_range(0..specs.len())];
        rows.push(modelled_row(&h, format!("fuzz #{i} ({mode}, {sname}): {}", hex(&dns)), s, &dns));
    }
    // The fuzz must reach every kind of decision, or it tests little.
    let mut reached = BTreeMap::<&str, usize>::new();
    for r in &rows {
        *reached.entry(r.outcome.name()).or_default() += 1;
    }
    for c in [
        Counter::DnsShortHeader,
        Counter::DnsTruncated,
        Counter::DnsCompressed,
        Counter::DnsBadLabel,
        Counter::DnsNameTooLong,
        Counter::DnsMultiQuestion,
        Counter::DnsResponse,
        Counter::DnsNotQuery,
        Counter::PassNoMatch,
        Counter::PassAllowed,
        Counter::Nxdomain,
        Counter::Refused,
        Counter::Sinkhole,
        Counter::Drop,
    ] {
        assert!(
            reached.get(c.name()).copied().unwrap_or(0) >= 5,
            "the fuzz reached {} too rarely: {reached:?}",
            c.name()
        );
    }
    run_table(&h, "fuzz", &rows);
}

/// Random ASCII names: 1 to 127 labels of letters, digits, '-' and '_',
/// at most 255 bytes on the wire.
fn random_name(rng: &mut StdRng) -> String {
    const FIRST: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_";
    const REST: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";
    let n: usize = match rng.random_range(0..4) {
        0 => rng.random_range(1..=3),
        1 => rng.random_range(1..=10),
        2 => rng.random_range(10..=60),
        _ => rng.random_range(100..=127),
    };
    // Wire length 1 + sum(1 + len) <= 255: the labels share 254 - n bytes.
    let mut budget = 254 - n;
    let mut labels = Vec::new();
    for i in 0..n {
        let left = n - i - 1;
        let most = (budget - left).min(63);
        let len = if rng.random_bool(0.2) { rng.random_range(1..=most) } else { rng.random_range(1..=most.min(12)) };
        budget -= len;
        let mut l = String::new();
        l.push(char::from(FIRST[rng.random_range(0..FIRST.len())]));
        for _ in 1..len {
            l.push(char::from(REST[rng.random_range(0..REST.len())]));
        }
        labels.push(l);
    }
    labels.join(".")
}

fn random_case(rng: &mut StdRng, s: &str) -> String {
    s.chars().map(|c| if rng.random_bool(0.5) { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() }).collect()
}

/// The kernel hashes a queried name to the key user space computes for the
/// same name (`Domain::key`), whatever its case, length or depth, and a rule
/// installed for the name decides its query: both sides hash identically.
#[test]
fn kernel_and_user_hash_agree() {
    let mut rng = StdRng::seed_from_u64(0x6861_7368);
    let unicode = [
        "bücher.example",
        "例え.テスト",
        "пример.испытание",
        "Straße.example",
        "ÄÖÜ.Example",
        "δοκιμή.εδώ",
        "中文.中国",
    ];
    let mut names = Vec::new();
    for _ in 0..400 {
        let text = random_name(&mut rng);
        let d = Domain::parse(&text).unwrap_or_else(|e| panic!("generated name {text:?}: {e}"));
        names.push((random_case(&mut rng, &text), d));
    }
    for u in unicode {
        let d = Domain::parse(u).unwrap_or_else(|e| panic!("{u:?}: {e}"));
        assert!(d.as_str().contains("xn--"), "{u:?} became {d}");
        names.push((random_case(&mut rng, d.as_str()), d));
    }
    for edge in [
        one_byte_labels(127, &[]),
        ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61)].join("."),
        "x".repeat(63),
    ] {
        let d = Domain::parse(&edge).expect("edge name");
        names.push((random_case(&mut rng, &edge), d));
    }
    let labels: HashSet<usize> = names.iter().map(|(_, d)| d.labels()).collect();
    assert!(labels.contains(&1) && labels.contains(&127) && labels.len() > 50, "label counts too narrow: {labels:?}");

    let s = Spec::udp4();
    // No rule matches: the kernel's key of the whole name is user space's.
    let h = Harness::new("unrelated.invalid\n", "");
    let seed = h.rules.seed();
    let rows: Vec<Row> = names
        .iter()
        .enumerate()
        .map(|(i, (sent, d))| {
            Row::unmatched(format!("#{i} {sent}"), &s, &dnswire::query(sent, RecordType::A)).keyed(d.key(seed))
        })
        .collect();
    run_table(&h, "kernel and user keys", &rows);

    // Every name installed as a rule: each query is decided by its own rule.
    let list: Vec<&str> = names.iter().map(|(_, d)| d.as_str()).collect();
    let h = Harness::new(&list.join("\n"), "");
    let seed = h.rules.seed();
    let rows: Vec<Row> = names
        .iter()
        .enumerate()
        .map(|(i, (sent, d))| {
            Row::blocked(format!("#{i} {sent}"), &s, &dnswire::query(sent, RecordType::A), d.as_str())
                .keyed(d.key(seed))
        })
        .collect();
    run_table(&h, "names installed as rules", &rows);
}

/// Every packet a rule decides adds one to that rule's hit count, and only
/// the deciding rule's (not a less specific one that also matched).
#[test]
fn rule_hit_counts() {
    let h = Harness::new("hits.example\nother.example\n", "ok.hits.example\n");
    let s = Spec::udp4();
    let q = |name: &str| dnswire::query(name, RecordType::A);
    let mut rows = Vec::new();
    for name in ["hits.example", "a.hits.example", "B.HITS.example", "x.y.hits.example", "okx.hits.example"] {
        rows.push(Row::blocked(name, &s, &q(name), "hits.example"));
    }
    rows.push(Row::blocked(
        "c.hits.example AAAA",
        &s,
        &dnswire::query_plain("c.hits.example", RecordType::AAAA),
        "hits.example",
    ));
    rows.push(Row::blocked("t.hits.example over TCP", &s.clone().tcp(), &q("t.hits.example"), "hits.example"));
    for name in ["other.example", "www.other.example", "Other.Example"] {
        rows.push(Row::blocked(name, &Spec::udp6(), &q(name), "other.example"));
    }
    for name in ["ok.hits.example", "a.ok.hits.example", "b.ok.hits.example", "OK.hits.example"] {
        rows.push(Row::allowed(name, s.build(&q(name)), "ok.hits.example"));
    }
    for name in ["hits.example.org", "nothits.example", "example", "other.example.net", "ok.example"] {
        rows.push(Row::unmatched(name, &s, &q(name)));
    }
    let mut want = BTreeMap::<String, u32>::new();
    for r in &rows {
        if let Some(rule) = &r.rule {
            *want.entry(rule.clone()).or_default() += 1;
        }
    }
    assert_eq!(want.values().copied().collect::<Vec<_>>(), [7, 4, 3], "{want:?}");
    for round in 1..=3 {
        run_table(&h, &format!("hit counting, round {round}"), &rows);
        let got: BTreeMap<String, u32> = h
            .filter
            .rule_hits()
            .expect("rule hits")
            .into_iter()
            .map(|(k, n)| (h.rules.get(k).map_or_else(|| format!("?{k:#x}"), |r| r.domain.to_string()), n))
            .collect();
        let want: BTreeMap<String, u32> = want.iter().map(|(k, n)| (k.clone(), n * round)).collect();
        assert_eq!(got, want, "hit counts after {round} round(s)");
    }
}

/// Installing a second rule set: verdicts switch to it at once, the old
/// set's names pass, the depth mask and the filter narrow to the new set, and
/// a set hashed under another seed is refused with the active set left in force.
#[test]
fn rule_set_swap() {
    use filter_user::{
        policy::blocklist::{self, ListKind},
        policy::rules::RuleSet,
    };
    let mut h = Harness::new("old.example\nboth.example\n", "");
    let outcome = |h: &Harness, name: &str| h.run(&Spec::udp4().build(&dnswire::query(name, RecordType::A))).outcome;
    assert_eq!(outcome(&h, "www.old.example"), Counter::Nxdomain);
    assert_eq!(outcome(&h, "x.new.example"), Counter::PassNoMatch);

    let list = |text: &str, seed: u64| {
        let parsed = blocklist::parse_bytes(text.as_bytes(), "next", ListKind::Block);
        let mut set = RuleSet::new(seed);
        assert!(set.extend(&parsed.entries).is_empty());
        set
    };
    let next = list("new.example\nboth.example\na.b.c.d.example\n", h.rules.seed());
    h.filter.install(&next).expect("second install");
    for (name, want) in [
        ("www.old.example", Counter::PassNoMatch),
        ("x.new.example", Counter::Nxdomain),
        ("both.example", Counter::Nxdomain),
        ("x.a.b.c.d.example", Counter::Nxdomain),
        ("b.c.d.example", Counter::PassNoMatch),
    ] {
        assert_eq!(outcome(&h, name), want, "{name} after the swap");
    }
    assert_eq!(h.filter.settings().depth_mask, next.depth_mask(), "the depth mask narrows to the new set");
    let map = h.filter.ebpf().map(maps::layout::names::FILTER).expect("FILTER");
    let filter: aya::maps::Array<_, u64> = aya::maps::Array::try_from(map).expect("array");
    let words: Vec<u64> = filter.iter().map(|w| w.expect("read filter")).collect();
    assert_eq!(words, next.filter_bits(words.len()), "the filter narrows to the new set");

    let refused = list("old.example\n", h.rules.seed() ^ 1);
    let err = h.filter.install(&refused).expect_err("a set hashed under another seed");
    assert!(err.to_string().contains("seed"), "{err}");
    assert_eq!(outcome(&h, "x.new.example"), Counter::Nxdomain, "the active set stays in force");
    assert_eq!(outcome(&h, "www.old.example"), Counter::PassNoMatch);
}

/// Before any rule set is installed every query passes, counted as such.
#[test]
fn no_rule_set_yet() {
    let filter =
        filter_user::dataplane::Filter::load(filter_user::dataplane::LoadOptions { trace: true, ..Default::default() })
            .expect("load the XDP program");
    let r = filter.run(&Spec::udp4().build(&dnswire::query("example.com", RecordType::A))).expect("test run");
    assert_eq!(r.action, XDP_PASS);
    assert_eq!(filter.trace().expect("trace").outcome, Counter::NoRuleset as u32);
}

/// An Ethernet frame carrying `ip` as IPv6.
fn ipv6_frame(ip: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + ip.len());
    f.extend_from_slice(&SERVER_MAC);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&0x86dd_u16.to_be_bytes());
    f.extend_from_slice(ip);
    f
}

/// IPv6 frames cut short inside the fixed header or a Fragment header are
/// judged by the bytes the parser reads (the first eight of the fixed
/// header, the first four of a Fragment header): a wrong version, a next
/// header that is neither UDP nor TCP, a later fragment, say so before the
/// missing bytes do.
#[test]
fn ipv6_headers_cut_short() {
    let fixed = |version: u8, payload_len: u16, next: u8| {
        let mut h = vec![version << 4, 0, 0, 0];
        h.extend_from_slice(&payload_len.to_be_bytes());
        h.extend_from_slice(&[next, 64]);
        h.extend_from_slice(&[0xfd; 32]);
        h
    };
    let mut rows = Vec::new();
    for cut in 8..40 {
        rows.push(Row::pass(
            format!("IPv6 version 5, cut {cut} bytes into the header"),
            ipv6_frame(&fixed(5, 8, 17)[..cut]),
            Counter::BadHeader,
        ));
        rows.push(Row::pass(
            format!("IPv6 payload length 0 without hop-by-hop, cut {cut} bytes in"),
            ipv6_frame(&fixed(6, 0, 17)[..cut]),
            Counter::BadHeader,
        ));
        rows.push(Row::pass(
            format!("IPv6 carrying ICMPv6, cut {cut} bytes in"),
            ipv6_frame(&fixed(6, 8, 58)[..cut]),
            Counter::NotUdpTcp,
        ));
    }
    // A later fragment (offset 1, in 8-byte units) whose header is cut
    // after its offset field: its identification, which names the datagram,
    // is missing, and the receiver drops the frame as cut short.
    let mut frag = fixed(6, 16, 44);
    frag.extend_from_slice(&[17, 0, 0, 8, 0, 0, 0, 7]);
    for cut in 44..48 {
        rows.push(Row::pass(
            format!("IPv6 later fragment, cut {} bytes into its Fragment header", cut - 40),
            ipv6_frame(&frag[..cut]),
            Counter::TruncatedHeader,
        ));
    }
    let h = Harness::new("example.com\n", "");
    run_table(&h, "IPv6 headers cut short", &rows);
}
