//! TLS: judging the server name of ClientHellos on any TCP port, including
//! ClientHellos spread over several segments and several TLS records, and
//! keeping the verdict for the whole flow.
//!
//! Per segment, in order:
//! 1. Triage, on the headers as parsed: the flow's key, and the flow hint
//!    (`FLOW_HINT`), which says whether the flow may be in `FLOWS`. A segment
//!    that is no SYN, whose flow cannot be tracked and whose payload does not
//!    start like a ClientHello ends here: established traffic costs a hash
//!    and one array read.
//! 2. A SYN starts tracking the flow (`NEW`), so its first data must start at
//!    the first byte of the stream; a SYN carrying data (TCP Fast Open) is
//!    parsed like a first data segment. A SYN on a blocked flow is dropped; on
//!    a ClientHello in progress it changes nothing.
//! 3. A blocked flow's packets are dropped. A tracked flow's segment that
//!    starts past the next expected byte is dropped (the client sends the
//!    stream again, in order) or, for a flow whose SYN was not seen, ends
//!    tracking; one that only repeats bytes already seen passes; one that
//!    starts before the stream is dropped. A RST or FIN ends tracking only at
//!    the next expected byte.
//! 4. A ClientHello's first segment that holds the name is read in place by
//!    the one-pass locator (`maps::sni`). Anything else (a name in a later
//!    segment, record-layer fragmentation, a continuation) is copied into
//!    scratch memory and run through the state machine (`maps::tls`), one
//!    field per `bpf_loop` iteration; when the ClientHello goes on in a later
//!    segment its state is kept in `FLOWS`.
//! 5. A complete server name is judged with the DNS rules; a blocked flow gets
//!    a TCP reset (or a drop) and is remembered as blocked, an allowed one is
//!    forgotten (or, with ECH blocked, read to the end of its ClientHello).

use core::ffi::c_void;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_ktime_get_coarse_ns, bpf_loop, bpf_xdp_load_bytes},
    programs::XdpContext,
};
use maps::{
    Action, Counter, Scratch, Settings,
    flow::{self, FlowState},
    name::{NameError, WireName},
    rule::Verdict,
    settings::policy,
    sni::{self, Located},
    tls::{self, Step, TlsState},
};

