//! DNS messages for tests: real queries built with hickory-proto, hand-made
//! wire bytes for malformed ones, and checks of the answers the program
//! writes (checksums recomputed independently, DNS parsed by hickory).

use std::str::FromStr as _;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query},
    rr::{Name, RecordType},
};

/// A query as a stub resolver sends it: RD set, EDNS OPT with a 1232-byte
/// buffer (like dig), the name's case as given.
pub fn query(name: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(0xbeef).set_message_type(MessageType::Query).set_op_code(OpCode::Query).set_recursion_desired(true);
    m.add_query(Query::query(Name::from_str(name).expect("test name"), qtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    m.set_edns(edns);
    m.to_vec().expect("encode query")
}

/// A query without EDNS.
pub fn query_plain(name: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(0x1234).set_message_type(MessageType::Query).set_op_code(OpCode::Query).set_recursion_desired(true);
    m.add_query(Query::query(Name::from_str(name).expect("test name"), qtype));
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
                return Err(format!("bad IPv4 header checksum {:#06x}, want {:#06x}", h.header_checksum, h.calc_header_checksum()));
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
        message,
    })
}
