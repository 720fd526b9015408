//! Ethernet, VLAN, IPv4/IPv6 and UDP/TCP parsing down to the DNS payload.

use aya_ebpf::programs::XdpContext;
use maps::Counter;

use crate::cursor::Packet;

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
/// Most payload bytes the DNS code looks at: a TCP length prefix, a header
/// and the longest question fit with room to spare.
pub const MAX_PAYLOAD_SEEN: usize = 4096;

const ETH_HLEN: usize = 14;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AH: u8 = 51;
const IPV6_DEST_OPTS: u8 = 60;
pub const DNS_PORT: u16 = 53;

/// Where the layers of a packet to port 53 sit. All offsets are from the
/// start of the frame.
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
    /// it may lie past the first buffer: read beyond the DNS header with
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
}

/// 802.1Q and 802.1ad tag protocol identifiers.
#[inline(always)]
fn is_vlan(ethertype: u16) -> bool {
    ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD
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
    let outer = pkt.be16(12).ok_or(Counter::TruncatedHeader)?;
    let (ethertype, l2_len, vlan_tags) = if outer == ETH_P_IPV4 || outer == ETH_P_IPV6 {
        (outer, ETH_HLEN, 0)
    } else if is_vlan(outer) {
        // Tag control information (2 bytes), then the inner EtherType.
        let inner = pkt.be16(16).ok_or(Counter::TruncatedHeader)?;
        if is_vlan(inner) {
            let third = pkt.be16(20).ok_or(Counter::TruncatedHeader)?;
            if is_vlan(third) {
                return Err(Counter::VlanTooDeep);
            }
            (third, ETH_HLEN + 8, 2)
        } else {
            (inner, ETH_HLEN + 4, 1)
        }
    } else {
        return Err(Counter::NotIp);
    };
    let l3 = l2_len;
    let (ipv6, (proto, l4_off, ip_end, first_fragment)) = if ethertype == ETH_P_IPV4 {
        (false, parse_ipv4(pkt, l3)?)
    } else if ethertype == ETH_P_IPV6 {
        (true, parse_ipv6(ctx, pkt, l3)?)
    } else {
        return Err(Counter::NotIp);
    };
    if l4_off > MAX_L4_OFF {
        return Err(Counter::Ipv6ExtTooDeep);
    }
    match proto {
        IPPROTO_UDP => {
            let [_, _, dh, dl, lh, ll, _, _] = pkt.bytes::<8>(l4_off).ok_or(Counter::TruncatedHeader)?;
            let dport = u16::from_be_bytes([dh, dl]);
            if dport != DNS_PORT {
                // Only a long-header packet can be a QUIC Initial; anything
                // else is done with here, cheaply.
                return match pkt.u8(l4_off + 8) {
                    Some(b) if b & 0xc0 == 0xc0 && !first_fragment => Ok(Layers {
                        l2_len,
                        vlan_tags,
                        ipv6,
                        l4_off,
                        proto,
                        dport,
                        payload_off: l4_off + 8,
                        payload_end: min(ip_end, l4_off + 8 + MAX_PAYLOAD_SEEN),
                        ip_end,
                    }),
                    _ => Err(Counter::NotDnsPort),
                };
            }
            if first_fragment {
                return Err(Counter::FirstFragment);
            }
            check_ip_end(ctx, pkt, ip_end)?;
            let udp_len = u16::from_be_bytes([lh, ll]) as usize;
            // A UDP length beyond the IP payload: Linux drops the datagram
            // (udp_rcv's "short packet"); shorter is legal, the rest is padding.
            if udp_len < 8 || l4_off + udp_len > ip_end {
                return Err(Counter::BadHeader);
            }
            Ok(Layers {
                l2_len,
                vlan_tags,
                ipv6,
                l4_off,
                proto,
                dport,
                payload_off: l4_off + 8,
                payload_end: min(l4_off + udp_len, l4_off + 8 + MAX_PAYLOAD_SEEN),
                ip_end,
            })
        }
        IPPROTO_TCP => {
            let tcp = pkt.bytes::<13>(l4_off).ok_or(Counter::TruncatedHeader)?;
            let dport = u16::from_be_bytes([tcp[2], tcp[3]]);
            if first_fragment {
                return Err(Counter::FirstFragment);
            }
            check_ip_end(ctx, pkt, ip_end)?;
            let doff = ((tcp[12] >> 4) as usize) * 4;
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
            Ok(Layers {
                l2_len,
                vlan_tags,
                ipv6,
                l4_off,
                proto,
                dport,
                payload_off,
                payload_end: min(ip_end, payload_off + MAX_PAYLOAD_SEEN),
                ip_end,
            })
        }
        _ => Err(Counter::NotUdpTcp),
    }
}

