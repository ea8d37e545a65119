//! `privreg`: the control CLI (see `privreg --help`).

use clap::Parser;
use privreg_daemon::cli::{Cli, run};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("privreg: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
