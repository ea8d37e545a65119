//! One suite: every measurement against one upstream (the delayed local one or the public
//! registry), privreg and direct side by side in each round, their order alternating.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tame_index::index::sparse::CRATES_IO_HTTP_INDEX;

use crate::cargo::{Cargo, Sandbox, Source};
use crate::daemon::{Counters, Daemon, DaemonOpts};
use crate::fixture::{self, Seen};
use crate::load::{self, LoadResult, Nginx};

/// Everything a suite needs that does not change between suites.
pub(crate) struct Env<'a> {
    pub cargo: &'a Cargo,
    pub daemon_bin: &'a Path,
    pub work: &'a Path,
    pub dependencies: &'a str,
    pub daemon_log: &'a str,
    pub rt: &'a tokio::runtime::Runtime,
}

/// The upstream a suite runs against.
pub(crate) enum Up<'a> {
    Local(&'a fixture::Upstream),
    Public,
}

/// The load part of a suite (local only).
pub(crate) struct LoadCfg<'a> {
    pub connections: usize,
    pub secs: f64,
    /// nginx binary and the directory it serves (the mirror), when nginx is installed.
    pub nginx: Option<(&'a Path, &'a Path)>,
    /// nginx that does not start is an error rather than a note (`--require-nginx`).
    pub require_nginx: bool,
}

/// One timed run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub round: usize,
    pub secs: f64,
    /// What the local upstream saw during the run.
    pub upstream: Option<Seen>,
    /// What the daemon's `/-/status` counted during the run.
    pub daemon: Option<Counters>,
    /// CPU seconds cargo itself spent (user + system), for runs of cargo.
    pub cargo_cpu: Option<f64>,
}

/// Measured scenarios, by key (see [`KEYS`]).
#[derive(Debug, Default)]
pub(crate) struct SuiteResult {
    pub name: String,
    pub rounds: usize,
    pub samples: BTreeMap<&'static str, Vec<Sample>>,
    pub load: BTreeMap<&'static str, Vec<LoadResult>>,
    /// Peak RSS (bytes): warm daemon after everything, revalidation daemon, largest cold daemon.
    pub rss_warm: Option<u64>,
    pub rss_reval: Option<u64>,
    pub rss_cold_max: Option<u64>,
    /// Packages in the lockfile, and how many privreg resolutions differed from the direct one.
    pub locked_packages: usize,
    pub lockfile_mismatches: usize,
    pub notes: Vec<String>,
}

pub(crate) const RESOLVE_DIRECT: &str = "resolve-direct";
pub(crate) const RESOLVE_COLD: &str = "resolve-cold";
pub(crate) const RESOLVE_WARM: &str = "resolve-warm";
/// cargo alone: `generate-lockfile --offline` from a warm `CARGO_HOME` (the floor).
pub(crate) const RESOLVE_OFFLINE: &str = "resolve-offline";
pub(crate) const REVAL_DIRECT: &str = "reval-direct";
pub(crate) const REVAL_PRIVREG: &str = "reval-privreg";
pub(crate) const FETCH_DIRECT: &str = "fetch-direct";
pub(crate) const FETCH_WARM: &str = "fetch-warm";
/// cargo alone: `fetch --offline` with every `.crate` in `CARGO_HOME`, so only unpacking (the
/// floor of `cargo fetch`).
pub(crate) const FETCH_OFFLINE: &str = "fetch-offline";
pub(crate) const DL_DIRECT: &str = "downloads-direct";
pub(crate) const DL_WARM: &str = "downloads-warm";
pub(crate) const LOAD_PRIVREG: &str = "privreg";
pub(crate) const LOAD_NGINX: &str = "nginx";
/// The same at one connection: the latency of one request without queueing.
pub(crate) const LOAD_PRIVREG_1: &str = "privreg-1";
pub(crate) const LOAD_NGINX_1: &str = "nginx-1";
/// Connections of the download-only runs: what cargo keeps in flight to an HTTP/1.1 registry.
pub(crate) const DL_CONNECTIONS: usize = 2;

