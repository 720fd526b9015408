//! `BPF_PROG_TEST_RUN` tables for the TLS path: real `ClientHello`s written
//! by rustls ([`namewall_tests::tls`]) carried by the TCP segments of flows,
//! cut at every byte, into many segments and many TLS records,
//! retransmitted, reordered and interleaved, through the loaded XDP program
//! and its per-flow state.
//!
//! A row is a script: the frames of one flow (or of several, interleaved),
//! each with what the program must do with it: XDP action, outcome counter,
//! extra counters, the rule and server name the trace shows, and for a
//! reset the RST it wrote (checksums, addresses, sequence numbers).
//! Expectations follow the design:
//! - the segment holding the byte that decides a `ClientHello` decides the
//!   flow: the server name's last byte, or the `ClientHello`'s last byte
//!   when it has no name or when `ech_block` reads on to learn about ECH;
//!   every segment before it is `tls_pending` and passes;
//! - a blocked flow's later packets are dropped (`tls_blocked_flow`); a
//!   passed flow is forgotten, so its later segments are untracked traffic;
//! - a segment past the next expected byte of a tracked flow is dropped
//!   (`tls_out_of_order`) when it may hold `ClientHello` bytes, and passes
//!   (`tls_beyond_hello`, its start noted) when it starts beyond where the
//!   `ClientHello` can end; a segment that then reaches the bytes passed is
//!   not judged (`tls_rest_passed`); one wholly seen before passes
//!   (`tls_retransmission`); one partly seen has only its new bytes
//!   parsed; a RST or FIN ends tracking only at the next expected byte.
//!
//! What the tables cannot state in advance (what a passed flow's later
//! segments get, every frame of the fuzz loop) comes from [`Reference`]:
//! the design's per-flow logic over the shared parser, run on the host.
//! Minimal rows for bugs found this way are at the end, as regressions.
//!
//! One program is loaded per rule set and policy and reused for its rows;
//! every flow of a harness has its own source port. A table runs every
//! frame, checks the counter invariant on each (exactly one outcome counter
//! moves, by one, and it is the traced outcome) and that decided flows leave
//! no state behind but the blocked ones, then fails once, naming each
//! failing frame by its row and position.

use std::{
    collections::{BTreeMap, HashSet},
    net::IpAddr,
};

use etherparse::TcpHeader;
use filter_user::{
    dataplane::{LoadOptions, TlsPolicy, action_name},
    policy::rules::RuleSet,
};
use maps::{
    Action, Counter, Protocol,
    counters::CounterKind,
    layout::rule::{self, Verdict as RuleVerdict},
    parse::name::{self, LABEL_SLOTS},
    parse::tls::{self as parser, MAX_SNI, SEGMENT_STEPS, Step as Parsed, TLS_BUF, TlsError, TlsState},
};
use namewall_tests::{
    harness::{Harness, Observed},
    packet::{self, Spec, V6Ext, Vlan},
    tls::{self, Flow, HelloKind, HelloLayout, flags},
};
use rand::{Rng as _, SeedableRng as _, rngs::StdRng, seq::IndexedRandom as _};

const XDP_ABORTED: u32 = 0;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

/// The block list of most tables: a plain suffix rule, per-rule TLS
/// actions, DNS-only actions (which mean the TLS default), an IDN rule.
const BLOCK: &str = "\
blocked.example
||drop.example^$action=drop
||reset.example^$action=reset
||nx.example^$action=nxdomain
||refused.example^$dnsrewrite=REFUSED
bücher.example
";
/// An exception below a blocked suffix.
const ALLOW: &str = "ok.blocked.example\n";

/// What the program must do with one frame.
#[derive(Clone, Debug)]
struct Want {
    action: u32,
    outcome: Counter,
    /// Extra counters that must move by one; all others must stay.
    extras: Vec<Counter>,
    /// The rule the trace names (the deciding rule, or the allow rule that
    /// matched a name the program reads on past).
    rule: Option<String>,
    /// The server name the program judged in this frame, as sent.
    sni: Option<Vec<u8>>,
    /// For `XDP_TX`: the flow the RST goes back on, its sequence and acknowledgment numbers.
    rst: Option<(Flow, u32, u32)>,
}

impl Want {
    fn pass(outcome: Counter) -> Self {
        Self { action: XDP_PASS, outcome, extras: Vec::new(), rule: None, sni: None, rst: None }
    }

    fn drop(outcome: Counter) -> Self {
        Self { action: XDP_DROP, ..Self::pass(outcome) }
    }

    /// A later packet of a blocked flow.
    fn blocked_flow() -> Self {
        Self::drop(Counter::TlsBlockedFlow)
    }

    /// A RST toward `flow`'s client: its sequence number is what the client
    /// acknowledged (the server's next byte), its acknowledgment the stream
    /// up to `ack_offset` (the end of the deciding segment).
    fn reset(flow: &Flow, ack_offset: usize) -> Self {
        let rst = Some((flow.clone(), flow.server_seq(), flow.seq_at(ack_offset)));
        Self { action: XDP_TX, rst, ..Self::pass(Counter::TlsReset) }
    }

    #[must_use]
    fn extra(mut self, c: Counter) -> Self {
        self.extras.push(c);
        self
    }

    #[must_use]
    fn extras(mut self, cs: &[Counter]) -> Self {
        self.extras.extend_from_slice(cs);
        self
    }

    #[must_use]
    fn rule(mut self, rule: Option<&str>) -> Self {
        self.rule = rule.map(str::to_owned);
        self
    }

    #[must_use]
    fn sni(mut self, name: Option<&[u8]>) -> Self {
        self.sni = name.map(<[u8]>::to_vec);
        self
    }
}

/// One frame of a script.
struct Frame {
    what: String,
    bytes: Vec<u8>,
    want: Want,
}

/// A row: frames sent in order, each with what it must get.
struct Script {
    desc: String,
    frames: Vec<Frame>,
    /// Flows the row leaves tracked on purpose (a SYN without data, say).
    open: usize,
    /// Flows left tracked by earlier rows that this row finishes (their SYN
    /// entry goes when their first data comes).
    closes: usize,
    /// The row fills the `NEW_FLOWS` LRU, which evicts in batches of its own
    /// choosing: the table's size after it is not checked.
    lru_full: bool,
}

impl Script {
    fn new(desc: impl Into<String>) -> Self {
        Self { desc: desc.into(), frames: Vec::new(), open: 0, closes: 0, lru_full: false }
    }

    #[must_use]
    fn leaves_open(mut self, flows: usize) -> Self {
        self.open = flows;
        self
    }

    #[must_use]
    fn closes(mut self, flows: usize) -> Self {
        self.closes = flows;
        self
    }

    #[must_use]
    fn fills_the_lru(mut self) -> Self {
        self.lru_full = true;
        self
    }

    fn push(&mut self, what: impl Into<String>, bytes: Vec<u8>, want: Want) {
        self.frames.push(Frame { what: what.into(), bytes, want });
    }

    /// `stream[a..b]` as a data segment of `flow`.
    fn send(&mut self, flow: &Flow, stream: &[u8], a: usize, b: usize, want: Want) {
        self.push(format!("{}[{a}..{b})", port_tag(flow)), flow.segment(a, &stream[a..b]), want);
    }

    fn syn(&mut self, flow: &Flow) {
        self.push(format!("{}SYN", port_tag(flow)), flow.syn(), Want::pass(Counter::TcpSyn));
    }
}

fn port_tag(flow: &Flow) -> String {
    format!("{}:{} ", flow.client_ip(), flow.client_port())
}

/// Flows in either table: between SYN and first data (`NEW_FLOWS`), and in
/// the middle of a ClientHello or blocked (`FLOWS`).
fn tracked(h: &Harness) -> usize {
    h.filter.flow_count().expect("flow count") + h.filter.new_flow_count().expect("new flow count")
}

/// Runs every script, frame by frame, and fails once, listing each failing
/// frame by its row. Then checks the flow table: when no row filled it,
/// it must hold one more flow per block, and per flow a row leaves open on
/// purpose, and nothing else (a decided or finished flow leaves no state).
fn run_table(h: &Harness, table: &str, scripts: &[Script]) {
    let mut seen = HashSet::new();
    for s in scripts {
        assert!(seen.insert(s.desc.as_str()), "{table}: two rows are described {:?}", s.desc);
    }
    let before = tracked(h);
    let mut failures = Vec::new();
    let mut frames = 0;
    for s in scripts {
        let debug_before = tracked(h);
        for (i, f) in s.frames.iter().enumerate() {
            frames += 1;
            let o = h.run(&f.bytes);
            if let Err(e) = check(h, f, &o) {
                failures.push(format!("{}: #{} {}: {e}", s.desc, i + 1, f.what));
                if std::env::var_os("NW_DEBUG").is_some() {
                    for (j, g) in s.frames.iter().enumerate().take(i + 1) {
                        eprintln!("DEBUG {} #{} {} want {}", s.desc, j + 1, g.what, g.want.outcome.name());
                    }
                }
            }
        }
        if std::env::var_os("NW_DEBUG").is_some() {
            let b = s.frames.iter().filter(|f| matches!(f.want.outcome, Counter::TlsReset | Counter::TlsDrop)).count()
                + s.open;
            let after = tracked(h);
            if after != debug_before + b {
                eprintln!("DEBUG LEAK {}: {} -> {after}, want +{b}", s.desc, debug_before);
                for (j, g) in s.frames.iter().enumerate() {
                    eprintln!("DEBUG   #{} {} want {}", j + 1, g.what, g.want.outcome.name());
                }
            }
        }
    }
    let wants = || scripts.iter().flat_map(|s| &s.frames).map(|f| &f.want);
    let count = |n: usize| i64::try_from(n).expect("a count");
    let blocks = count(wants().filter(|w| matches!(w.outcome, Counter::TlsReset | Counter::TlsDrop)).count())
        + count(scripts.iter().map(|s| s.open).sum::<usize>())
        - count(scripts.iter().map(|s| s.closes).sum::<usize>());
    // A full table, or one the kernel reclaimed expired entries from, holds
    // what no row accounts for.
    let full = |w: &Want| w.extras.contains(&Counter::FlowTableFull) || w.extras.contains(&Counter::FlowReclaimed);
    if !wants().any(full) && !scripts.iter().any(|s| s.lru_full) {
        let after = tracked(h);
        if count(after) != count(before) + blocks {
            failures.push(format!(
                "the flow table went from {before} to {after} flows over the table, want {blocks} more (blocks and open flows)"
            ));
        }
    }
    let shown: Vec<&str> = failures.iter().take(40).map(String::as_str).collect();
    assert!(
        failures.is_empty(),
        "{table}: {} failures in {frames} frames of {} rows:\n  {}{}",
        failures.len(),
        scripts.len(),
        shown.join("\n  "),
        if failures.len() > shown.len() { "\n  ..." } else { "" }
    );
    eprintln!("{table}: {} rows, {frames} frames", scripts.len());
}

fn check(h: &Harness, f: &Frame, o: &Observed) -> Result<(), String> {
    let want = &f.want;
    let mut errs = Vec::new();
    if o.action == XDP_ABORTED {
        errs.push("XDP_ABORTED, which is reserved for bugs".to_owned());
    }
    if let Err(e) = o.one_outcome() {
        errs.push(e);
    }
    if o.action != want.action {
        errs.push(format!("action {}, want {}", o.action_name(), action_name(want.action)));
    }
    if o.trace.xdp_action != o.action {
        errs.push(format!("traced action {} but returned {}", o.trace.xdp_action, o.action));
    }
    if o.outcome != want.outcome {
        errs.push(format!("outcome {}, want {}", o.outcome.name(), want.outcome.name()));
    }
    for &c in Counter::ALL.iter().filter(|c| c.kind() == CounterKind::Extra) {
        let n = want.extras.iter().filter(|&&x| x == c).count() as u64;
        if o.delta[c as usize] != n {
            errs.push(format!("extra counter {} moved by {}, want {n}", c.name(), o.delta[c as usize]));
        }
    }
    let rule = h.rule_name(o);
    if rule != want.rule {
        errs.push(format!("traced rule {rule:?}, want {:?}", want.rule));
    }
    if let Err(e) = traced_sni(h, want, o) {
        errs.push(e);
    }
    match want.action {
        // Nothing is written on a pass or a drop.
        XDP_PASS | XDP_DROP if o.output != f.bytes => errs.push("the frame was changed".to_owned()),
        XDP_TX => match &want.rst {
            Some((flow, seq, ack)) => {
                if let Err(e) = check_rst(&o.output, flow, *seq, *ack) {
                    errs.push(format!("bad RST: {e}"));
                }
            }
            None => errs.push("the row wants XDP_TX but says nothing about the RST".to_owned()),
        },
        _ => {}
    }
    if errs.is_empty() { Ok(()) } else { Err(errs.join("; ")) }
}

/// The trace shows the server name judged in this frame (as sent, and
/// hashed to the key user space computes for it), or no name.
fn traced_sni(h: &Harness, want: &Want, o: &Observed) -> Result<(), String> {
    let t = &o.trace;
    match &want.sni {
        None if t.name_kind == Protocol::Other as u8 => Ok(()),
        None => Err(format!("traced a name (kind {}) where none was judged", t.name_kind)),
        Some(name) => {
            let got = t.sni.get(..usize::from(t.sni_len)).unwrap_or(&[]);
            if t.name_kind != Protocol::Tls as u8 || got != name.as_slice() {
                return Err(format!(
                    "traced name kind {} {:?}, want the server name {:?}",
                    t.name_kind,
                    String::from_utf8_lossy(got),
                    String::from_utf8_lossy(name)
                ));
            }
            let (key, _) = name::text_name_key(h.rules.seed(), name).map_err(|e| format!("{e:?}"))?;
            if t.name_key == key {
                Ok(())
            } else {
                Err(format!("kernel's name key {:#018x}, user space's {key:#018x}", t.name_key))
            }
        }
    }
}

/// A RST toward `flow`'s client as a receiving stack checks it (checksums,
/// lengths), addressed back to it (MACs, VLANs, addresses, ports), with
/// exactly RST|ACK, the numbers given, no options, payload or IP extras.
fn check_rst(frame: &[u8], flow: &Flow, seq: u32, ack: u32) -> Result<(), String> {
    let rst = tls::parse_rst(frame)?;
    flow.check_reply(&rst)?;
    let mut errs = Vec::new();
    if rst.flags != flags::RST | flags::ACK {
        errs.push(format!("flags {:#04x}, want RST|ACK", rst.flags));
    }
    if (rst.seq, rst.ack) != (seq, ack) {
        errs.push(format!("seq {} ack {}, want seq {seq} ack {ack}", rst.seq, rst.ack));
    }
    if (rst.tcp_header_len, rst.payload_len, rst.ip_ext_len, rst.trailing) != (20, 0, 0, 0) {
        errs.push(format!(
            "TCP header {} bytes, payload {}, IP options/extensions {}, trailing {}: want 20, 0, 0, 0",
            rst.tcp_header_len, rst.payload_len, rst.ip_ext_len, rst.trailing
        ));
    }
    if errs.is_empty() { Ok(()) } else { Err(errs.join("; ")) }
}

/// A `ClientHello` stream and where its parts sit in it.
#[derive(Clone, Debug)]
struct Hello {
    stream: Vec<u8>,
    /// In handshake-byte coordinates.
    layout: HelloLayout,
    /// Stream offset of each handshake byte.
    offsets: Vec<usize>,
    /// Stream offsets of the record headers.
    records: Vec<usize>,
}

impl Hello {
    fn new(stream: Vec<u8>) -> Self {
        let layout = tls::hello_layout(&stream);
        let offsets = tls::handshake_offsets(&stream);
        let records = tls::record_starts(&stream);
        Self { stream, layout, offsets, records }
    }

    /// A rustls `ClientHello` whose `server_name` is not its last extension.
    /// rustls shuffles extensions, so the name ends the `ClientHello` in
    /// about one in ten small ones; the tables cut and send "the rest after
    /// the name", which needs bytes there. [`Hello::name_last`] covers the
    /// other layout on purpose.
    fn rustls(name: Option<&str>, kind: HelloKind) -> Self {
        Self::new(tls::client_hello_where(name, kind, "the name last in all", |h| {
            let h = Self::new(h.to_vec());
            h.sni_last().is_none_or(|last| last < h.last())
        }))
    }

    /// The same `ClientHello` with `server_name` moved to the end: the
    /// name's last byte is the `ClientHello`'s last byte.
    fn name_last(&self) -> Self {
        Self::new(tls::with_extensions(&self.stream, |exts| {
            let at = exts.iter().position(|(t, _)| *t == tls::EXT_SERVER_NAME).expect("a server_name");
            let sni = exts.remove(at);
            exts.push(sni);
        }))
    }

    /// The same `ClientHello` in records of `sizes` (see [`tls::refragment`]).
    fn refragment(&self, sizes: &[usize]) -> Self {
        Self::new(tls::refragment(&self.stream, sizes))
    }

    /// The same `ClientHello` with another `host_name`, in one record.
    fn renamed(&self, name: &[u8]) -> Self {
        Self::new(tls::replace_server_name(&self.stream, name))
    }

    fn len(&self) -> usize {
        self.stream.len()
    }

    /// The `host_name` as sent.
    fn name(&self) -> Option<Vec<u8>> {
        self.layout.server_name().map(|r| r.map(|i| self.stream[self.offsets[i]]).collect())
    }

    /// Stream offsets of the name's first and last bytes.
    fn sni_first(&self) -> Option<usize> {
        self.layout.server_name().map(|r| self.offsets[r.start])
    }

    fn sni_last(&self) -> Option<usize> {
        self.layout.server_name().map(|r| self.offsets[r.end - 1])
    }

    /// Stream offset of the `ClientHello`'s last byte.
    fn last(&self) -> usize {
        self.offsets[self.layout.end - 1]
    }

    fn ech(&self) -> bool {
        self.layout.position(tls::EXT_ECH).is_some()
    }

    /// Whether the parser reads `encrypted_client_hello` before the name.
    fn ech_before_sni(&self) -> bool {
        match (self.layout.position(tls::EXT_ECH), self.layout.position(tls::EXT_SERVER_NAME)) {
            (Some(e), Some(s)) => e < s,
            (e, _) => e.is_some(),
        }
    }
}

