//! `namewall replay`: a capture through the loaded program, packet by packet.
//!
//! Every packet record of a pcap or pcapng file (told apart by their magic
//! numbers) is run, in capture order, through the real XDP program with
//! `BPF_PROG_TEST_RUN`; maps persist from packet to packet, so counters and
//! rule hits add up as they would on an interface. After each run the
//! program's decision record ([`maps::Trace`]) says which counter the packet
//! ended in, where its QNAME was and which rule decided. An operator uses this
//! as a dry run of a policy against real traffic; the tests use it as an
//! oracle.
//!
//! # Link types
//! The program expects Ethernet II frames. Captures of other link types that
//! carry IP are converted by [`to_ethernet`]: Linux cooked captures (SLL and
//! SLL2, what `tcpdump -i any` writes) and raw IP. Packets of other link types
//! are reported as `skipped` and the replay goes on. A pcapng file may
//! describe several interfaces with different link types; each packet is
//! converted according to its own interface.
//!
//! # Damaged and odd captures
//! - A packet the kernel refuses to run (shorter than an Ethernet header,
//!   larger than a test run accepts) is reported with verdict `error` and the
//!   kernel's reason; the replay goes on.
//! - A packet captured shorter than it was on the wire (snap length) is run as
//!   captured and marked `truncated`: its verdict may differ from what the
//!   whole packet would have got.
//! - A packet record whose framing is intact but whose content is unusable (a
//!   pcapng packet block that names an undescribed interface, or whose lengths
//!   disagree) is reported with verdict `error`; the replay goes on.
//! - A record whose framing is broken (a length that runs past the end of the
//!   file, a pcapng block whose trailing length disagrees with its leading
//!   one) stops the replay: neither format lets a reader find the next record
//!   reliably. The packets before it have been reported;
//!   [`ReplayError::Damaged`] carries their [`Summary`], and the command
//!   prints it and exits with an error.

mod capture;
mod flows;

use std::{
    collections::{BTreeMap, HashMap},
    ops::ControlFlow,
    path::Path,
};

use maps::{Action, Counter};
use serde::Serialize;
use thiserror::Error;

pub use self::{
    capture::{
        Capture, CaptureError, Format, FormatError, LinkError, detect_format, linktype, pcapng_time, to_ethernet,
    },
    flows::TlsSegment,
};
use self::{
    capture::{Item, Record, describe},
    flows::{PendingFlows, flow_name},
};
use crate::{
    dataplane::{
        Filter, FilterError, LoadOptions, TlsPolicy, action_name,
        counters::{self, Counters},
    },
    errors::chain,
    policy::{Policy, PolicyError, PolicySource, names, rules::RuleSet},
};

/// Verdict of a packet that was not run because its link type is not supported.
pub const SKIPPED: &str = "skipped";
/// Verdict of a packet that could not be run.
pub const ERROR: &str = "error";

/// What happened to one packet record.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PacketReport {
    /// 1-based frame number, as Wireshark numbers packets: every packet
    /// record counts, including those that could not be run.
    pub packet: u64,
    /// Capture timestamp, seconds since the epoch (`None` when the record has none).
    pub time: Option<f64>,
    /// The XDP action ([`action_name`]), or [`ERROR`] / [`SKIPPED`] when the packet was not run.
    pub verdict: &'static str,
    /// The outcome counter the packet ended in; `None` when it was not run.
    pub outcome: Option<&'static str>,
    /// The queried name the program judged, if it got that far.
    pub name: Option<String>,
    /// The rule that decided (block or allow), if one did.
    pub rule: Option<String>,
    /// "udp" or "tcp" when the program found DNS.
    pub proto: Option<&'static str>,
    /// Bytes captured.
    pub len: usize,
    /// Bytes on the wire.
    pub orig_len: u32,
    /// Captured shorter than on the wire; run as captured.
    pub truncated: bool,
    /// For a segment of a TLS ClientHello: its place in its flow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSegment>,
    /// Why the packet was not run, or what was odd about its run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl PacketReport {
    fn not_run(packet: u64, time: Option<f64>, verdict: &'static str, reason: String) -> Self {
        Self {
            packet,
            time,
            verdict,
            outcome: None,
            name: None,
            rule: None,
            proto: None,
            len: 0,
            orig_len: 0,
            truncated: false,
            tls: None,
            error: Some(reason),
        }
    }
}

