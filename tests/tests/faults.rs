//! The fault matrix (docs/FAULTS.md): every upstream fault, on each path (`config.json`, an index
//! file, a download), in each cache state (nothing cached; cached but stale), has one defined
//! outcome. Cargo gets the right bytes (the cached copy) or a 5xx naming the upstream and the
//! fault; never a wrong crate, never a 404 for an error, never the lower upstream's copy. The
//! daemon stays healthy throughout.
//!
//! The private upstream `acme` (priority 600) sits behind `privreg-fault-proxy`; the lower
//! upstream `crates-io` (500) holds every crate name too, as version 2.0.0 with other bytes. Each
//! cell has a crate of its own, so cells on one daemon do not share cache state.

use std::time::Duration;

use privreg_tests::fault::{Fault, FaultProxy, PathClass};
use privreg_tests::{
    HttpResponse, Pkg, Privreg, Registry, RegistryOpts, Sandbox, http_get, locked_packages, stderr,
};
use sha2::{Digest, Sha256};

/// The upstream timeout in the daemons here; hangs and drips are cut off after it.
const TIMEOUT: &str = "2s";
/// `Retry-After` of the proxy's 429 and 503: longer than any cell takes.
const RETRY_AFTER: u64 = 30;

const ACME_LIB: &str = "pub fn origin() -> &'static str { \"acme\" }";
const LOWER_LIB: &str = "compile_error!(\"the lower upstream's copy reached cargo\");";

/// One crate published to both upstreams.
struct Crate {
    name: String,
    /// acme's 1.0.0: checksum and `.crate` bytes.
    cksum: String,
    bytes: Vec<u8>,
    /// The lower upstream's 2.0.0.
    lower_cksum: String,
    lower_bytes: Vec<u8>,
}

impl Crate {
    fn index_path(&self) -> String {
        let n = &self.name;
        match n.len() {
            1 => format!("/index/1/{n}"),
            2 => format!("/index/2/{n}"),
            3 => format!("/index/3/{}/{n}", &n[..1]),
            _ => format!("/index/{}/{}/{n}", &n[..2], &n[2..4]),
        }
    }

    /// The daemon's download path of acme's version.
    fn dl_path(&self) -> String {
        format!("/dl/{}/1.0.0/{}", self.name, self.cksum)
    }

    /// The upstream's download path (as the proxy sees it).
    fn upstream_dl_path(&self) -> String {
        format!("/dl/{}/1.0.0/download", self.name)
    }
}

/// The two upstreams and the proxy in front of acme.
struct World {
    acme: Registry,
    lower: Registry,
    proxy: FaultProxy,
}

impl World {
    fn new() -> World {
        let acme = Registry::start(RegistryOpts {
            alternative: true,
            ..RegistryOpts::default()
        });
        let lower = Registry::start(RegistryOpts::default());
        let proxy = FaultProxy::start(&acme);
        World { acme, lower, proxy }
    }

    fn publish(&mut self, name: &str) -> Crate {
        let cksum = self.acme.publish(Pkg::new(name, "1.0.0").lib(ACME_LIB));
        let lower_cksum = self.lower.publish(Pkg::new(name, "2.0.0").lib(LOWER_LIB));
        let bytes = std::fs::read(self.acme.crate_file(name, "1.0.0")).unwrap();
        let lower_bytes = std::fs::read(self.lower.crate_file(name, "2.0.0")).unwrap();
        assert_eq!(hex::encode(Sha256::digest(&bytes)), cksum);
        Crate {
            name: name.to_owned(),
            cksum,
            bytes,
            lower_cksum,
            lower_bytes,
        }
    }

    /// One crate per fault, named `{prefix}-{fault}`.
    fn publish_each(&mut self, prefix: &str, faults: &[Fault]) -> Vec<(Fault, Crate)> {
        faults
            .iter()
            .map(|f| (*f, self.publish(&format!("{prefix}-{}", f.name()))))
            .collect()
    }

    fn config(&self, ttl: &str) -> String {
        format!(
            "auth = false\n\n[upstreams.acme]\nindex = \"{}\"\npriority = 600\ntimeout = \"{TIMEOUT}\"\nttl = \"{ttl}\"\nstale = \"1d\"\n\n[upstreams.crates-io]\nindex = \"{}\"\npriority = 500\n",
            self.proxy.index_url(),
            self.lower.index
        )
    }

