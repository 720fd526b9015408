//! DNS over TCP as a stream (`DNS_STREAMS`): where each connection's next
//! message starts, and the first bytes of a message split across segments.
//!
//! RFC 1035 §4.2.2 and RFC 7766 §8: over TCP a query is a two-byte length
//! and the message, and the sender may cut that stream anywhere: the length
//! prefix alone in one segment, a name split between two, several queries
//! in one segment, one after another on the same connection. The server
//! reads the stream, not the segments; so the filter follows the stream:
//! each connection's entry says the sequence number of the next byte it has
//! not yet taken in ([`DnsStream::next_seq`]), and either how much of the
//! current message is still to come after its question was judged
//! ([`DnsStream::skip`]) or the message's first bytes gathered so far, up
//! to the end of its question ([`DnsStream::head`], [`HEAD_MAX`]).
//!
//! The stream's segments must arrive in order: a segment past a gap is
//! dropped (the client sends it again once the gap is filled), one that
//! only repeats bytes taken in passes (its original was judged), one that
//! overlaps the last byte taken in is read from the next byte on
//! ([`place`]). A connection is picked up at the first data segment seen
//! (the filter started after its handshake, or the client sends no SYN the
//! filter saw): that segment must start a message, and no byte before it
//! can be judged later ([`DnsStream::start_seq`]).
//!
//! A plain hash map of fixed size, not an LRU: an entry the map forgot
//! would let a client realign the stream (send a segment overlapping bytes
//! judged, whose new part the server reads as a message the filter read as
//! the middle of another), and an LRU can be made to forget by a flood. A
//! full map is visible instead: the "cannot judge" policy applies
//! (`dns_stream_table_full`). Entries expire after [`TTL_NS`] idle
//! ([`TTL_MID_MESSAGE_NS`] inside a message): the kernel deletes an expired
//! entry it meets, the daemon sweeps the rest.
//! Not pinned: a restarted daemon starts with an empty map (a stream then in
//! progress is picked up again at its next message).

use crate::layout::flow::{WINDOW, within_window};
use crate::parse::name::MAX_QUESTION;

/// Entries of `DNS_STREAMS`: DNS over TCP connections active within
/// [`TTL_NS`].
pub const ENTRIES: u32 = 16384;

/// Idle time after which the entry of a connection between two messages is
/// forgotten: servers close idle DNS connections sooner (RFC 7766 §6.2.3;
/// BIND's and Unbound's default idle timeouts are 30 s), and were it still
/// open, its next segment starts a message, where it is picked up again.
pub const TTL_NS: u64 = 120_000_000_000;

/// Idle time after which the entry of a connection in the middle of a
/// message is forgotten: longer than any server waits for the rest of one,
/// so that waiting cannot make the filter take that rest for a new message.
pub const TTL_MID_MESSAGE_NS: u64 = 600_000_000_000;

/// A message's head: its length prefix, the DNS header and the question at
/// its longest. The question is judged once this much of a message (or all
/// of a shorter one) has been read.
pub const HEAD_MAX: usize = 2 + 12 + MAX_QUESTION;

/// Bytes of [`DnsStream::head`]: [`HEAD_MAX`] rounded up to 8.
pub const HEAD_BUF: usize = (HEAD_MAX + 7) & !7;

const _: () = assert!(HEAD_MAX == 273 && HEAD_BUF >= HEAD_MAX && HEAD_BUF.is_multiple_of(8));

/// Value of `DNS_STREAMS`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DnsStream {
    /// Sequence number of the next byte not yet taken in.
    pub next_seq: u32,
    /// Sequence number of the first byte the filter took in: bytes before
    /// it were never judged.
    pub start_seq: u32,
    /// Bytes of the current message still to come after its question was
    /// judged (0: at a message's start, or gathering its head).
    pub skip: u32,
    /// Bytes of the current message's head in [`DnsStream::head`], its
    /// length prefix first.
    pub have: u16,
    /// [`ANCHORED`], [`SYN_AGAIN`].
    pub flags: u8,
    /// Segments that moved the stream, up to 255: a stream picked up (not
    /// anchored) gives way to its connection's SYN-anchored one only while
    /// it has taken one segment (a forged one, before the client's first),
    /// never once it follows a real stream.
    pub segments: u8,
    /// `bpf_ktime_get_coarse_ns` of the last segment that moved the stream.
    pub last_seen_ns: u64,
    /// The current message's first `have` bytes.
    pub head: [u8; HEAD_BUF],
}

const _: () = assert!(core::mem::size_of::<DnsStream>() == 24 + HEAD_BUF);

impl DnsStream {
    /// A connection picked up at a segment starting at `seq`.
    #[inline(always)]
    pub const fn new(seq: u32) -> Self {
        let mut s = Self {
            next_seq: 0,
            start_seq: 0,
            skip: 0,
            have: 0,
            flags: 0,
            segments: 0,
            last_seen_ns: 0,
            head: [0; HEAD_BUF],
        };
        s.begin(seq, 0);
        s
    }

    /// Starts the stream afresh at `start` with `flags` ([`ANCHORED`] or
    /// none), in place: `head` is left as it is (nothing of it is read
    /// while `have` is 0), which spares the kernel a 280-byte clear.
    #[inline(always)]
    pub const fn begin(&mut self, start: u32, flags: u8) {
        (self.next_seq, self.start_seq, self.skip, self.have, self.flags, self.segments) =
            (start, start, 0, 0, flags, 0);
    }