/// Hits of one rule during a replay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleHit {
    pub rule: String,
    pub hits: u64,
}

/// Totals of a replay.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// Packet records read.
    pub packets: u64,
    /// Packets the program ran on.
    pub run: u64,
    /// Packets captured shorter than they were on the wire.
    pub truncated: u64,
    /// Packets per verdict, [`ERROR`] and [`SKIPPED`] included.
    pub verdicts: BTreeMap<&'static str, u64>,
    /// Non-zero counters, by name, counted during this replay.
    pub counters: BTreeMap<&'static str, u64>,
    /// Rules that decided packets during this replay, most hits first.
    pub rule_hits: Vec<RuleHit>,
    /// All counters, indexed by [`Counter`], for [`counters::table`].
    #[serde(skip)]
    pub totals: Counters,
}

/// Why a replay could not be done or finished. Messages carry their causes
/// on one line, so the causes are not also chained as sources (which would
/// print them twice).
#[derive(Debug, Error)]
pub enum ReplayError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// The file's framing broke after `after` packets; `summary` covers those.
    #[error("{path}: damaged after packet {after}: {reason}; the replay stopped there")]
    Damaged { path: String, after: u64, reason: String, summary: Box<Summary> },
    #[error(
        "packet {packet}: the trace sequence went from {before} to {after} over one test run; \
         the program must be loaded with tracing and not run on live traffic at the same time"
    )]
    Trace { packet: u64, before: u64, after: u64 },
    /// Boxed: aya's errors are large, and this one is rare.
    #[error("{context}: {}", chain(&**.error))]
    Filter { context: &'static str, error: Box<FilterError> },
    #[error("{}", chain(.0))]
    Policy(PolicyError),
}

impl From<PolicyError> for ReplayError {
    fn from(e: PolicyError) -> Self {
        ReplayError::Policy(e)
    }
}

impl ReplayError {
    /// What was replayed before the capture turned out to be damaged.
    pub fn partial_summary(&self) -> Option<&Summary> {
        match self {
            ReplayError::Damaged { summary, .. } => Some(summary),
            _ => None,
        }
    }
}

fn filter_err(context: &'static str) -> impl FnOnce(FilterError) -> ReplayError {
    move |error| ReplayError::Filter { context, error: Box::new(error) }
}

/// How to set up the program for a replay.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    pub lists: PolicySource,
    /// Default action for blocked DNS queries.
    pub dns_action: Action,
    /// The "cannot judge" policy drops.
    pub unjudged_drop: bool,
    pub answer_ttl: u32,
    /// What blocked TLS flows get, and the ECH, no-SNI and QUIC policies.
    pub tls: TlsPolicy,
    /// TLS flows tracked at once.
    pub max_flows: usize,
    /// Seed of the name hash; any value gives the same verdicts, short of a key collision.
    pub seed: u64,
}

/// Loads the lists, then the program with tracing on, configures it and
/// installs the rule set: a filter ready for [`replay`].
pub fn prepare(opts: &ReplayOptions) -> Result<(Filter, Policy), ReplayError> {
    let policy = opts.lists.load(opts.seed)?;
    let load = LoadOptions {
        trace: true,
        expected_rules: policy.rules.len(),
        max_flows: opts.max_flows,
        ..LoadOptions::default()
    };
    let mut filter = Filter::load(load).map_err(filter_err("loading the XDP program"))?;
    filter
        .configure(opts.dns_action, opts.unjudged_drop, opts.answer_ttl)
        .and_then(|()| filter.configure_tls(opts.tls))
        .map_err(filter_err("configuring the program"))?;
    filter.install(&policy.rules).map_err(filter_err("installing the rule set"))?;
    Ok((filter, policy))
}

