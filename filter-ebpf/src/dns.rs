//! From a transport payload to port 53 to a verdict: DNS header checks, the
//! question copied out of the packet, and the suffix lookups.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_loop, bpf_xdp_load_bytes},
    programs::XdpContext,
};
use maps::{
    Counter, Scratch, Settings, Walk,
    name::{self, LabelStep, MAX_QUESTION, NameError, WireName},
    rule::{self, Verdict},
};

use crate::{
    cursor::Packet,
    headers::Layers,
    program::{FILTER, RULESETS, RuleSet, SCRATCH},
};

/// DNS header length (RFC 1035 §4.1.1).
pub const DNS_HLEN: usize = 12;

/// A query whose question was parsed.
#[derive(Clone, Copy)]
pub struct Query {
    /// Offset of the DNS header.
    pub dns_off: usize,
    /// End of the message within the segment or datagram; for TCP, less than
    /// the payload's end when more messages follow in the same segment.
    pub msg_end: usize,
    /// Flags word of the query.
    pub flags: u16,
    /// QNAME as parsed; its bytes and the label hashes are in the scratch map.
    pub name: WireName,
    pub qtype: u16,
    pub qclass: u16,
}

/// Why a payload was not judged: the counter to increment, and whether the
/// fail-closed policy applies (a query we should have judged but could not).
#[derive(Clone, Copy)]
pub struct NotJudged {
    pub counter: Counter,
    pub malformed: bool,
}

#[inline(always)]
const fn skip(counter: Counter) -> NotJudged {
    NotJudged { counter, malformed: false }
}

#[inline(always)]
const fn malformed(counter: Counter) -> NotJudged {
    NotJudged { counter, malformed: true }
}

/// Finds the DNS message in the payload, checks it is a one-question query
/// and copies and parses the question into `scratch`.
#[inline(always)]
pub fn parse_query(
    ctx: &XdpContext,
    pkt: &Packet,
    l: &Layers,
    seed: u64,
    scratch: &mut Scratch,
) -> Result<Query, NotJudged> {
    let tcp = l.proto == crate::headers::IPPROTO_TCP;
    let (dns_off, msg_end) = if tcp {
        // RFC 1035 §4.2.2: a two-byte length prefix, then the message. Only a
        // segment that starts with a message is judged.
        let Some(len) = pkt.be16(l.payload_off) else {
            return Err(malformed(Counter::TcpNotMessageStart));
        };
        let dns_off = l.payload_off + 2;
        let end = dns_off + len as usize;
        (dns_off, if end < l.payload_end { end } else { l.payload_end })
    } else {
        (l.payload_off, l.payload_end)
    };
    let Some(h) = pkt.bytes::<DNS_HLEN>(dns_off).filter(|_| dns_off + DNS_HLEN <= msg_end) else {
        return Err(malformed(if tcp { Counter::TcpNotMessageStart } else { Counter::DnsShortHeader }));
    };
    let flags = u16::from_be_bytes([h[2], h[3]]);
    let qdcount = u16::from_be_bytes([h[4], h[5]]);
    let not_query = if flags & 0x8000 != 0 {
        Some(Counter::DnsResponse)
    } else if (flags >> 11) & 0xf != 0 {
        Some(Counter::DnsNotQuery)
    } else if qdcount == 0 {
        Some(Counter::DnsNoQuestion)
    } else {
        None
    };
    if let Some(c) = not_query {
        // Over TCP such bytes are as likely the middle of a stream, which a
        // client controls: fail-closed must not let them through.
        return Err(if tcp { malformed(Counter::TcpNotMessageStart) } else { skip(c) });
    }
    if qdcount > 1 {
        return Err(malformed(Counter::DnsMultiQuestion));
    }

    let qname_off = dns_off + DNS_HLEN;
    let avail = msg_end - qname_off;
    let copy = if avail < MAX_QUESTION { avail } else { MAX_QUESTION };
    if copy == 0 {
        return Err(malformed(Counter::DnsTruncated));
    }
    // bpf_xdp_load_bytes also reads from the fragments of multi-buffer frames.
    // SAFETY: the destination is the scratch map value, QUESTION_BUF >= MAX_QUESTION
    // bytes long; the helper checks the packet range itself.
    let rc =
        unsafe { bpf_xdp_load_bytes(ctx.ctx, qname_off as u32, scratch.question.as_mut_ptr().cast(), copy as u32) };
    if rc != 0 {
        return Err(malformed(Counter::DnsTruncated));
    }
    let name = parse_name(scratch, copy, seed).map_err(|e| {
        malformed(match e {
            NameError::Truncated => Counter::DnsTruncated,
            NameError::Compressed => Counter::DnsCompressed,
            // Only dotted text names (TLS) have empty or overlong labels; a
            // wire name cannot.
            NameError::BadLabelType | NameError::EmptyLabel | NameError::LabelTooLong => Counter::DnsBadLabel,
            NameError::TooLong => Counter::DnsNameTooLong,
        })
    })?;
    if name.len + 4 > copy {
        return Err(malformed(Counter::DnsTruncated));
    }
    let q = &scratch.question;
    let at = name.len & (name::QUESTION_BUF - 1);
    let qtype = u16::from_be_bytes([q[at], q[(at + 1) & (name::QUESTION_BUF - 1)]]);
    let qclass = u16::from_be_bytes([q[(at + 2) & (name::QUESTION_BUF - 1)], q[(at + 3) & (name::QUESTION_BUF - 1)]]);
    Ok(Query { dns_off, msg_end, flags, name, qtype, qclass })
}

