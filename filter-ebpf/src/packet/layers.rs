//! Ethernet, VLAN, IPv4/IPv6 and UDP/TCP, parsed once by the entry stage
//! down to the transport payload, and handed to the next stage.

use aya_ebpf::programs::XdpContext;
use maps::{Counter, Handoff, handoff};

use super::{
    Packet,
    headers::{
        ETH_P_IPV4, ETH_P_IPV6, EthHdr, ExtHdr, FragHead, Header as _, IPPROTO_TCP, IPPROTO_UDP, IPV6_AH,
        IPV6_DEST_OPTS, IPV6_FRAGMENT, IPV6_HOP_BY_HOP, IPV6_ROUTING, Ipv4Hdr, Ipv6Hdr, Ipv6Head, TcpHead, UdpHdr,
        VlanHdr, is_vlan,
    },
};

/// Most VLAN tags followed (802.1Q inside 802.1ad).
pub const MAX_VLAN_TAGS: usize = 2;
// `parse` follows exactly this many tags, written out.
const _: () = assert!(MAX_VLAN_TAGS == 2);
/// Most IPv6 extension headers followed before giving up.
pub const MAX_IPV6_EXT: usize = 6;
/// Furthest the transport header may start; deeper means extension headers
/// longer than any real traffic carries (counted as `ipv6_ext_too_deep`).
/// Keeping offsets small lets the verifier bound every packet access.
pub const MAX_L4_OFF: usize = 2048;
/// Most payload bytes the stages look at: a TCP length prefix, a DNS
/// header and the longest question fit with room to spare, as does the
/// part of a ClientHello segment the TLS parser copies.
pub const MAX_PAYLOAD_SEEN: usize = 4096;

/// End of the largest IP packet judged: an IPv4 or IPv6 length field says
/// at most 65535 bytes past the start of the IP header; only an IPv6
/// jumbogram (RFC 2675) says more, up to the frame's end.
pub const MAX_IP_END: usize = 0x1_ffff;

pub const DNS_PORT: u16 = 53;

const ETH_HLEN: usize = 14;

/// Where the layers of a packet sit. All offsets are from the start of the
/// frame.
#[derive(Clone, Copy)]
pub struct Layers {
    /// Ethernet header plus VLAN tags.
    pub l2_len: usize,
    /// Number of VLAN tags (0..=2).
    pub vlan_tags: usize,
    pub ipv6: bool,
    /// Start of the UDP/TCP header; `l4_off - l2_len - fixed IP header` is
    /// the length of IPv4 options or IPv6 extension headers.
    pub l4_off: usize,
    pub proto: u8,
    /// Destination port.
    pub dport: u16,
    /// Start of the transport payload.
    pub payload_off: usize,
    /// End of the transport payload as the IP/UDP lengths say (never past
    /// the frame; Ethernet padding lies beyond it), at most
    /// [`MAX_PAYLOAD_SEEN`] bytes after its start. In a multi-buffer frame
    /// it may lie past the first buffer: read beyond the headers with
    /// `bpf_xdp_load_bytes`.
    pub payload_end: usize,
    /// End of the IP packet (not clamped): TCP sequence numbers count to here.
    pub ip_end: usize,
}

impl Layers {
    /// Length of the fixed IP header.
    #[inline(always)]
    pub fn ip_fixed_len(&self) -> usize {
        if self.ipv6 { 40 } else { 20 }
    }

    /// Offset of the source address, and the length of each address; the
    /// destination address follows the source.
    #[inline(always)]
    pub fn addrs(&self) -> (usize, usize) {
        if self.ipv6 { (self.l2_len + Ipv6Hdr::ADDRS, 16) } else { (self.l2_len + Ipv4Hdr::ADDRS, 4) }
    }

    /// Bytes of transport payload in the IP packet.
    #[inline(always)]
    pub fn payload_len(&self) -> usize {
        self.ip_end - self.payload_off
    }

    /// Leaves the layers in `h` for the next stage.
    #[inline(always)]
    pub fn hand_off(&self, h: &mut Handoff) {
        h.l2_len = self.l2_len as u16;
        h.vlan_tags = self.vlan_tags as u8;
        h.l4_off = self.l4_off as u16;
        h.payload_off = self.payload_off as u16;
        h.payload_end = self.payload_end as u16;
        h.ip_end = self.ip_end as u32;
        h.dport = self.dport;
        h.proto = self.proto;
        h.flags = if self.ipv6 { handoff::IPV6 } else { 0 };
    }

