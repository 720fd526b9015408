//! TLS: judging the server name of ClientHellos on any TCP port, including
//! ClientHellos spread over several segments and several TLS records, and
//! keeping the verdict for the whole flow.
//!
//! Per segment, in order:
//! 1. A SYN starts tracking the flow (`NEW`), so its first data segment can
//!    be required to start at the first byte of the stream. A SYN carrying
//!    data (TCP Fast Open) is parsed like a first data segment.
//! 2. The flow hint (`FLOW_HINT`) says whether the flow may be tracked; only
//!    then is `FLOWS` looked up. Established traffic costs a hash and one
//!    array read.
//! 3. A blocked flow's packets are dropped. A tracked flow's segment that
//!    starts past the next expected byte is dropped (the client sends the
//!    stream again, in order); one that only repeats bytes already seen
//!    passes.
//! 4. Bytes that belong to a ClientHello (a tracked flow's, or a segment of an
//!    untracked flow that starts like one) are copied into scratch memory and
//!    run through the shared parser (`maps::tls`). When the ClientHello goes
//!    on in a later segment the parser's state is kept in `FLOWS`.
//! 5. A complete server name is judged with the DNS rules; blocked flows get
//!    a TCP reset (or a drop) and are remembered as blocked.

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
    tls::{self, Step, TlsState},
};

use crate::{
    answer::{self, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    cursor::{self, Packet},
    headers::Layers,
    program::{FLOW_HINT, FLOWS, SCRATCH, count, not_judged, pass},
};

/// Parser steps per segment, one per `bpf_loop` iteration. A ClientHello
/// takes about two steps per extension and a dozen more; records cut into
/// many small fragments take a few more per record (`maps::tls::MAX_RECORDS`
/// bounds those).
const SLOW_STEPS: u32 = 512;

/// The TCP header fields the TLS path uses.
#[derive(Clone, Copy)]
struct Tcp {
    seq: u32,
    ack: u32,
    flags: u8,
}

/// Judges a TCP segment to a port other than 53.
#[inline(always)]
pub fn judge(ctx: &XdpContext, l: &Layers, settings: &Settings, scratch: &mut Scratch) -> (u32, Counter) {
    let pkt = Packet::new(ctx);
    let Some(h) = pkt.bytes::<14>(l.l4_off) else {
        return pass(Counter::TruncatedHeader);
    };
    let tcp = Tcp {
        seq: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
        ack: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
        flags: h[13],
    };
    let sport = u16::from_be_bytes([h[0], h[1]]);
    let Some(key) = flow_key(&pkt, l, settings.seed, sport) else {
        return pass(Counter::TruncatedHeader);
    };
    crate::program::trace(|t| t.flow_key = key);
    let payload_len = l.ip_end - l.payload_off;

    if tcp.flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
        let tracked = track_syn(key, tcp.seq, settings);
        if payload_len == 0 || tracked.0 != xdp_action::XDP_PASS {
            return tracked;
        }
        // TCP Fast Open: the SYN carries the stream's first bytes, which
        // start after the SYN's own sequence number. A ClientHello here must
        // not slip past because it rode in a SYN.
        // track_syn left the new flow in `scratch.flow`.
        count(Counter::TcpFastOpen);
        let data = Tcp { seq: tcp.seq.wrapping_add(1), ..tcp };
        return parse(ctx, l, &data, key, 0, true, settings, scratch);
    }
    let slot = flow::hint_slot(key, settings.hint_mask);
    let maybe_tracked = FLOW_HINT.get(slot).is_none_or(|n| *n != 0);
    let mut state = if maybe_tracked { FLOWS.get_ptr_mut(key) } else { None };
    // SAFETY (for the dereferences of `state` below): a value pointer from
    // this run's lookup; the entry stays allocated for the whole run.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if let Some(s) = state
        && unsafe { (*s).expired(now) }
    {
        forget(key, settings);
        state = None;
    }
    if let Some(s) = state {
        let s = unsafe { &mut *s };
        s.last_seen_ns = now;
        if s.kind == flow::BLOCKED {
            return (xdp_action::XDP_DROP, Counter::TlsBlockedFlow);
        }
        if payload_len == 0 {
            if tcp.flags & (TCP_RST | TCP_FIN) != 0 {
                forget(key, settings);
            }
            return pass(Counter::TcpNoPayload);
        }
        // Where this segment starts relative to the next byte expected.
        let delta = tcp.seq.wrapping_sub(s.next_seq).cast_signed();
        if delta > 0 {
            return (xdp_action::XDP_DROP, Counter::TlsOutOfOrder);
        }
        let seen = delta.unsigned_abs() as usize;
        if seen >= payload_len {
            return pass(Counter::TlsRetransmission);
        }
        if s.kind == flow::NEW {
            // The first data: a fresh ClientHello, or not TLS at all.
            restart(&mut scratch.flow.tls);
            scratch.flow.flags = 0;
        } else {
            scratch.flow = *s;
        }
        return parse(ctx, l, &tcp, key, seen, true, settings, scratch);
    }
    if payload_len == 0 {
        return pass(Counter::TcpNoPayload);
    }
    // Untracked: only a segment that starts like a TLS handshake record
    // carrying a ClientHello is worth the parser.
    match pkt.bytes::<6>(l.payload_off) {
        Some([0x16, 0x03, _, _, _, 0x01]) => {}
        None if pkt.u8(l.payload_off) == Some(0x16) => {}
        _ => return pass(Counter::TcpOther),
    }
    restart(&mut scratch.flow.tls);
    scratch.flow.flags = 0;
    parse(ctx, l, &tcp, key, 0, false, settings, scratch)
}

