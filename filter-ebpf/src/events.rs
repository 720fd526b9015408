//! Block events to user space: one per block, through the `EVENTS` ring
//! buffer, at most `Settings::event_budget` per CPU per second. Over the
//! budget an event is counted and not sent, so a flood of blocked queries
//! costs the daemon (and its log) a bounded rate.

use aya_ebpf::{
    btf_maps::{PerCpuArray, RingBuf},
    helpers::bpf_ktime_get_ns,
    macros::btf_map,
    programs::XdpContext,
};
use maps::{Counter, Scratch, event::Event};

use crate::{
    cursor::Packet,
    headers::Layers,
    program::{SCRATCH, SETTINGS, count},
};

/// The ring buffer; its size is set by the loader.
#[btf_map]
pub static EVENTS: RingBuf<Event, { 1 << 20 }> = RingBuf::new();

/// Per CPU: the start of the current second and the events sent in it.
#[btf_map]
static EVENT_BUDGET: PerCpuArray<[u64; 2], 1> = PerCpuArray::new();

const SECOND_NS: u64 = 1_000_000_000;

// The names are copied in 8-byte words: both sources must be aligned.
const _: () = assert!(core::mem::offset_of!(Scratch, question) % 8 == 0);
const _: () = assert!(
    (core::mem::offset_of!(Scratch, flow)
        + core::mem::offset_of!(maps::flow::FlowState, tls)
        + core::mem::offset_of!(maps::tls::TlsState, name))
        % 8
        == 0
);

/// Whether a packet with this outcome was blocked by a rule or policy
/// decision (what an event reports); later packets of a blocked flow are not.
#[inline(always)]
pub fn is_block(c: Counter) -> bool {
    matches!(
        c,
        Counter::Nxdomain
            | Counter::Refused
            | Counter::Sinkhole
            | Counter::Drop
            | Counter::DropTcp
            | Counter::TlsReset
            | Counter::TlsDrop
    )
}

/// Notes the packet's addresses and ports in `scratch.event`, before an
/// answer or a reset rewrites them. The decision site also sets the rule,
/// the name's kind and length; [`flush`] sends it once the packet's
/// outcome is known. Everything goes straight into map memory: no stack.
#[inline(always)]
pub fn capture(ctx: &XdpContext, l: &Layers, scratch: &mut Scratch) {
    let e = &mut scratch.event;
    e.proto = l.proto;
    e.ipv6 = u8::from(l.ipv6);
    e.src = [0; 16];
    e.dst = [0; 16];
    let ip = l.l2_len;
    if l.ipv6 {
        Packet::load_into::<16>(ctx, ip + 8, &raw mut e.src);
        Packet::load_into::<16>(ctx, ip + 24, &raw mut e.dst);
    } else {
        Packet::load_into::<4>(ctx, ip + 12, e.src.as_mut_ptr().cast());
        Packet::load_into::<4>(ctx, ip + 16, e.dst.as_mut_ptr().cast());
    }
    e.ports = [0; 4];
    Packet::load_into::<4>(ctx, l.l4_off, &raw mut e.ports);
}

/// Sends the event [`capture`] and the decision site prepared, with
/// `outcome`, within this CPU's budget.
///
/// Called from the entry point once the packet's fate is known, and not
/// inlined: only the context and the outcome live across the call, so the
/// entry point's stack frame does not grow.
#[inline(never)]
pub fn flush(ctx: &XdpContext, outcome: Counter) {
    let (Some(settings), Some(scratch)) = (SETTINGS.get(0), SCRATCH.get_ptr_mut(0)) else { return };
    let budget = u64::from(settings.event_budget);
    if budget == 0 {
        return;
    }
    let Some(b) = EVENT_BUDGET.get_ptr_mut(0) else { return };
    // SAFETY: a plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: this CPU's slots; XDP programs do not nest on a CPU.
    let (b, scratch) = unsafe { (&mut *b, &mut *scratch) };
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
    e.name_len = e.name_len.min(maps::event::NAME_BYTES as u16);
    let src: *const u64 = if e.name_kind == maps::trace::NAME_DNS {
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
