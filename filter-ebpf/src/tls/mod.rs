//! TLS: judging the server name of ClientHellos on any TCP port, including
//! ClientHellos spread over several segments and several TLS records, and
//! keeping the verdict for the whole flow.
//!
//! Per segment, in order:
//! 1. Triage, in the entry stage, on the headers as parsed ([`triage`]): the
//!    flow's key, and the flow hint (`FLOW_HINT`), which says whether the
//!    flow may be in `FLOWS`. A segment that is no SYN, whose flow cannot be
//!    tracked and whose payload does not start like a ClientHello ends
//!    there: established traffic costs a hash and one array read, and no
//!    tail call. Everything else goes on to the TLS stage ([`judge`]).
//! 2. A SYN starts tracking the flow in `NEW_FLOWS`, so its first data must
//!    start at the first byte of the stream; a SYN carrying data (TCP Fast
//!    Open) is parsed like a first data segment. A SYN in a blocked flow's
//!    window is dropped; on a ClientHello in progress it changes nothing.
//! 3. Only segments within `maps::layout::flow::WINDOW` of where a tracked
//!    stream stands are its: any other changes no entry, and what it starts
//!    is not judged (`tls_not_in_window`). A blocked flow's packets are
//!    dropped. A segment past the next expected byte, inside the
//!    ClientHello, is dropped (the client sends the stream again, in order);
//!    for a flow whose SYN was not seen, one beyond where the ClientHello can
//!    end passes and is noted (`tls_beyond_hello`, then `tls_rest_passed`).
//!    One that only repeats bytes already seen passes; one that starts
//!    before the stream is dropped. RST and FIN never end tracking (the
//!    server may have discarded them); data without ACK, with TTL 1 or with
//!    urgent data decides nothing, nor does a segment with a wrong TCP
//!    checksum (checked only on segments that would change or decide a
//!    flow, see `crate::packet::tcp_checksum_ok`).
//! 4. A ClientHello's first segment that holds the name is read in place by
//!    the one-pass locator (`maps::parse::sni`). Anything else (a name in a later
//!    segment, record-layer fragmentation, a continuation) is copied into
//!    scratch memory and run through the state machine (`maps::parse::tls`), one
//!    field per `bpf_loop` iteration; when the ClientHello goes on in a later
//!    segment its state is kept in `FLOWS` ([`hello`]).
//! 5. A complete server name is judged with the rules (`crate::names`); a
//!    blocked flow gets a TCP reset (or a drop) and is remembered as blocked,
//!    an allowed one is forgotten (or, with ECH blocked, read to the end of
//!    its ClientHello).

pub mod decide;
mod hello;

use aya_ebpf::{bindings::xdp_action, helpers::bpf_ktime_get_coarse_ns, programs::XdpContext};
use maps::{
    Counter, Handoff, Scratch, Settings, Stage, handoff,
    layout::flow::{self as flows, FlowState},
    layout::settings::policy,
    parse::tls::{self, Step, TlsState},
};

use self::hello::Quick;
use crate::{
    flows as flow,
    packet::{
        self, Layers, Packet,
        headers::{TCP_ACK, TCP_SYN, TCP_URG, TcpFlagsHead},
    },
    tables::{FLOWS, NEW_FLOWS, SETTINGS, scratch},
    verdict::{self, Done, count, drop, not_judged, pass},
    verifier,
};

/// What the entry stage learned of a TCP segment, for the TLS stage.
#[derive(Clone, Copy)]
pub struct Segment {
    /// The flow's key (see `maps::layout::flow`).
    key: u64,
    seq: u32,
    ack: u32,
    /// The header's flags byte.
    flags: u8,
    /// The flow hint says the flow may be in `FLOWS`.
    hinted: bool,
}

impl Segment {
    /// A SYN without ACK.
    #[inline(always)]
    fn syn(&self) -> bool {
        self.flags & (TCP_SYN | TCP_ACK) == TCP_SYN
    }

    /// Leaves the segment's facts in `h` for the TLS stage.
    #[inline(always)]
    pub fn hand_off(&self, h: &mut Handoff) {
        h.flow_key = self.key;
        h.seq = self.seq;
        h.ack = self.ack;
        h.tcp_flags = self.flags;
        h.flags = if self.hinted { h.flags | handoff::HINTED } else { h.flags & !handoff::HINTED };
    }

