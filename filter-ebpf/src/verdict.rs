//! How a packet ends: its XDP action and outcome counter, the trace record
//! replay and tests read, and the block event user space logs.
//!
//! Every packet ends in exactly one [`finish`], in whichever stage judged
//! it: that counts its outcome in its interface's row (see
//! `maps::counters::IFACE_BUCKETS`) and, for a block, sends its event.

use aya_ebpf::{bindings::xdp_action, helpers::bpf_ktime_get_ns, programs::XdpContext};
use maps::{Counter, Protocol, Scratch, Settings, Trace, counters::COUNT, layout::rule::Match};

use crate::{
    packet::{Layers, Packet},
    tables::{COUNTERS, EVENT_BUDGET, EVENTS, SETTINGS, TRACE, TRACE_ENABLED, scratch},
};

/// What a stage decided: the XDP action and the packet's outcome counter.
pub type Done = (u32, Counter);

/// Counts an extra event (row 0, see `maps::counters::IFACE_BUCKETS`).
#[inline(always)]
pub fn count(c: Counter) {
    count_slot(c as usize);
}

#[inline(always)]
fn count_slot(slot: usize) {
    if let Some(p) = COUNTERS.get_ptr_mut(slot as u32) {
        // SAFETY: per-CPU slot of this CPU; XDP programs do not nest on a CPU.
        unsafe { *p += 1 };
    }
}

/// The packet passes, counted as `counter`.
#[inline(always)]
pub const fn pass(counter: Counter) -> Done {
    (xdp_action::XDP_PASS, counter)
}

/// The packet is dropped, counted as `counter`.
#[inline(always)]
pub const fn drop(counter: Counter) -> Done {
    (xdp_action::XDP_DROP, counter)
}

/// A packet that may carry a name but cannot be judged (`counter` says
/// why): the "cannot judge" policy (`Settings::unjudged`) passes or drops it.
#[inline(always)]
pub fn not_judged(settings: &Settings, counter: Counter) -> Done {
    if settings.unjudged == maps::layout::settings::UNJUDGED_DROP {
        count(Counter::UnjudgedDrop);
        return drop(counter);
    }
    pass(counter)
}

/// Whether this load records decisions in `TRACE` (replay and tests). The
/// verifier knows the value of read-only data and removes every traced
/// branch from production loads, so tracing costs them nothing.
#[inline(always)]
fn tracing() -> bool {
    // SAFETY: reading our own read-only global.
    unsafe { core::ptr::read_volatile(&raw const TRACE_ENABLED) != 0 }
}

/// Runs `f` on the trace record when tracing.
#[inline(always)]
pub fn trace(f: impl FnOnce(&mut Trace)) {
    if tracing()
        && let Some(t) = TRACE.get_ptr_mut(0)
    {
        // SAFETY: the map value is valid; only tests and replay, one packet at a time, read it.
        f(unsafe { &mut *t });
    }
}

/// Starts a packet's trace record (the entry stage).
#[inline(always)]
pub fn begin() {
    trace(|t| *t = Trace { seq: t.seq, ..Trace::default() });
}

/// Ends a packet: sends its block event, counts its outcome, closes its
/// trace record, and returns its XDP action.
#[inline(always)]
pub fn finish(ctx: &XdpContext, (action, outcome): Done) -> u32 {
    if is_block(outcome) {
        flush_event(ctx, outcome);
    }
    // SAFETY: the context the kernel passed; ingress_ifindex is always readable.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    count_slot(maps::counters::bucket(ifindex) * COUNT + outcome as usize);
    #[cfg(feature = "debug")]
    aya_log_ebpf::debug!(ctx, "ifindex {} outcome {} xdp action {}", ifindex, outcome as u32, action);
    trace(|t| {
        t.seq += 1;
        t.outcome = outcome as u32;
        t.xdp_action = action;
    });
    action
}

/// Records the keys of a judged name and of its deciding rule.
#[inline(always)]
pub fn trace_keys(name_key: u64, m: Option<&Match>) {
    trace(|t| {
        t.name_key = name_key;
        if let Some(m) = m {
            t.rule_key = m.key;
            t.rule_labels = m.depth as u8;
        }
    });
}

const SECOND_NS: u64 = 1_000_000_000;

// The names are copied in 8-byte words: both sources must be aligned.
const _: () = assert!(core::mem::offset_of!(Scratch, question) % 8 == 0);
const _: () = assert!(
    (core::mem::offset_of!(Scratch, flow)
        + core::mem::offset_of!(maps::layout::flow::FlowState, tls)
        + core::mem::offset_of!(maps::parse::tls::TlsState, name))
        % 8
        == 0
);

