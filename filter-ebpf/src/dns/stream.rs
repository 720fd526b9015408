//! The DNS-over-TCP stream stage (see `maps::layout::dns_stream`): each
//! segment placed in its connection's stream, each message's head (length
//! prefix, header, question) gathered from as many segments as it spans and
//! handed to the DNS stage, which judges the question and, when it passes,
//! hands the segment back to go on after the message.
//!
//! The stream's entry is written only when every message the segment holds
//! has passed: a segment with a blocked message leaves the stream where it
//! was, so its retransmission is judged again rather than taken for bytes
//! already seen.

use aya_ebpf::{helpers::bpf_ktime_get_coarse_ns, programs::XdpContext};
use maps::{
    Counter, Scratch, Settings, Stage, handoff,
    layout::dns_stream::{self, DnsStream, HEAD_BUF, HEAD_MAX, Place},
    layout::settings::policy,
    parse::name::{MAX_QUESTION, QUESTION_BUF},
};

use crate::{
    flows,
    packet::{
        self, Layers, Packet,
        headers::{DNS_HLEN, TCP_SYN, TCP_URG, TcpFlagsHead},
    },
    tables::{DNS_STREAMS, NEW_FLOWS, SETTINGS, scratch},
    verdict::{self, Done, not_judged, pass},
    verifier,
};

/// Where the QNAME starts in a message's head: past the length prefix and
/// the DNS header.
const QNAME_AT: usize = 2 + DNS_HLEN;

/// The stream stage: the segment the entry stage handed over, or the rest
/// of one after a message the DNS stage passed.
#[inline(always)]
pub fn judge(ctx: &XdpContext) -> Result<Stage, Done> {
    let (Some(settings), Some(scratch)) = (SETTINGS.get(0), scratch()) else {
        return Err(pass(Counter::Internal));
    };
    let l = Layers::taken_over(&scratch.handoff);
    // Bounded: `ip_end` is masked, and the payload starts before it.
    let seg_len = (l.payload_len() & 0xffff) as u32;
    let off = if scratch.handoff.stream & handoff::STREAM_BACK != 0 {
        // The message passed ends here; past the segment, its rest is to come.
        let end = scratch.handoff.msg_end;
        if end >= seg_len {
            scratch.dns.skip = end - seg_len;
            seg_len
        } else {
            end
        }
    } else {
        enter(ctx, &l, seg_len, settings, scratch)?
    };
    next(ctx, &l, off, seg_len, settings, scratch)
}

