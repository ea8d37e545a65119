//! Tokens in the OS keyring, for the daemon, the `privreg` CLI and the credential provider.
//!
//! # Stores
//!
//! [`Keyring::open`] picks the store from `config.toml`'s `keyring` ([`KeyringChoice`]):
//!
//! - `auto`: on Linux (and the BSDs) the Secret Service when one answers on the session bus
//!   (gnome-keyring, `KWallet`, `KeePassXC`), else the kernel keyring (keyutils, Linux only); the
//!   Keychain on macOS; the Credential Manager on Windows.
//! - `secret-service` / `keyutils`: that store or an error, never a silent fallback.
//!
//! # Entry names
//!
//! Every entry has the service [`SERVICE`] (`privreg`); its user (account) says what the token
//! is for ([`EntryName`]):
//!
//! - `local-token:<config dir>`: the daemon's local token, one per privreg instance, named by
//!   its config directory as an absolute, canonical path (so that daemons with different
//!   `PRIVREG_CONFIG_DIR`s, e.g. in tests, never share or overwrite each other's token);
//! - `<index URL>`: the token for the registry with that index URL, `sparse+` kept and a
//!   trailing `/` added (`sparse+https://cargo.acme.example/index/`). privreg's upstreams and
//!   `cargo login` through the provider use the same entry for the same registry.
//!
//! How the stores show an entry with user `U`:
//!
//! - Secret Service: an item in the default collection with attributes `service` = `privreg`
//!   and `username` = `U` (label `keyring:U@privreg`):
//!   `secret-tool lookup service privreg username U`.
//! - keyutils: a `user` key described `keyring:U@privreg`, added to the session keyring and
//!   linked into the per-user persistent keyring (`keyctl get_persistent @s`), which outlives
//!   the login session (by default until 3 days after its last use, never across a reboot); a
//!   process in another session (e.g. the daemon as a user service) finds it through that:
//!   `keyctl search @s user keyring:U@privreg`.
//! - macOS Keychain: a generic password, service `privreg`, account `U`.
//! - Windows Credential Manager: a generic credential with target `U.privreg`.
//!
//! # Environment
//!
//! An upstream's token may instead come from `PRIVREG_TOKEN_<NAME>`
//! ([`UpstreamName::token_var`]), which wins over the keyring ([`upstream_token`]).
//!
//! Calls are blocking (the Secret Service is a D-Bus round trip): async code should call them
//! from `spawn_blocking`. No message of this module ever holds a token: [`Token`] prints as
//! `<redacted>`.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use keyring_core::{CredentialStore, Entry};

use crate::config::KeyringChoice;
pub use crate::name::TOKEN_ENV_PREFIX;
use crate::name::UpstreamName;

/// The keyring service of every privreg entry.
pub const SERVICE: &str = "privreg";
/// The user of the local-token entry is this followed by the config directory.
pub const LOCAL_TOKEN_USER_PREFIX: &str = "local-token:";
/// The keyring user of the shared cache tier's credentials starts with this, then its URL.
pub const SHARED_TIER_USER_PREFIX: &str = "shared-tier:";
/// Bytes of OS randomness in a local token (hex-encoded: 64 characters).
pub const LOCAL_TOKEN_BYTES: usize = 32;

