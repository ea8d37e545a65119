//! Memory bounded by configuration, not by history (issue 16): a daemon with a small
//! `limits.index-memory` serves many more distinct index files than fit, its memory cache never
//! reports more than the budget, evicted files come back from the disk cache without a single
//! upstream request while they are fresh, and cargo still resolves through it.

use std::fmt::Write as _;

use privreg_shared::CrateName;
use privreg_shared::protocol::Status;
use privreg_tests::{Pkg, Privreg, Registry, RegistryOpts, Sandbox, locked_packages};

/// Distinct crates, each with an index file of about 6 KB: together about 3.5 times the budget
/// (each publish takes the test registry about 0.1 s, so not more of them).
const CRATES: usize = 150;
const BUDGET: u64 = 256 << 10;

fn name(i: usize) -> String {
    format!("mem-crate-{i}")
}

/// One version with features whose names make its index line about 6 KB long.
fn publish(reg: &mut Registry, i: usize) {
    let mut pkg = Pkg::new(&name(i), "1.1.0");
    for f in 0..170 {
        pkg = pkg.feature(&format!("feature-with-a-long-name-{f:03}"), &[]);
    }
    reg.publish(pkg);
}

fn status(p: &Privreg) -> Status {
    let r = p.get("/-/status");
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).expect("/-/status is a Status")
}

fn index_path(krate: &str) -> String {
    format!("/index/{}", CrateName::new(krate).unwrap().index_path())
}

#[test]
fn a_small_memory_budget_holds_and_evicted_files_come_back_from_disk() {
    let names: Vec<String> = (0..CRATES).map(name).collect();
    let mut reg = Registry::start(RegistryOpts {
        watch: names.clone(),
        ..RegistryOpts::default()
    });
    for i in 0..CRATES {
        publish(&mut reg, i);
    }
    let len = std::fs::metadata(reg.index_file(&names[0])).unwrap().len();
    assert!((5000..8000).contains(&len), "index files of ~6 KB: {len}");
    let total = len * CRATES as u64;
    assert!(total > 3 * BUDGET, "the files must not fit: {total}");

    let p = Privreg::start(&format!(
        "auth = false\n\n[limits]\nindex-memory = \"256KiB\"\n\n\
         [upstreams.crates-io]\nindex = \"{}\"\nttl = \"1h\"\n",
        reg.index
    ));
    assert_eq!(status(&p).memory.budget_bytes, BUDGET);

    // First pass: every file once, from the upstream.
    let mut bodies = Vec::new();
    for (i, krate) in names.iter().enumerate() {
        let r = p.get(&index_path(krate));
        assert_eq!(r.status, 200, "{krate}: {}", r.text());
        bodies.push(r.body);
        if i % 10 == 9 {
            let m = status(&p).memory;
            assert!(m.bytes <= BUDGET, "after {} files: {m:?}", i + 1);
        }
    }
    let asked = reg.requests();
    let index_asked = |requests: &[serde_json::Value]| {
        requests
            .iter()
            .filter(|r| r["path"].as_str().is_some_and(|p| p.contains("mem-crate-")))
            .count()
    };
    assert_eq!(index_asked(&asked), CRATES, "one upstream request per file");
    let upstream_before = status(&p).upstream_requests;
    let first = status(&p).memory;
    assert!(first.bytes <= BUDGET, "{first:?}");
    assert!(first.bytes > BUDGET / 2, "the budget is used: {first:?}");
    assert!(
        first.evictions > (CRATES / 2) as u64,
        "most files left memory: {first:?}"
    );
    // Each file is held with its merged view; far fewer than all of them fit.
    assert!(first.entries < CRATES as u64, "{first:?}");

    // Second pass: the same bytes, read back from disk, with no upstream request at all.
    for (krate, body) in names.iter().zip(&bodies) {
        let r = p.get(&index_path(krate));
        assert_eq!(r.status, 200, "{krate}: {}", r.text());
        assert_eq!(&r.body, body, "{krate} changed");
    }
    assert_eq!(
        index_asked(&reg.requests()),
        CRATES,
        "evicted files were asked for again"
    );
    assert_eq!(
        status(&p).upstream_requests,
        upstream_before,
        "the daemon counted upstream requests"
    );
    let second = status(&p).memory;
    assert!(second.bytes <= BUDGET, "{second:?}");
    assert!(
        second.disk_reads - first.disk_reads >= (CRATES / 2) as u64,
        "evicted files came back from disk: {first:?} then {second:?}"
    );
    let budget = p.metric("privreg_memory_cache_budget_bytes", None);
    assert!((budget - BUDGET as f64).abs() < 0.5, "{budget}");
    assert!(p.metric("privreg_memory_cache_bytes", None) <= BUDGET as f64);
    assert!(p.metric("privreg_memory_cache_evictions_total", None) >= second.evictions as f64);

    // `privreg status` tells it too.
    let out = p.cli_ok(&["status"]);
    assert!(out.contains("of 256.0 KiB (limits.index-memory)"), "{out}");

    // Cargo resolves and fetches through the small budget, and the files it reads come from
    // the disk cache rather than the upstream.
    let sb = Sandbox::new();
    sb.use_privreg(&p);
    let deps = names.iter().step_by(5).fold(String::new(), |mut deps, n| {
        let _ = writeln!(deps, "{n} = \"1\"");
        deps
    });
    let app = sb.project("app", &deps, "fn main() {}");
    sb.cargo_ok(&app, &["fetch"]);
    let locked = locked_packages(&app);
    for n in names.iter().step_by(5) {
        assert!(
            locked.contains(&(n.clone(), "1.1.0".into())),
            "{n}: {locked:?}"
        );
    }
    assert_eq!(
        index_asked(&reg.requests()),
        CRATES,
        "cargo's resolution asked the upstream for cached files"
    );
    assert!(status(&p).memory.bytes <= BUDGET);
}

