//! Typed views of the headers the program reads, in the way of
//! network-types: `#[repr(C)]` structs of byte arrays (alignment 1, so a
//! view is valid at any packet offset), each field named once, read with
//! `from_be_bytes` accessors. [`super::Packet::header`] checks the bounds
//! and hands out a reference into the packet, so a field costs one load.

/// A header view: `#[repr(C)]`, made only of `u8` and `[u8; N]` fields.
///
/// # Safety
/// Implementors have alignment 1 and accept every bit pattern.
pub unsafe trait Header: Sized {
    const LEN: usize = core::mem::size_of::<Self>();
}

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
/// PPPoE session stage (RFC 2516 §4).
pub const ETH_P_PPPOE_SES: u16 = 0x8864;

/// PPP protocol numbers of IPv4 and IPv6 (RFC 1332, RFC 5072).
pub const PPP_IPV4: u16 = 0x0021;
pub const PPP_IPV6: u16 = 0x0057;

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// IPv6 extension headers the parser follows (RFC 8200 §4).
pub const IPV6_HOP_BY_HOP: u8 = 0;
pub const IPV6_ROUTING: u8 = 43;
pub const IPV6_FRAGMENT: u8 = 44;
pub const IPV6_AH: u8 = 51;
pub const IPV6_DEST_OPTS: u8 = 60;

/// DNS header length (RFC 1035 §4.1.1).
pub const DNS_HLEN: usize = 12;

/// TCP flag bits (RFC 9293 §3.1).
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_URG: u8 = 0x20;

/// Ethernet II header.
#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    ethertype: [u8; 2],
}

// SAFETY: byte arrays only.
unsafe impl Header for EthHdr {}

impl EthHdr {
    #[inline(always)]
    pub fn ethertype(&self) -> u16 {
        u16::from_be_bytes(self.ethertype)
    }
}

/// An 802.1Q / 802.1ad tag as it follows the outer `EtherType`: the tag
/// control information and the `EtherType` after it.
#[repr(C)]
pub struct VlanHdr {
    tci: [u8; 2],
    inner: [u8; 2],
}

// SAFETY: byte arrays only.
unsafe impl Header for VlanHdr {}

impl VlanHdr {
    #[inline(always)]
    pub fn inner(&self) -> u16 {
        u16::from_be_bytes(self.inner)
    }
}

/// A PPPoE session header (RFC 2516 §4) and the PPP protocol number after
/// it (RFC 1661 §2): how broadband access routers see every subscriber.
#[repr(C)]
pub struct PppoeHdr {
    ver_type: u8,
    code: u8,
    session: [u8; 2],
    len: [u8; 2],
    protocol: [u8; 2],
}

// SAFETY: bytes and byte arrays only.
unsafe impl Header for PppoeHdr {}

impl PppoeHdr {
    /// Version 1, type 1, code 0 (session data): what the Linux PPPoE
    /// driver accepts (`pppoe_rcv`); anything else is not a session frame.
    #[inline(always)]
    pub fn is_session_data(&self) -> bool {
        self.ver_type == 0x11 && self.code == 0
    }

    #[inline(always)]
    pub fn protocol(&self) -> u16 {
        u16::from_be_bytes(self.protocol)
    }
}

/// 802.1Q and 802.1ad tag protocol identifiers.
#[inline(always)]
pub fn is_vlan(ethertype: u16) -> bool {
    ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD
}

/// IPv4 header without options (RFC 791 §3.1).
#[repr(C)]
pub struct Ipv4Hdr {
    version_ihl: u8,
    tos: u8,
    total_len: [u8; 2],
    id: [u8; 2],
    frag: [u8; 2],
    ttl: u8,
    proto: u8,
    csum: [u8; 2],
    src: [u8; 4],
    dst: [u8; 4],
}

// SAFETY: bytes and byte arrays only.
unsafe impl Header for Ipv4Hdr {}

impl Ipv4Hdr {
    /// Offset of the source address; the destination follows it.
    pub const ADDRS: usize = 12;

