//! Names to rules, whatever protocol carried them: a name's labels hashed
//! into `Scratch::label_hashes` (from a DNS question in wire format, or a
//! TLS server name as text), then every suffix looked up in the active
//! rule set; the deepest rule with something to say decides.
//!
//! Short names go through plain loops, which the verifier walks once per
//! iteration: cheap to verify and fast to run for the few labels nearly
//! every name has. Longer ones continue in `bpf_loop` callbacks, which the
//! verifier checks once, at the cost of a call and memory round trips per
//! label. The loops' state lives in map memory ([`maps::Walk`]): the
//! verifier does not track it, so it checks a callback once rather than
//! once per (position, label count) pair.

use core::ffi::c_void;

use aya_ebpf::helpers::bpf_loop;
use maps::{
    Counter, Scratch, Settings, Walk,
    layout::rule::{self, Match, Verdict},
    layout::settings::mask_has_depth,
    parse::name::{self, LabelStep, NameError, WireName},
};

use crate::{
    tables::{self, FILTER, RULESETS, RuleSet, scratch},
    verdict::count,
};

/// Labels the plain loops handle before handing over to `bpf_loop`:
/// nearly every name queried has at most this many.
const FAST_LABELS: usize = 6;

const RUNNING: u64 = 0;
const DONE: u64 = 1;
const FAILED: u64 = 2;

/// The outcome counter of a DNS question whose name does not parse.
#[inline(always)]
pub fn dns_counter(e: NameError) -> Counter {
    match e {
        NameError::Truncated => Counter::DnsTruncated,
        NameError::Compressed => Counter::DnsCompressed,
        // Only dotted text names (TLS) have empty or overlong labels; a
        // wire name cannot.
        NameError::BadLabelType | NameError::EmptyLabel | NameError::LabelTooLong => Counter::DnsBadLabel,
        NameError::TooLong => Counter::DnsNameTooLong,
    }
}

/// Parses the wire-format QNAME in the first `avail` bytes of
/// `scratch.question` and stores each label's hash: the first
/// [`FAST_LABELS`] labels in a plain loop, any further ones one per
/// `bpf_loop` iteration.
#[inline(always)]
pub fn parse_wire(scratch: &mut Scratch, avail: usize, seed: u64) -> Result<WireName, NameError> {
    let mut pos = 0;
    let mut labels = 0;
    for _ in 0..FAST_LABELS {
        match name::parse_label(&scratch.question, avail, pos, seed)? {
            LabelStep::Label { hash, next } => {
                scratch.label_hashes[labels & (name::LABEL_SLOTS - 1)] = hash;
                labels += 1;
                pos = next;
            }
            LabelStep::End { len } => {
                // The loop ends with a different, exactly known label count
                // per iteration: forgotten, what follows is checked once.
                let [len, labels] =
                    crate::verifier::forget(&raw mut scratch.spill, [len as u64, labels as u64]).map(|v| v as usize);
                return Ok(WireName { len: len & 0x1ff, labels: labels & 0xff });
            }
        }
    }
    parse_rest(scratch, avail, pos, labels, seed, Form::Wire)
}

/// Parses the dotted text name (a TLS server name) in the first `len`
/// bytes of `scratch.flow.tls.name` and stores each label's hash, two
/// labels per `bpf_loop` iteration: a name is judged once per flow, and a
/// plain loop here would cost the verifier more than the whole DNS path.
#[inline(always)]
pub fn parse_text(scratch: &mut Scratch, len: usize, seed: u64) -> Result<WireName, NameError> {
    parse_rest(scratch, len, 0, 0, seed, Form::Text)
}

/// Which buffer and format [`parse_rest`] reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    /// `scratch.question`, wire format.
    Wire,
    /// `scratch.flow.tls.name`, dotted text.
    Text,
}

/// The labels from `pos` on, one per `bpf_loop` iteration.
#[inline(always)]
fn parse_rest(
    scratch: &mut Scratch,
    avail: usize,
    pos: usize,
    labels: usize,
    seed: u64,
    form: Form,
) -> Result<WireName, NameError> {
    let walk = &raw mut scratch.walk;
    // Volatile: the callbacks change `walk` through their own lookup of the
    // scratch map, behind the back of this `&mut`.
    // SAFETY: a valid pointer into this CPU's scratch slot.
    unsafe { put_walk(walk, Walk { pos: pos as u64, labels: labels as u64, status: RUNNING, ..Walk::default() }) };
    let mut args = ParseArgs { avail: avail as u64, seed };
    let step = match form {
        Form::Wire => parse_step as *mut c_void,
        Form::Text => parse_text_step as *mut c_void,
    };
    // Up to 127 labels and the root in all (text: two labels a call).
    // SAFETY: a static callback and a pointer to our own stack, as bpf_loop requires.
    unsafe { bpf_loop((name::LABEL_SLOTS - FAST_LABELS) as u32, step, (&raw mut args).cast(), 0) };
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

/// Constants of the label loop, on the caller's stack; `bpf_loop` hands the
/// callback a pointer to it.
#[repr(C)]
struct ParseArgs {
    avail: u64,
    seed: u64,
}

/// One label of a wire-format QNAME per call.
extern "C" fn parse_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the pointer parse_rest gave it.
    let args = unsafe { &*ctx.cast::<ParseArgs>() };
    let Some(scratch) = scratch() else { return 1 };
    let w = scratch.walk;
    let step = name::parse_label(&scratch.question, args.avail as usize, w.pos as usize, args.seed);
    i64::from(!record_label(scratch, step, w.labels))
}

/// Two labels of a dotted text name per call: every TLS name goes through
/// this loop, and a call costs about as much as the label it parses.
extern "C" fn parse_text_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the pointer parse_rest gave it.
    let args = unsafe { &*ctx.cast::<ParseArgs>() };
    let Some(scratch) = scratch() else { return 1 };
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
    let (word, bit) = maps::layout::filter::position(key, filter_mask);
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
        count(Counter::KeyCollision);
        return;
    }
    match rule::judge(&rule.in_generation(generation), depth as usize, labels as usize) {
        Some(Verdict::Allow) => *best = Best { kind: 1, action: 0, depth, key },
        Some(Verdict::Block(action)) => *best = Best { kind: 2, action: action as u64, depth, key },
        None => {}
    }
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
        if depth <= max_depth && mask_has_depth(&mask, depth) {
            consider(rules, filter_mask, key, depth, labels, generation, &mut best);
        }
        depth += 1;
    }
    let walk = &raw mut scratch.walk;
    // Volatile for the same reason as in parse_rest.
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
    // depth the loop ended at and which rule kind it saw, so it checks
    // what follows once rather than once per combination.
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
    let Some(scratch) = scratch() else { return 1 };
    let slot = (args.labels - depth) as usize & (name::LABEL_SLOTS - 1);
    let key = name::child_key(scratch.walk.key, scratch.label_hashes[slot]);
    scratch.walk.key = key;
    if depth > args.max_depth || !mask_has_depth(&args.mask, depth) {
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
    // `hits` is the upper half of the 8-byte, 8-aligned value
    // (little-endian), so adding 1 << 32 to the whole value increments
    // `hits` and leaves the other fields alone; the carry out of bit 63 is
    // discarded, which is the documented wrap.
    // SAFETY: a value pointer from this run's lookup; hash-map values are
    // 8-byte aligned and stay allocated for the whole run.
    #[expect(clippy::cast_ptr_alignment, reason = "hash-map values are 8-byte aligned (see above)")]
    tables::atomic_add(p.cast::<u64>(), 1 << 32);
}
