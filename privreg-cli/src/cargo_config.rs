//! `privreg cargo-config [--install | --uninstall]`: print DESIGN.md's cargo configuration, or
//! merge it into `$CARGO_HOME/config.toml` and take it out again.
//!
//! How it stays reversible:
//!
//! - The file is edited with `toml_edit`: only the keys privreg sets change; comments, order and
//!   every other key stay as they were. A key privreg overwrites keeps its line's comment.
//! - The first install that changes the file copies it to `config.toml.privreg-backup` (never
//!   overwritten later).
//! - A small state file in privreg's config dir (`cargo-config.json`) remembers, for each key
//!   privreg set, the value it set and the value (with its spacing and comment) that was there
//!   before; which tables install created; whether install created the file; and hashes of the
//!   file before and after install. It holds no file content besides those prior values.
//! - `--uninstall` puts each prior value back (or removes the key) where the key still holds what
//!   privreg set, keeps any key the user changed since, removes the tables install created once
//!   they are empty, and removes the file if install created it and nothing is left. When the
//!   file is byte for byte what install wrote and the backup is the original, the backup's bytes
//!   are put back as they are. Files with `\r\n` line ends or without a final newline keep them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use toml_edit::{Array, Decor, DocumentMut, InlineTable, Item, Table, TableLike, Value};

use super::{Dirs, daemon_index_url};
use privreg_shared::store::write_atomic;

/// The state file in privreg's config dir.
pub(crate) const STATE_FILE: &str = "cargo-config.json";
/// Appended to the cargo config's file name for the one-time backup.
pub(crate) const BACKUP_SUFFIX: &str = ".privreg-backup";

#[derive(Args)]
pub struct CargoConfigArgs {
    /// Merge the configuration into $`CARGO_HOME/config.toml` (default ~/.cargo/config.toml).
    #[arg(long, conflicts_with = "uninstall")]
    install: bool,
    /// Put back what $`CARGO_HOME/config.toml` held before `--install`, keeping other edits.
    #[arg(long)]
    uninstall: bool,
}

/// A problem with the cargo config file.
#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub(crate) struct EditError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

/// A key privreg wants set: its path (tables, then the key) and value.
#[derive(Debug, Clone)]
pub(crate) struct Wanted {
    pub path: Vec<String>,
    pub value: Value,
}

/// A private upstream that projects may name with `registry = "<name>"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Private {
    pub name: String,
    /// Its exact index URL (what Cargo.lock records).
    pub index: String,
}

/// The upstreams of a config that get a per-upstream view in cargo's config: all but the public
/// registry.
pub(crate) fn private_upstreams(config: &privreg_shared::config::Config) -> Vec<Private> {
    use privreg_shared::index::{CRATES_IO_KEY, registry_url_key};
    config
        .upstreams
        .iter()
        .filter(|u| u.name != CRATES_IO_KEY && registry_url_key(&u.index) != CRATES_IO_KEY)
        .map(|u| Private {
            name: u.name.to_string(),
            index: u.index.clone(),
        })
        .collect()
}

/// DESIGN.md's cargo configuration for the daemon's index URL: `crates-io` replaced by the
/// layered view, and for each private upstream its exact URL replaced by its own view
/// (`[registries.<name>]` names it for `registry = "<name>"`).
pub(crate) fn wanted(index_url: &str, private: &[Private]) -> Vec<Wanted> {
    let path = |p: &[&str]| p.iter().map(std::string::ToString::to_string).collect();
    let mut provider = Array::new();
    provider.push("cargo-credential-privreg");
    let base = index_url.trim_end_matches('/').trim_end_matches("/index");
    let mut out = vec![
        Wanted {
            path: path(&["source", "crates-io", "replace-with"]),
            value: Value::from("privreg"),
        },
        Wanted {
            path: path(&["registries", "privreg", "index"]),
            value: Value::from(index_url),
        },
        Wanted {
            path: path(&["registries", "privreg", "credential-provider"]),
            value: Value::Array(provider.clone()),
        },
    ];
    for p in private {
        let source = format!("privreg-upstream-{}", p.name);
        let view = format!("privreg-{}", p.name);
        out.extend([
            Wanted {
                path: path(&["registries", &p.name, "index"]),
                value: Value::from(p.index.as_str()),
            },
            Wanted {
                path: path(&["source", &source, "registry"]),
                value: Value::from(p.index.as_str()),
            },
            Wanted {
                path: path(&["source", &source, "replace-with"]),
                value: Value::from(view.as_str()),
            },
            Wanted {
                path: path(&["registries", &view, "index"]),
                value: Value::from(format!("{base}/upstream/{}/index/", p.name)),
            },
            Wanted {
                path: path(&["registries", &view, "credential-provider"]),
                value: Value::Array(provider.clone()),
            },
        ]);
    }
    out
}

