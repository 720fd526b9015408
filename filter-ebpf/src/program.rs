//! Maps and the XDP entry point.

use aya_ebpf::{
    bindings::xdp_action,
    btf_maps::{Array, ArrayOfMaps, HashMap, PerCpuArray},
    helpers::bpf_xdp_get_buff_len,
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use maps::{
    Action, Counter, Rule, RuleKey, Scratch, Settings, Trace,
    counters::COUNT,
    rule::{self, Verdict},
};

use crate::{
    answer::{self, Reply},
    cursor::Packet,
    dns, headers,
};

/// Template of a rule set: user space creates the real inner maps with
/// their own `max_entries` (hash maps of maps may differ in size) and puts
/// the active one in slot [`maps::ACTIVE_RULESET`]. Bounded by the size user
/// space gives each inner map.
pub type RuleSet = HashMap<RuleKey, Rule, 1>;

/// The active rule set, swapped atomically by user space (see `maps::names::RULESETS`).
#[btf_map]
pub static RULESETS: ArrayOfMaps<RuleSet, 1> = ArrayOfMaps::new();

/// Seed, default actions and fail mode.
#[btf_map]
static SETTINGS: Array<Settings, 1> = Array::new();

/// Outcome and event counters, per CPU so the hot path needs no atomics.
#[btf_map]
static COUNTERS: PerCpuArray<u64, COUNT> = PerCpuArray::new();

/// Working memory for one packet.
#[btf_map]
pub static SCRATCH: PerCpuArray<Scratch, 1> = PerCpuArray::new();

/// Decision record for replay and tests; see [`Trace`].
#[btf_map]
static TRACE: Array<Trace, 1> = Array::new();

/// Set to 1 by the loader for replay and tests. Read-only data: the verifier
/// knows its value and removes the tracing code from production loads.
#[unsafe(no_mangle)]
static TRACE_ENABLED: u8 = 0;

#[inline(always)]
pub fn count(c: Counter) {
    if let Some(p) = COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: per-CPU slot of this CPU; XDP programs do not nest on a CPU.
        unsafe { *p += 1 };
    }
}

/// What happened to one packet.
struct Outcome {
    action: u32,
    counter: Counter,
    name_offset: usize,
    name_len: usize,
    name_labels: usize,
    name_key: u64,
    rule_key: u64,
    rule_labels: usize,
    l4_proto: u8,
}

impl Outcome {
    const fn pass(counter: Counter) -> Self {
        Self {
            action: xdp_action::XDP_PASS,
            counter,
            name_offset: 0,
            name_len: 0,
            name_labels: 0,
            name_key: 0,
            rule_key: 0,
            rule_labels: 0,
            l4_proto: 0,
        }
    }
}

/// `frags`: the program accepts multi-buffer frames (jumbo MTUs, and
/// test runs of packets larger than a page); headers are read from the
/// first buffer and the question with `bpf_xdp_load_bytes`, which spans buffers.
#[xdp(frags)]
pub fn namewall(ctx: XdpContext) -> u32 {
    let out = filter(&ctx);
    count(out.counter);
    // SAFETY: reading our own read-only global.
    if unsafe { core::ptr::read_volatile(&TRACE_ENABLED) } != 0 {
        record(&out);
    }
    out.action
}

fn record(out: &Outcome) {
    if let Some(t) = TRACE.get_ptr_mut(0) {
        // SAFETY: the map value is valid; only tests and replay, one packet at a time, read it.
        unsafe {
            let seq = (*t).seq + 1;
            *t = Trace {
                seq,
                name_key: out.name_key,
                rule_key: out.rule_key,
                outcome: out.counter as u32,
                xdp_action: out.action,
                name_offset: out.name_offset as u16,
                name_len: out.name_len as u16,
                name_labels: out.name_labels as u8,
                rule_labels: out.rule_labels as u8,
                l4_proto: out.l4_proto,
                _pad: 0,
            };
        }
    }
}