/// A secret. `Debug` and `Display` print `<redacted>`; [`Token::expose`] gives the text.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// Makes a token from user input: surrounding whitespace is trimmed; an empty token or one
    /// holding control characters (which cannot go into an HTTP header) is refused.
    pub fn new(text: impl Into<String>) -> Result<Token, SecretsError> {
        let text = text.into();
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(SecretsError::InvalidToken {
                reason: "it is empty",
            });
        }
        if trimmed.chars().any(char::is_control) {
            return Err(SecretsError::InvalidToken {
                reason: "it holds control characters",
            });
        }
        Ok(Token(if trimmed.len() == text.len() {
            text
        } else {
            trimmed.to_owned()
        }))
    }

    /// The secret text, e.g. for an `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token, in time that does not depend on where they differ
    /// (for the daemon's check of the token cargo presents).
    pub fn matches(&self, presented: &[u8]) -> bool {
        let ours = self.0.as_bytes();
        if ours.len() != presented.len() {
            return false;
        }
        ours.iter()
            .zip(presented)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A new local token: [`LOCAL_TOKEN_BYTES`] bytes from the OS random source, hex-encoded.
pub fn generate_local_token() -> Result<Token, SecretsError> {
    let mut bytes = [0u8; LOCAL_TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| SecretsError::Random(e.to_string()))?;
    let token = Token(hex::encode(bytes));
    bytes.fill(0);
    Ok(token)
}

/// Which keyring entry: the daemon's local token or a registry's token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntryName {
    kind: EntryKind,
    user: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum EntryKind {
    LocalToken,
    Registry,
    SharedTier,
}

impl EntryName {
    /// The local token of the privreg instance whose config directory is `config_dir`. The path
    /// is made absolute and, when the directory exists, canonical: create it first.
    pub fn local_token(config_dir: &Path) -> EntryName {
        let dir = std::fs::canonicalize(config_dir)
            .or_else(|_| std::path::absolute(config_dir))
            .unwrap_or_else(|_| config_dir.to_owned());
        EntryName {
            kind: EntryKind::LocalToken,
            user: format!("{LOCAL_TOKEN_USER_PREFIX}{}", dir.display()),
        }
    }

    /// The token of the registry with this index URL (`sparse+…` or a git index URL), as
    /// written in `config.toml` or sent by cargo; see [`normalize_index_url`].
    pub fn registry(index_url: &str) -> EntryName {
        EntryName {
            kind: EntryKind::Registry,
            user: normalize_index_url(index_url),
        }
    }

    /// The credentials (`KEY_ID:SECRET`) of the shared cache tier at `url` (`[cache.shared] url`,
    /// e.g. `s3://bucket/prefix`), stored by `privreg login --shared`.
    pub fn shared_tier(url: &str) -> EntryName {
        EntryName {
            kind: EntryKind::SharedTier,
            user: format!("{SHARED_TIER_USER_PREFIX}{}", url.trim()),
        }
    }

    /// The keyring service: always [`SERVICE`].
    pub fn service(&self) -> &'static str {
        SERVICE
    }

    /// The keyring user (account) that names this entry.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Whether this is the daemon's own local token (rather than an upstream's).
    pub fn is_local_token(&self) -> bool {
        self.kind == EntryKind::LocalToken
    }

    /// What to do when the entry is missing.
    fn hint(&self) -> &'static str {
        match self.kind {
            EntryKind::LocalToken => "run `privreg init` to create it",
            EntryKind::Registry => {
                "store one with `privreg login NAME` or `cargo login --registry NAME`"
            }
            EntryKind::SharedTier => "store them with `privreg login --shared` (KEY_ID:SECRET)",
        }
    }
}

impl fmt::Display for EntryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            EntryKind::LocalToken => write!(
                f,
                "privreg's local token (config dir {})",
                &self.user[LOCAL_TOKEN_USER_PREFIX.len()..]
            ),
            EntryKind::Registry => write!(f, "the token for registry {}", redact_url(&self.user)),
            EntryKind::SharedTier => write!(
                f,
                "the credentials for the shared cache tier {}",
                &self.user[SHARED_TIER_USER_PREFIX.len()..]
            ),
        }
    }
}

/// The keyring user for a registry: `sparse+` kept, scheme and host lower-cased, default port
/// dropped and, for sparse indexes, a trailing `/` added (cargo may send the URL without it).
/// Text that is not a URL is kept as it is, trimmed.
pub fn normalize_index_url(index_url: &str) -> String {
    let text = index_url.trim();
    let (prefix, rest) = match text.strip_prefix("sparse+") {
        Some(rest) => ("sparse+", rest),
        None => ("", text),
    };
    let Ok(mut url) = url::Url::parse(rest) else {
        return text.to_owned();
    };
    if !prefix.is_empty() && !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    format!("{prefix}{url}")
}

