//! The seed corpus of the fuzz run, built with the tests' own packet
//! builders, and pcap files of frames (the corpus, saved failures).
//!
//! rustls writes a different ClientHello on every call (random fields,
//! shuffled extensions), so the corpus is built once and committed
//! (`tests/fuzz-corpus/seeds.pcap`): a run is then repeated exactly by its
//! seed. `namewall-fuzz --write-corpus FILE` builds it again.

use std::{fs, io::BufWriter, path::Path, time::Duration};

use anyhow::Context as _;
use hickory_proto::rr::RecordType;
use pcap_file::pcap::{PcapPacket, PcapReader, PcapWriter};

use crate::{
    dnswire,
    packet::{self, Spec, V6Ext, Vlan},
    tls::{self, Flow, HelloKind},
};

/// Where the committed corpus lives, from the workspace root.
pub const SEEDS: &str = "tests/fuzz-corpus/seeds.pcap";

/// Names the DNS and TLS seeds ask for: blocked, allowed and unmatched by
/// the fuzz rule set (`reference::RULES`), in mixed case, and one near the
/// longest a name may be.
const NAMES: &[&str] = &[
    "ads.example",
    "WwW.Ads.Example",
    "ok.ads.example",
    "cdn.ok.ads.example",
    "www.example.org",
    "tracker.test",
    "a.wild.example",
    "wild.example",
    "blocked.example.com",
    "x.a",
    "fine.a",
];

/// A name of 255 bytes on the wire (253 as text) under ads.example.
fn long_name() -> String {
    let l = "l".repeat(59);
    format!("x.{l}.{l}.{l}.{l}.ads.example")
}

/// Frame headers the seeds are spread over: VLAN tags, IPv4 options, IPv6
/// extension headers.
fn specs() -> Vec<Spec> {
    vec![
        Spec::udp4(),
        Spec::udp6(),
        Spec::udp4().vlan(Vlan::Single(100)),
        Spec::udp6().vlan(Vlan::Double(10, 20)),
        // NOP, NOP, NOP, EOL; then a router alert (RFC 2113).
        Spec::udp4().v4_options(&[1, 1, 1, 0]),
        Spec::udp4().v4_options(&[0x94, 4, 0, 0]),
        Spec::udp6().v6_ext(V6Ext::HopByHop),
        Spec::udp6().v6_ext(V6Ext::DestOpts),
        Spec::udp6().v6_ext(V6Ext::Routing),
        Spec::udp6().v6_ext(V6Ext::All),
    ]
}

/// Builds the seed corpus (a few hundred frames).
pub fn build() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let long = long_name();
    let names: Vec<&str> = NAMES.iter().copied().chain([long.as_str()]).collect();
    let specs = specs();
    // DNS over UDP: every name over every header layout, query types and
    // EDNS varied.
    for (i, name) in names.iter().enumerate() {
        for (j, spec) in specs.iter().enumerate() {
            let msg = match (i + j) % 3 {
                0 => dnswire::query(name, RecordType::A),
                1 => dnswire::query_plain(name, RecordType::AAAA),
                _ => dnswire::with_padding(&dnswire::query_plain(name, RecordType::HTTPS), 16),
            };
            out.push(spec.build(&msg));
        }
    }
    // DNS over TCP, an IPv6 first fragment, and hand-made edge cases.
    for name in ["ads.example", "www.example.org"] {
        out.push(Spec::udp4().tcp().build(&packet::tcp_dns(&dnswire::query(name, RecordType::A))));
        out.push(Spec::udp6().tcp().build(&packet::tcp_dns(&dnswire::query(name, RecordType::A))));
        out.push(Spec::udp6().v6_ext(V6Ext::Fragment).build(&dnswire::query(name, RecordType::A)));
    }
    out.push(Spec::udp4().build(&dnswire::raw_query(b"\x00")));
    out.push(Spec::udp4().build(&dnswire::raw_query(&dnswire::wire_name("ads.example."))));
    out.push(Spec::udp4().build(&dnswire::raw_query(b"\x03ads\x07example\xc0\x0c")));
    out.push(packet::udp6_with_dest_opts(3, &dnswire::query("ads.example", RecordType::A)));
    // TLS ClientHellos in one segment: small, GREASE ECH, no name, and the
    // ~1.9 KB post-quantum one (one jumbo segment here).
    let flows = [
        Flow::v4(),
        Flow::v6(),
        Flow::new(Spec::udp4().vlan(Vlan::Single(7)).tcp().dport(443)),
        Flow::new(Spec::udp6().v6_ext(V6Ext::All).tcp().dport(8443)),
        Flow::new(Spec::udp4().v4_options(&[1, 1, 1, 1]).tcp().dport(443)).without_timestamps(),
    ];
    for (i, name) in names.iter().enumerate() {
        for (j, flow) in flows.iter().enumerate() {
            let kind = match (i + j) % 4 {
                0 | 1 => HelloKind::Small,
                2 => HelloKind::Ech,
                _ if i % 2 == 0 => HelloKind::PostQuantum,
                _ => HelloKind::NoSni,
            };
            out.push(flow.segment(0, &tls::client_hello(Some(name), kind)));
        }
    }
    let flow = Flow::v4();
    out.push(flow.segment(0, &tls::client_hello(None, HelloKind::Small)));
    out.push(flow.segment(0, &tls::client_hello(Some("ads.example"), HelloKind::NoSni)));
    // The first of a ClientHello's two segments, a SYN, a pure ACK, a FIN.
    let hello = tls::client_hello(Some("ads.example"), HelloKind::Small);
    out.push(flow.segment(0, &hello[..hello.len() / 2]));
    out.push(flow.syn());
    out.push(flow.ack());
    out.push(flow.fin());
    // Neither DNS nor TLS.
    out.push(packet::arp_request());
    out.push(packet::icmp4_echo());
    out.push(Spec::udp4().dport(123).build(&[0x23; 48]));
    let mut quic = vec![0xc3, 0, 0, 0, 1, 8];
    quic.resize(1200, 0x5a);
    out.push(Spec::udp6().dport(443).build(&quic));
    out.push(Flow::v4().dport(80).segment(0, b"GET / HTTP/1.1\r\nHost: ads.example\r\n\r\n"));
    out
}

/// Writes `frames` as an Ethernet pcap file (timestamps one microsecond
/// apart, so the file depends only on the frames).
pub fn write_pcap(path: &Path, frames: &[Vec<u8>]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let f = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = PcapWriter::new(BufWriter::new(f)).with_context(|| format!("writing {}", path.display()))?;
    for (i, frame) in frames.iter().enumerate() {
        let len = u32::try_from(frame.len()).context("a frame over 4 GiB")?;
        w.write_packet(&PcapPacket::new(Duration::from_micros(i as u64), len, frame))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The frames of a pcap file.
pub fn read_pcap(path: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut r = PcapReader::new(f).with_context(|| format!("reading {}", path.display()))?;
    let mut frames = Vec::new();
    while let Some(p) = r.next_packet() {
        frames.push(p.with_context(|| format!("reading {}", path.display()))?.data.into_owned());
    }
    Ok(frames)
}
