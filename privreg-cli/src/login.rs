//! `privreg login NAME`, `privreg logout NAME` and `privreg purge-tokens`: upstream tokens in
//! the OS keyring, under the upstream's index URL (the entry `cargo login` through
//! cargo-credential-privreg uses for the same registry). The daemon reads
//! `PRIVREG_TOKEN_<NAME>` first, then this entry.

use std::io::{IsTerminal, Read};
use std::process::ExitCode;

use anyhow::{Context, bail};
use privreg_shared::UpstreamName;
use privreg_shared::config::{Config, KeyringChoice, Upstream};
use privreg_shared::secrets::{EntryName, Keyring, SecretStore, SecretsError, Token};

use super::{Dirs, open_keyring};

/// The upstream called `name`, or an error listing the ones there are.
pub(crate) fn find_upstream<'c>(
    dirs: &Dirs,
    config: &'c Config,
    name: &UpstreamName,
) -> anyhow::Result<&'c Upstream> {
    config.upstream(name).with_context(|| {
        let known: Vec<&str> = config.upstreams.iter().map(|u| u.name.as_str()).collect();
        format!(
            "{} has no upstream {name:?} (upstreams: {}); add it with `privreg upstream add {name} URL`",
            dirs.config_file().display(),
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )
    })
}

/// Reads a token: a hidden prompt on a terminal, else all of stdin.
fn read_token(up: &Upstream) -> anyhow::Result<Token> {
    let text = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("token for upstream {} ({}): ", up.name, up.index))
            .context("cannot read the token from the terminal")?
    } else {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read the token from stdin")?;
        s
    };
    Token::new(text).with_context(|| format!("upstream {}: no token stored", up.name))
}

pub(crate) fn login(dirs: &Dirs, name: &UpstreamName) -> anyhow::Result<ExitCode> {
    let (keyring, config) = open_keyring(dirs)?;
    let up = find_upstream(dirs, &config, name)?;
    let token = read_token(up)?;
    keyring.set(&EntryName::registry(&up.index), &token)?;
    println!(
        "stored the token for upstream {name} ({}) in the {}",
        up.index,
        keyring.kind()
    );
    let var = name.token_var();
    if std::env::var_os(&var).is_some_and(|v| !v.is_empty()) {
        eprintln!(
            "privreg: note: {var} is set; where it is set (e.g. in the daemon's environment) it wins over the stored token"
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn logout(dirs: &Dirs, name: &UpstreamName) -> anyhow::Result<ExitCode> {
    let (keyring, config) = open_keyring(dirs)?;
    let up = find_upstream(dirs, &config, name)?;
    match keyring.delete(&EntryName::registry(&up.index)) {
        Ok(()) => println!(
            "deleted the token for upstream {name} from the {}",
            keyring.kind()
        ),
        Err(SecretsError::NoEntry { .. }) => {
            println!("no token is stored for upstream {name}; nothing to do");
        }
        Err(e) => return Err(e.into()),
    }
    Ok(ExitCode::SUCCESS)
}

/// Deletes one entry; returns whether there was one.
fn delete(keyring: &Keyring, entry: &EntryName) -> anyhow::Result<bool> {
    match keyring.delete(entry) {
        Ok(()) => Ok(true),
        Err(SecretsError::NoEntry { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn purge(dirs: &Dirs) -> anyhow::Result<ExitCode> {
    // A missing or broken config still leaves the local token to remove.
    let config = Config::load(&dirs.config).ok();
    let choice = config.as_ref().map_or(KeyringChoice::Auto, |c| c.keyring);
    let keyring = Keyring::open(choice)?;
    let mut entries = vec![EntryName::local_token(&dirs.config)];
    for up in config.iter().flat_map(|c| &c.upstreams) {
        entries.push(EntryName::registry(&up.index));
    }
    let mut removed = 0;
    for entry in &entries {
        if delete(&keyring, entry)? {
            println!("deleted {entry} from the {}", keyring.kind());
            removed += 1;
        }
    }
    if removed == 0 {
        println!("no privreg token was in the {}", keyring.kind());
    }
    if config.is_none() && dirs.config_file().exists() {
        bail!(
            "{} does not parse, so upstream tokens may remain; fix it and run this again",
            dirs.config_file().display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