/// What `privreg cargo-config` prints: [`wanted`] as a fresh file.
pub(crate) fn snippet(index_url: &str, private: &[Private]) -> Result<String, EditError> {
    Ok(install(
        Path::new("config.toml"),
        None,
        &wanted(index_url, private),
        None,
    )?
    .0)
}

/// What install remembers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct State {
    pub file: PathBuf,
    pub created: bool,
    #[serde(default)]
    pub no_final_newline: bool,
    pub keys: Vec<KeyState>,
    /// Tables install created, parents before children.
    pub tables: Vec<Vec<String>>,
    pub original_sha256: Option<String>,
    pub installed_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct KeyState {
    pub path: Vec<String>,
    /// The value privreg set, in plain form (see [`plain`]).
    pub set: String,
    pub prior: Option<Prior>,
}

/// A value as it was written: its TOML text and the spacing and comment around it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Prior {
    pub repr: String,
    pub prefix: Option<String>,
    pub suffix: Option<String>,
}

impl Prior {
    fn of(v: &Value) -> Prior {
        let raw = |r: Option<&toml_edit::RawString>| r.and_then(|r| r.as_str()).map(str::to_owned);
        let mut bare = v.clone();
        bare.decor_mut().clear();
        Prior {
            repr: bare.to_string(),
            prefix: raw(v.decor().prefix()),
            suffix: raw(v.decor().suffix()),
        }
    }

    fn value(&self) -> Option<Value> {
        let mut v: Value = self.repr.parse().ok()?;
        *v.decor_mut() = Decor::new(
            self.prefix.as_deref().unwrap_or(" "),
            self.suffix.as_deref().unwrap_or(""),
        );
        Some(v)
    }
}

/// A value without its decoration, for comparing what is set with what privreg set.
pub(crate) fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{:?}", s.value()),
        Value::Array(a) => format!("[{}]", a.iter().map(plain).collect::<Vec<_>>().join(", ")),
        other => {
            let mut o = other.clone();
            o.decor_mut().clear();
            o.to_string().trim().to_owned()
        }
    }
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The text as `toml_edit` sees it: `\n` line ends and a final newline. Returns it and whether
/// the file used `\r\n` and lacked a final newline.
fn normalize(text: &str) -> (String, bool, bool) {
    let crlf = text.contains("\r\n") && !text.replace("\r\n", "").contains('\n');
    let mut t = if crlf {
        text.replace("\r\n", "\n")
    } else {
        text.to_owned()
    };
    let no_final_newline = !t.is_empty() && !t.ends_with('\n');
    if no_final_newline {
        t.push('\n');
    }
    (t, crlf, no_final_newline)
}

fn parse(file: &str, text: &str) -> Result<DocumentMut, EditError> {
    text.parse::<DocumentMut>().map_err(|e| EditError {
        file: file.to_owned(),
        line: e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1),
        message: e.message().trim().replace('\n', " "),
    })
}

/// The table at `path`, creating missing ones (recorded in `created`): implicit header tables,
/// or inline tables inside an inline table.
fn table_at<'d>(
    doc: &'d mut DocumentMut,
    path: &[String],
    file: &str,
    created: &mut Vec<Vec<String>>,
) -> Result<&'d mut dyn TableLike, EditError> {
    let mut cur: &mut dyn TableLike = doc.as_table_mut();
    let mut inline = false;
    for (i, name) in path.iter().enumerate() {
        if cur.get(name).is_none() {
            let here = path[..=i].to_vec();
            if !created.contains(&here) {
                created.push(here);
            }
            let item = if inline {
                Item::Value(Value::InlineTable(InlineTable::new()))
            } else {
                let mut t = Table::new();
                t.set_implicit(i + 1 < path.len());
                Item::Table(t)
            };
            cur.insert(name, item);
        }
        let key = path[..=i].join(".");
        let child = cur.get_mut(name).expect("present or just inserted");
        inline = matches!(child, Item::Value(Value::InlineTable(_)));
        cur = child.as_table_like_mut().ok_or_else(|| EditError {
            file: file.to_owned(),
            line: None,
            message: format!("`{key}` is not a table; fix it by hand, then run this again"),
        })?;
    }
    Ok(cur)
}