    #[inline(always)]
    fn taken_over(h: &Handoff) -> Self {
        Self { key: h.flow_key, seq: h.seq, ack: h.ack, flags: h.tcp_flags, hinted: h.flags & handoff::HINTED != 0 }
    }
}

/// The entry stage's look at a TCP segment to a port other than 53: the
/// segments the TLS stage needs to see (SYNs, segments of flows that may be
/// tracked, payloads that start like a ClientHello), or the outcome of one
/// it does not. Short enough to be verified once per header layout, and
/// most segments end here.
#[inline(always)]
pub fn triage(pkt: &Packet, l: &Layers, settings: &Settings, ifindex: u32) -> Result<Segment, Done> {
    let Some(h) = pkt.header::<TcpFlagsHead>(l.l4_off) else {
        return Err(pass(Counter::TruncatedHeader));
    };
    let Some(key) = l.flow_key(pkt, settings.seed, ifindex, h.sport()) else {
        return Err(pass(Counter::TruncatedHeader));
    };
    verdict::trace(|t| t.flow_key = key);
    let seg = Segment { key, seq: h.seq(), ack: h.ack(), flags: h.flags(), hinted: flow::hinted(key, settings) };
    if !seg.syn() && !seg.hinted && seg.flags & TCP_URG == 0 {
        // Untracked, as almost every segment is: only one that starts like
        // a TLS handshake record carrying a ClientHello needs more (and a
        // rare one signalling urgent data, which the flow must remember).
        if l.payload_off == l.ip_end {
            return Err(pass(Counter::TcpNoPayload));
        }
        if !hello::starts_like_hello(pkt, l) {
            return Err(pass(Counter::TcpOther));
        }
    }
    Ok(seg)
}