/// `hello` with its `encrypted_client_hello` extension moved first.
/// rustls writes it last; Chromium permutes its extensions, so it may come
/// before the name, and then the program knows about it at the name.
fn ech_moved_first(hello: &Hello) -> Hello {
    Hello::new(tls::with_extensions(&hello.stream, |exts| {
        let i = exts.iter().position(|(t, _)| *t == tls::EXT_ECH).expect("an ECH extension");
        let ech = exts.remove(i);
        exts.insert(0, ech);
    }))
}

/// What the rules say about a name.
#[derive(Clone, Debug)]
enum Judgement {
    /// Blocked by `rule`; `drop`: the action is drop (the rule's, or the
    /// TLS default when the rule has no TLS action), else reset.
    Block {
        rule: String,
        drop: bool,
    },
    Allow(String),
    NoMatch,
    /// Not a DNS name the program can judge (an empty label, a label over
    /// 63 bytes, more than 255 bytes on the wire): `tls_malformed`.
    BadName,
}

fn blocked(rule: &str) -> Judgement {
    Judgement::Block { rule: rule.to_owned(), drop: false }
}

fn allowed(rule: &str) -> Judgement {
    Judgement::Allow(rule.to_owned())
}

/// What the packet that decides a flow gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Reset,
    Drop,
    Pass(Counter),
}

/// A name judged in some packet: what that packet's trace shows.
#[derive(Clone, Debug)]
struct Judged {
    /// Stream offset of the name's last byte.
    at: usize,
    rule: Option<String>,
    sni: Vec<u8>,
}

/// How the design decides a `ClientHello`.
#[derive(Clone, Debug)]
struct Fate {
    /// Stream offset of the byte whose arrival decides the flow.
    at: usize,
    verdict: Verdict,
    /// Extra counters of the deciding packet.
    extras: Vec<Counter>,
    /// The judged name, if one was, and where.
    name: Option<Judged>,
}

impl Fate {
    fn blocks(&self) -> bool {
        matches!(self.verdict, Verdict::Reset | Verdict::Drop)
    }
}

/// The decision of the design for `hello`, whose name the rules judge
/// `judgement`, under `policy`:
/// - a name is judged when its last byte arrives: blocked, the flow is reset
///   or dropped there; allowed or unlisted, it passes there and is forgotten,
///   unless `ech_block` must read on to the `ClientHello`'s end to learn
///   whether it carries `encrypted_client_hello` (0xfe0d; already known when
///   that extension came before the name);
/// - no name: decided by the `ClientHello`'s last byte (`tls_no_sni`),
///   passed unless `no_sni_block`;
/// - `tls_ech` counts a passed or ECH-blocked `ClientHello` whose ECH
///   extension the parser read before it decided (a name block is decided
///   by the name alone);
/// - any number of records, of any version, is read (servers read them).
fn fate(hello: &Hello, judgement: &Judgement, policy: TlsPolicy) -> Fate {
    let policy_block = if policy.action == Action::Drop { Verdict::Drop } else { Verdict::Reset };
    let ech: Vec<Counter> = if hello.ech() { vec![Counter::TlsEch] } else { Vec::new() };
    let name = |at: usize, rule: Option<&String>| {
        hello.name().map(|sni| Judged { at, rule: rule.cloned(), sni }).expect("a named ClientHello")
    };
    match (hello.sni_last(), judgement) {
        (None, _) => Fate {
            at: hello.last(),
            verdict: if policy.no_sni_block { policy_block } else { Verdict::Pass(Counter::TlsPassNoSni) },
            extras: [&[Counter::TlsNoSni][..], &ech].concat(),
            name: None,
        },
        (Some(at), Judgement::BadName) => {
            Fate { at, verdict: Verdict::Pass(Counter::TlsMalformed), extras: Vec::new(), name: None }
        }
        (Some(at), Judgement::Block { rule, drop }) => Fate {
            at,
            verdict: if *drop { Verdict::Drop } else { Verdict::Reset },
            extras: Vec::new(),
            name: Some(name(at, Some(rule))),
        },
        (Some(at), Judgement::Allow(_) | Judgement::NoMatch) => {
            let (outcome, rule) = match judgement {
                Judgement::Allow(r) => (Counter::TlsPassAllowed, Some(r)),
                _ => (Counter::TlsPassNoMatch, None),
            };
            let name = Some(name(at, rule));
            if !policy.ech_block {
                let extras = if hello.ech_before_sni() { ech } else { Vec::new() };
                Fate { at, verdict: Verdict::Pass(outcome), extras, name }
            } else if hello.ech_before_sni() {
                Fate { at, verdict: policy_block, extras: ech, name }
            } else {
                let verdict = if hello.ech() { policy_block } else { Verdict::Pass(outcome) };
                Fate { at: hello.last(), verdict, extras: ech, name }
            }
        }
    }
}

/// `fate` for `hello` sent in segments cut at `cuts`: the program parses
/// the first [`TLS_BUF`] bytes of a segment, so a `ClientHello` not decided
/// by them is refused there (`tls_malformed`, passed: fail-open). Only a
/// bound of the program's can cut the walk short, and it never passes a
/// flow it did not judge.
fn within_buffer(len: usize, cuts: &[usize], fate: &Fate) -> Fate {
    for (a, b) in bounds(len, cuts) {
        if a > fate.at {
            break;
        }
        if b - a > TLS_BUF && fate.at >= a + TLS_BUF {
            return Fate {
                at: a,
                verdict: Verdict::Pass(Counter::TlsMalformed),
                extras: Vec::new(),
                name: fate.name.clone().filter(|n| n.at < a),
            };
        }
    }
    fate.clone()
}

/// `fate` for `stream` sent in segments cut at `cuts`, under the
/// program's bound on parse work: a segment may take at most
/// [`SEGMENT_STEPS`] parser steps up to the flow's verdict (reading on past
/// an allowed name for ECH included). The first segment, up to the
/// deciding one, that needs more is not judged (`tls_segment_bound`,
/// passed: fail-open), and the flow is forgotten.
fn within_steps(stream: &[u8], cuts: &[usize], fate: &Fate) -> Fate {
    // The policy reads on past the name to the ClientHello's end.
    let reads_on = fate.name.as_ref().is_some_and(|n| n.at != fate.at);
    let mut st = TlsState::new();
    let mut buf = Box::new([0u8; TLS_BUF]);
    for (a, b) in bounds(stream.len(), cuts) {
        if a > fate.at {
            break;
        }
        let copy = (b - a).min(TLS_BUF);
        buf[..copy].copy_from_slice(&stream[a..a + copy]);
        let mut pos = 0;
        let mut steps = 0;
        loop {
            if steps == SEGMENT_STEPS {
                return Fate {
                    at: a,
                    verdict: Verdict::Pass(Counter::TlsSegmentBound),
                    extras: Vec::new(),
                    name: fate.name.clone().filter(|n| n.at < a),
                };
            }
            steps += 1;
            match parser::step(&mut st, &buf, copy, &mut pos) {
                Parsed::Continue => {}
                Parsed::Sni if reads_on => {}
                Parsed::NeedMore => break,
                _ => return fate.clone(),
            }
        }
    }
    fate.clone()
}

/// Segment bounds of a `len`-byte stream cut at `cuts`.
fn bounds(len: usize, cuts: &[usize]) -> Vec<(usize, usize)> {
    let mut b = vec![0];
    b.extend(cuts.iter().copied().filter(|&c| c > 0 && c < len));
    b.push(len);
    b.windows(2).map(|w| (w[0], w[1])).collect()
}

/// Sorted distinct cuts inside a `len`-byte stream, `n` at most.
fn random_cuts(rng: &mut StdRng, len: usize, n: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = (0..n).map(|_| rng.random_range(1..len)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// Hands out flows that never share a 4-tuple within one harness (each
/// gets the next source port) with seeded random initial sequence numbers,
/// so that streams cross the 2^32 wrap now and then.
struct Flows {
    next_port: u16,
    rng: StdRng,
}

impl Flows {
    fn new(seed: u64) -> Self {
        Self { next_port: 1024, rng: StdRng::seed_from_u64(seed) }
    }

    fn on(&mut self, spec: &Spec) -> Flow {
        let port = self.next_port;
        self.next_port = port.checked_add(1).expect("fewer than 64512 flows per harness");
        Flow::new(spec.clone()).sport(port).isns(self.rng.random(), self.rng.random())
    }
}

/// A loaded program, its TLS policy and its flows.
struct Rig {
    h: Harness,
    policy: TlsPolicy,
    flows: Flows,
}

impl Rig {
    fn new(policy: TlsPolicy) -> Self {
        Self::with(BLOCK, ALLOW, LoadOptions::default(), false, policy)
    }

    fn with(block: &str, allow: &str, opts: LoadOptions, fail_closed: bool, policy: TlsPolicy) -> Self {
        let h = Harness::with_options(block, allow, opts, Action::Nxdomain, fail_closed, policy);
        Self { h, policy, flows: Flows::new(0x7e57) }
    }

    fn flow(&mut self, spec: &Spec) -> Flow {
        self.flows.on(spec)
    }

    fn v4(&mut self) -> Flow {
        self.flow(&tcp4())
    }

    fn v6(&mut self) -> Flow {
        self.flow(&tcp6())
    }

    fn fate(&self, hello: &Hello, judgement: &Judgement) -> Fate {
        fate(hello, judgement, self.policy)
    }

    fn reference(&self) -> Reference<'_> {
        Reference::new(&self.h.rules, self.policy.action == Action::Drop)
    }

    /// `hello` sent on `flow` after its SYN, cut at `cuts`, then a FIN:
    /// segments before the deciding byte are pending, the segment holding
    /// it gets `fate`'s verdict, later ones the blocked flow's drop or,
    /// when the flow passed, what untracked traffic gets ([`Reference`]).
    fn delivery(&self, desc: impl Into<String>, flow: &Flow, hello: &Hello, cuts: &[usize], fate: &Fate) -> Script {
        let fate = &within_steps(&hello.stream, cuts, &within_buffer(hello.len(), cuts, fate));
        let mut s = Script::new(desc);
        s.syn(flow);
        let mut after: Option<Reference<'_>> = None;
        let mut decided = false;
        for (a, b) in bounds(hello.len(), cuts) {
            let payload = &hello.stream[a..b];
            let want = if decided {
                match after.as_mut() {
                    None => Want::blocked_flow(),
                    Some(r) => r.data(flow, a, payload),
                }
            } else {
                let mut w = if fate.at < b {
                    decided = true;
                    if !fate.blocks() {
                        after = Some(self.reference());
                    }
                    match fate.verdict {
                        Verdict::Reset => Want::reset(flow, b),
                        Verdict::Drop => Want::drop(Counter::TlsDrop),
                        Verdict::Pass(c) => Want::pass(c),
                    }
                    .extras(&fate.extras)
                } else {
                    Want::pass(Counter::TlsPending)
                };
                if let Some(n) = fate.name.as_ref().filter(|n| (a..b).contains(&n.at)) {
                    w = w.rule(n.rule.as_deref()).sni(Some(&n.sni));
                }
                w
            };
            s.send(flow, &hello.stream, a, b, want);
        }
        let fin = match (decided, after.as_mut()) {
            (true, None) => Want::blocked_flow(),
            (_, Some(r)) => r.empty(true, hello.len()),
            (false, None) => Want::pass(Counter::TcpNoPayload),
        };
        s.push(format!("{}FIN", port_tag(flow)), flow.fin_at(hello.len()), fin);
        let open = after.map_or(0, |r| r.open());
        s.leaves_open(open)
    }

    fn run(&self, table: &str, scripts: &[Script]) {
        run_table(&self.h, table, scripts);
    }
}

fn tcp4() -> Spec {
    Spec::udp4().tcp().dport(443)
}

fn tcp6() -> Spec {
    Spec::udp6().tcp().dport(443)
}

/// Frame layouts a flow can have: VLAN tags, IPv4 options, IPv6 extension
/// headers (not fragments: a segment in fragments is not judged).
fn layouts() -> Vec<(&'static str, Spec)> {
    // 39 NOPs and an end-of-options: the longest IPv4 header (60 bytes).
    let mut max_options = vec![1u8; 39];
    max_options.push(0);
    vec![
        ("IPv4", tcp4()),
        ("802.1Q/IPv4", tcp4().vlan(Vlan::Single(100))),
        ("QinQ/IPv4", tcp4().vlan(Vlan::Double(200, 300))),
        ("IPv4+router-alert", tcp4().v4_options(&[0x94, 4, 0, 0])),
        ("802.1Q/IPv4+40B-options", tcp4().vlan(Vlan::Single(7)).v4_options(&max_options)),
        ("IPv6", tcp6()),
        ("802.1Q/IPv6", tcp6().vlan(Vlan::Single(100))),
        ("QinQ/IPv6", tcp6().vlan(Vlan::Double(200, 300))),
        ("IPv6+hop-by-hop", tcp6().v6_ext(V6Ext::HopByHop)),
        ("IPv6+routing", tcp6().v6_ext(V6Ext::Routing)),
        ("IPv6+dest-opts", tcp6().v6_ext(V6Ext::DestOpts)),
        ("QinQ/IPv6+hbh+routing+dest-opts", tcp6().vlan(Vlan::Double(8, 9)).v6_ext(V6Ext::All)),
    ]
}

fn layout(name: &str) -> Spec {
    layouts().into_iter().find(|(n, _)| *n == name).map(|(_, s)| s).expect("a known layout")
}

/// Whether the program parses an untracked segment starting with
/// `payload`: it starts like a TLS handshake record carrying a
/// `ClientHello` (16 vv vv xx xx 01, any record version), or is shorter
/// than that and starts with 0x16.
fn starts_like_hello(payload: &[u8]) -> bool {
    match payload {
        [0x16, _, _, _, _, 0x01, ..] => true,
        [0x16, rest @ ..] => rest.len() < 5,
        _ => false,
    }
}

/// The design's per-flow logic for one flow, as a reference for what the
/// tables cannot state in advance (a passed flow's later segments are
/// untracked traffic, which the program parses again when one starts like
/// a `ClientHello`) and for the fuzz loop: the shared parser
/// (`maps::parse::tls::step`) and the rule decision run on the host, segment by
/// segment, as the design says the kernel runs them. The default policy
/// only (no ECH or no-SNI blocking), fail-open, stream offsets from 0.
struct Reference<'a> {
    rules: &'a RuleSet,
    /// The TLS default action is drop.
    drop: bool,
    state: Tracking,
}

enum Tracking {
    /// No state: only a segment that starts like a `ClientHello` is parsed.
    Untracked,
    /// SYN seen: the first data must start at stream offset 0.
    New,
    /// A `ClientHello` in progress; `next` is the next stream offset
    /// expected; `from_syn` when the flow was tracked from its SYN.
    Pending {
        st: Box<TlsState>,
        next: usize,
        from_syn: bool,
        /// The lowest stream offset passed past a gap beyond where the
        /// `ClientHello` can end (`tls_beyond_hello`).
        passed_at: Option<usize>,
    },
    Blocked,
}

impl<'a> Reference<'a> {
    fn new(rules: &'a RuleSet, drop: bool) -> Self {
        Self { rules, drop, state: Tracking::Untracked }
    }

    fn syn(&mut self) -> Want {
        self.state = Tracking::New;
        Want::pass(Counter::TcpSyn)
    }

    /// Whether the flow is in the table waiting for data (not blocked: a
    /// block is counted by its reset or drop).
    fn open(&self) -> usize {
        usize::from(matches!(self.state, Tracking::New | Tracking::Pending { .. }))
    }

    /// A segment without payload (an ACK, a FIN, a RST): it never ends
    /// tracking (the server may have discarded it; the entry ages out).
    fn empty(&mut self, _ends: bool, _at: usize) -> Want {
        match self.state {
            Tracking::Blocked => Want::blocked_flow(),
            _ => Want::pass(Counter::TcpNoPayload),
        }
    }

    /// A data segment at stream offset `off`.
    fn data(&mut self, flow: &Flow, off: usize, payload: &[u8]) -> Want {
        let end = off + payload.len();
        match std::mem::replace(&mut self.state, Tracking::Untracked) {
            Tracking::Blocked => {
                self.state = Tracking::Blocked;
                Want::blocked_flow()
            }
            Tracking::Untracked if !starts_like_hello(payload) => Want::pass(Counter::TcpOther),
            Tracking::Untracked => self.parse(flow, Box::new(TlsState::new()), end, payload, false, false),
            Tracking::New if off > 0 => {
                self.state = Tracking::New;
                Want::drop(Counter::TlsOutOfOrder)
            }
            tracked => {
                let (st, next, from_syn, passed_at) = match tracked {
                    Tracking::Pending { st, next, from_syn, passed_at } => (st, next, from_syn, passed_at),
                    _ => (Box::new(TlsState::new()), 0, true, None),
                };
                if off > next && off - next >= st.min_left() as usize {
                    // Past a gap, beyond where the ClientHello can end:
                    // passed, its start noted.
                    let passed_at = Some(passed_at.map_or(off, |p| p.min(off)));
                    self.state = Tracking::Pending { st, next, from_syn, passed_at };
                    return Want::pass(Counter::TlsBeyondHello);
                }
                if passed_at.is_some_and(|p| end > p) {
                    self.state = Tracking::Pending { st, next, from_syn, passed_at };
                    return Want::pass(Counter::TlsRestPassed);
                }
                if off > next {
                    self.state = Tracking::Pending { st, next, from_syn, passed_at };
                    return Want::drop(Counter::TlsOutOfOrder);
                }
                if end <= next {
                    self.state = Tracking::Pending { st, next, from_syn, passed_at };
                    return Want::pass(Counter::TlsRetransmission);
                }
                self.parse(flow, st, end, &payload[next - off..], true, from_syn)
            }
        }
    }

