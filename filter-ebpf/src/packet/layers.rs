//! Ethernet, VLAN tags, PPPoE, IPv4/IPv6 (options, extension headers,
//! fragments) and UDP/TCP, parsed once by the entry stage down to the
//! transport payload, and handed to the next stage.

use aya_ebpf::programs::XdpContext;
use maps::{Counter, Handoff, handoff, layout::flow};

use super::{
    Packet,
    headers::{
        ETH_P_IPV4, ETH_P_IPV6, ETH_P_PPPOE_SES, EthHdr, ExtHdr, FragHdr, Header as _, IPPROTO_TCP, IPPROTO_UDP,
        IPV6_AH, IPV6_DEST_OPTS, IPV6_FRAGMENT, IPV6_HOP_BY_HOP, IPV6_ROUTING, Ipv4Hdr, Ipv6Hdr, Ipv6Head, PPP_IPV4,
        PPP_IPV6, PppoeHdr, TCP_ACK, TCP_RST, TCP_SYN, TcpHead, UdpHdr, VlanHdr, is_vlan,
    },
};
use crate::{tables::scratch, verifier};

/// Most VLAN tags followed (802.1Q, 802.1ad, and stacks of them as some
/// access networks use). A frame with more is not judged (`vlan_too_deep`,
/// under the "cannot judge" policy): a client must not hide a query behind
/// one more tag than the filter reads.
pub const MAX_VLAN_TAGS: usize = 4;
/// Longest layer-2 header: Ethernet, [`MAX_VLAN_TAGS`] tags and a PPPoE
/// session header with its PPP protocol number.
pub const MAX_L2_LEN: usize = ETH_HLEN + 4 * MAX_VLAN_TAGS + PppoeHdr::LEN;
const _: () = assert!(MAX_L2_LEN <= 0x3f);
/// Most IPv6 extension headers followed; more are not judged
/// (`ipv6_ext_too_deep`, under the "cannot judge" policy). Real traffic
/// carries one or two (hop-by-hop, a fragment header, a routing header).
pub const MAX_IPV6_EXT: usize = 8;
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

/// Whether a packet is a fragment of a larger datagram.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fragment {
    /// A whole datagram (an atomic IPv6 fragment included).
    Whole,
    /// The first fragment: it holds the transport header and the start of
    /// the payload; the datagram goes on in fragments not reassembled here.
    First,
    /// A later fragment: no transport header. Only its layer-2 and IP
    /// fields in [`Layers`] mean anything.
    Later,
    /// A first fragment too short for its transport header (RFC 1858
    /// §3.1): as for [`Fragment::Later`], only layer 2 and IP are known.
    Tiny,
}

/// A packet's source and destination addresses, as words to hash (see
/// [`Layers::read_addrs`]).
#[derive(Clone, Copy)]
pub enum Addrs {
    V4(u32, u32),
    V6([u64; 2], [u64; 2]),
}

/// Where the layers of a packet sit. All offsets are from the start of the
/// frame.
#[derive(Clone, Copy)]
pub struct Layers {
    /// Ethernet header plus VLAN tags and PPPoE header.
    pub l2_len: usize,
    /// Number of VLAN tags (0..=[`MAX_VLAN_TAGS`]). No stage reads it; but
    /// without it LLVM lays the entry stage out so that the verifier walks
    /// it twice over (169k instructions against 92k, Linux 6.18).
    pub vlan_tags: usize,
    /// The IP packet is inside a PPPoE session header.
    pub pppoe: bool,
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
    /// the frame; Ethernet padding lies beyond it; for a first fragment,
    /// the fragment's end), at most [`MAX_PAYLOAD_SEEN`] bytes after its
    /// start. In a multi-buffer frame it may lie past the first buffer:
    /// read beyond the headers with `bpf_xdp_load_bytes`.
    pub payload_end: usize,
    /// End of the IP packet (not clamped): TCP sequence numbers count to here.
    pub ip_end: usize,
    pub fragment: Fragment,
    /// For fragments: the datagram's identification.
    pub frag_id: u32,
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

