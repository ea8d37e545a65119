//! A synthetic mirror, for when the real one is not cached and cannot be built (no network, or
//! `--quick` in CI): `COUNT` small crates in a dependency tree, three versions each, with real
//! `.crate` archives, laid out like the real mirror (see `mirror.rs`).

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

use crate::mirror::MirrorInfo;

const COUNT: usize = 200;
const VERSIONS: [&str; 3] = ["1.0.0", "1.1.0", "1.2.0"];

fn name(i: usize) -> String {
    format!("bsyn-{i:03}")
}

/// cargo's sparse index path of a crate name.
pub(crate) fn index_path(name: &str) -> String {
    let n = name.to_ascii_lowercase();
    match n.len() {
        1 => format!("1/{n}"),
        2 => format!("2/{n}"),
        3 => format!("3/{}/{n}", &n[..1]),
        _ => format!("{}/{}/{n}", &n[..2], &n[2..4]),
    }
}

/// Dependencies of crate `i`: a binary tree (so every crate is reachable from `bsyn-000`) plus
/// one pseudo-random later crate.
fn deps(i: usize) -> Vec<usize> {
    let mut d: Vec<usize> = [2 * i + 1, 2 * i + 2]
        .into_iter()
        .filter(|&j| j < COUNT)
        .collect();
    let extra = i + 1 + (i * 7919 + 13) % 17;
    if extra < COUNT && !d.contains(&extra) {
        d.push(extra);
    }
    d
}

fn crate_file(name: &str, vers: &str, deps: &[String]) -> anyhow::Result<Vec<u8>> {
    let mut manifest = format!(
        "[package]\nname = \"{name}\"\nversion = \"{vers}\"\nedition = \"2021\"\n\n[dependencies]\n"
    );
    for d in deps {
        let _ = writeln!(manifest, "{d} = \"1\"");
    }
    let files = [
        ("Cargo.toml", manifest),
        ("src/lib.rs", format!("//! {name} {vers}\n")),
    ];
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    for (path, text) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(text.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, format!("{name}-{vers}/{path}"), text.as_bytes())?;
    }
    Ok(tar.into_inner()?.finish()?)
}

/// Writes the synthetic mirror into `dest` (an empty directory).
pub(crate) fn build(dest: &Path) -> anyhow::Result<MirrorInfo> {
    for i in 0..COUNT {
        let n = name(i);
        let dep_names: Vec<String> = deps(i).into_iter().map(name).collect();
        let mut index = Vec::new();
        for vers in VERSIONS {
            let data = crate_file(&n, vers, &dep_names)?;
            let cksum = hex::encode(Sha256::digest(&data));
            let out = dest.join("dl").join(&n).join(vers).join("download");
            std::fs::create_dir_all(out.parent().expect("has parent"))?;
            std::fs::write(out, data)?;
            let line = serde_json::json!({
                "name": n,
                "vers": vers,
                "deps": dep_names.iter().map(|d| serde_json::json!({
                    "name": d, "req": "^1", "features": [], "optional": false,
                    "default_features": true, "target": null, "kind": "normal",
                })).collect::<Vec<_>>(),
                "cksum": cksum,
                "features": {},
                "yanked": false,
            });
            writeln!(index, "{line}")?;
        }
        let out = dest.join("index").join(index_path(&n));
        std::fs::create_dir_all(out.parent().expect("has parent"))?;
        std::fs::write(out, index)?;
    }
    std::fs::write(dest.join("manifest.toml"), format!("{} = \"1\"\n", name(0)))?;
    let info = MirrorInfo {
        kind: "the synthetic registry".into(),
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        index_files: COUNT,
        crates: COUNT * VERSIONS.len(),
        locked_packages: COUNT,
    };
    std::fs::write(dest.join("mirror.json"), serde_json::to_vec_pretty(&info)?)?;
    Ok(info)
}