    /// Length of acme's `config.json` as the proxy passes it on.
    fn config_len(&self) -> usize {
        let r = http_get(&self.proxy.addr, "/index/config.json", &[]).unwrap();
        assert_eq!(r.status, 200);
        r.body.len()
    }

    fn daemon(&self, ttl: &str) -> Daemon {
        Daemon::new(Privreg::start(&self.config(ttl)))
    }
}

/// A daemon and the process id it started with.
struct Daemon {
    p: Privreg,
    pid: u64,
}

impl Daemon {
    fn new(p: Privreg) -> Daemon {
        let pid = status(&p)["pid"].as_u64().unwrap();
        Daemon { p, pid }
    }

    fn get(&self, path: &str) -> HttpResponse {
        self.p.get(path)
    }

    /// The daemon still answers, is the same process, and is not a zombie.
    fn assert_healthy(&self, cell: &str) {
        let h = self.get("/-/health");
        assert_eq!((h.status, h.text().trim()), (200, "ok"), "{cell}");
        assert_eq!(status(&self.p)["pid"].as_u64(), Some(self.pid), "{cell}");
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap();
        let state = stat.rsplit(')').next().unwrap().split_whitespace().next();
        assert_ne!(state, Some("Z"), "{cell}: the daemon died");
    }

    /// acme's `last_error` in `/-/status` (what `privreg status` prints).
    fn last_error(&self) -> String {
        let st = status(&self.p);
        st["upstreams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"] == "acme")
            .and_then(|u| u["last_error"].as_str())
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits until acme's `last_error` contains `text`; then `privreg status` prints it on acme's
    /// line, as failing when `failing` (nothing answered well since).
    fn wait_for_error(&self, cell: &str, text: &str, failing: bool) {
        self.p
            .within(60.0, &format!("{cell}: status shows {text:?}"), |_| {
                self.last_error().contains(text)
            });
        // `privreg status` prints the error in force when it asks, which may have changed since
        // (CI once saw a request for an earlier cell's file meet this cell's fault in between):
        // the line must show the error in force just before it or just after.
        let before = self.last_error();
        let out = self.p.cli_ok(&["status"]);
        let after = self.last_error();
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with("acme "))
            .unwrap_or_default();
        assert!(
            line.contains(&before) || line.contains(&after),
            "{cell}: neither {before:?} nor {after:?} in\n{out}"
        );
        if failing {
            assert!(line.contains("failing since"), "{cell}:\n{out}");
        }
    }
}

fn status(p: &Privreg) -> serde_json::Value {
    serde_json::from_slice(&p.get("/-/status").body).unwrap()
}

/// What the request that failed was about, as error messages name it.
fn what(path: PathClass, krate: &Crate) -> String {
    match path {
        PathClass::Config => "config.json".to_owned(),
        PathClass::Index => format!("the index file of {}", krate.name),
        PathClass::Download => format!("the download of {} 1.0.0", krate.name),
    }
}

/// The text that names the upstream and the fault, in the error cargo gets and in
/// `privreg status`.
fn fault_text(fault: Fault, path: PathClass, krate: &Crate, proxy: &FaultProxy) -> String {
    let what = what(path, krate);
    match fault {
        Fault::None => unreachable!("not a fault"),
        Fault::Status500 => format!("upstream acme answered 500 for {what}"),
        Fault::Status503 | Fault::Status429 => format!(
            "upstream acme answered {} for {what} and asked to be left alone for {RETRY_AFTER}s",
            fault.name()
        ),
        Fault::Hang | Fault::Drip => format!("upstream acme did not answer {what} within 2s"),
        Fault::Reset => format!("cannot reach upstream acme for {what}"),
        Fault::Garbage | Fault::WrongChecksum if path == PathClass::Download => {
            format!("upstream acme sent {} 1.0.0 with sha256 ", krate.name)
        }
        Fault::Garbage => format!("upstream acme sent garbage for {what}"),
        Fault::WrongChecksum => unreachable!("only downloads carry a checksum"),
        Fault::Truncated => format!("upstream acme cut {what} short"),
        Fault::Status401 | Fault::Status403 => {
            format!("upstream acme refused {what} with {}", fault.name())
        }
        Fault::Redirect => format!(
            "upstream acme answered 302 for {what}: a redirect to http://{}/",
            proxy.elsewhere
        ),
    }
}

