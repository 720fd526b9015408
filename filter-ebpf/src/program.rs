//! Maps and the XDP entry point.

use aya_ebpf::bindings::BPF_F_MMAPABLE;
use aya_ebpf::{
    bindings::xdp_action,
    btf_maps::{Array, ArrayOfMaps, HashMap, PerCpuArray},
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use maps::{
    Action, Counter, Rule, RuleKey, Scratch, Settings, Trace,
    counters::{COUNT, SLOTS},
    flow::FlowState,
    rule::{self, Verdict},
    trace,
};

use crate::{
    answer::{self, Reply},
    cursor::Packet,
    dns, events, headers, quic, tls,
};

/// Template of a rule set: user space creates the real inner maps with
/// their own `max_entries` (hash maps of maps may differ in size) and puts
/// the active one in slot [`maps::ACTIVE_RULESET`]. Bounded by the size user
/// space gives each inner map.
pub type RuleSet = HashMap<RuleKey, Rule, 1>;

/// The active rule set, swapped atomically by user space (see `maps::names::RULESETS`).
#[btf_map]
pub static RULESETS: ArrayOfMaps<RuleSet, 1> = ArrayOfMaps::new();

/// Negative-lookup bit filter (see `maps::filter`); user space sets its
/// size at load time.
#[btf_map]
pub static FILTER: Array<u64, 1024> = Array::new();

/// TLS flows in progress and blocked flows (see `maps::flow`); user space
/// sets its size at load time. A plain hash map: a full table is visible.
#[btf_map]
pub static FLOWS: HashMap<u64, FlowState, 1024> = HashMap::new();

/// Counters sparing untracked flows the `FLOWS` lookup (see `maps::flow`).
/// Mappable, so the daemon's sweep can decrement them atomically.
#[btf_map]
pub static FLOW_HINT: Array<u64, 1024, { BPF_F_MMAPABLE as usize }> = Array::new();

/// Seed, default actions and fail mode.
#[btf_map]
pub(crate) static SETTINGS: Array<Settings, 1> = Array::new();

/// Outcome and event counters, per CPU so the hot path needs no atomics.
#[btf_map]
static COUNTERS: PerCpuArray<u64, SLOTS> = PerCpuArray::new();

/// Working memory for one packet.
#[btf_map]
pub(crate) static SCRATCH: PerCpuArray<Scratch, 1> = PerCpuArray::new();

/// Decision record for replay and tests; see [`Trace`].
#[btf_map]
static TRACE: Array<Trace, 1> = Array::new();

/// Set to 1 by the loader for replay and tests. Read-only data: the verifier
/// knows its value and removes the tracing code from production loads.
#[unsafe(no_mangle)]
static TRACE_ENABLED: u8 = 0;

/// Counts an extra event (row 0, see `maps::counters::IFACE_BUCKETS`).
#[inline(always)]
pub(crate) fn count(c: Counter) {
    count_slot(c as usize);
}

#[inline(always)]
fn count_slot(slot: usize) {
    if let Some(p) = COUNTERS.get_ptr_mut(slot as u32) {
        // SAFETY: per-CPU slot of this CPU; XDP programs do not nest on a CPU.
        unsafe { *p += 1 };
    }
}

/// Whether this load records decisions in `TRACE` (replay and tests). The
/// verifier knows the value of read-only data and removes every traced
/// branch from production loads, so tracing costs them nothing.
#[inline(always)]
fn tracing() -> bool {
    // SAFETY: reading our own read-only global.
    unsafe { core::ptr::read_volatile(&raw const TRACE_ENABLED) != 0 }
}

/// Runs `f` on the trace record when tracing.
#[inline(always)]
pub(crate) fn trace(f: impl FnOnce(&mut Trace)) {
    if tracing()
        && let Some(t) = TRACE.get_ptr_mut(0)
    {
        // SAFETY: the map value is valid; only tests and replay, one packet at a time, read it.
        f(unsafe { &mut *t });
    }
}

/// `frags`: the program accepts multi-buffer frames (jumbo MTUs, and
/// test runs of packets larger than a page); headers are read from the
/// first buffer and the question with `bpf_xdp_load_bytes`, which spans buffers.
///
/// Inlined into the entry point aya's macro wraps it in: as a BPF-to-BPF
/// call (LLVM stopped inlining it once the program grew) every packet paid
/// for a call, its frame and its register saves, a quarter of the cost of a
/// packet the program does not judge.
#[xdp(frags)]
#[inline(always)]
#[expect(clippy::needless_pass_by_value, reason = "the signature aya's #[xdp] expects")]
pub fn namewall(ctx: XdpContext) -> u32 {
    trace(|t| *t = Trace { seq: t.seq, ..Trace::default() });
    let (action, counter) = filter(&ctx);
    if events::is_block(counter) {
        events::flush(&ctx, counter);
    }
    // SAFETY: the context the kernel passed; ingress_ifindex is always readable.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    count_slot(maps::counters::bucket(ifindex) * COUNT + counter as usize);
    trace(|t| {
        t.seq += 1;
        t.outcome = counter as u32;
        t.xdp_action = action;
    });
    action
}

#[inline(always)]
pub(crate) const fn pass(counter: Counter) -> (u32, Counter) {
    (xdp_action::XDP_PASS, counter)
}

/// A packet the program should have judged but could not: passed
/// (fail-open, the default) or dropped (fail-closed), with its reason.
#[inline(always)]
pub(crate) fn not_judged(settings: &Settings, counter: Counter) -> (u32, Counter) {
    if settings.fail_closed != 0 {
        count(Counter::FailClosedDrop);
        return (xdp_action::XDP_DROP, counter);
    }
    pass(counter)
}

/// Judges one packet: returns the XDP action and the packet's outcome
/// counter. Fail-open: anything we cannot parse passes, with its reason
/// counted, unless the operator chose fail-closed for DNS queries we should
/// have been able to judge.
#[inline(always)]
fn filter(ctx: &XdpContext) -> (u32, Counter) {
    let pkt = Packet::new(ctx);
    let layers = match headers::parse(ctx, &pkt) {
        Ok(l) => l,
        Err(Counter::FirstFragment) => {
            return match SETTINGS.get(0) {
                Some(s) => not_judged(s, Counter::FirstFragment),
                None => pass(Counter::Internal),
            };
        }
        Err(c) => return pass(c),
    };
    if layers.dport != headers::DNS_PORT && layers.proto != headers::IPPROTO_TCP {
        return quic::judge(ctx, &layers);
    }
    let Some(settings) = SETTINGS.get(0) else {
        return pass(Counter::Internal);
    };
    if layers.dport != headers::DNS_PORT {
        return tls::judge(ctx, &layers, settings);
    }
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return pass(Counter::Internal);
    };
    // SAFETY: this CPU's scratch slot, used by this program run only.
    let scratch = unsafe { &mut *scratch };

    let layers = launder(scratch, &layers);
    let pkt = Packet::new(ctx);
    let query = match dns::parse_query(ctx, &pkt, &layers, settings.seed, scratch) {
        Ok(q) => q,
        Err(e) if e.malformed => return not_judged(settings, e.counter),
        Err(e) => return pass(e.counter),
    };
    trace(|t| {
        t.name_offset = (query.dns_off + dns::DNS_HLEN) as u16;
        t.name_len = query.name.len as u16;
        t.name_labels = query.name.labels as u8;
        t.l4_proto = layers.proto;
        t.name_kind = trace::NAME_DNS;
    });
    let (found, name_key) = match dns::lookup(settings, scratch, &query.name) {
        Ok(r) => r,
        Err(c) => return pass(c),
    };
    trace(|t| t.name_key = name_key);
    // More messages after the first in a TCP segment: only the first was
    // judged, so an allowed verdict says nothing about the rest.
    let tcp = layers.proto == headers::IPPROTO_TCP;
    let pipelined = tcp && query.msg_end < layers.payload_end;
    let Some(m) = found else {
        return if pipelined { not_judged(settings, Counter::TcpPipelined) } else { pass(Counter::PassNoMatch) };
    };
    trace(|t| {
        t.rule_key = m.key;
        t.rule_labels = m.depth as u8;
    });
    let Verdict::Block(rule_action) = m.verdict else {
        return if pipelined { not_judged(settings, Counter::TcpPipelined) } else { pass(Counter::PassAllowed) };
    };
    let action = rule::dns_action(rule_action, settings.dns_action);
    let (rcode, sinkhole, counter) = match action {
        // Answering over TCP would need the stream's state; the client's
        // retry will be dropped too.
        _ if tcp => (0, false, Counter::DropTcp),
        a if a == Action::Nxdomain as u8 => (answer::RCODE_NXDOMAIN, false, Counter::Nxdomain),
        a if a == Action::Refused as u8 => (answer::RCODE_REFUSED, false, Counter::Refused),
        a if a == Action::Sinkhole as u8 => (answer::RCODE_NOERROR, true, Counter::Sinkhole),
        _ => (0, false, Counter::Drop),
    };
    // Told before the answer rewrites the packet's addresses.
    scratch.event.rule_key = m.key;
    scratch.event.rule_labels = m.depth as u8;
    scratch.event.name_kind = trace::NAME_DNS;
    scratch.event.name_len = query.name.len as u16;
    events::capture(ctx, &layers, scratch);
    if matches!(counter, Counter::DropTcp | Counter::Drop) {
        return (xdp_action::XDP_DROP, counter);
    }
    let reply = Reply { rcode, sinkhole, ttl: settings.answer_ttl };
    if let Err(answer::RewriteFailed) = answer::write(ctx, &layers, &query, reply, scratch) {
        count(Counter::RewriteFailed);
        return (xdp_action::XDP_DROP, counter);
    }
    (xdp_action::XDP_TX, counter)
}