/// The TLS stage: the segment the entry stage handed over, judged, or read
/// for the ClientHello verdict stage.
#[inline(always)]
pub fn judge(ctx: &XdpContext) -> Result<Stage, Done> {
    let (Some(settings), Some(scratch)) = (SETTINGS.get(0), scratch()) else {
        return Err(pass(Counter::Internal));
    };
    let l = Layers::taken_over(&scratch.handoff);
    let seg = Segment::taken_over(&scratch.handoff);
    // A decoy the server never takes in (TTL running out here, data
    // without ACK) changes no flow and decides nothing.
    if let Some(c) = l.tcp_decoy(&Packet::new(ctx), seg.flags) {
        return Err(not_judged(settings, c));
    }
    let (key, syn) = (seg.key, seg.syn());
    // The clock for every segment that reaches this stage (SYNs, flows
    // that may be tracked, ClientHellos, urgent data): established traffic
    // ends in the entry stage.
    // SAFETY: a plain helper call.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    // SAFETY: a value pointer from this run's lookup; the entry stays
    // allocated for the whole run.
    let state = if seg.hinted { FLOWS.get_ptr_mut(key).map(|s| unsafe { &mut *s }) } else { None };
    let state = match state {
        Some(s) if s.expired(now) => {
            // Forgotten (this table only), and judged as if never tracked.
            flow::forget_tracked(key, settings);
            None
        }
        other => other,
    };
    // A segment outside the tracked stream's sequence space is not its
    // (see `maps::layout::flow::WINDOW`): it changes nothing there, and is
    // judged on its own below.
    let (state, occupied) = match state {
        Some(s) if !s.in_window(seg.seq) => (None, true),
        other => (other, false),
    };
    // SAFETY: a value pointer from this run's lookup, copied at once (16 bytes).
    let new = if state.is_none() && seg.hinted { NEW_FLOWS.get_ptr(key).map(|p| unsafe { *p }) } else { None };
    let new = match new {
        Some(v) if v.expired(now) => {
            flow::forget_new(key, settings);
            None
        }
        other => other,
    };
    // A `NEW_FLOWS` entry far from this segment is another stream's too
    // (a decoy SYN's, say): it must not make the segment pass unjudged.
    let new_occupied = new.is_some_and(|v| !v.in_window(seg.seq) && v.flags & flows::NEW_URGENT == 0);
    // A segment with a wrong TCP checksum never reaches the server's
    // stream (the receiver discards it): one that would change the flow's
    // state or decide it is a decoy, or damaged, and does neither; with
    // the "cannot judge" policy it is dropped, which costs an honest
    // client nothing (the server would discard it too) and keeps the
    // filter and the receiver agreeing where their views of a checksum
    // can differ (see `crate::packet::tcp_checksum_ok`). Only such
    // segments are summed: established traffic and the rest pass without.
    let payload = l.payload_off != l.ip_end;
    // A segment of a flow in neither table (no SYN seen, no URG) leaves state
    // only if it starts a ClientHello it does not hold whole: checked then,
    // by the parse stage (`ParseFrom::unchecked`), so that the common
    // ClientHello in one segment is not summed.
    let deferred = seg.flags & TCP_URG == 0 && state.is_none() && new.is_none() && !syn && !occupied && !new_occupied;
    let decisive = !deferred
        && (seg.flags & TCP_URG != 0
            || match (&state, &new) {
                // Data of a ClientHello in progress (a blocked flow's
                // segments are dropped whatever their checksum).
                (Some(s), _) => !syn && payload && s.kind != flows::BLOCKED,
                // A SYN that starts tracking the flow.
                (None, None) if syn => true,
                // A segment outside a tracked stream, or a SYN on a flow
                // between SYN and first data, changes nothing.
                (None, _) if syn || occupied || new_occupied => false,
                // The first data after the SYN, ClientHello or not: it decides
                // whether the flow is followed.
                (None, Some(v)) if v.flags & flows::NEW_URGENT == 0 => payload,
                (None, _) => payload && hello::starts_like_hello(&Packet::new(ctx), &l),
            });
    if decisive {
        checked(ctx, &l, settings)?;
    }
    // Urgent data, on this segment or signalled before on the flow.
    let mut state = state;
    let urgent = seg.flags & TCP_URG != 0
        || state.as_ref().is_some_and(|s| s.flags & flows::FLAG_URGENT != 0)
        || new.is_some_and(|v| v.flags & flows::NEW_URGENT != 0);
    if seg.flags & TCP_URG != 0 {
        flow::mark_urgent(key, state.as_deref_mut(), new.as_ref(), seg.seq, now, settings);
    }
    let how = match (state, new) {
        (Some(s), _) if syn => judge_syn_tracked(&l, s, now, settings),
        (Some(s), _) => judge_tracked(&l, &seg, s, now, settings, scratch),
        // An entry of either table that this segment is outside of: the
        // segment changes neither, and what it starts cannot be followed.
        (None, _) if (occupied || new_occupied) && !syn => untracked(ctx, &l, &seg, true, settings),
        // An entry made only to remember urgent data holds the flow to
        // nothing else.
        (None, Some(v)) if v.flags & flows::NEW_URGENT != 0 && !syn => untracked(ctx, &l, &seg, false, settings),
        (None, Some(v)) => judge_new(&l, &seg, &v, settings),
        (None, None) if syn => judge_syn(&l, &seg, now, settings),
        (None, None) => untracked(ctx, &l, &seg, false, settings),
    };
    match how {
        // Urgent data: the receiver takes the byte the urgent pointer names
        // out of the stream (SO_OOBINLINE is off by default), so a byte
        // inserted into the name and marked urgent would hide the name from
        // a parser that reads the segment as sent. No client sends urgent
        // data in a ClientHello: such a segment is not judged, and the
        // flow's state does not move.
        // Urgent data signalled earlier (by a segment without payload, its
        // pointer ahead) is taken out of a later segment too.
        Ok(_) if urgent => Err(not_judged(settings, Counter::TcpUrgent)),
        // The parser and everything after it is a stage of its own
        // ([`parse_stage`]), verified once for all the ways here.
        Ok(mut p) => {
            p.unchecked = deferred;
            if p.fresh {
                flow::restart(&mut scratch.flow.tls);
                scratch.flow.flags = if p.tracked { flows::FLAG_SYN_SEEN } else { 0 };
                // The stream's first byte is the one this segment starts with.
                scratch.flow.isn = p.seq.wrapping_sub(1);
                scratch.flow.passed_at = 0;
            }
            p.hand_off(&mut scratch.handoff);
            Ok(Stage::TlsParse)
        }
        Err(done) => Err(done),
    }
}

/// The parse stage: the segment the TLS stage placed in its flow, parsed
/// as `scratch.handoff` says (see [`ParseFrom`]).
#[inline(always)]
pub fn parse_stage(ctx: &XdpContext) -> Result<Stage, Done> {
    let (Some(settings), Some(scratch)) = (SETTINGS.get(0), scratch()) else {
        return Err(pass(Counter::Internal));
    };
    let l = Layers::taken_over(&scratch.handoff);
    let seg = Segment::taken_over(&scratch.handoff);
    let p = ParseFrom::taken_over(&scratch.handoff);
    parse(ctx, &l, &seg, &p, settings, scratch)
}