/// Resets the parser to the start of a stream: all zero, like
/// [`TlsState::new`], written a word at a time. Assigning `TlsState::new()`
/// compiles to a byte-wise `memset` loop the verifier would walk 280 times on
/// every path.
#[inline(always)]
fn restart(tls: &mut TlsState) {
    const WORDS: usize = core::mem::size_of::<TlsState>() / 4;
    const _: () = assert!(core::mem::size_of::<TlsState>() % 4 == 0 && core::mem::align_of::<TlsState>() >= 4);
    let p = (&raw mut *tls).cast::<u32>();
    let mut i = 0;
    while i < WORDS {
        // SAFETY: word `i` of `tls`, which is at least 4-aligned; all zero is
        // a valid `TlsState`.
        unsafe { p.add(i).write_volatile(0) };
        i += 1;
    }
}

/// The flow's key from the packet's addresses and ports.
#[inline(always)]
fn flow_key(pkt: &Packet, l: &Layers, seed: u64, sport: u16) -> Option<u64> {
    let l3 = l.l2_len;
    let (src, dst) = if l.ipv6 {
        let a = pkt.bytes::<32>(l3 + 8)?;
        let w = |i: usize| u64::from_be_bytes([a[i], a[i + 1], a[i + 2], a[i + 3], a[i + 4], a[i + 5], a[i + 6], a[i + 7]]);
        ([w(0), w(8)], [w(16), w(24)])
    } else {
        let a = pkt.bytes::<8>(l3 + 12)?;
        // IPv4-mapped IPv6: ::ffff:a.b.c.d.
        let mapped = |i: usize| 0xffff_0000_0000 | u64::from(u32::from_be_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]));
        ([0, mapped(0)], [0, mapped(4)])
    };
    Some(flow::flow_key(seed, src, dst, sport, l.dport))
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
fn track_syn(key: u64, seq: u32, settings: &Settings) -> (u32, Counter) {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return pass(Counter::Internal);
    };
    // SAFETY: this CPU's scratch slot.
    let scratch = unsafe { &mut *scratch };
    let f = &mut scratch.flow;
    f.kind = flow::NEW;
    f.action = 0;
    f.flags = 0;
    f.pad = 0;
    f.next_seq = seq.wrapping_add(1);
    // SAFETY: a plain helper call.
    f.last_seen_ns = unsafe { bpf_ktime_get_coarse_ns() };
    restart(&mut f.tls);
    if !remember(key, settings, &scratch.flow) {
        count(Counter::FlowTableFull);
        if settings.fail_closed != 0 {
            count(Counter::FailClosedDrop);
            return (xdp_action::XDP_DROP, Counter::TcpSyn);
        }
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
    settings: &Settings,
    scratch: &mut Scratch,
) -> (u32, Counter) {
    let payload_len = l.ip_end - l.payload_off;
    let avail = payload_len - skip;
    // Through `opaque` so that LLVM keeps both bounds for the verifier.
    let copy = cursor::opaque(if avail < tls::TLS_BUF { avail } else { tls::TLS_BUF });
    if copy == 0 || copy > tls::TLS_BUF {
        return pass(Counter::Internal);
    }
    // SAFETY: `copy` bytes into the scratch buffer of TLS_BUF bytes; the
    // helper checks the packet range (and reads across buffers).
    let rc = unsafe {
        bpf_xdp_load_bytes(
            ctx.ctx,
            (l.payload_off + skip) as u32,
            scratch.tls_buf.as_mut_ptr().cast(),
            copy as u32,
        )
    };
    if rc != 0 {
        return pass(Counter::Internal);
    }
    // Kept for reading on past the name (the ECH policy).
    scratch.tls_len = copy as u64;
    let outcome = run_parser(scratch, copy);
    // Bytes past what the buffer holds would be parsed by nobody.
    let outcome = if matches!(outcome, Step::NeedMore) && copy < avail { Step::Malformed(tls::TlsError::TooLong) } else { outcome };
    let next_seq = tcp.seq.wrapping_add(payload_len as u32);
    match outcome {
        Step::NeedMore => keep(key, next_seq, settings, scratch),
        Step::NotClientHello => {
            if tracked {
                forget(key, settings);
            }
            pass(if tracked { Counter::TlsNotClientHello } else { Counter::TcpOther })
        }
        Step::Malformed(_) | Step::Continue => {
            if tracked {
                forget(key, settings);
            }
            not_judged(settings, Counter::TlsMalformed)
        }
        Step::End => no_sni(ctx, l, tcp, key, settings, scratch),
        Step::Sni => judge_sni(ctx, l, tcp, key, settings, scratch),
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
    if settings.fail_closed != 0 {
        count(Counter::FailClosedDrop);
        return (xdp_action::XDP_DROP, Counter::TlsPending);
    }
    pass(Counter::TlsPending)
}

/// A ClientHello that ended without server name.
#[inline(always)]
fn no_sni(
    ctx: &XdpContext,
    l: &Layers,
    tcp: &Tcp,
    key: u64,
    settings: &Settings,
    scratch: &mut Scratch,
) -> (u32, Counter) {
    if scratch.flow.tls.ech() {
        count(Counter::TlsEch);
    }
    if scratch.flow.flags & flow::FLAG_SNI_PASSED != 0 {
        // The name was judged allowed; only ECH was left to learn.
        return finish_allowed(ctx, l, tcp, key, settings, scratch, Counter::TlsPassNoMatch);
    }
    count(Counter::TlsNoSni);
    if settings.policy & policy::NO_SNI_BLOCK != 0 {
        return block(ctx, l, tcp, key, settings.tls_action, settings, scratch);
    }
    forget_if_tracked(key, settings);
    pass(Counter::TlsPassNoSni)
}

/// The server name is complete: judge it.
#[inline(always)]
fn judge_sni(
    ctx: &XdpContext,
    l: &Layers,
    tcp: &Tcp,
    key: u64,
    settings: &Settings,
    scratch: &mut Scratch,
) -> (u32, Counter) {
    let name = match parse_sni(scratch, settings.seed) {
        Ok(n) => n,
        Err(_) => {
            forget_if_tracked(key, settings);
            return not_judged(settings, Counter::TlsMalformed);
        }
    };
    crate::program::trace_sni(scratch, &name);
    let found = match crate::dns::lookup(settings, scratch, &name) {
        Ok((m, name_key)) => {
            crate::program::trace_keys(name_key, m.as_ref());
            m
        }
        Err(c) => return pass(c),
    };
    let allowed = match found.map(|m| m.verdict) {
        Some(Verdict::Block(action)) => return block(ctx, l, tcp, key, action, settings, scratch),
        Some(Verdict::Allow) => Counter::TlsPassAllowed,
        None => Counter::TlsPassNoMatch,
    };
    finish_allowed(ctx, l, tcp, key, settings, scratch, allowed)
}

/// An allowed name: done, unless ECH ClientHellos are blocked and the rest
/// of the ClientHello (where encrypted_client_hello may be) is yet to come.
#[inline(always)]
fn finish_allowed(
    ctx: &XdpContext,
    l: &Layers,
    tcp: &Tcp,
    key: u64,
    settings: &Settings,
    scratch: &mut Scratch,
    allowed: Counter,
) -> (u32, Counter) {
    if settings.policy & policy::ECH_BLOCK != 0 {
        if scratch.flow.tls.ech() {
            count(Counter::TlsEch);
            return block(ctx, l, tcp, key, settings.tls_action, settings, scratch);
        }
        if scratch.flow.flags & flow::FLAG_SNI_PASSED == 0 {
            // Read on to the end of the ClientHello for ECH.
            scratch.flow.flags |= flow::FLAG_SNI_PASSED;
            let len = scratch.tls_len as usize;
            let more = run_parser_from(scratch, len);
            match more {
                Step::End => {
                    if scratch.flow.tls.ech() {
                        count(Counter::TlsEch);
                        return block(ctx, l, tcp, key, settings.tls_action, settings, scratch);
                    }
                }
                Step::NeedMore => {
                    let payload_len = l.ip_end - l.payload_off;
                    return keep(key, tcp.seq.wrapping_add(payload_len as u32), settings, scratch);
                }
                _ => {}
            }
        }
    } else if scratch.flow.tls.ech() {
        count(Counter::TlsEch);
    }
    forget_if_tracked(key, settings);
    pass(allowed)
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
fn parse_sni(scratch: &mut Scratch, seed: u64) -> Result<WireName, NameError> {
    let len = scratch.flow.tls.sni_len();
    crate::dns::parse_rest(scratch, len, 0, 0, seed, true)
}
