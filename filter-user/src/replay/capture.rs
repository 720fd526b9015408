//! Reading captures: pcap and pcapng files, packet record by packet
//! record, each turned into the Ethernet frame the program reads (see the
//! link types in `replay`'s documentation).

use std::{
    borrow::Cow,
    fs::File,
    io::{self, Read as _, Seek as _},
    path::Path,
};

use pcap_file::{
    Endianness, PcapError, TsResolution,
    pcap::PcapReader,
    pcapng::{
        PcapNgReader,
        blocks::{
            ENHANCED_PACKET_BLOCK, PACKET_BLOCK, SIMPLE_PACKET_BLOCK,
            interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
        },
    },
};
use thiserror::Error;

/// Link-layer header types as stored in captures (<https://www.tcpdump.org/linktypes.html>).
pub mod linktype {
    /// Ethernet II (and 802.3).
    pub const ETHERNET: u32 = 1;
    /// Raw IP; the version nibble says IPv4 or IPv6.
    pub const RAW: u32 = 101;
    /// Linux cooked capture v1, 16-byte header.
    pub const LINUX_SLL: u32 = 113;
    /// Raw IPv4.
    pub const IPV4: u32 = 228;
    /// Raw IPv6.
    pub const IPV6: u32 = 229;
    /// Linux cooked capture v2, 20-byte header.
    pub const LINUX_SLL2: u32 = 276;
}

/// Ethernet type of IPv4.
const ETH_P_IP: u16 = 0x0800;
/// Ethernet type of IPv6.
const ETH_P_IPV6: u16 = 0x86dd;
/// Length of an Ethernet II header.
const ETH_HLEN: usize = 14;
/// Length of a Linux cooked capture v1 header; its protocol field is at 14.
const SLL_HLEN: usize = 16;
/// Length of a Linux cooked capture v2 header; its protocol field is at 0.
const SLL2_HLEN: usize = 20;
/// MAC addresses of the Ethernet header put in front of packets captured
/// without one: locally administered (RFC 7042 §2.1), so they cannot be
/// mistaken for a real station. Destination first.
const SYNTHETIC_MACS: [u8; 12] = [0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];

/// Why a captured packet cannot be turned into an Ethernet frame.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum LinkError {
    #[error("link type {0} is not supported (Ethernet, Linux cooked capture SLL/SLL2 and raw IP are)")]
    Unsupported(u32),
    #[error("{len}-byte packet is shorter than its {need}-byte {link} header")]
    Short { link: &'static str, len: usize, need: usize },
    #[error("raw IP packet with IP version {0}")]
    NotIp(u8),
}

/// The packet as an Ethernet II frame, the only framing the XDP program
/// reads. Ethernet is returned as it is; Linux cooked captures and raw IP get
/// a synthesised 14-byte header in place of theirs, with the Ethernet type taken
/// from the SLL protocol field or from the IP version nibble. A VLAN tag that
/// libpcap put back after a cooked header (protocol 0x8100) stays in place,
/// as it would follow an Ethernet header.
pub fn to_ethernet(link_type: u32, data: &[u8]) -> Result<Cow<'_, [u8]>, LinkError> {
    let (ethertype, payload) = match link_type {
        linktype::ETHERNET => return Ok(Cow::Borrowed(data)),
        linktype::LINUX_SLL => {
            let short = LinkError::Short { link: "Linux cooked capture", len: data.len(), need: SLL_HLEN };
            let proto = data.get(14..SLL_HLEN).ok_or(short)?;
            (u16::from_be_bytes([proto[0], proto[1]]), &data[SLL_HLEN..])
        }
        linktype::LINUX_SLL2 => {
            let short = LinkError::Short { link: "Linux cooked capture v2", len: data.len(), need: SLL2_HLEN };
            let payload = data.get(SLL2_HLEN..).ok_or(short)?;
            (u16::from_be_bytes([data[0], data[1]]), payload)
        }
        linktype::RAW => {
            let first = data.first().ok_or(LinkError::Short { link: "raw IP", len: 0, need: 1 })?;
            match first >> 4 {
                4 => (ETH_P_IP, data),
                6 => (ETH_P_IPV6, data),
                v => return Err(LinkError::NotIp(v)),
            }
        }
        linktype::IPV4 => (ETH_P_IP, data),
        linktype::IPV6 => (ETH_P_IPV6, data),
        other => return Err(LinkError::Unsupported(other)),
    };
    let mut frame = Vec::with_capacity(ETH_HLEN + payload.len());
    frame.extend_from_slice(&SYNTHETIC_MACS);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    Ok(Cow::Owned(frame))
}