/// How to parse a segment: from which sequence number its payload counts
/// (the SYN's own number does not), how many of its bytes were seen
/// before, whether the flow is in `FLOWS`, and whether the parser starts
/// afresh (the first data of a flow) or goes on from `scratch.flow`.
#[expect(clippy::struct_excessive_bools, reason = "the handoff's `PARSE_*` bits, unpacked to be read by name")]
struct ParseFrom {
    seq: u32,
    skip: usize,
    tracked: bool,
    fresh: bool,
    /// The segment is a SYN carrying data (TCP Fast Open).
    syn: bool,
    /// Its headers and TCP checksum are not verified yet (see
    /// [`checked`]): before it leaves any state, they are.
    unchecked: bool,
}

impl ParseFrom {
    /// Leaves how to parse the segment for the parse stage: each way here
    /// leaves these as different constants, and through map memory the
    /// verifier checks the parser once for all of them.
    #[inline(always)]
    fn hand_off(&self, h: &mut Handoff) {
        h.seq = self.seq;
        h.parse_skip = self.skip as u32;
        h.parse = if self.tracked { handoff::PARSE_TRACKED } else { 0 }
            | if self.fresh { handoff::PARSE_FRESH } else { 0 }
            | if self.syn { handoff::PARSE_SYN } else { 0 }
            | if self.unchecked { handoff::PARSE_UNCHECKED } else { 0 };
    }

    /// What [`ParseFrom::hand_off`] left, its bound restored by a mask that
    /// never changes it (a segment's payload is under 64 KiB).
    #[inline(always)]
    fn taken_over(h: &Handoff) -> Self {
        Self {
            seq: h.seq,
            skip: (h.parse_skip & 0x1_ffff) as usize,
            tracked: h.parse & handoff::PARSE_TRACKED != 0,
            fresh: h.parse & handoff::PARSE_FRESH != 0,
            syn: h.parse & handoff::PARSE_SYN != 0,
            unchecked: h.parse & handoff::PARSE_UNCHECKED != 0,
        }
    }
}

/// A segment of an untracked flow: parsed from its first byte if it starts
/// like a handshake record carrying a ClientHello. `occupied`: the flow's
/// key holds another stream's entry, which this segment must not replace
/// (a sender could otherwise move a ClientHello in progress out of the
/// filter's sight); a ClientHello starting here cannot be followed.
#[inline(always)]
fn untracked(
    ctx: &XdpContext,
    l: &Layers,
    seg: &Segment,
    occupied: bool,
    settings: &Settings,
) -> Result<ParseFrom, Done> {
    if l.payload_off == l.ip_end {
        return Err(pass(Counter::TcpNoPayload));
    }
    if !hello::starts_like_hello(&Packet::new(ctx), l) {
        return Err(pass(Counter::TcpOther));
    }
    if occupied {
        return Err(not_judged(settings, Counter::TlsNotInWindow));
    }
    Ok(ParseFrom { seq: seg.seq, skip: 0, tracked: false, fresh: true, syn: false, unchecked: false })
}

/// A segment of a flow in `NEW_FLOWS` (SYN seen, no data yet): its first
/// data must start at the stream's first byte.
#[inline(always)]
fn judge_new(
    l: &Layers,
    seg: &Segment,
    v: &maps::layout::flow::NewFlow,
    settings: &Settings,
) -> Result<ParseFrom, Done> {
    let first = v.isn.wrapping_add(1);
    if seg.syn() {
        // Repeated, or another attempt with another number: the entry
        // stays as it is (state changes only in sequence). Data a SYN
        // carries was never taken as the stream's (see
        // `flow::syn_data_not_judged`): parsed again, only a block taken.
        if l.payload_off == l.ip_end {
            return Err(pass(Counter::TcpSyn));
        }
        count(Counter::TcpFastOpen);
        // Another number: another attempt, or a sender moving the flow's
        // first byte; its data is not judged and changes nothing.
        if seg.seq != v.isn {
            return Err(not_judged(settings, Counter::TlsSynData));
        }
        return Ok(ParseFrom {
            seq: seg.seq.wrapping_add(1),
            skip: 0,
            tracked: true,
            fresh: true,
            syn: true,
            unchecked: false,
        });
    }
    let delta = seg.seq.wrapping_sub(first).cast_signed();
    if l.payload_len() == 0 {
        // A reset or FIN does not end tracking: one the server discards (no
        // ACK flag, a bad checksum, an old timestamp) would make the filter
        // forget a flow the client goes on with. The entry ages out.
        return Err(pass(Counter::TcpNoPayload));
    }
    if delta > 0 {
        return Err(drop(Counter::TlsOutOfOrder));
    }
    if delta < 0 {
        return Err(drop(Counter::TlsOutOfWindow));
    }
    Ok(ParseFrom { seq: seg.seq, skip: 0, tracked: true, fresh: true, syn: false, unchecked: false })
}