/// Places a segment fresh from the entry stage in its connection's stream,
/// copying the stream's state into `scratch.dns`; returns where in the
/// payload the stream's next byte is, past the rest of a message passed
/// before.
#[inline(always)]
fn enter(ctx: &XdpContext, l: &Layers, seg_len: u32, settings: &Settings, scratch: &mut Scratch) -> Result<u32, Done> {
    let pkt = Packet::new(ctx);
    let Some(t) = pkt.header::<TcpFlagsHead>(l.l4_off) else {
        return Err(pass(Counter::TruncatedHeader));
    };
    let flags = t.flags();
    if let Some(c) = l.tcp_decoy(&pkt, flags) {
        return Err(not_judged(settings, c));
    }
    // The receiver takes the urgent byte out of the stream (SO_OOBINLINE is
    // off by default), which would shift every message after it. No DNS
    // client sends urgent data.
    if flags & TCP_URG != 0 {
        return Err(not_judged(settings, Counter::TcpUrgent));
    }
    // SAFETY: the context the kernel passed; ingress_ifindex is always readable.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    let Some(key) = l.flow_key(&pkt, settings.seed, ifindex, t.sport()) else {
        return Err(pass(Counter::TruncatedHeader));
    };
    scratch.handoff.flow_key = key;
    verdict::trace(|t| t.flow_key = key);
    let syn = flags & TCP_SYN != 0;
    // SAFETY: a plain helper call.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let entry = DNS_STREAMS.get_ptr_mut(key);
    // SAFETY: a value pointer from this run's lookup; the entry stays
    // allocated for the whole run.
    let entry = match entry.map(|p| unsafe { &mut *p }) {
        Some(e) if e.expired(now) => {
            // Nothing to keep: the connection is picked up afresh.
            let _ = DNS_STREAMS.remove(key);
            None
        }
        other => other,
    };
    // Whatever would move a stream (a SYN anchoring it, data) must reach
    // the server: a segment with a wrong TCP checksum never does (the
    // receiver discards it), so it is a decoy, or damaged, and moves nothing
    // (see `crate::packet::tcp_checksum_ok`).
    if packet::headers_discarded(ctx, l) {
        return Err(not_judged(settings, Counter::TcpDiscarded));
    }
    if !packet::tcp_checksum_ok(ctx, l, settings.policy & policy::PARTIAL_CSUM != 0) {
        return Err(not_judged(settings, Counter::TcpBadChecksum));
    }
    if syn {
        return Err(syn_seen(t.seq(), seg_len, entry, key, now, settings));
    }
    let seq = t.seq();
    // Not followed yet: anchored at the connection's SYN if it was seen
    // (`NEW_FLOWS`), picked up here otherwise. A stream picked up (never
    // anchored) gives way to the connection's own SYN-anchored one when
    // this segment starts exactly at that SYN's next byte: a segment a
    // sender forged before the client's first one cannot hold the
    // connection's place (nor can a sender move a stream picked up mid-way
    // once it has followed more than one segment: `DnsStream::segments`).
    let replaceable =
        entry.as_ref().is_some_and(|e| e.flags & dns_stream::ANCHORED == 0 && e.segments <= 1 && !e.in_window(seq));
    let anchor = if entry.is_none() || replaceable {
        // SAFETY: a value pointer from this run's lookup, copied at once (16 bytes).
        NEW_FLOWS.get_ptr(key).map(|p| unsafe { *p }).filter(|v| !v.expired(now))
    } else {
        None
    };
    let anchor = anchor.filter(|v| entry.is_none() || v.isn.wrapping_add(1) == seq);
    let off = if let Some(v) = anchor {
        scratch.dns.begin(v.isn.wrapping_add(1), dns_stream::ANCHORED);
        scratch.handoff.stream |= handoff::STREAM_FROM_SYN;
        match dns_stream::place(Some(&scratch.dns), seq, seg_len) {
            Place::From(off) => off,
            Place::Gap => return Err(not_judged(settings, Counter::DnsTcpGap)),
            // Bytes only before the stream's first byte, or far from it.
            _ => return Err(not_judged(settings, Counter::DnsTcpNotInWindow)),
        }
    } else {
        match dns_stream::place(entry.as_deref(), seq, seg_len) {
            // After another SYN within the stream's window, no segment in
            // it can be placed: it may be the new connection's, framed from
            // that SYN (see `syn_seen`).
            Place::Old | Place::From(_) | Place::Gap | Place::BeforeStart
                if entry.as_ref().is_some_and(|e| e.flags & dns_stream::SYN_AGAIN != 0) =>
            {
                return Err(not_judged(settings, Counter::DnsTcpReused));
            }
            Place::PickUp => {
                scratch.dns.begin(seq, 0);
                0
            }
            Place::From(off) => {
                if let Some(e) = entry {
                    verifier::copy_words(&raw mut scratch.dns, e);
                }
                off
            }
            Place::Old => return Err(pass(Counter::DnsTcpRetransmission)),
            Place::Gap => return Err(not_judged(settings, Counter::DnsTcpGap)),
            Place::BeforeStart => return Err(not_judged(settings, Counter::DnsTcpBeforeStart)),
            Place::NotInWindow => return Err(not_judged(settings, Counter::DnsTcpNotInWindow)),
        }
    };
    let d = &mut scratch.dns;
    d.next_seq = seq.wrapping_add(seg_len);
    d.last_seen_ns = now;
    d.segments = d.segments.saturating_add(1);
    let take = if d.skip < seg_len - off { d.skip } else { seg_len - off };
    d.skip -= take;
    Ok(off + take)
}

