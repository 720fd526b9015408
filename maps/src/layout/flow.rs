//! Per-flow state for TLS ClientHellos that span several TCP segments, and
//! the verdict of blocked flows. Flows are keyed by a seeded 64-bit hash of
//! the 4-tuple (client to server direction; [`flow_key_v4`],
//! [`flow_key_v6`]) and the interface they came in on.
//!
//! Two maps, each with its own budget:
//! - `NEW_FLOWS`, an LRU map: flows whose SYN was seen and whose first data
//!   byte was not yet ([`NewFlow`]). Their first data segment must start at
//!   the next sequence number, so a client cannot slip the rest of a
//!   ClientHello past the filter by sending its later segments first. A
//!   SYN flood (spoofed, so it never sends data) only evicts the oldest
//!   entries, its own: it cannot fill the table that ClientHellos in
//!   progress need.
//! - `FLOWS`, a plain hash map ([`FlowState`]): flows in the middle of a
//!   ClientHello (`PENDING`), with the parser's state and the next
//!   sequence number expected, and blocked flows (`BLOCKED`), whose later
//!   packets from the client are dropped. Plain on purpose: an LRU would
//!   silently forget a half-parsed ClientHello when flooded, letting its
//!   rest through; a full plain map is visible, and the "cannot judge"
//!   policy applies and is counted (`tls_flow_table_full`).
//!
//! Only packets in a flow's sequence space change its state or are dropped
//! for it: a segment more than [`WINDOW`] bytes from where the flow's
//! stream stands is not this stream's (an off-path sender does not know
//! the numbers) and is judged as if the flow were not tracked, without
//! touching its entry. A SYN with another sequence number does not restart
//! a tracked flow.
//!
//! Entries expire after [`TTL_NEW_NS`], [`TTL_PENDING_NS`] or
//! [`TTL_BLOCKED_NS`] without a packet in their window: the kernel deletes
//! an expired entry it meets, and the daemon sweeps the rest.
//!
//! `FLOW_HINT` spares established flows the lookups: an array of counters,
//! one per hint slot, incremented before a key is inserted into either map
//! and decremented after it is deleted (by the kernel, or the daemon's
//! sweep through a shared mapping). A zero counter proves no flow of that
//! slot is tracked, so the packet needs no lookup. An entry the LRU evicts
//! leaves its count behind (a lookup too many, never one too few); the
//! daemon's sweep takes back counts it finds in excess twice in a row.

use crate::parse::tls::TlsState;

/// SYN seen, no data yet (`NEW_FLOWS`; the kernel also works on a copy
/// as a [`FlowState`] of this kind).
pub const NEW: u8 = 1;
/// In the middle of a ClientHello.
pub const PENDING: u8 = 2;
/// Blocked: every later packet from the client is dropped.
pub const BLOCKED: u8 = 3;

/// [`FlowState::flags`]: the server name was judged allowed; the parser
/// reads on only to learn whether the ClientHello carries ECH.
pub const FLAG_SNI_PASSED: u8 = 1;
/// [`FlowState::flags`]: with [`FLAG_SNI_PASSED`], an allow rule matched
/// the name (rather than no rule), for the outcome counted at the end.
pub const FLAG_SNI_ALLOWED: u8 = 2;
/// [`FlowState::flags`]: the flow was tracked from its SYN, so its stream's
/// first byte is known. A gap inside its ClientHello is the client's to
/// fill (the segment past it is dropped), whether or not the flag is set.
/// A flow first seen at a ClientHello (its SYN came before the daemon, or
/// it was forgotten after a verdict and a spurious retransmission looked
/// like a new ClientHello) also lets a segment beyond where the ClientHello
/// can end pass (see [`FLAG_PASSED_AHEAD`]), and passes a "ClientHello"
/// that does not parse: dropping either would stall a connection the
/// filter never saw begin.
pub const FLAG_SYN_SEEN: u8 = 4;
/// [`FlowState::flags`]: a segment past a gap, beyond where the
/// ClientHello can end, was passed (the connection's later data, after a
/// retransmitted start of a ClientHello was taken for a new one); it
/// starts at [`FlowState::passed_at`]. Should the ClientHello reach there,
/// its rest went past unseen, and it is not judged.
pub const FLAG_PASSED_AHEAD: u8 = 8;

/// Idle time after which a `NEW` entry is forgotten. A client sends its
/// first data one round trip after the handshake; a client that waits for
/// the entry to go before sending its ClientHello out of order is what the
/// entry is there for, so it lives long (the LRU bounds the memory).
pub const TTL_NEW_NS: u64 = 600_000_000_000;
/// Idle time after which a half-parsed ClientHello is forgotten: longer
/// than servers wait for the rest of one (nginx's `ssl_handshake_timeout`
/// and Apache's are 60 s), so that waiting does not slip its rest past.
pub const TTL_PENDING_NS: u64 = 600_000_000_000;
/// Idle time after which a blocked flow is forgotten.
pub const TTL_BLOCKED_NS: u64 = 60_000_000_000;

