//! The shape of every map in the XDP object: its kind, key and value sizes,
//! how many entries it has, and whether a restarted daemon adopts it.
//!
//! User space derives from this one table what it pins, and what a pinned
//! map must look like to be adopted; a test loads the object and checks each
//! of its maps against its row. A map added to the program needs a row here
//! (and, when pinned, a new [`crate::ABI_VERSION`]).

use core::mem::size_of;

use crate::{
    Scratch, Settings, Trace, counters,
    layout::dns_stream::{self, DnsStream},
    layout::flow::{FlowState, NewFlow},
    layout::fragment,
    layout::names,
    layout::stage,
};

/// The kinds of BPF map the program declares. A plain enum: user space maps
/// it to its loader's own map types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    Array,
    PerCpuArray,
    Hash,
    /// A hash map that evicts its least recently used entry when full.
    LruHash,
    /// An array whose values are other maps (held by their file descriptor).
    ArrayOfMaps,
    RingBuf,
    /// An array of programs, for tail calls.
    ProgramArray,
}

/// How many entries a map has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entries {
    /// Always this many, whatever the configuration.
    Fixed(u32),
    /// Set by the loader from the configuration (and kept from a pinned copy
    /// when one is adopted).
    Configured,
}

/// One map of the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapShape {
    /// Its name in the object file, from [`crate::layout::names`].
    pub name: &'static str,
    pub kind: MapKind,
    /// Bytes of a key and of a value (0 for a ring buffer, which has neither).
    pub key_size: u32,
    pub value_size: u32,
    pub entries: Entries,
    /// Pinned by `namewall run`, so that the next daemon adopts it and
    /// packets never meet an empty map; the others are per-packet working
    /// memory or replay-only and start afresh with each load.
    pub pinned: bool,
}

/// `size_of::<T>()` as a map's key or value size.
const fn size<T>() -> u32 {
    size_of::<T>() as u32
}

/// A row of [`MAPS`].
const fn row(
    name: &'static str,
    kind: MapKind,
    key_size: u32,
    value_size: u32,
    entries: Entries,
    pinned: bool,
) -> MapShape {
    MapShape { name, kind, key_size, value_size, entries, pinned }
}

const PINNED: bool = true;
const NOT_PINNED: bool = false;

/// Every map of the XDP object, pinned ones first.
#[rustfmt::skip]
pub const MAPS: &[MapShape] = {
    use Entries::{Configured, Fixed};
    use MapKind::{Array, ArrayOfMaps, Hash, LruHash, PerCpuArray, ProgramArray, RingBuf};
    &[
        //  name                 kind         key  value                 entries                          pinned
        // RULESETS holds the file descriptors of rule sets, which user
        // space creates: hash maps from `u64` name hashes to `Rule`s.
        row(names::RULESETS,     ArrayOfMaps, 4,   4,                    Fixed(1),                        PINNED),
        row(names::SETTINGS,     Array,       4,   size::<Settings>(),   Fixed(1),                        PINNED),
        row(names::FILTER,       Array,       4,   8,                    Configured,                      PINNED),
        row(names::FLOWS,        Hash,        8,   size::<FlowState>(),  Configured,                      PINNED),
        row(names::NEW_FLOWS,    LruHash,     8,   size::<NewFlow>(),    Configured,                      PINNED),
        row(names::FLOW_HINT,    Array,       4,   8,                    Configured,                      PINNED),
        row(names::FLOW_RING,    Array,       4,   8,                    Configured,                      PINNED),
        row(names::FLOW_CLOCK,   Array,       4,   16,                   Fixed(1),                        PINNED),
        // A ring buffer has neither keys nor values, only bytes.
        row(names::EVENTS,       RingBuf,     0,   0,                    Configured,                      PINNED),
        row(names::COUNTERS,     PerCpuArray, 4,   8,                    Fixed(counters::SLOTS as u32),   PINNED),
        row(names::SCRATCH,      PerCpuArray, 4,   size::<Scratch>(),    Fixed(1),                        NOT_PINNED),
        row(names::TRACE,        Array,       4,   size::<Trace>(),      Fixed(1),                        NOT_PINNED),
        // The start of the current second and the events sent in it.
        // Later fragments of dropped datagrams: short-lived, bounded by eviction.
        row(names::FRAGMENTS,    LruHash,     8,   8,                    Fixed(fragment::ENTRIES),        NOT_PINNED),
        // DNS over TCP connections: plain (a full map is visible), idle ones swept.
        row(names::DNS_STREAMS,  Hash,        8,   size::<DnsStream>(),  Fixed(dns_stream::ENTRIES),      NOT_PINNED),
        row(names::EVENT_BUDGET, PerCpuArray, 4,   16,                   Fixed(1),                        NOT_PINNED),
        // The stages of this object's entry program: never adopted (a new
        // program tail-calls its own build's stages), pinned apart, per
        // program (see `PinDir::stages` in filter-user).
        row(names::STAGES,       ProgramArray, 4,  4,                    Fixed(stage::SLOTS),             NOT_PINNED),
    ]
};

/// The row of the map called `name`.
pub fn shape(name: &str) -> Option<&'static MapShape> {
    MAPS.iter().find(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_name_has_one_row() {
        for (i, a) in MAPS.iter().enumerate() {
            assert!(MAPS[i + 1..].iter().all(|b| b.name != a.name), "{} twice", a.name);
            assert_eq!(shape(a.name), Some(a));
        }
    }
}
