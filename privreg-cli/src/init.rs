//! `privreg init`: the config directory, a default `config.toml` and `preferences` (each only
//! when absent), and the local token in the OS keyring (only when absent; never printed).
//!
//! Choice: when `init` writes a new `config.toml`, it records the keyring store it actually
//! used (`keyring = "secret-service"` or `"keyutils"` on Linux) instead of `auto`. With `auto`,
//! the CLI in a desktop session (Secret Service) and the daemon run as a service, or the
//! credential provider run by cargo elsewhere, could pick different stores and miss the token;
//! naming the store makes them agree, and a store that stops answering is then an explicit
//! error rather than a silent switch. Where `auto` has a single candidate (macOS, Windows),
//! nothing is pinned.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use privreg_shared::config::{
    CONFIG_FILE, Config, DEFAULT_LISTEN, DEFAULT_PRIORITY, KeyringChoice,
};
use privreg_shared::pin::PREFERENCES_FILE;
use privreg_shared::secrets::{
    EntryName, Keyring, SecretStore, SecretsError, StoreKind, generate_local_token,
};

use super::Dirs;
use privreg_shared::store::write_atomic;

#[derive(Args)]
pub struct InitArgs {
    /// `listen` for a new config.toml (ignored when the file exists).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// The keyring store for a new config.toml; default: the store that answers here, recorded
    /// explicitly (ignored when the file exists).
    #[arg(long, value_enum)]
    keyring: Option<StoreArg>,
}

#[derive(Clone, Copy, ValueEnum)]
enum StoreArg {
    Auto,
    SecretService,
    Keyutils,
}

impl From<StoreArg> for KeyringChoice {
    fn from(s: StoreArg) -> KeyringChoice {
        match s {
            StoreArg::Auto => KeyringChoice::Auto,
            StoreArg::SecretService => KeyringChoice::SecretService,
            StoreArg::Keyutils => KeyringChoice::Keyutils,
        }
    }
}

/// The `keyring = …` line of a new config, for the store that was opened.
fn keyring_line(choice: KeyringChoice, opened: Option<StoreKind>) -> String {
    let explicit = match (choice, opened) {
        (KeyringChoice::SecretService, _)
        | (KeyringChoice::Auto, Some(StoreKind::SecretService)) => Some("secret-service"),
        (KeyringChoice::Keyutils, _) | (KeyringChoice::Auto, Some(StoreKind::Keyutils)) => {
            Some("keyutils")
        }
        _ => None,
    };
    match explicit {
        Some(store) => format!("keyring = \"{store}\""),
        None => "# keyring = \"auto\"".to_owned(),
    }
}

/// The default `config.toml`.
pub(crate) fn default_config(listen: SocketAddr, keyring_line: &str) -> String {
    let crates_io = tame_index::index::sparse::CRATES_IO_HTTP_INDEX;
    format!(
        r#"# privreg's configuration, written by `privreg init`; yours to edit. The daemon reloads it
# when it changes (a file that does not parse leaves the last good one in force; see
# `privreg status`). Unknown keys are errors.

# Where the daemon listens: loopback only. Port 0 picks a free port, but then cargo's
# configuration must be rewritten after each restart (`privreg cargo-config --install`).
listen = "{listen}"

# Cargo must present privreg's local token, which cargo-credential-privreg reads from the OS
# keyring. Keep this on: it stops other local users and web pages from using the daemon.
auth = true

# The OS keyring holding the local token and upstream tokens: "auto" (the Secret Service when
# one answers, else the kernel keyring on Linux; the Keychain on macOS; the Credential Manager
# on Windows), "secret-service" or "keyutils".
{keyring_line}

# The public registry. For each crate name, the upstreams that have it with the highest
# priority own it; other upstreams' versions of that name are hidden (see `privreg policy`).
[upstreams.crates-io]
index = "{crates_io}"
priority = {DEFAULT_PRIORITY}

# A private registry, above the public one so that it owns the names it has (add one with
# `privreg upstream add acme sparse+https://cargo.acme.example/index/ --priority 600`):
#
# [upstreams.acme]
# index = "sparse+https://cargo.acme.example/index/"
# priority = 600      # default 500
# ttl = "2m"          # how long an index file is used before it is revalidated
# timeout = "30s"     # how long one request to this upstream may take
# publish = true      # `cargo publish --registry privreg` goes here (at most one upstream)
#
# Its token: `privreg login acme` (stored in the OS keyring), or PRIVREG_TOKEN_ACME in the
# daemon's environment, which wins.
"#
    )
}

