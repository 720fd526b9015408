//! `namewall run`: load, attach, serve the control API, reload, report,
//! detach on SIGINT/SIGTERM.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use aya::programs::XdpMode;
use clap::{Args, Parser as _, ValueEnum};
use filter_user::{
    control::{self, server::ControlSocket},
    daemon::{
        Daemon, RunInfo,
        events::EventLog,
        operator::OperatorRules,
        serve::{Exit, ServeOptions, serve},
    },
    dataplane::{
        Filter, LoadOptions, counters,
        pins::{self, PinDir},
    },
    files,
    policy::{
        PolicySource,
        blocklist::ListKind,
        fetch::{self, UrlList},
    },
};
use tracing::{info, warn};

use super::config;

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

/// Arguments of `namewall run`: one flag each, as the CLI has them.
#[derive(Debug, Args)]
#[expect(clippy::struct_excessive_bools, reason = "independent command-line switches")]
pub struct RunArgs {
    /// TOML file whose keys are these flags' long names (`dns-action = "refused"`,
    /// `blocklist = ["ads.txt"]`); flags on the command line override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Interface to filter traffic entering on; repeat for several.
    #[arg(long = "iface", short = 'i', value_name = "IF")]
    pub ifaces: Vec<String>,
    /// Blocklist file (plain names, hosts format, Adblock-style `||name^`); repeat for several.
    #[arg(long = "blocklist", short = 'b', value_name = "FILE")]
    pub blocklists: Vec<PathBuf>,
    /// Allowlist file; its names are never blocked (allow wins at equal specificity).
    #[arg(long = "allowlist", short = 'a', value_name = "FILE")]
    pub allowlists: Vec<PathBuf>,
    /// Blocklist fetched from an http(s) URL, refreshed every --url-refresh
    /// seconds and cached in the state directory; repeat for several.
    #[arg(long = "blocklist-url", value_name = "URL")]
    pub blocklist_urls: Vec<String>,
    /// Allowlist fetched from an http(s) URL; repeat for several.
    #[arg(long = "allowlist-url", value_name = "URL")]
    pub allowlist_urls: Vec<String>,
    /// Seconds between fetches of the list URLs (conditional: an unchanged
    /// list costs a 304).
    #[arg(long, default_value_t = 3600, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub url_refresh: u64,
    /// XDP attach mode.
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    pub xdp_mode: Mode,
    #[command(flatten)]
    pub judging: super::JudgingArgs,
    /// Refuse to start if any list line is malformed (default: report and skip it).
    #[arg(long)]
    pub strict: bool,
    /// Let reloads load lists without their malformed lines (default: a
    /// reload whose lists have one keeps the old rule set in force).
    #[arg(long)]
    pub skip_bad_lines: bool,
    /// TTL in seconds of sinkhole answers.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub answer_ttl: u32,
    #[command(flatten)]
    pub tls: super::TlsArgs,
    /// Seconds between counter reports (0: only at exit; at most a day).
    #[arg(long, default_value_t = 10, value_name = "SECS", value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub stats_interval: u64,
    /// Control socket the CLI verbs (block, allow, list, reload, ...) talk to;
    /// its directory is created root-only.
    #[arg(long, default_value = control::DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,
    /// Directory of the state file holding the rules pushed through the control API.
    #[arg(long, default_value = "/var/lib/namewall", value_name = "DIR")]
    pub state_dir: PathBuf,
    /// Seconds between checks of the list files for changes, which reload
    /// them (0: reload only on SIGHUP and `namewall reload`).
    #[arg(long, default_value_t = 2, value_name = "SECS", value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub watch_interval: u64,
    /// bpffs directory where maps and XDP links are pinned: a restarted or
    /// upgraded daemon adopts the running filter there without a gap.
    #[arg(long, default_value = pins::DEFAULT_PIN_DIR, value_name = "DIR")]
    pub pin_dir: PathBuf,
    /// Serve Prometheus metrics on `http://ADDR/metrics` (e.g. 127.0.0.1:9153;
    /// off unless given, and only where given).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Rules listed in the metrics by hits.
    #[arg(long, default_value_t = 10, value_name = "N", value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub metrics_top: u64,
    /// Write each block as a JSON line to FILE (`-`: stdout); the last ones
    /// are kept in memory for `namewall events` either way.
    #[arg(long, value_name = "FILE")]
    pub events_log: Option<PathBuf>,
    /// Block events the kernel may send per second, over all CPUs (0: none);
    /// more are counted (`event_over_budget`) and not sent.
    #[arg(long, default_value_t = 1000, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub events_budget: u32,
    /// The events log is rotated at this size (the previous one kept as FILE.1).
    #[arg(long, default_value_t = 64 << 20, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(4096..))]
    pub events_max_bytes: u64,
    /// Bytes of the kernel's event ring buffer (a power of two, 4096 to 1 GiB).
    #[arg(long, default_value_t = filter_user::dataplane::DEFAULT_EVENT_BUFFER, value_name = "BYTES")]
    pub events_buffer: usize,
    /// Load the XDP object that writes a debug record for every packet
    /// (interface, outcome, XDP action), logged at debug level with target
    /// `namewall::xdp` (`RUST_LOG=namewall::xdp=debug`). Costs time on every
    /// packet: for finding out why a packet was judged as it was. Needs
    /// --detach-on-exit or --no-pin, so the debug object does not stay
    /// attached after the daemon.
    #[arg(long)]
    pub xdp_debug_log: bool,
    /// Pin nothing: the filter lives and dies with this process.
    #[arg(long, conflicts_with = "detach_on_exit")]
    pub no_pin: bool,
    /// On SIGINT/SIGTERM, detach from every interface and remove the pinned
    /// state (default: exit and leave the filter running, pinned, for the
    /// next daemon to adopt; `namewall stop` removes it).
    #[arg(long)]
    pub detach_on_exit: bool,
}