use crate::{
    answer::{self, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    cursor::{self, Packet},
    headers::Layers,
    program::{FLOW_HINT, FLOWS, SCRATCH, count, not_judged, pass},
};

/// Parser steps per segment, one per `bpf_loop` iteration. A ClientHello
/// takes one step per extension and a dozen more; records cut into many
/// small fragments take a few more per record (`maps::tls::MAX_RECORDS`
/// bounds those). A 1448-byte segment needs at most 440 (`maps::tls`).
const SLOW_STEPS: u32 = 512;

/// The TCP header fields the TLS path uses.
#[derive(Clone, Copy)]
struct Tcp {
    seq: u32,
    ack: u32,
    flags: u8,
}

/// Judges a TCP segment to a port other than 53. `l` comes straight from
/// `headers` (not laundered): the triage below is short enough for the
/// verifier to check once per header layout, and most segments end there.
#[inline(always)]
pub fn judge(ctx: &XdpContext, l: &Layers, settings: &Settings) -> (u32, Counter) {
    let pkt = Packet::new(ctx);
    let Some(h) = pkt.bytes::<14>(l.l4_off) else {
        return pass(Counter::TruncatedHeader);
    };
    let flags = h[13];
    let sport = u16::from_be_bytes([h[0], h[1]]);
    let Some(key) = flow_key(&pkt, l, settings.seed, sport) else {
        return pass(Counter::TruncatedHeader);
    };
    crate::program::trace(|t| t.flow_key = key);
    let syn = flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    let hinted = FLOW_HINT.get(flow::hint_slot(key, settings.hint_mask)).is_none_or(|n| *n != 0);
    let maybe_tracked = syn || hinted;
    if !maybe_tracked {
        // Untracked, as almost every segment is: only one that starts like
        // a TLS handshake record carrying a ClientHello needs more.
        if l.payload_off == l.ip_end {
            return pass(Counter::TcpNoPayload);
        }
        if !starts_like_hello(&pkt, l) {
            return pass(Counter::TcpOther);
        }
    }
    let tcp = Tcp {
        seq: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
        ack: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
        flags,
    };
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return pass(Counter::Internal);
    };
    // SAFETY: this CPU's scratch slot, used by this program run only.
    let scratch = unsafe { &mut *scratch };
    // From here on one verifier state covers every header layout.
    let l = crate::program::launder(scratch, l);
    let state = if hinted { FLOWS.get_ptr_mut(key) } else { None };
    // The clock only for tracked flows and SYNs: an untracked ClientHello
    // (and the flow entries it may create, which read it themselves) does
    // without.
    // SAFETY: a plain helper call.
    let now = if syn || state.is_some() { unsafe { bpf_ktime_get_coarse_ns() } } else { 0 };
    // SAFETY: a value pointer from this run's lookup; the entry stays
    // allocated for the whole run.
    let state = state.map(|s| unsafe { &mut *s });
    let state = match state {
        Some(s) if s.expired(now) => {
            // Forgotten, and judged as if never tracked.
            forget(key, settings);
            None
        }
        other => other,
    };
    let how = match state {
        Some(s) if syn => judge_syn_tracked(&l, &tcp, s, now),
        None if syn => judge_syn(&l, &tcp, key, now, settings, scratch),
        Some(s) => judge_tracked(&l, &tcp, key, s, now, settings, scratch),
        None => untracked(ctx, &l, &tcp),
    };
    match how {
        // One call site: the parser and everything after it is inlined,
        // and verified, once.
        Ok(p) => {
            let p = p.launder(scratch);
            if p.fresh {
                restart(&mut scratch.flow.tls);
                scratch.flow.flags = if p.tracked { flow::FLAG_SYN_SEEN } else { 0 };
                // The stream's first byte is the one this segment starts with.
                scratch.flow.isn = p.seq.wrapping_sub(1);
                scratch.flow.pad2 = 0;
            }
            let tcp = Tcp { seq: p.seq, ..tcp };
            parse(ctx, &l, &tcp, key, p.skip, p.tracked, p.fresh, settings, scratch)
        }
        Err(done) => done,
    }
}

/// How to parse a segment: from which sequence number its payload counts
/// (the SYN's own number does not), how many of its bytes were seen
/// before, whether the flow is in `FLOWS`, and whether the parser starts
/// afresh (the first data of a flow) or goes on from `scratch.flow`.
struct ParseFrom {
    seq: u32,
    skip: usize,
    tracked: bool,
    fresh: bool,
}

impl ParseFrom {
    /// Passes the values through scratch memory: each way here leaves
    /// them as different constants, and the verifier would check the parser,
    /// the lookups and the reset writer once per combination.
    #[inline(always)]
    fn launder(self, scratch: &mut Scratch) -> Self {
        let spill = &raw mut scratch.spill;
        let v = [u64::from(self.seq), self.skip as u64, u64::from(self.tracked), u64::from(self.fresh)];
        for (i, x) in v.into_iter().enumerate() {
            // SAFETY: a word of this CPU's scratch slot (the header offsets
            // it held were read back already).
            unsafe { (&raw mut (*spill)[i]).write_volatile(x) };
        }
        // SAFETY (each read): as above.
        let v: [u64; 4] = core::array::from_fn(|i| unsafe { (&raw const (*spill)[i]).read_volatile() });
        Self { seq: v[0] as u32, skip: (v[1] & 0x1_ffff) as usize, tracked: v[2] & 1 != 0, fresh: v[3] & 1 != 0 }
    }
}

/// Whether the payload starts like a TLS handshake record carrying a
/// ClientHello: `16 03 xx  xx xx  01`, or as much of it as the segment
/// holds (a client may send the record header alone). Bytes past the IP
/// packet's end (Ethernet padding) are not the segment's. A payload outside
/// the first buffer of a multi-buffer frame is left to the parser.
#[inline(always)]
fn starts_like_hello(pkt: &Packet, l: &Layers) -> bool {
    if l.ip_end - l.payload_off >= 6 {
        return match pkt.bytes::<6>(l.payload_off) {
            Some(b) => b[0] == 0x16 && b[1] == 0x03 && b[5] == 0x01,
            None => true,
        };
    }
    match pkt.u8(l.payload_off) {
        Some(b) => b == 0x16,
        None => true,
    }
}

