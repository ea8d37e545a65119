//! privreg-bench: real cargo through privreg-daemon beside going direct, side by side in one run,
//! against a local upstream with a per-request delay and, when reachable, the public registry.
//! See `BENCHMARKS.md` for what is measured and the latest figures.
//!
//! `--soak SECS` runs the soak instead (issue 8, `soak.rs`): 64 keep-alive connections for SECS
//! seconds mixing cached index files, missing crates and downloads through one warm daemon; it
//! exits non-zero on any error, on open files that grew, or on RSS that grew past 1.2×:
//! `cargo run --release -p privreg-bench -- --soak 60 [--write BENCHMARKS.md]`.
//!
//! `--fleet N` runs the CI-fleet scenario instead (issue 18, `fleet.rs`): N daemons with empty
//! caches, one after another, with and without a shared tier on moto's S3 server.

mod cargo;
mod daemon;
mod fixture;
mod fleet;
mod growth;
mod load;
mod mirror;
mod report;
mod soak;
mod suite;
mod synth;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;

use crate::cargo::Cargo;
use crate::suite::{Env, LoadCfg, Up};

/// Benchmarks privreg-daemon against going direct (see BENCHMARKS.md).
///
/// Run: cargo run --release -p privreg-bench -- [--rounds N] [--delay-ms D] [--quick] [--write BENCHMARKS.md]
///
/// Soak: cargo run --release -p privreg-bench -- --soak 60 [--write BENCHMARKS.md]
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Rounds of every measurement (each round runs privreg and direct side by side).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Delay the local upstream adds to every request, in milliseconds.
    #[arg(long, default_value_t = 50)]
    delay_ms: u64,
    /// Seconds of load per server per round.
    #[arg(long, default_value_t = 5.0)]
    load_secs: f64,
    /// Connections of the load run.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Rounds against the public registry (0: skip it).
    #[arg(long, default_value_t = 3)]
    public_rounds: usize,
    /// Smallest settings, for CI: 1 round, 2 ms delay, 1 s of load, no public registry, and the
    /// synthetic registry (unless --mirror is given). Makes no assertion on time.
    #[arg(long)]
    quick: bool,
    /// Fail instead of leaving out the nginx comparison when nginx is missing or does not start
    /// (tests/run.sh, and so CI, passes it).
    #[arg(long)]
    require_nginx: bool,
    /// Use the synthetic registry (200 generated crates, made in a temp dir) instead of the mirror.
    #[arg(long)]
    synthetic: bool,
    /// The mirror of the manifest's index files and crates (built once if missing).
    #[arg(long)]
    mirror: Option<PathBuf>,
    /// The privreg-daemon binary [default: build it with cargo, same profile as this binary].
    #[arg(long)]
    daemon_bin: Option<PathBuf>,
    /// `PRIVREG_LOG` for the daemons.
    #[arg(long, default_value = "warn")]
    daemon_log: String,
    /// Write the results into this markdown file (between the generated-block markers).
    #[arg(long)]
    write: Option<PathBuf>,
    /// Run the soak instead of the benchmark, for SECS seconds: `--connections` keep-alive
    /// connections mixing cached index files, missing crates and downloads through one warm
    /// daemon; fails on any error, growth of open files or RSS above 1.2× (never on time). Uses
    /// the mirror if it is there (never builds it), else the synthetic registry.
    #[arg(long, value_name = "SECS", conflicts_with = "quick")]
    soak: Option<f64>,
    /// The soak daemon's `ttl`: short enough that cached files go stale and are revalidated in
    /// the background during the load warm-up and several times during the soak.
    #[arg(long, default_value = "10s")]
    soak_ttl: String,
    /// Seconds of the soak's mix before the figures "after warm-up" are taken.
    #[arg(long, default_value_t = 15.0)]
    soak_warmup: f64,
    /// Run the growth benchmark instead, for each number of distinct index files (synthetic,
    /// about 20 KB each): RSS, cached-file p50/p99, start time and disk before and after
    /// `privreg gc --max-size`.
    #[arg(long, value_name = "N,…", value_delimiter = ',', conflicts_with_all = ["soak", "quick"])]
    growth: Vec<usize>,
    /// With `--growth`: the daemon's `[limits] index-memory` (e.g. `16MiB`) instead of its
    /// default.
    #[arg(long, value_name = "SIZE", requires = "growth")]
    index_memory: Option<String>,
    /// Run the CI-fleet scenario instead of the benchmark (issue 18): N daemons with empty
    /// caches, one after another, on a shared tier (moto's S3 server, which must be installed)
    /// and without. Uses the mirror if it is there (never builds it), else the synthetic registry.
    #[arg(long, value_name = "N", conflicts_with_all = ["soak", "growth"])]
    fleet: Option<usize>,
    /// With `--fleet`: the S3-compatible server of the tier.
    #[arg(long, value_enum, default_value = "moto", value_name = "SERVER")]
    fleet_s3: fleet::S3Kind,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ is inside the workspace")
        .to_owned()
}