/// A SYN of an untracked flow: start tracking it; with data (TCP Fast
/// Open), parse it.
#[inline(always)]
fn judge_syn(l: &Layers, seg: &Segment, now: u64, settings: &Settings) -> Result<ParseFrom, Done> {
    let tracked = flow::track_syn(seg.key, seg.seq, now, settings);
    if l.payload_off == l.ip_end || tracked.0 != xdp_action::XDP_PASS {
        return Err(tracked);
    }
    // TCP Fast Open: the SYN carries the stream's first bytes, which start
    // after the SYN's own sequence number. A ClientHello here must not slip
    // past because it rode in a SYN.
    count(Counter::TcpFastOpen);
    Ok(ParseFrom { seq: seg.seq.wrapping_add(1), skip: 0, tracked: true, fresh: true, syn: true, unchecked: false })
}

/// A SYN in the window of a flow in `FLOWS`. A blocked flow stays blocked:
/// a SYN on its addresses and ports must not wipe the verdict (the old
/// connection may live on at the server). A flow in the middle of a
/// ClientHello keeps its state: a repeated SYN changes nothing, and one
/// with another sequence number is ignored, or a client could restart the
/// parser in the middle of the name and send the rest as "retransmitted".
/// (A SYN outside the window is another connection's: tracked afresh in
/// `NEW_FLOWS`.)
#[inline(always)]
fn judge_syn_tracked(l: &Layers, s: &mut FlowState, now: u64, settings: &Settings) -> Result<ParseFrom, Done> {
    s.last_seen_ns = now;
    if s.kind == flows::BLOCKED {
        return Err(drop(Counter::TlsBlockedFlow));
    }
    if l.payload_off != l.ip_end {
        // A Fast Open SYN on a flow under way: its data is not taken as the
        // stream's, and not judged (the server may take it if the old
        // connection is gone).
        count(Counter::TcpFastOpen);
        return Err(not_judged(settings, Counter::TlsSynData));
    }
    Err(pass(Counter::TcpSyn))
}

