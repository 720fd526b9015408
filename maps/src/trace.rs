//! The decision record `replay` and the tests read back after each packet.

/// Written to `TRACE[0]` for every packet when the program was loaded with
/// `TRACE_ENABLED` set (replay and tests). Never written in production: it
/// would cost a store per packet and serialise CPUs on one cache line.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
    /// 17 for DNS over UDP, 6 for DNS over TCP, 0 when no DNS was found.
    pub l4_proto: u8,
    /// Explicit padding; always 0.
    pub pad: u8,
}

const _: () = assert!(core::mem::size_of::<Trace>() == 40);