/// Labels the straight loops handle before handing over to `bpf_loop`.
/// The verifier walks a plain loop once per iteration, so a short one is
/// cheap to verify and fast to run; `bpf_loop` makes it check the step once
/// but costs a call and memory round trips per label. Nearly every name
/// queried has at most this many labels.
const FAST_LABELS: usize = 6;
pub const FAST_PARSE: usize = 6;

const RUNNING: u64 = 0;
const DONE: u64 = 1;
const FAILED: u64 = 2;

/// Parses the QNAME copied into the scratch map and stores each label's
/// hash: the first [`FAST_LABELS`] labels in a plain loop, any further ones
/// one per `bpf_loop` iteration.
#[inline(always)]
fn parse_name(scratch: &mut Scratch, avail: usize, seed: u64) -> Result<WireName, NameError> {
    let mut pos = 0;
    let mut labels = 0;
    for _ in 0..FAST_PARSE {
        match name::parse_label(&scratch.question, avail, pos, seed)? {
            LabelStep::Label { hash, next } => {
                scratch.label_hashes[labels & (name::LABEL_SLOTS - 1)] = hash;
                labels += 1;
                pos = next;
            }
            LabelStep::End { len } => return Ok(forget(scratch, WireName { len, labels })),
        }
    }
    parse_rest(scratch, avail, pos, labels, seed, false)
}

/// The labels after the first [`FAST_PARSE`], one per `bpf_loop` iteration:
/// of the QNAME in `scratch.question`, or (`text`) of the TLS server name
/// in `scratch.flow.tls`.
#[inline(always)]
pub fn parse_rest(
    scratch: &mut Scratch,
    avail: usize,
    pos: usize,
    labels: usize,
    seed: u64,
    text: bool,
) -> Result<WireName, NameError> {
    let walk = &raw mut scratch.walk;
    // Volatile: the callbacks change `walk` through their own lookup of the
    // scratch map, behind the back of this `&mut`.
    // SAFETY: a valid pointer into this CPU's scratch slot.
    unsafe { put_walk(walk, Walk { pos: pos as u64, labels: labels as u64, status: RUNNING, ..Walk::default() }) };
    let mut args = ParseArgs { avail: avail as u64, seed };
    // Up to 127 labels and the root in all.
    // SAFETY: a static callback and a pointer to our own stack, as bpf_loop requires.
    unsafe {
        let step = if text { parse_text_step as *mut c_void } else { parse_step as *mut c_void };
        bpf_loop((name::LABEL_SLOTS - FAST_PARSE) as u32, step, (&raw mut args).cast(), 0);
    }
    // SAFETY: as above.
    let w = unsafe { get_walk(walk) };
    match w.status {
        DONE => Ok(WireName { len: (w.len & 0x1ff) as usize, labels: (w.labels & 0xff) as usize }),
        // 128 steps without reaching the root cannot happen within 255 bytes.
        RUNNING => Err(NameError::TooLong),
        s if s == FAILED + NameError::Truncated as u64 => Err(NameError::Truncated),
        s if s == FAILED + NameError::Compressed as u64 => Err(NameError::Compressed),
        s if s == FAILED + NameError::BadLabelType as u64 => Err(NameError::BadLabelType),
        s if s == FAILED + NameError::EmptyLabel as u64 => Err(NameError::EmptyLabel),
        s if s == FAILED + NameError::LabelTooLong as u64 => Err(NameError::LabelTooLong),
        _ => Err(NameError::TooLong),
    }
}

