//! `namewall replay` end to end: captures are written here with pcap-file,
//! holding real DNS queries (hickory-proto) in real frames (etherparse), and
//! replayed by the real binary, which loads the XDP program: run as root.
//!
//! Every test uses the same lists (`BLOCKLIST`, `ALLOWLIST`), so a name's
//! fate can be read off them: `ads.example` and below answered NXDOMAIN
//! (the default action) except `good.ads.example`, allowed;
//! `tracker.example` REFUSED; `dropme.example` dropped; names below
//! `sub.example` (but not `sub.example` itself) NXDOMAIN.

use std::{
    borrow::Cow,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use etherparse::{LinuxSllPacketType, PacketBuilder};
use hickory_proto::{
    op::{Message, MessageType, OpCode, Query},
    rr::{Name, RecordType},
};
use pcap_file::{
    DataLink, Endianness, TsResolution,
    pcap::{PcapHeader, PcapPacket, PcapWriter},
    pcapng::{
        Block, PcapNgWriter, RawBlock,
        blocks::{
            enhanced_packet::EnhancedPacketBlock,
            interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
            interface_statistics::InterfaceStatisticsBlock,
            section_header::SectionHeaderBlock,
            simple_packet::SimplePacketBlock,
        },
    },
};
use serde_json::{Value, json};

const BLOCKLIST: &str = "# ads and trackers\n\
    ads.example\n\
    ||tracker.example^$dnsrewrite=REFUSED\n\
    ||dropme.example^$action=drop\n\
    *.sub.example\n";
const ALLOWLIST: &str = "good.ads.example\n";

/// Capture timestamps start here (2023-11-14).
const T0: u64 = 1_700_000_000;

/// `T0 + s` seconds as a float, as replay reports times.
fn epoch(s: u64) -> f64 {
    f64::from(u32::try_from(T0 + s).expect("a time before 2106"))
}

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const CLIENT_V4: [u8; 4] = [10, 1, 0, 2];
const SERVER_V4: [u8; 4] = [10, 2, 0, 2];
const CLIENT_V6: [u8; 16] = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const SERVER_V6: [u8; 16] = [0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

fn question(name: &str, qtype: RecordType) -> Query {
    Query::query(Name::from_ascii(name).expect("test name"), qtype)
}

/// A query as a stub resolver sends it (RD set).
fn query(name: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(0x4242).set_message_type(MessageType::Query).set_op_code(OpCode::Query).set_recursion_desired(true);
    m.add_query(question(name, qtype));
    m.to_vec().expect("encode query")
}

/// A response (QR set) echoing the question, no answers.
fn response(name: &str) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(0x4242).set_message_type(MessageType::Response).set_op_code(OpCode::Query).set_recursion_available(true);
    m.add_query(question(name, RecordType::A));
    m.to_vec().expect("encode response")
}

/// Network and transport of a test packet.
#[derive(Clone, Copy, Debug)]
enum Net {
    Udp4,
    Udp6,
    /// A PSH/ACK segment whose payload is the message with its two-byte length (RFC 1035 §4.2.2).
    Tcp4,
}

/// An IP packet (no link-layer header) to `dport` carrying `payload`.
fn ip(net: Net, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match net {
        Net::Udp4 => PacketBuilder::ipv4(CLIENT_V4, SERVER_V4, 64).udp(40000, dport).write(&mut out, payload),
        Net::Udp6 => PacketBuilder::ipv6(CLIENT_V6, SERVER_V6, 64).udp(40000, dport).write(&mut out, payload),
        Net::Tcp4 => PacketBuilder::ipv4(CLIENT_V4, SERVER_V4, 64)
            .tcp(40000, dport, 1000, 64240)
            .psh()
            .ack(2000)
            .write(&mut out, &tcp_dns(payload)),
    }
    .expect("build packet");
    out
}

/// The same packet as an Ethernet II frame.
fn ethernet(net: Net, dport: u16, payload: &[u8]) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC);
    let mut out = Vec::new();
    match net {
        Net::Udp4 => eth.ipv4(CLIENT_V4, SERVER_V4, 64).udp(40000, dport).write(&mut out, payload),
        Net::Udp6 => eth.ipv6(CLIENT_V6, SERVER_V6, 64).udp(40000, dport).write(&mut out, payload),
        Net::Tcp4 => eth
            .ipv4(CLIENT_V4, SERVER_V4, 64)
            .tcp(40000, dport, 1000, 64240)
            .psh()
            .ack(2000)
            .write(&mut out, &tcp_dns(payload)),
    }
    .expect("build frame");
    out
}

fn tcp_dns(message: &[u8]) -> Vec<u8> {
    let mut v = u16::try_from(message.len()).expect("short message").to_be_bytes().to_vec();
    v.extend_from_slice(message);
    v
}

/// An ARP request frame: not IP at all.
fn arp() -> Vec<u8> {
    let mut v = [[0xff; 6], CLIENT_MAC].concat();
    v.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    v.extend_from_slice(&CLIENT_MAC);
    v.extend_from_slice(&CLIENT_V4);
    v.extend_from_slice(&[0; 6]);
    v.extend_from_slice(&SERVER_V4);
    v
}

