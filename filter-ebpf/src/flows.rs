//! The flow tables: TCP flows between SYN and first data (`NEW_FLOWS`; TLS
//! on any port, and DNS over TCP, whose stream is anchored at the SYN), TLS
//! flows in the middle of a ClientHello or blocked (`FLOWS`; see
//! `maps::layout::flow`), and the hint counters that spare untracked flows
//! a lookup.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{BPF_EXIST, BPF_NOEXIST},
    helpers::{bpf_ktime_get_coarse_ns, bpf_loop},
};
use maps::{
    Counter, Scratch, Settings,
    layout::flow::{self, FlowState, NewFlow},
    parse::tls::TlsState,
};

use crate::{
    tables::{self, FLOW_CLOCK, FLOW_HINT, FLOW_RING, FLOWS, NEW_FLOWS},
    verdict::{Done, count, not_judged, pass},
};

/// Whether the flow hint says the flow with `key` may be in `FLOWS` or
/// `NEW_FLOWS`.
#[inline(always)]
pub fn hinted(key: u64, settings: &Settings) -> bool {
    FLOW_HINT.get(flow::hint_slot(key, settings.hint_mask)).is_none_or(|n| *n != 0)
}

/// Counts a key into the flow hint before it is inserted into a table.
#[inline(always)]
fn hint_add(key: u64, settings: &Settings, delta: u64) {
    if let Some(p) = FLOW_HINT.get_ptr_mut(flow::hint_slot(key, settings.hint_mask)) {
        tables::atomic_add(p, delta);
    }
}

/// Inserts `value` for `key` into `FLOWS` if the flow is not there yet,
/// counting it into the hint first (a hint that is too high costs a lookup;
/// one that is too low would lose the flow), and notes a new key in the
/// ring (see `maps::layout::flow::ring_slots`). A full table gets expired
/// entries reclaimed from the ring ([`reclaim`]) and one more try. A flow
/// that leaves `NEW_FLOWS` for `FLOWS` is deleted there after. False when
/// the table is still full.
#[inline(always)]
pub fn remember(key: u64, settings: &Settings, value: &FlowState) -> bool {
    if insert_new(key, settings, value) {
        forget_new(key, settings);
        return true;
    }
    // Already there (its count taken back: the entry has one), or full.
    if FLOWS.insert(key, value, u64::from(BPF_EXIST)).is_ok() {
        forget_new(key, settings);
        return true;
    }
    reclaim(settings);
    if !insert_new(key, settings, value) {
        return false;
    }
    forget_new(key, settings);
    true
}

/// Inserts a key not in `FLOWS` yet, counted into the hint and noted in
/// the ring; false (the count taken back) if it is there or the table full.
#[inline(always)]
fn insert_new(key: u64, settings: &Settings, value: &FlowState) -> bool {
    hint_add(key, settings, 1);
    if FLOWS.insert(key, value, u64::from(BPF_NOEXIST)).is_err() {
        hint_add(key, settings, u64::MAX);
        return false;
    }
    if let Some(clock) = FLOW_CLOCK.get_ptr_mut(0) {
        // SAFETY: word 0 of the clock's value, which stays allocated.
        let hand = tables::fetch_add(unsafe { (&raw mut (*clock)[0]).cast() }, 1);
        // Cannot fail: the slot is masked below the ring's size.
        let _ = FLOW_RING.set(ring_slot(hand, settings), key, 0);
    }
    true
}

/// The ring slot a hand at `hand` points to: the ring has one slot per
/// eight words of the hint (`maps::layout::flow::ring_slots`).
#[inline(always)]
fn ring_slot(hand: u64, settings: &Settings) -> u32 {
    (hand & (settings.hint_mask >> 3)) as u32
}

/// What the reclaiming loop's callback gets on the stack: values that stay
/// the same over the loop, so the verifier checks the callback once.
#[repr(C)]
struct ReclaimArgs {
    now: u64,
    hint_mask: u64,
}

/// `FLOWS` is full: examines the next `maps::layout::flow::RECLAIM_SLOTS`
/// slots of the ring and deletes the entries there that are past their
/// time to live (`flow_reclaimed`), the kernel's own expiry for when the
/// daemon's sweep has not run. One `bpf_loop` iteration per slot: the
/// verifier checks the lookup and delete once.
#[inline(always)]
fn reclaim(settings: &Settings) {
    // SAFETY: a plain helper call.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let mut args = ReclaimArgs { now, hint_mask: settings.hint_mask };
    // SAFETY: a static callback and a pointer to our own stack.
    unsafe { bpf_loop(flow::RECLAIM_SLOTS, reclaim_slot as *mut c_void, (&raw mut args).cast(), 0) };
}

extern "C" fn reclaim_slot(_index: u64, arg: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the pointer reclaim gave it.
    let a = unsafe { &*arg.cast::<ReclaimArgs>() };
    let Some(clock) = FLOW_CLOCK.get_ptr_mut(0) else { return 1 };
    // SAFETY: word 1 of the clock's value, which stays allocated.
    let hand = tables::fetch_add(unsafe { (&raw mut (*clock)[1]).cast() }, 1);
    let slot = (hand & (a.hint_mask >> 3)) as u32;
    let Some(p) = FLOW_RING.get_ptr_mut(slot) else { return 0 };
    // SAFETY: a value pointer from this lookup.
    let key = unsafe { p.read_volatile() };
    if key == 0 {
        return 0;
    }
    // SAFETY: the entry is copied at once (its time and kind are all that is read).
    let expired = match unsafe { FLOWS.get(key) } {
        Some(s) => s.expired(a.now),
        // Gone (decided, or swept): the slot is free.
        None => true,
    };
    if !expired {
        return 0;
    }
    // A packet of the flow on another CPU may have touched the entry since:
    // an entry idle for its whole time to live until then is forgotten all
    // the same, as the sweep would have done a moment before.
    if FLOWS.remove(key).is_ok() {
        if let Some(h) = FLOW_HINT.get_ptr_mut(flow::hint_slot(key, a.hint_mask)) {
            tables::atomic_add(h, u64::MAX);
        }
        count(Counter::FlowReclaimed);
    }
    // SAFETY: as above.
    unsafe { p.write_volatile(0) };
    0
}

