//! The host reference judge of the differential fuzz run: what a packet
//! asks for and whether the rule set blocks it, worked out without any of
//! the kernel program's code.
//!
//! # Independence
//! Layers 2 to 4 are parsed by `etherparse`, the DNS header and question by
//! `hickory-proto`, the ClientHello by `tls-parser` (the TLS record layer,
//! which `tls-parser` reads one record at a time, and the exact-length
//! checks RFC 6066 §3 asks of the `server_name` extension are a few lines
//! here). Names are compared as labels, ASCII case folded (RFC 4343), against
//! the rule table by suffix: nothing of `maps` (its parsers, its hash, its
//! rule judgment) is used, so a bug there shows as a disagreement.
//!
//! # What it judges
//! Only what both sides can honestly judge in one packet; everything else is
//! [`Judgement::CannotJudge`] with a reason:
//! - a DNS query over UDP to port 53: QR = 0, opcode QUERY, exactly one
//!   question whose QNAME is uncompressed, QTYPE and QCLASS present; over
//!   TCP the same, as the one whole message of a segment after its length
//!   prefix (neither SYN, RST nor URG set: the fuzz loop empties the stream
//!   table after every packet, so the segment starts a connection's stream);
//! - a TLS ClientHello complete in one TCP segment to a port other than 53,
//!   neither SYN nor RST set (a data segment of a flow the filter does not
//!   track: the fuzz loop empties the flow table after every packet), in
//!   handshake records of 1..=2^14 bytes with version 3.0..=3.4 (RFC 8446
//!   §5.1), whose `server_name` extension, if any, holds exactly one
//!   `host_name` that is a valid text name (labels of 1..=63 bytes, at most
//!   253 bytes, one trailing dot allowed).
//!
//! Frames must be Ethernet II with at most two VLAN tags (TPID 0x8100 or
//! 0x88a8, the ones Linux's VLAN code takes); IP packets must be whole in the
//! frame (padding after them is fine), not fragmented (an IPv6 atomic
//! fragment is not a fragment), and IPv6 must not claim a jumbogram.
//!
//! # "A Linux receiver would accept it"
//! [`Judged::accepted`] says whether the packet would reach the DNS server or
//! the TLS server's socket on a Linux host configured for it (VLAN devices
//! for its tags, the addresses local). It is the bar for the fuzz run's
//! "blocked by the reference, skipped by the kernel" check, so it errs on the
//! side of "no": the IPv4 header checksum and the UDP or TCP checksum are
//! right (XDP sees packets before the stack checks them, so the filter itself
//! never checks them); IPv4 options are only NOP and EOL; IPv6 extension
//! headers are hop-by-hop (first only), destination options (any number of
//! them: Linux's `ip6_protocol_deliver_rcu` follows the chain to its end)
//! and (atomic) fragment headers, no routing header (Linux drops segment
//! routing headers unless `seg6_enabled`, type 0 unless source routing is
//! accepted), options only `Pad1` and `PadN`; a UDP checksum of 0 only over IPv4 (RFC 8200
//! §8.1); a TCP segment has ACK set, neither SYN nor RST; a ClientHello
//! meets the bounds of RFC 8446 §4.1.2 (session id at most 32 bytes, cipher
//! suites a non-empty even length, at least one compression method).

use std::fmt;

use etherparse::{LinkExtSlice, LinkSlice, NetSlice, SlicedPacket, TransportSlice};
use hickory_proto::{
    op::{Header, MessageType, OpCode},
    rr::Name,
    serialize::binary::{BinDecodable as _, BinDecoder},
};
use tls_parser::{SNIType, TlsExtension};

/// What a rule covers, as the list formats say (`filter-user`'s blocklist
/// module documents them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `example.com`: the name and every name below it.
    NameAndBelow,
    /// `*.example.com`: only the names below it.
    Below,
}

/// One rule of the fuzz run's rule set.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    pub name: &'static str,
    pub scope: Scope,
    pub allow: bool,
}