/// A UDP/IPv4 query in a Linux cooked capture (v1) frame, as `tcpdump -i any` writes it.
fn sll(packet_type: LinuxSllPacketType, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::linux_sll(packet_type, 6, [0x02, 0, 0, 0, 0, 0x01, 0, 0])
        .ipv4(CLIENT_V4, SERVER_V4, 64)
        .udp(40000, 53)
        .write(&mut out, payload)
        .expect("build sll frame");
    out
}

/// A VLAN-tagged packet in a Linux cooked capture (v1) frame: libpcap puts
/// the tag back after the header, with protocol 0x8100.
fn sll_vlan(vid: u16, ip_packet: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 0, 1, 0, 6, 0x02, 0, 0, 0, 0, 0x01, 0, 0, 0x81, 0x00];
    v.extend_from_slice(&vid.to_be_bytes());
    v.extend_from_slice(&[0x08, 0x00]);
    v.extend_from_slice(ip_packet);
    v
}

/// A Linux cooked capture v2 frame around an IP packet (libpcap's
/// `sll2_header`: protocol, reserved, ifindex, ARPHRD, packet type, address
/// length, address).
fn sll2(ip_packet: &[u8]) -> Vec<u8> {
    let ethertype: u16 = if ip_packet[0] >> 4 == 6 { 0x86dd } else { 0x0800 };
    let mut v = ethertype.to_be_bytes().to_vec();
    v.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 0x02, 0, 0, 0, 0, 0x01, 0, 0]);
    v.extend_from_slice(ip_packet);
    v
}

/// A BSD loopback (link type 0) frame: a 4-byte address family, then IP.
fn bsd_loopback(ip_packet: &[u8]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    v.extend_from_slice(ip_packet);
    v
}

/// A temporary directory with the lists.
struct Fixture {
    dir: tempfile::TempDir,
    block: PathBuf,
    allow: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let block = dir.path().join("block.txt");
        let allow = dir.path().join("allow.txt");
        fs::write(&block, BLOCKLIST).expect("write blocklist");
        fs::write(&allow, ALLOWLIST).expect("write allowlist");
        Self { dir, block, allow }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `namewall replay --pcap CAPTURE --blocklist block.txt --allowlist allow.txt ARGS...`
    fn replay(&self, capture: &Path, args: &[&str]) -> Run {
        let out = Command::new(env!("CARGO_BIN_EXE_namewall"))
            .arg("replay")
            .arg("--pcap")
            .arg(capture)
            .arg("--blocklist")
            .arg(&self.block)
            .arg("--allowlist")
            .arg(&self.allow)
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run namewall");
        Run {
            success: out.status.success(),
            stdout: String::from_utf8(out.stdout).expect("UTF-8 stdout"),
            stderr: String::from_utf8(out.stderr).expect("UTF-8 stderr"),
        }
    }

    fn replay_json(&self, capture: &Path) -> (Vec<Value>, Value) {
        let run = self.replay(capture, &["--json"]);
        assert!(run.success, "replay failed: {}", run.stderr);
        run.json()
    }
}

struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Every stdout line parsed: the packets, then the summary (which must come last, once).
    fn json(&self) -> (Vec<Value>, Value) {
        let mut lines: Vec<Value> = self
            .stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        let last = lines.pop().expect("at least the summary line");
        let summary = last.get("summary").cloned().unwrap_or_else(|| panic!("last line is not the summary: {last}"));
        for l in &lines {
            assert!(l.get("summary").is_none(), "summary before the end: {l}");
        }
        (lines, summary)
    }
}

/// What one packet's JSON line must say. `None` fields must be null.
struct Want {
    verdict: &'static str,
    outcome: Option<&'static str>,
    name: Option<&'static str>,
    rule: Option<&'static str>,
    proto: Option<&'static str>,
}

const fn want(
    verdict: &'static str,
    outcome: Option<&'static str>,
    name: Option<&'static str>,
    rule: Option<&'static str>,
    proto: Option<&'static str>,
) -> Want {
    Want { verdict, outcome, name, rule, proto }
}

const UDP: Option<&str> = Some("udp");

/// Checks packet lines against expectations, in order, numbered from 1.
fn check_packets(packets: &[Value], wants: &[Want]) {
    assert_eq!(packets.len(), wants.len(), "packet lines: {packets:#?}");
    for (i, (p, w)) in packets.iter().zip(wants).enumerate() {
        let n = i + 1;
        assert_eq!(p["packet"], json!(n), "packet number of line {n}: {p}");
        assert_eq!(p["verdict"], json!(w.verdict), "verdict of #{n}: {p}");
        assert_eq!(p["outcome"], json!(w.outcome), "outcome of #{n}: {p}");
        assert_eq!(p["name"], json!(w.name), "name of #{n}: {p}");
        assert_eq!(p["rule"], json!(w.rule), "rule of #{n}: {p}");
        assert_eq!(p["proto"], json!(w.proto), "proto of #{n}: {p}");
        // Keys that must be present even when null.
        for key in ["name", "rule", "proto", "outcome", "time"] {
            assert!(p.get(key).is_some(), "#{n} lacks {key:?}: {p}");
        }
        let not_run = w.verdict == "error" || w.verdict == "skipped";
        assert_eq!(p.get("error").is_some(), not_run, "#{n}: an error exactly when not run: {p}");
    }
}

