//! What can go wrong loading and driving the program.

use aya::{EbpfError, maps::MapError, programs::ProgramError};
use thiserror::Error;

use super::{pins::PinError, sys::SysError};

/// Errors from loading and driving the program. Messages name the step;
/// the cause is the error's source, which `{:#}` (anyhow) prints after it.
#[derive(Debug, Error)]
pub enum FilterError {
    #[error("loading the XDP object")]
    Load(#[from] EbpfError),
    #[error("{context}")]
    Program { context: String, source: ProgramError },
    #[error("map {map}")]
    Map { map: &'static str, source: MapError },
    #[error("map {0} missing from the object")]
    MissingMap(&'static str),
    #[error("map {0} is of a kind namewall does not read")]
    MapKind(&'static str),
    #[error("program {0} missing from the object")]
    MissingProgram(&'static str),
    #[error("filling the rule set")]
    Fill(#[from] SysError),
    #[error("interface {0:?} does not exist")]
    NoSuchInterface(String),
    #[error(
        "interface {iface:?} is not an Ethernet interface (link type {link_type}: {kind}): XDP there sees packets \
         without an Ethernet header, which namewall would pass unjudged; filter on an Ethernet interface the \
         same traffic crosses instead"
    )]
    NotEthernet { iface: String, link_type: u16, kind: &'static str },
    #[error("the rule set was hashed with seed {got:#x} but the program uses {want:#x}")]
    SeedMismatch { got: u64, want: u64 },
    #[error("{0} flows is more than a map can hold")]
    TooManyFlows(usize),
    #[error("rule set of {0} rules is larger than a map can hold")]
    TooManyRules(usize),
    #[error("an event buffer of {0} bytes: it must be a power of two from 4096 to 1 GiB")]
    EventBuffer(usize),
    #[error(
        "adopting the pinned filter: the pinned settings' filter mask {mask:#x} does not fit the pinned filter of {words} words"
    )]
    AdoptFilter { mask: u64, words: usize },
    #[error("{0}")]
    Pin(#[from] PinError),
    #[error("XDP link: {0}")]
    Link(String),
    #[error("no rule set installed yet")]
    NoRuleSet,
    #[error("the active rule set is full ({capacity} rules)")]
    RuleSetFull { capacity: usize },
    #[error("an earlier switch of rule generations did not finish; a new rule set must be installed")]
    Unsettled,
    #[error("reading the rule set (bpf_map_lookup_batch): {0}")]
    Dump(std::io::Error),
    #[error("waiting for packets in flight (membarrier): {0}")]
    Sync(std::io::Error),
    #[error("reading the counters: {0}")]
    Counters(std::io::Error),
    #[error("reading kernel memory use: {0}")]
    Memory(std::io::Error),
    #[error("{what} the stages' programs")]
    Stages { what: &'static str, source: std::io::Error },
    #[error("pinning the stages' program array at {}", path.display())]
    PinStages { path: std::path::PathBuf, source: aya::pin::PinError },
    #[error(transparent)]
    KernelLog(#[from] super::kernel_log::KernelLogError),
}

/// Wraps an error of map `map`.
pub(super) fn map_err(map: &'static str) -> impl FnOnce(MapError) -> FilterError {
    move |source| FilterError::Map { map, source }
}

/// Wraps an error of the program, saying what was being done.
pub(super) fn program_err(context: impl Into<String>) -> impl FnOnce(ProgramError) -> FilterError {
    let context = context.into();
    move |source| FilterError::Program { context, source }
}