/// The rule set the kernel is loaded with and the reference judges by.
pub const RULES: &[Rule] = &[
    Rule { name: "ads.example", scope: Scope::NameAndBelow, allow: false },
    Rule { name: "ok.ads.example", scope: Scope::NameAndBelow, allow: true },
    Rule { name: "tracker.test", scope: Scope::NameAndBelow, allow: false },
    Rule { name: "wild.example", scope: Scope::Below, allow: false },
    Rule { name: "blocked.example.com", scope: Scope::NameAndBelow, allow: false },
    Rule { name: "a", scope: Scope::NameAndBelow, allow: false },
    Rule { name: "fine.a", scope: Scope::NameAndBelow, allow: true },
];

/// [`RULES`] as list texts for the kernel: (block list, allow list).
pub fn list_texts() -> (String, String) {
    let (mut block, mut allow) = (String::new(), String::new());
    for r in RULES {
        let text = match r.scope {
            Scope::NameAndBelow => r.name.to_owned(),
            Scope::Below => format!("*.{}", r.name),
        };
        let list = if r.allow { &mut allow } else { &mut block };
        list.push_str(&text);
        list.push('\n');
    }
    (block, allow)
}

/// What the rules say of a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    NoMatch,
    Allowed,
    Blocked,
}

/// The most specific rule that says something of `labels` (leftmost label
/// first) decides; an allow beats a block of the same name.
pub fn decide(labels: &[Vec<u8>]) -> Decision {
    let lower: Vec<Vec<u8>> = labels.iter().map(|l| l.to_ascii_lowercase()).collect();
    for depth in (1..=lower.len()).rev() {
        let suffix = &lower[lower.len() - depth..];
        let mut found = None;
        for r in RULES {
            let rule_labels: Vec<&[u8]> = r.name.split('.').map(str::as_bytes).collect();
            if rule_labels.len() != depth || !suffix.iter().zip(&rule_labels).all(|(a, b)| a.as_slice() == *b) {
                continue;
            }
            if r.scope == Scope::Below && depth == lower.len() {
                continue;
            }
            found = match (found, r.allow) {
                (_, true) | (Some(Decision::Allowed), _) => Some(Decision::Allowed),
                _ => Some(Decision::Blocked),
            };
        }
        if let Some(d) = found {
            return d;
        }
    }
    Decision::NoMatch
}

/// The name a packet asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Asked {
    /// A DNS QNAME's labels, leftmost first, as sent.
    Dns(Vec<Vec<u8>>),
    /// A ClientHello's host_name as sent, or `None` without `server_name`.
    Tls(Option<Vec<u8>>),
}

impl fmt::Display for Asked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Asked::Dns(labels) => {
                let text: Vec<String> = labels.iter().map(|l| String::from_utf8_lossy(l).into_owned()).collect();
                write!(f, "dns {:?}", text.join("."))
            }
            Asked::Tls(Some(n)) => write!(f, "tls {:?}", String::from_utf8_lossy(n)),
            Asked::Tls(None) => write!(f, "tls (no server name)"),
        }
    }
}

/// A packet the reference judged.
#[derive(Clone, Debug)]
pub struct Judged {
    pub asked: Asked,
    /// [`Decision::NoMatch`] for a ClientHello without a name (passed by
    /// the default policy).
    pub decision: Decision,
    /// Why a Linux receiver would not take it, if it would not (module docs).
    pub refused: Option<&'static str>,
}

impl Judged {
    pub fn accepted(&self) -> bool {
        self.refused.is_none()
    }

    pub fn blocked(&self) -> bool {
        self.decision == Decision::Blocked
    }
}

