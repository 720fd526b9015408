//! The ClientHello verdict stage: what the TLS stage read of a
//! ClientHello (its server name, or its end without one) judged by the
//! rules and the ECH and no-name policies; a blocked flow gets a reset (or
//! a drop) and is remembered as blocked, an allowed one is forgotten (or,
//! with ECH blocked, read on to the end of its ClientHello).

use aya_ebpf::{bindings::xdp_action, helpers::bpf_ktime_get_coarse_ns, programs::XdpContext};
use maps::{
    Action, Counter, Protocol, Scratch, Settings, handoff,
    layout::flow as flows,
    layout::rule::Verdict,
    layout::settings::policy,
    parse::tls::{Step, TlsState},
};

use super::{Name, Segment, hello};
use crate::flows as flow;
use crate::{
    names,
    packet::Layers,
    reply,
    tables::{SETTINGS, scratch},
    verdict::{self, Done, count, drop, not_judged, pass},
};

/// What judging a ClientHello came to: an outcome, or a block to carry
/// out (in one place, so the reset writer is inlined once).
enum Decision {
    Done(Done),
    /// Block with this rule action.
    Block(u8),
}

/// The ClientHello verdict stage: judges what the TLS stage handed over.
#[inline(always)]
pub fn judge(ctx: &XdpContext) -> Done {
    let (Some(settings), Some(scratch)) = (SETTINGS.get(0), scratch()) else {
        return pass(Counter::Internal);
    };
    let h = &scratch.handoff;
    let l = Layers::taken_over(h);
    let seg = Segment::taken_over(h);
    let ech = h.hello & handoff::HELLO_ECH != 0;
    let syn_data = h.parse & handoff::PARSE_SYN != 0;
    let sni = (h.hello & handoff::HELLO_SNI != 0).then_some(Name {
        len: (h.name_len & 0xff) as usize,
        ech,
        complete: h.hello & handoff::HELLO_COMPLETE != 0,
    });
    // The event names the server name; a block by policy (ECH, no server
    // name) names no rule, a block by rule sets it (`judge_sni`).
    verdict::name_event(scratch, None, Protocol::Tls, sni.map_or(0, |n| n.len));
    let decision = match sni {
        Some(name) => judge_sni(ctx, &l, &seg, name, settings, scratch),
        None => no_sni(ctx, seg.key, ech, settings, scratch),
    };
    match decision {
        // A SYN's data decides only a block (see `flow::syn_data_not_judged`).
        Decision::Done(_) if syn_data => flow::syn_data_not_judged(seg.key, seg.seq.wrapping_sub(1), settings),
        Decision::Done(r) => r,
        Decision::Block(action) => block(ctx, &l, &seg, action, settings, scratch),
    }
}

/// A ClientHello that ended without server name, or the end of one whose
/// name was allowed while ECH ClientHellos are blocked.
#[inline(always)]
fn no_sni(ctx: &XdpContext, key: u64, ech: bool, settings: &Settings, scratch: &mut Scratch) -> Decision {
    let flags = scratch.flow.flags;
    if flags & flows::FLAG_SNI_PASSED != 0 {
        // The name was judged allowed; only ECH was left to learn.
        let allowed =
            if flags & flows::FLAG_SNI_ALLOWED != 0 { Counter::TlsPassAllowed } else { Counter::TlsPassNoMatch };
        return finish_allowed(ctx, None, key, Name { len: 0, ech, complete: true }, settings, scratch, allowed);
    }
    if ech {
        count(Counter::TlsEch);
    }
    count(Counter::TlsNoSni);
    if settings.policy & policy::NO_SNI_BLOCK != 0 {
        return Decision::Block(settings.tls_action);
    }
    flow::forget_if_tracked(key, settings);
    Decision::Done(pass(Counter::TlsPassNoSni))
}

/// The server name is complete: judge it.
#[inline(always)]
fn judge_sni(
    ctx: &XdpContext,
    l: &Layers,
    seg: &Segment,
    sni: Name,
    settings: &Settings,
    scratch: &mut Scratch,
) -> Decision {
    let Ok(name) = names::parse_text(scratch, sni.len, settings.seed) else {
        flow::forget_if_tracked(seg.key, settings);
        return Decision::Done(not_judged(settings, Counter::TlsMalformed));
    };
    verdict::trace(|t| {
        t.name_kind = Protocol::Tls as u8;
        t.l4_proto = l.proto;
        t.name_labels = name.labels as u8;
        t.sni_len = sni.len as u16;
        t.sni = scratch.flow.tls.name;
    });
    let found = match names::lookup(settings, scratch, &name) {
        Ok((m, name_key)) => {
            verdict::trace_keys(name_key, m.as_ref());
            m
        }
        Err(c) => return Decision::Done(pass(c)),
    };
    let allowed = match found.map(|m| (m.verdict, m)) {
        Some((Verdict::Block(action), m)) => {
            verdict::name_event(scratch, Some(&m), Protocol::Tls, sni.len);
            return Decision::Block(action);
        }
        Some((Verdict::Allow, _)) => Counter::TlsPassAllowed,
        None => Counter::TlsPassNoMatch,
    };
    finish_allowed(ctx, Some((l, seg)), seg.key, sni, settings, scratch, allowed)
}

