//! Subcommands: the binary's edge, where errors become anyhow with context.
pub mod replay;
pub mod run;

use maps::Action;

/// Parses `--dns-action` values.
pub fn parse_dns_action(s: &str) -> Result<Action, String> {
    match filter_user::blocklist::parse_action(s) {
        Some(a @ (Action::Nxdomain | Action::Refused | Action::Sinkhole | Action::Drop)) => Ok(a),
        _ => Err(format!("{s:?} is not a DNS action (nxdomain, refused, sinkhole, drop)")),
    }
}

/// Logs to stderr; `RUST_LOG` overrides the default `info` level.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).with_ansi(ansi).init();
}