/// Capture file formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Pcap,
    PcapNg,
}

/// Why a file is not a capture we read.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("empty file")]
    Empty,
    #[error("too short to be a capture ({0} bytes)")]
    TooShort(usize),
    #[error("gzip-compressed; decompress it first")]
    Compressed,
    #[error("a modified (Kuznetzov) pcap, which is not supported; convert it with `editcap -F pcap`")]
    ModifiedPcap,
    #[error("not a pcap or pcapng capture (it starts with {0:02x?})")]
    Unknown([u8; 4]),
}

/// Tells the format from the first bytes of a file: the pcap magic numbers
/// (microsecond and nanosecond, either byte order) or a pcapng section header.
pub fn detect_format(head: &[u8]) -> Result<Format, FormatError> {
    if let [0x1f, 0x8b, ..] = head {
        return Err(FormatError::Compressed);
    }
    let magic: [u8; 4] = match head.get(..4) {
        Some(m) => m.try_into().unwrap_or_default(),
        None if head.is_empty() => return Err(FormatError::Empty),
        None => return Err(FormatError::TooShort(head.len())),
    };
    match u32::from_be_bytes(magic) {
        0xa1b2_c3d4 | 0xd4c3_b2a1 | 0xa1b2_3c4d | 0x4d3c_b2a1 => Ok(Format::Pcap),
        0x0a0d_0d0a => Ok(Format::PcapNg),
        0xa1b2_cd34 | 0x34cd_b2a1 => Err(FormatError::ModifiedPcap),
        _ => Err(FormatError::Unknown(magic)),
    }
}

/// libpcap's `LT_LINKTYPE`: the link type without the FCS bits that the pcap
/// header's link-type field may carry in its top bits. Frames that carry an
/// FCS keep it; the program bounds what it reads by the IP and UDP lengths,
/// so trailing bytes do not change its verdict.
const PCAP_LINKTYPE_MASK: u32 = 0x03ff_ffff;

/// pcapng's default timestamp resolution: microseconds (`if_tsresol` absent).
const DEFAULT_TSRESOL: u8 = 6;

/// Seconds since the epoch from a pcapng timestamp in the units that the
/// interface's `if_tsresol` option gives (bit 7 clear: 10^-n s, set: 2^-n s),
/// shifted by its `if_tsoffset` in seconds.
pub fn pcapng_time(units: u64, tsresol: u8, tsoffset: i64) -> f64 {
    let n = u32::from(tsresol & 0x7f);
    let offset = i64_to_f64(tsoffset);
    let exact = if tsresol & 0x80 == 0 { 10u64.checked_pow(n) } else { 2u64.checked_pow(n) };
    if let Some(per_second) = exact {
        // Whole seconds and the fraction apart, so that nanoseconds survive
        // the conversion as well as an f64 near 2^31 seconds allows.
        u64_to_f64(units / per_second) + u64_to_f64(units % per_second) / u64_to_f64(per_second) + offset
    } else {
        let n = i32::from(tsresol & 0x7f);
        let per_second = if tsresol & 0x80 == 0 { 10f64.powi(n) } else { 2f64.powi(n) };
        u64_to_f64(units) / per_second + offset
    }
}

#[expect(clippy::cast_precision_loss, reason = "timestamps are reported as float seconds; 2^53 ns is 104 days")]
fn u64_to_f64(v: u64) -> f64 {
    v as f64
}

#[expect(clippy::cast_precision_loss, reason = "timestamp offsets are far below 2^53 seconds")]
fn i64_to_f64(v: i64) -> f64 {
    v as f64
}

/// One packet record as read from a capture, before conversion.
pub(super) struct Record {
    /// Seconds since the epoch; `None` for pcapng simple packet blocks, which have no timestamp.
    pub(super) time: Option<f64>,
    /// The link type of the interface the packet was captured on.
    pub(super) link_type: u32,
    pub(super) data: Vec<u8>,
    pub(super) orig_len: u32,
}

/// What the next packet record held.
pub(super) enum Item {
    Packet(Record),
    /// A record whose framing was intact but whose content cannot be used: why.
    Unusable(String),
}