/// Writes `w` to the scratch walk record a field at a time: a volatile
/// store of the whole struct would build it on the stack first and copy it,
/// and stack is what the verifier's 512-byte limit for the call chain
/// counts.
///
/// # Safety
/// `walk` points to this CPU's scratch walk record.
#[inline(always)]
unsafe fn put_walk(walk: *mut Walk, w: Walk) {
    // SAFETY: the caller's pointer; each field is a plain u64.
    unsafe {
        (&raw mut (*walk).pos).write_volatile(w.pos);
        (&raw mut (*walk).labels).write_volatile(w.labels);
        (&raw mut (*walk).len).write_volatile(w.len);
        (&raw mut (*walk).status).write_volatile(w.status);
        (&raw mut (*walk).key).write_volatile(w.key);
        (&raw mut (*walk).best_depth).write_volatile(w.best_depth);
        (&raw mut (*walk).best_key).write_volatile(w.best_key);
        (&raw mut (*walk).best_kind).write_volatile(w.best_kind);
        (&raw mut (*walk).best_action).write_volatile(w.best_action);
    }
}

/// Reads the scratch walk record a field at a time; see [`put_walk`].
///
/// # Safety
/// As for [`put_walk`].
#[inline(always)]
unsafe fn get_walk(walk: *const Walk) -> Walk {
    // SAFETY: the caller's pointer; each field is a plain u64.
    unsafe {
        Walk {
            pos: (&raw const (*walk).pos).read_volatile(),
            labels: (&raw const (*walk).labels).read_volatile(),
            len: (&raw const (*walk).len).read_volatile(),
            status: (&raw const (*walk).status).read_volatile(),
            key: (&raw const (*walk).key).read_volatile(),
            best_depth: (&raw const (*walk).best_depth).read_volatile(),
            best_key: (&raw const (*walk).best_key).read_volatile(),
            best_kind: (&raw const (*walk).best_kind).read_volatile(),
            best_action: (&raw const (*walk).best_action).read_volatile(),
        }
    }
}

/// Passes a parsed name through map memory. The plain loop reaches its end
/// with a different, exactly known label count per iteration, and the
/// verifier would check all that follows (lookups, answer) once per count;
/// read back from the map, the values are unknown to it and one check
/// covers them all.
#[inline(always)]
pub fn forget(scratch: &mut Scratch, name: WireName) -> WireName {
    let walk = &raw mut scratch.walk;
    // SAFETY: a valid pointer into this CPU's scratch slot; volatile so the
    // round trip through memory stays.
    let w = unsafe {
        put_walk(walk, Walk { len: name.len as u64, labels: name.labels as u64, ..Walk::default() });
        get_walk(walk)
    };
    WireName { len: (w.len & 0x1ff) as usize, labels: (w.labels & 0xff) as usize }
}

/// Constants of the label loop, on the caller's stack; `bpf_loop` hands the
/// callback a pointer to it. What changes from label to label is in
/// [`maps::Walk`], in map memory (see there why).
#[repr(C)]
struct ParseArgs {
    avail: u64,
    seed: u64,
}

/// One label of a wire-format QNAME per call.
extern "C" fn parse_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the pointer parse_name gave it.
    let args = unsafe { &*ctx.cast::<ParseArgs>() };
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else { return 1 };
    // SAFETY: this CPU's scratch slot.
    let scratch = unsafe { &mut *scratch };
    let w = scratch.walk;
    let step = name::parse_label(&scratch.question, args.avail as usize, w.pos as usize, args.seed);
    i64::from(!record_label(scratch, step, w.labels))
}

/// Two labels of a dotted text name (a TLS server name) per call: every
/// TLS name goes through this loop (the wire path parses its first labels
/// in plain code), and a call costs about as much as the label it parses.
extern "C" fn parse_text_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the pointer parse_name gave it.
    let args = unsafe { &*ctx.cast::<ParseArgs>() };
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else { return 1 };
    // SAFETY: this CPU's scratch slot.
    let scratch = unsafe { &mut *scratch };
    for _ in 0..2 {
        let w = scratch.walk;
        let step = name::parse_text_label(&scratch.flow.tls.name, args.avail as usize, w.pos as usize, args.seed);
        if !record_label(scratch, step, w.labels) {
            return 1;
        }
        if scratch.walk.pos >= args.avail {
            // The last label: the next step would only say
            // `End { len: pos + 1 }`.
            scratch.walk.len = scratch.walk.pos + 1;
            scratch.walk.status = DONE;
            return 1;
        }
    }
    0
}