/// Stops tracking a flow, in either table; the hint is decremented after
/// each delete.
#[inline(always)]
pub fn forget(key: u64, settings: &Settings) {
    forget_tracked(key, settings);
    forget_new(key, settings);
}

/// Deletes the flow's `FLOWS` entry, if any.
#[inline(always)]
pub fn forget_tracked(key: u64, settings: &Settings) {
    if FLOWS.remove(key).is_ok() {
        hint_add(key, settings, u64::MAX);
    }
}

/// Deletes the flow's `NEW_FLOWS` entry, if any.
#[inline(always)]
pub fn forget_new(key: u64, settings: &Settings) {
    if NEW_FLOWS.remove(key).is_ok() {
        hint_add(key, settings, u64::MAX);
    }
}

/// [`forget`], when the hint says the flow may be tracked.
#[inline(always)]
pub fn forget_if_tracked(key: u64, settings: &Settings) {
    if hinted(key, settings) {
        forget(key, settings);
    }
}

/// A SYN of a flow in neither table: tracked in `NEW_FLOWS` until its first
/// data, so that data must start at the first byte of the stream. The LRU
/// makes room by evicting its oldest entry: a flood only pushes out flood.
#[inline(always)]
pub fn track_syn(key: u64, seq: u32, now: u64, settings: &Settings) -> Done {
    let v = NewFlow { isn: seq, flags: 0, seen_ns: now };
    hint_add(key, settings, 1);
    // There already (a repeated SYN): left as it is, its count taken back.
    if NEW_FLOWS.insert(key, v, u64::from(BPF_NOEXIST)).is_err() {
        hint_add(key, settings, u64::MAX);
    }
    pass(Counter::TcpSyn)
}

/// A SYN's data (TCP Fast Open) that was not blocked: not judged (see
/// `maps::Counter::TlsSynData`), and it leaves the flow as a plain SYN
/// would have, so the data the client sends after the handshake is judged
/// from the stream's first byte. Under `--unjudged pass` the flow is
/// forgotten instead: the server may have taken the data, and a flow whose
/// first data was expected at the first byte would stall.
#[inline(always)]
pub fn syn_data_not_judged(key: u64, isn: u32, settings: &Settings) -> Done {
    if settings.unjudged == maps::layout::settings::UNJUDGED_DROP {
        // The SYN's own entry (this number: the only SYN data parsed is a
        // flow's first, or a repeat of it), put back if the verdict took it.
        forget_tracked(key, settings);
        // SAFETY: a plain helper call.
        let now = unsafe { bpf_ktime_get_coarse_ns() };
        let _ = track_syn(key, isn, now, settings);
    } else {
        forget(key, settings);
    }
    not_judged(settings, Counter::TlsSynData)
}

/// Urgent data was signalled on a flow (see `maps::layout::flow::FLAG_URGENT`):
/// noted in its `FLOWS` entry (`state`), its `NEW_FLOWS` entry (`new`), or a
/// `NEW_FLOWS` entry made for it.
#[inline(always)]
pub fn mark_urgent(
    key: u64,
    state: Option<&mut FlowState>,
    new: Option<&NewFlow>,
    seq: u32,
    now: u64,
    settings: &Settings,
) {
    if let Some(s) = state {
        s.flags |= flow::FLAG_URGENT;
        return;
    }
    let mut v = new.copied().unwrap_or(NewFlow { isn: seq.wrapping_sub(1), flags: 0, seen_ns: now });
    v.flags |= flow::NEW_URGENT;
    if new.is_some() {
        let _ = NEW_FLOWS.insert(key, v, u64::from(BPF_EXIST));
        return;
    }
    hint_add(key, settings, 1);
    if NEW_FLOWS.insert(key, v, u64::from(BPF_NOEXIST)).is_err() {
        hint_add(key, settings, u64::MAX);
    }
}

/// Resets the parser to the start of a stream: its integers zeroed (all
/// zero is the start, see `TlsState::reset`) with volatile word stores, so
/// the `bpf_loop` callbacks, which read them through their own lookup, see
/// them; the name's bytes mean nothing until the parser writes them.
#[inline(always)]
pub fn restart(tls: &mut TlsState) {
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

/// The ClientHello goes on in a later segment: keep the parser's state.
#[inline(always)]
pub fn keep(key: u64, next_seq: u32, settings: &Settings, scratch: &mut Scratch) -> Done {
    scratch.flow.kind = flow::PENDING;
    scratch.flow.next_seq = next_seq;
    // SAFETY: a plain helper call.
    scratch.flow.last_seen_ns = unsafe { bpf_ktime_get_coarse_ns() };
    if remember(key, settings, &scratch.flow) {
        return pass(Counter::TlsPending);
    }
    // Full: the rest of this ClientHello cannot be followed.
    count(Counter::FlowTableFull);
    not_judged(settings, Counter::TlsFlowTableFull)
}