/// The table at `path`, if there is one.
fn table_mut<'d>(doc: &'d mut DocumentMut, path: &[String]) -> Option<&'d mut dyn TableLike> {
    let mut cur: &mut dyn TableLike = doc.as_table_mut();
    for p in path {
        cur = cur.get_mut(p)?.as_table_like_mut()?;
    }
    Some(cur)
}

/// The value at `path`, if any.
fn value_at<'d>(doc: &'d DocumentMut, path: &[String]) -> Option<&'d Value> {
    let (key, tables) = path.split_last()?;
    let mut cur: &dyn TableLike = doc.as_table();
    for name in tables {
        cur = cur.get(name)?.as_table_like()?;
    }
    cur.get(key)?.as_value()
}

/// Merges `wanted` into `text` (`None`: no file yet). Returns the new text and state.
pub(crate) fn install(
    file: &Path,
    text: Option<&str>,
    wanted: &[Wanted],
    previous: Option<State>,
) -> Result<(String, State), EditError> {
    let name = file.display().to_string();
    let (norm, crlf, no_final_newline) = normalize(text.unwrap_or(""));
    let mut doc = parse(&name, &norm)?;
    // A state for a file that is gone no longer describes anything.
    let mut state = match (previous, text) {
        (Some(s), Some(_)) => s,
        _ => State {
            file: file.to_owned(),
            created: text.is_none(),
            no_final_newline,
            original_sha256: text.map(|t| sha256(t.as_bytes())),
            ..State::default()
        },
    };
    for w in wanted {
        let (key, tables) = w.path.split_last().expect("a key path");
        let table = table_at(&mut doc, tables, &name, &mut state.tables)?;
        let mut new = w.value.clone();
        let prior = match table.get_mut(key) {
            Some(Item::Value(old)) => {
                let prior = Prior::of(old);
                *new.decor_mut() = old.decor().clone();
                *old = new;
                Some(prior)
            }
            Some(_) => {
                return Err(EditError {
                    file: name,
                    line: None,
                    message: format!("`{}` is a table, not a value", w.path.join(".")),
                });
            }
            None => {
                table.insert(key, Item::Value(new));
                None
            }
        };
        let set = plain(&w.value);
        match state.keys.iter_mut().find(|k| k.path == w.path) {
            Some(k) => k.set = set,
            None => state.keys.push(KeyState {
                path: w.path.clone(),
                set,
                prior,
            }),
        }
    }
    let mut out = doc.to_string();
    if crlf {
        out = out.replace('\n', "\r\n");
    }
    state.installed_sha256 = sha256(out.as_bytes());
    Ok((out, state))
}

/// What uninstall makes of the file.
#[derive(Debug, PartialEq)]
pub(crate) struct Restored {
    /// The new text; `None`: remove the file.
    pub text: Option<String>,
    /// Keys left alone because they were changed since install.
    pub kept: Vec<String>,
}

/// Takes privreg's keys out of `text` again (see the module docs).
pub(crate) fn uninstall(text: &str, state: &State) -> Result<Restored, EditError> {
    let name = state.file.display().to_string();
    let (norm, crlf, _) = normalize(text);
    let mut doc = parse(&name, &norm)?;
    let mut kept = Vec::new();
    for k in &state.keys {
        let Some((key, tables)) = k.path.split_last() else {
            continue;
        };
        let current = value_at(&doc, &k.path).map(plain);
        if current.as_deref() != Some(k.set.as_str()) {
            kept.push(k.path.join("."));
            continue;
        }
        let mut none = Vec::new();
        let table = table_at(&mut doc, tables, &name, &mut none)?;
        match k.prior.as_ref().and_then(Prior::value) {
            Some(prior) => {
                if let Some(Item::Value(v)) = table.get_mut(key) {
                    *v = prior;
                }
            }
            None => {
                table.remove(key);
            }
        }
    }
    for path in state.tables.iter().rev() {
        let Some((last, parents)) = path.split_last() else {
            continue;
        };
        if let Some(parent) = table_mut(&mut doc, parents)
            && parent
                .get(last)
                .and_then(Item::as_table_like)
                .is_some_and(toml_edit::TableLike::is_empty)
        {
            parent.remove(last);
        }
    }
    let mut out = doc.to_string();
    if state.created && out.trim().is_empty() {
        return Ok(Restored { text: None, kept });
    }
    if state.no_final_newline && out.ends_with('\n') {
        out.pop();
    }
    if crlf {
        out = out.replace('\n', "\r\n");
    }
    Ok(Restored {
        text: Some(out),
        kept,
    })
}