/// How far from where a flow's stream stands a segment may start and still
/// be this stream's: more than a receiver accepts at the start of a
/// connection (its window is at most 64 KiB before scaling), so that an
/// off-path sender, who does not know the numbers, hits a flow's window
/// with a chance of 2^-11 per attempt.
pub const WINDOW: u32 = 1 << 20;

/// [`NewFlow::flags`]: urgent data was signalled on the flow (see
/// [`FLAG_URGENT`]); the entry was made for that, not by a SYN, and holds
/// the flow to nothing else.
pub const NEW_URGENT: u32 = 1;

/// [`FlowState::flags`]: urgent data was signalled on the flow. The
/// receiver takes the byte the urgent pointer names out of the stream, even
/// when it arrives later in a segment without URG (Linux: `TCP_URG_NOTYET`),
/// so a ClientHello on such a flow may not be what the server reads: it is
/// not judged (`tcp_urgent`). No TLS client sends urgent data.
pub const FLAG_URGENT: u8 = 16;

/// Value of `NEW_FLOWS`: a flow between its SYN and its first data.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NewFlow {
    /// The SYN's sequence number: the first data starts at `isn + 1`.
    pub isn: u32,
    /// [`NEW_URGENT`].
    pub flags: u32,
    /// `bpf_ktime_get_coarse_ns` of the SYN.
    pub seen_ns: u64,
}

impl NewFlow {
    /// Whether the entry is past its time to live at `now_ns`.
    #[inline(always)]
    pub const fn expired(&self, now_ns: u64) -> bool {
        now_ns.wrapping_sub(self.seen_ns) > TTL_NEW_NS
    }
}

/// Value of `FLOWS`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FlowState {
    /// [`NEW`], [`PENDING`] or [`BLOCKED`].
    pub kind: u8,
    /// For blocked flows: the [`crate::Action`] applied.
    pub action: u8,
    /// [`FLAG_SNI_PASSED`], [`FLAG_SNI_ALLOWED`], [`FLAG_SYN_SEEN`],
    /// [`FLAG_PASSED_AHEAD`], [`FLAG_URGENT`].
    pub flags: u8,
    /// Explicit padding; always 0.
    pub pad: u8,
    /// The client's next sequence number we expect.
    pub next_seq: u32,
    /// The client's initial sequence number (the SYN's; for a flow first
    /// seen at its ClientHello, the number before it): a segment starting
    /// before `isn + 1` is not this stream's data, however old it looks.
    pub isn: u32,
    /// With [`FLAG_PASSED_AHEAD`]: the lowest sequence number passed past a gap.
    pub passed_at: u32,
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

    /// Whether a segment starting at `seq` is in this flow's sequence
    /// space: within [`WINDOW`] bytes of the next byte expected (a blocked
    /// flow's: the byte after its ClientHello).
    #[inline(always)]
    pub const fn in_window(&self, seq: u32) -> bool {
        within_window(self.next_seq, seq)
    }
}

impl NewFlow {
    /// Whether a segment starting at `seq` is in this flow's sequence
    /// space (see [`FlowState::in_window`]).
    #[inline(always)]
    pub const fn in_window(&self, seq: u32) -> bool {
        within_window(self.isn.wrapping_add(1), seq)
    }
}

/// Whether a segment starting at `seq` is within [`WINDOW`] bytes, either
/// way, of `next_seq`, where a stream stands: the one test of every table
/// that follows a TCP stream (TLS flows, DNS streams).
#[inline(always)]
pub const fn within_window(next_seq: u32, seq: u32) -> bool {
    seq.wrapping_sub(next_seq).wrapping_add(WINDOW) <= 2 * WINDOW
}

