//! `namewall`: an inline domain filter for Linux, in XDP. The commands are
//! in `cli`; the library (`filter_user`) does the work.

mod cli;

fn main() -> std::process::ExitCode {
    match cli::execute() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("namewall: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
