//! The entry stage: layers 2 to 4 parsed once, then the stage that judges
//! the payload chosen and handed what the parse found (see `maps::layout::stage`).
//! Traffic no stage needs (not IP, other UDP, most TCP segments of
//! established flows) ends here, without a tail call.

use aya_ebpf::programs::XdpContext;
use maps::{Counter, Stage};

use crate::{
    packet::{self, DNS_PORT, Packet, headers::IPPROTO_UDP},
    quic,
    tables::{SETTINGS, STAGES, scratch},
    tls,
    verdict::{self, Done, not_judged, pass},
};

/// Parses the packet's layers and says which stage judges it, with what it
/// needs left in `scratch.handoff`; or how the packet ends here.
#[inline(always)]
pub fn classify(ctx: &XdpContext) -> Result<Stage, Done> {
    let pkt = Packet::new(ctx);
    let layers = match packet::parse(ctx, &pkt) {
        Ok(l) => l,
        // A datagram or segment that may go on in fragments not reassembled
        // here: a query or ClientHello that cannot be judged.
        Err(Counter::FirstFragment) => {
            return Err(match SETTINGS.get(0) {
                Some(s) => not_judged(s, Counter::FirstFragment),
                None => pass(Counter::Internal),
            });
        }
        Err(c) => return Err(pass(c)),
    };
    let (stage, segment) = if layers.dport == DNS_PORT {
        (Stage::Dns, None)
    } else if layers.proto == IPPROTO_UDP {
        if !quic::is_initial(&pkt, &layers) {
            return Err(pass(Counter::NotDnsPort));
        }
        (Stage::Quic, None)
    } else {
        let Some(settings) = SETTINGS.get(0) else {
            return Err(pass(Counter::Internal));
        };
        (Stage::Tls, Some(tls::triage(&pkt, &layers, settings)?))
    };
    let Some(scratch) = scratch() else {
        return Err(pass(Counter::Internal));
    };
    layers.hand_off(&mut scratch.handoff);
    if let Some(s) = segment {
        s.hand_off(&mut scratch.handoff);
    }
    Ok(stage)
}

/// Goes on to the stage `next` names, or ends the packet as it says. A
/// failed tail call (an empty slot: the loader fills every one before
/// attaching) comes back here, and the packet passes as `internal`.
#[inline(always)]
pub fn proceed(ctx: &XdpContext, next: Result<Stage, Done>) -> u32 {
    let done = match next {
        Ok(stage) => {
            // SAFETY: a tail call with our own context; on success it does not return.
            unsafe { STAGES.tail_call(ctx, stage.index()) };
            #[cfg(feature = "debug")]
            aya_log_ebpf::error!(ctx, "tail call to stage {} failed", stage.index());
            pass(Counter::Internal)
        }
        Err(done) => done,
    };
    verdict::finish(ctx, done)
}