    /// Runs the parser over `bytes`, the new bytes of a segment ending at
    /// stream offset `end`, and acts on the outcome.
    fn parse(
        &mut self,
        flow: &Flow,
        mut st: Box<TlsState>,
        end: usize,
        bytes: &[u8],
        tracked: bool,
        from_syn: bool,
    ) -> Want {
        match run_parser(&mut st, bytes) {
            Parsed::NeedMore => {
                self.state = Tracking::Pending { st, next: end, from_syn, passed_at: None };
                Want::pass(Counter::TlsPending)
            }
            Parsed::NotClientHello if tracked => Want::pass(Counter::TlsNotClientHello),
            Parsed::NotClientHello => Want::pass(Counter::TcpOther),
            // A flow first seen mid-stream whose "ClientHello" does not
            // parse passes and is forgotten; past the parser's bounds, or on
            // a flow tracked from its SYN, it is not judged.
            Parsed::Malformed(e) if !from_syn && e != TlsError::TooLong => Want::pass(Counter::TcpOther),
            Parsed::Malformed(_) => Want::pass(Counter::TlsMalformed),
            Parsed::Continue => Want::pass(Counter::TlsSegmentBound),
            Parsed::End => {
                let w = Want::pass(Counter::TlsPassNoSni).extra(Counter::TlsNoSni);
                if st.ech() { w.extra(Counter::TlsEch) } else { w }
            }
            Parsed::Sni => {
                let sni = st.name().to_vec();
                let ech = if st.ech() { vec![Counter::TlsEch] } else { Vec::new() };
                match judge_name(self.rules, self.drop, &sni) {
                    Judgement::BadName => Want::pass(Counter::TlsMalformed),
                    Judgement::Block { rule, drop } => {
                        self.state = Tracking::Blocked;
                        let w = if drop { Want::drop(Counter::TlsDrop) } else { Want::reset(flow, end) };
                        w.rule(Some(&rule)).sni(Some(&sni))
                    }
                    Judgement::Allow(rule) => {
                        Want::pass(Counter::TlsPassAllowed).rule(Some(&rule)).sni(Some(&sni)).extras(&ech)
                    }
                    Judgement::NoMatch => Want::pass(Counter::TlsPassNoMatch).sni(Some(&sni)).extras(&ech),
                }
            }
        }
    }
}

/// The parser's steps over one segment's bytes until one says more than
/// "continue", as the program runs them: over the segment's first
/// [`TLS_BUF`] bytes (a `ClientHello` going on past them is `TooLong`), at
/// most [`SEGMENT_STEPS`] of them (a budget used up leaves `Continue`).
fn run_parser(st: &mut TlsState, bytes: &[u8]) -> Parsed {
    let copy = bytes.len().min(TLS_BUF);
    let mut buf = Box::new([0u8; TLS_BUF]);
    buf[..copy].copy_from_slice(&bytes[..copy]);
    let mut pos = 0;
    for _ in 0..SEGMENT_STEPS {
        match parser::step(st, &buf, copy, &mut pos) {
            Parsed::Continue => {}
            Parsed::NeedMore if copy < bytes.len() => return Parsed::Malformed(TlsError::TooLong),
            done => return done,
        }
    }
    Parsed::Continue
}

/// The rules' judgement of a server name, from the shared name parser and
/// rule decision (`maps::parse::name`, `maps::layout::rule`): the most specific rule
/// decides; a block's action is the rule's reset or drop, else the TLS
/// default (`drop`: drop, else reset).
fn judge_name(rules: &RuleSet, drop: bool, sni: &[u8]) -> Judgement {
    let seed = rules.seed();
    let mut buf = [0u8; MAX_SNI];
    let Some(dst) = buf.get_mut(..sni.len()) else { return Judgement::BadName };
    dst.copy_from_slice(sni);
    let mut hashes = [0u64; LABEL_SLOTS];
    let Ok(parsed) = name::parse_text_name(&buf, sni.len(), seed, &mut hashes) else {
        return Judgement::BadName;
    };
    let labels = parsed.labels;
    let mut best = None;
    for depth in 1..=labels {
        let key = name::suffix_key(seed, &hashes[..labels], depth);
        if let Some(r) = rules.get(key)
            && usize::from(r.rule.labels) == depth
            && let Some(v) = rule::judge(&r.rule, depth, labels)
        {
            best = Some((v, r.domain.to_string()));
        }
    }
    match best {
        None => Judgement::NoMatch,
        Some((RuleVerdict::Allow, rule)) => Judgement::Allow(rule),
        Some((RuleVerdict::Block(a), rule)) => {
            let drop = a == Action::Drop as u8 || (a != Action::Reset as u8 && drop);
            Judgement::Block { rule, drop }
        }
    }
}

/// The fixture helpers these tables lean on agree with plain searches and
/// with rustls's server: the layout finds the name where it is, handshake
/// offsets survive refragmentation, and a renamed `ClientHello` is one a
/// TLS server reads (so its lengths are right).
#[test]
fn fixture_helpers_agree() {
    for kind in [HelloKind::Small, HelloKind::PostQuantum, HelloKind::Ech] {
        let h = Hello::rustls(Some("www.layout.example"), kind);
        let at = tls::find(&h.stream, b"www.layout.example").expect("the name is in the stream");
        assert_eq!((h.sni_first(), h.sni_last()), (Some(at), Some(at + 17)), "{kind:?}");
        assert_eq!(h.last(), h.len() - 1);
        assert_eq!(h.ech(), kind != HelloKind::Small);
        let r = h.refragment(&[7; 400]);
        assert_eq!(r.name().as_deref(), Some(&b"www.layout.example"[..]));
        assert_eq!(r.records.len(), h.layout.end.div_ceil(7));
        assert_eq!(r.sni_last().map(|i| r.stream[i]), Some(b'e'));
        for name in ["renamed.example", "a.much.longer.name.than.the.one.before.example", "X.Y"] {
            let renamed = h.renamed(name.as_bytes());
            assert_eq!(tls::acceptor_sni(&renamed.stream), Ok(Some(name.to_lowercase())), "{kind:?} renamed {name}");
        }
        let none = Hello::rustls(None, kind);
        assert_eq!((none.name(), none.sni_last()), (None, None));
    }
}

/// Every two-segment cut of small and post-quantum `ClientHello`s, blocked,
/// allowed (an exception under a blocked suffix) and unlisted, over several
/// layouts: each flow is decided by the segment holding the name's last
/// byte, never later; allowed names never block.
#[test]
fn every_two_segment_cut() {
    let mut rig = Rig::new(TlsPolicy::default());
    let cases = [
        (HelloKind::Small, "www.blocked.example", blocked("blocked.example"), "IPv4", false),
        (HelloKind::Small, "www.ok.blocked.example", allowed("ok.blocked.example"), "IPv4", false),
        (HelloKind::Small, "blocked.example", blocked("blocked.example"), "QinQ/IPv6+hbh+routing+dest-opts", false),
        (HelloKind::Small, "www.example.org", Judgement::NoMatch, "802.1Q/IPv4+40B-options", false),
        (HelloKind::PostQuantum, "www.blocked.example", blocked("blocked.example"), "IPv6", false),
        (HelloKind::PostQuantum, "ok.blocked.example", allowed("ok.blocked.example"), "802.1Q/IPv4", false),
        // The name ends the ClientHello (server_name is its last extension).
        (HelloKind::Small, "www.blocked.example", blocked("blocked.example"), "IPv4", true),
        (HelloKind::Small, "www.ok.blocked.example", allowed("ok.blocked.example"), "IPv6", true),
    ];
    let mut scripts = Vec::new();
    for (kind, name, judgement, lname, last) in cases {
        let hello = Hello::rustls(Some(name), kind);
        let hello = if last { hello.name_last() } else { hello };
        assert_eq!(hello.sni_last() == Some(hello.last()), last, "{name}: name last");
        let fate = rig.fate(&hello, &judgement);
        // The layout walk and a plain search agree on where the name ends.
        let end = tls::find(&hello.stream, name.as_bytes()).map(|i| i + name.len() - 1);
        assert_eq!(Some(fate.at), end, "{name}: decided by the name's last byte");
        let spec = layout(lname);
        for cut in 1..hello.len() {
            let flow = rig.flow(&spec);
            let at_end = if last { " (name last)" } else { "" };
            let desc = format!("{kind:?} {name}{at_end} over {lname}, {} bytes cut at {cut}", hello.len());
            scripts.push(rig.delivery(desc, &flow, &hello, &[cut], &fate));
        }
    }
    rig.run("every two-segment cut", &scripts);
}

/// Three and more segments: every segment size from one byte to the whole
/// small `ClientHello`; one-byte segments for the first N bytes, then the
/// rest; seeded random multi-cuts over every layout and kind.
#[test]
fn many_segments() {
    let mut rig = Rig::new(TlsPolicy::default());
    let mut scripts = Vec::new();
    let small = [
        (Hello::rustls(Some("www.blocked.example"), HelloKind::Small), blocked("blocked.example")),
        (Hello::rustls(Some("x.ok.blocked.example"), HelloKind::Small), allowed("ok.blocked.example")),
    ];
    for (hello, judgement) in &small {
        let fate = rig.fate(hello, judgement);
        let name = String::from_utf8_lossy(&hello.name().expect("named")).into_owned();
        for size in 1..=hello.len() {
            let cuts: Vec<usize> = (1..hello.len()).filter(|c| c % size == 0).collect();
            let flow = rig.flow(&tcp4());
            scripts.push(rig.delivery(format!("{name}: {size}-byte segments"), &flow, hello, &cuts, &fate));
        }
    }
    let pq = (Hello::rustls(Some("www.blocked.example"), HelloKind::PostQuantum), blocked("blocked.example"));
    for (hello, judgement) in small.iter().chain([&pq]) {
        let fate = rig.fate(hello, judgement);
        let (first, last) = (hello.sni_first().expect("named"), hello.sni_last().expect("named"));
        let mut ns = vec![1, 2, 4, 5, 6, 9, 10, 11, first - 1, first, first + 1, last, last + 1, hello.len() - 1];
        ns.sort_unstable();
        ns.dedup();
        for n in ns {
            let cuts: Vec<usize> = (1..=n).collect();
            let flow = rig.flow(&tcp6());
            let desc = format!("{} bytes, the first {n} one at a time (name at {first}..={last})", hello.len());
            scripts.push(rig.delivery(desc, &flow, hello, &cuts, &fate));
        }
    }
    let hellos = [
        (HelloKind::Small, "www.blocked.example", blocked("blocked.example")),
        (HelloKind::PostQuantum, "a.b.blocked.example", blocked("blocked.example")),
        (HelloKind::Ech, "blocked.example", blocked("blocked.example")),
        (HelloKind::PostQuantum, "ok.blocked.example", allowed("ok.blocked.example")),
        (HelloKind::Ech, "www.example.org", Judgement::NoMatch),
        (HelloKind::NoSni, "blocked.example", Judgement::NoMatch),
    ]
    .map(|(kind, name, j)| (Hello::rustls(Some(name), kind), j, format!("{kind:?} {name}")));
    let mut rng = StdRng::seed_from_u64(3);
    let layouts = layouts();
    for i in 0..300 {
        let (hello, judgement, hname) = hellos.choose(&mut rng).expect("hellos");
        let (lname, spec) = layouts.choose(&mut rng).expect("layouts");
        let n = rng.random_range(2..=16);
        let cuts = random_cuts(&mut rng, hello.len(), n);
        let flow = rig.flow(spec);
        let fate = rig.fate(hello, judgement);
        scripts.push(rig.delivery(
            format!("random #{i}: {hname} over {lname}, cuts {cuts:?}"),
            &flow,
            hello,
            &cuts,
            &fate,
        ));
    }
    rig.run("many segments", &scripts);
}

/// Record sizes a `ClientHello` is re-cut into, named, for `hello`.
fn record_sizes(hello: &Hello, rng: &mut StdRng) -> Vec<(String, Vec<usize>)> {
    let len = hello.layout.end;
    let mut sizes = vec![
        ("1-byte records".to_owned(), vec![1; len]),
        ("7-byte records".to_owned(), vec![7; len / 7 + 1]),
        ("100-byte records".to_owned(), vec![100; len / 100 + 1]),
        ("five 1-byte records, then the rest".to_owned(), vec![1; 5]),
        ("63 1-byte records, then the rest: 64 records".to_owned(), vec![1; 63]),
        ("64 1-byte records, then the rest: 65 records".to_owned(), vec![1; 64]),
    ];
    if let Some(name) = hello.layout.server_name() {
        sizes.push(("a record boundary inside the name".to_owned(), vec![name.start + 3]));
        sizes.push(("a record boundary right before the name".to_owned(), vec![name.start]));
        sizes.push(("a record boundary right after the name".to_owned(), vec![name.end]));
        sizes.push((
            "63 records before the name's, one byte each".to_owned(),
            vec![1; 62].into_iter().chain([name.start - 62]).collect(),
        ));
        sizes.push((
            "64 records before the name's, one byte each".to_owned(),
            vec![1; 63].into_iter().chain([name.start - 63]).collect(),
        ));
    }
    let random: Vec<usize> = (0..20).map(|_| rng.random_range(1..80)).collect();
    sizes.push((format!("random sizes {random:?}"), random));
    sizes
}

/// TLS record-layer fragmentation (RFC 8446 §5.1: a handshake message may
/// span records, a record header may fall inside any field): re-cut into
/// records of 1, 7, 100 and random sizes, with record boundaries inside
/// and beside the name, sent in one segment, at every two-segment cut (so
/// record headers are split across segments too), in 5-byte segments and
/// at random cuts. Any number of records is read, as servers read them; a
/// segment longer than the program's buffer whose first 4096 bytes do not
/// decide is refused (`tls_malformed`, passed: fail-open).
#[test]
fn record_fragmentation() {
    let mut rig = Rig::new(TlsPolicy::default());
    let mut rng = StdRng::seed_from_u64(5);
    let bases = [
        ("small blocked", Hello::rustls(Some("www.blocked.example"), HelloKind::Small), blocked("blocked.example")),
        ("small allowed", Hello::rustls(Some("ok.blocked.example"), HelloKind::Small), allowed("ok.blocked.example")),
        (
            "post-quantum blocked",
            Hello::rustls(Some("blocked.example"), HelloKind::PostQuantum),
            blocked("blocked.example"),
        ),
        ("no SNI", Hello::rustls(None, HelloKind::Small), Judgement::NoMatch),
    ];
    let mut scripts = Vec::new();
    for (bname, base, judgement) in &bases {
        for (sname, sizes) in record_sizes(base, &mut rng) {
            let hello = base.refragment(&sizes);
            assert_eq!(tls::handshake_bytes(&hello.stream), tls::handshake_bytes(&base.stream));
            let fate = rig.fate(&hello, judgement);
            let desc = |how: &str| format!("{bname}, {sname} ({} records), {how}", hello.records.len());
            let flow = rig.flow(&tcp4());
            scripts.push(rig.delivery(desc("one segment"), &flow, &hello, &[], &fate));
            let fives: Vec<usize> = (5..hello.len()).step_by(5).collect();
            let flow = rig.flow(&tcp6());
            scripts.push(rig.delivery(desc("5-byte segments"), &flow, &hello, &fives, &fate));
            for k in 0..3 {
                let cuts = random_cuts(&mut rng, hello.len(), 2 + 3 * k);
                let flow = rig.flow(&tcp4().vlan(Vlan::Single(3)));
                scripts.push(rig.delivery(desc(&format!("cut at {cuts:?}")), &flow, &hello, &cuts, &fate));
            }
            // Every cut where the record layer makes it interesting, on one ClientHello.
            let every = ["7-byte records", "a record boundary inside the name", "63 records", "64 records"];
            if *bname == "small blocked" && every.iter().any(|e| sname.starts_with(e)) {
                for cut in 1..hello.len() {
                    let flow = rig.flow(&tcp4());
                    scripts.push(rig.delivery(desc(&format!("cut at {cut}")), &flow, &hello, &[cut], &fate));
                }
            }
        }
    }
    rig.run("record fragmentation", &scripts);
}

/// Hundreds of one-byte records, which servers reassemble (OpenSSL, Go and
/// rustls bound the records of a `ClientHello` by none): across small
/// segments, blocked names are reset and allowed ones pass, judged, the
/// record layer's state carried from segment to segment. The program's
/// bound is its work per segment ([`SEGMENT_STEPS`]): a segment of more
/// records than that (in one segment, or full-sized ones) is refused
/// (`tls_segment_bound`), never passed as if judged.
#[test]
fn hundreds_of_one_byte_records() {
    let mut rig = Rig::new(TlsPolicy::default());
    let small = Hello::rustls(Some("www.blocked.example"), HelloKind::Small);
    let ok = Hello::rustls(Some("ok.blocked.example"), HelloKind::Small);
    let pq = Hello::rustls(Some("pq.blocked.example"), HelloKind::PostQuantum);
    let padded = Hello::new(tls::with_extensions(&small.stream, |e| e.insert(0, (21, vec![0; 800]))));
    let bases = [
        ("small blocked", &small, blocked("blocked.example")),
        ("small allowed", &ok, allowed("ok.blocked.example")),
        ("post-quantum blocked", &pq, blocked("blocked.example")),
        ("800 bytes of padding first, blocked", &padded, blocked("blocked.example")),
    ];
    let mut scripts = Vec::new();
    let mut refused = 0;
    for (desc, base, judgement) in bases {
        let hello = base.refragment(&vec![1; base.layout.end]);
        assert!(hello.records.len() > 200, "{desc}: {}", hello.records.len());
        let fate = rig.fate(&hello, &judgement);
        for (how, seg) in [
            ("one segment", hello.len()),
            ("1448-byte segments", 1448),
            ("536-byte", 536),
            ("120-byte", 120),
            ("48-byte", 48),
        ] {
            let cuts: Vec<usize> = (seg..hello.len()).step_by(seg).collect();
            let f = rig.flow(&tcp4());
            let desc = format!("{desc}, {} 1-byte records, {how}", hello.records.len());
            let sc = rig.delivery(desc.clone(), &f, &hello, &cuts, &fate);
            let cut = sc.frames.iter().any(|f| f.want.outcome == Counter::TlsSegmentBound);
            let judged = sc.frames.iter().any(|f| {
                matches!(f.want.outcome, Counter::TlsReset | Counter::TlsPassAllowed | Counter::TlsPassNoMatch)
            });
            // Segments of 20 records or fewer are judged; of 89 or more
            // (536 bytes), not.
            assert_eq!((cut, judged), (seg > 120, seg <= 120), "{desc}, {how}");
            refused += usize::from(cut);
            scripts.push(sc);
        }
    }
    assert_eq!(refused, 12);
    rig.run("hundreds of one-byte records", &scripts);
}