/// A segment in the window of a flow in `FLOWS`: blocked, or in the middle
/// of a ClientHello (copied into `scratch.flow`).
#[inline(always)]
fn judge_tracked(
    l: &Layers,
    seg: &Segment,
    s: &mut FlowState,
    now: u64,
    settings: &Settings,
    scratch: &mut Scratch,
) -> Result<ParseFrom, Done> {
    if s.kind == flows::BLOCKED {
        s.last_seen_ns = now;
        return Err(drop(Counter::TlsBlockedFlow));
    }
    let payload_len = l.payload_len();
    // Where this segment starts relative to the next byte expected.
    let delta = seg.seq.wrapping_sub(s.next_seq).cast_signed();
    if delta > 0 && payload_len != 0 && s.flags & flows::FLAG_SYN_SEEN == 0 && delta.unsigned_abs() >= s.tls.min_left()
    {
        // Past a gap, and beyond where the ClientHello can end: the
        // connection's later data (the ClientHello's start was a
        // retransmission taken for a new one, and its rest reached the
        // server before). Passed, so such a connection does not stall; its
        // start is noted, so that if the ClientHello's own bytes come after
        // all and reach it, the ClientHello is not judged (the server holds
        // what passed, not what the filter would read).
        if s.flags & flows::FLAG_PASSED_AHEAD == 0 || seg.seq.wrapping_sub(s.passed_at).cast_signed() < 0 {
            s.passed_at = seg.seq;
            s.flags |= flows::FLAG_PASSED_AHEAD;
        }
        return Err(pass(Counter::TlsBeyondHello));
    }
    s.last_seen_ns = now;
    if payload_len != 0
        && s.flags & flows::FLAG_PASSED_AHEAD != 0
        && seg.seq.wrapping_add(payload_len as u32).wrapping_sub(s.passed_at).cast_signed() >= 0
    {
        // This segment reaches bytes that were passed unseen.
        return Err(not_judged(settings, Counter::TlsRestPassed));
    }
    if payload_len == 0 {
        // A reset or FIN does not end tracking: one the server discards (no
        // ACK flag, a bad checksum, an old timestamp, a sequence number
        // other than the next expected) would make the filter forget the
        // ClientHello it is in the middle of. The entry ages out.
        return Err(pass(Counter::TcpNoPayload));
    }
    // Past a gap, inside the ClientHello, a segment is dropped, whether the
    // flow's SYN was seen or not: the client sends the missing bytes again
    // (the server lacks them too), then the rest in order. Passing it
    // would let a client send the rest of a ClientHello first and its
    // start last.
    if delta > 0 {
        return Err(drop(Counter::TlsOutOfOrder));
    }
    let seen = delta.unsigned_abs() as usize;
    // Bytes of the stream so far: a retransmission repeats some of them; a
    // segment starting before them is another connection's, or forged —
    // when the stream's start is known. A flow first seen in the middle
    // (its SYN passed unseen, or it was decided and forgotten, and a later
    // segment looked like a ClientHello) may well get a retransmission of
    // earlier bytes: that is one, not a forgery.
    let so_far = s.next_seq.wrapping_sub(s.isn).wrapping_sub(1) as usize;
    if seen > so_far && s.flags & flows::FLAG_SYN_SEEN != 0 {
        return Err(drop(Counter::TlsOutOfWindow));
    }
    if seen >= payload_len {
        return Err(pass(Counter::TlsRetransmission));
    }
    // The first data: a fresh ClientHello, or not TLS at all.
    let fresh = s.kind == flows::NEW;
    if !fresh {
        scratch.flow = *s;
    }
    Ok(ParseFrom { seq: seg.seq, skip: seen, tracked: true, fresh, syn: false, unchecked: false })
}

