//! The entry stage: layers 2 to 4 parsed once, then the stage that judges
//! the payload chosen and handed what the parse found (see `maps::layout::stage`).
//! Traffic no stage needs (not IP, other UDP, most TCP segments of
//! established flows) ends here, without a tail call.

use aya_ebpf::programs::XdpContext;
use maps::{Counter, Stage};

use crate::{
    fragments,
    packet::{self, DNS_PORT, Fragment, Layers, Packet, headers::IPPROTO_UDP},
    quic,
    tables::{SETTINGS, STAGES, scratch},
    tls,
    verdict::{self, Done, not_judged, pass},
};

/// The entry stage: parses the packet's layers and hands the packet on to
/// the stage that judges it, with what it needs left in `scratch.handoff`;
/// returns how the packet ends when no stage needs it, or when the tail
/// call failed.
#[inline(always)]
pub fn enter(ctx: &XdpContext) -> Done {
    let pkt = Packet::new(ctx);
    let layers = match packet::parse(ctx, &pkt) {
        Ok(l) => l,
        // Headers past the bounds the parser walks: what they hide may be
        // a name.
        Err(c @ (Counter::VlanTooDeep | Counter::Ipv6ExtTooDeep)) => {
            return match SETTINGS.get(0) {
                Some(s) => not_judged(s, c),
                None => pass(Counter::Internal),
            };
        }
        Err(c) => return pass(c),
    };
    let mut frag_key = None;
    if layers.fragment != Fragment::Whole {
        let Some(settings) = SETTINGS.get(0) else {
            return pass(Counter::Internal);
        };
        match layers.fragment {
            Fragment::Later => return fragments::later(&pkt, &layers, settings),
            Fragment::Tiny => return fragments::unjudged_first(&pkt, &layers, settings, Counter::TinyFragment),
            _ => {}
        }
        if layers.proto != IPPROTO_UDP {
            // SAFETY: as below.
            let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
            return tcp_first_fragment(&pkt, &layers, settings, ifindex);
        }
        if layers.dport != DNS_PORT {
            return pass(Counter::NotDnsPort);
        }
        // The DNS stage judges the question if the fragment holds it
        // whole, and `fragments::settle` records a drop.
        frag_key = fragments::key(&pkt, &layers, settings.seed);
        if frag_key.is_none() {
            return pass(Counter::TruncatedHeader);
        }
    }
    // Each stage is called from a call site of its own, with its index a
    // constant there: the verifier then makes the tail call a direct jump
    // (`tests/tests/tail_calls.rs`).
    if layers.dport == DNS_PORT {
        if layers.proto != IPPROTO_UDP {
            return hand_on(ctx, &layers, None, None, Stage::DnsTcp);
        }
        return hand_on(ctx, &layers, None, frag_key, Stage::Dns);
    }
    if layers.proto == IPPROTO_UDP {
        if !quic::is_initial(&pkt, &layers) {
            return pass(Counter::NotDnsPort);
        }
        return hand_on(ctx, &layers, None, None, Stage::Quic);
    }
    let Some(settings) = SETTINGS.get(0) else {
        return pass(Counter::Internal);
    };
    // SAFETY: the context the kernel passed; ingress_ifindex is always readable.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    match tls::triage(&pkt, &layers, settings, ifindex) {
        Ok(segment) => hand_on(ctx, &layers, Some(segment), None, Stage::Tls),
        Err(done) => done,
    }
}

/// The first fragment of a TCP segment. Linux sends TCP with DF set, and
/// so does every other stack in use: a fragmented segment is a client
/// trying to slip past, or a broken tunnel. It is not judged when it may
/// carry DNS or part of a ClientHello: to port 53, of a flow that may be
/// tracked (a SYN, a flow in the table), or with a payload that starts
/// like a ClientHello or is too short to tell. Other segments (established
/// traffic) pass.
#[inline(always)]
fn tcp_first_fragment(pkt: &Packet, l: &Layers, settings: &maps::Settings, ifindex: u32) -> Done {
    let judged = l.dport == DNS_PORT || l.payload_len() < 6 || tls::triage(pkt, l, settings, ifindex).is_ok();
    if judged {
        return fragments::unjudged_first(pkt, l, settings, Counter::TcpFragment);
    }
    pass(Counter::TcpOther)
}

/// Leaves the layers (a TCP segment's facts, a first fragment's key) in
/// `scratch.handoff` and tail-calls `stage`; returns only if that failed.
#[inline(always)]
fn hand_on(
    ctx: &XdpContext,
    layers: &Layers,
    segment: Option<tls::Segment>,
    frag_key: Option<u64>,
    stage: Stage,
) -> Done {
    let Some(scratch) = scratch() else {
        return pass(Counter::Internal);
    };
    layers.hand_off(&mut scratch.handoff);
    if let Some(s) = segment {
        s.hand_off(&mut scratch.handoff);
    }
    if let Some(k) = frag_key {
        scratch.handoff.frag_key = k;
    }
    tail_call(ctx, stage)
}

/// Goes on to the stage `next` names, or ends the packet as it says.
#[inline(always)]
pub fn proceed(ctx: &XdpContext, next: Result<Stage, Done>) -> u32 {
    let done = match next {
        Ok(stage) => tail_call(ctx, stage),
        Err(done) => done,
    };
    verdict::finish(ctx, done)
}

/// [`proceed`] for the DNS stage, which goes on to the answer stage, or
/// back to the stream stage after a TCP query passed. Each from a call site
/// of its own, with a constant index.
#[inline(always)]
pub fn proceed_dns(ctx: &XdpContext, next: Result<Stage, Done>) -> u32 {
    let done = match next {
        Ok(Stage::DnsTcp) => tail_call_or(ctx, Stage::DnsTcp, pipelined),
        Ok(_) => tail_call(ctx, Stage::Answer),
        Err(done) => done,
    };
    verdict::finish(ctx, done)
}

/// [`proceed`] for the DNS stream stage, which goes on to the DNS stage
/// with each message's question.
#[inline(always)]
pub fn proceed_dns_tcp(ctx: &XdpContext, next: Result<Stage, Done>) -> u32 {
    let done = match next {
        Ok(_) => tail_call_or(ctx, Stage::Dns, pipelined),
        Err(done) => done,
    };
    verdict::finish(ctx, done)
}

/// A TCP segment holding more DNS messages than the stages can judge one
/// after another: two tail calls a message, within the kernel's limit of
/// 33 a packet.
#[inline(always)]
fn pipelined() -> Done {
    match SETTINGS.get(0) {
        Some(s) => not_judged(s, Counter::TcpPipelined),
        None => pass(Counter::Internal),
    }
}

/// Tail-calls `stage`. A failed tail call (an empty slot: the loader fills
/// every one before attaching) comes back here, and the packet passes as
/// `internal`.
#[inline(always)]
fn tail_call(ctx: &XdpContext, stage: Stage) -> Done {
    let done = tail_call_or(ctx, stage, || pass(Counter::Internal));
    #[cfg(feature = "debug")]
    aya_log_ebpf::error!(ctx, "tail call to stage {} failed", stage.index());
    done
}

/// Tail-calls `stage`; only if that failed (an empty slot, or the
/// kernel's limit of 33 tail calls reached), ends the packet as `fallback`
/// says (called then, so what it counts is counted only then).
#[inline(always)]
fn tail_call_or(ctx: &XdpContext, stage: Stage, fallback: impl FnOnce() -> Done) -> Done {
    // SAFETY: a tail call with our own context; on success it does not return.
    unsafe { STAGES.tail_call(ctx, stage.index()) };
    fallback()
}