/// A reset shows as the OS's own words in the transport error.
fn check_reset_text(fault: Fault, body: &str, cell: &str) {
    if fault == Fault::Reset {
        assert!(
            body.to_ascii_lowercase().contains("reset"),
            "{cell}: a reset is named: {body}"
        );
    }
}

fn retries_later(fault: Fault) -> bool {
    matches!(fault, Fault::Status503 | Fault::Status429)
}

/// The status of an upstream failure as cargo sees it, per path: a failed index file makes the
/// crate unavailable (503), a failed `config.json` or download a bad gateway (502); an upstream
/// that asked to be left alone gives 503 with its `Retry-After`.
fn failure_status(fault: Fault, path: PathClass) -> u16 {
    if path == PathClass::Index || retries_later(fault) {
        503
    } else {
        502
    }
}

fn check_failure(
    r: &HttpResponse,
    fault: Fault,
    path: PathClass,
    krate: &Crate,
    proxy: &FaultProxy,
    cell: &str,
) {
    let body = r.text();
    assert_eq!(r.status, failure_status(fault, path), "{cell}: {body}");
    let want = fault_text(fault, path, krate, proxy);
    assert!(body.contains(&want), "{cell}: {want:?} not in {body:?}");
    check_reset_text(fault, &body, cell);
    assert_ne!(r.body, krate.lower_bytes, "{cell}");
    assert!(!body.contains(&krate.lower_cksum), "{cell}");
    if r.status == 503 {
        let retry = if retries_later(fault) { RETRY_AFTER } else { 1 };
        assert_eq!(
            r.header("retry-after"),
            Some(retry.to_string().as_str()),
            "{cell}"
        );
    }
}

/// The merged index file serves acme's 1.0.0 only.
fn check_good_index(r: &HttpResponse, krate: &Crate, cell: &str) {
    let body = r.text();
    assert_eq!(r.status, 200, "{cell}: {body}");
    let lines: Vec<serde_json::Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{cell}: {body}");
    assert_eq!(lines[0]["vers"], "1.0.0", "{cell}");
    assert_eq!(lines[0]["cksum"], krate.cksum.as_str(), "{cell}");
}

fn check_good_download(r: &HttpResponse, krate: &Crate, cell: &str) {
    assert_eq!(r.status, 200, "{cell}: {}", r.text());
    assert!(r.body == krate.bytes, "{cell}: not acme's bytes");
}

/// For a hang or a drip: the daemon hung up on every request for `path` (a drip is cut off by
/// the timeout, not waited out).
fn check_cut_off(proxy: &mut FaultProxy, fault: Fault, path: &str, full: usize, cell: &str) {
    if !matches!(fault, Fault::Hang | Fault::Drip) {
        return;
    }
    let hits = proxy.settled(path, 30);
    let faulted: Vec<_> = hits.iter().filter(|h| h.fault == fault).collect();
    assert!(!faulted.is_empty(), "{cell}: {hits:?}");
    for h in faulted {
        assert!(h.client_left, "{cell}: the daemon waited it out: {h:?}");
        assert!(h.body_sent < full, "{cell}: the whole body went out: {h:?}");
    }
}

/// No redirect was ever followed to the other origin.
fn check_no_elsewhere(proxy: &mut FaultProxy, cell: &str) {
    let (_, elsewhere) = proxy.hits();
    assert!(elsewhere.is_empty(), "{cell}: followed: {elsewhere:?}");
}

/// Faults that apply to a path (only a download carries a checksum to get wrong).
fn faults_for(path: PathClass) -> Vec<Fault> {
    Fault::ALL
        .into_iter()
        .filter(|f| *f != Fault::WrongChecksum || path == PathClass::Download)
        .collect()
}

