//! Frames for test runs: Ethernet with 0-2 VLAN tags, IPv4 with options or
//! IPv6 with extension headers, UDP or TCP. Built with etherparse, so
//! lengths and checksums are right unless a test breaks them on purpose.

use etherparse::{
    IpHeaders, IpNumber, Ipv4Header, Ipv4Options, Ipv6Extensions, Ipv6Header, Ipv6RawExtHeader, Ipv6RoutingExtensions,
    PacketBuilder,
};

pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const CLIENT_V4: [u8; 4] = [10, 1, 0, 2];
pub const SERVER_V4: [u8; 4] = [10, 2, 0, 2];
pub const CLIENT_V6: [u8; 16] = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
pub const SERVER_V6: [u8; 16] = [0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

/// VLAN tagging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vlan {
    None,
    /// One 802.1Q tag.
    Single(u16),
    /// 802.1ad outer tag, 802.1Q inner tag.
    Double(u16, u16),
}

/// IPv6 extension header chains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum V6Ext {
    None,
    HopByHop,
    DestOpts,
    Routing,
    /// Hop-by-hop, routing, destination options.
    All,
    Fragment,
}

/// Network layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ip {
    V4 { options: Vec<u8> },
    V6 { ext: V6Ext },
}

/// Transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    /// A PSH/ACK segment.
    Tcp,
}

/// A frame's headers.
#[derive(Clone, Debug)]
pub struct Spec {
    pub vlan: Vlan,
    pub ip: Ip,
    pub transport: Transport,
    pub sport: u16,
    pub dport: u16,
}

impl Spec {
    pub fn udp4() -> Self {
        Self {
            vlan: Vlan::None,
            ip: Ip::V4 { options: Vec::new() },
            transport: Transport::Udp,
            sport: 40000,
            dport: 53,
        }
    }

    pub fn udp6() -> Self {
        Self { ip: Ip::V6 { ext: V6Ext::None }, ..Self::udp4() }
    }

    #[must_use]
    pub fn vlan(mut self, v: Vlan) -> Self {
        self.vlan = v;
        self
    }

    #[must_use]
    pub fn tcp(mut self) -> Self {
        self.transport = Transport::Tcp;
        self
    }

    #[must_use]
    pub fn v4_options(mut self, options: &[u8]) -> Self {
        self.ip = Ip::V4 { options: options.to_vec() };
        self
    }

    #[must_use]
    pub fn v6_ext(mut self, ext: V6Ext) -> Self {
        self.ip = Ip::V6 { ext };
        self
    }

    #[must_use]
    pub fn dport(mut self, p: u16) -> Self {
        self.dport = p;
        self
    }

    /// Builds the frame around `payload` (for TCP: the segment payload as given).
    pub fn build(&self, payload: &[u8]) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC);
        let ip = match &self.ip {
            Ip::V4 { options } => {
                let mut h = Ipv4Header::new(0, 64, IpNumber::UDP, CLIENT_V4, SERVER_V4).expect("ipv4 header");
                h.options =
                    Ipv4Options::try_from(options.as_slice()).expect("options of a multiple of 4 bytes, at most 40");
                h.identification = 0x1234;
                IpHeaders::Ipv4(h, etherparse::Ipv4Extensions::default())
            }
            Ip::V6 { ext } => {
                let h = Ipv6Header {
                    traffic_class: 0,
                    flow_label: etherparse::Ipv6FlowLabel::default(),
                    payload_length: 0,
                    next_header: IpNumber::UDP,
                    hop_limit: 64,
                    source: CLIENT_V6,
                    destination: SERVER_V6,
                };
                IpHeaders::Ipv6(h, v6_exts(*ext))
            }
        };
        let step = match self.vlan {
            Vlan::None => eth.ip(ip),
            Vlan::Single(id) => eth.single_vlan(id.try_into().expect("vlan id")).ip(ip),
            Vlan::Double(o, i) => {
                eth.double_vlan(o.try_into().expect("vlan id"), i.try_into().expect("vlan id")).ip(ip)
            }
        };
        let mut out = Vec::new();
        match self.transport {
            Transport::Udp => {
                let b = step.udp(self.sport, self.dport);
                out.reserve(b.size(payload.len()));
                b.write(&mut out, payload).expect("write frame");
            }
            Transport::Tcp => {
                let b = step.tcp(self.sport, self.dport, 1000, 64240).psh().ack(2000);
                out.reserve(b.size(payload.len()));
                b.write(&mut out, payload).expect("write frame");
            }
        }
        if self.ip == (Ip::V6 { ext: V6Ext::Fragment }) {
            // etherparse 0.19 writes the fragment header's M flag into bit 7
            // of the offset field's low byte; RFC 8200 §4.5 puts the 13-bit
            // offset in the top bits and M in bit 0. A first fragment with
            // more to come is offset 0, M = 1.
            let frag = self.l3_offset() + 40;
            out[frag + 2] = 0;
            out[frag + 3] = 1;
        }
        out
    }
}

