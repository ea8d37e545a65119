//! `privreg pin add|list|remove`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;
use privreg_shared::pin::{self, PREF_SUFFIX, PREFERENCES_DIR, PREFERENCES_FILE, Preferences};
use privreg_shared::policy::PinPriority;

use super::Dirs;
use privreg_shared::store::write_atomic;

#[derive(Subcommand)]
pub enum PinCommand {
    /// Append a stanza; refused (nothing written) if the file would not parse.
    ///
    /// Example: privreg pin add --package tokio --pin 'version >=1.38, <1.39' --priority 1001
    ///
    /// A cooldown: privreg pin add --package '*' --pin 'age <3d' --priority -1
    Add {
        /// Crate names, globs or /regexes/, space-separated; `*` for every crate.
        #[arg(long)]
        package: String,
        /// Selectors joined by `;`: `registry GLOB`, `origin HOSTGLOB`, `version REQ`,
        /// `age <DURATION` (or `>`), `advisory [KIND|ID,…]`.
        #[arg(long)]
        pin: String,
        /// A non-zero integer, or `never`.
        #[arg(long, allow_hyphen_values = true)]
        priority: String,
        /// Why the pin exists, kept in the file.
        #[arg(long)]
        explanation: Option<String>,
        /// `preferences` (the default), or NAME for preferences.d/NAME.pref.
        #[arg(long, default_value = PREFERENCES_FILE)]
        file: String,
    },
    /// List every stanza, numbered, with <file:line>.
    ///
    /// Example: privreg pin list
    List,
    /// Remove stanza N (as numbered by `privreg pin list`), with its comments.
    ///
    /// Example: privreg pin remove 2
    Remove { number: usize },
}

fn parse_priority(s: &str) -> anyhow::Result<PinPriority> {
    if s.eq_ignore_ascii_case("never") {
        return Ok(PinPriority::Never);
    }
    match s.parse::<i32>() {
        Ok(0) | Err(_) => bail!("--priority {s:?}: expected a non-zero integer or `never`"),
        Ok(v) => Ok(PinPriority::Value(v)),
    }
}

/// The path and display name of a pin file named on the command line.
fn pin_file(dirs: &Dirs, name: &str) -> anyhow::Result<(PathBuf, String)> {
    if name == PREFERENCES_FILE {
        return Ok((
            dirs.config.join(PREFERENCES_FILE),
            PREFERENCES_FILE.to_owned(),
        ));
    }
    let stem = name.strip_suffix(PREF_SUFFIX).unwrap_or(name);
    if stem.is_empty()
        || stem.starts_with('.')
        || !stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        bail!(
            "--file {name:?}: use `preferences` or a plain name such as `10-acme` (for preferences.d/10-acme.pref)"
        );
    }
    let rel = format!("{PREFERENCES_DIR}/{stem}{PREF_SUFFIX}");
    Ok((dirs.config.join(&rel), rel))
}

pub(crate) fn run(dirs: &Dirs, cmd: PinCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PinCommand::Add {
            package,
            pin,
            priority,
            explanation,
            file,
        } => {
            let priority = parse_priority(&priority)?;
            let (path, name) = pin_file(dirs, &file)?;
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
            };
            let new = pin::add_stanza(
                &name,
                &text,
                &package,
                &pin,
                priority,
                explanation.as_deref(),
            )
            .context("the stanza was not added; nothing was written")?;
            write_atomic(&path, new.as_bytes())?;
            let parsed = pin::PinFile::parse(name.clone(), new).context("re-reading the file")?;
            let at = parsed
                .stanza_ref(parsed.stanzas.len() - 1)
                .map(|s| s.to_string())
                .unwrap_or(name);
            println!("added stanza at {at}");
            Ok(ExitCode::SUCCESS)
        }
        PinCommand::List => {
            let prefs = Preferences::load(&dirs.config)?;
            let list = prefs.list();
            if list.is_empty() {
                println!("no pins (add one with `privreg pin add`)");
            }
            for entry in list {
                println!("{entry}");
            }
            Ok(ExitCode::SUCCESS)
        }
        PinCommand::Remove { number } => {
            let prefs = Preferences::load(&dirs.config)?;
            let Some((file, text)) = prefs.remove_numbered(number) else {
                bail!("there is no stanza {number}; see `privreg pin list`");
            };
            let at = prefs
                .list()
                .into_iter()
                .find(|e| e.number == number)
                .map(|e| e.at.to_string());
            write_atomic(&dirs.config.join(file), text.as_bytes())?;
            println!(
                "removed stanza {number} ({})",
                at.unwrap_or_else(|| file.to_owned())
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
