//! `privreg completions SHELL`: the shell completion script, from the CLI's own definition.

use std::process::ExitCode;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::Cli;

#[derive(Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    shell: Shell,
}

pub(crate) fn run(args: &CompletionsArgs) -> ExitCode {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "privreg", &mut std::io::stdout());
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command and subcommand's `--help` says what it does and shows an example.
    #[test]
    fn every_help_has_an_example() {
        fn walk(cmd: &mut clap::Command, path: &str, missing: &mut Vec<String>) {
            let help = cmd.render_long_help().to_string();
            if !help.lines().any(|l| l.trim_start().starts_with("Example")) {
                missing.push(path.to_owned());
            }
            if cmd.get_about().is_none() {
                missing.push(format!("{path} (no description)"));
            }
            for sub in cmd.get_subcommands_mut() {
                if sub.get_name() == "help" {
                    continue;
                }
                let name = format!("{path} {}", sub.get_name());
                walk(sub, &name, missing);
            }
        }
        let mut cmd = Cli::command();
        cmd.build();
        let mut missing = Vec::new();
        walk(&mut cmd, "privreg", &mut missing);
        assert!(missing.is_empty(), "no example in --help of: {missing:?}");
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
