//! The team tier (`[cache.shared]`) end to end: daemons sharing a bucket on a real S3-compatible
//! server (moto's, from the Python package index; see `privreg_tests::s3`), real cargo, and
//! cargo's test registry as the upstream.

use std::time::{Duration, Instant};

use privreg_tests::s3::S3Server;
use privreg_tests::{Pkg, Privreg, Registry, RegistryOpts, Sandbox, stderr};

const BUCKET: &str = "team-cache";
/// The per-test key prefix inside the bucket.
const PREFIX: &str = "privreg";

/// A daemon layering `crates-io` (and `extra`, if given) with the tier at `s3`; `shared` holds
/// more `[cache.shared]` lines.
fn daemon(public: &Registry, extra: Option<&Registry>, s3: &S3Server, shared: &str) -> Privreg {
    let extra = extra.map_or_else(String::new, |r| {
        format!(
            "[upstreams.acme]\nindex = \"{}\"\npriority = 600\n\n",
            r.index
        )
    });
    let mut p = Privreg::new(&format!(
        "auth = false\n\n{extra}[upstreams.crates-io]\nindex = \"{}\"\ntimeout = \"5s\"\n\n\
         [cache.shared]\nurl = \"s3://{BUCKET}/{PREFIX}\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\n{shared}",
        public.index,
        s3.endpoint()
    ));
    // moto accepts any credentials; the daemon takes them from the standard variables.
    p.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing");
    p.spawn().expect("privreg-daemon starts");
    p
}

fn status(p: &Privreg) -> serde_json::Value {
    let r = p.get("/-/status");
    assert_eq!(r.status, 200, "/-/status: {}", r.text());
    serde_json::from_slice(&r.body).expect("status JSON")
}

/// `shared_tier.<field>` of the daemon's status, as a number.
fn tier(p: &Privreg, field: &str) -> u64 {
    status(p)["shared_tier"][field]
        .as_u64()
        .unwrap_or_else(|| panic!("shared_tier.{field} in {}", status(p)))
}