/// Records the TLS server name being judged.
#[inline(always)]
pub(crate) fn trace_sni(scratch: &Scratch, len: usize, name: &maps::name::WireName) {
    trace(|t| {
        t.name_kind = trace::NAME_TLS;
        t.l4_proto = headers::IPPROTO_TCP;
        t.name_labels = name.labels as u8;
        t.sni_len = len as u16;
        t.sni = scratch.flow.tls.name;
    });
}

/// Records the keys of a judged name and of its deciding rule.
#[inline(always)]
pub(crate) fn trace_keys(name_key: u64, m: Option<&dns::Match>) {
    trace(|t| {
        t.name_key = name_key;
        if let Some(m) = m {
            t.rule_key = m.key;
            t.rule_labels = m.depth as u8;
        }
    });
}

/// Passes the header offsets through map memory. Each VLAN/IP/extension
/// layout reaches the DNS code with differently-bounded offsets, and the
/// verifier would check the DNS parser, the lookups and the answer writer
/// once per layout, past its budget. Values read back from a map are
/// unknown to it, so every layout arrives in one state; the masks give back
/// the bounds packet access needs. They never change a value: `headers`
/// guarantees `l4_off <= 2048`, `payload_off <= 2048 + 60`,
/// `payload_end <= payload_off + 4096` and `ip_end < 2^17`, and the verifier
/// needs offset + access size <= 0xffff.
#[inline(always)]
pub(crate) fn launder(scratch: &mut Scratch, l: &headers::Layers) -> headers::Layers {
    spill_layers(scratch, l);
    unspill_layers(scratch)
}