/// Builds privreg-daemon in this binary's profile and target directory; returns its path.
fn daemon_bin(cargo: &Cargo) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("exe dir")?.to_owned();
    let release = dir.file_name().is_some_and(|n| n == "release");
    let mut cmd = Command::new(cargo.bin());
    cmd.args([
        "build",
        "--quiet",
        "-p",
        "privreg-daemon",
        "--bin",
        "privreg-daemon",
        "-p",
        "privreg-cli",
        "--bin",
        "privreg",
    ])
    .arg("--manifest-path")
    .arg(workspace_root().join("Cargo.toml"))
    .arg("--target-dir")
    .arg(dir.parent().context("target dir")?);
    if release {
        cmd.arg("--release");
    }
    eprintln!(
        "building privreg-daemon and privreg ({})",
        if release { "release" } else { "debug" }
    );
    let status = cmd.status().context("cannot run cargo build")?;
    if !status.success() {
        bail!("building privreg-daemon failed");
    }
    let bin = dir.join("privreg-daemon");
    anyhow::ensure!(bin.is_file(), "{} is missing", bin.display());
    Ok(bin)
}

fn output(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s.trim().to_owned()
        })
        .unwrap_or_default()
}

fn software(cargo: &Cargo, nginx: Option<&Path>, daemon_bin: &Path) -> String {
    let mut s = daemon_software(daemon_bin);
    s.push_str(", ");
    s.push_str(&output(&cargo.bin().to_string_lossy(), &["-V"]));
    if let Some(n) = nginx {
        let v = output(&n.to_string_lossy(), &["-v"]);
        s.push_str(", ");
        s.push_str(v.trim_start_matches("nginx version: "));
    }
    s
}

/// Which privreg-daemon ran: this checkout's build, or a binary given with `--daemon-bin` from
/// elsewhere (whose source the checkout does not tell).
fn daemon_software(daemon_bin: &Path) -> String {
    let built_here = std::env::current_exe()
        .ok()
        .is_some_and(|exe| exe.parent() == daemon_bin.parent());
    if !built_here {
        return format!("privreg-daemon {} (`--daemon-bin`)", daemon_bin.display());
    }
    let root = workspace_root();
    let root = root.to_string_lossy();
    let rev = output("git", &["-C", &root, "rev-parse", "--short", "HEAD"]);
    let dirty = !output(
        "git",
        &[
            "-C",
            &root,
            "status",
            "--porcelain",
            "--",
            "privreg-daemon",
            "shared",
        ],
    )
    .is_empty();
    let profile = if daemon_bin.to_string_lossy().contains("/release/") {
        "release"
    } else {
        "debug"
    };
    format!(
        "privreg-daemon at {rev}{} ({profile} build)",
        if dirty {
            " with uncommitted changes"
        } else {
            ""
        },
    )
}

/// The command that produced these results, as typed.
fn command_line(release: bool) -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!(
        "cargo run {}-p privreg-bench --{}{}",
        if release { "--release " } else { "" },
        if args.is_empty() { "" } else { " " },
        args.join(" ")
    )
}

