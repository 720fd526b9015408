//! Every map of the program, as katran keeps them in one header. Their
//! names, key and value types are shared with user space through the
//! `maps` crate; sizes marked "set at load" are the loader's to choose.

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    btf_maps::{Array, ArrayOfMaps, HashMap, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
    macros::btf_map,
};
use maps::{
    Rule, RuleKey, Scratch, Settings, Trace,
    counters::SLOTS,
    layout::dns_stream::{self, DnsStream},
    layout::event::Event,
    layout::flow::{FlowState, NewFlow},
    layout::fragment,
    layout::stage,
};

/// Template of a rule set: user space creates the real inner maps with
/// their own `max_entries` (hash maps of maps may differ in size) and puts
/// the active one in slot [`maps::ACTIVE_RULESET`]. Bounded by the size user
/// space gives each inner map.
pub type RuleSet = HashMap<RuleKey, Rule, 1>;

/// The active rule set, swapped atomically by user space (see `maps::layout::names::RULESETS`).
#[btf_map]
pub static RULESETS: ArrayOfMaps<RuleSet, 1> = ArrayOfMaps::new();

/// Negative-lookup bit filter (see `maps::layout::filter`); its size is set at load.
#[btf_map]
pub static FILTER: Array<u64, 1024> = Array::new();

/// TLS flows in progress and blocked flows (see `maps::layout::flow`); its size is
/// set at load. A plain hash map: a full table is visible.
#[btf_map]
pub static FLOWS: HashMap<u64, FlowState, 1024> = HashMap::new();

/// TCP flows between SYN and first data (see `maps::layout::flow`); its
/// size is set at load. An LRU map: a SYN flood evicts its own entries.
#[btf_map]
pub static NEW_FLOWS: LruHashMap<u64, NewFlow, 1024> = LruHashMap::new();

/// Keys of the latest `FLOWS` insertions, the ring expired entries are
/// reclaimed from when `FLOWS` is full (see `maps::layout::flow::ring_slots`);
/// its size is set at load.
#[btf_map]
pub static FLOW_RING: Array<u64, 1024> = Array::new();

/// The ring's hands: the next slot written, the next slot examined.
#[btf_map]
pub static FLOW_CLOCK: Array<[u64; 2], 1> = Array::new();

/// Counters sparing untracked flows the `FLOWS` lookup (see `maps::layout::flow`).
/// Mappable, so the daemon's sweep can decrement them atomically.
#[btf_map]
pub static FLOW_HINT: Array<u64, 1024, { BPF_F_MMAPABLE as usize }> = Array::new();

/// DNS over TCP connections: where each stream stands (see
/// `maps::layout::dns_stream`). A plain hash map: a full table is visible.
#[btf_map]
pub static DNS_STREAMS: HashMap<u64, DnsStream, { dns_stream::ENTRIES as usize }> = HashMap::new();

/// Datagrams whose first fragment was dropped, by key, with the time of
/// the drop (see `maps::layout::fragment`).
#[btf_map]
pub static FRAGMENTS: LruHashMap<u64, u64, { fragment::ENTRIES as usize }> = LruHashMap::new();

/// Seed, default actions, policies, the "cannot judge" policy.
#[btf_map]
pub static SETTINGS: Array<Settings, 1> = Array::new();

/// Outcome and event counters, per CPU so the hot path needs no atomics.
#[btf_map]
pub static COUNTERS: PerCpuArray<u64, SLOTS> = PerCpuArray::new();

/// Working memory for one packet, shared by the stages it passes through
/// (a tail call stays on the CPU it started on).
#[btf_map]
pub static SCRATCH: PerCpuArray<Scratch, 1> = PerCpuArray::new();

/// Decision record for replay and tests; see [`Trace`].
#[btf_map]
pub static TRACE: Array<Trace, 1> = Array::new();

/// The stages the entry program tail-calls, by `maps::layout::stage::Stage` index.
#[btf_map]
pub static STAGES: ProgramArray<{ stage::SLOTS as usize }> = ProgramArray::new();

/// Block events to user space; its size is set at load.
#[btf_map]
pub static EVENTS: RingBuf<Event, { 1 << 20 }> = RingBuf::new();

/// Per CPU: the start of the current second and the events sent in it.
#[btf_map]
pub static EVENT_BUDGET: PerCpuArray<[u64; 2], 1> = PerCpuArray::new();

/// Set to 1 by the loader for replay and tests. Read-only data: the verifier
/// knows its value and removes the tracing code from production loads.
#[unsafe(no_mangle)]
pub static TRACE_ENABLED: u8 = 0;

/// This CPU's scratch memory.
#[inline(always)]
pub fn scratch() -> Option<&'static mut Scratch> {
    // SAFETY: this CPU's slot; XDP programs do not nest on a CPU, and the
    // stages of one packet run one after the other.
    SCRATCH.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// Reads a 64-bit word of map memory that CPUs share, then adds `delta`
/// to it atomically; returns the value read. Not one atomic fetch-and-add:
/// the value `atomic_xadd` returns is not the word's old value in the code
/// this target gets (the ring's hands all stayed at one slot), so two CPUs
/// may read the same value. Callers use it for hands that go round a ring,
/// where two CPUs on one slot only lose a key to the daemon's sweep.
#[inline(always)]
pub fn fetch_add(word: *mut u64, delta: u64) -> u64 {
    // SAFETY: as for `atomic_add`.
    let before = unsafe { word.read_volatile() };
    atomic_add(word, delta);
    before
}

/// Adds `delta` to a 64-bit word of map memory that CPUs share. core's
/// `AtomicU64::fetch_add` needs compare-and-swap, which the BPF target
/// lacks; the intrinsic lowers to the BPF atomic add instruction.
#[inline(always)]
pub fn atomic_add(word: *mut u64, delta: u64) {
    // SAFETY: callers pass a pointer into a map value that stays allocated
    // for the program run, 8-byte aligned.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(word, delta);
    }
}