/// A URL for messages: whatever precedes an `@` in its authority (a user name, a password,
/// which privreg never puts there) is replaced by `***`. Read as text, so that it also works on
/// URLs that do not parse.
pub(crate) fn redact_url(text: &str) -> String {
    let Some(start) = text.find("://").map(|i| i + 3) else {
        return text.to_owned();
    };
    let authority_len = text[start..]
        .find(['/', '?', '#'])
        .unwrap_or(text.len() - start);
    match text[start..start + authority_len].rfind('@') {
        Some(at) => format!("{}***{}", &text[..start], &text[start + at..]),
        None => text.to_owned(),
    }
}

/// Upstream `name`'s token from the environment, read through `lookup` (pure; see
/// [`token_from_env`]). An unset or empty variable is `None`.
pub fn token_from_env_with(
    name: &UpstreamName,
    lookup: impl FnOnce(&str) -> Option<String>,
) -> Result<Option<Token>, SecretsError> {
    let var = name.token_var();
    match lookup(&var) {
        None => Ok(None),
        Some(v) if v.trim().is_empty() => Ok(None),
        Some(v) => Token::new(v).map(Some).map_err(|e| match e {
            SecretsError::InvalidToken { reason } => SecretsError::EnvToken { var, reason },
            other => other,
        }),
    }
}

/// Upstream `name`'s token from the process environment (`PRIVREG_TOKEN_<NAME>`).
pub fn token_from_env(name: &UpstreamName) -> Result<Option<Token>, SecretsError> {
    let var = name.token_var();
    match std::env::var_os(&var) {
        None => Ok(None),
        Some(v) => match v.into_string() {
            Ok(v) => token_from_env_with(name, |_| Some(v)),
            Err(_) => Err(SecretsError::EnvToken {
                var,
                reason: "it is not UTF-8",
            }),
        },
    }
}

/// The token privreg sends to upstream `name` (index URL `index_url`): the environment
/// variable if set, else the keyring entry for the index URL.
pub fn upstream_token(
    store: &dyn SecretStore,
    name: &UpstreamName,
    index_url: &str,
) -> Result<Token, SecretsError> {
    match token_from_env(name)? {
        Some(token) => Ok(token),
        None => store.get(&EntryName::registry(index_url)),
    }
}

/// The kinds of OS credential store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreKind {
    /// The D-Bus Secret Service (GNOME Keyring, `KWallet`): `keyring = "secret-service"`.
    SecretService,
    /// The Linux kernel keyring: `keyring = "keyutils"`.
    Keyutils,
    /// The macOS keychain.
    MacosKeychain,
    /// The Windows Credential Manager.
    WindowsCredentialManager,
}

impl fmt::Display for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StoreKind::SecretService => "secret service",
            StoreKind::Keyutils => "kernel keyring (keyutils)",
            StoreKind::MacosKeychain => "macOS keychain",
            StoreKind::WindowsCredentialManager => "windows credential manager",
        })
    }
}