/// A segment of an untracked flow: parsed from its first byte if it starts
/// like a handshake record carrying a ClientHello.
#[inline(always)]
fn untracked(ctx: &XdpContext, l: &Layers, tcp: &Tcp) -> Result<ParseFrom, (u32, Counter)> {
    if l.payload_off == l.ip_end {
        return Err(pass(Counter::TcpNoPayload));
    }
    if !starts_like_hello(&Packet::new(ctx), l) {
        return Err(pass(Counter::TcpOther));
    }
    Ok(ParseFrom { seq: tcp.seq, skip: 0, tracked: false, fresh: true })
}

/// A SYN of an untracked flow: start tracking it; with data (TCP Fast
/// Open), parse it.
#[inline(always)]
fn judge_syn(
    l: &Layers,
    tcp: &Tcp,
    key: u64,
    now: u64,
    settings: &Settings,
    scratch: &mut Scratch,
) -> Result<ParseFrom, (u32, Counter)> {
    let tracked = track_syn(key, tcp.seq, now, settings, scratch);
    if l.payload_off == l.ip_end || tracked.0 != xdp_action::XDP_PASS {
        return Err(tracked);
    }
    // TCP Fast Open: the SYN carries the stream's first bytes, which start
    // after the SYN's own sequence number. A ClientHello here must not slip
    // past because it rode in a SYN.
    count(Counter::TcpFastOpen);
    Ok(ParseFrom { seq: tcp.seq.wrapping_add(1), skip: 0, tracked: true, fresh: true })
}

/// A SYN of a tracked flow. A blocked flow stays blocked: a SYN on its
/// addresses and ports must not wipe the verdict (the old connection may
/// live on at the server). A flow waiting for its first data takes the new
/// SYN's sequence number (a new attempt). A flow in the middle of a
/// ClientHello keeps its state: a repeated SYN changes nothing, and one
/// with another sequence number is ignored, or a client could restart the
/// parser in the middle of the name and send the rest as "retransmitted".
#[inline(always)]
fn judge_syn_tracked(l: &Layers, tcp: &Tcp, s: &mut FlowState, now: u64) -> Result<ParseFrom, (u32, Counter)> {
    s.last_seen_ns = now;
    if s.kind == flow::BLOCKED {
        return Err((xdp_action::XDP_DROP, Counter::TlsBlockedFlow));
    }
    if s.kind == flow::NEW && s.isn != tcp.seq {
        s.isn = tcp.seq;
        s.next_seq = tcp.seq.wrapping_add(1);
    }
    if l.payload_off != l.ip_end {
        // A Fast Open SYN repeated, or one for a flow already under way:
        // its data is not taken as the stream's.
        return Err(pass(Counter::TlsRetransmission));
    }
    Err(pass(Counter::TcpSyn))
}

/// A segment of a flow in `FLOWS`: blocked, waiting for its first data, or
/// in the middle of a ClientHello (copied into `scratch.flow`).
#[inline(always)]
fn judge_tracked(
    l: &Layers,
    tcp: &Tcp,
    key: u64,
    s: &mut FlowState,
    now: u64,
    settings: &Settings,
    scratch: &mut Scratch,
) -> Result<ParseFrom, (u32, Counter)> {
    s.last_seen_ns = now;
    if s.kind == flow::BLOCKED {
        return Err((xdp_action::XDP_DROP, Counter::TlsBlockedFlow));
    }
    let payload_len = l.ip_end - l.payload_off;
    if payload_len == 0 {
        // A reset or FIN ends the flow only at the next expected byte,
        // where the server takes it too (RFC 5961 §3.2 for resets): one
        // anywhere else is ignored by the server, and must not make the
        // filter forget the ClientHello it is in the middle of.
        if tcp.flags & (TCP_RST | TCP_FIN) != 0 && tcp.seq == s.next_seq {
            forget(key, settings);
        }
        return Err(pass(Counter::TcpNoPayload));
    }
    // Where this segment starts relative to the next byte expected.
    let delta = tcp.seq.wrapping_sub(s.next_seq).cast_signed();
    if delta > 0 {
        if s.flags & flow::FLAG_SYN_SEEN == 0 {
            forget(key, settings);
            return Err(pass(Counter::TlsGapUnsynced));
        }
        return Err((xdp_action::XDP_DROP, Counter::TlsOutOfOrder));
    }
    let seen = delta.unsigned_abs() as usize;
    // Bytes of the stream so far: a retransmission repeats some of them; a
    // segment starting before them is another connection's, or forged —
    // when the stream's start is known. A flow first seen in the middle
    // (its SYN passed unseen, or it was decided and forgotten, and a later
    // segment looked like a ClientHello) may well get a retransmission of
    // earlier bytes: that is one, not a forgery.
    let so_far = s.next_seq.wrapping_sub(s.isn).wrapping_sub(1) as usize;
    if seen > so_far && s.flags & flow::FLAG_SYN_SEEN != 0 {
        return Err((xdp_action::XDP_DROP, Counter::TlsOutOfWindow));
    }
    if seen >= payload_len {
        return Err(pass(Counter::TlsRetransmission));
    }
    // The first data: a fresh ClientHello, or not TLS at all.
    let fresh = s.kind == flow::NEW;
    if !fresh {
        scratch.flow = *s;
    }
    Ok(ParseFrom { seq: tcp.seq, skip: seen, tracked: true, fresh })
}