/// The reference's answer for one frame.
#[derive(Clone, Debug)]
pub enum Judgement {
    Judged(Judged),
    CannotJudge(&'static str),
}

/// Where a frame's layers sit, as `etherparse` and the module's rules read
/// them; also used by the mutator to fix lengths and checksums.
#[derive(Clone, Debug)]
pub struct Layers {
    /// Offset of the IP header.
    pub l3: usize,
    pub ipv6: bool,
    /// Offset of the UDP or TCP header.
    pub l4: usize,
    /// End of the IP packet.
    pub ip_end: usize,
    /// 17 or 6.
    pub proto: u8,
    /// Transport payload: `payload.0..payload.1`.
    pub payload: (usize, usize),
    pub dport: u16,
    /// TCP flags byte (0 for UDP).
    pub tcp_flags: u8,
    /// Why Linux would not take the packet, if it would not.
    pub refused: Option<&'static str>,
}

const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_URG: u8 = 0x20;
const TCP_ACK: u8 = 0x10;

/// Parses `frame` down to the transport payload.
pub fn layers(frame: &[u8]) -> Result<Layers, &'static str> {
    let p = SlicedPacket::from_ethernet(frame).map_err(|_| "layers do not parse")?;
    let Some(LinkSlice::Ethernet2(_)) = p.link else { return Err("not Ethernet II") };
    if p.link_exts.len() > 2 {
        return Err("more than two VLAN tags");
    }
    let mut tpid_at = 12;
    for ext in &p.link_exts {
        let LinkExtSlice::Vlan(_) = ext else { return Err("a link extension other than VLAN") };
        let tpid = u16::from_be_bytes([frame[tpid_at], frame[tpid_at + 1]]);
        if tpid != 0x8100 && tpid != 0x88a8 {
            return Err("a VLAN TPID Linux does not take");
        }
        tpid_at += 4;
    }
    let base = frame.as_ptr() as usize;
    let off = |s: &[u8]| s.as_ptr() as usize - base;
    let mut refused = None;
    let (l3, ipv6, ip_end) = match &p.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header();
            if h.is_fragmenting_payload() {
                return Err("an IPv4 fragment");
            }
            let hdr = h.to_header();
            if hdr.calc_header_checksum() != hdr.header_checksum {
                refused.get_or_insert("bad IPv4 header checksum");
            }
            if !h.options().iter().all(|&b| b == 0 || b == 1) {
                refused.get_or_insert("IPv4 options other than NOP and EOL");
            }
            let l3 = off(h.slice());
            (l3, false, l3 + usize::from(h.total_len()))
        }
        Some(NetSlice::Ipv6(ip)) => {
            let h = ip.header();
            if h.payload_length() == 0 {
                return Err("an IPv6 jumbogram");
            }
            // etherparse 0.19 reads the fragment header's M flag from bit 7
            // of the offset field's low byte: RFC 8200 §4.5 puts the 13-bit
            // offset in the field's top bits and M in bit 0. Read it here.
            if ip.is_payload_fragmented() || ipv6_fragmented(ip.extensions().slice(), h.next_header().0) {
                return Err("an IPv6 fragment");
            }
            if let Some(why) = ipv6_ext_refused(ip.extensions().slice(), h.next_header().0) {
                refused.get_or_insert(why);
            }
            let l3 = off(h.slice());
            (l3, true, l3 + 40 + usize::from(h.payload_length()))
        }
        Some(_) => return Err("not IP"),
        None => return Err("no IP header"),
    };
    let (l4, proto, payload, dport, tcp_flags) = match &p.transport {
        Some(TransportSlice::Udp(u)) => {
            if u.length() < 8 {
                return Err("UDP length below 8");
            }
            let l4 = off(u.slice());
            (l4, 17, (l4 + 8, l4 + usize::from(u.length())), u.destination_port(), 0)
        }
        Some(TransportSlice::Tcp(t)) => {
            let l4 = off(t.slice());
            let flags = frame[l4 + 13];
            if flags & TCP_ACK == 0 || flags & (TCP_SYN | TCP_RST) != 0 {
                refused.get_or_insert("TCP flags a connection's data segment does not have");
            }
            (l4, 6, (l4 + t.header_len(), ip_end), t.destination_port(), flags)
        }
        _ => return Err("neither UDP nor TCP"),
    };
    let layers = Layers { l3, ipv6, l4, ip_end, proto, payload, dport, tcp_flags, refused };
    if checksum(frame, &layers) != Some(0) {
        let zero_udp4 = proto == 17 && !ipv6 && frame[l4 + 6..l4 + 8] == [0, 0];
        if !zero_udp4 {
            let l = Layers { refused: layers.refused.or(Some("bad transport checksum")), ..layers };
            return Ok(l);
        }
    }
    Ok(layers)
}