/// What went wrong with a token or the keyring. No message ever holds a token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SecretsError {
    /// The store works but has no such entry.
    #[error("{entry} is not in the {store}; {hint}", hint = entry.hint())]
    NoEntry {
        /// The store asked.
        store: StoreKind,
        /// The entry it lacks.
        entry: EntryName,
    },
    /// No store could be opened; `tried` says why, store by store.
    #[error(
        "no keyring answered ({}); start a secret service (e.g. gnome-keyring) in this session, or choose a store that works here with `keyring = \"secret-service\"` or `\"keyutils\"` in config.toml",
        tried_list(tried)
    )]
    NoStore {
        /// Each store tried, in order, with why it could not be opened.
        tried: Vec<(StoreKind, String)>,
    },
    /// The store answered with an error.
    #[error("{store}: {message}")]
    Store {
        /// The store that failed.
        store: StoreKind,
        /// Its error message, with any secret bytes dropped.
        message: String,
    },
    /// The entry exists but does not hold a token (not UTF-8 text, or not a usable token).
    #[error(
        "{entry} in the {store} is not a usable token (not UTF-8 text, or control characters); replace it ({hint})",
        hint = entry.hint()
    )]
    BadEntry {
        /// The store that holds the entry.
        store: StoreKind,
        /// The entry with the unusable value.
        entry: EntryName,
    },
    /// Text given as a token ([`Token::new`], e.g. `privreg login`'s stdin) is empty or holds
    /// control characters.
    #[error("the token is not usable: {reason}")]
    InvalidToken {
        /// What is wrong with it (never the token itself).
        reason: &'static str,
    },
    /// A `PRIVREG_TOKEN_<NAME>` variable is set but does not hold a usable token.
    #[error("environment variable {var} does not hold a usable token: {reason}")]
    EnvToken {
        /// The variable's name.
        var: String,
        /// What is wrong with its value (never the value itself).
        reason: &'static str,
    },
    /// The OS random source failed while making a local token; holds its error.
    #[error("cannot read random bytes from the operating system: {0}")]
    Random(String),
}

fn tried_list(tried: &[(StoreKind, String)]) -> String {
    if tried.is_empty() {
        return "no store is supported on this platform".to_owned();
    }
    tried
        .iter()
        .map(|(kind, why)| format!("{kind}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Get, set and delete tokens. [`Keyring`] is the real one; tests may supply their own.
pub trait SecretStore: Send + Sync {
    /// The token in `entry`; [`SecretsError::NoEntry`] when there is none.
    fn get(&self, entry: &EntryName) -> Result<Token, SecretsError>;
    /// Stores `token` in `entry`, replacing what was there.
    fn set(&self, entry: &EntryName, token: &Token) -> Result<(), SecretsError>;
    /// Deletes `entry`; [`SecretsError::NoEntry`] when there is none.
    fn delete(&self, entry: &EntryName) -> Result<(), SecretsError>;
}

/// An open OS credential store.
#[derive(Clone)]
pub struct Keyring {
    kind: StoreKind,
    store: Arc<CredentialStore>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// Opens the store that `choice` names (see the module docs). Opening the Secret Service
    /// connects to the session bus; keep the `Keyring` rather than opening one per call.
    pub fn open(choice: KeyringChoice) -> Result<Keyring, SecretsError> {
        let mut tried = Vec::new();
        for &kind in candidates(choice) {
            match connect(kind) {
                Ok(store) => return Ok(Keyring { kind, store }),
                Err(why) => tried.push((kind, why)),
            }
        }
        Err(SecretsError::NoStore { tried })
    }

    /// Which store this is.
    pub fn kind(&self) -> StoreKind {
        self.kind
    }

    fn entry(&self, name: &EntryName) -> Result<Entry, SecretsError> {
        Entry::new_in_store(&self.store, SERVICE, name.user()).map_err(|e| self.error(name, e))
    }

    /// Maps a keyring-core error, dropping any secret bytes it carries.
    fn error(&self, name: &EntryName, e: keyring_core::Error) -> SecretsError {
        use keyring_core::Error as E;
        let store = self.kind;
        let message = match e {
            E::NoEntry => {
                return SecretsError::NoEntry {
                    store,
                    entry: name.clone(),
                };
            }
            E::BadEncoding(_) | E::BadDataFormat(..) => {
                return SecretsError::BadEntry {
                    store,
                    entry: name.clone(),
                };
            }
            E::Ambiguous(items) => format!(
                "{} entries match {name}; delete the extra ones with the store's own tool",
                items.len()
            ),
            E::NoStorageAccess(err) => {
                format!("cannot use the store for {name} (is it locked?): {err}")
            }
            E::PlatformFailure(err) => format!("{name}: {err}"),
            E::TooLong(what, limit) => {
                format!("{name}: the {what} is longer than the store's limit of {limit}")
            }
            E::Invalid(what, why) => format!("{name}: invalid {what}: {why}"),
            E::BadStoreFormat(why) => format!("the store's data is malformed: {why}"),
            E::NoDefaultStore => "no store is configured".to_owned(),
            E::NotSupportedByStore(why) => format!("{name}: not supported: {why}"),
            _ => format!("{name}: the store failed"),
        };
        SecretsError::Store { store, message }
    }
}

impl SecretStore for Keyring {
    fn get(&self, name: &EntryName) -> Result<Token, SecretsError> {
        let secret = self
            .entry(name)?
            .get_password()
            .map_err(|e| self.error(name, e))?;
        Token::new(secret).map_err(|_| SecretsError::BadEntry {
            store: self.kind,
            entry: name.clone(),
        })
    }

    fn set(&self, name: &EntryName, token: &Token) -> Result<(), SecretsError> {
        self.entry(name)?
            .set_password(token.expose())
            .map_err(|e| self.error(name, e))
    }

    fn delete(&self, name: &EntryName) -> Result<(), SecretsError> {
        self.entry(name)?
            .delete_credential()
            .map_err(|e| self.error(name, e))
    }
}

/// The stores to try for a choice, in order.
fn candidates(choice: KeyringChoice) -> &'static [StoreKind] {
    match choice {
        KeyringChoice::SecretService => &[StoreKind::SecretService],
        KeyringChoice::Keyutils => &[StoreKind::Keyutils],
        KeyringChoice::Auto => AUTO,
    }
}

#[cfg(target_os = "linux")]
const AUTO: &[StoreKind] = &[StoreKind::SecretService, StoreKind::Keyutils];
#[cfg(all(
    unix,
    not(target_os = "linux"),
    not(target_vendor = "apple"),
    not(target_os = "android")
))]
const AUTO: &[StoreKind] = &[StoreKind::SecretService];
#[cfg(target_os = "macos")]
const AUTO: &[StoreKind] = &[StoreKind::MacosKeychain];
#[cfg(windows)]
const AUTO: &[StoreKind] = &[StoreKind::WindowsCredentialManager];
#[cfg(not(any(
    target_os = "linux",
    target_os = "macos",
    windows,
    all(unix, not(target_vendor = "apple"), not(target_os = "android"))
)))]
const AUTO: &[StoreKind] = &[];

