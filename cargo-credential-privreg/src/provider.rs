//! The provider's logic, apart from where it reads its setup and which store it opens, so
//! that unit tests can run it on protocol messages with an in-memory store.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use cargo_credential::{
    Action, CacheControl, Credential, CredentialResponse, Error, RegistryInfo, Secret,
};
use privreg_shared::config::{CONFIG_FILE, Config, KeyringChoice};
use privreg_shared::paths;
use privreg_shared::protocol::DaemonState;
use privreg_shared::secrets::{EntryName, Keyring, SecretStore, SecretsError, Token};

/// The provider cargo runs.
pub(crate) struct PrivregCredential;

impl Credential for PrivregCredential {
    fn perform(
        &self,
        registry: &RegistryInfo<'_>,
        action: &Action<'_>,
        args: &[&str],
    ) -> Result<CredentialResponse, Error> {
        let setup = Setup::load()?;
        let open = || -> Result<Box<dyn SecretStore>, SecretsError> {
            Ok(Box::new(Keyring::open(setup.keyring)?))
        };
        perform(&setup, open, registry, action, args)
    }
}

/// What the provider knows about the local privreg.
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    pub config_dir: PathBuf,
    pub keyring: KeyringChoice,
    /// Where the daemon listens: `listen` from `config.toml` (unless its port is 0) and the
    /// address in `daemon.json`.
    pub daemon_addrs: Vec<SocketAddr>,
}

impl Setup {
    /// Reads `config.toml` (a missing one means privreg is not set up: no daemon, `auto`
    /// keyring) and `daemon.json`, from the directories `PRIVREG_CONFIG_DIR` and
    /// `PRIVREG_CACHE_DIR` name, else the platform's.
    pub(crate) fn load() -> Result<Setup, Error> {
        let config_dir = paths::config_dir(None).ok_or_else(|| {
            Error::from(format!(
                "cannot find privreg's config directory; set {}",
                paths::CONFIG_DIR_ENV
            ))
        })?;
        let mut setup = Setup {
            keyring: KeyringChoice::Auto,
            daemon_addrs: Vec::new(),
            config_dir,
        };
        if setup.config_dir.join(CONFIG_FILE).exists() {
            let config = Config::load(&setup.config_dir).map_err(|e| Error::Other(Box::new(e)))?;
            setup.keyring = config.keyring;
            if config.listen.port() != 0 {
                setup.daemon_addrs.push(config.listen);
            }
        }
        if let Some(addr) = paths::cache_dir(None).and_then(|d| read_daemon_addr(&d)) {
            setup.daemon_addrs.push(addr);
        }
        Ok(setup)
    }
}

/// The address in `<cache dir>/daemon.json` (`{"addr":"127.0.0.1:PORT","pid":N}`), if any.
pub(crate) fn read_daemon_addr(cache_dir: &Path) -> Option<SocketAddr> {
    DaemonState::read(cache_dir)?.addr.parse().ok()
}

/// Whether `index_url` is one of the daemon's: `sparse+http://ADDR/index/` or
/// `sparse+http://ADDR/upstream/NAME/index/` (trailing `/` optional; `localhost` for a loopback
/// address; any loopback address when the daemon listens on an unspecified one).
pub(crate) fn served_by_daemon(index_url: &str, daemon_addrs: &[SocketAddr]) -> bool {
    let Some(rest) = index_url.trim().strip_prefix("sparse+") else {
        return false;
    };
    let Ok(url) = url::Url::parse(rest) else {
        return false;
    };
    if url.scheme() != "http" || url.query().is_some() || url.fragment().is_some() {
        return false;
    }
    let path = url.path().trim_end_matches('/');
    let view = match path.strip_prefix("/upstream/") {
        Some(rest) => rest
            .strip_suffix("/index")
            .is_some_and(|name| !name.is_empty() && !name.contains('/')),
        None => path == "/index",
    };
    if !view {
        return false;
    }
    let Some(port) = url.port_or_known_default() else {
        return false;
    };
    let host = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        Some(url::Host::Domain(d)) if d.eq_ignore_ascii_case("localhost") => None,
        _ => return false,
    };
    daemon_addrs.iter().any(|addr| {
        addr.port() == port
            && match host {
                Some(ip) => ip == addr.ip() || (addr.ip().is_unspecified() && ip.is_loopback()),
                None => addr.ip().is_loopback() || addr.ip().is_unspecified(),
            }
    })
}

fn other(e: SecretsError) -> Error {
    Error::Other(Box::new(e))
}

/// Answers one request. `open` opens the keyring, and is called only when one is needed.
pub(crate) fn perform<S: SecretStore + ?Sized>(
    setup: &Setup,
    open: impl FnOnce() -> Result<Box<S>, SecretsError>,
    registry: &RegistryInfo<'_>,
    action: &Action<'_>,
    args: &[&str],
) -> Result<CredentialResponse, Error> {
    if !args.is_empty() {
        // Never echo them: `cargo login -- …` may carry a secret.
        return Err(format!(
            "cargo-credential-privreg takes no arguments (it was given {})",
            args.len()
        )
        .into());
    }
    if served_by_daemon(registry.index_url, &setup.daemon_addrs) {
        return match action {
            Action::Get(_) => {
                let store = open().map_err(other)?;
                let token = store
                    .get(&EntryName::local_token(&setup.config_dir))
                    .map_err(other)?;
                Ok(get_response(&token))
            }
            Action::Login(_) | Action::Logout => Err(format!(
                "{} is served by the local privreg daemon, whose local token is managed by \
                 `privreg init`; `cargo {action}` does not change it (tokens for privreg's \
                 upstreams: `privreg login NAME`)",
                registry.name.unwrap_or("this registry")
            )
            .into()),
            _ => Err(Error::OperationNotSupported),
        };
    }

    let entry = EntryName::registry(registry.index_url);
    match action {
        Action::Get(_) => {
            let store = open().map_err(other)?;
            match store.get(&entry) {
                Ok(token) => Ok(get_response(&token)),
                Err(SecretsError::NoEntry { .. }) => Err(Error::NotFound),
                Err(e) => Err(other(e)),
            }
        }
        Action::Login(options) => {
            let secret = cargo_credential::read_token(options, registry)?;
            let token = Token::new(secret.expose()).map_err(other)?;
            let store = open().map_err(other)?;
            store.set(&entry, &token).map_err(other)?;
            Ok(CredentialResponse::Login)
        }
        Action::Logout => {
            let store = open().map_err(other)?;
            match store.delete(&entry) {
                Ok(()) => Ok(CredentialResponse::Logout),
                Err(SecretsError::NoEntry { .. }) => Err(Error::NotFound),
                Err(e) => Err(other(e)),
            }
        }
        _ => Err(Error::OperationNotSupported),
    }
}

fn get_response(token: &Token) -> CredentialResponse {
    CredentialResponse::Get {
        token: Secret::from(token.expose().to_owned()),
        cache: CacheControl::Session,
        operation_independent: true,
    }
}

#[cfg(test)]
#[path = "provider_tests.rs"]
mod tests;
