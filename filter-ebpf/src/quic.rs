//! QUIC: the server name of a QUIC connection is inside an encrypted
//! Initial packet, which this program does not decrypt (yet). What it can
//! do is recognise Initial packets ([`is_initial`], in the entry stage)
//! and, when the operator asks, drop them ([`judge`], the QUIC stage):
//! browsers then fall back to TCP, where the ClientHello's server name is
//! visible (RFC 9000 §14.1, RFC 9369 for version 2).

use aya_ebpf::programs::XdpContext;
use maps::{Counter, layout::settings::policy};

use crate::{
    packet::{Layers, Packet},
    tables::SETTINGS,
    verdict::{Done, drop, pass},
};

/// Smallest UDP payload carrying a client's Initial: clients pad Initial
/// datagrams to at least 1200 bytes (RFC 9000 §14.1).
const MIN_INITIAL: usize = 1200;
const QUIC_V1: u32 = 0x0000_0001;
const QUIC_V2: u32 = 0x6b33_43cf;

/// Whether a UDP packet to a port other than 53 is a QUIC Initial. Most
/// such traffic is not: the length test comes first, so other UDP costs
/// next to nothing.
#[inline(always)]
pub fn is_initial(pkt: &Packet, l: &Layers) -> bool {
    if l.payload_len() < MIN_INITIAL {
        return false;
    }
    let Some([first, v0, v1, v2, v3]) = pkt.bytes::<5>(l.payload_off) else {
        return false;
    };
    let version = u32::from_be_bytes([v0, v1, v2, v3]);
    // Long header (0b11 in the top bits), then the packet type: Initial is
    // 0 in version 1 (and its drafts, 0xff0000xx), 1 in version 2.
    let kind = (first >> 4) & 0x3;
    match version {
        QUIC_V1 => kind == 0,
        QUIC_V2 => kind == 1,
        v if v & 0xffff_ff00 == 0xff00_0000 => kind == 0,
        _ => false,
    }
}

/// The QUIC stage: a QUIC Initial passes, or is dropped by policy.
#[inline(always)]
pub fn judge(_ctx: &XdpContext) -> Done {
    let Some(settings) = SETTINGS.get(0) else {
        return pass(Counter::Internal);
    };
    if settings.policy & policy::QUIC_BLOCK != 0 {
        return drop(Counter::QuicInitialDrop);
    }
    pass(Counter::QuicInitial)
}
