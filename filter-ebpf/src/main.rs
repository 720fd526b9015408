//! namewall's XDP programs: the entry stage attached to interfaces, and the
//! stages it tail-calls (see `maps::layout::stage`), each verified on its own.
//!
//! This file holds only the entry points. The rest, from the bottom up:
//! [`verifier`] (workarounds, one place each), [`tables`] (every map),
//! [`packet`] (the one cursor, header views, the layer parser),
//! [`verdict`] (outcome counters, trace, block events), [`flows`] (the
//! TCP flow tables TLS and DNS over TCP share), [`fragments`]
//! (first fragments judged, later ones of dropped datagrams), [`names`] (label
//! walk and rule lookup), [`reply`] (answers and resets written in place),
//! then the protocols: [`dns`], [`tls`], [`quic`]; and [`dispatch`], the
//! entry stage's choice of stage. The pure parsers and decisions (name
//! hash, ClientHello parser, rule judgment) live in the shared `maps`
//! crate, where host tests run them too.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// For atomic adds on map memory (see `tables::atomic_add`).
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", expect(internal_features, reason = "atomic_xadd: the BPF target has no CAS"))]
// Every function of the program is inlined on purpose: a BPF call costs a
// frame and register spills, and inlined code lets the verifier see
// constants and bounds through it.
#![cfg_attr(target_arch = "bpf", expect(clippy::inline_always, reason = "see above"))]

#[cfg(target_arch = "bpf")]
mod dispatch;
#[cfg(target_arch = "bpf")]
mod dns;
#[cfg(target_arch = "bpf")]
mod flows;
#[cfg(target_arch = "bpf")]
mod fragments;
#[cfg(target_arch = "bpf")]
mod names;
#[cfg(target_arch = "bpf")]
mod packet;
#[cfg(target_arch = "bpf")]
mod quic;
#[cfg(target_arch = "bpf")]
mod reply;
#[cfg(target_arch = "bpf")]
mod runtime;
#[cfg(target_arch = "bpf")]
mod tables;
#[cfg(target_arch = "bpf")]
mod tls;
#[cfg(target_arch = "bpf")]
mod verdict;
#[cfg(target_arch = "bpf")]
mod verifier;

#[cfg(target_arch = "bpf")]
mod entry {
    use aya_ebpf::{macros::xdp, programs::XdpContext};

    use crate::{dispatch, dns, fragments, quic, tables, tls, verdict};

    /// The entry stage, attached to interfaces. `frags`: the programs accept
    /// multi-buffer frames (jumbo MTUs, and test runs of packets larger than
    /// a page); headers are read from the first buffer, payloads with
    /// `bpf_xdp_load_bytes`, which spans buffers. Every stage a program
    /// tail-calls must be `frags` too.
    #[xdp(frags)]
    #[expect(clippy::needless_pass_by_value, reason = "the signature aya's #[xdp] expects")]
    pub fn namewall(ctx: XdpContext) -> u32 {
        verdict::begin();
        verdict::finish(&ctx, dispatch::enter(&ctx))
    }

    /// The DNS stage.
    #[xdp(frags)]
    #[expect(clippy::needless_pass_by_value, reason = "the signature aya's #[xdp] expects")]
    pub fn namewall_dns(ctx: XdpContext) -> u32 {
        let next = dns::judge(&ctx);
        let next = match tables::scratch() {
            Some(s) => fragments::settle(&s.handoff, next),
            None => next,
        };
        dispatch::proceed_dns(&ctx, next)
    }

    /// The DNS-over-TCP stream stage.
    #[xdp(frags)]
    #[expect(clippy::needless_pass_by_value, reason = "the signature aya's #[xdp] expects")]
    pub fn namewall_dns_tcp(ctx: XdpContext) -> u32 {
        dispatch::proceed_dns_tcp(&ctx, dns::stream::judge(&ctx))
    }

    /// The answer stage.
    #[xdp(frags)]
    #[expect(clippy::needless_pass_by_value, reason = "the signature aya's #[xdp] expects")]
    pub fn namewall_answer(ctx: XdpContext) -> u32 {
        verdict::finish(&ctx, dns::answer(&ctx))
    }

    /// The TLS stage.
    #[xdp(frags)]
    #[expect(clippy::needless_pass_by_value, reason = "the signature aya's #[xdp] expects")]
    pub fn namewall_tls(ctx: XdpContext) -> u32 {
        dispatch::proceed(&ctx, tls::judge(&ctx))
    }

    /// The ClientHello parse stage.
    #[xdp(frags)]
    #[expect(clippy::needless_pass_by_value, reason = "the signature aya's #[xdp] expects")]
    pub fn namewall_tls_parse(ctx: XdpContext) -> u32 {
        dispatch::proceed(&ctx, tls::parse_stage(&ctx))
    }

    /// The ClientHello verdict stage.
    #[xdp(frags)]
    #[expect(clippy::needless_pass_by_value, reason = "the signature aya's #[xdp] expects")]
    pub fn namewall_hello(ctx: XdpContext) -> u32 {
        verdict::finish(&ctx, tls::decide::judge(&ctx))
    }

    /// The QUIC stage.
    #[xdp(frags)]
    #[expect(clippy::needless_pass_by_value, reason = "the signature aya's #[xdp] expects")]
    pub fn namewall_quic(ctx: XdpContext) -> u32 {
        verdict::finish(&ctx, quic::judge(&ctx))
    }
}

/// The programs only exist for the BPF target; this keeps host-wide
/// commands (`cargo clippy --workspace`) building.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