    /// The source and destination addresses, read in the machine's byte
    /// order (both IPv4 addresses in one load): what flow and fragment keys
    /// hash, where byte swaps would only cost.
    #[inline(always)]
    pub fn read_addrs(&self, pkt: &Packet) -> Option<Addrs> {
        let (at, _) = self.addrs();
        if self.ipv6 {
            let a = pkt.bytes::<32>(at)?;
            let w = |i: usize| {
                u64::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3], a[i + 4], a[i + 5], a[i + 6], a[i + 7]])
            };
            Some(Addrs::V6([w(0), w(8)], [w(16), w(24)]))
        } else {
            let both = u64::from_ne_bytes(pkt.bytes::<8>(at)?);
            Some(Addrs::V4((both >> 32) as u32, both as u32))
        }
    }

    /// The key of the TCP flow this packet belongs to (client to server),
    /// from its addresses, its ports and the interface it came in on (see
    /// `maps::layout::flow`).
    #[inline(always)]
    pub fn flow_key(&self, pkt: &Packet, seed: u64, ifindex: u32, sport: u16) -> Option<u64> {
        let seed = flow::seed_for(seed, ifindex);
        Some(match self.read_addrs(pkt)? {
            Addrs::V6(src, dst) => flow::flow_key_v6(seed, src, dst, sport, self.dport),
            Addrs::V4(src, dst) => flow::flow_key_v4(seed, src, dst, sport, self.dport),
        })
    }

    /// Why a TCP segment with header flags `tcp_flags` may never reach the
    /// server's stream although it passes here: a client can send such a
    /// segment as a decoy, carrying bytes the filter would read and the
    /// server never gets. Such a segment must change no stream state and
    /// decide nothing; with the "cannot judge" policy it is dropped. The
    /// checks every segment a flow follows can afford:
    /// - An IP TTL (hop limit) of 1 or 0: a router drops it after the filter.
    /// - Data without ACK outside a SYN: Linux discards it (`tcp_ack`).
    /// - Data on a RST, which either resets the connection or is answered
    ///   with a challenge ACK and dropped (RFC 5961 §3.2).
    ///
    /// `packet::headers_discarded` has the dearer ones, for segments that
    /// would move a flow.
    #[inline(always)]
    pub fn tcp_decoy(&self, pkt: &Packet, tcp_flags: u8) -> Option<Counter> {
        let ttl_at = self.l2_len + if self.ipv6 { 7 } else { 8 };
        if pkt.u8(ttl_at).is_some_and(|ttl| ttl <= 1) {
            return Some(Counter::TcpTtlExpiring);
        }
        let data = self.payload_off != self.ip_end;
        if tcp_flags & (TCP_SYN | TCP_ACK) == 0 && data {
            return Some(Counter::TcpNoAck);
        }
        if tcp_flags & TCP_RST != 0 && data {
            return Some(Counter::TcpDiscarded);
        }
        None
    }

    /// Bytes of transport payload in the IP packet.
    #[inline(always)]
    pub fn payload_len(&self) -> usize {
        self.ip_end - self.payload_off
    }

    /// Leaves the layers in `h` for the next stage. A later fragment is
    /// never handed on; a first fragment's key is left by the caller.
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
        h.stream = 0;
        h.judged = 0;
        h.flags = if self.ipv6 { handoff::IPV6 } else { 0 }
            | if self.pppoe { handoff::PPPOE } else { 0 }
            | if self.fragment == Fragment::First { handoff::FIRST_FRAGMENT } else { 0 };
    }

    /// The layers the entry stage left, with the bounds [`parse`]
    /// guarantees restored as masks: read from map memory they are unknown
    /// to the verifier, which needs them to bound packet accesses (offset
    /// plus access size at most 0xffff). The masks never change a value:
    /// `l2_len <= MAX_L2_LEN`, `l4_off <= 2048`, `payload_off <= 2048 +
    /// 60`, `payload_end <= payload_off + 4096` and `ip_end <= MAX_IP_END`.
    #[inline(always)]
    pub fn taken_over(h: &Handoff) -> Self {
        Self {
            l2_len: (h.l2_len & 0x3f) as usize,
            vlan_tags: (h.vlan_tags & 0x7) as usize,
            pppoe: h.flags & handoff::PPPOE != 0,
            ipv6: h.flags & handoff::IPV6 != 0,
            l4_off: (h.l4_off & 0xfff) as usize,
            proto: h.proto,
            dport: h.dport,
            payload_off: (h.payload_off & 0xfff) as usize,
            payload_end: (h.payload_end & 0x1fff) as usize,
            ip_end: h.ip_end as usize & MAX_IP_END,
            fragment: if h.flags & handoff::FIRST_FRAGMENT != 0 { Fragment::First } else { Fragment::Whole },
            frag_id: 0,
        }
    }
}

#[inline(always)]
fn min(a: usize, b: usize) -> usize {
    if a < b { a } else { b }
}

