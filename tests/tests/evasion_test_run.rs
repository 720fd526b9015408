//! Evasions tried as an attacker would (issue "hold against clients that
//! try to slip past"), through `BPF_PROG_TEST_RUN` on the loaded program:
//! IP fragments, encapsulations (PPPoE, stacked VLAN tags, IPv6 extension
//! headers), and the "cannot judge" policy. Every construction is tried
//! both ways: with a blocked name it is refused, and with an allowed name
//! the same construction passes (no collateral blocking).

use hickory_proto::{op::ResponseCode, rr::RecordType};
use maps::{Action, Counter, counters::CounterKind};
use namewall_tests::{
    dnswire,
    harness::Harness,
    netns::{NetNs, in_namespace},
    packet::{self, Spec, Vlan},
    tls::{self, Flow, HelloKind},
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

/// One packet and what the program must do with it.
struct Row {
    desc: String,
    packet: Vec<u8>,
    action: u32,
    outcome: Counter,
    extras: Vec<Counter>,
}

fn row(desc: impl Into<String>, packet: Vec<u8>, action: u32, outcome: Counter) -> Row {
    Row { desc: desc.into(), packet, action, outcome, extras: Vec::new() }
}

impl Row {
    /// With the extra counters a drop by the "cannot judge" policy adds.
    #[must_use]
    fn unjudged(mut self, drop: bool) -> Self {
        if drop {
            self.action = XDP_DROP;
            self.extras.push(Counter::UnjudgedDrop);
        } else {
            self.action = XDP_PASS;
        }
        self
    }
}

/// Runs the rows in order (fragment rows depend on the ones before them)
/// and fails once, listing every failing row.
fn run(h: &Harness, table: &str, rows: &[Row]) {
    let mut failures = Vec::new();
    for r in rows {
        let o = h.run(&r.packet);
        let mut errs = Vec::new();
        if let Err(e) = o.one_outcome() {
            errs.push(e);
        }
        if (o.action, o.outcome) != (r.action, r.outcome) {
            errs.push(format!("{} {}, want {} {}", o.action_name(), o.outcome.name(), r.action, r.outcome.name()));
        }
        for &c in Counter::ALL.iter().filter(|c| c.kind() == CounterKind::Extra) {
            let want = u64::from(r.extras.contains(&c));
            if o.delta[c as usize] != want {
                errs.push(format!("extra {} moved by {}, want {want}", c.name(), o.delta[c as usize]));
            }
        }
        if r.action == XDP_PASS && o.output != r.packet {
            errs.push("passed, but changed".into());
        }
        if !errs.is_empty() {
            failures.push(format!("{}: {}", r.desc, errs.join("; ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{table}: {} of {} rows failed:\n  {}",
        failures.len(),
        rows.len(),
        failures.join("\n  ")
    );
}

const BLOCKED: &str = "www.blocked.example";
const ALLOWED: &str = "www.allowed.example";

fn harness(unjudged_drop: bool) -> Harness {
    Harness::with("blocked.example\n", "", Action::Nxdomain, unjudged_drop)
}

/// A query padded (EDNS padding) to about 600 bytes, so its datagram can be
/// cut into fragments after the question.
fn padded(name: &str) -> Vec<u8> {
    dnswire::with_padding(&dnswire::query(name, RecordType::A), 560)
}

/// DNS queries in IP fragments, IPv4 and IPv6, under both policies.
#[test]
fn fragmented_dns_queries() {
    for drop in [true, false] {
        let h = harness(drop);
        let mut rows = Vec::new();
        for (fam, spec) in [("IPv4", Spec::udp4()), ("IPv6", Spec::udp6())] {
            let mut id = if drop { 100 } else { 200 };
            let mut frags = |name: &str, cuts: &[usize]| {
                id += 1;
                let frame = spec.build(&padded(name));
                if fam == "IPv4" {
                    packet::fragments_v4(&frame, 14, id as u16, cuts)
                } else {
                    packet::fragments_v6(&frame, 14, id, cuts)
                }
            };
            // The question whole in the first fragment: judged there.
            let f = frags(BLOCKED, &[256]);
            rows.push(row(
                format!("{fam}: blocked, question in the first fragment"),
                f[0].clone(),
                XDP_DROP,
                Counter::DropFragmented,
            ));
            rows.push(row(format!("{fam}: ... its later fragment"), f[1].clone(), XDP_DROP, Counter::FragmentDropped));
            let f = frags(ALLOWED, &[256]);
            rows.push(row(
                format!("{fam}: allowed, question in the first fragment"),
                f[0].clone(),
                XDP_PASS,
                Counter::PassNoMatch,
            ));
            rows.push(row(format!("{fam}: ... its later fragment"), f[1].clone(), XDP_PASS, Counter::IpFragment));
            // The name cut by the first fragment's end (8 bytes of UDP, 12 of
            // DNS header, 4 of the name): cannot be judged, for any name.
            for (what, name) in [("blocked", BLOCKED), ("allowed", ALLOWED)] {
                let f = frags(name, &[24, 256]);
                rows.push(
                    row(
                        format!("{fam}: {what}, name cut by the first fragment"),
                        f[0].clone(),
                        XDP_PASS,
                        Counter::DnsFragment,
                    )
                    .unjudged(drop),
                );
                let (action, later) =
                    if drop { (XDP_DROP, Counter::FragmentDropped) } else { (XDP_PASS, Counter::IpFragment) };
                rows.push(row(format!("{fam}: {what}, ... second fragment"), f[1].clone(), action, later));
                rows.push(row(format!("{fam}: {what}, ... third fragment"), f[2].clone(), action, later));
            }
            // Later fragments sent first (the receiver reassembles in any
            // order): they pass, and the datagram stays incomplete without
            // its dropped first fragment.
            let f = frags(BLOCKED, &[24]);
            rows.push(row(
                format!("{fam}: blocked, later fragment sent first"),
                f[1].clone(),
                XDP_PASS,
                Counter::IpFragment,
            ));
            rows.push(
                row(format!("{fam}: blocked, ... then its first"), f[0].clone(), XDP_PASS, Counter::DnsFragment)
                    .unjudged(drop),
            );
        }
        // An atomic fragment (offset 0, no more) is a whole datagram: judged
        // and answered as one.
        let atomic = packet::fragments_v6(&Spec::udp6().build(&dnswire::query(BLOCKED, RecordType::A)), 14, 7, &[]);
        rows.push(row("IPv6 atomic fragment, blocked", atomic[0].clone(), XDP_TX, Counter::Nxdomain));
        let atomic = packet::fragments_v6(&Spec::udp6().build(&dnswire::query(ALLOWED, RecordType::A)), 14, 8, &[]);
        rows.push(row("IPv6 atomic fragment, allowed", atomic[0].clone(), XDP_PASS, Counter::PassNoMatch));
        // Fragments of other UDP traffic are none of the filter's business.
        let other = packet::fragments_v4(&Spec::udp4().dport(4000).build(&[7; 600]), 14, 300, &[256]);
        rows.push(row("UDP to port 4000, first fragment", other[0].clone(), XDP_PASS, Counter::NotDnsPort));
        rows.push(row("UDP to port 4000, later fragment", other[1].clone(), XDP_PASS, Counter::IpFragment));
        run(&h, if drop { "fragmented DNS, --unjudged drop" } else { "fragmented DNS, --unjudged pass" }, &rows);
    }
}

/// TCP segments in IP fragments: a ClientHello or a DNS query split by
/// fragmentation is not judged; established traffic passes.
#[test]
fn fragmented_tcp_segments() {
    for drop in [true, false] {
        let h = harness(drop);
        let hello = tls::client_hello(Some(BLOCKED), HelloKind::Small);
        let tls_spec = Spec::udp4().tcp().dport(443);
        let mut rows = Vec::new();
        let later = |desc: &str, f: &[u8]| {
            let (action, c) = if drop { (XDP_DROP, Counter::FragmentDropped) } else { (XDP_PASS, Counter::IpFragment) };
            row(desc, f.to_vec(), action, c)
        };
        let f = packet::fragments_v4(&tls_spec.build(&hello), 14, 400, &[64]);
        rows.push(row("ClientHello, first fragment", f[0].clone(), XDP_PASS, Counter::TcpFragment).unjudged(drop));
        rows.push(later("ClientHello, later fragment", &f[1]));
        // A first fragment holding the TCP header and one byte: too short
        // to tell what the segment starts.
        let f = packet::fragments_v4(&tls_spec.build(&hello), 14, 401, &[24]);
        rows.push(
            row("ClientHello, 4 payload bytes in the first fragment", f[0].clone(), XDP_PASS, Counter::TcpFragment)
                .unjudged(drop),
        );
        rows.push(later("... its later fragment", &f[1]));
        // Too short for the TCP header itself (RFC 1858).
        let f = packet::fragments_v4(&tls_spec.build(&hello), 14, 402, &[8]);
        rows.push(
            row("tiny first fragment (8 bytes of TCP header)", f[0].clone(), XDP_PASS, Counter::TinyFragment)
                .unjudged(drop),
        );
        rows.push(later("... its later fragment", &f[1]));
        let f = packet::fragments_v6(&Spec::udp6().tcp().dport(443).build(&hello), 14, 403, &[64]);
        rows.push(row("IPv6 ClientHello, first fragment", f[0].clone(), XDP_PASS, Counter::TcpFragment).unjudged(drop));
        let dns = packet::tcp_dns(&dnswire::query(ALLOWED, RecordType::A));
        let f = packet::fragments_v4(&Spec::udp4().tcp().build(&dns), 14, 404, &[48]);
        rows.push(row("DNS over TCP, first fragment", f[0].clone(), XDP_PASS, Counter::TcpFragment).unjudged(drop));
        // Established traffic of a flow not tracked: passes, fragments and all.
        let data = [b"HTTP/1.1 200 OK\r\n".as_slice(), &[b'x'; 400]].concat();
        let f = packet::fragments_v4(&Spec::udp4().tcp().dport(8080).build(&data), 14, 405, &[64]);
        rows.push(row("HTTP data, first fragment", f[0].clone(), XDP_PASS, Counter::TcpOther));
        rows.push(row("HTTP data, later fragment", f[1].clone(), XDP_PASS, Counter::IpFragment));
        run(&h, if drop { "fragmented TCP, --unjudged drop" } else { "fragmented TCP, --unjudged pass" }, &rows);
    }
}

/// PPPoE session frames, stacked VLAN tags and IPv6 extension headers.
#[test]
fn encapsulations() {
    let h = harness(true);
    let q = |name: &str| dnswire::query(name, RecordType::A);
    let mut rows = Vec::new();
    for (fam, spec) in [("IPv4", Spec::udp4()), ("IPv6", Spec::udp6())] {
        rows.push(row(
            format!("PPPoE {fam}: blocked"),
            packet::pppoe(&spec.build(&q(BLOCKED)), 0x1234),
            XDP_TX,
            Counter::Nxdomain,
        ));
        rows.push(row(
            format!("PPPoE {fam}: allowed"),
            packet::pppoe(&spec.build(&q(ALLOWED)), 0x1234),
            XDP_PASS,
            Counter::PassNoMatch,
        ));
        let tcp = spec.clone().tcp();
        rows.push(row(
            format!("PPPoE {fam} TCP: blocked, reset"),
            packet::pppoe(&tcp.build(&packet::tcp_dns(&q(BLOCKED))), 7),
            XDP_TX,
            Counter::ResetTcp,
        ));
    }
    let tagged = packet::pppoe(&Spec::udp4().build(&q(BLOCKED)), 9);
    rows.push(row(
        "PPPoE in two VLAN tags: blocked",
        packet::push_vlan(&packet::push_vlan(&tagged, 0x8100, 10), 0x88a8, 20),
        XDP_TX,
        Counter::Nxdomain,
    ));
    let mut lcp = packet::pppoe(&Spec::udp4().build(&q(BLOCKED)), 9);
    lcp[20..22].copy_from_slice(&0xc021u16.to_be_bytes());
    rows.push(row("PPPoE LCP", lcp, XDP_PASS, Counter::NotIp));
    let mut discovery = packet::pppoe(&Spec::udp4().build(&q(BLOCKED)), 9);
    discovery[12..14].copy_from_slice(&0x8863u16.to_be_bytes());
    rows.push(row("PPPoE discovery", discovery, XDP_PASS, Counter::NotIp));
    let double = Spec::udp4().vlan(Vlan::Double(1, 2));
    for (tags, name) in [(3, BLOCKED), (4, BLOCKED), (4, ALLOWED)] {
        let mut f = double.build(&q(name));
        for t in 2..tags {
            f = packet::push_vlan(&f, 0x88a8, 100 + t);
        }
        let (action, c) = if name == BLOCKED { (XDP_TX, Counter::Nxdomain) } else { (XDP_PASS, Counter::PassNoMatch) };
        rows.push(row(format!("{tags} VLAN tags: {name}"), f, action, c));
    }
    let mut five = double.build(&q(ALLOWED));
    for t in 0..3 {
        five = packet::push_vlan(&five, 0x88a8, 200 + t);
    }
    rows.push(row("5 VLAN tags (an allowed name, unseen)", five, XDP_PASS, Counter::VlanTooDeep).unjudged(true));
    rows.push(
        row("9 IPv6 extension headers", packet::udp6_with_dest_opts(9, &q(ALLOWED)), XDP_PASS, Counter::Ipv6ExtTooDeep)
            .unjudged(true),
    );
    rows.push(row(
        "8 IPv6 extension headers: blocked",
        packet::udp6_with_dest_opts(8, &q(BLOCKED)),
        XDP_TX,
        Counter::Nxdomain,
    ));
    run(&h, "encapsulations", &rows);
}

/// A blocked query inside PPPoE is answered inside PPPoE: the session
/// header kept, its length set to the answer's, and the answer a resolver's
/// client accepts.
#[test]
fn pppoe_answers() {
    let h = harness(true);
    for spec in [Spec::udp4(), Spec::udp6()] {
        let frame = packet::pppoe(&spec.build(&dnswire::query(BLOCKED, RecordType::A)), 0x2a2a);
        let o = h.run(&frame);
        assert_eq!((o.action, o.outcome), (XDP_TX, Counter::Nxdomain));
        let out = &o.output;
        assert_eq!(&out[12..18], &[0x88, 0x64, 0x11, 0, 0x2a, 0x2a], "PPPoE session header kept");
        let len = usize::from(u16::from_be_bytes([out[18], out[19]]));
        assert_eq!(len, out.len() - 20, "PPPoE length covers the PPP protocol and the IP packet");
        // The same frame without PPPoE: plain Ethernet, checked as an answer.
        let ethertype: [u8; 2] = if out[20..22] == [0, 0x57] { [0x86, 0xdd] } else { [0x08, 0x00] };
        let plain = [&out[..12], &ethertype, &out[22..]].concat();
        let ans = dnswire::parse_answer(&plain).expect("an answer inside PPPoE");
        assert_eq!(ans.message.response_code(), ResponseCode::NXDomain);
    }
}

/// A blocked query behind three and four VLAN tags is answered behind the
/// same tags: the tag stack kept byte for byte, and inside it an answer a
/// resolver's client accepts.
#[test]
fn deep_vlan_answers() {
    let h = harness(true);
    for spec in [Spec::udp4(), Spec::udp6()] {
        for tags in [3usize, 4] {
            let mut frame = spec.clone().vlan(Vlan::Double(1, 2)).build(&dnswire::query(BLOCKED, RecordType::AAAA));
            for t in 2..tags {
                frame = packet::push_vlan(&frame, 0x88a8, 300 + t as u16);
            }
            let o = h.run(&frame);
            assert_eq!((o.action, o.outcome), (XDP_TX, Counter::Nxdomain), "{tags} tags");
            let (out, stack) = (&o.output, 12..12 + 4 * tags);
            assert_eq!(&out[stack.clone()], &frame[stack.clone()], "{tags} tags kept");
            assert_eq!(&out[..6], &frame[6..12], "{tags} tags: back to the sender's MAC");
            let plain = [&out[..12], &out[stack.end..]].concat();
            let ans = dnswire::parse_answer(&plain).expect("an answer inside the tags");
            assert_eq!(ans.message.response_code(), ResponseCode::NXDomain, "{tags} tags");
        }
    }
}

/// Urgent data in a ClientHello: the receiver removes the urgent byte, so
/// a byte inserted into the name hides it from a parser that reads the
/// segment as sent. Not judged; the same segment without URG is.
#[test]
fn urgent_data_in_a_client_hello() {
    let urgent = |name: &str, urg: bool, sport: u16| {
        // A flow of its own per row: a blocked one stays blocked.
        let spec = Spec { sport, ..Spec::udp4().tcp().dport(443) };
        let hello = tls::client_hello(Some(name), HelloKind::Small);
        let at = tls::find(&hello, name.as_bytes()).expect("the name in the ClientHello");
        // The urgent byte inserted in the middle of the name.
        let mut stream = hello.clone();
        if urg {
            stream.insert(at + 3, b'!');
        }
        let mut f = spec.build(&stream);
        if urg {
            f[14 + 20 + 13] |= 0x20;
            f[14 + 20 + 18..14 + 20 + 20].copy_from_slice(&((at + 3) as u16).to_be_bytes());
            packet::fix_tcp_checksum(&mut f, 14);
        }
        f
    };
    // A segment without payload signalling urgent data ahead: the receiver
    // takes that byte out of a later segment, URG flag or not.
    let urgent_ack = |sport: u16| {
        let mut f = Spec { sport, ..Spec::udp4().tcp().dport(443) }.build_ack();
        f[14 + 20 + 13] |= 0x20;
        f[14 + 20 + 18..14 + 20 + 20].copy_from_slice(&40u16.to_be_bytes());
        packet::fix_tcp_checksum(&mut f, 14);
        f
    };
    for drop in [true, false] {
        let h = harness(drop);
        let rows = [
            row("URG without payload, pointer ahead", urgent_ack(41005), XDP_PASS, Counter::TcpNoPayload),
            row(
                "... then a ClientHello without URG, blocked name",
                urgent(BLOCKED, false, 41005),
                XDP_PASS,
                Counter::TcpUrgent,
            )
            .unjudged(drop),
            row("URG without payload on another flow", urgent_ack(41006), XDP_PASS, Counter::TcpNoPayload),
            row(
                "... then ordinary data passes",
                Spec { sport: 41006, ..Spec::udp4().tcp().dport(443) }.build(b"GET / HTTP/1.1\r\n\r\n"),
                XDP_PASS,
                Counter::TcpOther,
            ),
            row("URG, a byte inside a blocked name", urgent(BLOCKED, true, 41001), XDP_PASS, Counter::TcpUrgent)
                .unjudged(drop),
            row("URG, a byte inside an allowed name", urgent(ALLOWED, true, 41002), XDP_PASS, Counter::TcpUrgent)
                .unjudged(drop),
            row("no URG, a blocked name", urgent(BLOCKED, false, 41003), XDP_TX, Counter::TlsReset),
            row("no URG, an allowed name", urgent(ALLOWED, false, 41004), XDP_PASS, Counter::TlsPassNoMatch),
        ];
        run(&h, if drop { "urgent data, --unjudged drop" } else { "urgent data, --unjudged pass" }, &rows);
    }
}

/// The daemon's default policy is to drop what cannot be judged; the
/// "pass" policy keeps the old fail-open behaviour. A two-question query
/// cannot be judged whole.
#[test]
fn multi_question_queries() {
    let q = dnswire::query(ALLOWED, RecordType::A);
    let mut two = q.clone();
    two[5] = 2;
    two.extend_from_slice(&q[12..]);
    for drop in [true, false] {
        let h = harness(drop);
        run(
            &h,
            "two questions",
            &[row("two questions", Spec::udp4().build(&two), XDP_PASS, Counter::DnsMultiQuestion).unjudged(drop)],
        );
    }
}

/// Decoys the server never reads: TTL 1 (a router drops it after the
/// filter), or no ACK flag (Linux discards it). A ClientHello for an
/// allowed name sent so, then the real one for a blocked name: the decoy
/// decides nothing and changes no flow; the real one is judged.
#[test]
fn ttl_decoys_decide_nothing() {
    let frame = |name: &str, ttl: u8, sport: u16| {
        let spec = Spec { sport, ..Spec::udp4().tcp().dport(443) };
        let mut f = spec.build(&tls::client_hello(Some(name), HelloKind::Small));
        packet::set_ipv4_ttl(&mut f, ttl);
        f
    };
    // PSH only: a data segment without ACK.
    let no_ack = |mut f: Vec<u8>| {
        f[14 + 20 + 13] = 0x08;
        f
    };
    for drop in [true, false] {
        let h = harness(drop);
        let mut v6 = Spec::udp6().tcp().dport(443).build(&tls::client_hello(Some(ALLOWED), HelloKind::Small));
        v6[14 + 7] = 1;
        let rows = [
            row("TTL 1 decoy, allowed name", frame(ALLOWED, 1, 42001), XDP_PASS, Counter::TcpTtlExpiring)
                .unjudged(drop),
            row("... then the real one, blocked", frame(BLOCKED, 64, 42001), XDP_TX, Counter::TlsReset),
            row("TTL 0, blocked name", frame(BLOCKED, 0, 42002), XDP_PASS, Counter::TcpTtlExpiring).unjudged(drop),
            row("hop limit 1, IPv6", v6, XDP_PASS, Counter::TcpTtlExpiring).unjudged(drop),
            row("TTL 2, allowed name", frame(ALLOWED, 2, 42003), XDP_PASS, Counter::TlsPassNoMatch),
            row(
                "no ACK flag (Linux discards it), allowed name",
                no_ack(frame(ALLOWED, 64, 42004)),
                XDP_PASS,
                Counter::TcpNoAck,
            )
            .unjudged(drop),
            row("... then the real one, blocked", frame(BLOCKED, 64, 42004), XDP_TX, Counter::TlsReset),
        ];
        run(&h, if drop { "TTL decoys, --unjudged drop" } else { "TTL decoys, --unjudged pass" }, &rows);
    }
}

/// Flows are kept apart by the interface they come in on: a flow blocked on
/// one interface does not block the same addresses and ports on another
/// (keyed without the interface, a ClientHello sent on one link could
/// freeze a connection on another).
#[test]
fn flows_are_kept_apart_by_interface() {
    let h = harness(true);
    let runner = h.filter.runner().expect("runner");
    let ns = NetNs::new("ifx");
    ns.run(&["ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
    ns.run(&["ip", "link", "set", "d0", "up"]);
    let hello = tls::client_hello(Some(BLOCKED), HelloKind::Small);
    let flow = Flow::v4().sport(43001);
    let data = b"\x17\x03\x03\x00\x05hello";
    let actions = in_namespace(&ns, || {
        // SAFETY: a NUL-terminated name.
        let d0 = unsafe { libc::if_nametoindex(c"d0".as_ptr()) };
        assert_ne!(d0, 0, "d0 in the namespace");
        let run = |p: &[u8], ifindex: u32| runner.run_on(p, ifindex).expect("test run").action;
        [
            // Blocked on d0: reset.
            run(&flow.segment(0, &hello), d0),
            // That flow's next data on d0: dropped.
            run(&flow.segment(hello.len(), data), d0),
            // The same addresses and ports on lo: another flow, passed.
            run(&flow.segment(hello.len(), data), 1),
            // And d0's flow is still blocked.
            run(&flow.segment(hello.len(), data), d0),
        ]
    });
    assert_eq!(actions, [XDP_TX, XDP_DROP, XDP_PASS, XDP_DROP]);
}

/// Where the TCP header starts in [`Flow::v4`] and [`Flow::v6`] frames.
const TCP_AT_V4: usize = 14 + 20;
const TCP_AT_V6: usize = 14 + 40;

/// `frame` with its TCP checksum made wrong.
fn bad_checksum(mut frame: Vec<u8>, tcp_at: usize) -> Vec<u8> {
    frame[tcp_at + 16] ^= 0x5a;
    frame
}

/// `frame` with its TCP checksum field in the form a sender offloading
/// its checksum leaves: the pseudo-header's sum alone.
fn offload_form(mut frame: Vec<u8>, tcp_at: usize) -> Vec<u8> {
    use maps::parse::checksum::{offloaded_form, pseudo_header};
    let tcp_len = u32::try_from(frame.len() - tcp_at).expect("a segment");
    let pseudo = if tcp_at == TCP_AT_V6 {
        let a: [u8; 16] = frame[14 + 8..14 + 24].try_into().expect("16 bytes");
        let b: [u8; 16] = frame[14 + 24..14 + 40].try_into().expect("16 bytes");
        pseudo_header(&a, &b, 6, tcp_len)
    } else {
        let a: [u8; 4] = frame[14 + 12..14 + 16].try_into().expect("4 bytes");
        let b: [u8; 4] = frame[14 + 16..14 + 20].try_into().expect("4 bytes");
        pseudo_header(&a, &b, 6, tcp_len)
    };
    frame[tcp_at + 16..tcp_at + 18].copy_from_slice(&offloaded_form(pseudo).to_be_bytes());
    frame
}

/// Decoys with a wrong TCP checksum, which the receiver discards (Linux:
/// `tcp_checksum_complete`): the rest of a split ClientHello sent first
/// with another name and a bad checksum, then for real. The decoy decides
/// nothing and changes no flow, whichever of the two names it carries; a
/// decoy first segment or SYN starts no tracking; a payload spread over
/// the buffers of a multi-buffer frame is summed to its last byte; a field
/// in the offload form is wrong unless the daemon accepts that form (on
/// virtual interfaces). IPv4 and IPv6, under both policies.
#[test]
#[expect(clippy::too_many_lines, reason = "one table of rows, both families")]
fn checksum_decoys_decide_nothing() {
    let blocked = tls::client_hello(Some(BLOCKED), HelloKind::Small);
    let allowed = tls::replace_server_name(&blocked, ALLOWED.as_bytes());
    // Cut inside the name, after the "www." both names start with: the
    // first halves are the same bytes, the rests name one or the other.
    let cut = tls::find(&blocked, BLOCKED.as_bytes()).expect("the name") + 4;
    assert_eq!((blocked.len(), &blocked[..cut]), (allowed.len(), &allowed[..cut]));
    // First data that is not TLS, long enough for a multi-buffer frame.
    let long: Vec<u8> = b"GET / HTTP/1.1\r\n".iter().copied().cycle().take(6001).collect();
    for drop in [true, false] {
        let h = harness(drop);
        let mut rows = Vec::new();
        for (fam, base, at, port) in [("IPv4", Flow::v4(), TCP_AT_V4, 44000), ("IPv6", Flow::v6(), TCP_AT_V6, 45000)] {
            let flow = |p: u16| base.clone().sport(port + p);
            let bad = |f: Vec<u8>| bad_checksum(f, at);
            let unjudged = |desc: &str, f: Vec<u8>| {
                row(format!("{fam}: {desc}"), f, XDP_PASS, Counter::TcpBadChecksum).unjudged(drop)
            };
            let judged = |desc: &str, f: Vec<u8>, action: u32, outcome: Counter| {
                row(format!("{fam}: {desc}"), f, action, outcome)
            };
            let decided = flow(1);
            rows.extend([
                judged("SYN", decided.syn(), XDP_PASS, Counter::TcpSyn),
                judged("first half", decided.segment(0, &blocked[..cut]), XDP_PASS, Counter::TlsPending),
                unjudged("decoy rest naming an allowed name, bad checksum", bad(decided.segment(cut, &allowed[cut..]))),
                judged(
                    "... then the rest naming the blocked name",
                    decided.segment(cut, &blocked[cut..]),
                    XDP_TX,
                    Counter::TlsReset,
                ),
            ]);
            let unseen = flow(2);
            rows.extend([
                judged("first half (SYN unseen)", unseen.segment(0, &blocked[..cut]), XDP_PASS, Counter::TlsPending),
                unjudged("decoy rest naming the blocked name, bad checksum", bad(unseen.segment(cut, &blocked[cut..]))),
                judged(
                    "... then the rest naming an allowed name",
                    unseen.segment(cut, &allowed[cut..]),
                    XDP_PASS,
                    Counter::TlsPassNoMatch,
                ),
            ]);
            let good = flow(3);
            rows.extend([
                judged("good checksums: SYN", good.syn(), XDP_PASS, Counter::TcpSyn),
                judged("good checksums: first half", good.segment(0, &blocked[..cut]), XDP_PASS, Counter::TlsPending),
                judged(
                    "good checksums: the rest, blocked",
                    good.segment(cut, &blocked[cut..]),
                    XDP_TX,
                    Counter::TlsReset,
                ),
            ]);
            let no_syn = flow(4);
            rows.extend([
                // A whole ClientHello on a flow in neither table leaves no
                // state: judged like any, unsummed (a decoy decides nothing).
                judged(
                    "whole ClientHello, untracked flow, allowed name, bad checksum: judged, nothing kept",
                    bad(no_syn.segment(0, &allowed)),
                    XDP_PASS,
                    Counter::TlsPassNoMatch,
                ),
                unjudged("decoy first half, bad checksum", bad(no_syn.segment(0, &blocked[..cut]))),
                judged(
                    "... left no state: the rest alone is untracked data",
                    no_syn.segment(cut, &blocked[cut..]),
                    XDP_PASS,
                    Counter::TcpOther,
                ),
            ]);
            // A decoy SYN with another initial sequence number: tracked,
            // it would put the real stream out of its window.
            let syn_decoy = flow(5);
            let decoy_syn = bad(syn_decoy.clone().isns(0x5000_0000, 0x2000_0000).syn());
            rows.extend([
                unjudged("decoy SYN with another ISN, bad checksum", decoy_syn),
                judged(
                    "... tracked nothing: the real first half",
                    syn_decoy.segment(0, &blocked[..cut]),
                    XDP_PASS,
                    Counter::TlsPending,
                ),
                judged("... and its rest", syn_decoy.segment(cut, &blocked[cut..]), XDP_TX, Counter::TlsReset),
            ]);
            let long_flow = flow(6);
            let mut flipped_tail = long_flow.segment(0, &long);
            *flipped_tail.last_mut().expect("a byte") ^= 1;
            rows.extend([
                judged("SYN before 6001 bytes of data", long_flow.syn(), XDP_PASS, Counter::TcpSyn),
                unjudged("6001 bytes of first data, bad checksum", bad(long_flow.segment(0, &long))),
                unjudged("6001 bytes of first data, its last byte changed", flipped_tail),
                judged(
                    "6001 bytes of first data, good",
                    long_flow.segment(0, &long),
                    XDP_PASS,
                    Counter::TlsNotClientHello,
                ),
            ]);
            let offloaded = flow(7);
            rows.push(unjudged(
                "first half, checksum in the offload form",
                offload_form(offloaded.segment(0, &blocked[..cut]), at),
            ));
        }
        let table = if drop { "checksum decoys, --unjudged drop" } else { "checksum decoys, --unjudged pass" };
        run(&h, table, &rows);
        // Per family, the three flows blocked and nothing else: no decoy
        // left an entry.
        assert_eq!(h.filter.flow_count().expect("flows"), 6, "{table}");
        assert_eq!(h.filter.new_flow_count().expect("new flows"), 0, "{table}");
    }
}

/// Where the daemon accepts the offload form (decided virtual interface), decided
/// split ClientHello whose segments carry it is judged as usual, and decided
/// wrong checksum in another form is still decided decoy.
#[test]
fn offload_form_accepted_on_virtual_interfaces() {
    let blocked = tls::client_hello(Some(BLOCKED), HelloKind::Small);
    let cut = tls::find(&blocked, BLOCKED.as_bytes()).expect("the name") + 4;
    let mut h = harness(true);
    h.filter.accept_offloaded_checksums(true).expect("settings");
    let mut rows = Vec::new();
    for (fam, base, at) in [("IPv4", Flow::v4().sport(46001), TCP_AT_V4), ("IPv6", Flow::v6().sport(46002), TCP_AT_V6)]
    {
        let decoy = base.clone().sport(46003);
        rows.extend([
            row(format!("{fam}: SYN, offload form"), offload_form(base.syn(), at), XDP_PASS, Counter::TcpSyn),
            row(
                format!("{fam}: first half, offload form"),
                offload_form(base.segment(0, &blocked[..cut]), at),
                XDP_PASS,
                Counter::TlsPending,
            ),
            row(
                format!("{fam}: the rest, offload form"),
                offload_form(base.segment(cut, &blocked[cut..]), at),
                XDP_TX,
                Counter::TlsReset,
            ),
            row(
                format!("{fam}: another wrong checksum (a first half, which would leave state)"),
                bad_checksum(decoy.segment(0, &blocked[..cut]), at),
                XDP_DROP,
                Counter::TcpBadChecksum,
            )
            .unjudged(true),
        ]);
    }
    run(&h, "offload form accepted", &rows);
}