/// A client segment of `flow` at stream offset `off` with exactly `set` of
/// SYN, ACK, RST, FIN and `payload`.
fn tcp_frame(flow: &Flow, seq: u32, set: u8, payload: &[u8]) -> Vec<u8> {
    let mut tcp = TcpHeader::new(flow.client_port(), flow.server_port(), seq, flow.window);
    tcp.syn = set & flags::SYN != 0;
    tcp.rst = set & flags::RST != 0;
    tcp.fin = set & flags::FIN != 0;
    tcp.psh = !payload.is_empty();
    if set & flags::ACK != 0 {
        tcp.ack = true;
        tcp.acknowledgment_number = flow.server_seq();
    }
    flow.frame(tcp, payload)
}

/// What a blocked small `ClientHello` for `www.blocked.example` is cut at
/// in the retransmission rows: its length, a cut 8 bytes before the name
/// and one 4 bytes into it.
struct Cuts {
    len: usize,
    before: usize,
    inside: usize,
}

impl Cuts {
    fn of(hello: &Hello) -> Self {
        let first = hello.sni_first().expect("named");
        Self { len: hello.len(), before: first - 8, inside: first + 4 }
    }
}

/// Retransmissions (whole, partial, longer, with different bytes, after
/// the block), reordering (dropped, then delivered in order), gaps, pure
/// ACKs, sequence numbers wrapping inside the `ClientHello`, and what a
/// blocked flow's later packets get.
#[test]
fn retransmission_and_reordering() {
    let mut rig = Rig::new(TlsPolicy::default());
    let hello = Hello::rustls(Some("www.blocked.example"), HelloKind::Small);
    let sni = hello.name().expect("named");
    let Cuts { len, before, inside } = Cuts::of(&hello);
    let s = &hello.stream;
    let reset = |flow: &Flow, end: usize| Want::reset(flow, end).rule(Some("blocked.example")).sni(Some(&sni));
    let pending = || Want::pass(Counter::TlsPending);
    let mut scripts = Vec::new();
    let mut row = |rig: &mut Rig, desc: &str, flow: Option<Flow>, build: &dyn Fn(&Flow, &mut Script)| {
        let flow = flow.unwrap_or_else(|| rig.v4());
        let mut script = Script::new(desc);
        script.syn(&flow);
        build(&flow, &mut script);
        scripts.push(script);
    };
    row(&mut rig, "the first segment retransmitted while pending", None, &|f, sc| {
        sc.send(f, s, 0, before, pending());
        sc.send(f, s, 0, before, Want::pass(Counter::TlsRetransmission));
        sc.send(f, s, before, len, reset(f, len));
        sc.push("FIN", f.fin_at(len), Want::blocked_flow());
    });
    row(&mut rig, "every later packet of a blocked flow is dropped", None, &|f, sc| {
        sc.send(f, s, 0, before, pending());
        sc.send(f, s, before, len, reset(f, len));
        sc.send(f, s, 0, before, Want::blocked_flow());
        sc.send(f, s, before, len, Want::blocked_flow());
        sc.send(f, s, 0, len, Want::blocked_flow());
        sc.push("ACK", f.ack_at(len), Want::blocked_flow());
        sc.push("data after the ClientHello", f.segment(len, b"\x17\x03\x03\x00\x01x"), Want::blocked_flow());
        sc.push("FIN", f.fin_at(len), Want::blocked_flow());
        sc.push("RST", tcp_frame(f, f.seq_at(len), flags::RST | flags::ACK, &[]), Want::blocked_flow());
    });
    row(&mut rig, "the second segment repeats the first's last 20 bytes", None, &|f, sc| {
        sc.send(f, s, 0, inside, pending());
        sc.send(f, s, inside - 20, len, reset(f, len));
    });
    row(&mut rig, "the first segment sent again, longer, then the rest", None, &|f, sc| {
        sc.send(f, s, 0, before, pending());
        sc.send(f, s, 0, inside, pending());
        sc.send(f, s, inside, len, reset(f, len));
    });
    row(&mut rig, "an overlap whose repeated bytes differ: only new bytes are parsed", None, &|f, sc| {
        sc.send(f, s, 0, inside, pending());
        let mut changed = s[before..len].to_vec();
        changed[..inside - before].fill(b'x');
        sc.push(
            format!("[{before}..{len}) with [{before}..{inside}) changed"),
            f.segment(before, &changed),
            reset(f, len),
        );
    });
    row(&mut rig, "the second segment first: dropped, then both in order", None, &|f, sc| {
        sc.send(f, s, inside, len, Want::drop(Counter::TlsOutOfOrder));
        sc.send(f, s, 0, inside, pending());
        sc.send(f, s, inside, len, reset(f, len));
    });
    row(&mut rig, "the first data starts past the first byte", None, &|f, sc| {
        sc.send(f, s, 5, len, Want::drop(Counter::TlsOutOfOrder));
        sc.send(f, s, 0, len, reset(f, len));
    });
    row(&mut rig, "a gap: the third segment before the second", None, &|f, sc| {
        sc.send(f, s, 0, before, pending());
        sc.send(f, s, inside, len, Want::drop(Counter::TlsOutOfOrder));
        sc.send(f, s, before, inside, pending());
        sc.send(f, s, inside, len, reset(f, len));
    });
    row(&mut rig, "pure ACKs before and between segments", None, &|f, sc| {
        sc.push("ACK", f.ack(), Want::pass(Counter::TcpNoPayload));
        sc.send(f, s, 0, before, pending());
        sc.push("ACK", f.ack_at(before), Want::pass(Counter::TcpNoPayload));
        sc.send(f, s, before, len, reset(f, len));
    });
    row(&mut rig, "the SYN retransmitted before the data", None, &|f, sc| {
        sc.syn(f);
        sc.send(f, s, 0, len, reset(f, len));
    });
    // Sequence numbers wrap at the name's third byte, then at the cut
    // before it (a retransmission and a reordering across the wrap).
    let at_wrap = |off: usize| Some(Flow::v4().sport(61000 + off as u16).isns(0u32.wrapping_sub(1 + off as u32), 7));
    row(&mut rig, "sequence numbers wrap inside the name", at_wrap(inside - 2), &|f, sc| {
        sc.send(f, s, 0, inside, pending());
        sc.send(f, s, inside, len, reset(f, len));
    });
    row(&mut rig, "sequence numbers wrap: retransmission and reordering across it", at_wrap(before), &|f, sc| {
        sc.send(f, s, 0, before, pending());
        sc.send(f, s, 0, before, Want::pass(Counter::TlsRetransmission));
        sc.send(f, s, inside, len, Want::drop(Counter::TlsOutOfOrder));
        sc.send(f, s, before, inside, pending());
        sc.send(f, s, inside, len, reset(f, len));
    });
    // A FIN (or RST) the server may have discarded (no ACK flag, a bad
    // checksum, an old timestamp) must not make the filter forget; the
    // entry ages out, and the rest of the ClientHello is still judged.
    row(&mut rig, "a FIN while pending does not end tracking", None, &|f, sc| {
        sc.send(f, s, 0, before, pending());
        sc.push("FIN", f.fin_at(before), Want::pass(Counter::TcpNoPayload));
        sc.push("RST", tcp_frame(f, f.seq_at(before), flags::RST, &[]), Want::pass(Counter::TcpNoPayload));
        sc.send(f, s, before, len, reset(f, len));
    });
    scripts.push(allowed_flow_forgotten(&mut rig));
    rig.run("retransmission and reordering", &scripts);
}

/// An allowed flow is forgotten once judged: its retransmissions are
/// untracked traffic, and a retransmitted first segment, which starts like
/// a `ClientHello`, is parsed afresh and tracked again until the FIN.
fn allowed_flow_forgotten(rig: &mut Rig) -> Script {
    let ok = Hello::rustls(Some("www.ok.blocked.example"), HelloKind::Small);
    let (o, sni) = (&ok.stream, ok.name());
    let Cuts { len, before, .. } = Cuts::of(&ok);
    assert!(!starts_like_hello(&o[before..]), "a fixture whose middle looks like a record start");
    let f = rig.v4();
    // The retransmitted start is kept, waiting for a rest that never comes
    // (it went by before), until it expires.
    let mut sc = Script::new("an allowed flow is forgotten: its retransmissions are untracked traffic").leaves_open(1);
    sc.syn(&f);
    sc.send(&f, o, 0, before, Want::pass(Counter::TlsPending));
    sc.send(&f, o, 0, before, Want::pass(Counter::TlsRetransmission));
    let pass = Want::pass(Counter::TlsPassAllowed).rule(Some("ok.blocked.example")).sni(sni.as_deref());
    sc.send(&f, o, before, len, pass);
    sc.send(&f, o, before, len, Want::pass(Counter::TcpOther));
    // A spurious retransmission of the first segment looks like a new
    // ClientHello: parsed, and kept as a flow whose SYN was not seen...
    sc.send(&f, o, 0, before, Want::pass(Counter::TlsPending));
    // ...so the connection's next data, past the gap and beyond where that
    // ClientHello can end, passes instead of stalling the connection...
    let mut data = o[..len].to_vec();
    data.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x10]);
    data.extend_from_slice(&[0x5a; 16]);
    sc.send(&f, &data, len, data.len(), Want::pass(Counter::TlsBeyondHello));
    sc.send(&f, &data, len, data.len(), Want::pass(Counter::TlsBeyondHello));
    // ...and should the ClientHello's rest come after all, reaching bytes
    // that passed unseen, it is not judged: the server holds those.
    sc.send(&f, &data, before, data.len(), Want::pass(Counter::TlsRestPassed));
    // The FIN past the noted start changes nothing either.
    sc.push("FIN", f.fin_at(data.len()), Want::pass(Counter::TcpNoPayload));
    sc
}

/// Several flows' segments interleaved: the same source port from
/// different addresses, IPv4 and IPv6, different destination ports,
/// blocked, allowed and unlisted names. Each flow gets its own verdict and
/// its RST, and a blocked flow does not touch the others.
#[test]
fn interleaved_flows() {
    let rig = Rig::new(TlsPolicy::default());
    let mut rng = StdRng::seed_from_u64(11);
    let v4b: IpAddr = [10, 1, 0, 3].into();
    let v6b: IpAddr = "fd00:0:0:1::3".parse().expect("address");
    let hellos = [
        (Hello::rustls(Some("www.blocked.example"), HelloKind::Small), blocked("blocked.example")),
        (Hello::rustls(Some("ok.blocked.example"), HelloKind::PostQuantum), allowed("ok.blocked.example")),
        (Hello::rustls(Some("a.blocked.example"), HelloKind::PostQuantum), blocked("blocked.example")),
        (Hello::rustls(Some("www.example.org"), HelloKind::Small), Judgement::NoMatch),
        (Hello::rustls(Some("blocked.example"), HelloKind::Ech), blocked("blocked.example")),
        (
            Hello::rustls(Some("x.drop.example"), HelloKind::Small),
            Judgement::Block { rule: "drop.example".into(), drop: true },
        ),
    ];
    let mut scripts = Vec::new();
    for (round, port) in [(0, 60000u16), (1, 60010)] {
        let flows = [
            Flow::v4().sport(port),
            Flow::v4().sport(port).with_client_ip(v4b),
            Flow::v6().sport(port),
            Flow::v6().sport(port).with_client_ip(v6b),
            Flow::new(layout("QinQ/IPv4")).sport(port + 1),
            Flow::v4().sport(port).dport(8443),
        ];
        let mut parts = Vec::new();
        for (i, flow) in flows.iter().enumerate() {
            let flow = flow.clone().isns(rng.random(), rng.random());
            let (hello, judgement) = &hellos[(i + round) % hellos.len()];
            let cuts = random_cuts(&mut rng, hello.len(), 3 + i);
            parts.push(rig.delivery(format!("flow {i}"), &flow, hello, &cuts, &rig.fate(hello, judgement)));
        }
        let mut merged = Script::new(if round == 0 { "round robin" } else { "seeded random interleaving" });
        while parts.iter().any(|p| !p.frames.is_empty()) {
            let live: Vec<usize> = (0..parts.len()).filter(|&i| !parts[i].frames.is_empty()).collect();
            let order = if round == 0 { live } else { vec![*live.choose(&mut rng).expect("a live flow")] };
            for i in order {
                merged.frames.push(parts[i].frames.remove(0));
            }
        }
        scripts.push(merged);
    }
    rig.run("interleaved flows", &scripts);
}

/// `n` bytes of name: labels of 63 `a`s (and a shorter first one) before
/// `tail`, e.g. 253 bytes ending in `.blocked.example`.
fn long_name(n: usize, tail: &str) -> String {
    let mut name = tail.to_owned();
    while name.len() < n {
        // A label and its dot; never leave a single byte, which no label fits.
        let left = n - name.len();
        let label = match left {
            ..=64 => left - 1,
            65 => 61,
            _ => 63,
        };
        name = format!("{}.{name}", "a".repeat(label));
    }
    assert_eq!(name.len(), n, "no name of {n} bytes ends in {tail}");
    name
}

/// What the rules make of names, each sent in one segment over IPv4 and cut
/// inside the name over IPv6, in a small `ClientHello` with the name put in
/// (any bytes) and, where rustls writes the name as given, in its own
/// post-quantum one: suffix matching at label boundaries, case, a trailing
/// dot, the allowlist exception, per-rule actions, IDN, the longest names,
/// names the program refuses (empty or long labels, over 255 bytes on the
/// wire) and no name at all.
#[test]
fn names() {
    let mut rig = Rig::new(TlsPolicy::default());
    let drop = |rule: &str| Judgement::Block { rule: rule.into(), drop: true };
    let l253 = long_name(253, "blocked.example");
    let cases: Vec<(String, Judgement)> = [
        ("blocked.example", blocked("blocked.example")),
        ("www.blocked.example", blocked("blocked.example")),
        ("a.b.c.d.blocked.example", blocked("blocked.example")),
        ("BLOCKED.Example", blocked("blocked.example")),
        ("WwW.bLoCkEd.ExAmPlE", blocked("blocked.example")),
        ("blocked.example.", blocked("blocked.example")),
        ("www.blocked.example.", blocked("blocked.example")),
        ("ok.blocked.example", allowed("ok.blocked.example")),
        ("x.ok.blocked.example", allowed("ok.blocked.example")),
        ("OK.Blocked.EXAMPLE", allowed("ok.blocked.example")),
        ("ok.blocked.example.", allowed("ok.blocked.example")),
        ("notok.blocked.example", blocked("blocked.example")),
        ("notblocked.example", Judgement::NoMatch),
        ("blocked.example.evil", Judgement::NoMatch),
        ("www.blocked.example.evil.net", Judgement::NoMatch),
        ("blocked.exampl", Judgement::NoMatch),
        ("xblocked.example", Judgement::NoMatch),
        ("blocked-example", Judgement::NoMatch),
        ("blocked.examplex", Judgement::NoMatch),
        ("blocked", Judgement::NoMatch),
        ("example", Judgement::NoMatch),
        ("192.0.2.1", Judgement::NoMatch),
        ("blocked.example\0", Judgement::NoMatch),
        ("drop.example", drop("drop.example")),
        ("x.drop.example", drop("drop.example")),
        ("reset.example", blocked("reset.example")),
        ("nx.example", blocked("nx.example")),
        ("www.refused.example", blocked("refused.example")),
        ("xn--bcher-kva.example", blocked("xn--bcher-kva.example")),
        ("www.XN--BCHER-KVA.example", blocked("xn--bcher-kva.example")),
        (&l253, blocked("blocked.example")),
        (&format!("{l253}."), blocked("blocked.example")),
        (&long_name(254, "blocked.example"), Judgement::BadName),
        (&long_name(255, "blocked.example"), Judgement::BadName),
        (&format!("{}.blocked.example", "x".repeat(64)), Judgement::BadName),
        (".blocked.example", Judgement::BadName),
        ("www..blocked.example", Judgement::BadName),
        ("blocked.example..", Judgement::BadName),
        (".", Judgement::BadName),
    ]
    .into_iter()
    .map(|(n, j)| (n.to_owned(), j))
    .collect();
    let template = Hello::rustls(Some("template.example"), HelloKind::Small);
    let mut scripts = Vec::new();
    for (name, judgement) in &cases {
        let shown = if name.len() > 40 {
            format!("{}-byte name ending {:?}", name.len(), &name[name.len() - 20..])
        } else {
            format!("{name:?}")
        };
        let mut hellos = vec![("put in", template.renamed(name.as_bytes()))];
        let valid = rustls::pki_types::ServerName::try_from(name.clone()).is_ok();
        if valid && !name.contains('\0') {
            let own = Hello::rustls(Some(name), HelloKind::PostQuantum);
            if own.name().as_deref() == Some(name.as_bytes()) {
                hellos.push(("rustls, post-quantum", own));
            }
        }
        for (how, hello) in hellos {
            let fate = rig.fate(&hello, judgement);
            let flow = rig.flow(&tcp4());
            scripts.push(rig.delivery(format!("{shown} ({how}), one segment"), &flow, &hello, &[], &fate));
            let mid = (hello.sni_first().expect("named") + hello.sni_last().expect("named")).div_ceil(2);
            let flow = rig.flow(&tcp6());
            scripts.push(rig.delivery(format!("{shown} ({how}), cut inside the name"), &flow, &hello, &[mid], &fate));
        }
    }
    scripts.extend(refused_names(&mut rig, &template));
    for (desc, hello) in [
        ("no server_name (rustls told not to send it)", Hello::rustls(Some("blocked.example"), HelloKind::NoSni)),
        ("no server_name (connecting to an address)", Hello::rustls(None, HelloKind::PostQuantum)),
    ] {
        let fate = rig.fate(&hello, &Judgement::NoMatch);
        for cut in [None, Some(hello.len() / 2)] {
            let flow = rig.flow(&tcp4());
            let cuts: Vec<usize> = cut.into_iter().collect();
            scripts.push(rig.delivery(format!("{desc}, cuts {cuts:?}"), &flow, &hello, &cuts, &fate));
        }
    }
    rig.run("names", &scripts);
}

