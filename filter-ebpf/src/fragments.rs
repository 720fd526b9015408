//! IP fragments (see `maps::layout::fragment`): the program judges what a
//! first fragment shows, drops the first fragment when that cannot decide
//! or is blocked, and then drops the datagram's later fragments by the key
//! the drop recorded in `FRAGMENTS`.

use aya_ebpf::{bindings::xdp_action, helpers::bpf_ktime_get_coarse_ns};
use maps::{
    Counter, Handoff, Settings, Stage, handoff,
    layout::fragment::{self, TTL_NS},
};

use crate::{
    packet::{Addrs, Layers, Packet},
    tables::FRAGMENTS,
    verdict::{Done, drop, not_judged, pass},
};

/// The datagram's key in `FRAGMENTS`, from its addresses and identification
/// (and, for IPv4, its protocol).
#[inline(always)]
pub fn key(pkt: &Packet, l: &Layers, seed: u64) -> Option<u64> {
    Some(match l.read_addrs(pkt)? {
        Addrs::V6(src, dst) => fragment::key_v6(seed, src, dst, l.frag_id),
        Addrs::V4(src, dst) => fragment::key_v4(seed, src, dst, l.frag_id as u16, l.proto),
    })
}

/// A later fragment: dropped if its datagram's first fragment was dropped
/// (recently: identifications are reused), else passed.
#[inline(always)]
pub fn later(pkt: &Packet, l: &Layers, settings: &Settings) -> Done {
    let Some(key) = key(pkt, l, settings.seed) else {
        return pass(Counter::TruncatedHeader);
    };
    // SAFETY: a value pointer from this run's lookup, read once.
    if let Some(at) = FRAGMENTS.get_ptr(key).map(|p| unsafe { *p }) {
        // SAFETY: a plain helper call.
        let now = unsafe { bpf_ktime_get_coarse_ns() };
        if now.wrapping_sub(at) <= TTL_NS {
            return drop(Counter::FragmentDropped);
        }
    }
    pass(Counter::IpFragment)
}

/// Records that the datagram with `key` lost its first fragment.
#[inline(always)]
pub fn record(key: u64) {
    // SAFETY: a plain helper call.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    // Full means an entry was evicted: that datagram's later fragments pass,
    // and it stays incomplete all the same.
    let _ = FRAGMENTS.insert(key, now, 0);
}

/// A first fragment the entry stage cannot judge (`counter` says why):
/// the "cannot judge" policy decides, and a drop takes the datagram with it.
#[inline(always)]
pub fn unjudged_first(pkt: &Packet, l: &Layers, settings: &Settings, counter: Counter) -> Done {
    let done = not_judged(settings, counter);
    if done.0 == xdp_action::XDP_DROP
        && let Some(key) = key(pkt, l, settings.seed)
    {
        record(key);
    }
    done
}

/// A stage's decision on a first fragment (`h` holds what the entry stage
/// handed over): an answer would need the whole datagram, so a blocked
/// query in fragments is dropped instead; a drop is recorded so the later
/// fragments go too.
#[inline(always)]
pub fn settle(h: &Handoff, next: Result<Stage, Done>) -> Result<Stage, Done> {
    if h.flags & handoff::FIRST_FRAGMENT == 0 {
        return next;
    }
    let next = match next {
        Ok(Stage::Answer) => Err(drop(Counter::DropFragmented)),
        // The question runs past the fragment: it goes on in the next one.
        Err((action, Counter::DnsTruncated | Counter::DnsShortHeader)) => Err((action, Counter::DnsFragment)),
        other => other,
    };
    if let Err((xdp_action::XDP_DROP, _)) = next {
        record(h.frag_key);
    }
    next
}