/// The fields of a pcapng packet block (enhanced, simple or obsolete).
#[derive(Debug, PartialEq, Eq)]
struct PacketBlock {
    interface: u32,
    /// Timestamp in the interface's units; `None` for a simple packet block.
    timestamp: Option<u64>,
    orig_len: u32,
    data: Vec<u8>,
}

fn u32_at(body: &[u8], off: usize, big: bool) -> Option<u32> {
    let b: [u8; 4] = body.get(off..off + 4)?.try_into().ok()?;
    Some(if big { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) })
}

/// Reads a pcapng packet block's body (pcapng §4.3-4.5). Written here rather
/// than taken from pcap-file because its parsers fail a whole packet over a
/// malformed option (a comment that is not UTF-8), and read the obsolete
/// packet block's timestamp as one 64-bit word, which is wrong in
/// little-endian files (the high half comes first).
fn packet_block(kind: u32, body: &[u8], big: bool) -> Result<PacketBlock, BlockError> {
    let short = || BlockError::Short(body.len());
    let (interface, timestamp, caplen, orig_len, data_off) = match kind {
        ENHANCED_PACKET_BLOCK | PACKET_BLOCK => {
            let interface = if kind == ENHANCED_PACKET_BLOCK {
                u32_at(body, 0, big).ok_or_else(short)?
            } else {
                let b = body.get(..2).ok_or_else(short)?;
                u32::from(if big { u16::from_be_bytes([b[0], b[1]]) } else { u16::from_le_bytes([b[0], b[1]]) })
            };
            let high = u32_at(body, 4, big).ok_or_else(short)?;
            let low = u32_at(body, 8, big).ok_or_else(short)?;
            let caplen = u32_at(body, 12, big).ok_or_else(short)?;
            let orig_len = u32_at(body, 16, big).ok_or_else(short)?;
            (interface, Some((u64::from(high) << 32) | u64::from(low)), caplen as usize, orig_len, 20)
        }
        SIMPLE_PACKET_BLOCK => {
            let orig_len = u32_at(body, 0, big).ok_or_else(short)?;
            // The captured length is implied: the body minus its padding,
            // which only the original length tells apart (pcapng §4.4).
            (0, None, (orig_len as usize).min(body.len() - 4), orig_len, 4)
        }
        other => return Err(BlockError::NotPacket(other)),
    };
    let data = body.get(data_off..data_off + caplen).ok_or(BlockError::PastEnd { caplen, block: body.len() })?;
    Ok(PacketBlock { interface, timestamp, orig_len, data: data.to_vec() })
}

/// Why a pcapng packet block cannot be read: the packet is reported
/// unusable, and replay goes on with the next.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum BlockError {
    #[error("packet block of {0} bytes is too short for its header")]
    Short(usize),
    #[error("block type {0:#x} is not a packet block")]
    NotPacket(u32),
    #[error("captured length {caplen} runs past the end of its {block}-byte block")]
    PastEnd { caplen: usize, block: usize },
}

/// What replay needs from a pcapng interface description.
struct Interface {
    link_type: u32,
    snaplen: u32,
    tsresol: u8,
    tsoffset: i64,
}

impl Interface {
    fn new(idb: &InterfaceDescriptionBlock<'_>) -> Self {
        let mut i =
            Self { link_type: u32::from(idb.linktype), snaplen: idb.snaplen, tsresol: DEFAULT_TSRESOL, tsoffset: 0 };
        for opt in &idb.options {
            match opt {
                InterfaceDescriptionOption::IfTsResol(r) => i.tsresol = *r,
                InterfaceDescriptionOption::IfTsOffset(o) => i.tsoffset = o.cast_signed(),
                _ => {}
            }
        }
        i
    }
}

enum Reader {
    Pcap { reader: PcapReader<File>, link_type: u32, nanos: bool },
    PcapNg(PcapNgReader<File>),
}

/// Why a capture could not be opened. Messages carry their causes on one
/// line (see `ReplayError`).
#[derive(Debug, Error)]
pub enum CaptureError {
    #[error("cannot read {path}: {error}")]
    Open { path: String, error: io::Error },
    #[error("{path}: {reason}")]
    NotACapture { path: String, reason: FormatError },
    #[error("{path}: unreadable capture header: {reason}")]
    Header { path: String, reason: String },
}

/// An open capture file, positioned at its first packet.
pub struct Capture {
    path: String,
    reader: Reader,
}