    /// The layers the entry stage left, with the bounds [`parse`]
    /// guarantees restored as masks: read from map memory they are unknown
    /// to the verifier, which needs them to bound packet accesses (offset
    /// plus access size at most 0xffff). The masks never change a value:
    /// `l4_off <= 2048`, `payload_off <= 2048 + 60`, `payload_end <=
    /// payload_off + 4096` and `ip_end <= MAX_IP_END`.
    #[inline(always)]
    pub fn taken_over(h: &Handoff) -> Self {
        Self {
            l2_len: (h.l2_len & 0x1f) as usize,
            vlan_tags: (h.vlan_tags & 0x3) as usize,
            ipv6: h.flags & handoff::IPV6 != 0,
            l4_off: (h.l4_off & 0xfff) as usize,
            proto: h.proto,
            dport: h.dport,
            payload_off: (h.payload_off & 0xfff) as usize,
            payload_end: (h.payload_end & 0x1fff) as usize,
            ip_end: h.ip_end as usize & MAX_IP_END,
        }
    }
}

#[inline(always)]
fn min(a: usize, b: usize) -> usize {
    if a < b { a } else { b }
}

/// Parses down to the transport payload of what the program judges: UDP and
/// TCP to port 53 (DNS), TCP to any other port (TLS flow tracking), UDP
/// long-header packets (QUIC Initial candidates); or says why not. `pkt`
/// covers only the first buffer of a multi-buffer frame; `ctx` answers for
/// the whole frame when needed.
#[inline(always)]
pub fn parse(ctx: &XdpContext, pkt: &Packet) -> Result<Layers, Counter> {
    // Untagged IPv4 and IPv6 first, in straight-line code: this runs for
    // every packet and the verifier-friendly loop cost more than the rest of
    // the header parsing.
    let outer = pkt.header::<EthHdr>(0).ok_or(Counter::TruncatedHeader)?.ethertype();
    let (ethertype, l2_len, vlan_tags) = if outer == ETH_P_IPV4 || outer == ETH_P_IPV6 {
        (outer, ETH_HLEN, 0)
    } else if is_vlan(outer) {
        let inner = pkt.header::<VlanHdr>(ETH_HLEN).ok_or(Counter::TruncatedHeader)?.inner();
        if is_vlan(inner) {
            let third = pkt.header::<VlanHdr>(ETH_HLEN + VlanHdr::LEN).ok_or(Counter::TruncatedHeader)?.inner();
            if is_vlan(third) {
                return Err(Counter::VlanTooDeep);
            }
            (third, ETH_HLEN + 2 * VlanHdr::LEN, 2)
        } else {
            (inner, ETH_HLEN + VlanHdr::LEN, 1)
        }
    } else {
        return Err(Counter::NotIp);
    };
    let l3 = l2_len;
    let (ipv6, ip) = if ethertype == ETH_P_IPV4 {
        (false, parse_ipv4(pkt, l3)?)
    } else if ethertype == ETH_P_IPV6 {
        (true, parse_ipv6(ctx, pkt, l3)?)
    } else {
        return Err(Counter::NotIp);
    };
    let Ip { proto, l4_off, end: ip_end, first_fragment } = ip;
    if l4_off > MAX_L4_OFF {
        return Err(Counter::Ipv6ExtTooDeep);
    }
    let layers = |dport, payload_off, payload_end| Layers {
        l2_len,
        vlan_tags,
        ipv6,
        l4_off,
        proto,
        dport,
        payload_off,
        payload_end: min(payload_end, payload_off + MAX_PAYLOAD_SEEN),
        ip_end,
    };
    match proto {
        IPPROTO_UDP => {
            let udp = pkt.header::<UdpHdr>(l4_off).ok_or(Counter::TruncatedHeader)?;
            let (dport, udp_len) = (udp.dport(), udp.len());
            let payload_off = l4_off + UdpHdr::LEN;
            if dport != DNS_PORT {
                // Only a long-header packet can be a QUIC Initial; anything
                // else is done with here, cheaply.
                return match pkt.u8(payload_off) {
                    Some(b) if b & 0xc0 == 0xc0 && !first_fragment => Ok(layers(dport, payload_off, ip_end)),
                    _ => Err(Counter::NotDnsPort),
                };
            }
            if first_fragment {
                return Err(Counter::FirstFragment);
            }
            check_ip_end(ctx, pkt, ip_end)?;
            // A UDP length beyond the IP payload: Linux drops the datagram
            // (udp_rcv's "short packet"); shorter is legal, the rest is padding.
            if udp_len < UdpHdr::LEN || l4_off + udp_len > ip_end {
                return Err(Counter::BadHeader);
            }
            Ok(layers(dport, payload_off, l4_off + udp_len))
        }
        IPPROTO_TCP => {
            let tcp = pkt.header::<TcpHead>(l4_off).ok_or(Counter::TruncatedHeader)?;
            let (dport, doff) = (tcp.dport(), tcp.header_len());
            if first_fragment {
                return Err(Counter::FirstFragment);
            }
            check_ip_end(ctx, pkt, ip_end)?;
            let payload_off = l4_off + doff;
            // Data offset shorter than the fixed header or past the packet's end.
            if doff < 20 || payload_off > ip_end {
                return Err(Counter::BadHeader);
            }
            // Segments without payload matter to TLS flow tracking (SYN,
            // later packets of blocked flows), not to DNS.
            if payload_off == ip_end && dport == DNS_PORT {
                return Err(Counter::TcpNoPayload);
            }
            Ok(layers(dport, payload_off, ip_end))
        }
        _ => Err(Counter::NotUdpTcp),
    }
}