/// Resets the parser to the start of a stream: its integers zeroed (all
/// zero is the start, see `TlsState::reset`) with volatile word stores, so
/// the `bpf_loop` callbacks, which read them through their own lookup, see
/// them; the name's bytes mean nothing until the parser writes them.
#[inline(always)]
fn restart(tls: &mut TlsState) {
    const WORDS: usize = TlsState::RESET_BYTES / 4;
    const _: () = assert!(TlsState::RESET_BYTES.is_multiple_of(4) && core::mem::align_of::<TlsState>() >= 4);
    let p = (&raw mut *tls).cast::<u32>();
    let mut i = 0;
    while i < WORDS {
        // SAFETY: word `i` of the integers at the start of `tls`, which is
        // at least 4-aligned.
        unsafe { p.add(i).write_volatile(0) };
        i += 1;
    }
}

/// The flow's key from the packet's addresses and ports.
#[inline(always)]
fn flow_key(pkt: &Packet, l: &Layers, seed: u64, sport: u16) -> Option<u64> {
    let l3 = l.l2_len;
    if l.ipv6 {
        let a = pkt.bytes::<32>(l3 + 8)?;
        let w =
            |i: usize| u64::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3], a[i + 4], a[i + 5], a[i + 6], a[i + 7]]);
        Some(flow::flow_key_v6(seed, [w(0), w(8)], [w(16), w(24)], sport, l.dport))
    } else {
        // Both addresses in one load, in the machine's byte order: the key
        // is a hash, and byte swaps would only cost.
        let a = pkt.bytes::<8>(l3 + 12)?;
        let both = u64::from_ne_bytes(a);
        Some(flow::flow_key_v4(seed, (both >> 32) as u32, both as u32, sport, l.dport))
    }
}

/// Counts a key into the flow hint before it is inserted into `FLOWS`.
#[inline(always)]
fn hint_add(key: u64, settings: &Settings, delta: u64) {
    if let Some(p) = FLOW_HINT.get_ptr_mut(flow::hint_slot(key, settings.hint_mask)) {
        // SAFETY: an element of our array map; the add is atomic because CPUs share it.
        unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(p, delta);
        }
    }
}

/// Inserts `scratch.flow` for `key` if the flow is not tracked yet, counting
/// it into the hint first (a hint that is too high costs a lookup; one that
/// is too low would lose the flow). False when the table is full.
#[inline(always)]
fn remember(key: u64, settings: &Settings, value: &FlowState) -> bool {
    hint_add(key, settings, 1);
    if FLOWS.insert(key, value, u64::from(aya_ebpf::bindings::BPF_NOEXIST)).is_ok() {
        return true;
    }
    // Already tracked (a race with another CPU: update it), or full.
    hint_add(key, settings, u64::MAX);
    FLOWS.insert(key, value, u64::from(aya_ebpf::bindings::BPF_EXIST)).is_ok()
}