/// Names the parser refuses at the entry that announces them, before any
/// name byte: over 255 bytes (`SniTooLong`) or empty (`SniEmpty`).
/// Decided by the entry's last byte. A list whose only entry is not a
/// host name (name type 1) holds no name for any server (Go skips the
/// entry, rustls stops at it): no server name, decided by the
/// `ClientHello`'s last byte.
fn refused_names(rig: &mut Rig, template: &Hello) -> Vec<Script> {
    let too_long = long_name(256, "blocked.example");
    let bad_type = tls::with_extensions(&template.stream, |exts| {
        let sni = exts.iter_mut().find(|(t, _)| *t == tls::EXT_SERVER_NAME).expect("server_name");
        sni.1[2] = 1;
    });
    let mut scripts = Vec::new();
    for (desc, hello) in
        [("a 256-byte name", template.renamed(too_long.as_bytes())), ("an empty name", template.renamed(b""))]
    {
        let entry_end = hello.offsets[hello.layout.server_name().expect("a server_name").start - 1];
        let fate =
            Fate { at: entry_end, verdict: Verdict::Pass(Counter::TlsMalformed), extras: Vec::new(), name: None };
        for cuts in [vec![], vec![entry_end], vec![entry_end + 1]] {
            let flow = rig.flow(&tcp4());
            scripts.push(rig.delivery(format!("refused: {desc}, cuts {cuts:?}"), &flow, &hello, &cuts, &fate));
        }
    }
    let hello = Hello::new(bad_type);
    let entry_end = hello.offsets[hello.layout.server_name().expect("a server_name").start - 1];
    let no_name = Fate {
        at: hello.last(),
        verdict: Verdict::Pass(Counter::TlsPassNoSni),
        extras: vec![Counter::TlsNoSni],
        name: None,
    };
    for cuts in [vec![], vec![entry_end], vec![entry_end + 1]] {
        let flow = rig.flow(&tcp4());
        scripts.push(rig.delivery(format!("only name type 1, cuts {cuts:?}"), &flow, &hello, &cuts, &no_name));
    }
    scripts
}

/// Every layout (VLAN tags, IPv4 options, IPv6 extension headers) and
/// several destination ports: a blocked name cut inside it gets a RST
/// with the client's VLAN tags and no IP options or extension headers, a
/// post-quantum `ClientHello` in MTU-sized segments is blocked, an allowed
/// one passes, and segments without TCP options (20-byte header) are read
/// the same.
#[test]
fn layouts_and_ports() {
    let mut rig = Rig::new(TlsPolicy::default());
    let small = Hello::rustls(Some("www.blocked.example"), HelloKind::Small);
    let pq = Hello::rustls(Some("pq.blocked.example"), HelloKind::PostQuantum);
    let ok = Hello::rustls(Some("ok.blocked.example"), HelloKind::Small);
    let block = rig.fate(&small, &blocked("blocked.example"));
    let pq_block = rig.fate(&pq, &blocked("blocked.example"));
    let pass = rig.fate(&ok, &allowed("ok.blocked.example"));
    let inside = small.sni_first().expect("named") + 2;
    let mut scripts = Vec::new();
    for (i, (lname, spec)) in layouts().into_iter().enumerate() {
        let dport = [443, 8443, 993, 5223, 80, 22][i % 6];
        let spec = spec.dport(dport);
        let at = |what: &str| format!("{lname} to port {dport}: {what}");
        let f = rig.flow(&spec);
        scripts.push(rig.delivery(at("blocked, cut inside the name"), &f, &small, &[inside], &block));
        let f = rig.flow(&spec).without_timestamps();
        scripts.push(rig.delivery(at("blocked, no TCP options"), &f, &small, &[inside], &block));
        let f = rig.flow(&spec);
        scripts.push(rig.delivery(at("post-quantum, blocked, 1200-byte segments"), &f, &pq, &[1200], &pq_block));
        let f = rig.flow(&spec);
        scripts.push(rig.delivery(at("allowed, one segment"), &f, &ok, &[], &pass));
    }
    rig.run("layouts and ports", &scripts);
}

/// `--tls-action drop`: blocked flows are dropped, nothing is written,
/// their later packets dropped; a rule's own `reset` or `drop` beats the
/// default, DNS-only actions take it.
#[test]
fn drop_action() {
    let mut rig = Rig::new(TlsPolicy { action: Action::Drop, ..TlsPolicy::default() });
    let drop = |rule: &str| Judgement::Block { rule: rule.into(), drop: true };
    let cases = [
        (HelloKind::Small, "www.blocked.example", drop("blocked.example")),
        (HelloKind::PostQuantum, "blocked.example", drop("blocked.example")),
        (HelloKind::Small, "reset.example", blocked("reset.example")),
        (HelloKind::PostQuantum, "x.drop.example", drop("drop.example")),
        (HelloKind::Small, "nx.example", drop("nx.example")),
        (HelloKind::Ech, "refused.example", drop("refused.example")),
        (HelloKind::Small, "ok.blocked.example", allowed("ok.blocked.example")),
        (HelloKind::NoSni, "blocked.example", Judgement::NoMatch),
    ];
    let mut scripts = Vec::new();
    let mut rng = StdRng::seed_from_u64(17);
    for (kind, name, judgement) in cases {
        let hello = Hello::rustls(Some(name), kind);
        let fate = rig.fate(&hello, &judgement);
        let inside = hello.sni_last().unwrap_or(hello.len() / 2);
        for cuts in [vec![], vec![inside], random_cuts(&mut rng, hello.len(), 5)] {
            let flow = rig.flow(&tcp6().vlan(Vlan::Single(42)));
            scripts.push(rig.delivery(format!("{kind:?} {name}, cuts {cuts:?}"), &flow, &hello, &cuts, &fate));
        }
    }
    rig.run("drop action", &scripts);
}

/// `ech_block`: a `ClientHello` carrying `encrypted_client_hello` is blocked
/// even when its outer name is allowed or unlisted; without it the name
/// alone decides. The program learns about ECH only by reading: when the
/// extension comes before the name it knows at the name, else it reads on
/// to the `ClientHello`'s end. Chromium-like post-quantum `ClientHello`s
/// carry GREASE ECH, indistinguishable on the wire from real ECH, so this
/// policy blocks them too. Every two-segment cut for both orders.
#[test]
fn ech_block() {
    let mut rig = Rig::new(TlsPolicy { ech_block: true, ..TlsPolicy::default() });
    let ok = Hello::rustls(Some("ok.blocked.example"), HelloKind::Ech);
    assert!(!ok.ech_before_sni(), "rustls writes ECH last");
    let whole = [
        ("ECH before the name, allowed", ech_moved_first(&ok), allowed("ok.blocked.example")),
        ("ECH after the name, allowed", ok.clone(), allowed("ok.blocked.example")),
        ("ECH after the name, unlisted", Hello::rustls(Some("www.example.org"), HelloKind::Ech), Judgement::NoMatch),
        ("no ECH, allowed", Hello::rustls(Some("ok.blocked.example"), HelloKind::Small), allowed("ok.blocked.example")),
    ];
    let some = [
        (
            "GREASE ECH (post-quantum), unlisted",
            Hello::rustls(Some("www.example.org"), HelloKind::PostQuantum),
            Judgement::NoMatch,
        ),
        ("ECH, blocked name", Hello::rustls(Some("www.blocked.example"), HelloKind::Ech), blocked("blocked.example")),
        ("no ECH, no name", Hello::rustls(None, HelloKind::Small), Judgement::NoMatch),
    ];
    let mut scripts = Vec::new();
    for (desc, hello, judgement) in &whole {
        let fate = rig.fate(hello, judgement);
        for cut in 1..hello.len() {
            let flow = rig.flow(&tcp4());
            scripts.push(rig.delivery(format!("{desc}: cut at {cut}"), &flow, hello, &[cut], &fate));
        }
    }
    let mut rng = StdRng::seed_from_u64(19);
    for (desc, hello, judgement) in &some {
        let fate = rig.fate(hello, judgement);
        for k in 0..20 {
            let cuts = random_cuts(&mut rng, hello.len(), 1 + k % 4);
            let flow = rig.flow(&tcp6());
            scripts.push(rig.delivery(format!("{desc} #{k}: cuts {cuts:?}"), &flow, hello, &cuts, &fate));
        }
    }
    rig.run("ECH blocked", &scripts);
}

/// Without `ech_block` the name alone decides, and `tls_ech` counts the
/// ECH extensions the program read before deciding: one before the name
/// of a passed `ClientHello` (it stops reading at the name, and a blocked
/// name is decided by the name alone).
#[test]
fn ech_counted_without_ech_block() {
    let mut rig = Rig::new(TlsPolicy::default());
    let ok = Hello::rustls(Some("ok.blocked.example"), HelloKind::Ech);
    let hellos = [
        ("ECH before the name, allowed", ech_moved_first(&ok), allowed("ok.blocked.example")),
        ("ECH after the name, allowed", ok.clone(), allowed("ok.blocked.example")),
        (
            "GREASE ECH before the name, unlisted",
            ech_moved_first(&Hello::rustls(Some("www.example.org"), HelloKind::PostQuantum)),
            Judgement::NoMatch,
        ),
        (
            "ECH before the name, blocked",
            ech_moved_first(&Hello::rustls(Some("blocked.example"), HelloKind::Ech)),
            blocked("blocked.example"),
        ),
    ];
    let mut rng = StdRng::seed_from_u64(23);
    let mut scripts = Vec::new();
    for (desc, hello, judgement) in &hellos {
        let fate = rig.fate(hello, judgement);
        for k in 0..20 {
            let cuts = random_cuts(&mut rng, hello.len(), k % 5);
            let flow = rig.flow(&tcp4());
            scripts.push(rig.delivery(format!("{desc} #{k}: cuts {cuts:?}"), &flow, hello, &cuts, &fate));
        }
    }
    rig.run("ECH counted", &scripts);
}

/// `no_sni_block`: a `ClientHello` without `server_name` is blocked when
/// it ends (reset, or dropped under `--tls-action drop`), counted
/// `tls_no_sni`; named ones are judged by their name as before.
#[test]
fn no_sni_block() {
    let mut scripts = Vec::new();
    for action in [Action::Reset, Action::Drop] {
        let mut rig = Rig::new(TlsPolicy { no_sni_block: true, action, ..TlsPolicy::default() });
        let hellos = [
            (
                "rustls told not to send it",
                Hello::rustls(Some("ok.blocked.example"), HelloKind::NoSni),
                Judgement::NoMatch,
            ),
            ("connecting to an address", Hello::rustls(None, HelloKind::PostQuantum), Judgement::NoMatch),
            ("no name, 7-byte records", Hello::rustls(None, HelloKind::Small).refragment(&[7; 60]), Judgement::NoMatch),
            (
                "allowed name",
                Hello::rustls(Some("ok.blocked.example"), HelloKind::Small),
                allowed("ok.blocked.example"),
            ),
            ("unlisted name", Hello::rustls(Some("www.example.org"), HelloKind::Ech), Judgement::NoMatch),
        ];
        for (desc, hello, judgement) in &hellos {
            let fate = rig.fate(hello, judgement);
            for cuts in [vec![], vec![hello.len() - 1], vec![1, hello.len() / 2]] {
                let flow = rig.flow(&tcp4().vlan(Vlan::Double(5, 6)));
                scripts.push(rig.delivery(format!("{action:?}: {desc}, cuts {cuts:?}"), &flow, hello, &cuts, &fate));
            }
        }
        rig.run(&format!("no SNI blocked, {action:?}"), &scripts);
        scripts.clear();
    }
}

/// A QUIC long-header packet padded to `len` bytes of UDP payload: first
/// byte, version, an 8-byte destination connection id, no source id, then
/// bytes standing for the protected payload.
fn quic_packet(first: u8, version: u32, len: usize) -> Vec<u8> {
    let mut p = vec![first];
    p.extend_from_slice(&version.to_be_bytes());
    p.push(8);
    p.extend_from_slice(&[0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08]);
    p.push(0);
    p.resize(len, 0x5a);
    p
}

/// `quic_block`: QUIC Initial packets (version 1 and its drafts, version 2,
/// at least 1200 bytes of UDP payload, RFC 9000 §14.1) to any port but 53
/// are dropped, so browsers fall back to TCP; without it they pass,
/// counted. Other long-header types, short headers, unknown versions and
/// smaller datagrams are not Initials.
#[test]
fn quic_initials() {
    for quic_block in [false, true] {
        let h = Harness::with_tls(BLOCK, ALLOW, TlsPolicy { quic_block, ..TlsPolicy::default() });
        let initial = if quic_block { Want::drop(Counter::QuicInitialDrop) } else { Want::pass(Counter::QuicInitial) };
        let other = Want::pass(Counter::NotDnsPort);
        let rows: [(&str, Spec, Vec<u8>, &Want); 16] = [
            ("v1 Initial, 1200 bytes", Spec::udp4().dport(443), quic_packet(0xc3, 1, 1200), &initial),
            ("v1 Initial, 1252 bytes, IPv6", Spec::udp6().dport(443), quic_packet(0xc0, 1, 1252), &initial),
            (
                "v1 Initial to port 8443, QinQ",
                Spec::udp4().dport(8443).vlan(Vlan::Double(1, 2)),
                quic_packet(0xc1, 1, 1350),
                &initial,
            ),
            ("v2 Initial (type 1)", Spec::udp6().dport(443), quic_packet(0xd3, 0x6b33_43cf, 1200), &initial),
            ("draft-29 Initial", Spec::udp4().dport(443), quic_packet(0xc3, 0xff00_001d, 1200), &initial),
            ("v1 Initial, 1199 bytes", Spec::udp4().dport(443), quic_packet(0xc3, 1, 1199), &other),
            ("v1 0-RTT", Spec::udp4().dport(443), quic_packet(0xd3, 1, 1200), &other),
            ("v1 Handshake", Spec::udp4().dport(443), quic_packet(0xe3, 1, 1200), &other),
            ("v1 Retry", Spec::udp4().dport(443), quic_packet(0xf0, 1, 1200), &other),
            ("v2 type 0 (0-RTT in v2)", Spec::udp4().dport(443), quic_packet(0xc3, 0x6b33_43cf, 1200), &other),
            ("version negotiation", Spec::udp4().dport(443), quic_packet(0xc0, 0, 1200), &other),
            ("unknown version", Spec::udp4().dport(443), quic_packet(0xc3, 0x1a2a_3a4a, 1200), &other),
            ("short header", Spec::udp4().dport(443), quic_packet(0x43, 0x8394_c8f0, 1200), &other),
            (
                "short header, connection id 00 00 00 01 ...",
                Spec::udp4().dport(443),
                quic_packet(0x43, 1, 1200),
                &other,
            ),
            ("4 bytes", Spec::udp4().dport(443), vec![0xc3, 0, 0, 0], &other),
            ("empty datagram", Spec::udp6().dport(443), Vec::new(), &other),
        ];
        let mut script = Script::new(format!("quic_block {quic_block}"));
        for (desc, spec, payload, want) in rows {
            script.push(desc, spec.build(&payload), want.clone());
        }
        run_table(&h, &format!("QUIC, quic_block {quic_block}"), &[script]);
    }
}

