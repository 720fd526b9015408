//! The commands of the `namewall` binary: their flags (clap), what they
//! run in the library, and their output. The binary's edge, where errors
//! become anyhow with context.
//!
//! - [`run`]: the daemon, and [`config`] for its TOML file;
//! - [`control`]: the verbs that talk to a running daemon;
//! - [`replay`]: a capture through the program.

mod config;
mod control;
mod replay;
mod run;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use maps::Action;

/// Blocks DNS queries and TLS connections by domain name at line rate, in an
/// XDP program. `run` is the daemon; the verbs after it talk to a running
/// daemon over its control socket (root only).
#[derive(Debug, Parser)]
#[command(name = "namewall", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load lists, attach to interfaces and filter until interrupted.
    Run(Box<run::RunArgs>),
    /// Run every packet of a capture through the real program and show each verdict.
    Replay(replay::ReplayArgs),
    /// Block names in the running daemon (`example.com`: it and every name
    /// below; `*.example.com`: only the names below). Kept across reloads
    /// and restarts.
    Block(control::BlockArgs),
    /// Allow names in the running daemon: never blocked, whatever the lists say.
    Allow(control::NamesArgs),
    /// Forget the rules pushed for names (block or allow); list rules stay.
    Unblock(control::NamesArgs),
    /// The rules in force, the lists' and the pushed ones, with hit counts.
    List(control::ListArgs),
    /// Packet counters and the rules with the most hits.
    Stats(control::StatsArgs),
    /// Re-read every list and swap the whole rule set at once; on any error
    /// the old set stays in force.
    Reload(control::ClientArgs),
    /// What the running daemon filters with.
    Status(control::ClientArgs),
    /// The last blocks the filter made (time, interface, client, server,
    /// protocol, name, rule, action); with --follow, new ones as they come.
    Events(control::EventsArgs),
    /// Detach the filter from every interface and remove its pinned state,
    /// whether a daemon runs or one left the filter running when it exited.
    Stop(control::StopArgs),
    /// Print shell completions for namewall.
    Completions(control::CompletionArgs),
}

/// Parses the command line and runs the command.
pub fn execute() -> anyhow::Result<()> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command {
        Command::Run(args) => {
            let sub = matches.subcommand_matches("run").expect("run's matches");
            run::with_config(*args, sub, &Cli::command()).and_then(|a| run::execute(&a))
        }
        Command::Replay(args) => replay::execute(args),
        Command::Stop(args) => control::stop(&args),
        Command::Events(args) => control::events(&args),
        Command::Completions(args) => {
            clap_complete::generate(args.shell, &mut Cli::command(), "namewall", &mut std::io::stdout());
            Ok(())
        }
        other => control::execute(other),
    }
}

/// A `--dns-action` value that names no action a DNS query can get.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a DNS action (nxdomain, refused, sinkhole, drop)")]
pub struct NotDnsAction(String);

/// Parses `--dns-action` values.
pub fn parse_dns_action(s: &str) -> Result<Action, NotDnsAction> {
    match filter_user::policy::blocklist::parse_action(s) {
        Some(a @ (Action::Nxdomain | Action::Refused | Action::Sinkhole | Action::Drop)) => Ok(a),
        _ => Err(NotDnsAction(s.to_owned())),
    }
}

/// Logs to stderr; `RUST_LOG` overrides the default `info` level.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi)
        .init();
}

/// Reports skipped list lines (the first 20) and key collisions.
pub fn report_list_problems(policy: &filter_user::policy::Policy) {
    const SHOWN: usize = 20;
    for e in policy.skipped.iter().take(SHOWN) {
        tracing::warn!("skipped {e}");
    }
    if policy.skipped.len() > SHOWN {
        tracing::warn!("... and {} more malformed lines (use --strict to refuse them)", policy.skipped.len() - SHOWN);
    }
    for c in &policy.collisions {
        tracing::warn!("{c}");
    }
}

/// Allow or block, for the TLS policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Policy {
    Allow,
    Block,
}

/// What blocked TLS flows get: a reset or a silent drop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsAction {
    /// Answer the client with a TCP reset (it fails at once) and drop the ClientHello.
    Reset,
    /// Drop the ClientHello and every later packet of the flow (the client times out).
    Drop,
}

/// How blocked DNS queries and what cannot be judged are treated: flags
/// `run` and `replay` share.
#[derive(Debug, clap::Args)]
pub struct JudgingArgs {
    /// What blocked DNS queries get unless their rule says otherwise: nxdomain, refused, sinkhole, drop.
    #[arg(long, default_value = "nxdomain", value_parser = parse_dns_action)]
    pub dns_action: Action,
    /// What happens to packets that may carry a name but cannot be judged
    /// (malformed or split queries, fragments that hide the name, too many
    /// VLAN tags or IPv6 extension headers, ClientHellos longer than the
    /// parser walks, flows the full table cannot follow): drop (a client
    /// that cannot be judged is one trying to slip past) or pass.
    #[arg(long, value_enum, default_value_t = Unjudged::Drop)]
    pub unjudged: Unjudged,
}

/// The "cannot judge" policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Unjudged {
    /// Pass what cannot be judged (fail open).
    Pass,
    /// Drop what cannot be judged (the default).
    Drop,
}

/// The TLS flags `run` and `replay` share.
#[derive(Debug, clap::Args)]
pub struct TlsArgs {
    /// What TLS flows to blocked names get unless their rule says otherwise.
    #[arg(long, value_enum, default_value_t = TlsAction::Reset)]
    pub tls_action: TlsAction,
    /// ClientHellos with encrypted_client_hello whose outer name is allowed: allow or block.
    #[arg(long, value_enum, default_value_t = Policy::Allow)]
    pub ech: Policy,
    /// ClientHellos without server name: allow or block.
    #[arg(long, value_enum, default_value_t = Policy::Allow)]
    pub no_sni: Policy,
    /// QUIC Initial packets: allow, or block so browsers fall back to TCP where the server name shows.
    #[arg(long, value_enum, default_value_t = Policy::Allow)]
    pub quic: Policy,
    /// TLS flows tracked at once (new connections, ClientHellos in progress, blocked flows).
    #[arg(long, default_value_t = filter_user::dataplane::DEFAULT_MAX_FLOWS as u64, value_name = "N",
          value_parser = clap::value_parser!(u64).range(16..=1 << 24))]
    pub max_flows: u64,
}

impl TlsArgs {
    pub fn policy(&self) -> filter_user::dataplane::TlsPolicy {
        filter_user::dataplane::TlsPolicy {
            action: match self.tls_action {
                TlsAction::Reset => Action::Reset,
                TlsAction::Drop => Action::Drop,
            },
            ech_block: self.ech == Policy::Block,
            no_sni_block: self.no_sni == Policy::Block,
            quic_block: self.quic == Policy::Block,
        }
    }
}
