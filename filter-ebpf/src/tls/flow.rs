//! The flow tables: TLS flows between SYN and first data (`NEW_FLOWS`), in
//! the middle of a ClientHello or blocked (`FLOWS`; see
//! `maps::layout::flow`), and the hint counters that spare untracked flows
//! a lookup.

use aya_ebpf::{
    bindings::{BPF_EXIST, BPF_NOEXIST},
    helpers::bpf_ktime_get_coarse_ns,
};
use maps::{
    Counter, Scratch, Settings,
    layout::flow::{self, FlowState, NewFlow},
    parse::tls::TlsState,
};

use crate::{
    tables::{self, FLOW_HINT, FLOWS, NEW_FLOWS},
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
/// one that is too low would lose the flow). A flow that leaves `NEW_FLOWS`
/// for `FLOWS` is deleted there after. False when the table is full.
#[inline(always)]
pub fn remember(key: u64, settings: &Settings, value: &FlowState) -> bool {
    hint_add(key, settings, 1);
    if FLOWS.insert(key, value, u64::from(BPF_NOEXIST)).is_err() {
        // Already there (its count taken back: the entry has one), or full.
        hint_add(key, settings, u64::MAX);
        if FLOWS.insert(key, value, u64::from(BPF_EXIST)).is_err() {
            return false;
        }
    }
    forget_new(key, settings);
    true
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