/// Opens `capture` and [`replay_capture`]s it.
pub fn replay(
    filter: &Filter,
    rules: &RuleSet,
    capture: &Path,
    on_packet: impl FnMut(&PacketReport) -> ControlFlow<()>,
) -> Result<Summary, ReplayError> {
    replay_capture(filter, rules, Capture::open(capture)?, on_packet)
}

/// Runs every packet of `capture` through `filter` (loaded with tracing, with
/// `rules` installed), calls `on_packet` with each packet's report as soon as
/// it is known, and returns the totals. `on_packet` returning
/// [`ControlFlow::Break`] ends the replay early (the totals then cover the
/// packets so far). Memory use does not grow with the capture.
pub fn replay_capture(
    filter: &Filter,
    rules: &RuleSet,
    mut capture: Capture,
    mut on_packet: impl FnMut(&PacketReport) -> ControlFlow<()>,
) -> Result<Summary, ReplayError> {
    let before = filter.counters().map_err(filter_err("reading counters"))?;
    let hits_before: HashMap<u64, u32> =
        filter.rule_hits().map_err(filter_err("reading rule hits"))?.into_iter().collect();
    let mut seq = filter.trace().map_err(filter_err("reading the trace"))?.seq;
    let mut tally = Tally::default();
    let mut pending = PendingFlows::default();
    loop {
        let item = match capture.next() {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(e) => {
                let summary = tally.finish(filter, rules, &before, &hits_before)?;
                return Err(ReplayError::Damaged {
                    path: capture.path().to_owned(),
                    after: summary.packets,
                    reason: describe(&e),
                    summary: Box::new(summary),
                });
            }
        };
        let number = tally.packets + 1;
        let report = match item {
            Item::Packet(record) => run_one(filter, rules, number, &record, &mut seq, &mut pending)?,
            Item::Unusable(reason) => PacketReport::not_run(number, None, ERROR, reason),
        };
        tally.add(&report);
        if on_packet(&report).is_break() {
            break;
        }
    }
    tally.finish(filter, rules, &before, &hits_before)
}