fn assert_time(p: &Value, want: f64) {
    let got = p["time"].as_f64().unwrap_or_else(|| panic!("no time: {p}"));
    assert!((got - want).abs() < 1e-6, "time {got} != {want}: {p}");
}

/// Counters must account for exactly the packets that ran (each ends in one outcome).
fn assert_counters(summary: &Value, want: &Value) {
    assert_eq!(summary["counters"], *want, "counters: {summary:#}");
    let outcomes: u64 = want.as_object().expect("object").values().map(|v| v.as_u64().expect("count")).sum();
    assert_eq!(json!(outcomes), summary["run"], "outcome counters vs packets run: {summary:#}");
}

fn pcap_header(datalink: DataLink, ts_resolution: TsResolution, endianness: Endianness) -> PcapHeader {
    PcapHeader { snaplen: 262_144, datalink, ts_resolution, endianness, ..PcapHeader::default() }
}

/// A packet for a pcap writer: captured bytes, original length, time.
struct Frame {
    data: Vec<u8>,
    orig_len: usize,
    time: Duration,
}

fn write_pcap(path: &Path, header: PcapHeader, frames: &[Frame]) {
    let mut w = PcapWriter::with_header(fs::File::create(path).expect("create capture"), header).expect("pcap header");
    for f in frames {
        let orig_len = u32::try_from(f.orig_len).expect("length");
        w.write_packet(&PcapPacket::new(f.time, orig_len, &f.data)).expect("write packet");
    }
}

fn at(secs: u64, micros: u64) -> Duration {
    Duration::from_secs(T0 + secs) + Duration::from_micros(micros)
}

fn frame(data: Vec<u8>, time: Duration) -> Frame {
    Frame { orig_len: data.len(), data, time }
}

/// The Ethernet pcap used by the JSON and text tests, and what each packet must get.
fn ethernet_capture(fx: &Fixture) -> (PathBuf, Vec<Want>) {
    let a = RecordType::A;
    let blocked = ethernet(Net::Udp4, 53, &query("www.ads.example", a));
    // Cut inside the QNAME: the program sees the question run out.
    let cut = blocked[..14 + 20 + 8 + 12 + 5].to_vec();
    let mut oversized = ethernet(Net::Udp4, 53, &query("www.ads.example", a));
    oversized.resize(100_000, 0);
    let cases: Vec<(Vec<u8>, usize, Want)> = vec![
        (blocked.clone(), 0, want("tx", Some("nxdomain"), Some("www.ads.example"), Some("ads.example"), UDP)),
        (
            ethernet(Net::Udp4, 53, &query("good.ads.example", a)),
            0,
            want("pass", Some("pass_allowed"), Some("good.ads.example"), Some("good.ads.example"), UDP),
        ),
        (
            ethernet(Net::Udp6, 53, &query("www.example.org", RecordType::AAAA)),
            0,
            want("pass", Some("pass_no_match"), Some("www.example.org"), None, UDP),
        ),
        (ethernet(Net::Udp4, 123, &[0x23; 48]), 0, want("pass", Some("not_dns_port"), None, None, None)),
        (arp(), 0, want("pass", Some("not_ip"), None, None, None)),
        (
            ethernet(Net::Udp6, 53, &query("X.Tracker.Example", a)),
            0,
            want("tx", Some("refused"), Some("X.Tracker.Example"), Some("tracker.example"), UDP),
        ),
        (
            ethernet(Net::Tcp4, 53, &query("ads.example", a)),
            0,
            want("tx", Some("reset_tcp"), Some("ads.example"), Some("ads.example"), Some("tcp")),
        ),
        (
            ethernet(Net::Udp4, 53, &query("dropme.example", a)),
            0,
            want("drop", Some("drop"), Some("dropme.example"), Some("dropme.example"), UDP),
        ),
        (
            ethernet(Net::Udp4, 53, &response("www.ads.example")),
            0,
            want("pass", Some("dns_response"), None, None, None),
        ),
        // Its IPv4 total length runs past the end of what was captured: the
        // program passes it as a bad header.
        (cut, blocked.len(), want("pass", Some("bad_header"), None, None, None)),
        (vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0], 60, want("error", None, None, None, None)),
        (
            ethernet(Net::Udp4, 53, &query("a.b.sub.example", a)),
            0,
            want("tx", Some("nxdomain"), Some("a.b.sub.example"), Some("sub.example"), UDP),
        ),
        // The rule covers only names below sub.example.
        (
            ethernet(Net::Udp4, 53, &query("sub.example", a)),
            0,
            want("pass", Some("pass_no_match"), Some("sub.example"), None, UDP),
        ),
        (oversized, 0, want("error", None, None, None, None)),
    ];
    let mut frames = Vec::new();
    let mut wants = Vec::new();
    for (i, (data, orig_len, w)) in cases.into_iter().enumerate() {
        let i = i as u64;
        frames.push(Frame { orig_len: orig_len.max(data.len()), data, time: at(i, i * 250_000 % 1_000_000) });
        wants.push(w);
    }
    let path = fx.path("ethernet.pcap");
    write_pcap(&path, pcap_header(DataLink::ETHERNET, TsResolution::MicroSecond, Endianness::Little), &frames);
    (path, wants)
}