fn v6_exts(ext: V6Ext) -> Ipv6Extensions {
    // Pad options (PadN) filling the 6 bytes after next-header and length.
    let padn = [1u8, 4, 0, 0, 0, 0];
    let raw = |payload: &[u8]| Ipv6RawExtHeader::new_raw(IpNumber::UDP, payload).expect("ext header");
    // Routing header type 4 (segment routing) with segments left 0: a
    // router on the path has nothing to do with it.
    let routing = [4u8, 0, 0, 0, 0, 0];
    let mut e = Ipv6Extensions::default();
    match ext {
        V6Ext::None => {}
        V6Ext::HopByHop => e.hop_by_hop_options = Some(raw(&padn)),
        V6Ext::DestOpts => e.destination_options = Some(raw(&padn)),
        V6Ext::Routing => {
            e.routing = Some(Ipv6RoutingExtensions { routing: raw(&routing), final_destination_options: None });
        }
        V6Ext::All => {
            e.hop_by_hop_options = Some(raw(&padn));
            e.routing =
                Some(Ipv6RoutingExtensions { routing: raw(&routing), final_destination_options: Some(raw(&padn)) });
        }
        V6Ext::Fragment => {
            e.fragment =
                Some(etherparse::Ipv6FragmentHeader::new(IpNumber::UDP, 0.try_into().expect("offset"), true, 7));
        }
    }
    e
}

/// An IPv6/UDP frame with `n` destination-options headers in a row, more
/// than the parser follows when `n` is large. Built by hand: etherparse
/// models one header of each kind.
pub fn udp6_with_dest_opts(n: usize, payload: &[u8]) -> Vec<u8> {
    let mut ip_payload = Vec::new();
    for i in 0..n {
        let next = if i + 1 == n { 17 } else { 60 };
        ip_payload.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    }
    let udp_len = (8 + payload.len()) as u16;
    ip_payload.extend_from_slice(&40000u16.to_be_bytes());
    ip_payload.extend_from_slice(&53u16.to_be_bytes());
    ip_payload.extend_from_slice(&udp_len.to_be_bytes());
    ip_payload.extend_from_slice(&[0, 0]);
    ip_payload.extend_from_slice(payload);
    let mut f = Vec::new();
    f.extend_from_slice(&SERVER_MAC);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&0x86ddu16.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(ip_payload.len() as u16).to_be_bytes());
    f.push(if n == 0 { 17 } else { 60 });
    f.push(64);
    f.extend_from_slice(&CLIENT_V6);
    f.extend_from_slice(&SERVER_V6);
    f.extend_from_slice(&ip_payload);
    f
}

/// The 2-byte length prefix of DNS over TCP (RFC 1035 §4.2.2) and the message.
pub fn tcp_dns(msg: &[u8]) -> Vec<u8> {
    let mut v = (msg.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(msg);
    v
}

impl Spec {
    /// The VLAN ids of the frame, outermost first.
    pub fn vlan_ids(&self) -> Vec<u16> {
        match self.vlan {
            Vlan::None => Vec::new(),
            Vlan::Single(id) => vec![id],
            Vlan::Double(outer, inner) => vec![outer, inner],
        }
    }

    /// Offset of the IP header: Ethernet header and VLAN tags.
    pub fn l3_offset(&self) -> usize {
        14 + 4 * self.vlan_ids().len()
    }

    /// A pure ACK (no payload, no PSH) to `dport`.
    pub fn build_ack(&self) -> Vec<u8> {
        let tcp = self.clone().tcp();
        let mut f = tcp.build(&[]);
        // build() writes PSH/ACK: clear PSH (bit 3 of the flags byte) and
        // take its weight out of the checksum (RFC 1624: HC' = ~(~HC + ~m + m')).
        let l4 = f.len() - 20;
        let before = u16::from_be_bytes([f[l4 + 12], f[l4 + 13]]);
        f[l4 + 13] &= !0x08;
        let after = u16::from_be_bytes([f[l4 + 12], f[l4 + 13]]);
        let old = u16::from_be_bytes([f[l4 + 16], f[l4 + 17]]);
        let sum = u32::from(!old) + u32::from(!before) + u32::from(after);
        let sum = (sum & 0xffff) + (sum >> 16);
        let sum = (sum & 0xffff) + (sum >> 16);
        f[l4 + 16..l4 + 18].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        f
    }
}

/// An ARP request (who-has [`SERVER_V4`] tell [`CLIENT_V4`]), broadcast.
pub fn arp_request() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    // Ethernet, IPv4, 6-byte and 4-byte addresses, request.
    f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&CLIENT_V4);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&SERVER_V4);
    f
}

