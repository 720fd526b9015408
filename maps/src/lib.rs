//! Everything the XDP program and user space must agree on, compiled into
//! both (the kernel program for `bpfel-unknown-none`, user space for the
//! host), so a rule key computed by `namewall` is by construction the key
//! the kernel computes for the same name:
//!
//! - [`layout`]: the maps: their names and shapes, and the `#[repr(C)]`
//!   types of their keys and values;
//! - [`parse`]: the pure parsers shared with the kernel: DNS names and
//!   their hash, the ClientHello parsers, checksums;
//! - [`vocab`] and [`counters`]: the codes both sides use (protocols,
//!   actions, fates, stages) and the counter table written in their terms.
#![no_std]
// The kernel program calls these on every packet: a BPF call costs, and
// inlining lets the verifier see constants through them.
#![expect(clippy::inline_always, reason = "shared with the BPF program, see above")]

pub mod counters;
pub mod layout;
pub mod parse;
pub mod vocab;

pub use counters::Counter;
pub use layout::{
    ABI_VERSION, ACTIVE_RULESET,
    rule::{Rule, RuleKey},
    scratch::{Answer, Handoff, REPLY_BUF, Scratch, Walk, handoff},
    settings::Settings,
    stage::Stage,
    trace::Trace,
};
pub use vocab::{Action, Fate, Protocol, XdpAction};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)], made only of integers and arrays of
    // integers, with every padding byte spelled out as a field.
    unsafe impl aya::Pod for crate::Rule {}
    unsafe impl aya::Pod for crate::Settings {}
    unsafe impl aya::Pod for crate::Trace {}
    unsafe impl aya::Pod for crate::Scratch {}
    unsafe impl aya::Pod for crate::layout::flow::FlowState {}
    unsafe impl aya::Pod for crate::layout::flow::NewFlow {}
    unsafe impl aya::Pod for crate::layout::dns_stream::DnsStream {}
}