/// Why Linux would not take an IPv6 packet with these extension headers
/// (`exts`, the bytes between the fixed header and the transport header,
/// the first of type `first`), if it would not.
fn ipv6_ext_refused(exts: &[u8], first: u8) -> Option<&'static str> {
    let (mut at, mut next, mut index) = (0, first, 0);
    while at < exts.len() {
        let hdr = exts.get(at..at + 2)?;
        let len = match next {
            0 | 43 | 60 => 8 * (usize::from(hdr[1]) + 1),
            44 => 8,
            _ => return Some("an IPv6 extension header Linux may refuse"),
        };
        let body = exts.get(at + 2..at + len)?;
        match next {
            0 if index > 0 => return Some("hop-by-hop options not first"),
            0 | 60 if !only_padding(body) => return Some("IPv6 options other than padding"),
            // Segment routing headers (type 4) are dropped unless seg6 is
            // enabled, type 0 unless source routing is; others need Mobile
            // IPv6 or go elsewhere.
            43 => return Some("a routing header"),
            _ => {}
        }
        next = hdr[0];
        at += len;
        index += 1;
    }
    None
}

/// Whether a fragment header among the extension headers `exts` (the
/// first of type `first`) has a non-zero offset or M set (RFC 8200 §4.5).
fn ipv6_fragmented(exts: &[u8], first: u8) -> bool {
    let (mut at, mut next) = (0, first);
    while let Some(hdr) = exts.get(at..at + 4) {
        let len = match next {
            0 | 43 | 60 => 8 * (usize::from(hdr[1]) + 1),
            44 => {
                // Offset in the top 13 bits, two reserved bits, M in bit 0.
                let field = u16::from_be_bytes([hdr[2], hdr[3]]);
                if field >> 3 != 0 || field & 1 != 0 {
                    return true;
                }
                8
            }
            51 => 4 * (usize::from(hdr[1]) + 2),
            _ => return false,
        };
        next = hdr[0];
        at += len;
    }
    false
}

/// Whether TLV options are `Pad1` and `PadN` only (RFC 8200 §4.2).
fn only_padding(mut opts: &[u8]) -> bool {
    while let Some(&t) = opts.first() {
        match t {
            0 => opts = &opts[1..],
            1 => match opts.get(1) {
                Some(&l) if opts.len() >= 2 + usize::from(l) => opts = &opts[2 + usize::from(l)..],
                _ => return false,
            },
            _ => return false,
        }
    }
    true
}

/// The UDP or TCP checksum over the pseudo-header, header and payload as
/// the packet has them: `Some(0)` when the checksum field is right.
pub fn checksum(frame: &[u8], l: &Layers) -> Option<u16> {
    let seg = frame.get(l.l4..if l.proto == 17 { l.payload.1 } else { l.ip_end })?;
    let mut sum: u32 = 0;
    if l.ipv6 {
        sum = add(sum, frame.get(l.l3 + 8..l.l3 + 40)?);
    } else {
        sum = add(sum, frame.get(l.l3 + 12..l.l3 + 20)?);
    }
    sum = add(sum, &[0, l.proto]);
    sum = add(sum, &(seg.len() as u32).to_be_bytes()[if l.ipv6 { 0 } else { 2 }..]);
    sum = add(sum, seg);
    Some(!fold(sum))
}