#[test]
fn pcap_ethernet_verdicts_names_rules_and_summary() {
    let fx = Fixture::new();
    let (capture, wants) = ethernet_capture(&fx);
    let (packets, summary) = fx.replay_json(&capture);
    check_packets(&packets, &wants);
    for (i, p) in packets.iter().enumerate() {
        let i = i as u64;
        assert_time(p, epoch(i) + f64::from(u32::try_from(i * 250_000 % 1_000_000).unwrap()) * 1e-6);
    }
    // Only the cut packet is truncated; it was run as captured.
    let truncated: Vec<_> =
        packets.iter().filter(|p| p["truncated"] == json!(true)).map(|p| p["packet"].clone()).collect();
    assert_eq!(truncated, vec![json!(10), json!(11)]);
    assert_eq!(packets[9]["len"], json!(59));
    assert_eq!(packets[9]["orig_len"], json!(packets[0]["len"]));
    // The runt and the 100 kB frame: the kernel refuses to test-run them.
    for n in [11, 14] {
        let e = packets[n - 1]["error"].as_str().expect("error text");
        assert!(e.contains("kernel refused"), "#{n}: {e}");
    }

    assert_eq!(summary["packets"], json!(14));
    assert_eq!(summary["run"], json!(12));
    assert_eq!(summary["truncated"], json!(2));
    assert_eq!(summary["verdicts"], json!({"drop": 1, "error": 2, "pass": 7, "tx": 4}));
    assert_counters(
        &summary,
        &json!({
            "bad_header": 1, "dns_response": 1, "drop": 1, "reset_tcp": 1, "not_dns_port": 1, "not_ip": 1,
            "nxdomain": 2, "pass_allowed": 1, "pass_no_match": 2, "refused": 1,
        }),
    );
    assert_eq!(
        summary["rule_hits"],
        json!([
            {"rule": "ads.example", "hits": 2},
            {"rule": "dropme.example", "hits": 1},
            {"rule": "good.ads.example", "hits": 1},
            {"rule": "sub.example", "hits": 1},
            {"rule": "tracker.example", "hits": 1},
        ])
    );
    assert!(summary.get("error").is_none(), "{summary}");
}

#[test]
fn human_output_lines_and_summary() {
    let fx = Fixture::new();
    let (capture, _) = ethernet_capture(&fx);
    let run = fx.replay(&capture, &[]);
    assert!(run.success, "{}", run.stderr);
    let line = |n: usize| {
        let prefix = format!("#{n} ");
        run.stdout
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no line {prefix}: {}", run.stdout))
    };
    let words = |n: usize| line(n).split_whitespace().collect::<Vec<_>>();
    assert_eq!(words(1), ["#1", "tx", "nxdomain", "www.ads.example", "rule=ads.example", "(udp)"]);
    assert_eq!(words(3), ["#3", "pass", "pass_no_match", "www.example.org", "(udp)"]);
    assert_eq!(words(4), ["#4", "pass", "not_dns_port"], "non-DNS packets are compact");
    assert_eq!(words(7), ["#7", "tx", "reset_tcp", "ads.example", "rule=ads.example", "(tcp)"]);
    assert!(line(10).contains("[truncated: 59 of"), "{}", line(10));
    assert!(
        line(11).starts_with("#11") && line(11).contains(" error ") && line(11).contains("kernel refused"),
        "{}",
        line(11)
    );
    // Aligned: the name column starts at the same place on every line with a name.
    let col = |n: usize, text: &str| line(n).find(text).expect("column");
    assert_eq!(col(1, "www.ads.example"), col(2, "good.ads.example"));
    assert_eq!(col(1, "rule="), col(2, "rule="));
    for n in 1..=14 {
        assert_eq!(line(n), line(n).trim_end(), "no trailing blanks");
    }

    let summary = run.stdout.split("\n\n").nth(1).expect("a summary after a blank line");
    assert!(summary.starts_with("14 packets: 12 run, 2 not run, 2 truncated\n"), "{summary}");
    assert!(summary.contains("actions: drop 1, error 2, pass 7, tx 4\n"), "{summary}");
    // The counter table, by kind.
    let row = |name: &str, n: &str| summary.lines().any(|l| l.split_whitespace().eq([name, n]));
    assert!(summary.contains("verdicts\n") && row("nxdomain", "2") && row("reset_tcp", "1"), "{summary}");
    assert!(summary.contains("not judged\n") && row("not_dns_port", "1"), "{summary}");
    let hits = summary.split("rule hits\n").nth(1).expect("rule hits");
    let first: Vec<_> = hits.lines().next().expect("a rule").split_whitespace().collect();
    assert_eq!(first, ["ads.example", "2"]);
}

