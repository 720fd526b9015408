//! `namewall`: an inline domain filter for Linux, in XDP.
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

mod commands;

/// Blocks DNS queries and TLS connections by domain name at line rate, in an
/// XDP program. `run` is the daemon; the verbs after it talk to a running
/// daemon over its control socket (root only).
#[derive(Debug, Parser)]
#[command(name = "namewall", version)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Load lists, attach to interfaces and filter until interrupted.
    Run(Box<commands::run::RunArgs>),
    /// Run every packet of a capture through the real program and show each verdict.
    Replay(commands::replay::ReplayArgs),
    /// Block names in the running daemon (`example.com`: it and every name
    /// below; `*.example.com`: only the names below). Kept across reloads
    /// and restarts.
    Block(commands::ctl::BlockArgs),
    /// Allow names in the running daemon: never blocked, whatever the lists say.
    Allow(commands::ctl::NamesArgs),
    /// Forget the rules pushed for names (block or allow); list rules stay.
    Unblock(commands::ctl::NamesArgs),
    /// The rules in force, the lists' and the pushed ones, with hit counts.
    List(commands::ctl::ListArgs),
    /// Packet counters and the rules with the most hits.
    Stats(commands::ctl::StatsArgs),
    /// Re-read every list and swap the whole rule set at once; on any error
    /// the old set stays in force.
    Reload(commands::ctl::ClientArgs),
    /// What the running daemon filters with.
    Status(commands::ctl::ClientArgs),
    /// The last blocks the filter made (time, interface, client, server,
    /// protocol, name, rule, action); with --follow, new ones as they come.
    Events(commands::ctl::EventsArgs),
    /// Detach the filter from every interface and remove its pinned state,
    /// whether a daemon runs or one left the filter running when it exited.
    Stop(commands::ctl::StopArgs),
    /// Print shell completions for namewall.
    Completions(commands::ctl::CompletionArgs),
}

fn main() -> std::process::ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        Command::Run(args) => {
            let sub = matches.subcommand_matches("run").expect("run's matches");
            commands::run::with_config(*args, sub, &Cli::command()).and_then(|a| commands::run::execute(&a))
        }
        Command::Replay(args) => commands::replay::execute(args),
        Command::Stop(args) => commands::ctl::stop(&args),
        Command::Events(args) => commands::ctl::events(&args),
        Command::Completions(args) => {
            clap_complete::generate(args.shell, &mut Cli::command(), "namewall", &mut std::io::stdout());
            Ok(())
        }
        other => commands::ctl::execute(other),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("namewall: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