/// Records one step of a name's parse in the scratch walk record: a
/// label's hash (true: go on), or the end or an error (false: stop).
#[inline(always)]
fn record_label(scratch: &mut Scratch, step: Result<LabelStep, NameError>, labels: u64) -> bool {
    match step {
        Ok(LabelStep::Label { hash, next }) => {
            scratch.label_hashes[labels as usize & (name::LABEL_SLOTS - 1)] = hash;
            scratch.walk.labels = labels + 1;
            scratch.walk.pos = next as u64;
            true
        }
        Ok(LabelStep::End { len }) => {
            scratch.walk.len = len as u64;
            scratch.walk.status = DONE;
            false
        }
        Err(e) => {
            scratch.walk.status = FAILED + e as u64;
            false
        }
    }
}

/// The rule that decided a name.
#[derive(Clone, Copy)]
pub struct Match {
    pub verdict: Verdict,
    pub depth: usize,
    pub key: u64,
}

/// The deepest deciding rule so far, as the loops keep it.
#[derive(Clone, Copy)]
struct Best {
    /// 0: none; 1: allow; 2: block.
    kind: u64,
    action: u64,
    depth: u64,
    key: u64,
}

/// What the rule at `key`, for the suffix of `depth` labels of a name of
/// `labels` labels, says; updates `best`. A hit whose label count differs
/// from the depth is a key collision: counted (as an extra event) and ignored.
#[inline(always)]
fn consider(rules: &RuleSet, filter_mask: u64, key: u64, depth: u64, labels: u64, generation: u8, best: &mut Best) {
    let (word, bit) = maps::filter::position(key, filter_mask);
    // A clear bit proves the key absent; a missing word (never expected)
    // just means no proof.
    if let Some(w) = FILTER.get(word)
        && *w & bit == 0
    {
        return;
    }
    // SAFETY: the value is copied out at once.
    let Some(rule) = (unsafe { rules.get(key) }).copied() else { return };
    if rule.labels as u64 != depth {
        crate::program::count(Counter::KeyCollision);
        return;
    }
    match rule::judge(&rule.in_generation(generation), depth as usize, labels as usize) {
        Some(Verdict::Allow) => *best = Best { kind: 1, action: 0, depth, key },
        Some(Verdict::Block(action)) => *best = Best { kind: 2, action: action as u64, depth, key },
        None => {}
    }
}

#[inline(always)]
fn has_depth(mask: &[u64; 2], depth: u64) -> bool {
    let bit = (depth.wrapping_sub(1)) & 127;
    mask[(bit >> 6) as usize & 1] & (1 << (bit & 63)) != 0
}

/// Constants of the suffix loop.
#[repr(C)]
struct LookupArgs {
    /// The rule set this packet is judged by, chosen once per packet so a
    /// swap never mixes two sets within one packet.
    rules: *const RuleSet,
    labels: u64,
    max_depth: u64,
    mask: [u64; 2],
    filter_mask: u64,
    /// The rule generation this packet reads (see `Settings::generation`).
    generation: u64,
}