/// The default `preferences`: comments only, explaining the format.
pub(crate) const DEFAULT_PREFERENCES: &str = r"# privreg's pin file, in the style of apt_preferences(5). More pin files may go in
# preferences.d/*.pref (read after this one, in lexical order). Edit with
# `privreg pin add|list|remove`; see what a pin does with `privreg policy CRATE`. The daemon
# applies a valid change within a second; a file that does not parse leaves the last good pins in
# force and shows the error in `privreg status`.
#
# Stanzas are separated by blank lines; lines starting with `#` are comments; field names are
# case-insensitive.
#
#   Explanation:  why the pin exists (optional, may repeat)
#   Package:      crate names, globs (acme-*) or /regexes/, space-separated; `*` alone for all
#                 (case-insensitive; `-` and `_` are alike)
#   Pin:          selectors joined by `;`, all of which must hold:
#                   registry GLOB      an upstream's name in config.toml
#                   origin HOSTGLOB    the host of an upstream's index URL
#                   version REQ        a cargo version requirement (needs a named package)
#                   age <DURATION      published less than DURATION ago (3d, 72h, 2w); `>` too
#                   advisory [KINDS]   affected by a RustSec advisory: vulnerability (the
#                                      default), unmaintained, unsound, notice, any, or an ID
#   Pin-Priority: a non-zero integer, or never
#
# Meaning: a pin without `version`, `age` or `advisory` changes how strongly an upstream claims the names it matches
# (the highest claim owns a name; other upstreams' versions are hidden unless pinned at or above
# it); `never` removes what it matches; a negative priority lists the versions as yanked (existing
# lockfiles keep working); 1000 or more holds (only those versions are served).
#
# Examples (remove the leading `# ` to use one):
#
# Explanation: acme crates only ever come from the company registry
# Package: acme-* acme_*
# Pin: registry crates-io
# Pin-Priority: never
#
# Explanation: hold tokio at 1.38 for now
# Package: tokio
# Pin: version >=1.38, <1.39
# Pin-Priority: 1001
#
# Explanation: new releases wait three days before new resolutions pick them
# Package: *
# Pin: age <3d
# Pin-Priority: -1
#
# Explanation: this version is broken for us
# Package: openssl
# Pin: version =0.10.55
# Pin-Priority: -1
";

/// Writes `path` with `text` unless it exists; returns whether it wrote.
fn write_if_absent(path: &Path, text: &str) -> anyhow::Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write_atomic(path, text.as_bytes())?;
            set_mode(path, 0o644)?;
            Ok(true)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Sets a file's permission bits (Unix only; elsewhere the default is kept).
pub(crate) fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set the permissions of {}", path.display()))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