/// Parses down to the transport payload of what the program judges: UDP and
/// TCP to port 53 (DNS), TCP to any other port (TLS flow tracking), UDP
/// long-header packets (QUIC Initial candidates), and fragments; or says
/// why not. `pkt` covers only the first buffer of a multi-buffer frame;
/// `ctx` answers for the whole frame when needed.
#[inline(always)]
pub fn parse(ctx: &XdpContext, pkt: &Packet) -> Result<Layers, Counter> {
    // Untagged IPv4 and IPv6 first, in straight-line code: this runs for
    // every packet.
    let outer = pkt.header::<EthHdr>(0).ok_or(Counter::TruncatedHeader)?.ethertype();
    let (ethertype, l2_len, vlan_tags, pppoe) =
        if outer == ETH_P_IPV4 || outer == ETH_P_IPV6 { (outer, ETH_HLEN, 0, false) } else { parse_l2(pkt, outer)? };
    let l3 = l2_len;
    let (ipv6, ip) = if ethertype == ETH_P_IPV4 {
        (false, parse_ipv4(pkt, l3)?)
    } else if ethertype == ETH_P_IPV6 {
        (true, parse_ipv6(ctx, pkt, l3)?)
    } else {
        return Err(Counter::NotIp);
    };
    let Ip { proto, l4_off, end: ip_end, fragment, frag_id } = ip;
    let layers = |dport, payload_off, payload_end, fragment| Layers {
        l2_len,
        vlan_tags,
        pppoe,
        ipv6,
        l4_off,
        proto,
        dport,
        payload_off,
        payload_end: min(payload_end, payload_off + MAX_PAYLOAD_SEEN),
        ip_end,
        fragment,
        frag_id,
    };
    if fragment == Fragment::Later {
        return Ok(layers(0, l4_off, l4_off, fragment));
    }
    if l4_off > MAX_L4_OFF {
        return Err(Counter::Ipv6ExtTooDeep);
    }
    let first = fragment == Fragment::First;
    if first {
        // A fragment cut short is dropped by the receiver; one too short for
        // its transport header hides what it carries (RFC 1858 §3.1).
        check_ip_end(ctx, pkt, ip_end)?;
        let need = if proto == IPPROTO_TCP { TcpHead::LEN } else { UdpHdr::LEN };
        if l4_off + need > ip_end {
            return Ok(layers(0, l4_off, l4_off, Fragment::Tiny));
        }
    }
    match proto {
        IPPROTO_UDP => {
            let udp = pkt.header::<UdpHdr>(l4_off).ok_or(Counter::TruncatedHeader)?;
            let (dport, udp_len) = (udp.dport(), udp.len());
            let payload_off = l4_off + UdpHdr::LEN;
            if dport != DNS_PORT {
                // Only a long-header packet can be a QUIC Initial; anything
                // else is done with here, cheaply.
                return match pkt.u8(payload_off) {
                    Some(b) if b & 0xc0 == 0xc0 && !first => Ok(layers(dport, payload_off, ip_end, fragment)),
                    _ => Err(Counter::NotDnsPort),
                };
            }
            check_ip_end(ctx, pkt, ip_end)?;
            // A UDP length beyond the IP payload: Linux drops the datagram
            // (udp_rcv's "short packet"); shorter is legal, the rest is
            // padding. A first fragment's UDP length covers the datagram.
            if udp_len < UdpHdr::LEN || (!first && l4_off + udp_len > ip_end) {
                return Err(Counter::BadHeader);
            }
            Ok(layers(dport, payload_off, min(l4_off + udp_len, ip_end), fragment))
        }
        IPPROTO_TCP => {
            let tcp = pkt.header::<TcpHead>(l4_off).ok_or(Counter::TruncatedHeader)?;
            let (dport, doff) = (tcp.dport(), tcp.header_len());
            check_ip_end(ctx, pkt, ip_end)?;
            let payload_off = l4_off + doff;
            // Data offset shorter than the fixed header or past the packet's
            // end; for a first fragment, options going on in the next one.
            if first && payload_off > ip_end {
                return Ok(layers(0, l4_off, l4_off, Fragment::Tiny));
            }
            if doff < 20 || payload_off > ip_end {
                return Err(Counter::BadHeader);
            }
            // Segments without payload matter to TLS flow tracking (SYN,
            // later packets of blocked flows), and to DNS only as a SYN
            // (which anchors the connection's stream).
            if payload_off == ip_end
                && dport == DNS_PORT
                && !first
                && pkt.u8(l4_off + 13).is_some_and(|f| f & TCP_SYN == 0)
            {
                return Err(Counter::TcpNoPayload);
            }
            Ok(layers(dport, payload_off, ip_end, fragment))
        }
        _ => Err(Counter::NotUdpTcp),
    }
}