#[test]
fn index_file_faults_with_nothing_cached() {
    let mut w = World::new();
    let cells = w.publish_each("ix-new", &faults_for(PathClass::Index));
    let d = w.daemon("10m");
    for (fault, krate) in &cells {
        let cell = format!("index file, nothing cached, {}", fault.name());
        let path = krate.index_path();
        w.proxy.set(PathClass::Index, *fault);
        let r = d.get(&path);
        check_failure(&r, *fault, PathClass::Index, krate, &w.proxy, &cell);
        // The lower upstream's version is not downloadable either.
        let lower = d.get(&format!("/dl/{}/2.0.0/{}", krate.name, krate.lower_cksum));
        assert_eq!(lower.status, 503, "{cell}: {}", lower.text());
        let full = usize::try_from(
            std::fs::metadata(w.acme.index_file(&krate.name))
                .unwrap()
                .len(),
        )
        .unwrap();
        check_cut_off(&mut w.proxy, *fault, &path, full, &cell);
        d.wait_for_error(
            &cell,
            &fault_text(*fault, PathClass::Index, krate, &w.proxy),
            true,
        );
        if retries_later(*fault) {
            // Retry-After is honoured: no new upstream request within it.
            let before = w.proxy.hits_for(&path).len();
            w.proxy.clear();
            let again = d.get(&path);
            check_failure(&again, *fault, PathClass::Index, krate, &w.proxy, &cell);
            assert_eq!(w.proxy.hits_for(&path).len(), before, "{cell}");
        } else {
            // Nothing of the fault was kept: once acme is well, its copy is served.
            w.proxy.clear();
            check_good_index(&d.get(&path), krate, &cell);
        }
        check_no_elsewhere(&mut w.proxy, &cell);
        d.assert_healthy(&cell);
    }
}

#[test]
fn index_file_faults_with_a_stale_copy() {
    let mut w = World::new();
    let cells = w.publish_each("ix-old", &faults_for(PathClass::Index));
    let d = w.daemon("1s");
    let good: Vec<HttpResponse> = cells.iter().map(|(_, k)| d.get(&k.index_path())).collect();
    for ((_, k), r) in cells.iter().zip(&good) {
        check_good_index(r, k, "warm-up");
    }
    // Past the ttl (1s), well within `stale` (1d).
    std::thread::sleep(Duration::from_millis(1200));
    for ((fault, krate), good) in cells.iter().zip(&good) {
        let cell = format!("index file, stale copy, {}", fault.name());
        let path = krate.index_path();
        w.proxy.set(PathClass::Index, *fault);
        let r = d.get(&path);
        check_good_index(&r, krate, &cell);
        assert_eq!(r.body, good.body, "{cell}");
        // The revalidation in the background met the fault, and status says so.
        d.wait_for_error(
            &cell,
            &fault_text(*fault, PathClass::Index, krate, &w.proxy),
            false,
        );
        let full = usize::try_from(
            std::fs::metadata(w.acme.index_file(&krate.name))
                .unwrap()
                .len(),
        )
        .unwrap();
        check_cut_off(&mut w.proxy, *fault, &path, full, &cell);
        // What the fault sent replaced nothing: the copy is still the good one (and a
        // revalidation with acme well keeps it).
        w.proxy.clear();
        let again = d.get(&path);
        assert_eq!(again.body, good.body, "{cell}");
        // That read of a stale file started one revalidation (the faulted one had ended: its
        // error is in status). It must be over before the next cell faults acme again: wait
        // until acme has answered it — unless acme asked for a pause (Retry-After: 30), during
        // which the daemon does not ask again at all.
        if retries_later(*fault) {
            w.proxy.settled(&path, 30);
        } else {
            w.proxy.completed(&path, 1, 30);
        }
        check_no_elsewhere(&mut w.proxy, &cell);
        d.assert_healthy(&cell);
    }
}