/// Tables of 16 flows each. A SYN flood (SYNs that never send data) only
/// evicts the oldest entries of the `NEW_FLOWS` LRU, its own: it never
/// fills the table ClientHellos in progress need, and a split ClientHello
/// whose flow's SYN entry was pushed out is still followed and reset. When
/// `FLOWS` itself is full of ClientHellos in progress, a new split
/// ClientHello cannot be followed (`tls_flow_table_full`: passed under
/// `--unjudged pass`, dropped under `drop`); one whole in one segment is
/// still judged; flows already tracked go on, and freed entries are used
/// again. The daemon's sweep removes nothing that is not expired.
#[test]
fn flow_table_pressure() {
    for unjudged_drop in [false, true] {
        let opts = LoadOptions { max_flows: 16, ..LoadOptions::default() };
        let mut rig = Rig::with(BLOCK, ALLOW, opts, unjudged_drop, TlsPolicy::default());
        let mode = if unjudged_drop { "--unjudged drop" } else { "--unjudged pass" };
        let hello = Hello::rustls(Some("www.blocked.example"), HelloKind::Small);
        let sni = hello.name().expect("named");
        let (len, cut) = (hello.len(), hello.sni_first().expect("named"));
        let s = &hello.stream;
        let reset = |f: &Flow, end| Want::reset(f, end).rule(Some("blocked.example")).sni(Some(&sni));
        let full =
            |w: Want| if unjudged_drop { Want { action: XDP_DROP, ..w }.extra(Counter::UnjudgedDrop) } else { w };

        // A SYN flood: 16 real flows, then 48 SYNs that never send data.
        let early: Vec<Flow> = (0..16).map(|_| rig.v4()).collect();
        let flood: Vec<Flow> = (0..48).map(|_| rig.v6()).collect();
        let mut flooding = Script::new("16 SYNs, then a flood of 48").fills_the_lru();
        for f in early.iter().chain(&flood) {
            flooding.syn(f);
        }
        rig.run(&format!("{mode}: flooding"), &[flooding]);
        // The kernel's LRU frees entries in batches: it holds at most its
        // size, and the flood's newest.
        let held = rig.h.filter.new_flow_count().expect("new flows");
        assert!((8..=16).contains(&held), "{mode}: the LRU holds {held} of 16");
        assert_eq!(rig.h.filter.flow_count().expect("flows"), 0, "{mode}: the flood took nothing from FLOWS");
        // The early flows' SYN entries were pushed out by the flood: their
        // split ClientHellos are followed from their first segment all the same.
        // (Their SYN entries are gone: the flood's newest 16 remain.)
        let mut after = Script::new("split ClientHellos after the flood").fills_the_lru();
        for f in &early[..4] {
            after.send(f, s, 0, cut, Want::pass(Counter::TlsPending));
            after.send(f, s, cut, len, reset(f, len));
        }
        rig.run(&format!("{mode}: after the flood"), &[after]);
        // A flow whose SYN is still in the LRU: its data must start at the
        // first byte (its entry leaves the LRU for FLOWS, and is blocked).
        let mut newest = Script::new("the newest SYN's flow after the flood").fills_the_lru();
        newest.send(&flood[47], s, cut, len, Want::drop(Counter::TlsOutOfOrder));
        newest.send(&flood[47], s, 0, cut, Want::pass(Counter::TlsPending));
        newest.send(&flood[47], s, cut, len, reset(&flood[47], len));
        rig.run(&format!("{mode}: the newest flow"), &[newest]);

        // FLOWS full of ClientHellos in progress (for an allowed name), on a
        // program of its own: after the flood the LRU evicts in batches of
        // its own choosing, and the table counts below must be exact.
        let mut rig = Rig::with(
            BLOCK,
            ALLOW,
            LoadOptions { max_flows: 16, ..LoadOptions::default() },
            unjudged_drop,
            TlsPolicy::default(),
        );
        let blocked_before: Vec<Flow> = (0..5).map(|_| rig.v4()).collect();
        let mut five = Script::new("five blocked flows");
        for f in &blocked_before {
            five.send(f, s, 0, len, reset(f, len));
        }
        rig.run(&format!("{mode}: five blocked"), &[five]);
        let ok = Hello::rustls(Some("ok.blocked.example"), HelloKind::Small);
        let ok_cut = ok.sni_first().expect("named");
        let pass = Want::pass(Counter::TlsPassAllowed).rule(Some("ok.blocked.example")).sni(ok.name().as_deref());
        let pending: Vec<Flow> = (0..11).map(|_| rig.v4()).collect();
        let mut filling = Script::new("11 ClientHellos in progress fill FLOWS (5 blocked before)").leaves_open(11);
        for f in &pending {
            filling.send(f, &ok.stream, 0, ok_cut, Want::pass(Counter::TlsPending));
        }
        rig.run(&format!("{mode}: filling"), &[filling]);
        assert_eq!(rig.h.filter.flow_count().expect("flow count"), 16);

        let mut full_rows = Script::new("FLOWS is full");
        let late = rig.v4();
        // Whole in one segment, a ClientHello needs no state: still reset...
        full_rows.send(&late, s, 0, len, reset(&late, len).extra(Counter::FlowTableFull));
        // ... though the block cannot be remembered: the flow's later packets pass.
        full_rows.push(
            "data after the reset",
            late.segment(len, b"\x17\x03\x03\x00\x01x"),
            Want::pass(Counter::TcpOther),
        );
        let split = rig.v4();
        // ... but one in two segments cannot be followed.
        full_rows.send(&split, s, 0, cut, full(Want::pass(Counter::TlsFlowTableFull)).extra(Counter::FlowTableFull));
        full_rows.send(&split, s, cut, len, Want::pass(Counter::TcpOther));
        let ok_flow = rig.v6();
        full_rows.send(&ok_flow, &ok.stream, 0, ok.len(), pass.clone());
        // A FIN does not end tracking (the server may have discarded it).
        full_rows.push(
            format!("{}FIN", port_tag(&pending[0])),
            pending[0].fin_at(ok_cut),
            Want::pass(Counter::TcpNoPayload),
        );
        rig.run(&format!("{mode}: full"), &[full_rows]);
        assert_eq!(rig.h.filter.flow_count().expect("flow count"), 16, "{mode}: still full");
        // Tracked flows go on: judged, the allowed ones forgotten.
        let mut finishing = Script::new("the ClientHellos in progress finish").closes(11);
        for f in &pending {
            finishing.send(f, &ok.stream, ok_cut, ok.len(), pass.clone());
        }
        rig.run(&format!("{mode}: finishing"), &[finishing]);
        assert_eq!(rig.h.filter.flow_count().expect("flow count"), 5, "{mode}: the five blocked flows are left");
        assert_eq!(rig.h.filter.sweep_flows().expect("sweep"), 0, "{mode}: nothing expired yet");
        assert_eq!(rig.h.filter.flow_count().expect("flow count"), 5, "{mode}: the sweep kept live flows");

        let again = rig.v6();
        let fate = rig.fate(&hello, &blocked("blocked.example"));
        let freed = rig.delivery("a new flow uses a freed entry", &again, &hello, &[cut], &fate);
        rig.run(&format!("{mode}: room again"), &[freed]);
    }
}

/// The kernel's own expiry (issue 10): `FLOWS` full of entries past their
/// time to live (aged here as if the daemon had been down for 11 minutes)
/// takes a new split ClientHello all the same, without the daemon's sweep:
/// the insertion that finds the table full examines the next
/// `RECLAIM_SLOTS` slots of the ring of inserted keys and deletes the
/// expired entries there (`flow_reclaimed` each), then tries again. The
/// flow is followed and judged; later ClientHellos find room. Live entries
/// are never reclaimed: a table full of them still gives
/// `tls_flow_table_full` (see `flow_table_pressure`, and the last rows).
#[test]
fn full_table_of_expired_flows_reclaimed_by_the_kernel() {
    use maps::layout::flow::RECLAIM_SLOTS;
    let opts = LoadOptions { max_flows: 16, ..LoadOptions::default() };
    let mut rig = Rig::with(BLOCK, ALLOW, opts, true, TlsPolicy::default());
    let hello = Hello::rustls(Some("www.blocked.example"), HelloKind::Small);
    let sni = hello.name().expect("named");
    let (len, cut) = (hello.len(), hello.sni_first().expect("named"));
    let s = &hello.stream;
    let reset = |f: &Flow, end| Want::reset(f, end).rule(Some("blocked.example")).sni(Some(&sni));
    let ok = Hello::rustls(Some("ok.blocked.example"), HelloKind::Small);
    let ok_cut = ok.sni_first().expect("named");

    // Five blocked flows and eleven ClientHellos in progress fill FLOWS.
    let mut filling = Script::new("16 flows fill FLOWS").leaves_open(11);
    for _ in 0..5 {
        let f = rig.v4();
        filling.send(&f, s, 0, len, reset(&f, len));
    }
    for _ in 0..11 {
        let f = rig.v4();
        filling.send(&f, &ok.stream, 0, ok_cut, Want::pass(Counter::TlsPending));
    }
    rig.run("filling", &[filling]);
    assert_eq!(rig.h.filter.flow_count().expect("flows"), 16);

    // Still live: a split ClientHello cannot be followed, nothing reclaimed.
    let mut live = Script::new("FLOWS full of live flows");
    let early = rig.v4();
    live.send(
        &early,
        s,
        0,
        cut,
        Want { action: XDP_DROP, ..Want::pass(Counter::TlsFlowTableFull) }
            .extras(&[Counter::FlowTableFull, Counter::UnjudgedDrop]),
    );
    rig.run("live", &[live]);
    assert_eq!(rig.h.filter.flow_count().expect("flows"), 16);

    // The daemon down for 11 minutes: every entry past its time to live
    // (10 minutes for ClientHellos in progress, 1 for blocked flows).
    assert_eq!(rig.h.filter.age_flows(660_000_000_000).expect("aged"), 16);
    let mut reclaimed = Script::new("FLOWS full of expired flows");
    let late = rig.v4();
    // The first insertion examines the ring's first slots, whose 16 keys
    // are all expired: as many entries are reclaimed as it examines.
    let examined = vec![Counter::FlowReclaimed; RECLAIM_SLOTS as usize];
    reclaimed.send(&late, s, 0, cut, Want::pass(Counter::TlsPending).extras(&examined));
    reclaimed.send(&late, s, cut, len, reset(&late, len));
    let again = rig.v6();
    reclaimed.send(&again, s, 0, cut, Want::pass(Counter::TlsPending));
    reclaimed.send(&again, s, cut, len, reset(&again, len));
    rig.run("reclaimed", &[reclaimed]);
    // 16 - 8 reclaimed + 2 blocked.
    assert_eq!(rig.h.filter.flow_count().expect("flows"), 16 - RECLAIM_SLOTS as usize + 2);
    // The sweep finds the rest of the expired entries, and only those.
    assert_eq!(rig.h.filter.sweep_flows().expect("sweep"), 16 - RECLAIM_SLOTS as usize);
    assert_eq!(rig.h.filter.flow_count().expect("flows"), 2);
}

/// TCP Fast Open (RFC 7413): a SYN's data is parsed (`tcp_fast_open`
/// counted beside the outcome), but only a block is taken from it: the
/// server takes the data only with a valid cookie, which the filter cannot
/// see, so a client could send a ClientHello (or part of one, or anything)
/// the server never reads and then another. A blocked `ClientHello` gets a
/// RST with sequence number 0 (a SYN acknowledges nothing) acknowledging the
/// SYN and its data; anything else is not judged (`tls_syn_data`): dropped
/// by default, the flow left as a plain SYN leaves it, so the client's
/// data after the handshake (RFC 7413 §4.2.2: it sends the SYN again
/// without data) is judged from the stream's first byte; passed under
/// `--unjudged pass`, the flow forgotten.
#[test]
fn tcp_fast_open() {
    for unjudged_drop in [true, false] {
        let mut rig = Rig::with(BLOCK, ALLOW, LoadOptions::default(), unjudged_drop, TlsPolicy::default());
        let mode = if unjudged_drop { "--unjudged drop" } else { "--unjudged pass" };
        let tfo = |f: &Flow, payload: &[u8]| tcp_frame(f, f.client_isn, flags::SYN, payload);
        let not_judged = || {
            let w = if unjudged_drop {
                Want::drop(Counter::TlsSynData).extra(Counter::UnjudgedDrop)
            } else {
                Want::pass(Counter::TlsSynData)
            };
            w.extra(Counter::TcpFastOpen)
        };
        let mut scripts = Vec::new();
        for (kind, spec) in
            [(HelloKind::Small, tcp4()), (HelloKind::PostQuantum, layout("QinQ/IPv6+hbh+routing+dest-opts"))]
        {
            let hello = Hello::rustls(Some("www.blocked.example"), kind);
            let (s, len, sni) = (&hello.stream, hello.len(), hello.name());
            let f = rig.flow(&spec);
            let mut sc = Script::new(format!("{kind:?}: a whole blocked ClientHello in the SYN"));
            let rst = Want { rst: Some((f.clone(), 0, f.seq_at(len))), ..Want::reset(&f, len) };
            sc.push(
                "SYN+data",
                tfo(&f, s),
                rst.extra(Counter::TcpFastOpen).rule(Some("blocked.example")).sni(sni.as_deref()),
            );
            sc.push("ACK", f.ack_at(len), Want::blocked_flow());
            sc.send(&f, s, 0, len, Want::blocked_flow());
            scripts.push(sc);

            let f = rig.flow(&spec);
            let cut = hello.sni_first().expect("named");
            let mut sc = Script::new(format!("{kind:?}: the SYN carries the ClientHello up to the name"));
            sc.push("SYN+data", tfo(&f, &s[..cut]), not_judged());
            if unjudged_drop {
                // The rest first: the flow waits for its first byte.
                sc.send(&f, s, cut, len, Want::drop(Counter::TlsOutOfOrder));
                sc.push("SYN again, without data", f.syn(), Want::pass(Counter::TcpSyn));
                sc.send(&f, s, 0, len, Want::reset(&f, len).rule(Some("blocked.example")).sni(sni.as_deref()));
            } else {
                sc.send(&f, s, cut, len, Want::pass(Counter::TcpOther));
            }
            scripts.push(sc);
        }
        let ok = Hello::rustls(Some("ok.blocked.example"), HelloKind::Small);
        let blocked = Hello::rustls(Some("www.blocked.example"), HelloKind::Small);
        // The blocked ClientHello sent whole after the handshake: reset.
        let blocked_reset =
            |f: &Flow| Want::reset(f, blocked.len()).rule(Some("blocked.example")).sni(blocked.name().as_deref());
        let f = rig.v6();
        let mut sc = Script::new("an allowed ClientHello in the SYN, then a blocked one after the handshake");
        // Read and looked up (the trace shows it), but not taken.
        sc.push(
            "SYN+data",
            tfo(&f, &ok.stream),
            not_judged().rule(Some("ok.blocked.example")).sni(ok.name().as_deref()),
        );
        sc.send(&f, &blocked.stream, 0, blocked.len(), blocked_reset(&f));
        scripts.push(sc);
        let f = rig.v4();
        let mut sc = Script::new("a SYN, then a SYN with another number and data: the first byte stays");
        sc.push("SYN", f.syn(), Want::pass(Counter::TcpSyn));
        sc.push(
            "SYN+data, another number",
            tcp_frame(&f, f.client_isn.wrapping_add(100_000), flags::SYN, &ok.stream),
            not_judged(),
        );
        sc.send(&f, &blocked.stream, 0, blocked.len(), blocked_reset(&f));
        scripts.push(sc);
        let f = rig.v4();
        let mut sc = Script::new("an allowed ClientHello in a SYN, then a blocked one in the SYN again");
        sc.push(
            "SYN+data",
            tfo(&f, &ok.stream),
            not_judged().rule(Some("ok.blocked.example")).sni(ok.name().as_deref()),
        );
        let rst = Want { rst: Some((f.clone(), 0, f.seq_at(blocked.len()))), ..Want::reset(&f, blocked.len()) };
        sc.push(
            "SYN+data again",
            tfo(&f, &blocked.stream),
            rst.extra(Counter::TcpFastOpen).rule(Some("blocked.example")).sni(blocked.name().as_deref()),
        );
        scripts.push(sc);
        let f = rig.v4();
        // Dropped, the flow waits in `NEW_FLOWS` for its first byte.
        let open = usize::from(unjudged_drop);
        let mut sc = Script::new("an HTTP request in the SYN").leaves_open(open);
        let get = b"GET / HTTP/1.1\r\nHost: www.blocked.example\r\n\r\n";
        sc.push("SYN+data", tfo(&f, get), not_judged());
        let after = if unjudged_drop { Want::drop(Counter::TlsOutOfOrder) } else { Want::pass(Counter::TcpOther) };
        sc.push("more data", f.segment(get.len(), get), after);
        scripts.push(sc);
        let none = Hello::rustls(None, HelloKind::Small);
        let f = rig.v4();
        let mut sc = Script::new("a ClientHello without a name in the SYN").leaves_open(open);
        sc.push("SYN+data", tfo(&f, &none.stream), not_judged().extra(Counter::TlsNoSni));
        scripts.push(sc);
        rig.run(&format!("TCP Fast Open, {mode}"), &scripts);
    }
}

/// `stream` with `f` applied to a copy.
fn edited(stream: &[u8], f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut s = stream.to_vec();
    f(&mut s);
    s
}

/// `stream` (one `ClientHello`) with a `server_name_list` of these
/// (`name_type`, data) entries.
fn with_name_list(stream: &[u8], entries: &[(u8, &[u8])]) -> Vec<u8> {
    let mut list = Vec::new();
    for (t, data) in entries {
        list.push(*t);
        list.extend_from_slice(&u16::try_from(data.len()).expect("a short entry").to_be_bytes());
        list.extend_from_slice(data);
    }
    let mut ext = u16::try_from(list.len()).expect("a short list").to_be_bytes().to_vec();
    ext.extend_from_slice(&list);
    tls::with_extensions(stream, |exts| {
        let sni = exts.iter_mut().find(|(t, _)| *t == tls::EXT_SERVER_NAME).expect("a server_name extension");
        sni.1 = ext;
    })
}

/// Rows of one-segment `ClientHello`s (from `s`, naming
/// www.blocked.example) that servers accept and a strict parser would
/// refuse; see `maps::parse::tls` for which server accepts what.
fn accepted_rows(rig: &mut Rig, s: &[u8]) -> Vec<Script> {
    let mut scripts = Vec::new();
    // What servers accept and the program must judge: the blocked name is
    // reset (see `maps::parse::tls` for which server accepts what).
    let versions = |v: [u8; 2]| edited(s, |b| b[1..3].copy_from_slice(&v));
    let accepted: Vec<(String, Vec<u8>)> = [[3, 5], [3, 0xff], [0, 0], [0, 1], [0x0a, 0x0a], [0xff, 0xff]]
        .into_iter()
        .map(|v| (format!("record version {v:02x?}"), versions(v)))
        .chain([
            ("record version 0a0a in three records".to_owned(), tls::refragment(&versions([0x0a, 0x0a]), &[40, 40])),
            ("an empty first record".to_owned(), [&[0x16, 3, 1, 0, 0][..], s].concat()),
            ("an empty record inside the ClientHello".to_owned(), tls::refragment(s, &[50, 0])),
            (
                "32 empty records inside the ClientHello".to_owned(),
                tls::refragment(s, &[[50].as_slice(), &[0; 32]].concat()),
            ),
            ("a record of 16641 bytes".to_owned(), edited(s, |b| b[3..5].copy_from_slice(&16641u16.to_be_bytes()))),
            ("a record of 65535 bytes".to_owned(), edited(s, |b| b[3..5].copy_from_slice(&[0xff, 0xff]))),
            (
                "another name_type before the host_name".to_owned(),
                with_name_list(s, &[(1, b"opaque"), (0, b"www.blocked.example")]),
            ),
            (
                "other name_types around the host_name".to_owned(),
                with_name_list(s, &[(7, b"a"), (0, b"www.blocked.example"), (9, b"zz")]),
            ),
        ])
        .collect();
    for (desc, payload) in accepted {
        let f = rig.v4();
        let mut sc = Script::new(desc);
        sc.syn(&f);
        let want = Want::reset(&f, payload.len()).rule(Some("blocked.example")).sni(Some(b"www.blocked.example"));
        sc.push("data", f.segment(0, &payload), want);
        sc.push("FIN", f.fin_at(payload.len()), Want::blocked_flow());
        scripts.push(sc);
    }
    // The same in 1-byte records, in segments of 20 records (one alone
    // would take more parser steps than a segment may): pending up to the
    // segment with the name's last byte, which is reset.
    let named = with_name_list(s, &[(1, b"opaque"), (0, b"www.blocked.example")]);
    let hs = tls::handshake_bytes(&named);
    let stream = tls::refragment(&named, &vec![1; hs.len()]);
    let last = hs.windows(19).position(|w| w == b"www.blocked.example").expect("the name") + 18;
    // Handshake byte `i` is the sixth byte of record `i`.
    let decided = 6 * last + 5;
    let f = rig.v4();
    let mut sc = Script::new("another name_type first, in 1-byte records, 120-byte segments");
    sc.syn(&f);
    for (a, b) in bounds(stream.len(), &(120..stream.len()).step_by(120).collect::<Vec<_>>()) {
        let want = if b <= decided {
            Want::pass(Counter::TlsPending)
        } else if a <= decided {
            Want::reset(&f, b).rule(Some("blocked.example")).sni(Some(b"www.blocked.example"))
        } else {
            Want::blocked_flow()
        };
        sc.send(&f, &stream, a, b, want);
    }
    scripts.push(sc);
    // The same with an allowed name: it passes, judged.
    let allowed_second = with_name_list(s, &[(1, b"opaque"), (0, b"ok.blocked.example")]);
    let f = rig.v6();
    let mut sc = Script::new("another name_type before an allowed host_name");
    sc.syn(&f);
    let want = Want::pass(Counter::TlsPassAllowed).rule(Some("ok.blocked.example")).sni(Some(b"ok.blocked.example"));
    sc.push("data", f.segment(0, &allowed_second), want);
    scripts.push(sc);
    scripts
}