impl Capture {
    /// Opens a capture and reads its file header. Errors name the file.
    pub fn open(path: &Path) -> Result<Self, CaptureError> {
        let shown = path.display().to_string();
        let open_err = |error| CaptureError::Open { path: shown.clone(), error };
        let mut file = File::open(path).map_err(open_err)?;
        let mut head = Vec::with_capacity(4);
        file.by_ref().take(4).read_to_end(&mut head).map_err(open_err)?;
        file.rewind().map_err(open_err)?;
        let format =
            detect_format(&head).map_err(|reason| CaptureError::NotACapture { path: shown.clone(), reason })?;
        let header_err = |e: PcapError| {
            let reason = match e {
                PcapError::IoError(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
                    "the file ends inside it".to_owned()
                }
                other => describe(&other),
            };
            CaptureError::Header { path: shown.clone(), reason }
        };
        let reader = match format {
            Format::Pcap => {
                let reader = PcapReader::new(file).map_err(header_err)?;
                let header = reader.header();
                let link_type = u32::from(header.datalink) & PCAP_LINKTYPE_MASK;
                Reader::Pcap { reader, link_type, nanos: header.ts_resolution == TsResolution::NanoSecond }
            }
            Format::PcapNg => Reader::PcapNg(PcapNgReader::new(file).map_err(header_err)?),
        };
        Ok(Self { path: shown, reader })
    }

    /// The file as given, for messages.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The next packet record; `Ok(None)` at the end of the file. An error
    /// means the file's framing is broken and no further record can be found.
    pub(super) fn next(&mut self) -> Result<Option<Item>, PcapError> {
        match &mut self.reader {
            Reader::Pcap { reader, link_type, nanos } => {
                // Raw records: pcap-file's checked ones reject orig_len >
                // snaplen, which captures made with a snap length often have.
                let Some(raw) = reader.next_raw_packet().transpose()? else { return Ok(None) };
                let frac = u64_to_f64(u64::from(raw.ts_frac)) * if *nanos { 1e-9 } else { 1e-6 };
                Ok(Some(Item::Packet(Record {
                    time: Some(u64_to_f64(u64::from(raw.ts_sec)) + frac),
                    link_type: *link_type,
                    data: raw.data.into_owned(),
                    orig_len: raw.orig_len,
                })))
            }
            Reader::PcapNg(reader) => loop {
                // Read before the block: a section header changes it, but is no packet.
                let big = reader.section().endianness == Endianness::Big;
                let Some(raw) = reader.next_raw_block().transpose()? else { return Ok(None) };
                if !matches!(raw.type_, ENHANCED_PACKET_BLOCK | SIMPLE_PACKET_BLOCK | PACKET_BLOCK) {
                    continue;
                }
                let block = match packet_block(raw.type_, &raw.body, big) {
                    Ok(b) => b,
                    Err(reason) => return Ok(Some(Item::Unusable(reason.to_string()))),
                };
                let Some(iface) = reader.interfaces().get(block.interface as usize).map(Interface::new) else {
                    let reason =
                        format!("packet of interface {}, which its section does not describe", block.interface);
                    return Ok(Some(Item::Unusable(reason)));
                };
                let mut data = block.data;
                if block.timestamp.is_none() && iface.snaplen != 0 {
                    data.truncate(iface.snaplen as usize);
                }
                return Ok(Some(Item::Packet(Record {
                    time: block.timestamp.map(|t| pcapng_time(t, iface.tsresol, iface.tsoffset)),
                    link_type: iface.link_type,
                    data,
                    orig_len: block.orig_len,
                })));
            },
        }
    }
}