/// `$CARGO_HOME`, else `~/.cargo`.
pub(crate) fn cargo_home() -> anyhow::Result<PathBuf> {
    if let Some(h) = std::env::var_os("CARGO_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(h));
    }
    let home = std::env::home_dir().context("no home directory; set CARGO_HOME")?;
    Ok(home.join(".cargo"))
}

/// Cargo's user config file: `config.toml`, or the legacy `config` when only that exists.
pub(crate) fn cargo_config_file() -> anyhow::Result<PathBuf> {
    let home = cargo_home()?;
    let toml = home.join("config.toml");
    let legacy = home.join("config");
    Ok(if !toml.exists() && legacy.is_file() {
        legacy
    } else {
        toml
    })
}

fn read_optional(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn utf8(path: &Path, bytes: Vec<u8>) -> anyhow::Result<String> {
    String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8 text", path.display()))
}

/// Writes `bytes` to `path` atomically, through a symlink to its target, keeping the mode of
/// the file it replaces (a new file gets 0644).
fn replace_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let mode = std::fs::metadata(&target).ok().map(|m| m.permissions());
    write_atomic(&target, bytes)?;
    match mode {
        Some(p) => std::fs::set_permissions(&target, p)
            .with_context(|| format!("cannot set the permissions of {}", target.display()))?,
        None => super::init::set_mode(&target, 0o644)?,
    }
    Ok(())
}

fn load_state(dirs: &Dirs) -> anyhow::Result<Option<State>> {
    let path = dirs.config.join(STATE_FILE);
    match read_optional(&path)? {
        None => Ok(None),
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .with_context(|| format!("{} is damaged; remove it", path.display())),
    }
}

/// Whether cargo's config points at the daemon: `None` when it does, else what is wrong.
pub(crate) fn check(index_url: &str, private: &[Private]) -> anyhow::Result<Option<String>> {
    let file = cargo_config_file()?;
    let Some(bytes) = read_optional(&file)? else {
        return Ok(Some(format!("{} does not exist", file.display())));
    };
    let text = utf8(&file, bytes)?;
    let (norm, _, _) = normalize(&text);
    let doc = parse(&file.display().to_string(), &norm)?;
    let mut wrong = Vec::new();
    for w in wanted(index_url, private) {
        let have = value_at(&doc, &w.path).map(plain);
        if have.as_deref() != Some(plain(&w.value).as_str()) {
            wrong.push(format!(
                "`{}` is {} (want {})",
                w.path.join("."),
                have.unwrap_or_else(|| "not set".to_owned()),
                plain(&w.value)
            ));
        }
    }
    Ok((!wrong.is_empty()).then(|| format!("{}: {}", file.display(), wrong.join("; "))))
}

