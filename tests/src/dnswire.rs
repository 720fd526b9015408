//! DNS messages for tests: real queries built with hickory-proto, hand-made
//! wire bytes for malformed ones, and checks of the answers the program
//! writes (checksums recomputed independently, DNS parsed by hickory).

use std::str::FromStr as _;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query},
    rr::{Name, RecordType},
};

/// A name for a query with its case kept. `Name::from_str` runs UTS #46,
/// which lower-cases ASCII; only names that are not ASCII go through it
/// (and come out as punycode, as a client would send them).
fn name_as_given(name: &str) -> Name {
    Name::from_ascii(name).or_else(|_| Name::from_str(name)).expect("test name")
}

/// A query as a stub resolver sends it: RD set, EDNS OPT with a 1232-byte
/// buffer (like dig), the name's case as given.
pub fn query(name: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(0xbeef).set_message_type(MessageType::Query).set_op_code(OpCode::Query).set_recursion_desired(true);
    m.add_query(Query::query(name_as_given(name), qtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    m.set_edns(edns);
    m.to_vec().expect("encode query")
}

/// A query without EDNS, the name's case as given.
pub fn query_plain(name: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(0x1234).set_message_type(MessageType::Query).set_op_code(OpCode::Query).set_recursion_desired(true);
    m.add_query(Query::query(name_as_given(name), qtype));
    m.to_vec().expect("encode query")
}

/// Wire-format name from dotted text, case kept, no validation (so tests
/// can build names a library would refuse).
pub fn wire_name(text: &str) -> Vec<u8> {
    let mut v = Vec::new();
    for label in text.split('.').filter(|l| !l.is_empty()) {
        v.push(label.len() as u8);
        v.extend_from_slice(label.as_bytes());
    }
    v.push(0);
    v
}

/// A hand-made message: header with `flags` and `qdcount`, then `question`
/// bytes as given (QNAME, QTYPE, QCLASS or anything else).
pub fn raw_message(flags: u16, qdcount: u16, question: &[u8]) -> Vec<u8> {
    let mut v = vec![0xab, 0xcd];
    v.extend_from_slice(&flags.to_be_bytes());
    v.extend_from_slice(&qdcount.to_be_bytes());
    v.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    v.extend_from_slice(question);
    v
}

/// A hand-made query (RD set) for a wire name with QTYPE A, QCLASS IN.
pub fn raw_query(qname: &[u8]) -> Vec<u8> {
    let mut q = qname.to_vec();
    q.extend_from_slice(&[0, 1, 0, 1]);
    raw_message(0x0100, 1, &q)
}

/// An answer frame taken apart, its checksums verified.
#[derive(Debug)]
pub struct Answer {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub vlan_ids: Vec<u16>,
    pub src_ip: std::net::IpAddr,
    pub dst_ip: std::net::IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub ttl: u8,
    /// IPv4 options or IPv6 extension headers left in the answer.
    pub ip_extras: usize,
    /// The UDP payload: the DNS message as bytes.
    pub payload: Vec<u8>,
    pub message: Message,
}

/// Parses a frame written by the program as a DNS answer over UDP and
/// checks the IPv4 header checksum, the UDP checksum and the lengths.
pub fn parse_answer(frame: &[u8]) -> Result<Answer, String> {
    let p = SlicedPacket::from_ethernet(frame).map_err(|e| format!("not a valid frame: {e}"))?;
    let eth = match &p.link {
        Some(etherparse::LinkSlice::Ethernet2(e)) => e,
        other => return Err(format!("no Ethernet II header: {other:?}")),
    };
    let vlan_ids = p.vlan_ids().iter().map(|v| v.value()).collect();
    let Some(TransportSlice::Udp(udp)) = &p.transport else {
        return Err(format!("not UDP: {:?}", p.transport));
    };
    let payload = udp.payload();
    if udp.length() as usize != 8 + payload.len() {
        return Err(format!("UDP length {} but {} bytes of payload", udp.length(), payload.len()));
    }
    let (src_ip, dst_ip, ttl, ip_extras, want_sum) = match &p.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header().to_header();
            if h.calc_header_checksum() != h.header_checksum {
                return Err(format!(
                    "bad IPv4 header checksum {:#06x}, want {:#06x}",
                    h.header_checksum,
                    h.calc_header_checksum()
                ));
            }
            if h.total_len as usize != h.header_len() + 8 + payload.len() {
                return Err(format!("IPv4 total length {} is wrong", h.total_len));
            }
            let sum = udp.to_header().calc_checksum_ipv4(&h, payload).map_err(|e| e.to_string())?;
            (h.source.into(), h.destination.into(), h.time_to_live, h.options.len(), sum)
        }
        Some(NetSlice::Ipv6(ip)) => {
            let h = ip.header().to_header();
            let exts = ip.extensions().slice().len();
            if h.payload_length as usize != exts + 8 + payload.len() {
                return Err(format!("IPv6 payload length {} is wrong", h.payload_length));
            }
            let sum = udp.to_header().calc_checksum_ipv6(&h, payload).map_err(|e| e.to_string())?;
            (h.source.into(), h.destination.into(), h.hop_limit, exts, sum)
        }
        other => return Err(format!("no IP header: {other:?}")),
    };
    if udp.checksum() != want_sum {
        return Err(format!("bad UDP checksum {:#06x}, want {want_sum:#06x}", udp.checksum()));
    }
    let message = Message::from_vec(payload).map_err(|e| format!("DNS does not parse: {e}"))?;
    Ok(Answer {
        dst_mac: eth.destination(),
        src_mac: eth.source(),
        vlan_ids,
        src_ip,
        dst_ip,
        sport: udp.source_port(),
        dport: udp.destination_port(),
        ttl,
        ip_extras,
        payload: payload.to_vec(),
        message,
    })
}

/// `msg`, a message without additional records, with an EDNS OPT record
/// (RFC 6891 §6.1.2) holding a padding option (RFC 7830) of `n` zero bytes:
/// a legitimate way to make a query as long as a test needs.
pub fn with_padding(msg: &[u8], n: u16) -> Vec<u8> {
    let mut v = msg.to_vec();
    v[10..12].copy_from_slice(&1u16.to_be_bytes());
    // Root owner, TYPE 41, CLASS = UDP payload size 1232, TTL 0 (extended RCODE and flags).
    v.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0]);
    v.extend_from_slice(&(n + 4).to_be_bytes());
    v.extend_from_slice(&12u16.to_be_bytes());
    v.extend_from_slice(&n.to_be_bytes());
    v.resize(v.len() + usize::from(n), 0);
    v
}

/// Length of the question section (QNAME, QTYPE, QCLASS) of a message whose
/// first question is a plain, uncompressed name held whole in `msg`.
pub fn question_len(msg: &[u8]) -> Option<usize> {
    let mut i = 12;
    loop {
        let len = *msg.get(i)?;
        if len == 0 {
            break;
        }
        if len & 0xc0 != 0 {
            return None;
        }
        i += 1 + usize::from(len);
    }
    let end = i + 1 + 4;
    (end <= msg.len()).then_some(end - 12)
}