    #[inline(always)]
    pub fn version(&self) -> u8 {
        self.version_ihl >> 4
    }

    /// Header length in bytes, options included.
    #[inline(always)]
    pub fn header_len(&self) -> usize {
        ((self.version_ihl & 0x0f) as usize) * 4
    }

    #[inline(always)]
    pub fn total_len(&self) -> usize {
        u16::from_be_bytes(self.total_len) as usize
    }

    /// Identification: with the addresses and protocol, names a datagram's fragments.
    #[inline(always)]
    pub fn id(&self) -> u16 {
        u16::from_be_bytes(self.id)
    }

    /// Fragment offset, in 8-byte units.
    #[inline(always)]
    pub fn frag_offset(&self) -> u16 {
        u16::from_be_bytes(self.frag) & 0x1fff
    }

    /// More fragments follow.
    #[inline(always)]
    pub fn more_fragments(&self) -> bool {
        u16::from_be_bytes(self.frag) & 0x2000 != 0
    }

    #[inline(always)]
    pub fn proto(&self) -> u8 {
        self.proto
    }
}

/// IPv6 fixed header (RFC 8200 §3): its length and where the addresses
/// are. The parser reads it through [`Ipv6Head`].
#[repr(C)]
pub struct Ipv6Hdr {
    head: Ipv6Head,
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

// SAFETY: byte arrays only.
unsafe impl Header for Ipv6Hdr {}

impl Ipv6Hdr {
    /// Offset of the source address; the destination follows it.
    pub const ADDRS: usize = 8;
}

/// The first eight bytes of the IPv6 header, all the parser reads of it:
/// version, payload length, next header. A frame cut inside the
/// addresses is judged by what these say (a wrong version, a next header
/// that is neither UDP nor TCP) before its transport header is missed.
#[repr(C)]
pub struct Ipv6Head {
    version_class_flow: [u8; 4],
    payload_len: [u8; 2],
    next_header: u8,
    hop_limit: u8,
}

// SAFETY: bytes and byte arrays only.
unsafe impl Header for Ipv6Head {}

impl Ipv6Head {
    /// IP version: 6.
    #[inline(always)]
    pub fn version(&self) -> u8 {
        self.version_class_flow[0] >> 4
    }

    /// Bytes after the fixed header: extension headers and payload.
    #[inline(always)]
    pub fn payload_len(&self) -> usize {
        u16::from_be_bytes(self.payload_len) as usize
    }

    /// The first extension header's or the transport's protocol number.
    #[inline(always)]
    pub fn next_header(&self) -> u8 {
        self.next_header
    }
}

/// The first two bytes of a hop-by-hop, routing, destination options or
/// authentication header: the next header and the length field.
#[repr(C)]
pub struct ExtHdr {
    pub next_header: u8,
    pub len: u8,
}

// SAFETY: bytes only.
unsafe impl Header for ExtHdr {}

impl ExtHdr {
    /// The extension header's length in bytes: 8-byte units not counting
    /// the first for most (RFC 8200 §4.3), 4-byte units not counting the
    /// first two for AH (RFC 4302 §2.2).
    #[inline(always)]
    pub fn header_len(&self, kind: u8) -> usize {
        if kind == IPV6_AH { (self.len as usize + 2) * 4 } else { (self.len as usize + 1) * 8 }
    }
}

/// An IPv6 Fragment header (RFC 8200 §4.5).
#[repr(C)]
pub struct FragHdr {
    pub next_header: u8,
    reserved: u8,
    offset_flags: [u8; 2],
    id: [u8; 4],
}

// SAFETY: bytes and byte arrays only.
unsafe impl Header for FragHdr {}

impl FragHdr {
    /// Fragment offset, in 8-byte units.
    #[inline(always)]
    pub fn offset(&self) -> u16 {
        u16::from_be_bytes(self.offset_flags) >> 3
    }

    /// More fragments follow. Offset 0 without it is an atomic fragment
    /// (RFC 6946): a whole datagram, processed as one.
    #[inline(always)]
    pub fn more_fragments(&self) -> bool {
        self.offset_flags[1] & 1 != 0
    }