/// The flow key's seed for packets of interface `ifindex`: the same
/// addresses and ports on two interfaces are two flows, so a packet on one
/// never changes or blocks the other's.
#[inline(always)]
pub const fn seed_for(seed: u64, ifindex: u32) -> u64 {
    seed ^ (ifindex as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Key of an IPv4 flow, client to server: a seeded hash of the 4-tuple.
/// Two rounds of `fmix64`: every segment of every TCP flow through the
/// filter pays for this hash, so it mixes the tuple in two words. With the
/// seed secret, keys of distinct flows collide with probability about
/// n/2^64, as rule keys do.
#[inline(always)]
pub const fn flow_key_v4(seed: u64, src: u32, dst: u32, sport: u16, dport: u16) -> u64 {
    let h = crate::parse::name::fmix64(seed ^ 0x243f_6a88_85a3_08d3 ^ ((src as u64) << 32 | dst as u64));
    crate::parse::name::fmix64(h ^ ((sport as u64) << 16 | dport as u64))
}

/// Key of an IPv6 flow, client to server (see [`flow_key_v4`]); a different
/// constant keeps the two families apart.
#[inline(always)]
pub const fn flow_key_v6(seed: u64, src: [u64; 2], dst: [u64; 2], sport: u16, dport: u16) -> u64 {
    let mut h = crate::parse::name::fmix64(seed ^ 0x1319_8a2e_0370_7344 ^ src[0]);
    h = crate::parse::name::fmix64(h ^ src[1]);
    h = crate::parse::name::fmix64(h ^ dst[0]);
    crate::parse::name::fmix64(h ^ dst[1] ^ ((sport as u64) << 16 | dport as u64).rotate_left(32))
}

/// The `FLOW_HINT` slot of a flow key, for a hint of `mask + 1` counters.
#[inline(always)]
pub const fn hint_slot(key: u64, mask: u64) -> u32 {
    ((key >> 17) & mask) as u32
}

/// Hint counters for `flows` flows: a power of two, eight per flow, so that
/// even with the table full about one established flow in nine shares a
/// counter with a tracked one and pays for a lookup (1 - e^-1/8).
pub const fn hint_words(flows: usize) -> usize {
    let w = (flows * 8).next_power_of_two();
    if w < 1024 { 1024 } else { w }
}

/// Slots of `FLOW_RING` for `flows` flows: one eighth of the hint's
/// words, a power of two at least `flows` (at least 128), so that the
/// kernel finds its mask in the settings (`hint_mask >> 3`).
///
/// The ring keeps the keys of the latest `FLOWS` insertions, each written
/// at the next slot of a hand that goes round. When an insertion finds
/// `FLOWS` full, the kernel examines the next [`RECLAIM_SLOTS`] slots of a
/// second hand, deletes the entries there that are past their time to
/// live, and tries once more: a table filled by stale entries (the daemon
/// down, or a flood of partial ClientHellos left to age) frees itself
/// without the daemon's sweep. Holding at least as many keys as the table
/// has entries, the ring covers a table filled by its latest insertions,
/// as a flood fills it; an older entry whose slot was written over is left
/// to the sweep. A slot whose key has no entry any more is emptied (key 0).
pub const fn ring_slots(flows: usize) -> usize {
    hint_words(flows) / 8
}

/// Ring slots examined per insertion that found `FLOWS` full: each costs a
/// lookup, so a table full of live entries costs a failing insertion a
/// bounded few.
pub const RECLAIM_SLOTS: u32 = 8;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_every_part_of_the_tuple() {
        let base = flow_key_v4(7, 0x0a01_0002, 0x0a02_0002, 40000, 443);
        for other in [
            flow_key_v4(8, 0x0a01_0002, 0x0a02_0002, 40000, 443),
            flow_key_v4(7, 0x0a01_0003, 0x0a02_0002, 40000, 443),
            flow_key_v4(7, 0x0a01_0002, 0x0a02_0003, 40000, 443),
            flow_key_v4(7, 0x0a01_0002, 0x0a02_0002, 40001, 443),
            flow_key_v4(7, 0x0a01_0002, 0x0a02_0002, 40000, 444),
            // The other direction is another flow.
            flow_key_v4(7, 0x0a02_0002, 0x0a01_0002, 443, 40000),
        ] {
            assert_ne!(base, other);
        }
        let v6 = flow_key_v6(7, [1, 2], [3, 4], 40000, 443);
        for other in [
            flow_key_v6(7, [1, 2], [3, 4], 40000, 444),
            flow_key_v6(7, [1, 3], [3, 4], 40000, 443),
            flow_key_v6(7, [3, 4], [1, 2], 443, 40000),
            flow_key_v6(9, [1, 2], [3, 4], 40000, 443),
        ] {
            assert_ne!(v6, other);
        }
    }

    #[test]
    fn windows() {
        let s = FlowState {
            kind: PENDING,
            action: 0,
            flags: 0,
            pad: 0,
            next_seq: 10,
            isn: 0,
            passed_at: 0,
            last_seen_ns: 0,
            tls: TlsState::new(),
        };
        for seq in [10, 11, 0, u32::MAX, 10 + WINDOW, 10u32.wrapping_sub(WINDOW)] {
            assert!(s.in_window(seq), "{seq}");
        }
        for seq in [11 + WINDOW, 9u32.wrapping_sub(WINDOW), 1 << 31] {
            assert!(!s.in_window(seq), "{seq}");
        }
        assert_ne!(seed_for(1, 2), seed_for(1, 3));
        assert_eq!(seed_for(1, 0), 1);
    }

    #[test]
    fn ring_mask_follows_the_hint_mask() {
        for flows in [1, 16, 128, 1000, 65536, 100_000] {
            let slots = ring_slots(flows);
            assert!(slots.is_power_of_two() && slots >= flows && slots >= 128, "{flows}: {slots}");
            assert_eq!((hint_words(flows) as u64 - 1) >> 3, slots as u64 - 1, "{flows}");
        }
    }

    #[test]
    fn hint_slots_spread() {
        // 4096 flows from one client over 64 slots: every slot used.
        let mut used = [false; 64];
        for port in 0..4096u16 {
            used[hint_slot(flow_key_v4(3, 0x0a01_0002, 0x0a02_0002, 1024 + port, 443), 63) as usize] = true;
        }
        assert!(used.iter().all(|u| *u));
    }
}
