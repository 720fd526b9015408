//! The decision record `replay` and the tests read back after each packet.

/// Written to `TRACE[0]` for every packet when the program was loaded with
/// `TRACE_ENABLED` set (replay and tests). Never written in production: it
/// would cost a store per packet and serialise CPUs on one cache line.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trace {
    /// Incremented for every packet, so a reader can tell a fresh record from a stale one.
    pub seq: u64,
    /// Key of the whole queried name (0 if no name was parsed).
    pub name_key: u64,
    /// Key of the rule that decided (0 if none).
    pub rule_key: u64,
    /// The outcome [`crate::Counter`] of this packet.
    pub outcome: u32,
    /// XDP action returned.
    pub xdp_action: u32,
    /// Offset of the QNAME in the packet as received (0 if none).
    pub name_offset: u16,
    /// Wire length of the QNAME (0 if none).
    pub name_len: u16,
    /// Labels in the queried name.
    pub name_labels: u8,
    /// Labels of the deciding rule (0 if none).
    pub rule_labels: u8,
    /// 17 for DNS over UDP, 6 for DNS or TLS over TCP, 0 when no name was found.
    pub l4_proto: u8,
    /// Which name was judged, a [`crate::Protocol`] code: `Other` (none),
    /// `Dns` (a QNAME at `name_offset` in the packet) or `Tls` (a server
    /// name in `sni`).
    pub name_kind: u8,
    /// Length of `sni`.
    pub sni_len: u16,
    /// Explicit padding; always 0.
    pub pad: [u8; 6],
    /// For TCP segments the TLS path looked at: the flow's key (a seeded
    /// hash of addresses and ports), so a reader can group a flow's segments
    /// and tell which one decided it. 0 otherwise.
    pub flow_key: u64,
    /// The TLS server name, as sent (it may have come in several segments).
    pub sni: [u8; crate::parse::tls::MAX_SNI],
}

const _: () = assert!(core::mem::size_of::<Trace>() == 56 + crate::parse::tls::MAX_SNI);

impl Default for Trace {
    fn default() -> Self {
        Self {
            seq: 0,
            name_key: 0,
            rule_key: 0,
            outcome: 0,
            xdp_action: 0,
            name_offset: 0,
            name_len: 0,
            name_labels: 0,
            rule_labels: 0,
            l4_proto: 0,
            name_kind: crate::Protocol::Other as u8,
            sni_len: 0,
            pad: [0; 6],
            flow_key: 0,
            sni: [0; crate::parse::tls::MAX_SNI],
        }
    }
}
