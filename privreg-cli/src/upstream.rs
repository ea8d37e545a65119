//! `privreg upstream add|remove|list|check`: `[upstreams.*]` in `config.toml`, edited with
//! `toml_edit` (comments kept, written atomically, checked with the daemon's own parser before
//! anything is written). The running daemon reloads the file by itself.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use privreg_shared::UpstreamName;
use privreg_shared::config::{CONFIG_FILE, Config, Upstream, parse_index_url};
use privreg_shared::protocol::RegistryConfig;
use privreg_shared::secrets::{
    EntryName, Keyring, SecretStore, SecretsError, Token, token_from_env,
};
use toml_edit::{DocumentMut, Item, Table, value};

use super::Dirs;
use super::login::find_upstream;
use privreg_shared::store::write_atomic;

#[derive(Subcommand)]
pub enum UpstreamCommand {
    /// Add an upstream registry, after checking that its config.json answers.
    ///
    /// Example: privreg upstream add acme <sparse+https://cargo.acme.example/index>/ --priority 600 --ttl 2m
    Add {
        /// A name of ASCII letters, digits, `-` and `_` (used in pins and `PRIVREG_TOKEN`_<NAME>).
        name: UpstreamName,
        /// The sparse index URL, `sparse+https://…/`.
        url: String,
        /// Higher priorities own the crate names they have (default 500).
        #[arg(long, allow_hyphen_values = true)]
        priority: Option<i32>,
        /// How long an index file is used before it is revalidated, e.g. `2m`.
        #[arg(long)]
        ttl: Option<String>,
        /// How long one request to this upstream may take, e.g. `30s`.
        #[arg(long)]
        timeout: Option<String>,
        /// Add it without fetching its config.json first.
        #[arg(long)]
        no_check: bool,
    },
    /// Remove an upstream from config.toml.
    ///
    /// Example: privreg upstream remove crates-io
    Remove {
        /// The upstream's name in config.toml.
        name: UpstreamName,
        /// Also delete its token from the OS keyring.
        #[arg(long)]
        logout: bool,
    },
    /// List the upstreams in config.toml, with where each one's token comes from.
    ///
    /// Example: privreg upstream list
    List,
    /// Fetch each upstream's config.json (with its token when it answers 401; all upstreams, or
    /// those named).
    ///
    /// Example: privreg upstream check acme
    Check {
        /// Upstream names; default: all.
        names: Vec<UpstreamName>,
    },
}

/// Where an upstream's token comes from.
pub(crate) enum TokenSource {
    Env(String),
    Keyring,
    None,
}

/// Upstream `name`'s token: `PRIVREG_TOKEN_<NAME>`, else the keyring (if it opens).
pub(crate) fn upstream_token(
    keyring: Option<&Keyring>,
    name: &UpstreamName,
    index: &str,
) -> Result<(Option<Token>, TokenSource), SecretsError> {
    if let Some(t) = token_from_env(name)? {
        return Ok((Some(t), TokenSource::Env(name.token_var())));
    }
    let Some(keyring) = keyring else {
        return Ok((None, TokenSource::None));
    };
    match keyring.get(&EntryName::registry(index)) {
        Ok(t) => Ok((Some(t), TokenSource::Keyring)),
        Err(SecretsError::NoEntry { .. }) => Ok((None, TokenSource::None)),
        Err(e) => Err(e),
    }
}

/// Why an upstream's config.json could not be had. Never holds a token.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CheckError {
    #[error("upstream {name}: cannot reach {url}: {reason}")]
    Unreachable {
        name: String,
        url: String,
        reason: String,
    },
    #[error("upstream {name}: {url} answered HTTP {status}{hint}")]
    Status {
        name: String,
        url: String,
        status: reqwest::StatusCode,
        hint: String,
    },
    #[error(
        "upstream {name}: {url} redirects to another host ({to}); privreg never follows a redirect to another host with an upstream's token"
    )]
    Redirect {
        name: String,
        url: String,
        to: String,
    },
    #[error("upstream {name}: {url} is not a registry's config.json: {reason}")]
    NotConfig {
        name: String,
        url: String,
        reason: String,
    },
}

impl CheckError {
    /// Whether the upstream refused the token (or wants one).
    pub(crate) fn is_auth(&self) -> bool {
        matches!(self, CheckError::Status { status, .. } if is_auth_status(*status))
    }
}

