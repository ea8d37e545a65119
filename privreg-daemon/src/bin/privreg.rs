//! `privreg`: the control CLI.

use clap::Parser;

/// Controls the privreg daemon: upstreams, pins, tokens, status.
#[derive(Parser)]
#[command(version)]
enum Cli {}

fn main() -> anyhow::Result<()> {
    match Cli::parse() {}
}
