//! QUIC: the server name of a QUIC connection is inside an encrypted
//! Initial packet, which this program does not decrypt (yet). What it can
//! do is recognise Initial packets and, when the operator asks, drop them:
//! browsers then fall back to TCP, where the ClientHello's server name is
//! visible (RFC 9000 §14.1, RFC 9369 for version 2).

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use maps::{Counter, settings::policy};

use crate::{
    cursor::Packet,
    headers::Layers,
    program::{SETTINGS, pass},
};

/// Smallest UDP payload carrying a client's Initial: clients pad Initial
/// datagrams to at least 1200 bytes (RFC 9000 §14.1).
const MIN_INITIAL: usize = 1200;
const QUIC_V1: u32 = 0x0000_0001;
const QUIC_V2: u32 = 0x6b33_43cf;

/// Judges a UDP packet to a port other than 53. Most such traffic is not
/// a QUIC Initial: the length test comes first, and the settings are read
/// only for an Initial, so other UDP costs next to nothing.
#[inline(always)]
pub fn judge(ctx: &XdpContext, l: &Layers) -> (u32, Counter) {
    if l.ip_end - l.payload_off < MIN_INITIAL {
        return pass(Counter::NotDnsPort);
    }
    let pkt = Packet::new(ctx);
    let Some([first, v0, v1, v2, v3]) = pkt.bytes::<5>(l.payload_off) else {
        return pass(Counter::NotDnsPort);
    };
    let version = u32::from_be_bytes([v0, v1, v2, v3]);
    // Long header (0b11 in the top bits), then the packet type: Initial is
    // 0 in version 1 (and its drafts, 0xff0000xx), 1 in version 2.
    let kind = (first >> 4) & 0x3;
    let initial = match version {
        QUIC_V1 => kind == 0,
        QUIC_V2 => kind == 1,
        v if v & 0xffff_ff00 == 0xff00_0000 => kind == 0,
        _ => false,
    };
    if !initial {
        return pass(Counter::NotDnsPort);
    }
    let Some(settings) = SETTINGS.get(0) else {
        return pass(Counter::Internal);
    };
    if settings.policy & policy::QUIC_BLOCK != 0 {
        return (xdp_action::XDP_DROP, Counter::QuicInitialDrop);
    }
    pass(Counter::QuicInitial)
}