/// The state file inside `--state-dir`.
pub const STATE_FILE: &str = "rules.json";

/// Re-parses `run`'s arguments with the config file's keys added before
/// the command line's, so flags given there win and config values go
/// through the same checks. Returns the arguments unchanged without
/// `--config`.
pub fn with_config(args: RunArgs, matches: &clap::ArgMatches, cli: &clap::Command) -> anyhow::Result<RunArgs> {
    let Some(path) = args.config.clone() else { return Ok(args) };
    let run = cli.find_subcommand("run").context("the run subcommand")?.clone();
    let known: Vec<(String, bool)> = run
        .get_arguments()
        .filter_map(|a| Some((a.get_long()?.to_owned(), a.get_action().takes_values())))
        .filter(|(k, _)| k != "config" && k != "help")
        .collect();
    let given = |key: &str| {
        run.get_arguments()
            .find(|a| a.get_long() == Some(key))
            .is_some_and(|a| matches.value_source(a.get_id().as_str()) == Some(clap::parser::ValueSource::CommandLine))
    };
    let from_file = config::to_args(&path, &known, &given)?;
    let mut command_line: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let at = command_line.iter().position(|a| a == "run").context("`run` on the command line")? + 1;
    command_line.splice(at..at, from_file);
    let cli = super::Cli::try_parse_from(command_line).map_err(|e| {
        let first = e.to_string().lines().next().unwrap_or_default().trim_start_matches("error: ").to_owned();
        anyhow::anyhow!("config file {}: {first}", path.display())
    })?;
    match cli.command {
        super::Command::Run(a) => Ok(*a),
        _ => bail!("the command changed while reading the config"),
    }
}

/// Rules listed by hits when the daemon stops.
const TOP_RULES: usize = control::DEFAULT_TOP;

/// Combinations of flags clap does not check.
fn check_flags(args: &RunArgs) -> anyhow::Result<()> {
    if args.xdp_debug_log && !(args.detach_on_exit || args.no_pin) {
        anyhow::bail!(
            "--xdp-debug-log needs --detach-on-exit or --no-pin: the debug object would stay attached after the \
             daemon exits, writing a record for every packet that nobody reads"
        );
    }
    Ok(())
}