/// Follows VLAN tags and a PPPoE session header after the outer
/// `EtherType` (which is neither IPv4 nor IPv6): the IP `EtherType`, the
/// layer-2 length, the tags and whether PPPoE carries the packet.
#[inline(always)]
fn parse_l2(pkt: &Packet, outer: u16) -> Result<(u16, usize, usize, bool), Counter> {
    let mut ethertype = outer;
    let mut off = ETH_HLEN;
    let mut tags: usize = 0;
    for _ in 0..MAX_VLAN_TAGS {
        if !is_vlan(ethertype) {
            break;
        }
        ethertype = pkt.header::<VlanHdr>(off).ok_or(Counter::TruncatedHeader)?.inner();
        off += VlanHdr::LEN;
        tags += 1;
    }
    if is_vlan(ethertype) {
        return Err(Counter::VlanTooDeep);
    }
    let (ethertype, off, pppoe) = if ethertype == ETH_P_PPPOE_SES {
        let p = pkt.header::<PppoeHdr>(off).ok_or(Counter::TruncatedHeader)?;
        // Not session data: the PPPoE driver drops it; LCP, IPCP and other
        // PPP control protocols carry no name.
        if !p.is_session_data() {
            return Err(Counter::NotIp);
        }
        let inner = match p.protocol() {
            PPP_IPV4 => ETH_P_IPV4,
            PPP_IPV6 => ETH_P_IPV6,
            _ => return Err(Counter::NotIp),
        };
        (inner, off + PppoeHdr::LEN, true)
    } else {
        (ethertype, off, false)
    };
    if ethertype != ETH_P_IPV4 && ethertype != ETH_P_IPV6 {
        return Err(Counter::NotIp);
    }
    // A dozen layouts leave here as a dozen constant offsets, and the
    // verifier would check the IP and transport parsers once for each:
    // forgotten, they are one (untagged frames keep their constant path).
    let Some(scratch) = scratch() else {
        return Err(Counter::Internal);
    };
    let v = [u64::from(ethertype), off as u64, tags as u64, u64::from(pppoe)];
    let [ethertype, off, tags, pppoe] = verifier::forget(&raw mut scratch.spill, v);
    Ok((ethertype as u16, off as usize & 0x3f, tags as usize & 0x7, pppoe & 1 != 0))
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
    /// Start of the transport header (of a later fragment: of its data).
    l4_off: usize,
    /// End of the IP packet.
    end: usize,
    fragment: Fragment,
    /// For fragments: the datagram's identification.
    frag_id: u32,
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
    // Only the first fragment (offset 0) carries the transport header.
    let fragment = if h.frag_offset() != 0 {
        Fragment::Later
    } else if h.more_fragments() {
        Fragment::First
    } else {
        Fragment::Whole
    };
    Ok(Ip { proto: h.proto(), l4_off: l3 + ihl, end: l3 + total, fragment, frag_id: u32::from(h.id()) })
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
    let mut fragment = Fragment::Whole;
    let mut frag_id = 0;
    for _ in 0..MAX_IPV6_EXT {
        match next {
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS | IPV6_AH => {
                let e = pkt.header::<ExtHdr>(off).ok_or(Counter::TruncatedHeader)?;
                off += e.header_len(next);
                next = e.next_header;
            }
            IPV6_FRAGMENT => {
                let f = pkt.header::<FragHdr>(off).ok_or(Counter::TruncatedHeader)?;
                next = f.next_header;
                off += FragHdr::LEN;
                frag_id = f.id();
                if f.offset() != 0 {
                    fragment = Fragment::Later;
                    break;
                }
                // An atomic fragment (offset 0, no more): the whole datagram.
                if f.more_fragments() {
                    fragment = Fragment::First;
                }
            }
            _ => break,
        }
    }
    match next {
        _ if fragment == Fragment::Later => Ok(Ip { proto: next, l4_off: off, end, fragment, frag_id }),
        IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS | IPV6_AH | IPV6_FRAGMENT => Err(Counter::Ipv6ExtTooDeep),
        _ => Ok(Ip { proto: next, l4_off: off, end, fragment, frag_id }),
    }
}