/// One's complement sum of `bytes` (RFC 1071) added to `sum`, unfolded.
pub fn add(mut sum: u32, bytes: &[u8]) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        if sum > 0xffff {
            sum = (sum & 0xffff) + 1;
        }
    }
    if let [b] = chunks.remainder() {
        sum += u32::from(*b) << 8;
    }
    sum
}

pub fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Judges `frame`.
pub fn judge(frame: &[u8]) -> Judgement {
    let l = match layers(frame) {
        Ok(l) => l,
        Err(why) => return Judgement::CannotJudge(why),
    };
    let payload = &frame[l.payload.0..l.payload.1];
    let asked = if l.dport == 53 {
        let msg = if l.proto == 17 {
            payload
        } else {
            if l.tcp_flags & (TCP_SYN | TCP_RST | TCP_URG) != 0 {
                return Judgement::CannotJudge("DNS over TCP with SYN, RST or URG");
            }
            match tcp_dns_message(payload) {
                Ok(m) => m,
                Err(why) => return Judgement::CannotJudge(why),
            }
        };
        match dns_question(msg) {
            Ok(labels) => Asked::Dns(labels),
            Err(why) => return Judgement::CannotJudge(why),
        }
    } else if l.proto == 6 {
        if l.tcp_flags & (TCP_SYN | TCP_RST) != 0 {
            return Judgement::CannotJudge("a TCP SYN or RST");
        }
        match client_hello(payload) {
            Ok((name, strict)) => {
                let refused = l.refused.or(strict.err());
                return Judgement::Judged(judged(Asked::Tls(name), refused));
            }
            Err(why) => return Judgement::CannotJudge(why),
        }
    } else {
        return Judgement::CannotJudge("UDP to a port other than 53");
    };
    Judgement::Judged(judged(asked, l.refused))
}

fn judged(asked: Asked, refused: Option<&'static str>) -> Judged {
    let decision = match &asked {
        Asked::Dns(labels) => decide(labels),
        Asked::Tls(Some(name)) => {
            let text = name.strip_suffix(b".").unwrap_or(name);
            decide(&text.split(|&b| b == b'.').map(<[u8]>::to_vec).collect::<Vec<_>>())
        }
        Asked::Tls(None) => Decision::NoMatch,
    };
    Judged { asked, decision, refused }
}

/// The one DNS message a TCP segment holds whole, after its length prefix
/// (RFC 1035 §4.2.2): with the flow table emptied after every packet, the
/// segment is the first of its connection the filter sees, taken for the
/// start of a message.
fn tcp_dns_message(payload: &[u8]) -> Result<&[u8], &'static str> {
    let Some(&[hi, lo]) = payload.get(..2) else { return Err("no DNS-over-TCP length prefix") };
    let msg = &payload[2..];
    if msg.len() != usize::from(u16::from_be_bytes([hi, lo])) {
        return Err("not exactly one whole DNS message in the TCP segment");
    }
    Ok(msg)
}

/// The labels of the one question of a DNS query.
fn dns_question(msg: &[u8]) -> Result<Vec<Vec<u8>>, &'static str> {
    let mut d = BinDecoder::new(msg);
    let h = Header::read(&mut d).map_err(|_| "no DNS header")?;
    if h.message_type() != MessageType::Query {
        return Err("a DNS response");
    }
    if h.op_code() != OpCode::Query {
        return Err("a DNS opcode other than QUERY");
    }
    if h.query_count() != 1 {
        return Err("not exactly one question");
    }
    let start = d.index();
    let name = Name::read(&mut d).map_err(|_| "the QNAME does not parse")?;
    let labels: Vec<Vec<u8>> = name.iter().map(<[u8]>::to_vec).collect();
    let wire: usize = labels.iter().map(|l| l.len() + 1).sum::<usize>() + 1;
    if d.index() - start != wire {
        return Err("a compressed QNAME");
    }
    d.read_u16().map_err(|_| "no QTYPE")?;
    d.read_u16().map_err(|_| "no QCLASS")?;
    Ok(labels)
}