const UNAVAILABLE: &str = "not available on this platform";

/// Opens one store, or says why it cannot.
fn connect(kind: StoreKind) -> Result<Arc<CredentialStore>, String> {
    match kind {
        StoreKind::SecretService => connect_secret_service(),
        StoreKind::Keyutils => connect_keyutils(),
        StoreKind::MacosKeychain => connect_macos_keychain(),
        StoreKind::WindowsCredentialManager => connect_windows(),
    }
}

/// The Secret Service: connecting opens a session with `org.freedesktop.secrets`, so success
/// means one answered.
#[cfg(all(unix, not(target_vendor = "apple"), not(target_os = "android")))]
fn connect_secret_service() -> Result<Arc<CredentialStore>, String> {
    let store: Arc<CredentialStore> =
        zbus_secret_service_keyring_store::Store::new().map_err(|e| store_reason(&e))?;
    Ok(store)
}

#[cfg(not(all(unix, not(target_vendor = "apple"), not(target_os = "android"))))]
fn connect_secret_service() -> Result<Arc<CredentialStore>, String> {
    Err(UNAVAILABLE.to_owned())
}

/// keyutils: building an entry looks up the session keyring, which fails where the kernel
/// keyring is unusable (e.g. keyctl blocked by a seccomp filter).
#[cfg(target_os = "linux")]
fn connect_keyutils() -> Result<Arc<CredentialStore>, String> {
    let store: Arc<CredentialStore> =
        linux_keyutils_keyring_store::Store::new().map_err(|e| store_reason(&e))?;
    Entry::new_in_store(&store, SERVICE, "probe").map_err(|e| store_reason(&e))?;
    Ok(store)
}

