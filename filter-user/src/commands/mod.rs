//! Subcommands: the binary's edge, where errors become anyhow with context.
pub mod ctl;
pub mod replay;
pub mod run;

use maps::Action;

/// Parses `--dns-action` values.
pub fn parse_dns_action(s: &str) -> Result<Action, String> {
    match filter_user::policy::blocklist::parse_action(s) {
        Some(a @ (Action::Nxdomain | Action::Refused | Action::Sinkhole | Action::Drop)) => Ok(a),
        _ => Err(format!("{s:?} is not a DNS action (nxdomain, refused, sinkhole, drop)")),
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