pub(crate) fn run(dirs: &Dirs, args: &CargoConfigArgs) -> anyhow::Result<ExitCode> {
    if args.uninstall {
        return run_uninstall(dirs);
    }
    let index_url = daemon_index_url(dirs)?;
    let private = private_upstreams(&privreg_shared::config::Config::load(&dirs.config)?);
    if !args.install {
        print!("{}", snippet(&index_url, &private)?);
        return Ok(ExitCode::SUCCESS);
    }
    let file = cargo_config_file()?;
    let previous = load_state(dirs)?;
    if let Some(p) = &previous
        && p.file != file
    {
        bail!(
            "privreg's cargo configuration is installed in {}, not {}; run `privreg cargo-config --uninstall` with the CARGO_HOME of then first",
            p.file.display(),
            file.display()
        );
    }
    let original = read_optional(&file)?;
    let text = original.clone().map(|b| utf8(&file, b)).transpose()?;
    let (new, state) = install(
        &file,
        text.as_deref(),
        &wanted(&index_url, &private),
        previous.clone(),
    )?;
    if text.as_deref() == Some(new.as_str()) && previous.as_ref() == Some(&state) {
        println!(
            "{} already sends cargo to privreg at {index_url}",
            file.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let backup = PathBuf::from(format!("{}{BACKUP_SUFFIX}", file.display()));
    if let Some(bytes) = &original
        && text.as_deref() != Some(new.as_str())
        && !backup.exists()
    {
        let _ = bytes;
        std::fs::copy(&file, &backup)
            .with_context(|| format!("cannot write the backup {}", backup.display()))?;
        println!("backed up {} to {}", file.display(), backup.display());
    }
    if text.as_deref() != Some(new.as_str()) {
        replace_file(&file, new.as_bytes())?;
    }
    std::fs::create_dir_all(&dirs.config)
        .with_context(|| format!("cannot create {}", dirs.config.display()))?;
    let state_path = dirs.config.join(STATE_FILE);
    write_atomic(&state_path, &serde_json::to_vec_pretty(&state)?)?;
    println!(
        "{} {}: crates-io is replaced by privreg at {index_url}, tokens from cargo-credential-privreg",
        if original.is_some() {
            "updated"
        } else {
            "created"
        },
        file.display()
    );
    println!("undo with `privreg cargo-config --uninstall`");
    Ok(ExitCode::SUCCESS)
}

/// After the upstreams changed: if privreg's cargo configuration is installed, installs it again
/// (undo, then install) so that each private upstream's entries match `config.toml`.
pub(crate) fn reinstall_if_installed(dirs: &Dirs) -> anyhow::Result<()> {
    if load_state(dirs)?.is_none() {
        return Ok(());
    }
    run_uninstall(dirs)?;
    run(
        dirs,
        &CargoConfigArgs {
            install: true,
            uninstall: false,
        },
    )?;
    Ok(())
}

fn run_uninstall(dirs: &Dirs) -> anyhow::Result<ExitCode> {
    let state_path = dirs.config.join(STATE_FILE);
    let Some(state) = load_state(dirs)? else {
        println!(
            "privreg did not install cargo's configuration (no {}); nothing to undo",
            state_path.display()
        );
        return Ok(ExitCode::SUCCESS);
    };
    let file = state.file.clone();
    let Some(bytes) = read_optional(&file)? else {
        std::fs::remove_file(&state_path)
            .with_context(|| format!("cannot remove {}", state_path.display()))?;
        println!("{} is gone; nothing to undo", file.display());
        return Ok(ExitCode::SUCCESS);
    };
    let backup = PathBuf::from(format!("{}{BACKUP_SUFFIX}", file.display()));
    // Untouched since install, and the backup is the original: put its bytes back as they are.
    let from_backup = match (&state.original_sha256, read_optional(&backup)?) {
        (Some(orig), Some(b))
            if sha256(&bytes) == state.installed_sha256 && &sha256(&b) == orig =>
        {
            Some(b)
        }
        _ => None,
    };
    let text = utf8(&file, bytes.clone())?;
    let restored = uninstall(&text, &state)?;
    match (from_backup, &restored.text) {
        (Some(b), _) => replace_file(&file, &b)?,
        (None, Some(t)) if t.as_bytes() != bytes.as_slice() => replace_file(&file, t.as_bytes())?,
        (None, Some(_)) => {}
        (None, None) => std::fs::remove_file(&file)
            .with_context(|| format!("cannot remove {}", file.display()))?,
    }
    for k in &restored.kept {
        println!("kept `{k}`: it was changed after privreg set it");
    }
    std::fs::remove_file(&state_path)
        .with_context(|| format!("cannot remove {}", state_path.display()))?;
    match restored.text {
        None => println!("removed {} (privreg had created it)", file.display()),
        Some(_) => println!(
            "restored {}: cargo no longer goes through privreg",
            file.display()
        ),
    }
    if backup.exists() {
        println!(
            "the copy from before the first install stays in {}",
            backup.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
#[path = "cargo_config_tests.rs"]
mod tests;