/// Rows whose first data is one segment of `payload` on a tracked flow (SYN,
/// data, FIN), for streams that are not TLS, that the parser refuses, or
/// that only a lenient parser reads.
fn first_data_rows(rig: &mut Rig) -> Vec<Script> {
    let hello = Hello::rustls(Some("www.blocked.example"), HelloKind::Small);
    let ok = Hello::rustls(Some("ok.blocked.example"), HelloKind::Small);
    let s = &hello.stream;
    let not_ch = Want::pass(Counter::TlsNotClientHello);
    let malformed = Want::pass(Counter::TlsMalformed);
    let padded_first = tls::with_extensions(s, |e| e.insert(0, (21, vec![0; 4200])));
    let padded_last = tls::with_extensions(s, |e| e.push((21, vec![0; 4200])));
    let two_names = tls::with_extensions(&ok.stream, |e| {
        let blocked = tls::hello_layout(s);
        let (_, data) = blocked.extensions.iter().find(|(t, _)| *t == tls::EXT_SERVER_NAME).expect("named");
        e.push((tls::EXT_SERVER_NAME, tls::handshake_bytes(s)[data.clone()].to_vec()));
    });
    let ccs_inside = edited(&tls::refragment(s, &[100]), |b| b[105] = 0x14);
    let mut app = Hello::rustls(Some("pq.blocked.example"), HelloKind::PostQuantum).stream;
    for _ in 0..6 {
        app.extend_from_slice(&[0x17, 3, 3, 0x03, 0xe8]);
        app.extend_from_slice(&[0xa5; 1000]);
    }
    let rows: Vec<(&str, Vec<u8>, Want)> = vec![
        ("an HTTP request", b"GET / HTTP/1.1\r\nHost: www.blocked.example\r\n\r\n".to_vec(), not_ch.clone()),
        ("an SSH banner", b"SSH-2.0-OpenSSH_9.6\r\n".to_vec(), not_ch.clone()),
        ("a TLS alert record", vec![0x15, 3, 3, 0, 2, 2, 40], not_ch.clone()),
        ("a handshake record holding a ServerHello", edited(s, |b| b[5] = 2), not_ch.clone()),
        ("an SSLv2-compatible ClientHello", vec![0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15], not_ch.clone()),
        ("a change_cipher_spec record inside the ClientHello", ccs_inside, malformed.clone()),
        ("a handshake length one too long", edited(s, |b| b[8] = b[8].wrapping_add(1)), malformed.clone()),
        (
            "two host_names in the server_name list",
            with_name_list(s, &[(0, b"www.blocked.example"), (0, b"ok.blocked.example")]),
            malformed.clone(),
        ),
        (
            "two host_names apart in the server_name list",
            with_name_list(s, &[(0, b"ok.blocked.example"), (1, b"x"), (0, b"www.blocked.example")]),
            malformed.clone(),
        ),
        ("the name past the segment's first 4096 bytes", padded_first.clone(), malformed.clone()),
        (
            "two server_name extensions: the first, allowed, decides",
            two_names,
            Want::pass(Counter::TlsPassAllowed).rule(Some("ok.blocked.example")).sni(ok.name().as_deref()),
        ),
    ];
    let mut scripts = accepted_rows(rig, s);
    for (desc, payload, want) in rows {
        let f = rig.v4();
        let mut sc = Script::new(desc);
        sc.syn(&f);
        sc.push("data", f.segment(0, &payload), want);
        sc.push("FIN", f.fin_at(payload.len()), Want::pass(Counter::TcpNoPayload));
        scripts.push(sc);
    }
    // Long segments (multi-buffer frames): judged as long as the name lies
    // in the first 4096 bytes; the RST acknowledges the whole segment.
    for (desc, payload, name) in [
        ("a 4200-byte padding extension after the name", padded_last, "www.blocked.example"),
        ("a post-quantum ClientHello and 6000 bytes of application data", app, "pq.blocked.example"),
    ] {
        let f = rig.v6();
        let mut sc = Script::new(desc);
        sc.syn(&f);
        let reset = Want::reset(&f, payload.len()).rule(Some("blocked.example")).sni(Some(name.as_bytes()));
        sc.push("data", f.segment(0, &payload), reset);
        scripts.push(sc);
    }
    let f = rig.v4();
    let padded = Hello::new(padded_first);
    let fate = rig.fate(&padded, &blocked("blocked.example"));
    scripts.push(rig.delivery("the name past 4096 bytes, in two segments", &f, &padded, &[3000], &fate));
    scripts
}

/// Rows of flows whose SYN was not seen (established before the program
/// started, or when the table was full): a segment that starts like a
/// `ClientHello` is parsed from its first byte and the flow tracked from
/// there; other segments are passed unseen.
fn untracked_rows(rig: &mut Rig) -> Vec<Script> {
    let hello = Hello::rustls(Some("www.blocked.example"), HelloKind::Small);
    let (s, len, sni) = (&hello.stream, hello.len(), hello.name());
    let cut = hello.sni_first().expect("named") + 1;
    let reset = |f: &Flow, end: usize| Want::reset(f, end).rule(Some("blocked.example")).sni(sni.as_deref());
    let pending = Want::pass(Counter::TlsPending);
    let mut scripts = Vec::new();
    for first in [len, cut, 1, 3, 5] {
        let f = rig.v4();
        let mut sc = Script::new(format!("no SYN: the first {first} bytes, then the rest"));
        if first == len {
            sc.send(&f, s, 0, len, reset(&f, len));
        } else {
            sc.send(&f, s, 0, first, pending.clone());
            sc.send(&f, s, first, len, reset(&f, len));
        }
        sc.push("FIN", f.fin_at(len), Want::blocked_flow());
        scripts.push(sc);
    }
    // Any record version starts a ClientHello, as it does at a Go server.
    for v in [[0u8, 1], [0x0a, 0x0a]] {
        let f = rig.v6();
        let stream = edited(s, |b| b[1..3].copy_from_slice(&v));
        let mut sc = Script::new(format!("no SYN: record version {v:02x?}"));
        sc.send(&f, &stream, 0, cut, pending.clone());
        sc.send(&f, &stream, cut, len, reset(&f, len));
        scripts.push(sc);
    }
    // The limit of flows whose SYN was not seen: a later segment sent first
    // is not recognised, so it passes; the first one is still followed.
    let f = rig.v6();
    let mut sc = Script::new("no SYN, reordered: the second segment passes unseen");
    sc.send(&f, s, cut, len, Want::pass(Counter::TcpOther));
    sc.send(&f, s, 0, cut, pending.clone());
    sc.send(&f, s, cut, len, reset(&f, len));
    scripts.push(sc);
    let f = rig.v4();
    let mut sc = Script::new("no SYN: not a ClientHello");
    sc.push("application data", f.segment(0, b"\x17\x03\x03\x00\x05hello"), Want::pass(Counter::TcpOther));
    sc.push("HTTP", f.segment(10, b"GET / HTTP/1.1\r\n\r\n"), Want::pass(Counter::TcpOther));
    sc.push("ACK", f.ack_at(28), Want::pass(Counter::TcpNoPayload));
    sc.push("RST", tcp_frame(&f, f.seq_at(28), flags::RST, &[]), Want::pass(Counter::TcpNoPayload));
    scripts.push(sc);
    let f = rig.v4();
    let mut frag = f.segment(0, s);
    packet::set_ipv4_frag(&mut frag, 14, 0x2000);
    let mut sc = Script::new("an IPv4 first fragment carrying a whole blocked ClientHello");
    sc.push("first fragment", frag, Want::pass(Counter::TcpFragment));
    scripts.push(sc);
    scripts
}

/// What is not TLS, what the parser refuses, and flows whose SYN was not
/// seen; see [`first_data_rows`] and [`untracked_rows`].
#[test]
fn not_tls_malformed_and_untracked() {
    let mut rig = Rig::new(TlsPolicy::default());
    let mut scripts = first_data_rows(&mut rig);
    scripts.extend(untracked_rows(&mut rig));
    rig.run("not TLS, malformed, untracked", &scripts);
}

/// The same frame when the program runs fail-closed: what it should have
/// judged and could not is dropped (the outcome unchanged,
/// `fail_closed_drop` counted on top); everything else is unchanged.
fn fail_closed(w: Want) -> Want {
    if w.outcome.kind() == CounterKind::Unjudged {
        Want { action: XDP_DROP, ..w }.extra(Counter::UnjudgedDrop)
    } else {
        w
    }
}

/// Fail-closed: the rows of [`not_tls_malformed_and_untracked`], names the
/// program refuses and too many records, with every malformed frame
/// dropped; blocked, allowed and unnamed `ClientHello`s as before.
#[test]
fn fail_closed_tls() {
    let mut rig = Rig::with(BLOCK, ALLOW, LoadOptions::default(), true, TlsPolicy::default());
    let mut scripts = first_data_rows(&mut rig);
    scripts.extend(untracked_rows(&mut rig));
    let template = Hello::rustls(Some("x.example"), HelloKind::Small);
    let named = [
        ("a bad name", template.renamed(b"www..blocked.example"), Judgement::BadName),
        ("65 records", template.renamed(b"www.blocked.example").refragment(&[1; 64]), blocked("blocked.example")),
        ("blocked", Hello::rustls(Some("blocked.example"), HelloKind::PostQuantum), blocked("blocked.example")),
        ("allowed", Hello::rustls(Some("ok.blocked.example"), HelloKind::Ech), allowed("ok.blocked.example")),
        ("no name", Hello::rustls(None, HelloKind::Small), Judgement::NoMatch),
    ];
    for (desc, hello, judgement) in named {
        let fate = rig.fate(&hello, &judgement);
        for cuts in [vec![], vec![hello.len() / 3, 2 * hello.len() / 3]] {
            let f = rig.v6();
            scripts.push(rig.delivery(format!("{desc}, cuts {cuts:?}"), &f, &hello, &cuts, &fate));
        }
    }
    for sc in &mut scripts {
        for f in &mut sc.frames {
            f.want = fail_closed(f.want.clone());
        }
    }
    assert!(scripts.iter().flat_map(|s| &s.frames).filter(|f| f.want.action == XDP_DROP).count() >= 12);
    rig.run("fail-closed", &scripts);
}

/// Flows of mutated streams in the fuzz loop.
const FUZZ_FLOWS: usize = 1500;
/// Flows whose mutations touch only bytes the parser skips.
const OPAQUE_FLOWS: usize = 300;

/// Stream offsets and widths of the length fields of a single-record
/// `ClientHello`: record, message, session id, cipher suites, compression
/// methods, extensions block, each extension, and the name's list and entry.
fn length_fields(h: &Hello) -> Vec<(usize, usize)> {
    let l = &h.layout;
    let at = |hs: usize| h.offsets[hs];
    let mut fields = vec![(3, 2), (at(1), 3), (at(l.session_id.start - 1), 1), (at(l.cipher_suites.start - 2), 2)];
    fields.push((at(l.compression_methods.start - 1), 1));
    if !l.extensions.is_empty() {
        fields.push((at(l.compression_methods.end), 2));
    }
    for (t, data) in &l.extensions {
        fields.push((at(data.start - 2), 2));
        if *t == tls::EXT_SERVER_NAME {
            fields.extend([(at(data.start), 2), (at(data.start + 3), 2)]);
        }
    }
    fields
}

/// A mutation of `h`'s stream (one record) and its description: bytes
/// flipped, cut short, a length field changed, re-cut into random records
/// and a bit flipped, a byte inserted or removed.
fn mutate(h: &Hello, rng: &mut StdRng) -> (String, Vec<u8>) {
    let mut s = h.stream.clone();
    let len = s.len();
    match rng.random_range(0..5) {
        0 => {
            let ats: Vec<usize> = (0..rng.random_range(1..=4)).map(|_| rng.random_range(0..len)).collect();
            for &at in &ats {
                s[at] ^= rng.random_range(1..=255u8);
            }
            (format!("bytes at {ats:?} changed"), s)
        }
        1 => {
            let k = rng.random_range(1..len);
            s.truncate(k);
            (format!("cut to {k} bytes"), s)
        }
        2 => {
            let (at, width) = *length_fields(h).choose(rng).expect("length fields");
            let delta: i64 = *[1, -1, 2, -2, 0x100, -0x100, 0x7fff].choose(rng).expect("deltas");
            let mask = (1i64 << (8 * width)) - 1;
            let old = s[at..at + width].iter().fold(0i64, |a, &b| a << 8 | i64::from(b));
            let new = (old + delta) & mask;
            s[at..at + width].copy_from_slice(&new.to_be_bytes()[8 - width..]);
            (format!("length at {at} ({width} bytes) {old} -> {new}"), s)
        }
        3 => {
            let sizes: Vec<usize> = (0..rng.random_range(1..70)).map(|_| rng.random_range(1..60)).collect();
            let mut r = tls::refragment(&s, &sizes);
            let at = rng.random_range(0..r.len());
            r[at] ^= 1 << rng.random_range(0..8);
            (format!("records of {sizes:?}, bit flipped at {at}"), r)
        }
        _ => {
            let at = rng.random_range(1..len);
            if rng.random() {
                s.insert(at, rng.random());
                (format!("a byte inserted at {at}"), s)
            } else {
                s.remove(at);
                (format!("the byte at {at} removed"), s)
            }
        }
    }
}

/// A mutation of bytes the parser must skip: `legacy_version`, `random`,
/// the contents of the session id, cipher suites and compression methods
/// vectors, and the data of extensions other than `server_name` (types
/// and lengths untouched).
fn mutate_opaque(h: &Hello, rng: &mut StdRng) -> (String, Vec<u8>) {
    let l = &h.layout;
    let mut ranges =
        vec![4..6, l.random.clone(), l.session_id.clone(), l.cipher_suites.clone(), l.compression_methods.clone()];
    ranges.extend(l.extensions.iter().filter(|(t, _)| *t != tls::EXT_SERVER_NAME).map(|(_, r)| r.clone()));
    ranges.retain(|r| !r.is_empty());
    let mut s = h.stream.clone();
    let mut ats = Vec::new();
    for _ in 0..rng.random_range(1..=16) {
        let r = ranges.choose(rng).expect("opaque ranges");
        let at = h.offsets[rng.random_range(r.clone())];
        s[at] = rng.random();
        ats.push(at);
    }
    (format!("skipped bytes at {ats:?} changed"), s)
}

/// A seeded fuzz loop over real `ClientHello` streams, mutated, cut at
/// random, with random retransmissions. Every frame must get what the
/// design's reference gets from the shared parser run on the host
/// ([`Reference`]): never `XDP_ABORTED`, exactly one known outcome, the
/// same verdict in the same segment, a valid RST. And a mutation of only
/// bytes the parser skips changes nothing: the flow is decided exactly as
/// the unmutated one ([`fate`]).
#[test]
fn fuzz_mutated_streams() {
    let mut rig = Rig::new(TlsPolicy::default());
    let mut rng = StdRng::seed_from_u64(0xf022);
    let bases = [
        (HelloKind::Small, "www.blocked.example", blocked("blocked.example")),
        (HelloKind::PostQuantum, "blocked.example", blocked("blocked.example")),
        (HelloKind::Ech, "ok.blocked.example", allowed("ok.blocked.example")),
        (HelloKind::Small, "x.ok.blocked.example", allowed("ok.blocked.example")),
        (HelloKind::PostQuantum, "www.example.org", Judgement::NoMatch),
        (HelloKind::NoSni, "blocked.example", Judgement::NoMatch),
    ]
    .map(|(kind, name, j)| (Hello::rustls(Some(name), kind), j, format!("{kind:?} {name}")));
    let layouts = layouts();
    let mut scripts = Vec::new();
    for i in 0..FUZZ_FLOWS {
        let (base, _, bname) = bases.choose(&mut rng).expect("bases");
        let (how, stream) = mutate(base, &mut rng);
        let n = rng.random_range(0..8);
        let cuts = random_cuts(&mut rng, stream.len(), n);
        let flow = rig.flow(&layouts.choose(&mut rng).expect("layouts").1);
        let mut r = rig.reference();
        let mut sc = Script::new(format!("fuzz #{i}: {bname}, {how}, cuts {cuts:?}"));
        sc.push("SYN", flow.syn(), r.syn());
        let segments = bounds(stream.len(), &cuts);
        for (k, &(a, b)) in segments.iter().enumerate() {
            let want = r.data(&flow, a, &stream[a..b]);
            sc.send(&flow, &stream, a, b, want);
            if rng.random_ratio(1, 6) {
                let (a, b) = segments[rng.random_range(0..=k)];
                let want = r.data(&flow, a, &stream[a..b]);
                sc.send(&flow, &stream, a, b, want);
            }
        }
        sc.push("FIN", flow.fin_at(stream.len()), r.empty(true, stream.len()));
        // A first segment retransmitted after the verdict is a new
        // ClientHello to the filter; the FIN past it does not end it.
        let open = r.open();
        scripts.push(sc.leaves_open(open));
    }
    for i in 0..OPAQUE_FLOWS {
        let (base, judgement, bname) = bases.choose(&mut rng).expect("bases");
        let (how, stream) = mutate_opaque(base, &mut rng);
        let hello = Hello::new(stream);
        let n = rng.random_range(0..8);
        let cuts = random_cuts(&mut rng, hello.len(), n);
        let flow = rig.flow(&layouts.choose(&mut rng).expect("layouts").1);
        let desc = format!("opaque #{i}: {bname}, {how}, cuts {cuts:?}");
        scripts.push(rig.delivery(desc, &flow, &hello, &cuts, &rig.fate(base, judgement)));
    }
    // The loop must reach every way a stream can end, or it tests little.
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for f in scripts.iter().flat_map(|s| &s.frames) {
        *seen.entry(f.want.outcome.name()).or_default() += 1;
    }
    eprintln!("fuzz: outcomes wanted {seen:?}");
    for c in [
        Counter::TlsPending,
        Counter::TlsReset,
        Counter::TlsBlockedFlow,
        Counter::TlsPassAllowed,
        Counter::TlsPassNoMatch,
        Counter::TlsPassNoSni,
        Counter::TlsMalformed,
        Counter::TlsNotClientHello,
        Counter::TlsRetransmission,
        Counter::TcpOther,
    ] {
        assert!(seen.contains_key(c.name()), "no fuzz row wants {}", c.name());
    }
    rig.run("fuzz", &scripts);
}

