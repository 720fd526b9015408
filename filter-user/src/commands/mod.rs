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