/// Judges one packet. Fail-open: anything we cannot parse passes, with
/// its reason counted, unless the operator chose fail-closed for DNS
/// queries we should have been able to judge.
#[inline(always)]
fn filter(ctx: &XdpContext) -> Outcome {
    let pkt = Packet::new(ctx);
    // SAFETY: a plain helper call on our own context.
    let frame_len = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as usize;
    let layers = match headers::parse(&pkt, frame_len) {
        Ok(l) => l,
        Err(c) => return Outcome::pass(c),
    };
    let Some(settings) = SETTINGS.get(0) else {
        return Outcome::pass(Counter::Internal);
    };
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return Outcome::pass(Counter::Internal);
    };
    // SAFETY: this CPU's scratch slot, used by this program run only.
    let scratch = unsafe { &mut *scratch };

    let layers = launder(scratch, &layers);
    let pkt = Packet::new(ctx);
    let query = match dns::parse_query(ctx, &pkt, &layers, settings.seed, scratch) {
        Ok(q) => q,
        Err(e) => {
            let mut out = Outcome::pass(e.counter);
            if e.malformed && settings.fail_closed != 0 {
                count(Counter::FailClosedDrop);
                out.action = xdp_action::XDP_DROP;
            }
            return out;
        }
    };
    let tcp = layers.proto == headers::IPPROTO_TCP;
    let mut out = Outcome {
        action: xdp_action::XDP_PASS,
        counter: Counter::PassNoMatch,
        name_offset: query.dns_off + dns::DNS_HLEN,
        name_len: query.name.len,
        name_labels: query.name.labels,
        name_key: 0,
        rule_key: 0,
        rule_labels: 0,
        l4_proto: layers.proto,
    };
    let (found, name_key) = match dns::lookup(settings, scratch, &query.name) {
        Ok(r) => r,
        Err(c) => {
            out.counter = c;
            return out;
        }
    };
    out.name_key = name_key;
    let Some(m) = found else {
        return out;
    };
    out.rule_key = m.key;
    out.rule_labels = m.depth;
    let Verdict::Block(rule_action) = m.verdict else {
        out.counter = Counter::PassAllowed;
        return out;
    };
    if tcp {
        // Answering over TCP would need the stream's state; the client's
        // retry will be dropped too.
        out.counter = Counter::DropTcp;
        out.action = xdp_action::XDP_DROP;
        return out;
    }
    let action = rule::dns_action(rule_action, settings.dns_action);
    let (rcode, sinkhole, counter) = match action {
        a if a == Action::Nxdomain as u8 => (answer::RCODE_NXDOMAIN, false, Counter::Nxdomain),
        a if a == Action::Refused as u8 => (answer::RCODE_REFUSED, false, Counter::Refused),
        a if a == Action::Sinkhole as u8 => (answer::RCODE_NOERROR, true, Counter::Sinkhole),
        _ => {
            out.counter = Counter::Drop;
            out.action = xdp_action::XDP_DROP;
            return out;
        }
    };
    out.counter = counter;
    let reply = Reply { rcode, sinkhole, ttl: settings.answer_ttl };
    match answer::write(ctx, &layers, &query, reply, scratch) {
        Ok(()) => out.action = xdp_action::XDP_TX,
        Err(answer::RewriteFailed) => {
            count(Counter::RewriteFailed);
            out.action = xdp_action::XDP_DROP;
        }
    }
    out
}


/// Passes the header offsets through map memory. Each VLAN/IP/extension
/// layout reaches the DNS code with differently-bounded offsets, and the
/// verifier would check the DNS parser, the lookups and the answer writer
/// once per layout, past its budget. Values read back from a map are
/// unknown to it, so every layout arrives in one state; the masks give back
/// the bounds packet access needs. They never change a value: `headers`
/// guarantees l4_off <= 2048, payload_off <= 2048 + 60 and payload_end <=
/// payload_off + 4096, and the verifier needs offset + access size <= 0xffff.
#[inline(always)]
fn launder(scratch: &mut Scratch, l: &headers::Layers) -> headers::Layers {
    let spill = &raw mut scratch.spill;
    let v = [
        l.l2_len as u64,
        l.vlan_tags as u64,
        u64::from(l.ipv6),
        l.l4_off as u64,
        u64::from(l.proto),
        l.payload_off as u64,
        l.payload_end as u64,
        0,
    ];
    // SAFETY: a valid pointer into this CPU's scratch slot; volatile so the
    // compiler keeps the round trip through memory.
    let v = unsafe {
        spill.write_volatile(v);
        spill.read_volatile()
    };
    headers::Layers {
        l2_len: (v[0] & 0x1f) as usize,
        vlan_tags: (v[1] & 0x3) as usize,
        ipv6: v[2] & 1 != 0,
        l4_off: (v[3] & 0xfff) as usize,
        proto: v[4] as u8,
        payload_off: (v[5] & 0xfff) as usize,
        payload_end: (v[6] & 0x1fff) as usize,
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