/// Most records a ClientHello may span here (the kernel's documented bound).
const MAX_RECORDS: usize = 64;

/// The host_name of the ClientHello that starts `payload` (`None` without
/// `server_name`), and whether it meets RFC 8446 §4.1.2's bounds.
#[expect(clippy::type_complexity, reason = "a name and a verdict on its container")]
fn client_hello(payload: &[u8]) -> Result<(Option<Vec<u8>>, Result<(), &'static str>), &'static str> {
    // The handshake bytes of the records, until the first message is whole.
    let mut hs = Vec::new();
    let mut at = 0;
    let mut records = 0;
    loop {
        if hs.len() >= 4 {
            let len = usize::from(hs[1]) << 16 | usize::from(hs[2]) << 8 | usize::from(hs[3]);
            if hs.len() >= 4 + len {
                hs.truncate(4 + len);
                break;
            }
        }
        if records == MAX_RECORDS {
            return Err("a ClientHello in more than 64 records");
        }
        let Some(h) = payload.get(at..at + 5) else { return Err("no whole ClientHello in the segment") };
        if h[0] != 22 {
            return Err("not a handshake record");
        }
        if h[1] != 3 || h[2] > 4 {
            return Err("a TLS record version outside 3.0..=3.4");
        }
        let len = usize::from(u16::from_be_bytes([h[3], h[4]]));
        if len == 0 || len > 1 << 14 {
            return Err("a record length outside 1..=2^14");
        }
        let Some(frag) = payload.get(at + 5..at + 5 + len) else { return Err("a record cut short") };
        hs.extend_from_slice(frag);
        at += 5 + len;
        records += 1;
    }
    if hs[0] != 1 {
        return Err("not a ClientHello");
    }
    let body = &hs[4..];
    let (rest, ch) =
        tls_parser::parse_tls_handshake_client_hello(body).map_err(|_| "the ClientHello does not parse")?;
    if !rest.is_empty() {
        return Err("bytes after the extensions");
    }
    let strict = if ch.ciphers.is_empty() {
        Err("no cipher suites")
    } else if ch.comp.is_empty() {
        Err("no compression methods")
    } else {
        Ok(())
    };
    let Some(ext) = ch.ext else { return Ok((None, strict)) };
    let (rest, exts) = tls_parser::parse_tls_client_hello_extensions(ext).map_err(|_| "the extensions do not parse")?;
    if !rest.is_empty() {
        return Err("an extension does not parse");
    }
    let snis: Vec<&Vec<(SNIType, &[u8])>> =
        exts.iter().filter_map(|e| if let TlsExtension::SNI(v) = e { Some(v) } else { None }).collect();
    let entries = match snis.as_slice() {
        [] => return Ok((None, strict)),
        [one] => one,
        _ => return Err("two server_name extensions"),
    };
    let [(SNIType::HostName, name)] = entries.as_slice() else {
        return Err("a server_name list other than one host_name");
    };
    // RFC 6066 §3: the list fills the extension, the entry the list; tls-parser
    // ignores bytes after them.
    let raw = raw_extension(ext, 0).ok_or("no raw server_name extension")?;
    if raw.len() != 2 + 3 + name.len() || usize::from(u16::from_be_bytes([raw[0], raw[1]])) != raw.len() - 2 {
        return Err("server_name lengths do not fill the extension");
    }
    text_name(name)?;
    Ok((Some(name.to_vec()), strict))
}

/// The data of the first extension of type `typ` in the extension block `block`.
fn raw_extension(block: &[u8], typ: u16) -> Option<&[u8]> {
    let mut at = 0;
    while at < block.len() {
        let t = u16::from_be_bytes([*block.get(at)?, *block.get(at + 1)?]);
        let len = usize::from(u16::from_be_bytes([*block.get(at + 2)?, *block.get(at + 3)?]));
        let data = block.get(at + 4..at + 4 + len)?;
        if t == typ {
            return Some(data);
        }
        at += 4 + len;
    }
    None
}

/// A host_name the filter can judge: labels of 1..=63 bytes, at most 253
/// bytes without one optional trailing dot.
fn text_name(name: &[u8]) -> Result<(), &'static str> {
    let text = name.strip_suffix(b".").unwrap_or(name);
    if text.is_empty() || text.len() > 253 {
        return Err("a host_name of a length no DNS name has");
    }
    if text.split(|&b| b == b'.').any(|l| l.is_empty() || l.len() > 63) {
        return Err("a host_name label that is empty or too long");
    }
    Ok(())
}

