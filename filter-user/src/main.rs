//! `namewall`: an inline domain filter for Linux, in XDP.
use clap::{Parser, Subcommand};

mod commands;

/// Blocks DNS queries by domain name at line rate, in an XDP program.
#[derive(Debug, Parser)]
#[command(name = "namewall", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load lists, attach to interfaces and filter until interrupted.
    Run(commands::run::RunArgs),
    /// Run every packet of a capture through the real program and show each verdict.
    Replay(commands::replay::ReplayArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => commands::run::execute(&args),
        Command::Replay(args) => commands::replay::execute(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("namewall: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