/// The mirror if it is complete (or `--mirror`), unless `--synthetic` or `--quick` without
/// `--mirror`; else the synthetic registry, made in `work`.
fn stored_data(args: &Args, work: &Path) -> anyhow::Result<(PathBuf, mirror::MirrorInfo)> {
    let mirror_dir = args.mirror.clone().unwrap_or_else(mirror::default_dir);
    let synthetic = args.synthetic || (args.quick && args.mirror.is_none());
    if !synthetic && (args.mirror.is_some() || fixture::check_mirror(&mirror_dir).is_ok()) {
        let info = mirror::read_info(&mirror_dir)?;
        Ok((mirror_dir, info))
    } else {
        let dir = work.join("synthetic");
        std::fs::create_dir_all(&dir)?;
        let info = synth::build(&dir)?;
        Ok((dir, info))
    }
}

/// The header of a soak or fleet report.
fn run_info(cargo: &Cargo, daemon_bin: &Path, info: &mirror::MirrorInfo) -> report::RunInfo {
    let release = daemon_bin.to_string_lossy().contains("/release/");
    report::RunInfo {
        command: command_line(release),
        date: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        machine: report::machine(),
        software: software(cargo, None, daemon_bin),
        data: format!(
            "{}: {} index files, {} crate files (made {})",
            info.kind, info.index_files, info.crates, info.created
        ),
    }
}