pub fn execute(args: &RunArgs) -> anyhow::Result<()> {
    check_flags(args)?;
    super::init_tracing();
    // A reload asked for (SIGHUP) while the start takes its time must not
    // end the process: ignored until the serving loop takes the signal over.
    // SAFETY: setting a signal's disposition to "ignore".
    unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
    if args.ifaces.is_empty() {
        bail!("no interface given: pass --iface IF (or `iface = [\"IF\"]` in the config)");
    }
    for iface in &args.ifaces {
        filter_user::dataplane::Filter::check_interface(iface)?;
    }
    if args.blocklists.is_empty()
        && args.allowlists.is_empty()
        && args.blocklist_urls.is_empty()
        && args.allowlist_urls.is_empty()
    {
        bail!("no lists given: pass --blocklist FILE or --blocklist-url URL (and optionally allowlists)");
    }
    let started = Instant::now();
    let state_path = args.state_dir.join(STATE_FILE);
    // Read before anything is attached: a state file we cannot read stops
    // the start instead of being overwritten later.
    OperatorRules::load(&state_path)?;
    files::create_private_dir(&args.state_dir).with_context(|| format!("creating {}", args.state_dir.display()))?;
    // First, so a second daemon stops here before touching the pinned state.
    let listener = ControlSocket::bind(&args.socket)?;
    let metrics = args
        .metrics
        .map(|addr| {
            let l = std::net::TcpListener::bind(addr).with_context(|| format!("metrics: listening on {addr}"))?;
            l.set_nonblocking(true)?;
            anyhow::Ok(l)
        })
        .transpose()?;
    let pin = if args.no_pin { None } else { Some(PinDir::prepare(&args.pin_dir)?) };
    let adopted = pin.as_ref().is_some_and(PinDir::adopted);
    let daemon = start(args, pin, &state_path);
    if daemon.is_err() && !adopted && !args.no_pin {
        // Nothing ran before us: leave nothing behind.
        let _ = pins::remove(&args.pin_dir);
    }
    let (mut daemon, lines) = daemon?;
    let skipped = daemon.lists().skipped.len();
    let (block, allow) = daemon.lists().rules.counts();
    info!(
        ifaces = ?args.ifaces,
        mode = ?args.xdp_mode,
        rules = daemon.filter.active_len(),
        block,
        allow,
        operator_rules = daemon.operator_rules().len(),
        lines,
        skipped,
        socket = %args.socket.display(),
        adopted,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "filtering"
    );

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    let opts = ServeOptions {
        stats_interval: args.stats_interval,
        watch_interval: args.watch_interval,
        url_refresh: args.url_refresh,
        skip_bad_lines: args.skip_bad_lines,
        metrics_top: usize::try_from(args.metrics_top).unwrap_or(usize::MAX),
    };
    let result = rt.block_on(serve(&mut daemon, &listener, metrics, &opts));
    // A list fetch still running must not hold the exit up.
    rt.shutdown_timeout(Duration::from_secs(1));
    let detach = match &result {
        Ok(Exit::Stop) => true,
        Ok(Exit::Signal) => args.detach_on_exit || !daemon.filter.pinned(),
        Err(_) => args.detach_on_exit,
    };
    let totals = daemon.filter.counters().context("reading counters")?;
    if detach {
        daemon.filter.detach_all().context("detaching")?;
        if daemon.filter.pinned() {
            pins::remove(&args.pin_dir).context("removing the pinned state")?;
        }
        info!(counters = %counters::one_line(&totals), "detached");
        // Last: `namewall stop` waits for the socket to go, so by then
        // nothing is attached or pinned any more.
        drop(listener);
    } else {
        info!(
            counters = %counters::one_line(&totals),
            pin_dir = %args.pin_dir.display(),
            "exiting; the filter stays attached, pinned for the next daemon (`namewall stop` removes it)"
        );
        drop(listener);
    }
    eprint!("{}", counters::table(&totals));
    let mut hits = daemon.filter.rule_hits().context("reading rule hit counts")?;
    hits.sort_by_key(|h| std::cmp::Reverse(h.1));
    if !hits.is_empty() {
        eprintln!("rules by hits");
        for (key, n) in hits.iter().take(TOP_RULES) {
            let name = daemon.rule_name(*key).unwrap_or_else(|| format!("{key:#018x}"));
            eprintln!("  {name:<40} {n:>10}");
        }
    }
    result?;
    Ok(())
}

