//! What the maps hold: every map's name and shape, and the `#[repr(C)]`
//! types of their keys and values, as the kernel program and user space
//! both read them. Each type has explicit padding and a size assertion;
//! `bool` and data-carrying enums never cross the kernel boundary (codes
//! are `u8`/`u32`, see [`crate::vocab`]).
//!
//! - [`shapes`]: one table of every map (kind, key and value sizes,
//!   entries, pinned or not), from which user space derives pinning and
//!   its checks;
//! - [`rule`]: rule keys and values (two generations in 8 bytes) and the
//!   decision over a rule found at a depth;
//! - [`settings`]: the one `SETTINGS` value; [`filter`]: the
//!   negative-lookup bit filter; [`flow`]: TLS flow state and the flow
//!   hint; [`fragment`]: dropped datagrams' later fragments; [`event`]: block events; [`trace`]: the decision record of
//!   replay and tests;
//! - [`scratch`]: per-CPU working memory, and what one stage hands the
//!   next; [`stage`]: the stages' program-array slots.

pub mod dns_stream;
pub mod event;
pub mod filter;
pub mod flow;
pub mod fragment;
pub mod rule;
pub mod scratch;
pub mod settings;
pub mod shapes;
pub mod stage;
pub mod trace;

/// Map names as they appear in the object file; user space looks maps up by these.
pub mod names {
    /// `ArrayOfMaps` with one slot: index 0 holds the active rule set (a hash map
    /// `RuleKey -> Rule`). User space builds a complete new rule set in a fresh
    /// inner map and swaps it in with one update, so a packet is judged by
    /// either the old or the new set, never a mix.
    pub const RULESETS: &str = "RULESETS";
    /// `Array<Settings>` with one element: seed, default actions, the "cannot judge" policy.
    pub const SETTINGS: &str = "SETTINGS";
    /// `Array<u64>`: the negative-lookup bit filter, see [`filter`].
    pub const FILTER: &str = "FILTER";
    /// `HashMap<u64, FlowState>`: TLS flows in progress and blocked flows, see [`flow`].
    pub const FLOWS: &str = "FLOWS";
    /// `LruHashMap<u64, NewFlow>`: TCP flows between SYN and first data, see [`flow`].
    pub const NEW_FLOWS: &str = "NEW_FLOWS";
    /// `HashMap<u64, DnsStream>`: DNS over TCP connections, see [`dns_stream`].
    pub const DNS_STREAMS: &str = "DNS_STREAMS";
    /// `LruHashMap<u64, u64>`: datagrams whose first fragment was dropped, see [`fragment`].
    pub const FRAGMENTS: &str = "FRAGMENTS";
    /// `Array<u64>` (mmapable): counters sparing untracked flows a lookup, see [`flow`].
    pub const FLOW_HINT: &str = "FLOW_HINT";
    /// `Array<u64>`: keys of the latest `FLOWS` insertions, the ring the
    /// kernel reclaims expired entries from when `FLOWS` is full (see
    /// [`super::flow::ring_slots`]).
    pub const FLOW_RING: &str = "FLOW_RING";
    /// `Array<[u64; 2]>`: the ring's hands, the next slot written and the
    /// next slot examined.
    pub const FLOW_CLOCK: &str = "FLOW_CLOCK";
    /// `PerCpuArray<u64>` indexed by [`crate::Counter`].
    pub const COUNTERS: &str = "COUNTERS";
    /// `PerCpuArray<Scratch>`: per-CPU working memory for one packet.
    pub const SCRATCH: &str = "SCRATCH";
    /// `Array<Trace>` with one element, written only when `TRACE_ENABLED` is set at load.
    pub const TRACE: &str = "TRACE";
    /// Read-only global: non-zero makes the program record each decision in `TRACE`.
    pub const TRACE_ENABLED: &str = "TRACE_ENABLED";
    /// `ProgramArray` of the stages the entry program tail-calls, see [`stage`].
    pub const STAGES: &str = "STAGES";
    /// `RingBuf` of [`event::Event`]s: one per block, within the budget.
    pub const EVENTS: &str = "EVENTS";
    /// `PerCpuArray<[u64; 2]>`: this second's start and the events sent in it.
    pub const EVENT_BUDGET: &str = "EVENT_BUDGET";
    /// The entry program's function name in the object file: the one
    /// attached to interfaces (the stages are in [`stage`]).
    pub const PROGRAM: &str = "namewall";
    /// The baseline program used by benchmarks.
    pub const BASELINE_PROGRAM: &str = "baseline";
}

/// Version of everything a restarted daemon adopts from a running one: the
/// pinned maps' names, key and value layouts, sizes that do not follow
/// configuration, and their meaning (settings fields, counter indices, flow
/// state). Bump it with any such change: a daemon refuses pinned state of
/// another version instead of misreading it.
pub const ABI_VERSION: u32 = 4;

/// Slot of the active rule set in `RULESETS`.
pub const ACTIVE_RULESET: u32 = 0;