/// Prints `block` and, with `--write`, puts it between `begin` and `end` of that file.
fn emit(args: &Args, begin: &str, end: &str, block: &str) -> anyhow::Result<()> {
    println!("{block}");
    if let Some(path) = &args.write {
        report::write_between(path, begin, end, block)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// `--soak SECS`: the mirror if it is complete (or `--mirror`), else the synthetic registry.
fn soak(
    args: &Args,
    secs: f64,
    cargo: &Cargo,
    daemon_bin: &Path,
    work: &Path,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        secs > 0.0 && args.soak_warmup >= 0.0,
        "--soak and --soak-warmup take seconds"
    );
    let (data, info) = stored_data(args, work)?;
    let upstream = rt.block_on(fixture::start(&data, Duration::from_millis(args.delay_ms)))?;
    let cfg = soak::SoakCfg {
        daemon_bin,
        work,
        daemon_log: &args.daemon_log,
        mirror: &data,
        secs,
        warm_secs: args.soak_warmup,
        connections: args.connections,
        ttl: &args.soak_ttl,
        delay_ms: args.delay_ms,
    };
    let result = soak::run(&cfg, rt, &upstream)?;
    let block = result.markdown(&run_info(cargo, daemon_bin, &info));
    emit(args, soak::BEGIN, soak::END, &block)?;
    let failures = result.failures();
    if !failures.is_empty() {
        bail!("the soak failed: {}", failures.join("; "));
    }
    eprintln!(
        "the soak passed: no errors, open files {} → {}, RSS ×{:.2}",
        result.warm.fds.total,
        result.end.fds.total,
        result.rss_ratio()
    );
    Ok(())
}

/// `--growth N,…`: the growth benchmark (see `growth.rs`).
fn growth(
    args: &Args,
    cargo: &Cargo,
    daemon_bin: &Path,
    work: &Path,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    let cli = growth::cli_bin(daemon_bin);
    anyhow::ensure!(cli.is_file(), "{} is missing", cli.display());
    let setup = growth::Setup {
        daemon_bin,
        cli_bin: &cli,
        work,
        log_level: &args.daemon_log,
        index_memory: args.index_memory.as_deref(),
    };
    let rows = growth::run(&args.growth, &setup, rt)?;
    let release = daemon_bin.to_string_lossy().contains("/release/");
    let sizes: Vec<String> = args.growth.iter().map(ToString::to_string).collect();
    let run_info = report::RunInfo {
        command: command_line(release),
        date: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        machine: report::machine(),
        software: software(cargo, None, daemon_bin),
        data: format!(
            "synthetic index files, {} of them in turn, about 20 KB each",
            sizes.join(", ")
        ),
    };
    let block = growth::markdown(&run_info, &rows);
    println!("{block}");
    if let Some(path) = &args.write {
        report::write_between(path, growth::BEGIN, growth::END, &block)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.rounds = 1;
        args.delay_ms = 2;
        args.load_secs = 1.0;
        args.public_rounds = 0;
    }
    anyhow::ensure!(args.rounds >= 1, "--rounds must be at least 1");
    let cargo = Cargo::detect();
    let daemon_bin = match &args.daemon_bin {
        Some(b) => b.clone(),
        None => daemon_bin(&cargo)?,
    };
    let work = tempfile::Builder::new()
        .prefix("privreg-bench-")
        .tempdir()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if let Some(secs) = args.soak {
        return soak(&args, secs, &cargo, &daemon_bin, work.path(), &rt);
    }
    if !args.growth.is_empty() {
        return growth(&args, &cargo, &daemon_bin, work.path(), &rt);
    }
    if let Some(n) = args.fleet {
        return fleet::main(&args, n, &cargo, &daemon_bin, work.path(), &rt);
    }

    // The data: the cached mirror, built once; else the synthetic registry.
    let mirror_dir = args.mirror.clone().unwrap_or_else(mirror::default_dir);
    let synth_dir = work.path().join("synthetic");
    // Whether privreg-daemon reaches the public registry (asked once, when first needed).
    let mut public: Option<Result<(), String>> = None;
    let mut reach = || {
        public
            .get_or_insert_with(|| mirror::public_reachable(&daemon_bin, work.path()))
            .clone()
    };
    let data = if args.synthetic || (args.quick && args.mirror.is_none()) {
        None
    } else if fixture::check_mirror(&mirror_dir).is_ok() {
        Some(mirror_dir.clone())
    } else {
        let daemon_ok = reach().is_ok();
        match mirror::build(&mirror_dir, &daemon_bin, daemon_ok, &cargo, work.path()) {
            Ok(()) => Some(mirror_dir.clone()),
            Err(e) => {
                eprintln!(
                    "the mirror cannot be built ({e:#}): the public registry is not reachable? using the synthetic registry"
                );
                None
            }
        }
    };
    let (mirror, info) = if let Some(dir) = data {
        let info = mirror::read_info(&dir)?;
        (dir, info)
    } else {
        std::fs::create_dir_all(&synth_dir)?;
        let info = synth::build(&synth_dir)?;
        (synth_dir, info)
    };
    let dependencies = mirror::dependencies(&mirror)?;
    let nginx = load::find_nginx();
    anyhow::ensure!(
        nginx.is_some() || !args.require_nginx,
        "--require-nginx: nginx is not installed (`apt-get install -y nginx-light`)"
    );
    let env = Env {
        cargo: &cargo,
        daemon_bin: &daemon_bin,
        work: work.path(),
        dependencies: &dependencies,
        daemon_log: &args.daemon_log,
        rt: &rt,
    };

    let delay = Duration::from_millis(args.delay_ms);
    let upstream = rt.block_on(fixture::start(&mirror, delay))?;
    let load_cfg = LoadCfg {
        connections: args.connections,
        secs: args.load_secs,
        nginx: nginx.as_deref().map(|n| (n, mirror.as_path())),
        require_nginx: args.require_nginx,
    };
    let mut suites = Vec::new();
    let local_name = format!(
        "Local upstream, {} ms per request (HTTP/1.1, keep-alive)",
        args.delay_ms
    );
    suites.push(suite::run(
        &env,
        &Up::Local(&upstream),
        &local_name,
        args.rounds,
        Some(&load_cfg),
    )?);

    let mut notes = Vec::new();
    if args.public_rounds > 0 {
        match reach() {
            Ok(()) => suites.push(suite::run(
                &env,
                &Up::Public,
                "Public registry (over the internet)",
                args.public_rounds,
                None,
            )?),
            Err(why) => notes.push(format!(
                "the public-registry suite was skipped: privreg-daemon cannot reach the public registry ({why})"
            )),
        }
    } else {
        notes.push("the public-registry suite was not run (--public-rounds 0 or --quick)".into());
    }

    let release = daemon_bin.to_string_lossy().contains("/release/");
    let run_info = report::RunInfo {
        command: command_line(release),
        date: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        machine: report::machine(),
        software: software(&cargo, nginx.as_deref(), &daemon_bin),
        data: format!(
            "{}: {} index files, {} crate files, {} locked packages (made {})",
            info.kind, info.index_files, info.crates, info.locked_packages, info.created
        ),
    };
    let mut block = report::block(&run_info, &suites);
    for n in &notes {
        block = block.replace(report::END, &format!("Note: {n}.\n\n{}", report::END));
    }
    println!("{block}");
    if let Some(path) = &args.write {
        report::write(path, &block)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