/// The order of `items` in round `round`: rotated, so that each goes first as often as the others.
fn rotated<T: Clone>(items: &[T], round: usize) -> Vec<T> {
    let mut v = items.to_vec();
    v.rotate_left(round % items.len());
    v
}

struct Ctx<'a, 'b> {
    env: &'a Env<'b>,
    up: &'a Up<'a>,
    res: SuiteResult,
    reference: String,
    /// The local upstream's index URL; `None`: the public registry (cargo's default).
    direct_url: Option<String>,
}

impl Ctx<'_, '_> {
    fn seen(&self) -> Option<Seen> {
        match self.up {
            Up::Local(u) => Some(u.counters.take()),
            Up::Public => None,
        }
    }

    fn direct_source(&self) -> Source<'_> {
        match &self.direct_url {
            Some(u) => Source::Replaced(u),
            None => Source::Public,
        }
    }

    /// Times `cargo ARGS` in `sb`, with what the upstream and `daemon` counted meanwhile.
    fn timed(
        &mut self,
        key: &'static str,
        round: usize,
        sb: &Sandbox,
        args: &[&str],
        daemon: Option<&Daemon>,
    ) -> anyhow::Result<()> {
        let cargo = self.env.cargo;
        let cpu_before = crate::load::children_cpu_secs();
        self.measure(key, round, daemon, || {
            Ok(sb.run(cargo, args)?.as_secs_f64())
        })?;
        let cpu = crate::load::children_cpu_secs() - cpu_before;
        if let Some(last) = self.res.samples.get_mut(key).and_then(|v| v.last_mut()) {
            last.cargo_cpu = Some(cpu);
        }
        Ok(())
    }

    /// Records the seconds `f` reports, with what the upstream and `daemon` counted meanwhile.
    fn measure(
        &mut self,
        key: &'static str,
        round: usize,
        daemon: Option<&Daemon>,
        f: impl FnOnce() -> anyhow::Result<f64>,
    ) -> anyhow::Result<()> {
        self.seen();
        let before = daemon.map(Daemon::counters);
        let took = f().with_context(|| format!("{key}, round {}", round + 1))?;
        let upstream = self.seen();
        let counted = daemon.zip(before).map(|(d, b)| d.counters().since(b));
        self.res.samples.entry(key).or_default().push(Sample {
            round,
            secs: took,
            upstream,
            daemon: counted,
            cargo_cpu: None,
        });
        Ok(())
    }

    fn check_lockfile(&mut self, sb: &Sandbox) {
        match sb.lockfile() {
            Ok(l) if l == self.reference => {}
            _ => self.res.lockfile_mismatches += 1,
        }
    }

    fn resolve(
        &mut self,
        key: &'static str,
        round: usize,
        warm: &Daemon,
        opts: &DaemonOpts<'_>,
    ) -> anyhow::Result<()> {
        let env = self.env;
        match key {
            RESOLVE_COLD => {
                let cold = Daemon::start(env.daemon_bin, env.work, opts)?;
                let sb = Sandbox::new(
                    env.work,
                    env.dependencies,
                    Source::Replaced(&cold.index_url()),
                )?;
                self.timed(key, round, &sb, &["generate-lockfile"], Some(&cold))?;
                self.check_lockfile(&sb);
                let rss = cold.peak_rss();
                self.res.rss_cold_max = self.res.rss_cold_max.max(rss);
            }
            RESOLVE_WARM => {
                let sb = Sandbox::new(
                    env.work,
                    env.dependencies,
                    Source::Replaced(&warm.index_url()),
                )?;
                self.timed(key, round, &sb, &["generate-lockfile"], Some(warm))?;
                self.check_lockfile(&sb);
            }
            _ => {
                let sb = Sandbox::new(env.work, env.dependencies, self.direct_source())?;
                self.timed(key, round, &sb, &["generate-lockfile"], None)?;
                self.check_lockfile(&sb);
            }
        }
        Ok(())
    }
}