/// 401 and 403: the upstream wants a token, or refused the one sent.
fn is_auth_status(status: reqwest::StatusCode) -> bool {
    matches!(
        status,
        reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN
    )
}

/// The error and its causes, for a message.
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// The innermost cause, e.g. "Connection refused (os error 111)".
fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(s) = cur.source() {
        cur = s;
    }
    cur.to_string()
}

/// Fetches `config.json` of upstream `name` at `index`, with `token` (sent raw) only when the
/// upstream answers 401 without it, as cargo does.
/// Redirects are followed only within the same origin (see [`privreg_shared::http`]).
pub(crate) async fn fetch_config(
    name: &str,
    index: &str,
    token: Option<&Token>,
    source: &TokenSource,
    timeout: Duration,
) -> Result<(), CheckError> {
    let base = parse_index_url(index).map_err(|e| CheckError::NotConfig {
        name: name.to_owned(),
        url: index.to_owned(),
        reason: e.to_string(),
    })?;
    let url = base
        .join("config.json")
        .expect("config.json joins a base URL");
    // Redirects are followed within the same origin only, as the daemon does.
    let client = privreg_shared::http::upstream_client()
        .timeout(timeout)
        .connect_timeout(timeout.min(privreg_shared::http::CONNECT_TIMEOUT))
        .build()
        .map_err(|e| CheckError::Unreachable {
            name: name.to_owned(),
            url: url.to_string(),
            reason: chain(&e),
        })?;
    let auth = token
        .map(|t| {
            privreg_shared::http::authorization(t).ok_or_else(|| CheckError::NotConfig {
                name: name.to_owned(),
                url: url.to_string(),
                reason: "its token is not a valid header value".to_owned(),
            })
        })
        .transpose()?;
    let send = |auth: Option<&reqwest::header::HeaderValue>| {
        let mut req = client.get(url.clone());
        if let Some(v) = auth {
            req = req.header(reqwest::header::AUTHORIZATION, v.clone());
        }
        req.send()
    };
    let unreachable = |e: reqwest::Error| CheckError::Unreachable {
        name: name.to_owned(),
        url: url.to_string(),
        reason: if e.is_timeout() {
            format!("no answer within {}", humantime::format_duration(timeout))
        } else if e.is_connect() {
            root_cause(&e)
        } else {
            chain(&e).replace(&format!(" for url ({url})"), "")
        },
    };
    // As cargo does: config.json without the token first, and with it only when the upstream
    // answers 401 (so a token never goes to an upstream that does not ask for it).
    let mut resp = send(None).await.map_err(unreachable)?;
    if resp.status() == reqwest::StatusCode::UNAUTHORIZED
        && let Some(v) = &auth
    {
        resp = send(Some(v)).await.map_err(unreachable)?;
    }
    let status = resp.status();
    if status.is_redirection() {
        let to = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .unwrap_or("?")
            .to_owned();
        return Err(CheckError::Redirect {
            name: name.to_owned(),
            url: url.to_string(),
            to,
        });
    }
    if !status.is_success() {
        let hint = match source {
            _ if !is_auth_status(status) => String::new(),
            TokenSource::None => format!("; it needs a token: run `privreg login {name}`"),
            TokenSource::Env(var) => {
                format!("; it refused the token in {var}: fix or unset that variable")
            }
            TokenSource::Keyring => {
                format!(
                    "; it refused the stored token: run `privreg login {name}` with a valid one"
                )
            }
        };
        return Err(CheckError::Status {
            name: name.to_owned(),
            url: url.to_string(),
            status,
            hint,
        });
    }
    let body = resp.bytes().await.map_err(|e| CheckError::Unreachable {
        name: name.to_owned(),
        url: url.to_string(),
        reason: chain(&e),
    })?;
    let config = RegistryConfig::parse(&body).map_err(|e| CheckError::NotConfig {
        name: name.to_owned(),
        url: url.to_string(),
        reason: format!("not JSON ({e})"),
    })?;
    if config.dl.is_none() {
        return Err(CheckError::NotConfig {
            name: name.to_owned(),
            url: url.to_string(),
            reason: "it has no `dl`".to_owned(),
        });
    }
    Ok(())
}

/// Checks one configured upstream with its token.
pub(crate) async fn check(keyring: Option<&Keyring>, up: &Upstream) -> anyhow::Result<()> {
    let (token, source) = upstream_token(keyring, &up.name, &up.index)
        .with_context(|| format!("upstream {}: cannot read its token", up.name))?;
    fetch_config(&up.name, &up.index, token.as_ref(), &source, up.timeout).await?;
    Ok(())
}

