//! namewall's XDP program: judges the QNAME of every DNS query entering an
//! interface against suffix rules and answers, drops or passes it.
//!
//! The entry point is thin: [`filter`] returns an XDP action and the one
//! outcome counter the packet increments; parsing lives in [`headers`] and
//! [`dns`], the answer writer in [`answer`], and the name parser, hash and
//! rule decision in the shared `maps` crate, where host tests run them too.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// For the atomic add on rule hit counts (see `dns::Match::count_hit`).
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", expect(internal_features, reason = "atomic_xadd: the BPF target has no CAS"))]
// Every function of the program is inlined on purpose: a BPF call costs a
// frame and register spills, and inlined code lets the verifier see
// constants and bounds through it.
#![cfg_attr(target_arch = "bpf", expect(clippy::inline_always, reason = "see above"))]

#[cfg(target_arch = "bpf")]
mod answer;
#[cfg(target_arch = "bpf")]
mod cursor;
#[cfg(target_arch = "bpf")]
mod dns;
#[cfg(target_arch = "bpf")]
mod events;
#[cfg(target_arch = "bpf")]
mod headers;
#[cfg(target_arch = "bpf")]
mod program;
#[cfg(target_arch = "bpf")]
mod quic;
#[cfg(target_arch = "bpf")]
mod tls;

/// The program only exists for the BPF target; this keeps host-wide
/// commands (`cargo clippy --workspace`) building.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