/// A frame shorter than the IP packet it carries was cut short; Linux drops
/// it as truncated (`ip_rcv_core`, `ipv6_rcv`). It is never judged, even
/// when the cut spared the question: no server would see that query. Bytes
/// beyond the IP packet are Ethernet padding and are ignored. Checked only
/// after the port: UDP to other ports is not judged and should cost as
/// little as possible.
#[inline(always)]
fn check_ip_end(ctx: &XdpContext, pkt: &Packet, ip_end: usize) -> Result<(), Counter> {
    if pkt.frame_has(ctx, ip_end) { Ok(()) } else { Err(Counter::BadHeader) }
}

/// What the IP layer says.
struct Ip {
    proto: u8,
    /// Start of the transport header.
    l4_off: usize,
    /// End of the IP packet.
    end: usize,
    /// The first fragment of a fragmented datagram.
    first_fragment: bool,
}

/// Parses an IPv4 header.
#[inline(always)]
fn parse_ipv4(pkt: &Packet, l3: usize) -> Result<Ip, Counter> {
    let h = pkt.header::<Ipv4Hdr>(l3).ok_or(Counter::TruncatedHeader)?;
    if h.version() != 4 {
        return Err(Counter::BadHeader);
    }
    let (ihl, total) = (h.header_len(), h.total_len());
    if ihl < 20 || total < ihl {
        return Err(Counter::BadHeader);
    }
    // Only the first fragment (offset 0) carries the transport header; a
    // datagram in fragments is not reassembled here.
    if h.frag_offset() != 0 {
        return Err(Counter::IpFragment);
    }
    Ok(Ip { proto: h.proto(), l4_off: l3 + ihl, end: l3 + total, first_fragment: h.more_fragments() })
}

/// Parses an IPv6 header, following up to [`MAX_IPV6_EXT`] extension headers.
#[inline(always)]
fn parse_ipv6(ctx: &XdpContext, pkt: &Packet, l3: usize) -> Result<Ip, Counter> {
    let h = pkt.header::<Ipv6Head>(l3).ok_or(Counter::TruncatedHeader)?;
    if h.version() != 6 {
        return Err(Counter::BadHeader);
    }
    let payload_len = h.payload_len();
    let mut next = h.next_header();
    // A zero payload length means a jumbogram (RFC 2675), which needs the
    // hop-by-hop jumbo option: up to the frame's end. Without a hop-by-hop
    // header it is a malformed packet (ipv6_rcv would cut it to 40 bytes).
    if payload_len == 0 && next != IPV6_HOP_BY_HOP {
        return Err(Counter::BadHeader);
    }
    let end = if payload_len == 0 { Packet::frame_len(ctx) } else { l3 + Ipv6Hdr::LEN + payload_len };
    // The stages take `ip_end` back masked to 17 bits (`Layers::taken_over`):
    // a jumbogram frame longer than that cannot be judged.
    if end > MAX_IP_END {
        return Err(Counter::BadHeader);
    }
    let mut off = l3 + Ipv6Hdr::LEN;
    let mut first_fragment = false;
    for _ in 0..MAX_IPV6_EXT {
        match next {
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS | IPV6_AH => {
                let e = pkt.header::<ExtHdr>(off).ok_or(Counter::TruncatedHeader)?;
                off += e.header_len(next);
                next = e.next_header;
            }
            IPV6_FRAGMENT => {
                let f = pkt.header::<FragHead>(off).ok_or(Counter::TruncatedHeader)?;
                if f.offset() != 0 {
                    return Err(Counter::IpFragment);
                }
                first_fragment = true;
                next = f.next_header;
                off += FragHead::HEADER_LEN;
            }
            _ => break,
        }
    }
    match next {
        IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS | IPV6_AH | IPV6_FRAGMENT => Err(Counter::Ipv6ExtTooDeep),
        _ => Ok(Ip { proto: next, l4_off: off, end, first_fragment }),
    }
}