/// Runs one suite.
pub(crate) fn run(
    env: &Env<'_>,
    up: &Up<'_>,
    name: &str,
    rounds: usize,
    load_cfg: Option<&LoadCfg<'_>>,
) -> anyhow::Result<SuiteResult> {
    let upstream_url = match up {
        Up::Local(u) => u.index_url(),
        Up::Public => CRATES_IO_HTTP_INDEX.to_owned(),
    };
    // "Warm" must stay warm for the whole suite; the revalidation daemon keeps the default ttl.
    let warm_opts = DaemonOpts {
        upstream: &upstream_url,
        ttl: Some("1d"),
        log_level: env.daemon_log,
    };
    let reval_opts = DaemonOpts {
        ttl: None,
        ..warm_opts.clone()
    };
    let mut ctx = Ctx {
        env,
        up,
        res: SuiteResult {
            name: name.to_owned(),
            rounds,
            ..SuiteResult::default()
        },
        reference: String::new(),
        direct_url: match up {
            Up::Local(u) => Some(u.index_url()),
            Up::Public => None,
        },
    };
    eprintln!("[{name}] warming up: direct resolution, warm and revalidation daemons, fetches");
    // Direct: the reference resolution, which also warms cargo's cache for revalidation.
    let reval_direct = Sandbox::new(env.work, env.dependencies, ctx.direct_source())?;
    reval_direct.run(env.cargo, &["generate-lockfile"])?;
    ctx.reference = reval_direct.lockfile()?;
    ctx.res.locked_packages = crate::cargo::locked_packages(&ctx.reference);
    // The warm daemon: warm = after one resolution (and one fetch, for the fetch runs).
    let warm = Daemon::start(env.daemon_bin, env.work, &warm_opts)?;
    let fetch_warm = Sandbox::new(
        env.work,
        env.dependencies,
        Source::Replaced(&warm.index_url()),
    )?;
    fetch_warm.run(env.cargo, &["generate-lockfile"])?;
    ctx.check_lockfile(&fetch_warm);
    fetch_warm.run(env.cargo, &["fetch"])?;
    let fetch_direct = Sandbox::new(env.work, env.dependencies, ctx.direct_source())?;
    fetch_direct.set_lockfile(&ctx.reference)?;
    fetch_direct.run(env.cargo, &["fetch"])?;
    // The revalidation daemon, default ttl, warmed by one resolution in the sandbox it serves.
    let reval = Daemon::start(env.daemon_bin, env.work, &reval_opts)?;
    let reval_privreg = Sandbox::new(
        env.work,
        env.dependencies,
        Source::Replaced(&reval.index_url()),
    )?;
    reval_privreg.run(env.cargo, &["generate-lockfile"])?;
    ctx.check_lockfile(&reval_privreg);
    let nginx = match load_cfg.and_then(|l| l.nginx) {
        Some((bin, root)) => match Nginx::start(bin, root, env.work) {
            Ok(n) => Some(n),
            Err(e) if load_cfg.is_some_and(|l| l.require_nginx) => {
                return Err(e.context("nginx could not start (--require-nginx)"));
            }
            Err(e) => {
                ctx.res.notes.push(format!("nginx could not start: {e:#}"));
                None
            }
        },
        None => None,
    };

    for round in 0..rounds {
        eprintln!("[{name}] round {}/{rounds}", round + 1);
        for key in rotated(&[RESOLVE_DIRECT, RESOLVE_COLD, RESOLVE_WARM], round) {
            ctx.resolve(key, round, &warm, &warm_opts)?;
        }
        ctx.timed(
            RESOLVE_OFFLINE,
            round,
            &reval_direct,
            &["generate-lockfile", "--offline"],
            None,
        )?;
        for key in rotated(&[REVAL_DIRECT, REVAL_PRIVREG], round) {
            if key == REVAL_DIRECT {
                ctx.timed(key, round, &reval_direct, &["update"], None)?;
            } else {
                ctx.timed(key, round, &reval_privreg, &["update"], Some(&reval))?;
            }
        }
        for key in rotated(&[FETCH_DIRECT, FETCH_WARM], round) {
            let (sb, d) = if key == FETCH_DIRECT {
                (&fetch_direct, None)
            } else {
                (&fetch_warm, Some(&warm))
            };
            sb.clear_downloads()?;
            settle_disk();
            ctx.timed(key, round, sb, &["fetch"], d)?;
        }
        // Every `.crate` is in the warm sandbox's CARGO_HOME now: unpacking alone.
        fetch_warm.clear_sources()?;
        settle_disk();
        ctx.timed(
            FETCH_OFFLINE,
            round,
            &fetch_warm,
            &["fetch", "--offline"],
            None,
        )?;
        if let Up::Local(u) = up {
            // The registry's part of `cargo fetch`: every locked crate once, without unpacking.
            let locked = crate::cargo::locked_crates(&ctx.reference);
            let direct: Vec<String> = locked
                .iter()
                .map(|c| format!("/dl/{}/{}/download", c.name, c.version))
                .collect();
            let through: Vec<String> = locked
                .iter()
                .map(|c| format!("/dl/{}/{}/{}", c.name, c.version, c.checksum))
                .collect();
            let (direct, through) = (Arc::new(direct), Arc::new(through));
            for key in rotated(&[DL_DIRECT, DL_WARM], round) {
                let (addr, paths, d) = if key == DL_DIRECT {
                    (u.addr, direct.clone(), None)
                } else {
                    (warm.addr.parse()?, through.clone(), Some(&warm))
                };
                let rt = env.rt;
                ctx.measure(key, round, d, || {
                    let (secs, _) = rt.block_on(load::download_all(addr, paths, DL_CONNECTIONS))?;
                    Ok(secs)
                })?;
            }
        }
        if let (Some(cfg), Up::Local(u)) = (load_cfg, up) {
            let paths = Arc::new(u.index_paths.clone());
            let mut targets = vec![(
                LOAD_PRIVREG,
                LOAD_PRIVREG_1,
                warm.addr.parse()?,
                vec![warm.pid()],
            )];
            if let Some(n) = &nginx {
                let pid = n.child.as_ref().map_or(0, std::process::Child::id);
                targets.push((LOAD_NGINX, LOAD_NGINX_1, n.addr, load::with_children(pid)));
            }
            for (key, key1, addr, pids) in rotated(&targets, round) {
                let go = |conns: usize, secs: f64| {
                    env.rt
                        .block_on(load::run(addr, paths.clone(), conns, secs, &pids))
                        .with_context(|| format!("load on {key}"))
                };
                if round == 0 {
                    go(cfg.connections, 0.5)?; // warm-up (connections, page cache), not recorded
                }
                let r = go(cfg.connections, cfg.secs)?;
                ctx.res.load.entry(key).or_default().push(r);
                let r = go(1, (cfg.secs / 2.0).max(0.5))?;
                ctx.res.load.entry(key1).or_default().push(r);
            }
            u.counters.take();
        }
    }
    ctx.res.rss_warm = warm.peak_rss();
    ctx.res.rss_reval = reval.peak_rss();
    if nginx.is_none() && load_cfg.is_some() {
        ctx.res.notes.push(
            "nginx is not installed (`apt-get install -y nginx`): no static-server comparison"
                .into(),
        );
    }
    Ok(ctx.res)
}

/// Writes out what earlier runs left dirty (a fetch unpacks about 0.5 GB into `registry/src`, and
/// the next run deletes it) so that each `cargo fetch` starts from the same state instead of
/// paying for the previous run's writeback: without it the same run varied 2× between rounds.
fn settle_disk() {
    let _ = std::process::Command::new("sync").status();
}