/// A frame shorter than the IP packet it carries was cut short; Linux drops
/// it as truncated (`ip_rcv_core`, `ipv6_rcv`). It is never judged, even
/// when the cut spared the question: no server would see that query. Bytes
/// beyond the IP packet are Ethernet padding and are ignored. Checked only
/// for packets to port 53, after the port: other traffic is not judged
/// anyway and should cost as little as possible.
#[inline(always)]
fn check_ip_end(ctx: &XdpContext, pkt: &Packet, ip_end: usize) -> Result<(), Counter> {
    if pkt.frame_has(ctx, ip_end) { Ok(()) } else { Err(Counter::BadHeader) }
}

/// What the IP layer says: protocol, transport offset, end of the IP packet,
/// and whether it is the first fragment of a fragmented datagram.
type Ip = (u8, usize, usize, bool);

/// Parses an IPv4 header.
#[inline(always)]
fn parse_ipv4(pkt: &Packet, l3: usize) -> Result<Ip, Counter> {
    let h = pkt.bytes::<20>(l3).ok_or(Counter::TruncatedHeader)?;
    if h[0] >> 4 != 4 {
        return Err(Counter::BadHeader);
    }
    let ihl = ((h[0] & 0x0f) as usize) * 4;
    let total = u16::from_be_bytes([h[2], h[3]]) as usize;
    if ihl < 20 || total < ihl {
        return Err(Counter::BadHeader);
    }
    // Only the first fragment (offset 0) carries the transport header; a
    // datagram in fragments is not reassembled here.
    let frag = u16::from_be_bytes([h[6], h[7]]);
    if frag & 0x1fff != 0 {
        return Err(Counter::IpFragment);
    }
    Ok((h[9], l3 + ihl, l3 + total, frag & 0x2000 != 0))
}

/// Parses an IPv6 header, following up to [`MAX_IPV6_EXT`] extension headers.
#[inline(always)]
fn parse_ipv6(ctx: &XdpContext, pkt: &Packet, l3: usize) -> Result<Ip, Counter> {
    let h = pkt.bytes::<8>(l3).ok_or(Counter::TruncatedHeader)?;
    if h[0] >> 4 != 6 {
        return Err(Counter::BadHeader);
    }
    let payload_len = u16::from_be_bytes([h[4], h[5]]) as usize;
    // A zero payload length means a jumbogram (RFC 2675), which needs the
    // hop-by-hop jumbo option: up to the frame's end. Without a hop-by-hop
    // header it is a malformed packet (ipv6_rcv would cut it to 40 bytes).
    if payload_len == 0 && h[6] != IPV6_HOP_BY_HOP {
        return Err(Counter::BadHeader);
    }
    let end = if payload_len == 0 { Packet::frame_len(ctx) } else { l3 + 40 + payload_len };
    let mut next = h[6];
    let mut off = l3 + 40;
    let mut first_fragment = false;
    for _ in 0..MAX_IPV6_EXT {
        match next {
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS => {
                let [nh, len] = pkt.bytes::<2>(off).ok_or(Counter::TruncatedHeader)?;
                next = nh;
                off += (len as usize + 1) * 8;
            }
            IPV6_AH => {
                // RFC 4302 §2.2: length in 4-byte units, minus 2.
                let [nh, len] = pkt.bytes::<2>(off).ok_or(Counter::TruncatedHeader)?;
                next = nh;
                off += (len as usize + 2) * 4;
            }
            IPV6_FRAGMENT => {
                // RFC 8200 §4.5: next header, reserved, offset (13 bits) + M, id.
                let [nh, _, oh, ol] = pkt.bytes::<4>(off).ok_or(Counter::TruncatedHeader)?;
                if u16::from_be_bytes([oh, ol]) & 0xfff8 != 0 {
                    return Err(Counter::IpFragment);
                }
                first_fragment = true;
                next = nh;
                off += 8;
            }
            _ => break,
        }
    }
    match next {
        IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS | IPV6_AH | IPV6_FRAGMENT => Err(Counter::Ipv6ExtTooDeep),
        _ => Ok((next, off, end, first_fragment)),
    }
}