/// An allowed name: done, unless ECH ClientHellos are blocked and the rest
/// of the ClientHello (where encrypted_client_hello may be) is yet to come.
/// `segment` is given when the parser may read on in this segment.
#[inline(always)]
fn finish_allowed(
    ctx: &XdpContext,
    segment: Option<(&Layers, &Segment)>,
    key: u64,
    sni: Name,
    settings: &Settings,
    scratch: &mut Scratch,
    allowed: Counter,
) -> Decision {
    if settings.policy & policy::ECH_BLOCK == 0 {
        if sni.ech {
            count(Counter::TlsEch);
        }
        flow::forget_if_tracked(key, settings);
        return Decision::Done(pass(allowed));
    }
    let mut ech = sni.ech;
    if !ech
        && !sni.complete
        && scratch.flow.flags & flows::FLAG_SNI_PASSED == 0
        && let Some((l, seg)) = segment
    {
        // Read on to the end of the ClientHello for ECH.
        scratch.flow.flags |= flows::FLAG_SNI_PASSED;
        if allowed == Counter::TlsPassAllowed {
            scratch.flow.flags |= flows::FLAG_SNI_ALLOWED;
        }
        let len = scratch.tls_len as usize;
        match hello::run_parser_from(scratch, len) {
            // SAFETY: the scratch map's parser state.
            Step::End => ech = unsafe { TlsState::ech_and_sni_len(&raw const scratch.flow.tls) }.0,
            Step::NeedMore => {
                if scratch.handoff.parse & handoff::PARSE_UNCHECKED != 0
                    && let Err(done) = super::checked(ctx, l, settings)
                {
                    return Decision::Done(done);
                }
                return Decision::Done(flow::keep(
                    key,
                    seg.seq.wrapping_add(l.payload_len() as u32),
                    settings,
                    scratch,
                ));
            }
            // The segment's steps ran out before the ClientHello's end.
            Step::Continue => {
                flow::forget_if_tracked(key, settings);
                return Decision::Done(not_judged(settings, Counter::TlsSegmentBound));
            }
            _ => {}
        }
    }
    if ech {
        count(Counter::TlsEch);
        return Decision::Block(settings.tls_action);
    }
    flow::forget_if_tracked(key, settings);
    Decision::Done(pass(allowed))
}

/// Blocks the flow: a reset toward the client (or a drop), and every later
/// packet of the flow dropped.
#[inline(always)]
fn block(
    ctx: &XdpContext,
    l: &Layers,
    seg: &Segment,
    rule_action: u8,
    settings: &Settings,
    scratch: &mut Scratch,
) -> Done {
    // An unsummed segment (a whole ClientHello on an untracked flow) is
    // checked before it leaves a blocked flow behind.
    if scratch.handoff.parse & handoff::PARSE_UNCHECKED != 0
        && let Err(done) = super::checked(ctx, l, settings)
    {
        return done;
    }
    let action = tls_action(rule_action, settings.tls_action);
    scratch.flow.kind = flows::BLOCKED;
    scratch.flow.action = action;
    // The blocked flow's window is around the byte after its ClientHello.
    scratch.flow.next_seq = seg.seq.wrapping_add(l.payload_len() as u32);
    // SAFETY: a plain helper call.
    scratch.flow.last_seen_ns = unsafe { bpf_ktime_get_coarse_ns() };
    if !flow::remember(seg.key, settings, &scratch.flow) {
        count(Counter::FlowTableFull);
    }
    verdict::capture(ctx, l, scratch);
    if action == Action::Drop as u8 {
        return drop(Counter::TlsDrop);
    }
    if reply::reset_client(ctx, l, seg.seq, seg.ack, seg.flags, scratch).is_err() {
        count(Counter::RewriteFailed);
        return drop(Counter::TlsReset);
    }
    (xdp_action::XDP_TX, Counter::TlsReset)
}

/// The action for a blocked TLS flow: the rule's if it names reset or drop,
/// else the TLS default (DNS answers mean nothing here); reset when unset.
#[inline(always)]
const fn tls_action(rule_action: u8, default: u8) -> u8 {
    if rule_action == Action::Drop as u8 || rule_action == Action::Reset as u8 {
        rule_action
    } else if default == Action::Drop as u8 {
        default
    } else {
        Action::Reset as u8
    }
}
