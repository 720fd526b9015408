//! The shape of every map in the XDP object: its kind, key and value sizes,
//! how many entries it has, and whether a restarted daemon adopts it.
//!
//! User space derives from this one table what it pins, and what a pinned
//! map must look like to be adopted; a test loads the object and checks each
//! of its maps against its row. A map added to the program needs a row here
//! (and, when pinned, a new [`crate::ABI_VERSION`]).

use core::mem::size_of;

use crate::{Scratch, Settings, Trace, counters, flow::FlowState, names};

/// The kinds of BPF map the program declares. A plain enum: user space maps
/// it to its loader's own map types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    Array,
    PerCpuArray,
    Hash,
    /// An array whose values are other maps (held by their file descriptor).
    ArrayOfMaps,
    RingBuf,
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
    /// Its name in the object file, from [`crate::names`].
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

/// Every map of the XDP object, pinned ones first.
pub const MAPS: &[MapShape] = &[
    // Values are the file descriptors of rule sets, which user space
    // creates: hash maps from `u64` name hashes to `Rule`s.
    MapShape {
        name: names::RULESETS,
        kind: MapKind::ArrayOfMaps,
        key_size: 4,
        value_size: 4,
        entries: Entries::Fixed(1),
        pinned: true,
    },
    MapShape {
        name: names::SETTINGS,
        kind: MapKind::Array,
        key_size: 4,
        value_size: size::<Settings>(),
        entries: Entries::Fixed(1),
        pinned: true,
    },
    MapShape {
        name: names::FILTER,
        kind: MapKind::Array,
        key_size: 4,
        value_size: 8,
        entries: Entries::Configured,
        pinned: true,
    },
    MapShape {
        name: names::FLOWS,
        kind: MapKind::Hash,
        key_size: 8,
        value_size: size::<FlowState>(),
        entries: Entries::Configured,
        pinned: true,
    },
    MapShape {
        name: names::FLOW_HINT,
        kind: MapKind::Array,
        key_size: 4,
        value_size: 8,
        entries: Entries::Configured,
        pinned: true,
    },
    MapShape {
        name: names::EVENTS,
        kind: MapKind::RingBuf,
        key_size: 0,
        value_size: 0,
        entries: Entries::Configured,
        pinned: true,
    },
    MapShape {
        name: names::COUNTERS,
        kind: MapKind::PerCpuArray,
        key_size: 4,
        value_size: 8,
        entries: Entries::Fixed(counters::SLOTS as u32),
        pinned: true,
    },
    MapShape {
        name: names::SCRATCH,
        kind: MapKind::PerCpuArray,
        key_size: 4,
        value_size: size::<Scratch>(),
        entries: Entries::Fixed(1),
        pinned: false,
    },
    MapShape {
        name: names::TRACE,
        kind: MapKind::Array,
        key_size: 4,
        value_size: size::<Trace>(),
        entries: Entries::Fixed(1),
        pinned: false,
    },
    // The start of the current second and the events sent in it.
    MapShape {
        name: names::EVENT_BUDGET,
        kind: MapKind::PerCpuArray,
        key_size: 4,
        value_size: 16,
        entries: Entries::Fixed(1),
        pinned: false,
    },
];

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