#[test]
fn download_faults_with_nothing_cached() {
    let mut w = World::new();
    let warm = w.publish("dl-warm");
    let cells = w.publish_each("dl-new", &faults_for(PathClass::Download));
    let d = w.daemon("10m");
    // config.json and the layered index files are fresh; only the downloads fail.
    check_good_download(&d.get(&warm.dl_path()), &warm, "warm-up");
    for (fault, krate) in &cells {
        let cell = format!("download, nothing cached, {}", fault.name());
        check_good_index(&d.get(&krate.index_path()), krate, &cell);
        w.proxy.set(PathClass::Download, *fault);
        let r = d.get(&krate.dl_path());
        check_failure(&r, *fault, PathClass::Download, krate, &w.proxy, &cell);
        let upstream_path = krate.upstream_dl_path();
        check_cut_off(
            &mut w.proxy,
            *fault,
            &upstream_path,
            krate.bytes.len(),
            &cell,
        );
        d.wait_for_error(
            &cell,
            &fault_text(*fault, PathClass::Download, krate, &w.proxy),
            true,
        );
        // The lower upstream's copy of the name is never served.
        let lower = d.get(&format!("/dl/{}/2.0.0/{}", krate.name, krate.lower_cksum));
        assert_eq!(lower.status, 404, "{cell}: {}", lower.text());
        // Nothing bad was cached: with acme well again, its bytes.
        w.proxy.clear();
        check_good_download(&d.get(&krate.dl_path()), krate, &cell);
        check_no_elsewhere(&mut w.proxy, &cell);
        d.assert_healthy(&cell);
    }
}

#[test]
fn download_faults_with_a_cached_copy() {
    let mut w = World::new();
    let cells = w.publish_each("dl-old", &faults_for(PathClass::Download));
    let d = w.daemon("1s");
    for (_, k) in &cells {
        check_good_download(&d.get(&k.dl_path()), k, "warm-up");
    }
    // Index files and config.json are stale now; the `.crate` files are immutable.
    std::thread::sleep(Duration::from_millis(1200));
    for (fault, krate) in &cells {
        let cell = format!("download, cached, {}", fault.name());
        w.proxy.set(PathClass::Download, *fault);
        check_good_download(&d.get(&krate.dl_path()), krate, &cell);
        // Served from the cache: acme was not asked again.
        assert_eq!(
            w.proxy.hits_for(&krate.upstream_dl_path()).len(),
            1,
            "{cell}"
        );
        w.proxy.clear();
        check_no_elsewhere(&mut w.proxy, &cell);
        d.assert_healthy(&cell);
    }
}

#[test]
fn config_json_faults_with_nothing_cached() {
    let mut w = World::new();
    let cells = w.publish_each("cf-new", &faults_for(PathClass::Config));
    // config.json is cached per upstream: a daemon per cell, each with nothing cached.
    let daemons: Vec<Daemon> = cells.iter().map(|_| w.daemon("10m")).collect();
    let config = "/index/config.json";
    let full = w.config_len();
    for ((fault, krate), d) in cells.iter().zip(&daemons) {
        let cell = format!("config.json, nothing cached, {}", fault.name());
        check_good_index(&d.get(&krate.index_path()), krate, &cell);
        w.proxy.set(PathClass::Config, *fault);
        let r = d.get(&krate.dl_path());
        check_failure(&r, *fault, PathClass::Config, krate, &w.proxy, &cell);
        check_cut_off(&mut w.proxy, *fault, config, full, &cell);
        d.wait_for_error(
            &cell,
            &fault_text(*fault, PathClass::Config, krate, &w.proxy),
            true,
        );
        // The daemon's own config.json does not depend on the upstream's.
        assert_eq!(d.get(config).status, 200, "{cell}");
        if retries_later(*fault) {
            let before = w.proxy.hits_for(config).len();
            w.proxy.clear();
            let again = d.get(&krate.dl_path());
            check_failure(&again, *fault, PathClass::Config, krate, &w.proxy, &cell);
            assert_eq!(w.proxy.hits_for(config).len(), before, "{cell}");
        } else {
            w.proxy.clear();
            check_good_download(&d.get(&krate.dl_path()), krate, &cell);
        }
        check_no_elsewhere(&mut w.proxy, &cell);
        d.assert_healthy(&cell);
    }
}