/// Stops tracking a flow; the hint is decremented after the delete.
#[inline(always)]
fn forget(key: u64, settings: &Settings) {
    if FLOWS.remove(key).is_ok() {
        hint_add(key, settings, u64::MAX);
    }
}

/// A SYN: track the flow until its first data, so that data must start at
/// the first byte of the stream.
#[inline(always)]
fn track_syn(key: u64, seq: u32, now: u64, settings: &Settings, scratch: &mut Scratch) -> (u32, Counter) {
    let f = &mut scratch.flow;
    f.kind = flow::NEW;
    f.action = 0;
    f.flags = flow::FLAG_SYN_SEEN;
    f.pad = 0;
    f.next_seq = seq.wrapping_add(1);
    f.isn = seq;
    f.pad2 = 0;
    f.last_seen_ns = now;
    restart(&mut f.tls);
    if !remember(key, settings, &scratch.flow) {
        count(Counter::FlowTableFull);
        return not_judged(settings, Counter::TcpSyn);
    }
    pass(Counter::TcpSyn)
}

/// Parser state handed to the `bpf_loop` continuation.
#[repr(C)]
struct StepArgs {
    len: u64,
}

/// Runs the parser over this segment's payload from byte `skip`, with
/// `scratch.flow` holding the state so far, and acts on the outcome.
#[inline(always)]
#[expect(clippy::too_many_arguments, reason = "the segment's facts, passed down once")]
fn parse(
    ctx: &XdpContext,
    l: &Layers,
    tcp: &Tcp,
    key: u64,
    skip: usize,
    tracked: bool,
    fresh: bool,
    settings: &Settings,
    scratch: &mut Scratch,
) -> (u32, Counter) {
    let payload_len = l.ip_end - l.payload_off;
    let avail = payload_len - skip;
    let mut found = Found::Slow;
    if fresh && skip == 0 {
        // The common case first: the segment starts the ClientHello and
        // holds the name (see `maps::sni`), read where it lies.
        let whole_list = settings.policy & policy::ECH_BLOCK != 0;
        found = match quick(ctx, l, avail, whole_list, scratch) {
            Quick::Sni { off, len, ech } => {
                // The name into the parser's name buffer.
                // SAFETY: 1..=255 bytes into a 256-byte buffer of the scratch map.
                let rc = unsafe {
                    bpf_xdp_load_bytes(
                        ctx.ctx,
                        (l.payload_off + off) as u32,
                        scratch.flow.tls.name.as_mut_ptr().cast(),
                        len as u32,
                    )
                };
                if rc != 0 {
                    return pass(Counter::Internal);
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
        let copy = cursor::opaque(if avail < tls::TLS_BUF { avail } else { tls::TLS_BUF });
        if copy == 0 || copy > tls::TLS_BUF {
            return pass(Counter::Internal);
        }
        // SAFETY: `copy` bytes into the scratch buffer of TLS_BUF bytes; the
        // helper checks the packet range (and reads across buffers).
        let rc = unsafe {
            bpf_xdp_load_bytes(ctx.ctx, (l.payload_off + skip) as u32, scratch.tls_buf.as_mut_ptr().cast(), copy as u32)
        };
        if rc != 0 {
            return pass(Counter::Internal);
        }
        // Kept for reading on past the name (the ECH policy).
        scratch.tls_len = copy as u64;
        let outcome = run_parser(scratch, copy);
        // Bytes past what the buffer holds would be parsed by nobody.
        let outcome = if matches!(outcome, Step::NeedMore) && copy < avail {
            Step::Malformed(tls::TlsError::TooLong)
        } else {
            outcome
        };
        found = match outcome {
            Step::NeedMore => return keep(key, tcp.seq.wrapping_add(payload_len as u32), settings, scratch),
            Step::NotClientHello => {
                if tracked {
                    forget(key, settings);
                }
                return pass(if tracked { Counter::TlsNotClientHello } else { Counter::TcpOther });
            }
            Step::Malformed(_) | Step::Continue => {
                if tracked {
                    forget(key, settings);
                }
                return not_judged(settings, Counter::TlsMalformed);
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
    // A block by policy (ECH, no server name) names no rule.
    scratch.event.rule_key = 0;
    scratch.event.rule_labels = 0;
    scratch.event.name_kind = maps::trace::NAME_TLS;
    scratch.event.name_len = 0;
    let decision = match found {
        Found::Sni(name) => judge_sni(l, tcp, key, name, settings, scratch),
        Found::NoSni(ech) => no_sni(key, ech, settings, scratch),
        Found::Slow => return pass(Counter::Internal),
    };
    match decision {
        Decision::Done(r) => r,
        Decision::Block(action) => block(ctx, l, tcp, key, action, settings, scratch),
    }
}

/// What parsing a segment came to, before acting on it.
enum Found {
    Sni(Name),
    NoSni(bool),
    Slow,
}

/// What judging a ClientHello came to: an outcome, or a block to carry
/// out (in one place, so the reset writer is inlined once).
enum Decision {
    Done((u32, Counter)),
    /// Block with this rule action.
    Block(u8),
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

/// What the fast path found, with bounds the verifier can use.
enum Quick {
    Sni { off: usize, len: usize, ech: bool },
    NoSni { ech: bool },
    Slow,
}

/// The payload of the segment in the packet, for `maps::sni::locate`:
/// bounds-checked reads of the first buffer, so the common ClientHello is
/// found without copying the segment.
struct Payload {
    pkt: Packet,
    off: usize,
}

impl sni::Bytes for Payload {
    #[inline(always)]
    fn at(&self, i: usize) -> Option<u8> {
        // The mask restates `locate`'s bound (it reads below TLS_BUF) for
        // the verifier.
        self.pkt.u8(self.off + (i & (tls::TLS_BUF - 1)))
    }

    #[inline(always)]
    fn be32(&self, i: usize) -> Option<u32> {
        self.pkt.bytes::<4>(self.off + (i & (tls::TLS_BUF - 1))).map(u32::from_be_bytes)
    }
}

/// Runs `maps::sni::locate` on the segment's `len` bytes, then passes its
/// answer through scratch memory: the locator ends in a different state
/// after each extension it walked, and what follows (the name's judgment,
/// a reset) would be verified once per state.
#[inline(always)]
fn quick(ctx: &XdpContext, l: &Layers, len: usize, whole_list: bool, scratch: &mut Scratch) -> Quick {
    let payload = Payload { pkt: Packet::new(ctx), off: l.payload_off };
    let (code, off, name_len) = match sni::locate(&payload, len, whole_list) {
        l @ Located::Sni { off, len, .. } => (l.code(), off as u64, len as u64),
        l => (l.code(), 0, 0),
    };
    let spill = &raw mut scratch.spill;
    // SAFETY (both blocks): words of this CPU's scratch slot; volatile so
    // the round trip through memory stays.
    unsafe {
        (&raw mut (*spill)[0]).write_volatile(code);
        (&raw mut (*spill)[1]).write_volatile(off);
        (&raw mut (*spill)[2]).write_volatile(name_len);
    }
    let (code, off, name_len) = unsafe {
        (
            (&raw const (*spill)[0]).read_volatile(),
            (&raw const (*spill)[1]).read_volatile(),
            (&raw const (*spill)[2]).read_volatile(),
        )
    };
    let ech = code & 4 != 0;
    match code & 3 {
        // A name of 1..=255 bytes within the first TLS_BUF bytes.
        2 if name_len >= 1 && name_len < tls::MAX_SNI as u64 && off < tls::TLS_BUF as u64 => {
            Quick::Sni { off: off as usize, len: name_len as usize, ech }
        }
        1 => Quick::NoSni { ech },
        _ => Quick::Slow,
    }
}

/// Runs parser steps from the start of `tls_buf` until one says more than
/// "continue", one per `bpf_loop` iteration: the verifier checks a step
/// once, where a plain loop over steps would have it walk every path of
/// every step of every iteration, far past its budget.
#[inline(always)]
fn run_parser(scratch: &mut Scratch, len: usize) -> Step {
    scratch.tls_pos = 0;
    run_parser_from(scratch, len)
}

/// Continues the parser where it stopped in `tls_buf`.
#[inline(always)]
fn run_parser_from(scratch: &mut Scratch, len: usize) -> Step {
    scratch.tls_step = tls::STEP_CONTINUE;
    let mut args = StepArgs { len: len as u64 };
    // SAFETY: a static callback and a pointer to our own stack.
    unsafe {
        bpf_loop(SLOW_STEPS, step_callback as *mut c_void, (&raw mut args).cast(), 0);
    }
    // SAFETY: the callbacks wrote through their own lookup of the scratch map.
    let code = unsafe { (&raw const scratch.tls_step).read_volatile() };
    tls::Step::from_code(code)
}

extern "C" fn step_callback(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the pointer run_parser gave it.
    let args = unsafe { &*ctx.cast::<StepArgs>() };
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else { return 1 };
    // SAFETY: this CPU's scratch slot.
    let scratch = unsafe { &mut *scratch };
    let mut pos = scratch.tls_pos as usize;
    let out = tls::step(&mut scratch.flow.tls, &scratch.tls_buf, args.len as usize, &mut pos);
    scratch.tls_pos = pos as u64;
    scratch.tls_step = out.code();
    i64::from(!matches!(out, Step::Continue))
}

/// The ClientHello goes on in a later segment: keep the parser's state.
#[inline(always)]
fn keep(key: u64, next_seq: u32, settings: &Settings, scratch: &mut Scratch) -> (u32, Counter) {
    scratch.flow.kind = flow::PENDING;
    scratch.flow.next_seq = next_seq;
    // SAFETY: a plain helper call.
    scratch.flow.last_seen_ns = unsafe { bpf_ktime_get_coarse_ns() };
    if remember(key, settings, &scratch.flow) {
        return pass(Counter::TlsPending);
    }
    // Full: the rest of this ClientHello cannot be followed.
    count(Counter::FlowTableFull);
    not_judged(settings, Counter::TlsPending)
}

/// A ClientHello that ended without server name, or the end of one whose
/// name was allowed while ECH ClientHellos are blocked.
#[inline(always)]
fn no_sni(key: u64, ech: bool, settings: &Settings, scratch: &mut Scratch) -> Decision {
    let flags = scratch.flow.flags;
    if flags & flow::FLAG_SNI_PASSED != 0 {
        // The name was judged allowed; only ECH was left to learn.
        let allowed =
            if flags & flow::FLAG_SNI_ALLOWED != 0 { Counter::TlsPassAllowed } else { Counter::TlsPassNoMatch };
        return finish_allowed(None, key, Name { len: 0, ech, complete: true }, settings, scratch, allowed);
    }
    if ech {
        count(Counter::TlsEch);
    }
    count(Counter::TlsNoSni);
    if settings.policy & policy::NO_SNI_BLOCK != 0 {
        return Decision::Block(settings.tls_action);
    }
    forget_if_tracked(key, settings);
    Decision::Done(pass(Counter::TlsPassNoSni))
}

/// The server name is complete: judge it.
#[inline(always)]
fn judge_sni(l: &Layers, tcp: &Tcp, key: u64, sni: Name, settings: &Settings, scratch: &mut Scratch) -> Decision {
    let Ok(name) = parse_sni(scratch, sni.len, settings.seed) else {
        forget_if_tracked(key, settings);
        return Decision::Done(not_judged(settings, Counter::TlsMalformed));
    };
    crate::program::trace_sni(scratch, sni.len, &name);
    let found = match crate::dns::lookup(settings, scratch, &name) {
        Ok((m, name_key)) => {
            crate::program::trace_keys(name_key, m.as_ref());
            m
        }
        Err(c) => return Decision::Done(pass(c)),
    };
    scratch.event.name_len = sni.len as u16;
    let allowed = match found.map(|m| (m.verdict, m.key, m.depth)) {
        Some((Verdict::Block(action), key, depth)) => {
            scratch.event.rule_key = key;
            scratch.event.rule_labels = depth as u8;
            return Decision::Block(action);
        }
        Some((Verdict::Allow, ..)) => Counter::TlsPassAllowed,
        None => Counter::TlsPassNoMatch,
    };
    finish_allowed(Some((l, tcp)), key, sni, settings, scratch, allowed)
}

/// An allowed name: done, unless ECH ClientHellos are blocked and the rest
/// of the ClientHello (where encrypted_client_hello may be) is yet to come.
/// `segment` is given when the parser may read on in this segment.
#[inline(always)]
fn finish_allowed(
    segment: Option<(&Layers, &Tcp)>,
    key: u64,
    sni: Name,
    settings: &Settings,
    scratch: &mut Scratch,
    allowed: Counter,
) -> Decision {
    if settings.policy & policy::ECH_BLOCK == 0 {
        if sni.ech {
            count(Counter::TlsEch);
        }
        forget_if_tracked(key, settings);
        return Decision::Done(pass(allowed));
    }
    let mut ech = sni.ech;
    if !ech
        && !sni.complete
        && scratch.flow.flags & flow::FLAG_SNI_PASSED == 0
        && let Some((l, tcp)) = segment
    {
        // Read on to the end of the ClientHello for ECH.
        scratch.flow.flags |= flow::FLAG_SNI_PASSED;
        if allowed == Counter::TlsPassAllowed {
            scratch.flow.flags |= flow::FLAG_SNI_ALLOWED;
        }
        let len = scratch.tls_len as usize;
        match run_parser_from(scratch, len) {
            // SAFETY: the scratch map's parser state.
            Step::End => ech = unsafe { TlsState::ech_and_sni_len(&raw const scratch.flow.tls) }.0,
            Step::NeedMore => {
                let payload_len = l.ip_end - l.payload_off;
                return Decision::Done(keep(key, tcp.seq.wrapping_add(payload_len as u32), settings, scratch));
            }
            _ => {}
        }
    }
    if ech {
        count(Counter::TlsEch);
        return Decision::Block(settings.tls_action);
    }
    forget_if_tracked(key, settings);
    Decision::Done(pass(allowed))
}

#[inline(always)]
fn forget_if_tracked(key: u64, settings: &Settings) {
    let slot = flow::hint_slot(key, settings.hint_mask);
    if FLOW_HINT.get(slot).is_none_or(|n| *n != 0) {
        forget(key, settings);
    }
}

/// Blocks the flow: a reset toward the client (or a drop), and every later
/// packet of the flow dropped.
#[inline(always)]
fn block(
    ctx: &XdpContext,
    l: &Layers,
    tcp: &Tcp,
    key: u64,
    rule_action: u8,
    settings: &Settings,
    scratch: &mut Scratch,
) -> (u32, Counter) {
    let action = tls_action(rule_action, settings.tls_action);
    scratch.flow.kind = flow::BLOCKED;
    scratch.flow.action = action;
    // SAFETY: a plain helper call.
    scratch.flow.last_seen_ns = unsafe { bpf_ktime_get_coarse_ns() };
    if !remember(key, settings, &scratch.flow) {
        count(Counter::FlowTableFull);
    }
    crate::events::capture(ctx, l, scratch);
    if action == Action::Drop as u8 {
        return (xdp_action::XDP_DROP, Counter::TlsDrop);
    }
    let payload_len = l.ip_end - l.payload_off;
    let ack = tcp.seq.wrapping_add(payload_len as u32);
    // The client's acknowledgment number is the server's next sequence number.
    let seq = if tcp.flags & TCP_ACK != 0 { tcp.ack } else { 0 };
    if answer::write_rst(ctx, l, seq, ack, scratch).is_err() {
        count(Counter::RewriteFailed);
        return (xdp_action::XDP_DROP, Counter::TlsReset);
    }
    (xdp_action::XDP_TX, Counter::TlsReset)
}

/// The action for a blocked TLS flow: the rule's if it names reset or drop,
/// else the TLS default (DNS answers mean nothing here); reset when unset.
#[inline(always)]
const fn tls_action(rule_action: u8, default: u8) -> u8 {
    if rule_action == Action::Drop as u8 || rule_action == Action::Reset as u8 {
        rule_action
    } else if default == Action::Drop as u8 {
        default
    } else {
        Action::Reset as u8
    }
}

/// Splits the server name in `scratch.flow.tls` into labels and hashes
/// them into `scratch.label_hashes`, like the DNS path does for a QNAME, one
/// label per `bpf_loop` iteration (the callback the DNS path uses for long
/// names): a name is judged once per flow, and a second plain loop here
/// would cost the verifier more than the whole DNS path.
#[inline(always)]
fn parse_sni(scratch: &mut Scratch, len: usize, seed: u64) -> Result<WireName, NameError> {
    crate::dns::parse_rest(scratch, len, 0, 0, seed, true)
}