/// Runs one record and reads back the program's decision.
fn run_one(
    filter: &Filter,
    rules: &RuleSet,
    number: u64,
    record: &Record,
    seq: &mut u64,
    pending: &mut PendingFlows,
) -> Result<PacketReport, ReplayError> {
    let mut report = PacketReport {
        len: record.data.len(),
        orig_len: record.orig_len,
        truncated: (record.data.len() as u64) < u64::from(record.orig_len),
        ..PacketReport::not_run(number, record.time, ERROR, String::new())
    };
    let frame = match to_ethernet(record.link_type, &record.data) {
        Ok(f) => f,
        Err(e) => {
            report.verdict = if matches!(e, LinkError::Unsupported(_)) { SKIPPED } else { ERROR };
            report.error = Some(e.to_string());
            return Ok(report);
        }
    };
    let result = match filter.run(&frame) {
        Ok(r) => r,
        Err(e) => {
            // The kernel refused before running the program; resynchronise
            // anyway, so one odd refusal cannot fail every later packet.
            *seq = filter.trace().map_err(filter_err("reading the trace"))?.seq;
            report.error = Some(format!("the kernel refused to run the {}-byte frame: {}", frame.len(), chain(&e)));
            return Ok(report);
        }
    };
    let t = filter.trace().map_err(filter_err("reading the trace"))?;
    if t.seq != seq.wrapping_add(1) {
        return Err(ReplayError::Trace { packet: number, before: *seq, after: t.seq });
    }
    *seq = t.seq;
    report.verdict = action_name(result.action);
    report.error = None;
    report.outcome = Counter::from_index(t.outcome).map(Counter::name);
    let mut odd = Vec::new();
    if report.outcome.is_none() {
        odd.push(format!("the trace names outcome counter {}, which this build does not know", t.outcome));
    }
    if t.xdp_action != result.action {
        odd.push(format!("the trace says {} but the program returned {}", action_name(t.xdp_action), report.verdict));
    }
    if t.name_kind == maps::Protocol::Tls as u8 {
        // A server name may have come in several segments: the trace holds it.
        let sni = t.sni.get(..usize::from(t.sni_len)).unwrap_or_default();
        report.name = Some(names::text_to_display(sni));
    } else if t.name_len != 0 {
        let start = usize::from(t.name_offset);
        match frame.get(start..start + usize::from(t.name_len)) {
            Some(wire) => report.name = Some(names::wire_to_text(wire)),
            None => {
                odd.push(format!("the trace puts the name at {start}+{} in a {}-byte frame", t.name_len, frame.len()));
            }
        }
    }
    if t.rule_key != 0 {
        report.rule = match (rules.get(t.rule_key), &report.name) {
            (Some(r), _) => Some(r.domain.to_string()),
            (None, Some(name)) => Some(names::suffix(name, usize::from(t.rule_labels)).to_owned()),
            (None, None) => Some(format!("{:#018x}", t.rule_key)),
        };
    }
    report.proto = match (t.l4_proto, t.name_kind) {
        (6, k) if k == maps::Protocol::Tls as u8 => Some("tls"),
        (17, _) => Some("udp"),
        (6, _) => Some("tcp"),
        _ => None,
    };
    if t.flow_key != 0
        && let Some(outcome) = Counter::from_index(t.outcome)
    {
        report.tls = pending.place(t.flow_key, number, outcome, flow_name(&frame));
    }
    if !odd.is_empty() {
        report.error = Some(odd.join("; "));
    }
    Ok(report)
}

/// Running totals of a replay.
#[derive(Default)]
struct Tally {
    packets: u64,
    run: u64,
    truncated: u64,
    verdicts: BTreeMap<&'static str, u64>,
}

impl Tally {
    fn add(&mut self, r: &PacketReport) {
        self.packets += 1;
        if r.verdict != ERROR && r.verdict != SKIPPED {
            self.run += 1;
        }
        if r.truncated {
            self.truncated += 1;
        }
        *self.verdicts.entry(r.verdict).or_default() += 1;
    }

    /// The totals, with counters and rule hits counted since `before`.
    fn finish(
        self,
        filter: &Filter,
        rules: &RuleSet,
        before: &Counters,
        hits_before: &HashMap<u64, u32>,
    ) -> Result<Summary, ReplayError> {
        let after = filter.counters().map_err(filter_err("reading counters"))?;
        let totals = counters::delta(&after, before);
        let mut rule_hits: Vec<RuleHit> = filter
            .rule_hits()
            .map_err(filter_err("reading rule hits"))?
            .into_iter()
            .filter_map(|(key, hits)| {
                // Hits wrap at 2^32; the difference is right across one wrap.
                let hits = hits.wrapping_sub(hits_before.get(&key).copied().unwrap_or(0));
                let rule = rules.get(key).map_or_else(|| format!("{key:#018x}"), |r| r.domain.to_string());
                (hits != 0).then_some(RuleHit { rule, hits: u64::from(hits) })
            })
            .collect();
        rule_hits.sort_by(|a, b| b.hits.cmp(&a.hits).then_with(|| a.rule.cmp(&b.rule)));
        Ok(Summary {
            packets: self.packets,
            run: self.run,
            truncated: self.truncated,
            verdicts: self.verdicts,
            counters: counters::non_zero(&totals),
            rule_hits,
            totals,
        })
    }
}