/// A prefetch of a file that is fresh on disk but no longer in memory reads nothing: loading it
/// would push out files in use for one nobody asked for yet (cargo's own request reads it).
#[test]
fn a_prefetch_never_reads_a_file_fresh_on_disk_back_into_memory() {
    const FILLERS: usize = 60;
    let mut names: Vec<String> = (0..FILLERS).map(name).collect();
    names.extend(["pf-dep".to_owned(), "pf-top".to_owned()]);
    let mut reg = Registry::start(RegistryOpts {
        watch: names.clone(),
        ..RegistryOpts::default()
    });
    for i in 0..FILLERS {
        publish(&mut reg, i);
    }
    reg.publish(Pkg::new("pf-dep", "1.0.0"));
    reg.publish(Pkg::new("pf-top", "1.0.0").dep("pf-dep", "1"));
    let p = Privreg::start(&format!(
        "auth = false\n\n[limits]\nindex-memory = \"256KiB\"\n\n\
         [upstreams.crates-io]\nindex = \"{}\"\nttl = \"1h\"\n",
        reg.index
    ));

    // pf-dep is fetched, then pushed out of memory by files that together exceed the budget.
    assert_eq!(p.get(&index_path("pf-dep")).status, 200);
    for n in &names[..FILLERS] {
        assert_eq!(p.get(&index_path(n)).status, 200, "{n}");
    }
    let before = status(&p).memory;
    assert!(before.evictions > 0, "{before:?}");
    let skipped = p.metric("privreg_prefetches_skipped_total", None);

    // pf-top is new: fetched from the upstream, it announces pf-dep to the prefetcher, which
    // finds pf-dep fresh on disk and leaves it there.
    assert_eq!(p.get(&index_path("pf-top")).status, 200);
    p.within(30.0, "the prefetch of pf-dep", |p| {
        p.metric("privreg_prefetches_skipped_total", None) > skipped
    });
    let after = status(&p).memory;
    assert_eq!(
        after.disk_reads, before.disk_reads,
        "the prefetch read pf-dep back: {before:?} then {after:?}"
    );
    let dep_asked = reg
        .requests()
        .iter()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.ends_with("/pf-dep")))
        .count();
    assert_eq!(dep_asked, 1, "pf-dep was fetched once, then only from disk");

    // Cargo's own request reads it from disk, without the upstream.
    let r = p.get(&index_path("pf-dep"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(status(&p).memory.disk_reads, after.disk_reads + 1);
}