/// Looks up every suffix of the name, from the rightmost label leftwards,
/// at the depths where rules exist; the deepest rule with something to say
/// decides: the most specific rule wins. Also returns the key of the whole
/// name (for tracing). The first [`FAST_LABELS`] depths in a plain loop,
/// deeper ones one per `bpf_loop` iteration.
#[inline(always)]
pub fn lookup(settings: &Settings, scratch: &mut Scratch, name: &WireName) -> Result<(Option<Match>, u64), Counter> {
    // Depth mask before rule set: see `Settings::depth_mask` for the swap protocol.
    let mask = settings.depth_mask;
    let filter_mask = settings.filter_mask;
    let max_depth = settings.max_depth() as u64;
    // Read once (volatile: the compiler must not read it again later):
    // every lookup of this packet sees the same generation.
    // SAFETY: a field of the settings map value.
    let generation = unsafe { core::ptr::read_volatile(&raw const settings.generation) } & 1;
    let Some(rules) = RULESETS.get(maps::ACTIVE_RULESET) else {
        return Err(Counter::NoRuleset);
    };
    let labels = name.labels as u64;
    let mut key = name::root_key(settings.seed);
    let mut best = Best { kind: 0, action: 0, depth: 0, key: 0 };
    let mut depth = 1u64;
    while depth <= FAST_LABELS as u64 {
        if depth > labels {
            break;
        }
        key = name::child_key(key, scratch.label_hashes[(labels - depth) as usize & (name::LABEL_SLOTS - 1)]);
        if depth <= max_depth && has_depth(&mask, depth) {
            consider(rules, filter_mask, key, depth, labels, generation, &mut best);
        }
        depth += 1;
    }
    let walk = &raw mut scratch.walk;
    // Volatile for the same reason as in parse_name.
    // SAFETY: a valid pointer into this CPU's scratch slot.
    unsafe {
        put_walk(
            walk,
            Walk {
                key,
                best_kind: best.kind,
                best_action: best.action,
                best_depth: best.depth,
                best_key: best.key,
                ..Walk::default()
            },
        );
    }
    if labels > FAST_LABELS as u64 {
        let mut args = LookupArgs { rules, labels, max_depth, mask, filter_mask, generation: u64::from(generation) };
        // SAFETY: a static callback and a pointer to our own stack.
        unsafe {
            bpf_loop((labels - FAST_LABELS as u64) as u32, lookup_step as *mut c_void, (&raw mut args).cast(), 0);
        }
    }
    // Read back in every case: besides collecting the callbacks' results,
    // the round trip through map memory makes the verifier forget which
    // depth the loop ended at and which rule kind it saw, so it checks the
    // answer writer once rather than once per combination.
    // SAFETY: as above.
    let w = unsafe { get_walk(walk) };
    let key = w.key;
    let best = Best { kind: w.best_kind, action: w.best_action, depth: w.best_depth & 0xff, key: w.best_key };
    let found = match best.kind {
        1 => Some(Match { verdict: Verdict::Allow, depth: best.depth as usize, key: best.key }),
        2 => Some(Match { verdict: Verdict::Block(best.action as u8), depth: best.depth as usize, key: best.key }),
        _ => None,
    };
    if let Some(m) = &found {
        count_hit(rules, m.key);
    }
    Ok((found, key))
}

/// One depth beyond [`FAST_LABELS`]: the `index`-th after them.
extern "C" fn lookup_step(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the pointer lookup gave it.
    let args = unsafe { &*ctx.cast::<LookupArgs>() };
    let depth = index + 1 + FAST_LABELS as u64;
    if depth > args.labels {
        return 1;
    }
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else { return 1 };
    // SAFETY: this CPU's scratch slot.
    let scratch = unsafe { &mut *scratch };
    let slot = (args.labels - depth) as usize & (name::LABEL_SLOTS - 1);
    let key = name::child_key(scratch.walk.key, scratch.label_hashes[slot]);
    scratch.walk.key = key;
    if depth > args.max_depth || !has_depth(&args.mask, depth) {
        return 0;
    }
    let w = scratch.walk;
    let mut best = Best { kind: w.best_kind, action: w.best_action, depth: w.best_depth, key: w.best_key };
    // SAFETY: the inner map pointer stored by lookup for this packet.
    let rules = unsafe { &*args.rules };
    consider(rules, args.filter_mask, key, depth, args.labels, args.generation as u8, &mut best);
    scratch.walk.best_kind = best.kind;
    scratch.walk.best_action = best.action;
    scratch.walk.best_depth = best.depth;
    scratch.walk.best_key = best.key;
    0
}

/// Counts a hit on the rule with `key`. Atomic: CPUs share rule-set entries.
#[inline(always)]
fn count_hit(rules: &RuleSet, key: u64) {
    let Some(p) = rules.get_ptr_mut(key) else { return };
    // The BPF target only has 64-bit atomics. `hits` is the upper half of
    // the 8-byte, 8-aligned value (little-endian), so adding 1 << 32 to the
    // whole value increments `hits` and leaves the other fields alone; the
    // carry out of bit 63 is discarded, which is the documented wrap.
    // core's AtomicU64::fetch_add needs compare-and-swap, which the BPF
    // target lacks; the intrinsic lowers to the BPF atomic add instruction.
    // SAFETY: a value pointer from this run's lookup; hash-map values are
    // 8-byte aligned and stay allocated for the whole run.
    #[expect(clippy::cast_ptr_alignment, reason = "hash-map values are 8-byte aligned (see above)")]
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            p.cast::<u64>(),
            1 << 32,
        );
    }
}