    #[inline(always)]
    pub fn id(&self) -> u32 {
        u32::from_be_bytes(self.id)
    }
}

/// UDP header (RFC 768).
#[repr(C)]
pub struct UdpHdr {
    sport: [u8; 2],
    dport: [u8; 2],
    len: [u8; 2],
    csum: [u8; 2],
}

// SAFETY: byte arrays only.
unsafe impl Header for UdpHdr {}

impl UdpHdr {
    #[inline(always)]
    pub fn dport(&self) -> u16 {
        u16::from_be_bytes(self.dport)
    }

    /// Length of header and payload.
    #[inline(always)]
    pub fn len(&self) -> usize {
        u16::from_be_bytes(self.len) as usize
    }
}

/// The TCP header (RFC 9293 §3.1) up to its data offset: what finding the
/// payload needs. The layer parser reads no more, so a frame cut after it
/// counts as one whose IP length lies beyond it (`bad_header`) rather than
/// a truncated header.
#[repr(C)]
pub struct TcpHead {
    sport: [u8; 2],
    dport: [u8; 2],
    seq: [u8; 4],
    ack: [u8; 4],
    data_offset: u8,
}

// SAFETY: bytes and byte arrays only.
unsafe impl Header for TcpHead {}

impl TcpHead {
    #[inline(always)]
    pub fn dport(&self) -> u16 {
        u16::from_be_bytes(self.dport)
    }

    /// Header length in bytes, options included.
    #[inline(always)]
    pub fn header_len(&self) -> usize {
        ((self.data_offset >> 4) as usize) * 4
    }
}

/// The TCP header up to its flags: what the TLS triage reads.
#[repr(C)]
pub struct TcpFlagsHead {
    head: TcpHead,
    flags: u8,
}

// SAFETY: bytes and byte arrays only.
unsafe impl Header for TcpFlagsHead {}

impl TcpFlagsHead {
    #[inline(always)]
    pub fn sport(&self) -> u16 {
        u16::from_be_bytes(self.head.sport)
    }

    #[inline(always)]
    pub fn seq(&self) -> u32 {
        u32::from_be_bytes(self.head.seq)
    }

    #[inline(always)]
    pub fn ack(&self) -> u32 {
        u32::from_be_bytes(self.head.ack)
    }

    /// `TCP_*` bits.
    #[inline(always)]
    pub fn flags(&self) -> u8 {
        self.flags
    }
}

/// DNS message header (RFC 1035 §4.1.1).
#[repr(C)]
pub struct DnsHdr {
    id: [u8; 2],
    flags: [u8; 2],
    qdcount: [u8; 2],
    ancount: [u8; 2],
    nscount: [u8; 2],
    arcount: [u8; 2],
}

// SAFETY: byte arrays only.
unsafe impl Header for DnsHdr {}

impl DnsHdr {
    /// QR, opcode, AA, TC, RD, RA, Z, AD, CD, RCODE.
    #[inline(always)]
    pub fn flags(&self) -> u16 {
        u16::from_be_bytes(self.flags)
    }

    /// Entries in the question section.
    #[inline(always)]
    pub fn qdcount(&self) -> u16 {
        u16::from_be_bytes(self.qdcount)
    }
}

const _: () = assert!(
    core::mem::size_of::<DnsHdr>() == DNS_HLEN
        && core::mem::size_of::<EthHdr>() == 14
        && core::mem::size_of::<VlanHdr>() == 4
        && core::mem::size_of::<Ipv4Hdr>() == 20
        && core::mem::size_of::<Ipv6Hdr>() == 40
        && core::mem::size_of::<Ipv6Head>() == 8
        && core::mem::size_of::<FragHdr>() == 8
        && core::mem::size_of::<PppoeHdr>() == 8
        && core::mem::size_of::<UdpHdr>() == 8
        && core::mem::size_of::<TcpHead>() == 13
        && core::mem::size_of::<TcpFlagsHead>() == 14
);