/// Goes on at `off` in the payload, at a message's start or inside its
/// head: hands a whole head to the DNS stage, or keeps the stream's state
/// and passes the segment when it ends first.
#[inline(always)]
fn next(
    ctx: &XdpContext,
    l: &Layers,
    off: u32,
    seg_len: u32,
    settings: &Settings,
    scratch: &mut Scratch,
) -> Result<Stage, Done> {
    if off >= seg_len {
        let outcome = match scratch.handoff.judged {
            handoff::JUDGED_NO_MATCH => Counter::PassNoMatch,
            handoff::JUDGED_ALLOWED => Counter::PassAllowed,
            _ => Counter::DnsTcpRest,
        };
        return Err(keep(scratch, settings, outcome));
    }
    // Where the QNAME is, for the trace, if the whole head is in this segment.
    let qname_at = if scratch.dns.have == 0 { l.payload_off + off as usize + 2 + DNS_HLEN } else { 0 };
    let (off, prefix) = gather(ctx, l, off, seg_len, 2, &mut scratch.dns)?;
    if !prefix {
        return Err(keep(scratch, settings, Counter::DnsTcpPartial));
    }
    let d = &scratch.dns;
    let msg_len = u32::from(u16::from_be_bytes([d.head[0], d.head[1]]));
    if (msg_len as usize) < DNS_HLEN {
        return Err(not_judged(settings, Counter::TcpNotMessageStart));
    }
    let head_len = if 2 + msg_len < HEAD_MAX as u32 { 2 + msg_len } else { HEAD_MAX as u32 };
    let (off, whole) = gather(ctx, l, off, seg_len, head_len, &mut scratch.dns)?;
    if !whole {
        return Err(keep(scratch, settings, Counter::DnsTcpPartial));
    }
    let d = &scratch.dns;
    let flags = u16::from_be_bytes([d.head[4], d.head[5]]);
    let qdcount = u16::from_be_bytes([d.head[6], d.head[7]]);
    // Responses, other opcodes, no question: in a client's stream they are
    // as likely bytes the client framed to look so; `--unjudged drop` must
    // not let them through.
    if flags & 0x8000 != 0 || (flags >> 11) & 0xf != 0 || qdcount == 0 {
        return Err(not_judged(settings, Counter::TcpNotMessageStart));
    }
    if qdcount > 1 {
        return Err(not_judged(settings, Counter::DnsMultiQuestion));
    }
    // The question for the DNS stage, as a UDP query's is copied there; the
    // message may end inside it (`qavail`).
    copy_question(scratch);
    let h = &mut scratch.handoff;
    h.qflags = flags;
    h.qavail = (head_len - 2 - DNS_HLEN as u32) as u16;
    h.msg_end = off + (2 + msg_len - head_len);
    // An offset past 16 bits (a jumbo frame) is not recorded.
    h.qname_at = u16::try_from(qname_at).unwrap_or(0);
    scratch.dns.have = 0;
    Ok(Stage::Dns)
}

/// Copies the question out of a message's head into the DNS stage's
/// buffer: a fixed length, at least the most a question can be (the DNS
/// stage reads only `qavail` bytes of it), a word at a time (see
/// `verifier::copy_words`).
#[inline(always)]
#[expect(clippy::cast_ptr_alignment, reason = "`Scratch::question` is 8-aligned (asserted)")]
fn copy_question(scratch: &mut Scratch) {
    const WORDS: usize = (HEAD_BUF - QNAME_AT) / 8;
    const { assert!(8 * WORDS >= MAX_QUESTION && 8 * WORDS <= QUESTION_BUF) };
    const { assert!(core::mem::offset_of!(Scratch, question).is_multiple_of(8)) };
    let src = scratch.dns.head.as_ptr();
    let dst = scratch.question.as_mut_ptr().cast::<u64>();
    for i in 0..WORDS {
        // SAFETY: word `i` lies inside `head` (past `QNAME_AT`; unaligned,
        // as the QNAME is at an even offset) and inside `question`.
        unsafe { dst.add(i).write_volatile(src.add(QNAME_AT + 8 * i).cast::<u64>().read_unaligned()) };
    }
}