/// pcapng with one interface per supported link type (and one unsupported),
/// two timestamp resolutions, a non-packet block, a packet of an undescribed
/// interface, a simple packet block, and a second section that starts
/// interface numbering again in the other byte order.
#[test]
fn pcapng_interfaces_of_several_link_types() {
    let fx = Fixture::new();
    let path = fx.path("mixed.pcapng");
    let a = RecordType::A;
    let mut w =
        PcapNgWriter::with_endianness(fs::File::create(&path).expect("create"), Endianness::Little).expect("writer");
    let idb = |linktype: DataLink, tsresol: Option<u8>| InterfaceDescriptionBlock {
        linktype,
        snaplen: 0,
        options: tsresol.map(InterfaceDescriptionOption::IfTsResol).into_iter().collect(),
    };
    for (link, tsresol) in [
        (DataLink::ETHERNET, Some(9)),
        (DataLink::LINUX_SLL, None),
        (DataLink::LINUX_SLL2, Some(9)),
        (DataLink::RAW, Some(9)),
        (DataLink::IPV4, Some(9)),
        (DataLink::IPV6, Some(9)),
        (DataLink::NULL, Some(9)),
    ] {
        w.write_pcapng_block(idb(link, tsresol)).expect("idb");
    }
    // pcap-file writes the Duration's nanoseconds as the timestamp, in
    // whatever units the interface declares.
    let epb = |interface_id: u32, units: u64, data: Vec<u8>| EnhancedPacketBlock {
        interface_id,
        timestamp: Duration::from_nanos(units),
        original_len: u32::try_from(data.len()).expect("length"),
        data: Cow::Owned(data),
        options: vec![],
    };
    let ns = |s: u64| (T0 + s) * 1_000_000_000 + 123_456_789;
    let packets = [
        epb(0, ns(1), ethernet(Net::Udp4, 53, &query("www.ads.example", a))),
        // Microseconds (no if_tsresol): half a second past T0 + 2.
        epb(1, (T0 + 2) * 1_000_000 + 500_000, sll(LinuxSllPacketType::OUTGOING, &query("x.tracker.example", a))),
        epb(2, ns(3), sll2(&ip(Net::Udp6, 53, &query("dropme.example", a)))),
        epb(3, ns(4), ip(Net::Udp4, 53, &query("www.example.org", a))),
        epb(3, ns(5), ip(Net::Udp6, 53, &query("good.ads.example", RecordType::AAAA))),
        epb(4, ns(6), ip(Net::Udp4, 53, &query("ads.example", a))),
        epb(5, ns(7), ip(Net::Udp6, 53, &query("v6.ads.example", a))),
        epb(6, ns(8), bsd_loopback(&ip(Net::Udp4, 53, &query("ads.example", a)))),
    ];
    for p in packets {
        w.write_pcapng_block(p).expect("epb");
    }
    w.write_pcapng_block(InterfaceStatisticsBlock { interface_id: 0, timestamp: 0, options: vec![] }).expect("isb");
    // An enhanced packet block of interface 9, which no block describes
    // (the writer refuses to write one, so it goes in raw).
    let data = ethernet(Net::Udp4, 53, &query("ads.example", a));
    let mut body: Vec<u8> = [9u32, 0, 0].iter().flat_map(|v| v.to_le_bytes()).collect();
    body.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
    body.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
    body.extend_from_slice(&data);
    body.resize(body.len().next_multiple_of(4), 0);
    let len = u32::try_from(body.len() + 12).unwrap();
    w.write_raw_block(&RawBlock { type_: 6, initial_len: len, body: Cow::Owned(body), trailer_len: len })
        .expect("raw epb");
    let spb_data = ethernet(Net::Udp4, 53, &query("spb.ads.example", a));
    let original_len = u32::try_from(spb_data.len()).unwrap();
    w.write_pcapng_block(SimplePacketBlock { original_len, data: Cow::Owned(spb_data) }).expect("spb");
    w.write_pcapng_block(epb(3, ns(9), vec![0x55; 30])).expect("epb");
    // Second section, big-endian: its interface 0 is raw IP.
    w.write_block(&Block::SectionHeader(SectionHeaderBlock {
        endianness: Endianness::Big,
        ..SectionHeaderBlock::default()
    }))
    .expect("shb");
    w.write_pcapng_block(idb(DataLink::RAW, Some(9))).expect("idb");
    w.write_pcapng_block(epb(0, ns(10), ip(Net::Udp4, 53, &query("second.ads.example", a)))).expect("epb");
    drop(w);

    let (packets, summary) = fx.replay_json(&path);
    let nx = Some("nxdomain");
    check_packets(
        &packets,
        &[
            want("tx", nx, Some("www.ads.example"), Some("ads.example"), UDP),
            want("tx", Some("refused"), Some("x.tracker.example"), Some("tracker.example"), UDP),
            want("drop", Some("drop"), Some("dropme.example"), Some("dropme.example"), UDP),
            want("pass", Some("pass_no_match"), Some("www.example.org"), None, UDP),
            want("pass", Some("pass_allowed"), Some("good.ads.example"), Some("good.ads.example"), UDP),
            want("tx", nx, Some("ads.example"), Some("ads.example"), UDP),
            want("tx", nx, Some("v6.ads.example"), Some("ads.example"), UDP),
            want("skipped", None, None, None, None),
            want("error", None, None, None, None),
            want("tx", nx, Some("spb.ads.example"), Some("ads.example"), UDP),
            want("error", None, None, None, None),
            want("tx", nx, Some("second.ads.example"), Some("ads.example"), UDP),
        ],
    );
    assert_time(&packets[0], epoch(1) + 0.123_456_789);
    assert_time(&packets[1], epoch(2) + 0.5);
    assert_time(&packets[11], epoch(10) + 0.123_456_789);
    assert_eq!(packets[9]["time"], Value::Null, "simple packet blocks carry no time");
    let error = |n: usize| packets[n - 1]["error"].as_str().expect("error text").to_owned();
    assert!(error(8).contains("link type 0 is not supported"), "{}", error(8));
    assert!(error(9).contains("interface 9"), "{}", error(9));
    assert!(error(11).contains("IP version 5"), "{}", error(11));

    assert_eq!(summary["packets"], json!(12));
    assert_eq!(summary["run"], json!(9));
    assert_eq!(summary["verdicts"], json!({"drop": 1, "error": 2, "pass": 2, "skipped": 1, "tx": 6}));
    assert_counters(&summary, &json!({"drop": 1, "nxdomain": 5, "pass_allowed": 1, "pass_no_match": 1, "refused": 1}));
    assert_eq!(summary["rule_hits"][0], json!({"rule": "ads.example", "hits": 5}));
}