#[test]
fn config_json_faults_with_a_stale_copy() {
    let mut w = World::new();
    let warm = w.publish("cf-warm");
    let cells = w.publish_each("cf-old", &faults_for(PathClass::Config));
    // A daemon per cell (a Retry-After on config.json holds for every later download), each
    // with config.json cached and then stale.
    let daemons: Vec<Daemon> = cells.iter().map(|_| w.daemon("1s")).collect();
    for d in &daemons {
        check_good_download(&d.get(&warm.dl_path()), &warm, "warm-up");
    }
    std::thread::sleep(Duration::from_millis(1200));
    let config = "/index/config.json";
    let full = w.config_len();
    for ((fault, krate), d) in cells.iter().zip(&daemons) {
        let cell = format!("config.json, stale copy, {}", fault.name());
        w.proxy.set(PathClass::Config, *fault);
        // Not cached yet: the download needs config.json's `dl`, and the stale copy serves.
        check_good_download(&d.get(&krate.dl_path()), krate, &cell);
        d.wait_for_error(
            &cell,
            &fault_text(*fault, PathClass::Config, krate, &w.proxy),
            false,
        );
        check_cut_off(&mut w.proxy, *fault, config, full, &cell);
        // The faulted revalidation has ended (its error is in status) and the proxy is done with
        // it; nothing else asks for config.json in this cell.
        w.proxy.settled(config, 30);
        w.proxy.clear();
        check_no_elsewhere(&mut w.proxy, &cell);
        d.assert_healthy(&cell);
    }
}

/// Real cargo, one path each: what it prints and what ends up in Cargo.lock.
#[test]
fn cargo_sees_each_path_fail_cleanly_or_get_the_right_crate() {
    let mut w = World::new();
    let on_config = w.publish("cg-config");
    let on_index = w.publish("cg-index");
    let on_dl = w.publish("cg-dl");
    let d = w.daemon("1s");
    let sb = Sandbox::new();
    sb.use_privreg(&d.p);
    let project = |k: &Crate| {
        let lib = k.name.replace('-', "_");
        sb.project(
            &format!("app-{}", k.name),
            &format!("{} = \"*\"\n", k.name),
            &format!("fn main() {{ println!(\"{{}}\", {lib}::origin()); }}"),
        )
    };

    // config.json, nothing cached, reset: resolution works (index files are fine), the download
    // fails with a 502 naming acme and config.json; once acme is well, it works.
    let app = project(&on_config);
    w.proxy.set(PathClass::Config, Fault::Reset);
    sb.cargo_ok(&app, &["generate-lockfile"]);
    assert!(locked_packages(&app).contains(&("cg-config".into(), "1.0.0".into())));
    let out = sb.cargo(&app, &["fetch"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("502"), "{err}");
    assert!(
        err.contains("cannot reach upstream acme for config.json"),
        "{err}"
    );
    w.proxy.clear();
    sb.cargo_ok(&app, &["fetch"]);
    d.assert_healthy("cargo, config.json");

    // An index file, nothing cached, garbage: resolution fails with a 503 naming acme and the
    // garbage, and no lockfile (never the lower upstream's 2.0.0).
    let app = project(&on_index);
    w.proxy.set(PathClass::Index, Fault::Garbage);
    let out = sb.cargo(&app, &["generate-lockfile"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("503"), "{err}");
    assert!(
        err.contains("upstream acme sent garbage for the index file of cg-index"),
        "{err}"
    );
    assert!(!app.join("Cargo.lock").exists());
    w.proxy.clear();
    d.assert_healthy("cargo, index file");

    // A download, nothing cached, wrong checksum: 502 naming acme and the checksum.
    let app = project(&on_dl);
    sb.cargo_ok(&app, &["generate-lockfile"]);
    w.proxy.set(PathClass::Download, Fault::WrongChecksum);
    let out = sb.cargo(&app, &["fetch"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("502"), "{err}");
    assert!(
        err.contains("upstream acme sent cg-dl 1.0.0 with sha256"),
        "{err}"
    );
    w.proxy.clear();
    sb.cargo_ok(&app, &["fetch"]);
    d.assert_healthy("cargo, download");

    // Everything stale now and acme hanging on every path: a new machine (fresh CARGO_HOME, no
    // lockfile) resolves, fetches and builds acme's crate from the daemon's copies.
    std::thread::sleep(Duration::from_millis(1200));
    for path in PathClass::ALL {
        w.proxy.set(path, Fault::Hang);
    }
    sb.fresh_cargo_home();
    std::fs::remove_file(app.join("Cargo.lock")).unwrap();
    let out = sb.cargo_ok(&app, &["run", "--quiet"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "acme");
    assert!(locked_packages(&app).contains(&("cg-dl".into(), "1.0.0".into())));
    w.proxy.clear();
    d.assert_healthy("cargo, stale copies");
}
