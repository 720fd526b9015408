//! `namewall run`: load, attach, report, detach on SIGINT/SIGTERM.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use aya::programs::XdpMode;
use clap::{Args, ValueEnum};
use filter_user::{
    loader::{Filter, LoadOptions},
    policy::PolicySource,
    stats, sys,
};
use maps::Action;
use tokio::signal::unix::{SignalKind, signal};
use tracing::info;

/// How to attach.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Mode {
    /// Native if the driver supports it, generic otherwise (the kernel decides).
    Auto,
    /// Native (driver) mode; fails if the driver lacks it.
    Native,
    /// Generic (skb) mode: works everywhere, slower.
    Skb,
}

impl From<Mode> for XdpMode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Auto => XdpMode::Default,
            Mode::Native => XdpMode::Driver,
            Mode::Skb => XdpMode::Skb,
        }
    }
}

/// Arguments of `namewall run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Interface to filter traffic entering on; repeat for several.
    #[arg(long = "iface", short = 'i', required = true, value_name = "IF")]
    pub ifaces: Vec<String>,
    /// Blocklist file (plain names, hosts format, Adblock-style `||name^`); repeat for several.
    #[arg(long = "blocklist", short = 'b', value_name = "FILE")]
    pub blocklists: Vec<PathBuf>,
    /// Allowlist file; its names are never blocked (allow wins at equal specificity).
    #[arg(long = "allowlist", short = 'a', value_name = "FILE")]
    pub allowlists: Vec<PathBuf>,
    /// XDP attach mode.
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    pub xdp_mode: Mode,
    /// What blocked DNS queries get unless their rule says otherwise: nxdomain, refused, sinkhole, drop.
    #[arg(long, default_value = "nxdomain", value_parser = super::parse_dns_action)]
    pub dns_action: Action,
    /// Drop what cannot be judged instead of passing it: DNS queries that
    /// cannot be parsed, malformed ClientHellos, first fragments of TCP
    /// segments and DNS queries (never reassembled), and new
    /// TLS flows while the flow table is full.
    #[arg(long)]
    pub fail_closed: bool,
    /// Refuse to start if any list line is malformed (default: report and skip it).
    #[arg(long)]
    pub strict: bool,
    /// TTL in seconds of sinkhole answers.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub answer_ttl: u32,
    #[command(flatten)]
    pub tls: super::TlsArgs,
    /// Seconds between counter reports (0: only at exit; at most a day).
    #[arg(long, default_value_t = 10, value_name = "SECS", value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub stats_interval: u64,
}

/// Rules listed by hits when the daemon stops.
const TOP_RULES: usize = 10;

pub fn execute(args: &RunArgs) -> anyhow::Result<()> {
    crate::commands::init_tracing();
    for iface in &args.ifaces {
        if sys::if_index(iface).is_none() {
            bail!("interface {iface:?} does not exist");
        }
    }
    if args.blocklists.is_empty() && args.allowlists.is_empty() {
        bail!("no lists given: pass --blocklist FILE (and optionally --allowlist FILE)");
    }
    let started = Instant::now();
    let source =
        PolicySource { blocklists: args.blocklists.clone(), allowlists: args.allowlists.clone(), strict: args.strict };
    let policy = source.load(rand::random()).context("loading lists")?;
    super::report_list_problems(&policy);
    let (block, allow) = policy.rules.counts();

    let load = LoadOptions {
        trace: false,
        expected_rules: policy.rules.len(),
        max_flows: usize::try_from(args.tls.max_flows).unwrap_or(usize::MAX),
    };
    let mut filter = Filter::load(load).context("loading the XDP program")?;
    filter.configure(args.dns_action, args.fail_closed, args.answer_ttl).context("configuring")?;
    filter.configure_tls(args.tls.policy()).context("configuring TLS")?;
    filter.install(&policy.rules).context("installing the rule set")?;
    for iface in &args.ifaces {
        filter.attach(iface, args.xdp_mode.into())?;
    }
    info!(
        ifaces = ?args.ifaces,
        mode = ?args.xdp_mode,
        rules = policy.rules.len(),
        block,
        allow,
        lines = policy.lines,
        skipped = policy.skipped.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "filtering"
    );

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    let result = rt.block_on(serve(&mut filter, args.stats_interval));
    filter.detach_all().context("detaching")?;
    let totals = filter.counters().context("reading counters")?;
    info!(counters = %stats::one_line(&totals), "detached");
    eprint!("{}", stats::table(&totals));
    let mut hits = filter.rule_hits().context("reading rule hit counts")?;
    hits.sort_by_key(|h| std::cmp::Reverse(h.1));
    if !hits.is_empty() {
        eprintln!("rules by hits");
        for (key, n) in hits.iter().take(TOP_RULES) {
            let name = policy.rules.get(*key).map_or_else(|| format!("{key:#018x}"), |r| r.domain.to_string());
            eprintln!("  {name:<40} {n:>10}");
        }
    }
    result
}

/// How often idle TLS flows are swept out of the flow table.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Waits for SIGINT or SIGTERM, logging counters on the interval and
/// sweeping idle flows.
async fn serve(filter: &mut Filter, interval: u64) -> anyhow::Result<()> {
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut stats = (interval != 0).then(|| {
        let period = Duration::from_secs(interval);
        tokio::time::interval_at(tokio::time::Instant::now() + period, period)
    });
    let mut sweep = tokio::time::interval_at(tokio::time::Instant::now() + SWEEP_EVERY, SWEEP_EVERY);
    let mut last = filter.counters().context("reading counters")?;
    loop {
        let stats_tick = async {
            match stats.as_mut() {
                Some(t) => t.tick().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sigint.recv() => { info!("SIGINT: stopping"); return Ok(()); }
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); return Ok(()); }
            _ = stats_tick => {
                let now = filter.counters().context("reading counters")?;
                let d = stats::delta(&now, &last);
                info!(interval_s = interval, delta = %stats::one_line(&d), "counters");
                last = now;
            }
            _ = sweep.tick() => {
                match filter.sweep_flows() {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(removed = n, "swept idle flows"),
                    Err(e) => tracing::warn!("sweeping idle flows: {e}"),
                }
            }
        }
    }
}
