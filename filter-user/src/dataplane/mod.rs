//! The kernel side: the XDP object loaded, its maps read and written, rule
//! sets put in force, the program attached to interfaces or run on packets.
//!
//! - [`loader`]: loading the object, its entry program and the stages it
//!   tail-calls; [`Filter`] owns what
//!   was loaded and is what callers use ([`Baseline`]: the benchmarks'
//!   trivial program);
//! - [`handles`]: [`Maps`], a typed handle on each map, looked up once;
//! - [`ruleset`]: [`RuleSetWriter`], which installs rule sets, stages and
//!   switches rule generations, and widens and narrows the filter bits and
//!   depth mask around each change;
//! - `attach`: BPF links to interfaces;
//! - [`testrun`]: `BPF_PROG_TEST_RUN`, for replay, tests and benchmarks;
//! - [`pins`]: what is pinned in bpffs for the next daemon to adopt;
//! - [`counters`]: the kernel's counters summed and shown;
//! - [`kernel_log`]: the debug records of the object built with them,
//!   forwarded to tracing;
//! - [`sys`]: the system calls aya 0.14 does not wrap.
//!
//! The map layouts come from the `maps` crate (`maps::layout::shapes`); rule sets
//! come from [`crate::policy`].

mod attach;
pub mod counters;
mod error;
pub mod handles;
pub mod kernel_log;
pub mod loader;
pub mod pins;
pub mod ruleset;
pub mod sys;
pub mod testrun;

pub use error::FilterError;
pub use handles::Maps;
pub use loader::{Baseline, DEFAULT_EVENT_BUFFER, DEFAULT_MAX_FLOWS, Filter, LoadOptions, TlsPolicy};
pub use ruleset::RuleSetWriter;
pub use testrun::{RunResult, Runner, action_name};