fn read_config_text(dirs: &Dirs) -> anyhow::Result<(std::path::PathBuf, String, DocumentMut)> {
    let path = dirs.config.join(CONFIG_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{}: no such file; run `privreg init` first", path.display())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    Config::parse(&path, &text)?;
    let doc = text
        .parse::<DocumentMut>()
        .with_context(|| format!("{} does not parse", path.display()))?;
    Ok((path, text, doc))
}

/// Validates the edited text with the daemon's parser, then writes it atomically.
fn write_config(path: &Path, text: &str) -> anyhow::Result<()> {
    Config::parse(path, text).context("the change was not written")?;
    let mode = std::fs::metadata(path).ok().map(|m| m.permissions());
    write_atomic(path, text.as_bytes())?;
    if let Some(p) = mode {
        std::fs::set_permissions(path, p)
            .with_context(|| format!("cannot set the permissions of {}", path.display()))?;
    }
    Ok(())
}

fn keyring_for(config: &Config) -> Option<Keyring> {
    Keyring::open(config.keyring).ok()
}

#[allow(clippy::too_many_arguments)]
async fn add(
    dirs: &Dirs,
    name: &UpstreamName,
    url: &str,
    priority: Option<i32>,
    ttl: Option<String>,
    timeout: Option<String>,
    no_check: bool,
) -> anyhow::Result<ExitCode> {
    parse_index_url(url).map_err(|e| anyhow::anyhow!("upstream {name}: {e}"))?;
    if priority == Some(0) {
        bail!("upstream {name}: --priority must be a non-zero integer");
    }
    for (flag, d) in [("--ttl", &ttl), ("--timeout", &timeout)] {
        if let Some(d) = d {
            humantime::parse_duration(d).map_err(|e| {
                anyhow::anyhow!(
                    "upstream {name}: {flag} {d:?} is not a duration such as \"2m\": {e}"
                )
            })?;
        }
    }
    let (path, _, mut doc) = read_config_text(dirs)?;
    let config = Config::load(&dirs.config)?;
    if config.upstream(name).is_some() {
        bail!(
            "{} already has upstream {name}; remove it first (`privreg upstream remove {name}`)",
            path.display()
        );
    }
    if !no_check {
        let keyring = keyring_for(&config);
        let (token, source) = upstream_token(keyring.as_ref(), name, url)
            .with_context(|| format!("upstream {name}: cannot read its token"))?;
        let wait = timeout
            .as_deref()
            .and_then(|t| humantime::parse_duration(t).ok())
            .unwrap_or(privreg_shared::config::DEFAULT_TIMEOUT);
        if let Err(e) = fetch_config(name, url, token.as_ref(), &source, wait).await {
            let more = if e.is_auth() && matches!(source, TokenSource::None) {
                format!(
                    "\n(`privreg login {name}` needs the upstream in config.toml: add it with `--no-check`, then log in; or pass the token in {} for this check)",
                    name.token_var()
                )
            } else {
                "\n(add it anyway with `--no-check`)".to_owned()
            };
            bail!("{e}; nothing was written{more}");
        }
    }
    let ups = doc
        .entry("upstreams")
        .or_insert_with(|| {
            let mut t = Table::new();
            t.set_implicit(true);
            Item::Table(t)
        })
        .as_table_like_mut()
        .context("`upstreams` in config.toml is not a table")?;
    let mut t = Table::new();
    t.insert("index", value(url));
    if let Some(p) = priority {
        t.insert("priority", value(i64::from(p)));
    }
    if let Some(d) = ttl {
        t.insert("ttl", value(d));
    }
    if let Some(d) = timeout {
        t.insert("timeout", value(d));
    }
    ups.insert(name.as_str(), Item::Table(t));
    write_config(&path, &doc.to_string())?;
    println!(
        "added upstream {name} ({url}, priority {}) to {}{}",
        priority.unwrap_or(privreg_shared::config::DEFAULT_PRIORITY),
        path.display(),
        if no_check {
            ""
        } else {
            "; its config.json answers"
        }
    );
    super::cargo_config::reinstall_if_installed(dirs)?;
    Ok(ExitCode::SUCCESS)
}

fn remove(dirs: &Dirs, name: &UpstreamName, logout: bool) -> anyhow::Result<ExitCode> {
    let (path, _, mut doc) = read_config_text(dirs)?;
    let config = Config::load(&dirs.config)?;
    let up = find_upstream(dirs, &config, name)?.clone();
    doc.get_mut("upstreams")
        .and_then(Item::as_table_like_mut)
        .and_then(|t| t.remove(name.as_str()))
        .with_context(|| format!("{}: cannot find upstream {name}", path.display()))?;
    write_config(&path, &doc.to_string())?;
    println!("removed upstream {name} from {}", path.display());
    super::cargo_config::reinstall_if_installed(dirs)?;
    let entry = EntryName::registry(&up.index);
    if let Some(keyring) = keyring_for(&config) {
        match (logout, keyring.delete(&entry)) {
            (true, Ok(())) => println!("deleted its token from the {}", keyring.kind()),
            (false, _) | (true, Err(SecretsError::NoEntry { .. })) => {}
            (true, Err(e)) => return Err(e.into()),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn list(dirs: &Dirs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&dirs.config)?;
    if config.upstreams.is_empty() {
        println!("no upstreams (add one with `privreg upstream add NAME URL`)");
    }
    let keyring = keyring_for(&config);
    for up in &config.upstreams {
        let token = match upstream_token(keyring.as_ref(), &up.name, &up.index) {
            Ok((_, TokenSource::Env(var))) => format!("token from {var}"),
            Ok((_, TokenSource::Keyring)) => "token in the keyring".to_owned(),
            Ok((_, TokenSource::None)) => "no token".to_owned(),
            Err(e) => format!("token unreadable: {e}"),
        };
        println!(
            "{:<16} priority {:<6} ttl {:<6} {}  ({token}{})",
            up.name,
            up.priority,
            humantime::format_duration(up.ttl).to_string(),
            up.index,
            if up.publish { ", publish" } else { "" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn run(dirs: &Dirs, cmd: UpstreamCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        UpstreamCommand::Add {
            name,
            url,
            priority,
            ttl,
            timeout,
            no_check,
        } => add(dirs, &name, &url, priority, ttl, timeout, no_check).await,
        UpstreamCommand::Remove { name, logout } => remove(dirs, &name, logout),
        UpstreamCommand::List => list(dirs),
        UpstreamCommand::Check { names } => {
            let config = Config::load(&dirs.config)?;
            let keyring = keyring_for(&config);
            let mut failed = false;
            for up in &config.upstreams {
                if !names.is_empty() && !names.contains(&up.name) {
                    continue;
                }
                match check(keyring.as_ref(), up).await {
                    Ok(()) => println!("ok    upstream {}: config.json answers", up.name),
                    Err(e) => {
                        failed = true;
                        println!("FAIL  {e:#}");
                    }
                }
            }
            for n in &names {
                find_upstream(dirs, &config, n)?;
            }
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::Cli;

    /// Upstream names are checked (by `UpstreamName`, the rule config.toml uses) when the
    /// arguments are parsed.
    #[test]
    fn upstream_names_are_checked_when_the_arguments_are_parsed() {
        let long = "a".repeat(65);
        let cases: [&[&str]; 5] = [
            &["privreg", "login", "a b"],
            &["privreg", "logout", "a/b"],
            &["privreg", "upstream", "add", "a.b", "sparse+http://h/"],
            &["privreg", "upstream", "remove", &long],
            &["privreg", "upstream", "check", "ok", "a b"],
        ];
        for args in cases {
            let e = Cli::try_parse_from(args).err().expect("refused");
            assert!(e.to_string().contains("upstream name"), "{args:?}: {e}");
        }
        let n64 = "a".repeat(64);
        assert!(Cli::try_parse_from(["privreg", "login", &n64]).is_ok());
        assert!(Cli::try_parse_from(["privreg", "upstream", "check", "acme-x", "ACME_x"]).is_ok());
    }

    fn status(code: u16) -> CheckError {
        CheckError::Status {
            name: "acme".into(),
            url: "https://acme.example/index/config.json".into(),
            status: reqwest::StatusCode::from_u16(code).unwrap(),
            hint: String::new(),
        }
    }

    #[test]
    fn only_401_and_403_ask_for_a_token() {
        assert!(status(401).is_auth());
        assert!(status(403).is_auth());
        assert!(!status(404).is_auth());
        assert!(!status(500).is_auth());
        assert_eq!(
            status(401).to_string(),
            "upstream acme: https://acme.example/index/config.json answered HTTP 401 Unauthorized"
        );
    }
}