/// Loads the lists (with a running filter's seed when adopting), the
/// program and the rule set, and attaches: the part of the start that
/// leaves pinned state behind when it fails.
fn start(args: &RunArgs, pin: Option<PinDir>, state_path: &Path) -> anyhow::Result<(Daemon, usize)> {
    // A running filter's rule set is hashed with its seed: the new one
    // must be too, or packets between the swaps would hash wrong.
    let seed = match &pin {
        Some(p) => Filter::pinned_seed(p).context("reading the pinned settings")?,
        None => None,
    };
    let cache = args.state_dir.join("lists");
    let urls: Vec<UrlList> = args
        .blocklist_urls
        .iter()
        .map(|u| UrlList::new(u, ListKind::Block, &cache))
        .chain(args.allowlist_urls.iter().map(|u| UrlList::new(u, ListKind::Allow, &cache)))
        .collect();
    // Fetched before the first load, so the first rule set has them; a
    // failure leaves the cached copy (if any) in force, reported below.
    let fetched: Vec<(String, Result<fetch::Refreshed, fetch::RefreshError>)> =
        urls.iter().map(|l| (l.url.clone(), fetch::refresh(l, args.skip_bad_lines))).collect();
    let source = PolicySource {
        blocklists: args.blocklists.clone(),
        allowlists: args.allowlists.clone(),
        strict: args.strict,
        urls,
    };
    let policy = source.load(seed.unwrap_or_else(rand::random)).context("loading lists")?;
    super::report_list_problems(&policy);
    let load = LoadOptions {
        pin,
        trace: false,
        debug_log: args.xdp_debug_log,
        expected_rules: policy.rules.len(),
        max_flows: usize::try_from(args.tls.max_flows).unwrap_or(usize::MAX),
        event_buffer: args.events_buffer,
    };
    // What can fail without touching the kernel comes first: a running
    // filter being adopted keeps its settings if the start goes no further.
    let log = EventLog::open(args.events_log.as_deref(), args.events_max_bytes).with_context(|| {
        format!("opening the events log {}", args.events_log.as_deref().unwrap_or(Path::new("")).display())
    })?;
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e).context("counting CPUs")?;
    let per_cpu = if args.events_budget == 0 { 0 } else { args.events_budget.div_ceil(cpus as u32).max(1) };
    let mut filter = Filter::load(load).context("loading the XDP program")?;
    filter
        .configure(args.judging.dns_action, args.judging.unjudged == super::Unjudged::Drop, args.answer_ttl)
        .context("configuring")?;
    filter.configure_tls(args.tls.policy()).context("configuring TLS")?;
    filter.configure_events(per_cpu).context("configuring events")?;
    let info = RunInfo { interfaces: args.ifaces.clone(), xdp_mode: format!("{:?}", args.xdp_mode).to_lowercase() };
    let lines = policy.lines;
    let mut daemon = Daemon::start(filter, source, policy, state_path.to_owned(), args.skip_bad_lines, info, log)?;
    daemon.note_fetches(fetched);
    for iface in &args.ifaces {
        daemon.filter.attach(iface, args.xdp_mode.into())?;
    }
    for iface in daemon.filter.detach_others()? {
        info!(iface, "detached from an interface no longer configured");
    }
    // The new program runs everywhere: a failure to tidy the replaced one's
    // pin costs kernel memory, not filtering.
    if let Err(e) = daemon.filter.unpin_replaced_stages() {
        warn!("the replaced program's stages stay pinned: {}", filter_user::errors::chain(&e));
    }
    Ok((daemon, lines))
}