/// Whether a packet with this outcome was blocked by a rule or policy
/// decision (what an event reports); later packets of a blocked flow are not.
#[inline(always)]
fn is_block(c: Counter) -> bool {
    matches!(
        c,
        Counter::Nxdomain
            | Counter::Refused
            | Counter::Sinkhole
            | Counter::Drop
            | Counter::DropFragmented
            | Counter::DropTcp
            | Counter::ResetTcp
            | Counter::TlsReset
            | Counter::TlsDrop
    )
}

/// Starts the block event of a packet in `scratch.event`: the rule (0 for
/// a block by policy), the name's protocol and length, and the packet's
/// addresses and ports, read before an answer or a reset rewrites them.
/// [`finish`] sends it once the packet's outcome is known. Everything goes
/// straight into map memory: no stack.
#[inline(always)]
pub fn capture(ctx: &XdpContext, l: &Layers, scratch: &mut Scratch) {
    let e = &mut scratch.event;
    e.proto = l.proto;
    e.ipv6 = u8::from(l.ipv6);
    e.src = [0; 16];
    e.dst = [0; 16];
    let (addrs, len) = l.addrs();
    if l.ipv6 {
        Packet::load_into::<16>(ctx, addrs, &raw mut e.src);
        Packet::load_into::<16>(ctx, addrs + len, &raw mut e.dst);
    } else {
        Packet::load_into::<4>(ctx, addrs, e.src.as_mut_ptr().cast());
        Packet::load_into::<4>(ctx, addrs + len, e.dst.as_mut_ptr().cast());
    }
    e.ports = [0; 4];
    Packet::load_into::<4>(ctx, l.l4_off, &raw mut e.ports);
}

/// Notes what an event names: the deciding rule (key and labels; 0 for a
/// block by policy), the name's protocol and its length.
#[inline(always)]
pub fn name_event(scratch: &mut Scratch, rule: Option<&Match>, protocol: Protocol, name_len: usize) {
    let e = &mut scratch.event;
    (e.rule_key, e.rule_labels) = match rule {
        Some(m) => (m.key, m.depth as u8),
        None => (0, 0),
    };
    e.name_kind = protocol as u8;
    e.name_len = name_len as u16;
}

/// Sends the event [`capture`] and the decision site prepared, with
/// `outcome`, within this CPU's budget: at most `Settings::event_budget`
/// per second, so a flood of blocked queries costs the daemon (and its
/// log) a bounded rate. Over the budget an event is counted, not sent.
///
/// Not inlined: only the context and the outcome live across the call, so
/// the calling stage's stack frame does not grow.
#[inline(never)]
fn flush_event(ctx: &XdpContext, outcome: Counter) {
    let (Some(settings), Some(scratch)) = (SETTINGS.get(0), scratch()) else { return };
    let budget = u64::from(settings.event_budget);
    if budget == 0 {
        return;
    }
    let Some(b) = EVENT_BUDGET.get_ptr_mut(0) else { return };
    // SAFETY: a plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: this CPU's slot; XDP programs do not nest on a CPU.
    let b = unsafe { &mut *b };
    if now.wrapping_sub(b[0]) >= SECOND_NS {
        *b = [now, 0];
    }
    if b[1] >= budget {
        count(Counter::EventOverBudget);
        return;
    }
    b[1] += 1;
    let e = &mut scratch.event;
    e.time_ns = now;
    // SAFETY: the context the kernel passed.
    e.ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    e.outcome = outcome as u32;
    e.name_len = e.name_len.min(maps::layout::event::NAME_BYTES as u16);
    let src: *const u64 = if e.name_kind == Protocol::Dns as u8 {
        scratch.question.as_ptr().cast()
    } else {
        scratch.flow.tls.name.as_ptr().cast()
    };
    // SAFETY: both sources hold at least 256 bytes, 8-byte aligned (the
    // asserts above); the destination is the event's name words.
    unsafe { core::ptr::copy_nonoverlapping(src, scratch.event.name.as_mut_ptr(), 32) };
    // By reference: a 328-byte value would not fit the BPF stack.
    #[expect(clippy::needless_borrows_for_generic_args, reason = "see above")]
    let sent = EVENTS.output(&scratch.event, 0);
    if sent.is_err() {
        count(Counter::EventLost);
    }
}