/// A pcap-file error in words for people.
pub(super) fn describe(e: &PcapError) -> String {
    match e {
        PcapError::IoError(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
            "the file ends inside a record (cut short, or a corrupt length)".to_owned()
        }
        PcapError::IoError(io) => format!("read error: {io}"),
        PcapError::InvalidField(what) => format!("corrupt record: {what}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IPV4: &[u8] = &[0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];

    fn ipv6() -> Vec<u8> {
        let mut v = vec![0x60, 0, 0, 0, 0, 0, 17, 64];
        v.extend_from_slice(&[0xfd; 32]);
        v
    }

    fn ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = SYNTHETIC_MACS.to_vec();
        v.extend_from_slice(&ethertype.to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    /// A Linux cooked capture v1 header (packet type, ARPHRD, address
    /// length, address, protocol) in front of `payload`.
    fn sll(protocol: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 4, 0, 1, 0, 6, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0, 0];
        v.extend_from_slice(&protocol.to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    /// A Linux cooked capture v2 header (protocol, reserved, ifindex,
    /// ARPHRD, packet type, address length, address) in front of `payload`.
    fn sll2(protocol: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = protocol.to_be_bytes().to_vec();
        v.extend_from_slice(&[0, 0, 0, 0, 0, 3, 0, 1, 0, 6, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0, 0]);
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn ethernet_is_passed_through_unchanged() {
        let frame = ethernet(ETH_P_IP, IPV4);
        let out = to_ethernet(linktype::ETHERNET, &frame).unwrap();
        assert!(matches!(out, Cow::Borrowed(_)));
        assert_eq!(&*out, frame.as_slice());
        // Even a runt: the kernel, not the conversion, judges Ethernet frames.
        assert_eq!(&*to_ethernet(linktype::ETHERNET, &[1, 2, 3]).unwrap(), &[1, 2, 3]);
    }

    #[test]
    fn conversions_table() {
        let v6 = ipv6();
        let vlan_then_ip = [&[0x00, 0x05, 0x08, 0x00][..], IPV4].concat();
        let cases: Vec<(&str, u32, Vec<u8>, Vec<u8>)> = vec![
            ("sll ipv4", linktype::LINUX_SLL, sll(ETH_P_IP, IPV4), ethernet(ETH_P_IP, IPV4)),
            ("sll ipv6", linktype::LINUX_SLL, sll(ETH_P_IPV6, &v6), ethernet(ETH_P_IPV6, &v6)),
            ("sll vlan kept", linktype::LINUX_SLL, sll(0x8100, &vlan_then_ip), ethernet(0x8100, &vlan_then_ip)),
            ("sll arp", linktype::LINUX_SLL, sll(0x0806, &[1; 28]), ethernet(0x0806, &[1; 28])),
            ("sll header only", linktype::LINUX_SLL, sll(ETH_P_IP, &[]), ethernet(ETH_P_IP, &[])),
            ("sll2 ipv4", linktype::LINUX_SLL2, sll2(ETH_P_IP, IPV4), ethernet(ETH_P_IP, IPV4)),
            ("sll2 ipv6", linktype::LINUX_SLL2, sll2(ETH_P_IPV6, &v6), ethernet(ETH_P_IPV6, &v6)),
            ("raw ipv4", linktype::RAW, IPV4.to_vec(), ethernet(ETH_P_IP, IPV4)),
            ("raw ipv6", linktype::RAW, v6.clone(), ethernet(ETH_P_IPV6, &v6)),
            ("ipv4 link type", linktype::IPV4, IPV4.to_vec(), ethernet(ETH_P_IP, IPV4)),
            ("ipv6 link type", linktype::IPV6, v6.clone(), ethernet(ETH_P_IPV6, &v6)),
            // The link type decides, not the version nibble: the program
            // then counts the mismatch as a bad header.
            ("ipv4 link type, v6 bytes", linktype::IPV4, v6.clone(), ethernet(ETH_P_IP, &v6)),
            ("ipv4 link type, empty", linktype::IPV4, Vec::new(), ethernet(ETH_P_IP, &[])),
        ];
        for (what, link, input, want) in cases {
            let out = to_ethernet(link, &input).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(&*out, want.as_slice(), "{what}");
        }
    }

    #[test]
    fn conversion_errors() {
        let cases: Vec<(u32, Vec<u8>, LinkError)> = vec![
            (linktype::LINUX_SLL, vec![0; 15], LinkError::Short { link: "Linux cooked capture", len: 15, need: 16 }),
            (
                linktype::LINUX_SLL2,
                vec![8, 0, 0],
                LinkError::Short { link: "Linux cooked capture v2", len: 3, need: 20 },
            ),
            (linktype::RAW, vec![], LinkError::Short { link: "raw IP", len: 0, need: 1 }),
            (linktype::RAW, vec![0x55, 0, 0, 0], LinkError::NotIp(5)),
            (0, IPV4.to_vec(), LinkError::Unsupported(0)),
            (105, vec![0; 40], LinkError::Unsupported(105)),
        ];
        for (link, input, want) in cases {
            assert_eq!(to_ethernet(link, &input), Err(want), "link type {link}");
        }
    }

    #[test]
    fn formats_by_magic() {
        let cases: Vec<(&[u8], Result<Format, FormatError>)> = vec![
            (&[0xa1, 0xb2, 0xc3, 0xd4, 0, 2], Ok(Format::Pcap)),
            (&[0xd4, 0xc3, 0xb2, 0xa1], Ok(Format::Pcap)),
            (&[0xa1, 0xb2, 0x3c, 0x4d], Ok(Format::Pcap)),
            (&[0x4d, 0x3c, 0xb2, 0xa1], Ok(Format::Pcap)),
            (&[0x0a, 0x0d, 0x0d, 0x0a], Ok(Format::PcapNg)),
            (&[0xa1, 0xb2, 0xcd, 0x34], Err(FormatError::ModifiedPcap)),
            (&[0x1f, 0x8b, 8, 0], Err(FormatError::Compressed)),
            (b"hello", Err(FormatError::Unknown(*b"hell"))),
            (&[0xa1, 0xb2], Err(FormatError::TooShort(2))),
            (&[], Err(FormatError::Empty)),
        ];
        for (head, want) in cases {
            assert_eq!(detect_format(head), want, "{head:02x?}");
        }
    }

    #[test]
    fn pcapng_timestamps() {
        let t = 1_700_000_000u64;
        let close = |got: f64, want: f64| assert!((got - want).abs() < 1e-6, "{got} != {want}");
        close(pcapng_time(t * 1_000_000 + 250_000, 6, 0), 1_700_000_000.25);
        close(pcapng_time(t * 1_000_000_000 + 123_456_789, 9, 0), 1_700_000_000.123_457);
        close(pcapng_time(t * 1024 + 512, 0x80 | 0x0a, 0), 1_700_000_000.5);
        close(pcapng_time(7, 0, -2), 5.0);
        close(pcapng_time(3_000_000, 6, 10), 13.0);
        // 10^20 does not fit a u64: the float path.
        close(pcapng_time(u64::MAX, 20, 0), u64_to_f64(u64::MAX) / 1e20);
    }

    fn le_block_body(fields: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v: Vec<u8> = fields.iter().flat_map(|f| f.to_le_bytes()).collect();
        v.extend_from_slice(data);
        v.resize(v.len().next_multiple_of(4), 0);
        v
    }

    #[test]
    fn packet_blocks() {
        let data = [1u8, 2, 3, 4, 5];
        let epb = le_block_body(&[2, 0x1, 0x2, 5, 60], &data);
        assert_eq!(
            packet_block(ENHANCED_PACKET_BLOCK, &epb, false),
            Ok(PacketBlock { interface: 2, timestamp: Some(0x1_0000_0002), orig_len: 60, data: data.to_vec() })
        );
        let mut epb_be: Vec<u8> = [3u32, 0, 9, 5, 5].iter().flat_map(|f| f.to_be_bytes()).collect();
        epb_be.extend_from_slice(&data);
        assert_eq!(
            packet_block(ENHANCED_PACKET_BLOCK, &epb_be, true),
            Ok(PacketBlock { interface: 3, timestamp: Some(9), orig_len: 5, data: data.to_vec() })
        );
        // Obsolete packet block: 16-bit interface and drop count, then the
        // timestamp's high half first.
        let pb = le_block_body(&[0x0007_0001, 0x1, 0x2, 5, 5], &data);
        assert_eq!(
            packet_block(PACKET_BLOCK, &pb, false),
            Ok(PacketBlock { interface: 1, timestamp: Some(0x1_0000_0002), orig_len: 5, data: data.to_vec() })
        );
        // Simple packet block: the original length tells data from padding.
        let spb = le_block_body(&[5], &data);
        assert_eq!(spb.len(), 12);
        assert_eq!(
            packet_block(SIMPLE_PACKET_BLOCK, &spb, false),
            Ok(PacketBlock { interface: 0, timestamp: None, orig_len: 5, data: data.to_vec() })
        );
        let spb_snapped = le_block_body(&[1500], &data);
        assert_eq!(packet_block(SIMPLE_PACKET_BLOCK, &spb_snapped, false).unwrap().data.len(), 8);

        let lying = le_block_body(&[0, 0, 0, 400, 400], &data);
        assert_eq!(
            packet_block(ENHANCED_PACKET_BLOCK, &lying, false).map_err(|e| e.to_string()),
            Err("captured length 400 runs past the end of its 28-byte block".to_owned())
        );
        assert!(packet_block(ENHANCED_PACKET_BLOCK, &[0; 12], false).unwrap_err().to_string().contains("too short"));
        assert!(packet_block(SIMPLE_PACKET_BLOCK, &[0; 3], false).unwrap_err().to_string().contains("too short"));
    }
}