/// A counter summed over the label sets that contain `labels`.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "counters: whole numbers, not negative, far below 2^52"
)]
fn metric_with(p: &Privreg, name: &str, labels: &str) -> u64 {
    let text = p.get("/metrics").text();
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn publish_graph(reg: &mut Registry) -> (String, String) {
    let leaf = reg.publish(Pkg::new("leaf", "1.0.0").lib("pub fn leaf() -> u32 { 7 }"));
    let mid = reg.publish(
        Pkg::new("middle", "1.2.0")
            .dep("leaf", "1")
            .lib("pub fn middle() -> u32 { leaf::leaf() }"),
    );
    (leaf, mid)
}

const MAIN: &str = "fn main() { assert_eq!(middle::middle(), 7); }\n";

/// Builds a project using `middle` through `p` with a fresh cargo home; panics with both logs on
/// failure.
fn build(p: &Privreg, name: &str) -> Duration {
    let sb = Sandbox::new();
    sb.use_privreg(p);
    let dir = sb.project(name, "middle = \"1\"", MAIN);
    let start = Instant::now();
    let out = sb.cargo(&dir, &["build"]);
    assert!(
        out.status.success(),
        "cargo build failed:\n{}\n--- daemon log ---\n{}",
        stderr(&out),
        p.log()
    );
    start.elapsed()
}

/// Waits until the daemon has written at least `n` objects and its write queue is idle.
fn wait_writes(p: &Privreg, n: u64) {
    p.within(20.0, "write-backs to the shared tier", |p| {
        tier(p, "writes") >= n
    });
}

/// Waits until the daemon, quiet after a build, has written its index pack; returns its key.
fn wait_pack(p: &Privreg, s3: &S3Server) -> String {
    p.within(20.0, "the index pack", |p| tier(p, "pack_writes") >= 1);
    assert_eq!(tier(p, "packs_waiting"), 0);
    let keys = s3.keys(BUCKET);
    keys.into_iter()
        .find(|k| {
            k.starts_with(&format!("{PREFIX}/v1/packs/crates-io-")) && k.ends_with("/index.pack")
        })
        .expect("crates-io's index pack in the bucket")
}

/// The entries of an index pack (`privreg index pack 1`, their length, one LZ4 block), as text.
fn unpack(object: &[u8]) -> String {
    let rest = object
        .strip_prefix(b"privreg index pack 1\n")
        .expect("an index pack");
    let (len, block) = rest.split_at(4);
    let len = u32::from_le_bytes(len.try_into().unwrap()) as usize;
    String::from_utf8(lz4_flex::block::decompress(block, len).expect("an LZ4 block")).unwrap()
}

fn crate_key(cksum: &str) -> String {
    format!(
        "{PREFIX}/v1/crates/{}/{}/{cksum}",
        &cksum[..2],
        &cksum[2..4]
    )
}

#[test]
fn a_cold_daemon_builds_from_the_tier_with_the_upstream_down() {
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let mut public = Registry::start(RegistryOpts::default());
    let (leaf, mid) = publish_graph(&mut public);

    let a = daemon(&public, None, &s3, "");
    build(&a, "app");
    // Two crates and the index files (config.json, middle, leaf) reach the bucket.
    wait_writes(&a, 5);
    let keys = s3.keys(BUCKET);
    for ck in [&leaf, &mid] {
        assert!(keys.contains(&crate_key(ck)), "{ck} not in {keys:?}");
    }
    assert!(
        keys.iter().any(|k| k.ends_with("/mi/dd/middle")),
        "middle's index file not in {keys:?}"
    );

    public.stop();
    let b = daemon(&public, None, &s3, "");
    build(&b, "app");
    assert!(tier(&b, "hits") >= 4, "{}", status(&b));
    assert_eq!(tier(&b, "rejected"), 0);
    // A file from the tier starts the prefetch of its dependencies, as an upstream answer does
    // (middle's brings leaf's), so that a cold daemon is not one tier round trip per level.
    let st = status(&b);
    assert!(st["prefetches"].as_u64() >= Some(1), "{st}");
    // Nothing B served came from the (stopped) upstream.
    assert_eq!(
        metric_with(&b, "privreg_upstream_requests_total", "outcome=\"ok\""),
        0,
        "{}",
        b.log()
    );
}

#[test]
fn a_cold_daemon_reads_the_index_pack_instead_of_each_file() {
    let mut s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let mut public = Registry::start(RegistryOpts::default());
    publish_graph(&mut public);
    let a = daemon(&public, None, &s3, "");
    build(&a, "app");
    // Once quiet, A writes the index files it worked with as one object.
    let pack = wait_pack(&a, &s3);
    let text = unpack(&s3.get_object(BUCKET, &pack));
    for path in ["mi/dd/middle", "le/af/leaf"] {
        assert!(
            text.contains(&format!(" {path}\n")),
            "{path} not in the pack:\n{text}"
        );
    }

    // With the single index objects gone and the upstream down, the pack alone serves them.
    for key in s3.keys(BUCKET) {
        if key.contains("/v1/index/") && !key.ends_with("/config.json") {
            s3.delete_object(BUCKET, &key);
        }
    }
    public.stop();
    let mut b = daemon(&public, None, &s3, "");
    // B reads the pack as it starts, before cargo asks for anything.
    b.within(10.0, "the index pack read at start", |p| {
        metric_with(
            p,
            "privreg_shared_tier_requests_total",
            "op=\"pack\",outcome=\"hit\"",
        ) == 1
    });
    build(&b, "app");
    let st = status(&b);
    assert!(st["shared_tier"]["pack_hits"].as_u64() >= Some(2), "{st}");
    assert_eq!(st["shared_tier"]["rejected"], 0, "{st}");
    assert_eq!(
        metric_with(&b, "privreg_upstream_requests_total", "outcome=\"ok\""),
        0,
        "{}",
        b.log()
    );
    // B fetched nothing from the upstream, so it has no pack of its own to write.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(tier(&b, "pack_writes"), 0);
    assert_eq!(tier(&b, "packs_waiting"), 0);

    // B wrote its local copies of the files from the tier once it was quiet (not at exit: it
    // is killed), and the checksums it served from them (held with them meanwhile). Started
    // again with the tier gone as well, it builds from its own disk.
    b.within(10.0, "local copies of the files from the tier", |p| {
        status(p)["disk"]["writes_waiting"] == 0
    });
    for name in ["middle", "leaf", "middle.json", "leaf.json"] {
        assert_eq!(files_named(&b.cache_dir, name).len(), 1, "{name}");
    }
    b.kill9();
    s3.kill();
    b.spawn().expect("privreg-daemon starts again");
    build(&b, "app");
    assert_eq!(
        metric_with(&b, "privreg_upstream_requests_total", "outcome=\"ok\""),
        0
    );
    assert_eq!(tier(&b, "hits"), 0, "{}", status(&b));
}

#[test]
fn a_tampered_object_is_refused_and_refetched_from_the_upstream() {
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let mut public = Registry::start(RegistryOpts::default());
    let (leaf, _) = publish_graph(&mut public);
    let a = daemon(&public, None, &s3, "");
    build(&a, "app");
    wait_writes(&a, 5);
    let pack = wait_pack(&a, &s3);

    // A poisoned crate under leaf's checksum, one changed byte in middle's index object, and
    // one in middle's file in the index pack (its last file; an LZ4 block ends in literals):
    // each is refused, and leaf's file in the pack is still used.
    s3.put_object(BUCKET, &crate_key(&leaf), b"not the crate cargo expects");
    let mut packed = s3.get_object(BUCKET, &pack);
    let last = packed.len() - 2;
    packed[last] ^= 1;
    s3.put_object(BUCKET, &pack, &packed);
    let keys = s3.keys(BUCKET);
    let index_key = keys
        .iter()
        .find(|k| k.ends_with("/mi/dd/middle"))
        .expect("middle's index file in the bucket");
    let mut index = s3.get_object(BUCKET, index_key);
    let last = index.len() - 2;
    index[last] ^= 1;
    s3.put_object(BUCKET, index_key, &index);

    let b = daemon(&public, None, &s3, "");
    build(&b, "app");
    assert_eq!(tier(&b, "rejected"), 3, "{}", status(&b));
    assert_eq!(tier(&b, "pack_hits"), 1, "{}", status(&b));
    assert_eq!(
        metric_with(
            &b,
            "privreg_shared_tier_requests_total",
            "outcome=\"rejected\""
        ),
        3
    );
    assert!(b.log().contains("refusing an object from the shared tier"));
    // Both were taken from the upstream instead, and what B keeps is the real crate.
    assert!(
        metric_with(
            &b,
            "privreg_upstream_requests_total",
            "kind=\"download\",outcome=\"ok\""
        ) >= 1
    );
    assert!(
        metric_with(
            &b,
            "privreg_upstream_requests_total",
            "kind=\"index\",outcome=\"ok\""
        ) >= 1
    );
    let kept = files_named(&b.cache_dir, &format!("{leaf}.crate"));
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(sha256(&std::fs::read(&kept[0]).unwrap()), leaf);
    // Crates are never rewritten: the poisoned object stays as it was (and stays refused).
    assert_eq!(
        s3.get_object(BUCKET, &crate_key(&leaf)),
        b"not the crate cargo expects"
    );
}

#[test]
fn read_only_daemons_write_nothing_and_unlisted_upstreams_stay_out() {
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let mut public = Registry::start(RegistryOpts::default());
    publish_graph(&mut public);
    let mut acme = Registry::start(RegistryOpts::default());
    let secret = acme.publish(Pkg::new("acme-secret", "0.3.0").lib("pub fn s() {}"));

    // A read-only daemon: nothing at all reaches the bucket.
    let ro = daemon(&public, Some(&acme), &s3, "mode = \"read-only\"\n");
    let sb = Sandbox::new();
    sb.use_privreg(&ro);
    let dir = sb.project("app", "middle = \"1\"\nacme-secret = \"0.3\"", MAIN);
    let out = sb.cargo(&dir, &["build"]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), ro.log());
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(s3.keys(BUCKET), Vec::<String>::new());
    assert_eq!(tier(&ro, "writes"), 0);
    assert_eq!(status(&ro)["shared_tier"]["mode"], "read-only");

    // A read-write daemon shares crates-io's files, never acme's (not listed in `upstreams`).
    let rw = daemon(&public, Some(&acme), &s3, "");
    let sb = Sandbox::new();
    sb.use_privreg(&rw);
    let dir = sb.project("app", "middle = \"1\"\nacme-secret = \"0.3\"", MAIN);
    let out = sb.cargo(&dir, &["build"]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), rw.log());
    wait_writes(&rw, 5);
    // Its index pack is crates-io's, and holds nothing of acme's.
    let pack = wait_pack(&rw, &s3);
    let packed = unpack(&s3.get_object(BUCKET, &pack));
    assert!(packed.contains(" mi/dd/middle\n"), "{packed}");
    assert!(
        !packed.contains("acme-secret"),
        "a private upstream's file reached the pack: {packed}"
    );
    let keys = s3.keys(BUCKET);
    assert!(
        keys.iter().any(|k| k.contains("/v1/index/crates-io-")),
        "{keys:?}"
    );
    assert!(
        !keys
            .iter()
            .any(|k| k.contains("acme") || k.contains(&secret)),
        "a private upstream's file reached the bucket: {keys:?}"
    );
}