#[cfg(not(target_os = "linux"))]
fn connect_keyutils() -> Result<Arc<CredentialStore>, String> {
    Err(UNAVAILABLE.to_owned())
}

#[cfg(target_os = "macos")]
fn connect_macos_keychain() -> Result<Arc<CredentialStore>, String> {
    let store: Arc<CredentialStore> =
        apple_native_keyring_store::keychain::Store::new().map_err(|e| store_reason(&e))?;
    Ok(store)
}

#[cfg(not(target_os = "macos"))]
fn connect_macos_keychain() -> Result<Arc<CredentialStore>, String> {
    Err(UNAVAILABLE.to_owned())
}

#[cfg(windows)]
fn connect_windows() -> Result<Arc<CredentialStore>, String> {
    let store: Arc<CredentialStore> =
        windows_native_keyring_store::Store::new().map_err(|e| store_reason(&e))?;
    Ok(store)
}

#[cfg(not(windows))]
fn connect_windows() -> Result<Arc<CredentialStore>, String> {
    Err(UNAVAILABLE.to_owned())
}

/// Why a store could not be opened (opening involves no secret, so the error text is safe).
#[allow(dead_code)] // unused on platforms without any store
fn store_reason(e: &keyring_core::Error) -> String {
    match e {
        keyring_core::Error::NoStorageAccess(err) | keyring_core::Error::PlatformFailure(err) => {
            err.to_string()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn local_dir(name: &EntryName) -> Option<PathBuf> {
        name.user()
            .strip_prefix(LOCAL_TOKEN_USER_PREFIX)
            .map(PathBuf::from)
    }

    #[test]
    fn token_never_prints() {
        let t = Token::new("s3cret-value").unwrap();
        assert_eq!(format!("{t}"), "<redacted>");
        assert_eq!(format!("{t:?}"), "<redacted>");
        assert_eq!(format!("{:?}", Some(&t)), "Some(<redacted>)");
        assert_eq!(t.expose(), "s3cret-value");
    }

    #[test]
    fn token_input_is_trimmed_and_checked() {
        assert_eq!(Token::new("  abc \n").unwrap().expose(), "abc");
        assert_eq!(Token::new("Bearer abc").unwrap().expose(), "Bearer abc");
        for bad in ["", "  \n", "ab\ncd", "ab\u{7f}"] {
            let e = Token::new(bad).unwrap_err();
            assert!(matches!(e, SecretsError::InvalidToken { .. }), "{bad:?}");
        }
        let e = Token::new("secret\u{1}value").unwrap_err().to_string();
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn token_matches() {
        let t = Token::new("abcdef").unwrap();
        assert!(t.matches(b"abcdef"));
        assert!(!t.matches(b"abcdeg"));
        assert!(!t.matches(b"abcde"));
        assert!(!t.matches(b""));
    }

    #[test]
    fn local_tokens_are_random_hex() {
        let a = generate_local_token().unwrap();
        let b = generate_local_token().unwrap();
        assert_eq!(a.expose().len(), 2 * LOCAL_TOKEN_BYTES);
        assert!(a.expose().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn env_var_names() {
        let token_env_var = |n: &str| UpstreamName::new(n).unwrap().token_var();
        assert_eq!(token_env_var("acme"), "PRIVREG_TOKEN_ACME");
        assert_eq!(token_env_var("crates-io"), "PRIVREG_TOKEN_CRATES_IO");
        assert_eq!(token_env_var("my_reg2"), "PRIVREG_TOKEN_MY_REG2");
    }

    fn name(n: &str) -> UpstreamName {
        UpstreamName::new(n).unwrap()
    }

    #[test]
    fn env_lookup_is_pure() {
        let t = token_from_env_with(&name("my-reg"), |var| {
            assert_eq!(var, "PRIVREG_TOKEN_MY_REG");
            Some("tok\n".to_owned())
        })
        .unwrap()
        .unwrap();
        assert_eq!(t.expose(), "tok");
        assert!(token_from_env_with(&name("x"), |_| None).unwrap().is_none());
        assert!(
            token_from_env_with(&name("x"), |_| Some(String::new()))
                .unwrap()
                .is_none()
        );
        let e = token_from_env_with(&name("x"), |_| Some("se\u{0}cret".to_owned())).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("PRIVREG_TOKEN_X") && !msg.contains("cret"),
            "{msg}"
        );
    }

    struct Empty;
    impl SecretStore for Empty {
        fn get(&self, entry: &EntryName) -> Result<Token, SecretsError> {
            Err(SecretsError::NoEntry {
                store: StoreKind::Keyutils,
                entry: entry.clone(),
            })
        }
        fn set(&self, _: &EntryName, _: &Token) -> Result<(), SecretsError> {
            unreachable!()
        }
        fn delete(&self, _: &EntryName) -> Result<(), SecretsError> {
            unreachable!()
        }
    }

    #[test]
    fn upstream_token_falls_back_to_the_keyring() {
        // A name no environment sets.
        let e = upstream_token(
            &Empty,
            &name("privreg-unit-test-unset"),
            "sparse+https://a.example/x",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the token for registry sparse+https://a.example/x/ is not in the kernel keyring \
             (keyutils); store one with `privreg login NAME` or `cargo login --registry NAME`"
        );
    }

    #[test]
    fn registry_entries_are_normalized() {
        let cases = [
            (
                "sparse+http://127.0.0.1:8080/index",
                "sparse+http://127.0.0.1:8080/index/",
            ),
            (
                "sparse+HTTPS://Cargo.Acme.Example:443/index/",
                "sparse+https://cargo.acme.example/index/",
            ),
            (
                tame_index::index::git::CRATES_IO_INDEX,
                tame_index::index::git::CRATES_IO_INDEX,
            ),
            (" not a url ", "not a url"),
        ];
        for (input, user) in cases {
            let e = EntryName::registry(input);
            assert_eq!(e.user(), user, "{input}");
            assert_eq!(e.service(), "privreg");
            assert!(!e.is_local_token());
        }
        assert_eq!(
            EntryName::registry("sparse+http://h/i"),
            EntryName::registry("sparse+http://h/i/")
        );
    }

    #[test]
    fn messages_hide_url_passwords() {
        let e = EntryName::registry("sparse+https://u:hunter2@h.example/index/");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn local_token_entries_name_the_config_dir() {
        let dir = std::env::temp_dir();
        let e = EntryName::local_token(&dir);
        assert!(e.is_local_token());
        let named = local_dir(&e).unwrap();
        assert!(named.is_absolute());
        assert_eq!(named, std::fs::canonicalize(&dir).unwrap());
        assert!(e.user().starts_with("local-token:/"));
        assert!(
            e.to_string()
                .starts_with("privreg's local token (config dir /")
        );
        // A relative, missing directory still gets an absolute name.
        let rel = EntryName::local_token(Path::new("no-such-privreg-dir"));
        assert!(local_dir(&rel).unwrap().is_absolute());
    }

    #[test]
    fn no_store_message_says_what_to_do() {
        let e = SecretsError::NoStore {
            tried: vec![
                (StoreKind::SecretService, "no bus".to_owned()),
                (StoreKind::Keyutils, "operation not permitted".to_owned()),
            ],
        };
        assert_eq!(
            e.to_string(),
            "no keyring answered (secret service: no bus; kernel keyring (keyutils): operation \
             not permitted); start a secret service (e.g. gnome-keyring) in this session, or \
             choose a store that works here with `keyring = \"secret-service\"` or \
             `\"keyutils\"` in config.toml"
        );
    }

    #[test]
    fn choices_map_to_stores() {
        assert_eq!(
            candidates(KeyringChoice::SecretService),
            [StoreKind::SecretService]
        );
        assert_eq!(candidates(KeyringChoice::Keyutils), [StoreKind::Keyutils]);
        #[cfg(target_os = "linux")]
        assert_eq!(
            candidates(KeyringChoice::Auto),
            [StoreKind::SecretService, StoreKind::Keyutils]
        );
    }
}