pub(crate) fn run(dirs: &Dirs, args: &InitArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&dirs.config)
        .with_context(|| format!("cannot create {}", dirs.config.display()))?;
    let config_path = dirs.config.join(CONFIG_FILE);
    let existing = config_path.exists();
    // An existing config decides the store; it must parse (it is never rewritten).
    let choice = if existing {
        let config = Config::load(&dirs.config)?;
        if let Some(asked) = args.keyring
            && KeyringChoice::from(asked) != config.keyring
        {
            eprintln!(
                "privreg: note: {} exists and chooses its own keyring; --keyring is ignored",
                config_path.display()
            );
        }
        config.keyring
    } else {
        args.keyring
            .map_or(KeyringChoice::Auto, KeyringChoice::from)
    };
    let keyring = Keyring::open(choice);

    if existing {
        println!("kept     {} (exists)", config_path.display());
    } else {
        let line = keyring_line(choice, keyring.as_ref().ok().map(Keyring::kind));
        let text = default_config(args.listen, &line);
        Config::parse(&config_path, &text).context("the default config does not parse")?;
        if write_if_absent(&config_path, &text)? {
            println!(
                "created  {} (listen {}, upstream crates-io, {})",
                config_path.display(),
                args.listen,
                line.trim_start_matches("# ")
            );
        }
    }

    let prefs = dirs.config.join(PREFERENCES_FILE);
    if write_if_absent(&prefs, DEFAULT_PREFERENCES)? {
        println!("created  {} (comments only)", prefs.display());
    } else {
        println!("kept     {} (exists)", prefs.display());
    }

    let keyring = keyring.context("cannot store the local token")?;
    let entry = EntryName::local_token(&dirs.config);
    match keyring.get(&entry) {
        Ok(_) => println!("kept     {entry} in the {}", keyring.kind()),
        Err(SecretsError::NoEntry { .. }) => {
            let token = generate_local_token()?;
            keyring.set(&entry, &token)?;
            println!("created  {entry} in the {}", keyring.kind());
        }
        Err(e) => return Err(e.into()),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_parses_with_the_public_upstream() {
        let text = default_config(
            DEFAULT_LISTEN.parse().unwrap(),
            &keyring_line(KeyringChoice::Auto, Some(StoreKind::Keyutils)),
        );
        let c = Config::parse(Path::new("config.toml"), &text).unwrap();
        assert!(c.auth);
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.keyring, KeyringChoice::Keyutils);
        assert_eq!(c.upstreams.len(), 1);
        assert_eq!(c.upstreams[0].name, "crates-io");
        assert_eq!(
            c.upstreams[0].index,
            tame_index::index::sparse::CRATES_IO_HTTP_INDEX
        );
        assert_eq!(c.upstreams[0].priority, 500);
        // The commented example is a valid upstream once uncommented.
        let example: String = text
            .lines()
            .skip_while(|l| !l.starts_with("# [upstreams.acme]"))
            .take_while(|l| !l.is_empty() && *l != "#")
            .flat_map(|l| [l.trim_start_matches("# "), "\n"])
            .collect();
        let c = Config::parse(Path::new("example"), &example).unwrap();
        assert_eq!(c.upstreams[0].priority, 600);
        assert!(c.upstreams[0].publish);
    }

    #[test]
    fn keyring_lines() {
        assert_eq!(
            keyring_line(KeyringChoice::Auto, Some(StoreKind::SecretService)),
            "keyring = \"secret-service\""
        );
        assert_eq!(
            keyring_line(KeyringChoice::Keyutils, None),
            "keyring = \"keyutils\""
        );
        assert_eq!(
            keyring_line(KeyringChoice::Auto, Some(StoreKind::MacosKeychain)),
            "# keyring = \"auto\""
        );
        let c = Config::parse(
            Path::new("c"),
            &default_config("127.0.0.1:0".parse().unwrap(), "# keyring = \"auto\""),
        )
        .unwrap();
        assert_eq!(c.keyring, KeyringChoice::Auto);
    }

    #[test]
    fn default_preferences_hold_no_stanza_and_the_examples_parse() {
        let f = privreg_shared::pin::PinFile::parse("preferences", DEFAULT_PREFERENCES).unwrap();
        assert!(f.stanzas.is_empty());
        let examples: String = DEFAULT_PREFERENCES
            .lines()
            .skip_while(|l| !l.starts_with("# Examples"))
            .skip(2)
            .flat_map(|l| [l.trim_start_matches('#').trim_start(), "\n"])
            .collect();
        let f = privreg_shared::pin::PinFile::parse("examples", examples).unwrap();
        assert_eq!(f.stanzas.len(), 4);
        assert!(f.stanzas[2].selectors.age.is_some(), "the cooldown example");
    }
}