/// What `tcpdump -i any -w` writes: Linux cooked capture v1 in a classic
/// pcap, here big-endian with nanosecond timestamps.
#[test]
fn pcap_linux_cooked_capture() {
    let fx = Fixture::new();
    let path = fx.path("any.pcap");
    let frames = [
        frame(sll(LinuxSllPacketType::OUTGOING, &query("www.ads.example", RecordType::A)), at(0, 1)),
        frame(sll(LinuxSllPacketType::HOST, &response("www.ads.example")), at(0, 2)),
        frame(sll_vlan(7, &ip(Net::Udp4, 53, &query("vlan.tracker.example", RecordType::A))), at(0, 3)),
        frame(sll(LinuxSllPacketType::OUTGOING, &query("ok.example.net", RecordType::A)), at(1, 0)),
        // Shorter than a cooked header.
        frame(vec![0, 4, 0, 1, 0, 6, 0x02, 0, 0, 0], at(2, 0)),
    ];
    write_pcap(&path, pcap_header(DataLink::LINUX_SLL, TsResolution::NanoSecond, Endianness::Big), &frames);
    let (packets, summary) = fx.replay_json(&path);
    check_packets(
        &packets,
        &[
            want("tx", Some("nxdomain"), Some("www.ads.example"), Some("ads.example"), UDP),
            want("pass", Some("dns_response"), None, None, None),
            want("tx", Some("refused"), Some("vlan.tracker.example"), Some("tracker.example"), UDP),
            want("pass", Some("pass_no_match"), Some("ok.example.net"), None, UDP),
            want("error", None, None, None, None),
        ],
    );
    assert_time(&packets[0], epoch(0) + 1e-6);
    assert_time(&packets[3], epoch(1));
    let e = packets[4]["error"].as_str().expect("error text");
    assert!(e.contains("shorter than its 16-byte Linux cooked capture header"), "{e}");
    assert_eq!(summary["verdicts"], json!({"error": 1, "pass": 2, "tx": 2}));
    assert_counters(&summary, &json!({"dns_response": 1, "nxdomain": 1, "pass_no_match": 1, "refused": 1}));
}

#[test]
fn missing_capture_names_the_file() {
    let fx = Fixture::new();
    let path = fx.path("no-such.pcap");
    let run = fx.replay(&path, &["--json"]);
    assert!(!run.success);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert!(run.stderr.contains(&format!("cannot read {}", path.display())), "{}", run.stderr);
}

