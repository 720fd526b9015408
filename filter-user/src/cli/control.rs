//! The verbs that talk to a running daemon: block, allow, unblock, list,
//! stats, reload, status. Human output by default, the daemon's JSON reply
//! with `--json`.

use std::{io::Write as _, path::PathBuf};

use anyhow::{Context as _, bail};
use clap::Args;
use filter_user::control::{self, Reply, Request, Response};

use super::Command;

/// Where the daemon is, and how to print its answer.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The daemon's control socket.
    #[arg(long, env = "NAMEWALL_SOCKET", default_value = control::DEFAULT_SOCKET, value_name = "PATH")]
    pub socket: PathBuf,
    /// Print the daemon's reply as JSON (one object) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct NamesArgs {
    /// Names: `example.com` (it and every name below) or `*.example.com` (only below).
    #[arg(required = true, value_name = "DOMAIN")]
    pub domains: Vec<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct BlockArgs {
    #[command(flatten)]
    pub names: NamesArgs,
    /// What matching traffic gets: nxdomain, refused, sinkhole, drop, reset
    /// (default: the daemon's --dns-action for DNS, --tls-action for TLS).
    #[arg(long, value_name = "ACTION")]
    pub action: Option<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only rules whose name matches: a glob (`*.ads.*`, `?`) or, without
    /// wildcards, a substring.
    #[arg(long = "match", value_name = "PATTERN")]
    pub pattern: Option<String>,
    /// At most this many rules.
    #[arg(long, default_value_t = control::DEFAULT_LIST_LIMIT, value_name = "N")]
    pub limit: usize,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// How many rules to list by hits.
    #[arg(long, default_value_t = control::DEFAULT_TOP, value_name = "N")]
    pub top: usize,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// How many of the last events to show.
    #[arg(long, default_value_t = control::DEFAULT_EVENTS, value_name = "N")]
    pub last: usize,
    /// Then show every new one as it comes, until interrupted.
    #[arg(long, short = 'f')]
    pub follow: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Where `run` pinned the filter (its --pin-dir).
    #[arg(long, default_value = filter_user::dataplane::pins::DEFAULT_PIN_DIR, value_name = "DIR")]
    pub pin_dir: PathBuf,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell to write completions for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// One event as a line of text.
fn print_event(out: &mut impl std::io::Write, e: &control::EventView) -> std::io::Result<()> {
    writeln!(
        out,
        "{} {} {} > {} {} {} rule={} {}",
        e.time, e.interface, e.client, e.server, e.protocol, e.name, e.rule, e.action
    )
}

/// `namewall events`: the last block events, then (`--follow`) new ones
/// as they come, as text or JSON lines.
pub fn events(args: &EventsArgs) -> anyhow::Result<()> {
    let req = Request::Events { last: Some(args.last), follow: args.follow };
    let json = args.client.json;
    let out = std::cell::RefCell::new(std::io::stdout().lock());
    let resp = control::call_streaming(
        &args.client.socket,
        &req,
        |resp| {
            let mut out = out.borrow_mut();
            let _ = match (&resp.reply, json) {
                (Some(Reply::Events(l)), true) => {
                    l.events.iter().try_for_each(|e| writeln!(out, "{}", serde_json::to_string(e).unwrap_or_default()))
                }
                (Some(r), false) => print_reply(&mut *out, r),
                _ => Ok(()),
            };
            let _ = out.flush();
        },
        |line| {
            let mut out = out.borrow_mut();
            let written = if json {
                writeln!(out, "{line}")
            } else {
                match serde_json::from_str::<control::EventView>(line) {
                    Ok(e) => print_event(&mut *out, &e),
                    Err(_) => writeln!(out, "{line}"),
                }
            };
            written.and_then(|()| out.flush()).is_ok()
        },
    )?;
    match resp.error {
        Some(e) => bail!("{}", e.message),
        None => Ok(()),
    }
}

/// `namewall stop`: asks a running daemon to detach and exit, then removes
/// whatever is still pinned (all of it when no daemon runs: the filter a
/// daemon left attached when it exited).
pub fn stop(args: &StopArgs) -> anyhow::Result<()> {
    match control::call(&args.client.socket, &Request::Stop) {
        Ok(Response { ok: true, .. }) => {
            // The daemon removes its socket last, after detaching.
            let start = std::time::Instant::now();
            while args.client.socket.exists() {
                if start.elapsed() > std::time::Duration::from_secs(20) {
                    bail!("the daemon did not exit within 20 s of accepting stop");
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            println!("the daemon detached and exited");
        }
        Ok(Response { error, .. }) => {
            bail!("the daemon refused to stop: {}", error.map_or_else(String::new, |e| e.message));
        }
        Err(control::ClientError::NotRunning(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let removed = filter_user::dataplane::pins::remove(&args.pin_dir)
        .with_context(|| format!("removing the pinned state in {}", args.pin_dir.display()))?;
    if !removed.links.is_empty() || removed.maps > 0 {
        println!(
            "unpinned {} map(s) and the links of {} (detached)",
            removed.maps,
            if removed.links.is_empty() { "no interface".to_owned() } else { removed.links.join(", ") }
        );
    } else if !args.client.socket.exists() {
        println!("nothing pinned in {}", args.pin_dir.display());
    }
    Ok(())
}

pub fn execute(cmd: Command) -> anyhow::Result<()> {
    let (client, req) = match cmd {
        Command::Block(a) => (a.names.client, Request::Block { domains: a.names.domains, action: a.action }),
        Command::Allow(a) => (a.client, Request::Allow { domains: a.domains }),
        Command::Unblock(a) => (a.client, Request::Unblock { domains: a.domains }),
        Command::List(a) => (a.client, Request::List { pattern: a.pattern, limit: Some(a.limit) }),
        Command::Stats(a) => (a.client, Request::Stats { top: Some(a.top) }),
        Command::Reload(a) => (a, Request::Reload),
        Command::Status(a) => (a, Request::Status),
        Command::Run(_) | Command::Replay(_) | Command::Completions(_) | Command::Stop(_) | Command::Events(_) => {
            unreachable!("not a control verb")
        }
    };
    let resp = control::call(&client.socket, &req)?;
    let mut out = std::io::stdout().lock();
    if client.json {
        serde_json::to_writer_pretty(&mut out, &resp).context("writing the reply")?;
        writeln!(out)?;
    } else if let Some(reply) = &resp.reply {
        print_reply(&mut out, reply)?;
    }
    match resp {
        Response { ok: true, .. } => Ok(()),
        Response { error: Some(e), .. } => bail!("{}", e.message),
        Response { .. } => bail!("the daemon refused the request without saying why"),
    }
}

fn print_reply(out: &mut impl std::io::Write, reply: &Reply) -> std::io::Result<()> {
    match reply {
        Reply::Changed(c) => {
            for p in &c.changed {
                writeln!(out, "changed   {p}")?;
            }
            for p in &c.unchanged {
                writeln!(out, "unchanged {p}")?;
            }
            for n in &c.notes {
                writeln!(out, "note: {n}")?;
            }
            writeln!(out, "{} rule(s) pushed through the API in force", c.operator_rules)?;
        }
        Reply::Rules(l) => {
            let w = l.rules.iter().map(|r| r.pattern.len()).max().unwrap_or(0).max(7);
            writeln!(out, "{:<w$}  {:<5}  {:<8}  {:>10}  source", "pattern", "rule", "action", "hits")?;
            for r in &l.rules {
                let action = r.action.as_deref().unwrap_or("-");
                writeln!(out, "{:<w$}  {:<5}  {:<8}  {:>10}  {}", r.pattern, r.rule, action, r.hits, r.source)?;
            }
            if l.matched > l.rules.len() {
                writeln!(out, "... {} of {} matching rules shown (--limit)", l.rules.len(), l.matched)?;
            }
        }
        Reply::Stats(s) => {
            writeln!(out, "packets {}", s.packets)?;
            for (iface, by) in &s.interfaces {
                let parts: Vec<String> = by.iter().map(|(v, n)| format!("{v} {n}")).collect();
                writeln!(out, "  on {iface}: {}", if parts.is_empty() { "none".to_owned() } else { parts.join(", ") })?;
            }
            let w = s.counters.keys().map(String::len).max().unwrap_or(0);
            for (k, v) in &s.counters {
                writeln!(out, "  {k:<w$}  {v:>12}")?;
            }
            if !s.top_rules.is_empty() {
                writeln!(out, "rules by hits")?;
                for r in &s.top_rules {
                    writeln!(out, "  {:<40} {:>10}  {} {}", r.pattern, r.hits, r.rule, r.source)?;
                }
            }
        }
        Reply::Stopping => writeln!(out, "the daemon is detaching and exiting")?,
        Reply::Events(l) => {
            for e in &l.events {
                print_event(out, e)?;
            }
            if l.over_budget > 0 || l.lost > 0 {
                writeln!(out, "({} events over the per-second budget, {} lost: not shown)", l.over_budget, l.lost)?;
            }
        }
        Reply::Reloaded(r) => {
            let read =
                r.changed_lines.map_or_else(|| "lists read whole".to_owned(), |n| format!("{n} changed lines read"));
            writeln!(
                out,
                "reloaded: {} rules ({} from lists, {} pushed), {read}, {} rules changed, {} malformed lines skipped, \
                 in {} ms",
                r.rules, r.list_rules, r.operator_rules, r.changed_rules, r.skipped_lines, r.duration_ms
            )?;
        }
        Reply::Status(s) => {
            writeln!(out, "namewall {} (pid {}), up {} s", s.version, s.pid, s.uptime_s)?;
            writeln!(out, "interfaces  {} ({} mode)", s.interfaces.join(", "), s.xdp_mode)?;
            writeln!(out, "rules       {} ({} from lists, {} pushed)", s.rules, s.list_rules, s.operator_rules)?;
            for l in &s.lists {
                writeln!(out, "list        {l}")?;
            }
            writeln!(out, "state file  {}", s.state_file)?;
            let ago = s.last_reload_ago_s.map_or_else(|| "never".to_owned(), |a| format!("{a} s ago"));
            writeln!(out, "reloads     {} ({} failed), last good {ago}", s.reloads, s.reload_failures)?;
            if let Some(e) = &s.last_reload_error {
                writeln!(out, "last error  {e}")?;
            }
        }
    }
    Ok(())
}