    /// Whether a segment starting at `seq` is within [`WINDOW`] bytes of
    /// where the stream stands.
    #[inline(always)]
    pub const fn in_window(&self, seq: u32) -> bool {
        within_window(self.next_seq, seq)
    }

    /// Whether the entry is past its time to live at `now_ns`.
    #[inline(always)]
    pub const fn expired(&self, now_ns: u64) -> bool {
        let ttl = if self.have == 0 && self.skip == 0 { TTL_NS } else { TTL_MID_MESSAGE_NS };
        now_ns.wrapping_sub(self.last_seen_ns) > ttl
    }
}

/// [`DnsStream::flags`]: the stream's first byte is known from the
/// connection's SYN (`start_seq` is its number plus one), not only the
/// first byte the filter saw: nothing comes before it.
pub const ANCHORED: u8 = 1;
/// [`DnsStream::flags`]: a SYN other than this connection's came on its
/// addresses and ports within its window (a new connection reusing them,
/// maybe with a number chosen to fall among bytes taken in): its data would
/// be framed from that SYN, not as the filter follows the stream, so no
/// segment within the window is judged any more.
pub const SYN_AGAIN: u8 = 2;

/// Where a segment falls in a connection's stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// No entry: the connection is picked up here; the segment must start
    /// a message.
    PickUp,
    /// Its bytes from this offset on are the stream's next.
    From(u32),
    /// Only bytes already taken in: a retransmission.
    Old,
    /// It starts past the next byte expected: bytes are missing before it.
    Gap,
    /// It reaches before the first byte taken in: what it carries there
    /// was never judged.
    BeforeStart,
    /// More than [`WINDOW`] bytes from where the stream stands: not this
    /// connection's stream (an off-path sender does not know the numbers);
    /// it changes nothing.
    NotInWindow,
}

/// Where a segment of `len > 0` payload bytes starting at `seq` falls in
/// the stream `entry` describes (none: not tracked).
#[inline(always)]
pub const fn place(entry: Option<&DnsStream>, seq: u32, len: u32) -> Place {
    let Some(s) = entry else {
        return Place::PickUp;
    };
    if !s.in_window(seq) {
        return Place::NotInWindow;
    }
    let ahead = seq.wrapping_sub(s.next_seq);
    if ahead != 0 && ahead <= WINDOW {
        return Place::Gap;
    }
    // At or before the next byte: before the stream's first byte too when
    // its distance from that byte is more than the stream's length (it
    // wrapped below zero). A stream anchored at its SYN has nothing before
    // its first byte: the receiver drops a segment's bytes before it (they
    // would be the SYN's, or older) and reads on from there, and so does
    // the filter.
    let before = s.start_seq.wrapping_sub(seq);
    if seq.wrapping_sub(s.start_seq) > s.next_seq.wrapping_sub(s.start_seq) {
        if s.flags & ANCHORED != 0 && before < len {
            let behind = s.next_seq.wrapping_sub(seq);
            return if behind >= len { Place::Old } else { Place::From(behind) };
        }
        return Place::BeforeStart;
    }
    let behind = s.next_seq.wrapping_sub(seq);
    if behind >= len {
        return Place::Old;
    }
    Place::From(behind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(next_seq: u32, start_seq: u32) -> DnsStream {
        DnsStream { next_seq, start_seq, ..DnsStream::new(0) }
    }

    #[test]
    fn places() {
        let s = at(1100, 1000);
        for (seq, len, want) in [
            (1100, 10, Place::From(0)),
            (1090, 20, Place::From(10)),
            (1000, 100, Place::Old),
            (1090, 10, Place::Old),
            (1000, 200, Place::From(100)),
            (1101, 10, Place::Gap),
            (1100 + WINDOW, 10, Place::Gap),
            (999, 10, Place::BeforeStart),
            (999, 500, Place::BeforeStart),
            (1101 + WINDOW, 10, Place::NotInWindow),
            (1100u32.wrapping_sub(WINDOW + 1), 10, Place::NotInWindow),
            (1 << 31, 10, Place::NotInWindow),
        ] {
            assert_eq!(place(Some(&s), seq, len), want, "{seq} +{len}");
        }
        assert_eq!(place(None, 5, 1), Place::PickUp);
    }

    #[test]
    fn an_anchored_stream_has_nothing_before_its_start() {
        let s = DnsStream { flags: ANCHORED, ..at(1000, 1000) };
        assert_eq!(place(Some(&s), 990, 30), Place::From(10));
        assert_eq!(place(Some(&s), 990, 10), Place::BeforeStart);
        let s = DnsStream { flags: ANCHORED, ..at(1100, 1000) };
        assert_eq!(place(Some(&s), 990, 130), Place::From(110));
        assert_eq!(place(Some(&s), 990, 50), Place::Old);
        let picked = at(1000, 1000);
        assert_eq!(place(Some(&picked), 990, 30), Place::BeforeStart);
    }

    #[test]
    fn places_across_the_wrap() {
        let s = at(5, u32::MAX - 10);
        assert_eq!(place(Some(&s), 5, 3), Place::From(0));
        assert_eq!(place(Some(&s), u32::MAX - 10, 16), Place::Old);
        assert_eq!(place(Some(&s), u32::MAX - 10, 20), Place::From(16));
        assert_eq!(place(Some(&s), u32::MAX - 11, 20), Place::BeforeStart);
        assert_eq!(place(Some(&s), 6, 3), Place::Gap);
    }
}