/// The first half of [`launder`]: the offsets into scratch memory.
#[inline(always)]
fn spill_layers(scratch: &mut Scratch, l: &headers::Layers) {
    let v = [
        l.l2_len as u64,
        l.vlan_tags as u64,
        u64::from(l.ipv6),
        l.l4_off as u64,
        u64::from(l.proto) | u64::from(l.dport) << 8,
        l.payload_off as u64,
        l.payload_end as u64,
        l.ip_end as u64,
    ];
    // Volatile so the compiler keeps the round trip through memory; a word
    // at a time so no copy of the array is built on the stack.
    for (i, x) in v.into_iter().enumerate() {
        // SAFETY: a valid pointer into this CPU's scratch slot.
        unsafe { (&raw mut scratch.spill[i]).write_volatile(x) };
    }
}

/// The second half of [`launder`]: the offsets back, masked to their bounds.
#[inline(always)]
fn unspill_layers(scratch: &Scratch) -> headers::Layers {
    // SAFETY (each read): as in `spill_layers`.
    let v: [u64; 8] = core::array::from_fn(|i| unsafe { (&raw const scratch.spill[i]).read_volatile() });
    headers::Layers {
        l2_len: (v[0] & 0x1f) as usize,
        vlan_tags: (v[1] & 0x3) as usize,
        ipv6: v[2] & 1 != 0,
        l4_off: (v[3] & 0xfff) as usize,
        proto: v[4] as u8,
        dport: (v[4] >> 8) as u16,
        payload_off: (v[5] & 0xfff) as usize,
        payload_end: (v[6] & 0x1fff) as usize,
        ip_end: (v[7] & 0x1_ffff) as usize,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