/// Runs the parser over this segment's payload from byte `p.skip`, with
/// `scratch.flow` holding the state so far. A ClientHello that goes on in
/// a later segment is kept in `FLOWS`; one whose name, or end without a
/// name, was found goes on to the ClientHello verdict stage ([`decide`]).
#[inline(always)]
fn parse(
    ctx: &XdpContext,
    l: &Layers,
    seg: &Segment,
    p: &ParseFrom,
    settings: &Settings,
    scratch: &mut Scratch,
) -> Result<Stage, Done> {
    let (key, skip, tracked) = (seg.key, p.skip, p.tracked);
    let payload_len = l.payload_len();
    let avail = payload_len - skip;
    let mut found = Found::Slow;
    if p.fresh && skip == 0 {
        // The common case first: the segment starts the ClientHello and
        // holds the name (see `maps::parse::sni`), read where it lies.
        let whole_list = settings.policy & policy::ECH_BLOCK != 0;
        found = match hello::quick(ctx, l, avail, whole_list, scratch) {
            Quick::Sni { off, len, ech } => {
                // The name (1..=255 bytes) into the parser's 256-byte name buffer.
                if !Packet::load(ctx, l.payload_off + off, scratch.flow.tls.name.as_mut_ptr(), len) {
                    return Err(pass(Counter::Internal));
                }
                Found::Sni(Name { len, ech, complete: whole_list })
            }
            Quick::NoSni { ech } => Found::NoSni(ech),
            Quick::Slow => Found::Slow,
        };
    }
    if let Found::Slow = found {
        // The state machine reads the segment from scratch memory.
        // Through `opaque` so that LLVM keeps both bounds for the verifier.
        let copy = verifier::opaque(if avail < tls::TLS_BUF { avail } else { tls::TLS_BUF });
        if copy == 0 || copy > tls::TLS_BUF {
            return Err(pass(Counter::Internal));
        }
        // `copy` bytes into the scratch buffer of TLS_BUF bytes (across
        // buffers of a multi-buffer frame).
        if !Packet::load(ctx, l.payload_off + skip, scratch.tls_buf.as_mut_ptr(), copy) {
            return Err(pass(Counter::Internal));
        }
        // Kept for reading on past the name (the ECH policy).
        scratch.tls_len = copy as u64;
        let outcome = hello::run_parser(scratch, copy);
        // Bytes past what the buffer holds would be parsed by nobody.
        let outcome = if matches!(outcome, Step::NeedMore) && copy < avail {
            Step::Malformed(tls::TlsError::TooLong)
        } else {
            outcome
        };
        // A SYN's data decides only a block (see `flow::syn_data_not_judged`).
        if p.syn && !matches!(outcome, Step::End | Step::Sni) {
            return Err(flow::syn_data_not_judged(key, seg.seq.wrapping_sub(1), settings));
        }
        if p.unchecked && matches!(outcome, Step::NeedMore) {
            checked(ctx, l, settings)?;
        }
        found = match outcome {
            Step::NeedMore => return Err(flow::keep(key, seg.seq.wrapping_add(payload_len as u32), settings, scratch)),
            Step::NotClientHello => {
                if tracked {
                    flow::forget(key, settings);
                }
                return Err(pass(if tracked { Counter::TlsNotClientHello } else { Counter::TcpOther }));
            }
            // A flow first seen mid-stream whose "ClientHello" does not
            // parse was most likely never one: encrypted or compressed data
            // starts like a handshake record once in 65,536 segments, and
            // dropping it would stall the connection for good. Passed, and
            // forgotten. Past the bounds the parser walks it is not judged.
            Step::Malformed(e)
                if scratch.flow.flags & flows::FLAG_SYN_SEEN == 0 && !matches!(e, tls::TlsError::TooLong) =>
            {
                if tracked {
                    flow::forget(key, settings);
                }
                return Err(pass(Counter::TcpOther));
            }
            Step::Malformed(_) => {
                if tracked {
                    flow::forget(key, settings);
                }
                return Err(not_judged(settings, Counter::TlsMalformed));
            }
            // The segment needs more steps than one may take.
            Step::Continue => {
                if tracked {
                    flow::forget(key, settings);
                }
                return Err(not_judged(settings, Counter::TlsSegmentBound));
            }
            Step::End => {
                // SAFETY: the scratch map's parser state.
                let (ech, _) = unsafe { TlsState::ech_and_sni_len(&raw const scratch.flow.tls) };
                Found::NoSni(ech)
            }
            Step::Sni => {
                // SAFETY: as above.
                let (ech, len) = unsafe { TlsState::ech_and_sni_len(&raw const scratch.flow.tls) };
                Found::Sni(Name { len, ech, complete: false })
            }
        };
    }
    match found {
        Found::Sni(name) => {
            scratch.handoff.hello = handoff::HELLO_SNI
                | if name.ech { handoff::HELLO_ECH } else { 0 }
                | if name.complete { handoff::HELLO_COMPLETE } else { 0 };
            scratch.handoff.name_len = name.len as u16;
        }
        Found::NoSni(ech) => scratch.handoff.hello = if ech { handoff::HELLO_ECH } else { 0 },
        Found::Slow => return Err(pass(Counter::Internal)),
    }
    // The segment's payload counts from here (past a SYN's own number).
    scratch.handoff.seq = seg.seq;
    Ok(Stage::Hello)
}

/// Whether Linux takes the segment: its headers (see
/// `packet::headers_discarded`) and its TCP checksum. A segment it discards
/// may be a decoy the server never reads, which must change no flow state:
/// not judged (`tcp_discarded`, `tcp_bad_checksum`).
#[inline(always)]
pub fn checked(ctx: &XdpContext, l: &Layers, settings: &Settings) -> Result<(), Done> {
    if packet::headers_discarded(ctx, l) {
        return Err(not_judged(settings, Counter::TcpDiscarded));
    }
    if !packet::tcp_checksum_ok(ctx, l, settings.policy & policy::PARTIAL_CSUM != 0) {
        return Err(not_judged(settings, Counter::TcpBadChecksum));
    }
    Ok(())
}

/// What parsing a segment came to, before acting on it.
enum Found {
    Sni(Name),
    NoSni(bool),
    Slow,
}

/// A server name to judge, in `scratch.flow.tls.name`.
#[derive(Clone, Copy)]
struct Name {
    len: usize,
    /// encrypted_client_hello seen so far.
    ech: bool,
    /// Whether `ech` covers the whole extension list (no need to read on).
    complete: bool,
}
