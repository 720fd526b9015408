//! `namewall replay`: a capture through the loaded program, packet by packet.
//!
//! Output goes to stdout: one line per packet and a summary, for people by
//! default, or with `--json` one JSON object per packet and a final
//! `{"summary": {...}}`. List problems and errors go to stderr. The exit
//! status is non-zero when the capture is damaged part-way (after the
//! packets before the damage and their summary were printed); see
//! `filter_user::replay` for what counts as damage.

use std::{
    fmt,
    io::{self, BufWriter, Write},
    ops::ControlFlow,
    path::PathBuf,
};

use anyhow::Context as _;
use clap::Args;
use filter_user::{
    dataplane::counters,
    policy::PolicySource,
    replay::{self, Capture, PacketReport, ReplayOptions, Summary},
};
use maps::Counter;
use serde::Serialize;

/// Arguments of `namewall replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Capture to replay: pcap or pcapng (told apart by their first bytes), of
    /// Ethernet, Linux cooked (`tcpdump -i any`) or raw IP packets.
    #[arg(long, value_name = "FILE")]
    pub pcap: PathBuf,
    /// Blocklist file (plain names, hosts format, Adblock-style `||name^`); repeat for several.
    #[arg(long = "blocklist", short = 'b', value_name = "FILE", required = true)]
    pub blocklists: Vec<PathBuf>,
    /// Allowlist file; its names are never blocked (allow wins at equal specificity).
    #[arg(long = "allowlist", short = 'a', value_name = "FILE")]
    pub allowlists: Vec<PathBuf>,
    /// One JSON object per packet, then `{"summary": {...}}`, instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub judging: super::JudgingArgs,
    /// Refuse to replay if any list line is malformed (default: report and skip it).
    #[arg(long)]
    pub strict: bool,
    #[command(flatten)]
    pub tls: super::TlsArgs,
    /// TTL in seconds of sinkhole answers.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub answer_ttl: u32,
}

/// Rules listed in the text summary; `--json` lists all that were hit.
const TOP_RULES: usize = 20;

pub fn execute(args: ReplayArgs) -> anyhow::Result<()> {
    super::init_tracing();
    // The capture first: a wrong path should not wait for the verifier.
    let capture = Capture::open(&args.pcap)?;
    let opts = ReplayOptions {
        lists: PolicySource {
            blocklists: args.blocklists,
            allowlists: args.allowlists,
            strict: args.strict,
            urls: Vec::new(),
        },
        dns_action: args.judging.dns_action,
        unjudged_drop: args.judging.unjudged == super::Unjudged::Drop,
        answer_ttl: args.answer_ttl,
        tls: args.tls.policy(),
        max_flows: usize::try_from(args.tls.max_flows).unwrap_or(usize::MAX),
        seed: rand::random(),
    };
    let (filter, policy) = replay::prepare(&opts)?;
    super::report_list_problems(&policy);

    let mut out = BufWriter::new(io::stdout().lock());
    let mut write_error = None;
    let result = replay::replay_capture(&filter, &policy.rules, capture, |p| {
        let written = if args.json { json_line(&mut out, p) } else { writeln!(out, "{}", PacketLine(p)) };
        match written {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                write_error = Some(e);
                ControlFlow::Break(())
            }
        }
    });
    if let Some(e) = write_error {
        // The reader went away (`| head`): nobody is left to tell.
        if e.kind() == io::ErrorKind::BrokenPipe {
            return Ok(());
        }
        return Err(e).context("writing the report");
    }
    let (summary, damage) = match result {
        Ok(s) => (s, None),
        Err(e) => match e.partial_summary().cloned() {
            Some(s) => (s, Some(e)),
            None => return Err(e.into()),
        },
    };
    let written = if args.json {
        let line =
            SummaryLine { summary: SummaryJson { summary: &summary, error: damage.as_ref().map(ToString::to_string) } };
        json_line(&mut out, &line)
    } else {
        write!(out, "{}", SummaryText(&summary))
    }
    .and_then(|()| out.flush());
    match written {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
        other => other.context("writing the report")?,
    }
    match damage {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

fn json_line(out: &mut impl Write, value: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    out.write_all(b"\n")
}

/// The last line of `--json` output.
#[derive(Serialize)]
struct SummaryLine<'a> {
    summary: SummaryJson<'a>,
}

#[derive(Serialize)]
struct SummaryJson<'a> {
    #[serde(flatten)]
    summary: &'a Summary,
    /// Why the replay stopped before the end of the capture.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Width of the outcome column: the longest counter name.
fn outcome_width() -> usize {
    Counter::ALL.iter().map(|c| c.name().len()).max().unwrap_or(0)
}

/// Width of the name column.
const NAME_WIDTH: usize = 32;

/// `#12     tx       nxdomain    www.ads.example    rule=ads.example  (udp)`:
/// packets without a name stop after the outcome, packets that were not run
/// say why. Columns are padded only when something follows them.
struct PacketLine<'a>(&'a PacketReport);

impl fmt::Display for PacketLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.0;
        let outcome = p.outcome.unwrap_or("-");
        write!(f, "#{:<6} {:<8} {outcome}", p.packet, p.verdict)?;
        // Padding owed to the column just written, paid before the next one.
        let mut pad = outcome_width().saturating_sub(outcome.len());
        if let Some(name) = &p.name {
            write!(f, "{:pad$} {name}", "")?;
            pad = NAME_WIDTH.saturating_sub(name.len());
        }
        if let Some(rule) = &p.rule {
            write!(f, "{:pad$} rule={rule}", "")?;
            pad = 0;
        }
        if let Some(proto) = p.proto {
            write!(f, "{:pad$}  ({proto})", "")?;
            pad = 0;
        }
        if let Some(t) = &p.tls {
            write!(f, "{:pad$}  segment {} of {}", "", t.segment, t.flow)?;
            if t.decided {
                write!(f, ": decided")?;
                if !t.earlier.is_empty() {
                    let earlier: Vec<String> = t.earlier.iter().map(|n| format!("#{n}")).collect();
                    write!(f, " (after {})", earlier.join(", "))?;
                }
            } else {
                write!(f, ": ClientHello goes on")?;
            }
            pad = 0;
        }
        if p.truncated {
            write!(f, "{:pad$}  [truncated: {} of {} bytes captured]", "", p.len, p.orig_len)?;
            pad = 0;
        }
        if let Some(e) = &p.error {
            write!(f, "{:pad$}  {e}", "")?;
        }
        Ok(())
    }
}

/// The text summary after the packet lines.
struct SummaryText<'a>(&'a Summary);

impl fmt::Display for SummaryText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        writeln!(f)?;
        writeln!(f, "{} packets: {} run, {} not run, {} truncated", s.packets, s.run, s.packets - s.run, s.truncated)?;
        write!(f, "actions:")?;
        if s.verdicts.is_empty() {
            write!(f, " none")?;
        }
        for (i, (verdict, n)) in s.verdicts.iter().enumerate() {
            write!(f, "{} {verdict} {n}", if i == 0 { "" } else { "," })?;
        }
        writeln!(f)?;
        f.write_str(&counters::table(&s.totals))?;
        if !s.rule_hits.is_empty() {
            writeln!(f, "rule hits")?;
            for h in s.rule_hits.iter().take(TOP_RULES) {
                writeln!(f, "  {:<40} {:>8}", h.rule, h.hits)?;
            }
            if s.rule_hits.len() > TOP_RULES {
                writeln!(f, "  ... and {} more rules (--json lists all)", s.rule_hits.len() - TOP_RULES)?;
            }
        }
        Ok(())
    }
}
