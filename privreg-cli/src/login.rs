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

/// The keyring entry of the shared tier configured in config.toml.
fn shared_entry(dirs: &Dirs, config: &Config) -> anyhow::Result<EntryName> {
    let shared = config.shared.as_ref().with_context(|| {
        format!(
            "{} has no [cache.shared] table; add one (see the README's \"Team tier\") first",
            dirs.config_file().display()
        )
    })?;
    Ok(EntryName::shared_tier(shared.url.as_str()))
}

/// `privreg login --shared`: `KEY_ID:SECRET` for the shared tier, from a hidden prompt or stdin.
pub(crate) fn shared_login(dirs: &Dirs) -> anyhow::Result<ExitCode> {
    let (keyring, config) = open_keyring(dirs)?;
    let entry = shared_entry(dirs, &config)?;
    let text = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("KEY_ID:SECRET for {entry}: "))
            .context("cannot read the credentials from the terminal")?
    } else {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read the credentials from stdin")?;
        s
    };
    let token = Token::new(text).context("no credentials stored")?;
    match token.expose().split_once(':') {
        Some((id, secret)) if !id.is_empty() && !secret.is_empty() => {}
        _ => bail!(
            "the shared tier's credentials are `KEY_ID:SECRET` (access key id, a colon, then the secret key); nothing stored"
        ),
    }
    keyring.set(&entry, &token)?;
    println!("stored {entry} in the {}", keyring.kind());
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_some_and(|v| !v.is_empty()) {
        eprintln!(
            "privreg: note: AWS_ACCESS_KEY_ID is set; where it is set (e.g. in the daemon's environment) the environment's credentials win"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `privreg logout --shared`.
pub(crate) fn shared_logout(dirs: &Dirs) -> anyhow::Result<ExitCode> {
    let (keyring, config) = open_keyring(dirs)?;
    let entry = shared_entry(dirs, &config)?;
    match keyring.delete(&entry) {
        Ok(()) => println!("deleted {entry} from the {}", keyring.kind()),
        Err(SecretsError::NoEntry { .. }) => println!("{entry}: none stored; nothing to do"),
        Err(e) => return Err(e.into()),
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
