use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = optical::cli::Cli::parse();
    match optical::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            if e.is_user_error() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