#[test]
fn a_hung_then_dead_tier_costs_a_bounded_delay_and_shows_in_status() {
    let mut s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let mut public = Registry::start(RegistryOpts::default());
    publish_graph(&mut public);
    let p = daemon(
        &public,
        None,
        &s3,
        "timeout = \"500ms\"\ncooldown = \"1m\"\n",
    );
    let healthy = build(&p, "warmup");
    assert_eq!(status(&p)["shared_tier"]["state"], "ok");

    // The server stops answering (accepts, never replies): a fresh project must still build,
    // through the upstream, paying at most a few timeouts before the tier is skipped.
    s3.signal("STOP");
    let q = daemon(
        &public,
        None,
        &s3,
        "timeout = \"500ms\"\ncooldown = \"1m\"\n",
    );
    let hung = build(&q, "app");
    assert!(
        hung < healthy + Duration::from_secs(8),
        "a hung tier cost {hung:?} (healthy build {healthy:?})"
    );
    let st = status(&q);
    assert_eq!(st["shared_tier"]["state"], "skipped", "{st}");
    assert!(st["shared_tier"]["last_error"].as_str().is_some(), "{st}");
    assert_eq!(metric_with(&q, "privreg_shared_tier_failing", ""), 1);
    let report = q.cli_ok(&["status"]);
    assert!(report.contains("skipped for"), "{report}");

    // Killed outright: the first daemon, already warm, keeps building too.
    s3.kill();
    build(&p, "after");
}

fn files_named(dir: &std::path::Path, name: &str) -> Vec<std::path::PathBuf> {
    privreg_tests::files_under(dir)
        .into_iter()
        .filter(|f| f.file_name().is_some_and(|n| n.to_string_lossy() == name))
        .collect()
}

fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}