#[test]
fn files_that_are_not_captures() {
    let fx = Fixture::new();
    let cases: [(&str, &[u8], &str); 4] = [
        ("garbage.pcap", b"GET / HTTP/1.1\r\nHost: example\r\n\r\n", "not a pcap or pcapng capture"),
        ("empty.pcap", b"", "empty file"),
        ("gzip.pcap.gz", &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0], "gzip-compressed"),
        // A pcap magic number and then nothing: the header is cut short.
        ("short.pcap", &[0xd4, 0xc3, 0xb2, 0xa1, 2, 0], "unreadable capture header"),
    ];
    for (name, bytes, message) in cases {
        let path = fx.path(name);
        fs::write(&path, bytes).expect("write");
        let run = fx.replay(&path, &[]);
        assert!(!run.success, "{name}");
        assert!(run.stdout.is_empty(), "{name}: {}", run.stdout);
        let line = run.stderr.lines().find(|l| l.contains("error")).unwrap_or_else(|| panic!("{name}: {}", run.stderr));
        assert!(line.contains(&path.display().to_string()) && line.contains(message), "{name}: {line}");
    }
}

/// A record whose length runs past the end of the file after two good
/// packets: both are reported, the summary covers them and says why the
/// replay stopped, and the exit status is an error.
#[test]
fn damaged_pcap_reports_what_was_read_then_fails() {
    let fx = Fixture::new();
    let path = fx.path("cut.pcap");
    let frames = [
        frame(ethernet(Net::Udp4, 53, &query("www.ads.example", RecordType::A)), at(0, 0)),
        frame(ethernet(Net::Udp4, 53, &query("www.example.org", RecordType::A)), at(1, 0)),
    ];
    write_pcap(&path, pcap_header(DataLink::ETHERNET, TsResolution::MicroSecond, Endianness::Little), &frames);
    let mut bytes = fs::read(&path).expect("read");
    // Record header: ts_sec, ts_usec, incl_len 1000, orig_len 1000; then 10 bytes.
    for v in [1u32, 0, 1000, 1000] {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    bytes.extend_from_slice(&[0xee; 10]);
    fs::write(&path, bytes).expect("write");

    let run = fx.replay(&path, &["--json"]);
    assert!(!run.success, "a damaged capture fails the run");
    let (packets, summary) = run.json();
    check_packets(
        &packets,
        &[
            want("tx", Some("nxdomain"), Some("www.ads.example"), Some("ads.example"), UDP),
            want("pass", Some("pass_no_match"), Some("www.example.org"), None, UDP),
        ],
    );
    assert_eq!(summary["packets"], json!(2));
    assert_counters(&summary, &json!({"nxdomain": 1, "pass_no_match": 1}));
    let e = summary["error"].as_str().expect("summary says why it stopped");
    assert!(e.contains("damaged after packet 2") && e.contains("ends inside a record"), "{e}");
    assert!(run.stderr.contains(&format!("{}: damaged after packet 2", path.display())), "{}", run.stderr);

    // Text output: the packets, the summary, then the error on stderr.
    let run = fx.replay(&path, &[]);
    assert!(!run.success);
    assert!(run.stdout.contains("\n2 packets: 2 run"), "{}", run.stdout);
    assert!(run.stderr.contains("damaged after packet 2"), "{}", run.stderr);
}

/// A pcapng block whose trailing length disagrees with its leading one.
#[test]
fn damaged_pcapng_stops_at_the_bad_block() {
    let fx = Fixture::new();
    let path = fx.path("bad.pcapng");
    let mut w =
        PcapNgWriter::with_endianness(fs::File::create(&path).expect("create"), Endianness::Little).expect("writer");
    w.write_pcapng_block(InterfaceDescriptionBlock { linktype: DataLink::ETHERNET, snaplen: 0, options: vec![] })
        .expect("idb");
    let data = ethernet(Net::Udp4, 53, &query("www.ads.example", RecordType::A));
    let original_len = u32::try_from(data.len()).unwrap();
    let epb = EnhancedPacketBlock {
        interface_id: 0,
        // No if_tsresol: microseconds.
        timestamp: Duration::from_nanos(T0 * 1_000_000),
        original_len,
        data: Cow::Owned(data),
        options: vec![],
    };
    w.write_pcapng_block(epb.clone()).expect("epb");
    w.write_raw_block(&RawBlock { type_: 6, initial_len: 32, body: Cow::Owned(vec![0; 20]), trailer_len: 36 })
        .expect("raw block");
    w.write_pcapng_block(epb).expect("epb");
    drop(w);

    let run = fx.replay(&path, &["--json"]);
    assert!(!run.success);
    let (packets, summary) = run.json();
    check_packets(&packets, &[want("tx", Some("nxdomain"), Some("www.ads.example"), Some("ads.example"), UDP)]);
    assert_time(&packets[0], epoch(0));
    let e = summary["error"].as_str().expect("summary says why it stopped");
    assert!(e.contains("damaged after packet 1: corrupt record"), "{e}");
}

#[test]
fn malformed_list_lines_are_named_and_skipped_or_refused() {
    let fx = Fixture::new();
    let path = fx.path("one.pcap");
    let frames = [frame(ethernet(Net::Udp4, 53, &query("ads.example", RecordType::A)), at(0, 0))];
    write_pcap(&path, pcap_header(DataLink::ETHERNET, TsResolution::MicroSecond, Endianness::Little), &frames);
    fs::write(&fx.block, "ads.example\nbad name here\n").expect("write list");
    let where_ = format!("{}:2", fx.block.display());

    let run = fx.replay(&path, &["--json"]);
    assert!(run.success, "{}", run.stderr);
    assert!(run.stderr.contains(&where_), "stderr names file:line: {}", run.stderr);
    let (packets, _) = run.json();
    check_packets(&packets, &[want("tx", Some("nxdomain"), Some("ads.example"), Some("ads.example"), UDP)]);

    let run = fx.replay(&path, &["--json", "--strict"]);
    assert!(!run.success, "--strict refuses malformed lines");
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert!(run.stderr.contains(&where_), "{}", run.stderr);

    fs::remove_file(&fx.allow).expect("remove allowlist");
    let run = fx.replay(&path, &["--json"]);
    assert!(!run.success, "a missing list fails the run");
    assert!(run.stderr.contains(&fx.allow.display().to_string()), "{}", run.stderr);
}

/// `--dns-action` and `--unjudged` reach the program.
#[test]
fn options_reach_the_program() {
    let fx = Fixture::new();
    let path = fx.path("opts.pcap");
    // A query whose QNAME uses a compression pointer: malformed for the program.
    let mut compressed = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    compressed.extend_from_slice(&[3, b'w', b'w', b'w', 0xc0, 0x0c, 0, 1, 0, 1]);
    let frames = [
        frame(ethernet(Net::Udp4, 53, &query("www.ads.example", RecordType::A)), at(0, 0)),
        frame(ethernet(Net::Udp4, 53, &compressed), at(1, 0)),
    ];
    write_pcap(&path, pcap_header(DataLink::ETHERNET, TsResolution::MicroSecond, Endianness::Little), &frames);

    let run = fx.replay(&path, &["--json", "--dns-action", "refused", "--unjudged", "pass"]);
    assert!(run.success, "{}", run.stderr);
    let (packets, summary) = run.json();
    check_packets(
        &packets,
        &[
            want("tx", Some("refused"), Some("www.ads.example"), Some("ads.example"), UDP),
            want("pass", Some("dns_compressed"), None, None, None),
        ],
    );
    assert_eq!(summary["counters"].get("unjudged_drop"), None, "{summary}");

    let (packets, _) = fx.replay_json(&path);
    assert_eq!(packets[0]["outcome"], json!("nxdomain"), "the default action");
    assert_eq!(packets[1]["verdict"], json!("drop"), "what cannot be judged is dropped by default");
}

/// The library API: the callback sees each report as it is made and can
/// stop the replay; totals then cover the packets so far.
#[test]
fn library_replay_streams_and_stops_on_break() {
    use std::ops::ControlFlow;

    use filter_user::{
        policy::PolicySource,
        replay::{self, ReplayOptions},
    };

    let fx = Fixture::new();
    let (capture, _) = ethernet_capture(&fx);
    let opts = ReplayOptions {
        lists: PolicySource {
            blocklists: vec![fx.block.clone()],
            allowlists: vec![fx.allow.clone()],
            ..PolicySource::default()
        },
        dns_action: maps::Action::Nxdomain,
        unjudged_drop: false,
        answer_ttl: 60,
        tls: filter_user::dataplane::TlsPolicy::default(),
        max_flows: 0,
        seed: 7,
    };
    let (filter, policy) = replay::prepare(&opts).expect("prepare");
    let mut seen = Vec::new();
    let summary = replay::replay(&filter, &policy.rules, &capture, |p| {
        seen.push((p.packet, p.verdict, p.rule.clone()));
        if p.packet == 2 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
    })
    .expect("replay");
    assert_eq!(seen, [(1, "tx", Some("ads.example".to_owned())), (2, "pass", Some("good.ads.example".to_owned()))]);
    assert_eq!((summary.packets, summary.run), (2, 2));
    assert_eq!(summary.totals.iter().sum::<u64>(), 2, "counters count this replay only");

    // Replaying again on the same filter: counters and hits are this replay's, not cumulative.
    let summary = replay::replay(&filter, &policy.rules, &capture, |_| ControlFlow::Continue(())).expect("replay");
    assert_eq!(summary.packets, 14);
    assert_eq!(summary.rule_hits[0].rule, "ads.example");
    assert_eq!(summary.rule_hits[0].hits, 2);
}

/// Without tracing the program leaves no decision record: replay refuses to
/// guess rather than report stale verdicts.
#[test]
fn library_replay_requires_a_tracing_program() {
    use std::ops::ControlFlow;

    use filter_user::{
        dataplane::{Filter, LoadOptions},
        policy::rules::RuleSet,
        replay::{self, ReplayError},
    };

    let fx = Fixture::new();
    let (capture, _) = ethernet_capture(&fx);
    let mut filter = Filter::load(LoadOptions { trace: false, ..LoadOptions::default() }).expect("load");
    let rules = RuleSet::new(1);
    filter.install(&rules).expect("install");
    let err = replay::replay(&filter, &rules, &capture, |_| ControlFlow::Continue(())).expect_err("no trace");
    assert!(matches!(err, ReplayError::Trace { packet: 1, before: 0, after: 0 }), "{err}");
}