/// An ICMP echo request over IPv4.
pub fn icmp4_echo() -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, SERVER_MAC).ipv4(CLIENT_V4, SERVER_V4, 64).icmpv4_echo_request(1, 1);
    let mut out = Vec::with_capacity(b.size(8));
    b.write(&mut out, &[0; 8]).expect("write frame");
    out
}

/// `frame` with one more VLAN tag (`tpid`, `id`) outside its existing ones.
pub fn push_vlan(frame: &[u8], tpid: u16, id: u16) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    f.extend_from_slice(&tpid.to_be_bytes());
    f.extend_from_slice(&id.to_be_bytes());
    f.extend_from_slice(&frame[12..]);
    f
}

/// Sets the IPv4 flags and fragment offset word of the header at `l3`
/// (`0x2000` is MF, `0x4000` DF, the low 13 bits the offset in 8-byte units)
/// and recomputes the header checksum.
pub fn set_ipv4_frag(frame: &mut [u8], l3: usize, word: u16) {
    frame[l3 + 6..l3 + 8].copy_from_slice(&word.to_be_bytes());
    let ihl = usize::from(frame[l3] & 0x0f) * 4;
    frame[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
    let sum = maps::parse::checksum::finish(maps::parse::checksum::add_bytes(0, &frame[l3..l3 + ihl]));
    frame[l3 + 10..l3 + 12].copy_from_slice(&sum.to_be_bytes());
}

/// Writes a 16-bit big-endian field at `at` (to break a length on purpose).
pub fn set_be16(frame: &mut [u8], at: usize, value: u16) {
    frame[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

/// The pieces `[start, end)` of a payload of `len` bytes cut at `cuts`
/// (multiples of 8, increasing), and whether more follow each.
fn fragment_pieces(len: usize, cuts: &[usize]) -> Vec<(usize, usize, bool)> {
    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(len);
    let n = bounds.len() - 1;
    bounds
        .windows(2)
        .enumerate()
        .map(|(i, w)| {
            assert!(w[0] % 8 == 0 && w[0] < w[1], "fragment offsets are multiples of 8, increasing");
            (w[0], w[1], i + 1 < n)
        })
        .collect()
}

/// The IPv4 datagram of `frame` (header at `l3`, no padding after it) cut
/// into fragments of identification `id` at the IP payload offsets in
/// `cuts` (multiples of 8, increasing), as a router or a sender's stack
/// would: each fragment has the header (options copied), its offset and
/// MF, and the header checksum recomputed.
pub fn fragments_v4(frame: &[u8], l3: usize, id: u16, cuts: &[usize]) -> Vec<Vec<u8>> {
    let ihl = usize::from(frame[l3] & 0x0f) * 4;
    let payload = &frame[l3 + ihl..];
    fragment_pieces(payload.len(), cuts)
        .into_iter()
        .map(|(start, end, more)| {
            let mut f = frame[..l3 + ihl].to_vec();
            f.extend_from_slice(&payload[start..end]);
            set_be16(&mut f, l3 + 2, (ihl + end - start) as u16);
            set_be16(&mut f, l3 + 4, id);
            set_ipv4_frag(&mut f, l3, if more { 0x2000 } else { 0 } | (start / 8) as u16);
            f
        })
        .collect()
}

/// The IPv6 packet of `frame` (fixed header at `l3`, no extension headers)
/// cut into fragments of identification `id` at the payload offsets in
/// `cuts` (multiples of 8), each with a Fragment header (RFC 8200 §4.5).
/// No cuts gives one atomic fragment (offset 0, M = 0; RFC 6946).
pub fn fragments_v6(frame: &[u8], l3: usize, id: u32, cuts: &[usize]) -> Vec<Vec<u8>> {
    let next = frame[l3 + 6];
    let payload = &frame[l3 + 40..];
    fragment_pieces(payload.len(), cuts)
        .into_iter()
        .map(|(start, end, more)| {
            let mut f = frame[..l3 + 40].to_vec();
            f[l3 + 6] = 44;
            let word = ((start / 8) as u16) << 3 | u16::from(more);
            f.extend_from_slice(&[next, 0]);
            f.extend_from_slice(&word.to_be_bytes());
            f.extend_from_slice(&id.to_be_bytes());
            f.extend_from_slice(&payload[start..end]);
            set_be16(&mut f, l3 + 4, (8 + end - start) as u16);
            f
        })
        .collect()
}

/// `frame` (IPv4 or IPv6 right after its Ethernet header) inside a PPPoE
/// session header (RFC 2516 §4) of session `session`.
pub fn pppoe(frame: &[u8], session: u16) -> Vec<u8> {
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let ppp: u16 = if ethertype == 0x86dd { 0x0057 } else { 0x0021 };
    let ip = &frame[14..];
    let mut f = frame[..12].to_vec();
    f.extend_from_slice(&0x8864u16.to_be_bytes());
    f.extend_from_slice(&[0x11, 0]);
    f.extend_from_slice(&session.to_be_bytes());
    f.extend_from_slice(&((ip.len() + 2) as u16).to_be_bytes());
    f.extend_from_slice(&ppp.to_be_bytes());
    f.extend_from_slice(ip);
    f
}

/// Sets the IPv4 TTL of an untagged frame and recomputes its header
/// checksum, as a router checks it.
pub fn set_ipv4_ttl(frame: &mut [u8], ttl: u8) {
    use maps::parse::checksum::{add_bytes, finish};
    frame[14 + 8] = ttl;
    frame[14 + 10..14 + 12].copy_from_slice(&[0, 0]);
    let ihl = usize::from(frame[14] & 0xf) * 4;
    let sum = finish(add_bytes(0, &frame[14..14 + ihl]));
    frame[14 + 10..14 + 12].copy_from_slice(&sum.to_be_bytes());
}

/// Recomputes the TCP checksum of a frame whose IP header starts at `l3`
/// (IPv4 with any options, or IPv6 with any hop-by-hop, routing and
/// destination-options headers), after a test changed the segment on
/// purpose (flags, urgent pointer) and wants the program to take it as a
/// segment the receiver would accept.
pub fn fix_tcp_checksum(frame: &mut [u8], l3: usize) {
    use maps::parse::checksum::{add_bytes, finish, pseudo_header};
    let (tcp_at, pseudo) = if frame[l3] >> 4 == 6 {
        let len = usize::from(u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]));
        let src: [u8; 16] = frame[l3 + 8..l3 + 24].try_into().expect("16 bytes");
        let dst: [u8; 16] = frame[l3 + 24..l3 + 40].try_into().expect("16 bytes");
        // Past the extension headers (RFC 8200 §4: 8-octet units after the first 8).
        let (mut next, mut at) = (frame[l3 + 6], l3 + 40);
        while matches!(next, 0 | 43 | 60) {
            next = frame[at];
            at += 8 + 8 * usize::from(frame[at + 1]);
        }
        let tcp_len = l3 + 40 + len - at;
        (at, pseudo_header(&src, &dst, 6, u32::try_from(tcp_len).expect("a length")))
    } else {
        let ihl = usize::from(frame[l3] & 0xf) * 4;
        let total = usize::from(u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]));
        let src: [u8; 4] = frame[l3 + 12..l3 + 16].try_into().expect("4 bytes");
        let dst: [u8; 4] = frame[l3 + 16..l3 + 20].try_into().expect("4 bytes");
        (l3 + ihl, pseudo_header(&src, &dst, 6, u32::try_from(total - ihl).expect("a length")))
    };
    let end = if frame[l3] >> 4 == 6 {
        l3 + 40 + usize::from(u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]))
    } else {
        l3 + usize::from(u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]))
    };
    frame[tcp_at + 16..tcp_at + 18].copy_from_slice(&[0, 0]);
    let sum = finish(add_bytes(pseudo, &frame[tcp_at..end]));
    frame[tcp_at + 16..tcp_at + 18].copy_from_slice(&sum.to_be_bytes());
}