/// Adds bytes from the payload at `off` to the message head in `d` until it
/// holds `want` bytes or the segment ends; returns the offset after them,
/// and whether the head now holds `want`.
#[inline(always)]
fn gather(
    ctx: &XdpContext,
    l: &Layers,
    off: u32,
    seg_len: u32,
    want: u32,
    d: &mut DnsStream,
) -> Result<(u32, bool), Done> {
    let have = u32::from(d.have);
    if have >= want {
        return Ok((off, true));
    }
    let left = seg_len - off;
    if left == 0 {
        return Ok((off, false));
    }
    let take = if want - have < left { want - have } else { left };
    // Bounds the verifier sees, each tested on its own (LLVM would fold
    // the tests into arithmetic it learns nothing from): `have < HEAD_MAX`
    // and `0 < take <= HEAD_MAX`, so the copy stays inside `Scratch`, whose
    // `tls_buf` follows the head.
    let at = verifier::opaque(have as usize);
    if at >= HEAD_MAX {
        return Err(pass(Counter::Internal));
    }
    let len = verifier::opaque(take as usize);
    if len == 0 {
        return Err(pass(Counter::Internal));
    }
    let len = verifier::opaque(len);
    if len > HEAD_MAX {
        return Err(pass(Counter::Internal));
    }
    // SAFETY: `at < HEAD_MAX <= HEAD_BUF`, and `at + len <= want <= HEAD_MAX`.
    let dst = unsafe { d.head.as_mut_ptr().add(at) };
    if !Packet::load(ctx, l.payload_off + off as usize, dst, len) {
        return Err(pass(Counter::TruncatedHeader));
    }
    d.have = (have + take) as u16;
    Ok((off + take, have + take >= want))
}

/// A SYN to port 53. On a connection not followed yet it anchors the
/// stream: its number goes into `NEW_FLOWS` (an LRU: a SYN flood evicts its
/// own entries), and the connection's first data must start right after it.
/// On a followed stream, a SYN other than the connection's own (its
/// retransmission, before any data) is a new connection reusing the
/// addresses and ports, or forged. Within the stream's window its data
/// would be framed from that SYN, which the filter cannot tell from the old
/// stream's: no segment there is judged any more
/// (`dns_stream::SYN_AGAIN`, `dns_tcp_reused`) until the entry expires
/// (an off-path sender must guess a number within the window: 2^-11 a
/// try). Outside the window the new connection's data is not judged either
/// (`dns_tcp_not_in_window`) until then. A SYN's
/// data (TCP Fast Open) is not judged: the server takes it only with a
/// valid cookie, which the filter cannot see.
#[inline(always)]
fn syn_seen(isn: u32, seg_len: u32, entry: Option<&mut DnsStream>, key: u64, now: u64, settings: &Settings) -> Done {
    match entry {
        Some(e) => {
            // The connection's own SYN again: anchored there, and no data yet.
            let own =
                e.flags & dns_stream::ANCHORED != 0 && isn.wrapping_add(1) == e.start_seq && e.next_seq == e.start_seq;
            if !own && e.in_window(isn.wrapping_add(1)) {
                e.flags |= dns_stream::SYN_AGAIN;
            } else if e.flags & dns_stream::ANCHORED == 0 && !own {
                // Far from a stream that was only picked up (maybe forged):
                // the connection's first data at this SYN's next byte will
                // take its place.
                let _ = flows::track_syn(key, isn, now, settings);
            }
        }
        None => {
            let _ = flows::track_syn(key, isn, now, settings);
        }
    }
    if seg_len != 0 {
        return not_judged(settings, Counter::DnsTcpSynData);
    }
    pass(Counter::TcpSyn)
}

/// Writes the stream's state as this segment leaves it and passes the
/// segment as `outcome`. A connection the full map cannot hold is not
/// judged: without its place, its next segment could not be. A stream just
/// anchored at its SYN no longer needs the SYN's `NEW_FLOWS` entry.
#[inline(always)]
#[expect(clippy::needless_borrows_for_generic_args, reason = "by value, 304 bytes would be copied to the stack")]
fn keep(scratch: &Scratch, settings: &Settings, outcome: Counter) -> Done {
    let key = scratch.handoff.flow_key;
    if DNS_STREAMS.insert(key, &scratch.dns, 0).is_err() {
        return not_judged(settings, Counter::DnsStreamTableFull);
    }
    if scratch.handoff.stream & handoff::STREAM_FROM_SYN != 0 {
        flows::forget_new(key, settings);
    }
    pass(outcome)
}
