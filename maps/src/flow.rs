//! Per-flow state for TLS ClientHellos that span several TCP segments, and
//! the verdict of blocked flows.
//!
//! `FLOWS` is a hash map from a seeded 64-bit hash of the flow's 4-tuple
//! (client to server direction) to a [`FlowState`]. It holds:
//! - flows whose SYN was seen and whose first data byte was not yet
//!   (`NEW`): the first data segment must start at the next sequence number,
//!   so a client cannot slip the rest of a ClientHello past the filter by
//!   sending its later segments first;
//! - flows in the middle of a ClientHello (`PENDING`), with the parser's
//!   state and the next sequence number expected;
//! - blocked flows (`BLOCKED`), whose every later packet from the client is
//!   dropped.
//!
//! Entries expire after [`TTL_NEW_NS`], [`TTL_PENDING_NS`] or
//! [`TTL_BLOCKED_NS`] without a packet: the kernel deletes an expired entry
//! it meets, and the daemon sweeps the rest. The map is a plain hash map on
//! purpose, not an LRU: an LRU would silently forget a half-parsed
//! ClientHello when flooded, letting its rest through; a full plain map is
//! visible, and the operator's policy (fail-open: do not track the new flow;
//! fail-closed: drop it) applies and is counted.
//!
//! `FLOW_HINT` spares established flows the hash-map lookup: an array of
//! counters, one per hint slot, incremented before a key is inserted and
//! decremented after it is deleted (by the kernel, or the daemon's sweep
//! through a shared mapping). A zero counter proves no flow of that slot is
//! tracked, so the packet needs no lookup.

use crate::tls::TlsState;

/// SYN seen, no data yet.
pub const NEW: u8 = 1;
/// In the middle of a ClientHello.
pub const PENDING: u8 = 2;
/// Blocked: every later packet from the client is dropped.
pub const BLOCKED: u8 = 3;

/// [`FlowState::flags`]: the server name was judged allowed; the parser
/// reads on only to learn whether the ClientHello carries ECH.
pub const FLAG_SNI_PASSED: u8 = 1;

/// Idle time after which a `NEW` entry is forgotten (a client sends its
/// first data one round trip after the handshake).
pub const TTL_NEW_NS: u64 = 10_000_000_000;
/// Idle time after which a half-parsed ClientHello is forgotten.
pub const TTL_PENDING_NS: u64 = 10_000_000_000;
/// Idle time after which a blocked flow is forgotten.
pub const TTL_BLOCKED_NS: u64 = 60_000_000_000;

/// Value of `FLOWS`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FlowState {
    /// [`NEW`], [`PENDING`] or [`BLOCKED`].
    pub kind: u8,
    /// For blocked flows: the [`crate::Action`] applied.
    pub action: u8,
    /// [`FLAG_SNI_PASSED`].
    pub flags: u8,
    /// Explicit padding; always 0.
    pub pad: u8,
    /// The client's next sequence number we expect.
    pub next_seq: u32,
    /// `bpf_ktime_get_coarse_ns` of the last packet that touched the entry.
    pub last_seen_ns: u64,
    /// The ClientHello parser's state (for `PENDING`).
    pub tls: TlsState,
}

impl FlowState {
    /// Whether the entry is past its time to live at `now_ns`.
    #[inline(always)]
    pub const fn expired(&self, now_ns: u64) -> bool {
        let ttl = match self.kind {
            NEW => TTL_NEW_NS,
            PENDING => TTL_PENDING_NS,
            _ => TTL_BLOCKED_NS,
        };
        now_ns.wrapping_sub(self.last_seen_ns) > ttl
    }
}

/// Hash of a flow's 4-tuple, client to server. IPv4 addresses are given as
/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`), so one function serves both.
#[inline(always)]
pub const fn flow_key(seed: u64, src: [u64; 2], dst: [u64; 2], sport: u16, dport: u16) -> u64 {
    let mut h = crate::name::fmix64(seed ^ 0x243f_6a88_85a3_08d3);
    h = crate::name::fmix64(h ^ src[0]);
    h = crate::name::fmix64(h ^ src[1]);
    h = crate::name::fmix64(h ^ dst[0]);
    h = crate::name::fmix64(h ^ dst[1] ^ ((sport as u64) << 16 | dport as u64).rotate_left(32));
    h
}

/// The `FLOW_HINT` slot of a flow key, for a hint of `mask + 1` counters.
#[inline(always)]
pub const fn hint_slot(key: u64, mask: u64) -> u32 {
    ((key >> 17) & mask) as u32
}

/// Hint counters for `flows` flows: a power of two, four per flow.
pub const fn hint_words(flows: usize) -> usize {
    let w = (flows * 4).next_power_of_two();
    if w < 1024 { 1024 } else { w }
}