// Regressions: minimal rows for bugs the tables above found, each named
// for the behaviour it pins down.

/// `ech_block`: an allowed `ClientHello` whose `encrypted_client_hello`
/// comes after the name, whole in one segment, is blocked and counted: the
/// program reads on past the name in the same segment. (It once passed,
/// uncounted, and only reading on into a later segment blocked.)
#[test]
fn ech_after_the_name_in_one_segment_blocks() {
    let mut rig = Rig::new(TlsPolicy { ech_block: true, ..TlsPolicy::default() });
    let hello = Hello::rustls(Some("ok.blocked.example"), HelloKind::Ech);
    assert!(hello.ech() && !hello.ech_before_sni());
    let f = rig.v4();
    let mut sc = Script::new("ECH after the allowed name, one segment");
    sc.syn(&f);
    let want = Want::reset(&f, hello.len()).extra(Counter::TlsEch).rule(Some("ok.blocked.example"));
    sc.send(&f, &hello.stream, 0, hello.len(), want.sni(hello.name().as_deref()));
    rig.run("regression", &[sc]);
}

/// `ech_block`: reading on past an allowed name into a later segment and
/// finding ECH there counts `tls_ech` once (it was once counted twice).
#[test]
fn ech_found_in_a_later_segment_counted_once() {
    let mut rig = Rig::new(TlsPolicy { ech_block: true, ..TlsPolicy::default() });
    let hello = Hello::rustls(Some("ok.blocked.example"), HelloKind::Ech);
    let (len, last) = (hello.len(), hello.sni_last().expect("named"));
    let f = rig.v4();
    let mut sc = Script::new("ECH after the allowed name, in the next segment");
    sc.syn(&f);
    let judged = Want::pass(Counter::TlsPending).rule(Some("ok.blocked.example")).sni(hello.name().as_deref());
    sc.send(&f, &hello.stream, 0, last + 1, judged);
    sc.send(&f, &hello.stream, last + 1, len, Want::reset(&f, len).extra(Counter::TlsEch));
    rig.run("regression", &[sc]);
}

/// `ech_block`: a name an allow rule matched, without ECH, whose
/// `ClientHello` ends in a later segment, ends as `tls_pass_allowed` (it
/// was once counted `tls_pass_no_match`).
#[test]
fn allowed_name_keeps_its_outcome_after_reading_on() {
    let mut rig = Rig::new(TlsPolicy { ech_block: true, ..TlsPolicy::default() });
    let hello = Hello::rustls(Some("ok.blocked.example"), HelloKind::Small);
    let (len, last) = (hello.len(), hello.sni_last().expect("named"));
    let f = rig.v4();
    let mut sc = Script::new("no ECH, allowed name, the ClientHello ends in the next segment");
    sc.syn(&f);
    let judged = Want::pass(Counter::TlsPending).rule(Some("ok.blocked.example")).sni(hello.name().as_deref());
    sc.send(&f, &hello.stream, 0, last + 1, judged);
    sc.send(&f, &hello.stream, last + 1, len, Want::pass(Counter::TlsPassAllowed));
    sc.push("FIN", f.fin_at(len), Want::pass(Counter::TcpNoPayload));
    rig.run("regression", &[sc]);
}

/// Evasion: a RST outside the server's window is ignored by the server
/// (RFC 9293 §3.10.7.4, RFC 5961 §3), so it must not make the filter
/// forget a `ClientHello` in progress either, or the rest would pass as
/// untracked traffic and complete the name at the server. Only a RST or
/// FIN at the next expected byte ends tracking.
#[test]
fn out_of_window_rst_keeps_a_pending_flow() {
    let mut rig = Rig::new(TlsPolicy::default());
    let hello = Hello::rustls(Some("www.blocked.example"), HelloKind::Small);
    let (len, cut) = (hello.len(), hello.sni_first().expect("named") + 2);
    let f = rig.v4();
    let mut sc = Script::new("the first part, a RST 1 MB ahead, the rest");
    sc.syn(&f);
    sc.send(&f, &hello.stream, 0, cut, Want::pass(Counter::TlsPending));
    sc.push("RST", tcp_frame(&f, f.seq_at(cut + 1_000_000), flags::RST, &[]), Want::pass(Counter::TcpNoPayload));
    let reset = Want::reset(&f, len).rule(Some("blocked.example")).sni(hello.name().as_deref());
    sc.send(&f, &hello.stream, cut, len, reset);
    rig.run("regression", &[sc]);
}

/// Where a flow's stream starts: for one tracked from its SYN, a segment
/// starting before the first byte is another connection's or forged, and
/// is dropped; for one first seen in the middle (here: plain text before a
/// STARTTLS-like `ClientHello`, so the filter forgot the flow and took it
/// up again at the hello), bytes before the hello are the connection's
/// own, and their retransmission passes (the fuzz loop found it dropped).
#[test]
fn stream_start_known_or_guessed() {
    let mut rig = Rig::new(TlsPolicy::default());
    let hello = Hello::rustls(Some("www.blocked.example"), HelloKind::Small);
    let (len, cut) = (hello.len(), hello.sni_first().expect("named") + 2);
    let reset = |f: &Flow, end: usize| Want::reset(f, end).rule(Some("blocked.example")).sni(hello.name().as_deref());

    let f = rig.v4();
    let mut known = Script::new("from the SYN: data before the stream start");
    known.syn(&f);
    known.send(&f, &hello.stream, 0, cut, Want::pass(Counter::TlsPending));
    let before = tcp_frame(&f, f.seq_at(0).wrapping_sub(100), flags::ACK, &hello.stream[..50]);
    known.push("50 bytes 100 before the start", before, Want::drop(Counter::TlsOutOfWindow));
    known.send(&f, &hello.stream, cut, len, reset(&f, len));

    let f = rig.v4();
    let mut stream = b"EHLO client.example\r\nSTARTTLS\r\n".to_vec();
    let p = stream.len();
    stream.extend_from_slice(&hello.stream);
    let mut guessed = Script::new("plain text, then a ClientHello, then the text again");
    guessed.syn(&f);
    guessed.send(&f, &stream, 0, p, Want::pass(Counter::TlsNotClientHello));
    guessed.send(&f, &stream, p, p + cut, Want::pass(Counter::TlsPending));
    guessed.send(&f, &stream, 0, p, Want::pass(Counter::TlsRetransmission));
    guessed.send(&f, &stream, p + cut, p + len, reset(&f, p + len));
    rig.run("regression", &[known, guessed]);
}

/// Evasion: a SYN on a blocked flow's 4-tuple must not replace the block.
/// A client ignoring the RST could send such a SYN with an initial
/// sequence number just past its stream, then its `ClientHello` again at
/// the old sequence numbers, "wholly before the next expected byte", and
/// the server, whose connection is still open (it answers the SYN with a
/// challenge ACK, RFC 5961 §4), would get the name. Every later packet of
/// a blocked flow is dropped, the SYN too.
#[test]
fn syn_keeps_a_block() {
    let mut rig = Rig::new(TlsPolicy::default());
    let hello = Hello::rustls(Some("www.blocked.example"), HelloKind::Small);
    let len = hello.len();
    let f = rig.v4();
    let mut sc = Script::new("blocked, then a SYN past the stream, then the ClientHello again");
    sc.syn(&f);
    let reset = Want::reset(&f, len).rule(Some("blocked.example")).sni(hello.name().as_deref());
    sc.send(&f, &hello.stream, 0, len, reset);
    sc.push("SYN", tcp_frame(&f, f.seq_at(len + 10_000), flags::SYN, &[]), Want::blocked_flow());
    sc.send(&f, &hello.stream, 0, len, Want::blocked_flow());
    rig.run("regression", &[sc]);
}

/// Stall: a duplicate SYN arriving after the first data (reordered, or a
/// retransmitted SYN overtaken) must leave a pending flow as it is. Reset
/// to "SYN seen", the rest of the `ClientHello` would be past the next
/// expected byte and dropped as out of order, and since the server
/// acknowledged the first part the client would never send it again.
#[test]
fn duplicate_syn_keeps_a_pending_flow() {
    let mut rig = Rig::new(TlsPolicy::default());
    let hello = Hello::rustls(Some("www.ok.blocked.example"), HelloKind::Small);
    let (len, cut) = (hello.len(), hello.sni_first().expect("named"));
    let f = rig.v4();
    let mut sc = Script::new("the first part, the SYN again, the rest");
    sc.syn(&f);
    sc.send(&f, &hello.stream, 0, cut, Want::pass(Counter::TlsPending));
    sc.syn(&f);
    let pass = Want::pass(Counter::TlsPassAllowed).rule(Some("ok.blocked.example")).sni(hello.name().as_deref());
    sc.send(&f, &hello.stream, cut, len, pass);
    sc.push("FIN", f.fin_at(len), Want::pass(Counter::TcpNoPayload));
    rig.run("regression", &[sc]);
}

/// Untracked flows: whether a segment starts like a `ClientHello` is read
/// from the segment, up to the end of the IP packet, not of the frame. A
/// 1-byte segment without TCP options over IPv4 is a 55-byte frame, padded
/// to Ethernet's 60 bytes on the wire: the lone 0x16 must be parsed
/// (pending) and the rest reset, not the padding read as payload.
#[test]
fn untracked_start_ignores_ethernet_padding() {
    let mut rig = Rig::new(TlsPolicy::default());
    let hello = Hello::rustls(Some("www.blocked.example"), HelloKind::Small);
    let len = hello.len();
    let f = rig.v4().without_timestamps();
    let mut first = f.segment(0, &hello.stream[..1]);
    assert_eq!(first.len(), 55);
    first.resize(60, 0);
    let mut sc = Script::new("no SYN: 0x16 in a padded 60-byte frame, then the rest");
    sc.push("[0..1) padded", first, Want::pass(Counter::TlsPending));
    let reset = Want::reset(&f, len).rule(Some("blocked.example")).sni(hello.name().as_deref());
    sc.send(&f, &hello.stream, 1, len, reset);
    rig.run("regression", &[sc]);
}

/// Off-path senders, who do not know a connection's sequence numbers,
/// cannot make the filter freeze or block someone else's connection: a
/// spoofed ClientHello, SYN or start of a ClientHello on the victim's
/// addresses and ports (with numbers of the sender's choosing) touches only
/// a window of the sequence space the victim's segments are not in. A
/// client that was blocked and connects again from the same port with a new
/// initial sequence number cannot get its ClientHello followed while the
/// blocked entry lasts: not judged.
#[test]
fn off_path_senders_cannot_freeze_a_connection() {
    let mut rig = Rig::new(TlsPolicy::default());
    let bad = Hello::rustls(Some("www.blocked.example"), HelloKind::Small);
    let ok = Hello::rustls(Some("www.ok.blocked.example"), HelloKind::Small);
    let (bad_len, cut) = (bad.len(), bad.sni_first().expect("named"));
    let bad_sni = bad.name().expect("named");
    let allowed = Want::pass(Counter::TlsPassAllowed).rule(Some("ok.blocked.example")).sni(ok.name().as_deref());
    let reset = |f: &Flow, end| Want::reset(f, end).rule(Some("blocked.example")).sni(Some(&bad_sni));
    // The sender's numbers: half the sequence space away from the victim's.
    let spoofed =
        |v: &Flow| v.clone().isns(v.client_isn.wrapping_add(0x8000_0000), v.server_isn.wrapping_add(0x8000_0000));
    let data = b"\x17\x03\x03\x00\x05hello";
    let mut scripts = Vec::new();

    let v = rig.v4();
    let s = spoofed(&v);
    let mut sc = Script::new("a spoofed blocked ClientHello on an allowed connection");
    sc.syn(&v);
    sc.send(&v, &ok.stream, 0, ok.len(), allowed.clone());
    // Reset toward the victim at the sender's numbers, which its stack refuses.
    sc.send(&s, &bad.stream, 0, bad_len, reset(&s, bad_len));
    sc.push("the victim's data", v.segment(ok.len(), data), Want::pass(Counter::TcpOther));
    sc.push("the victim's next data", v.segment(ok.len() + data.len(), data), Want::pass(Counter::TcpOther));
    scripts.push(sc);

    let v = rig.v6();
    let s = spoofed(&v);
    let mut sc = Script::new("a spoofed SYN on an established connection").leaves_open(1);
    sc.syn(&v);
    sc.send(&v, &ok.stream, 0, ok.len(), allowed.clone());
    sc.syn(&s);
    sc.push("the victim's data", v.segment(ok.len(), data), Want::pass(Counter::TcpOther));
    scripts.push(sc);

    let v = rig.v4();
    let s = spoofed(&v);
    let mut sc = Script::new("a spoofed start of a ClientHello on an established connection").leaves_open(1);
    sc.syn(&v);
    sc.send(&v, &ok.stream, 0, ok.len(), allowed);
    sc.send(&s, &bad.stream, 0, cut, Want::pass(Counter::TlsPending));
    sc.push("the victim's data", v.segment(ok.len(), data), Want::pass(Counter::TcpOther));
    // A ClientHello of the victim's own (in its own numbers) cannot be
    // followed while the entry is the sender's: not judged, not replaced.
    sc.send(&v, &bad.stream, 0, bad_len, Want::pass(Counter::TlsNotInWindow));
    scripts.push(sc);

    let v = rig.v4();
    let again = v.clone().isns(v.client_isn.wrapping_add(0x4000_0000), v.server_isn.wrapping_add(0x4000_0000));
    // The second connection's entry takes the blocked one's place.
    // The blocked flow's entry stays the key's: the new connection's SYN is
    // noted, but its ClientHello cannot be followed while the entry lasts
    // (not judged: dropped by default, so the server never gets its start).
    let mut sc = Script::new("a blocked client connects again from the same port").leaves_open(1);
    sc.syn(&v);
    sc.send(&v, &bad.stream, 0, bad_len, reset(&v, bad_len));
    sc.send(&v, &bad.stream, 0, bad_len, Want::blocked_flow());
    sc.syn(&again);
    sc.send(&again, &bad.stream, cut, bad_len, Want::pass(Counter::TcpOther));
    sc.send(&again, &bad.stream, 0, cut, Want::pass(Counter::TlsNotInWindow));
    scripts.push(sc);

    rig.run("off-path senders", &scripts);
}

/// Parser steps one segment holding all of `stream` takes to the verdict
/// (the call that returns it included), as the program counts them.
fn one_segment_steps(stream: &[u8]) -> usize {
    let mut st = TlsState::new();
    let mut buf = Box::new([0u8; TLS_BUF]);
    buf[..stream.len()].copy_from_slice(stream);
    let mut pos = 0;
    let mut steps = 0;
    loop {
        steps += 1;
        if parser::step(&mut st, &buf, stream.len(), &mut pos) != Parsed::Continue {
            return steps;
        }
    }
}

/// Both sides of the bound on parse work per segment
/// ([`SEGMENT_STEPS`]), with `ClientHello`s whose leading bytes are
/// one-byte records: just under it a blocked name is reset and an allowed
/// one passes, judged; one record more and the segment is not judged
/// (`tls_segment_bound`), dropped by the default `--unjudged drop` and
/// passed under `--unjudged pass`.
#[test]
fn segment_bound_both_sides() {
    for unjudged_drop in [true, false] {
        let mut rig = Rig::with(BLOCK, ALLOW, LoadOptions::default(), unjudged_drop, TlsPolicy::default());
        let mut scripts = Vec::new();
        for (name, judgement) in
            [("www.blocked.example", blocked("blocked.example")), ("ok.blocked.example", allowed("ok.blocked.example"))]
        {
            let base = Hello::rustls(Some(name), HelloKind::Small);
            let steps = |k: usize| one_segment_steps(&base.refragment(&vec![1; k]).stream);
            let under = (1..base.layout.end)
                .take_while(|&k| steps(k) <= SEGMENT_STEPS as usize)
                .last()
                .expect("a ClientHello within the bound");
            assert!(under > 30 && steps(under + 1) > SEGMENT_STEPS as usize, "{under}");
            for k in [under, under + 1] {
                let hello = base.refragment(&vec![1; k]);
                let over = k > under;
                let f = rig.v4();
                let mut sc = Script::new(format!(
                    "{name}, {} records ({}), --unjudged {}",
                    hello.records.len(),
                    if over { "one over the bound" } else { "just within the bound" },
                    if unjudged_drop { "drop" } else { "pass" },
                ));
                sc.syn(&f);
                let fate = if over {
                    let w = Want::pass(Counter::TlsSegmentBound);
                    if unjudged_drop { Want { action: XDP_DROP, ..w }.extra(Counter::UnjudgedDrop) } else { w }
                } else {
                    match judgement {
                        Judgement::Block { .. } => {
                            Want::reset(&f, hello.len()).rule(Some("blocked.example")).sni(Some(b"www.blocked.example"))
                        }
                        _ => Want::pass(Counter::TlsPassAllowed)
                            .rule(Some("ok.blocked.example"))
                            .sni(Some(b"ok.blocked.example")),
                    }
                };
                sc.send(&f, &hello.stream, 0, hello.len(), fate);
                // Not judged, the flow is forgotten: its next segment is
                // the connection's data, passed.
                let after = if over || !matches!(judgement, Judgement::Block { .. }) {
                    Want::pass(Counter::TcpNoPayload)
                } else {
                    Want::blocked_flow()
                };
                sc.push("FIN", f.fin_at(hello.len()), after);
                scripts.push(sc);
            }
        }
        rig.run("segment bound", &scripts);
    }
}