/// The labels of the wire-format name at the start of `wire` (for reading
/// the kernel's traced QNAME back); `None` if it is not a plain name.
pub fn wire_labels(wire: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut labels = Vec::new();
    let mut at = 0;
    loop {
        let len = usize::from(*wire.get(at)?);
        if len == 0 {
            return (at + 1 == wire.len()).then_some(labels);
        }
        if len > 63 {
            return None;
        }
        labels.push(wire.get(at + 1..at + 1 + len)?.to_vec());
        at += 1 + len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(name: &str) -> Vec<Vec<u8>> {
        name.split('.').filter(|l| !l.is_empty()).map(|l| l.as_bytes().to_vec()).collect()
    }

    #[test]
    fn suffix_semantics() {
        for (name, want) in [
            ("ads.example", Decision::Blocked),
            ("x.y.ADS.example", Decision::Blocked),
            ("ok.ads.example", Decision::Allowed),
            ("deep.OK.ads.example", Decision::Allowed),
            ("notads.example", Decision::NoMatch),
            ("example", Decision::NoMatch),
            ("wild.example", Decision::NoMatch),
            ("a.wild.example", Decision::Blocked),
            ("fine.a", Decision::Allowed),
            ("x.a", Decision::Blocked),
            ("", Decision::NoMatch),
        ] {
            assert_eq!(decide(&labels(name)), want, "{name}");
        }
    }

    #[test]
    fn list_texts_name_every_rule() {
        let (block, allow) = list_texts();
        assert_eq!(block.lines().count() + allow.lines().count(), RULES.len());
        assert!(block.contains("*.wild.example\n"));
        assert!(allow.contains("ok.ads.example\n"));
    }

    #[test]
    fn text_names() {
        assert!(text_name(b"a.example.").is_ok());
        assert!(text_name(b"a..example").is_err());
        assert!(text_name(b".").is_err());
        assert!(text_name(&[b'a'; 64]).is_err());
    }

    #[test]
    fn ipv6_fragments_as_rfc_8200_lays_them_out() {
        // Fragment header: next UDP, offset 8 (0x0040), M clear: a later fragment.
        assert!(ipv6_fragmented(&[17, 0, 0, 0x40, 0, 0, 0, 7], 44));
        assert!(ipv6_fragmented(&[17, 0, 0, 0x01, 0, 0, 0, 7], 44));
        // Reserved bits only: an atomic fragment.
        assert!(!ipv6_fragmented(&[17, 0, 0, 0x06, 0, 0, 0, 7], 44));
        // Behind a destination options header.
        assert!(ipv6_fragmented(&[44, 0, 1, 4, 0, 0, 0, 0, 17, 0, 0, 0x40, 0, 0, 0, 7], 60));
    }

    #[test]
    fn wire_labels_read_plain_names_only() {
        assert_eq!(wire_labels(b"\x03www\x07example\x00"), Some(labels("www.example")));
        assert_eq!(wire_labels(b"\x00"), Some(Vec::new()));
        assert_eq!(wire_labels(b"\xc0\x0c"), None);
        assert_eq!(wire_labels(b"\x03www\x00junk"), None);
    }
}
