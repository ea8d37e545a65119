//! Where privreg keeps its files: `$PRIVREG_CONFIG_DIR` / `$PRIVREG_CACHE_DIR`, else the platform
//! directories (Linux: `~/.config/privreg`, `~/.cache/privreg`).

use std::path::PathBuf;

/// Environment variable naming the config directory; an empty value counts as unset.
pub const CONFIG_DIR_ENV: &str = "PRIVREG_CONFIG_DIR";
/// Environment variable naming the cache directory; an empty value counts as unset.
pub const CACHE_DIR_ENV: &str = "PRIVREG_CACHE_DIR";

fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("", "", "privreg")
}

fn from_env(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The config directory: explicit choice, else `$PRIVREG_CONFIG_DIR`, else the platform's.
pub fn config_dir(explicit: Option<PathBuf>) -> Option<PathBuf> {
    explicit
        .or_else(|| from_env(CONFIG_DIR_ENV))
        .or_else(|| project_dirs().map(|d| d.config_dir().to_owned()))
}

/// The cache directory: explicit choice, else `$PRIVREG_CACHE_DIR`, else the platform's.
pub fn cache_dir(explicit: Option<PathBuf>) -> Option<PathBuf> {
    explicit
        .or_else(|| from_env(CACHE_DIR_ENV))
        .or_else(|| project_dirs().map(|d| d.cache_dir().to_owned()))
}
