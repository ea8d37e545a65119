use std::fmt::Write as _;

use super::super::classify::Validators;
use super::*;

fn entry(present: bool, etag: Option<&str>, lm: Option<&str>, rev: u64) -> Entry {
    Entry {
        meta: Meta {
            present,
            etag: etag.map(str::to_owned),
            last_modified: lm.map(str::to_owned),
            fetched: 10,
        },
        body: Bytes::from_static(b"old"),
        file: None,
        rev,
        disk: DiskState::new(OnDisk::Same),
        seen: Arc::default(),
        digest: std::sync::OnceLock::new(),
    }
}

fn validators(etag: Option<&str>, lm: Option<&str>) -> Validators {
    Validators {
        etag: etag.map(str::to_owned),
        last_modified: lm.map(str::to_owned),
    }
}

#[test]
fn answers_become_stored_files() {
    let held = entry(true, Some("\"e1\""), Some("monday"), 7);
    let new = Answer::Modified {
        body: Bytes::from_static(b"new"),
        validators: validators(Some("\"e2\""), None),
    };
    let (s, kept) = stored(new, Some(&held), 99);
    assert_eq!((&s.body[..], kept), (&b"new"[..], None));
    assert_eq!(
        (s.meta.present, s.meta.etag.as_deref(), s.meta.last_modified),
        (true, Some("\"e2\""), None)
    );
    assert_eq!(s.meta.fetched, 99);

    // A 304 keeps the body and revision; validators it omits stay as they were.
    let same = Answer::NotModified(validators(None, Some("tuesday")));
    let (s, kept) = stored(same, Some(&held), 99);
    assert_eq!((&s.body[..], kept), (&b"old"[..], Some(7)));
    assert_eq!(s.meta.etag.as_deref(), Some("\"e1\""));
    assert_eq!(s.meta.last_modified.as_deref(), Some("tuesday"));

    let (s, kept) = stored(Answer::Absent, Some(&held), 99);
    assert_eq!((s.body.len(), kept, s.meta.present), (0, None, false));
    assert_eq!((s.meta.etag, s.meta.last_modified), (None, None));
}

#[test]
fn only_a_304_with_the_same_validators_skips_the_disk() {
    let held = entry(true, Some("\"e1\""), Some("monday"), 7);
    let meta = |etag: &str, lm: &str| Meta {
        present: true,
        etag: Some(etag.to_owned()),
        last_modified: Some(lm.to_owned()),
        fetched: 99,
    };
    let missing = Entry {
        disk: DiskState::new(OnDisk::Missing),
        ..entry(true, Some("\"e1\""), Some("monday"), 7)
    };
    let cases = [
        (Some(7), Some(&held), meta("\"e1\"", "monday"), true),
        // A body whose write failed is written again.
        (Some(7), Some(&missing), meta("\"e1\"", "monday"), false),
        (Some(7), Some(&held), meta("\"e2\"", "monday"), false),
        (Some(7), Some(&held), meta("\"e1\"", "tuesday"), false),
        (None, Some(&held), meta("\"e1\"", "monday"), false),
        (Some(7), None, meta("\"e1\"", "monday"), false),
    ];
    for (i, (kept, held, new, want)) in cases.into_iter().enumerate() {
        assert_eq!(unchanged_on_disk(kept, held, &new), want, "case {i}");
    }
}

#[test]
fn freshness_is_the_age_against_the_ttl() {
    let e = entry(true, None, None, 1);
    let at = |secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    let ttl = Duration::from_secs(5);
    assert!(fresh_at(&e, ttl, at(10)));
    assert!(fresh_at(&e, ttl, at(14)));
    assert!(!fresh_at(&e, ttl, at(15)));
    // A clock that went back: not fresh.
    assert!(!fresh_at(&e, ttl, at(9)));
}

fn memory(dir: &tempfile::TempDir, budget: u64) -> (Memory, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let memory = Memory::new(Cache::new(dir.path()), budget, metrics.clone());
    (memory, metrics)
}

fn held_now(m: &Memory, k: &Key) -> Arc<Entry> {
    m.held_file(k).expect("held in memory")
}

/// Whether memory holds `key`, without making it recently used.
fn holds(m: &Memory, k: &Key) -> bool {
    m.held.run_pending_tasks();
    m.held.contains_key(&SlotRef::File(k))
}

/// Index lines of crate `foo` for these versions, without `pubtime`.
fn foo_body(versions: &[&str]) -> Bytes {
    let ck = "c".repeat(64);
    versions
        .iter()
        .map(|v| format!(r#"{{"name":"foo","vers":"{v}","deps":[],"cksum":"{ck}"}}"#) + "\n")
        .collect::<String>()
        .into()
}

#[test]
fn versions_that_appear_after_the_first_fetch_are_dated_durably() {
    let dir = tempfile::tempdir().unwrap();
    let up = super::super::test_upstream();
    let krate = privreg_shared::CrateName::new("foo").unwrap();
    let rel = UpstreamPath::Index(&krate);
    let (mem, _) = memory(&dir, 1 << 20);
    let answer = |versions: &[&str]| Answer::Modified {
        body: foo_body(versions),
        validators: validators(None, None),
    };
    let v = |s: &str| semver::Version::parse(s).unwrap();
    let (first, _) = mem.remember(&up, rel, key(&up, rel), answer(&["1.0.0"]), None);
    assert!(first.seen.is_empty(), "the first fetch dates nothing");
    let before = store::now_secs();
    let (second, changed) = mem.remember(
        &up,
        rel,
        key(&up, rel),
        answer(&["1.0.0", "1.1.0"]),
        Some(&first),
    );
    assert!(changed);
    assert_eq!(second.seen.get(&v("1.0.0")), None);
    let dated = second.seen.get(&v("1.1.0")).expect("1.1.0 is dated");
    assert!((before..=store::now_secs()).contains(&dated));
    // A 304 keeps the record; a restart reads it back from the disk.
    let (third, _) = mem.remember(
        &up,
        rel,
        key(&up, rel),
        Answer::NotModified(validators(None, None)),
        Some(&second),
    );
    assert!(Arc::ptr_eq(&third.seen, &second.seen));
    let (restarted, _) = memory(&dir, 1 << 20);
    let loaded = restarted.known(&up, rel, &key(&up, rel)).unwrap();
    assert_eq!(*loaded.seen, *second.seen);
    // A 404 forgets it, and a crate that comes back is new as a whole.
    let (gone, _) = restarted.remember(&up, rel, key(&up, rel), Answer::Absent, Some(&loaded));
    assert!(gone.seen.is_empty());
    assert!(Cache::new(dir.path()).first_seen(&up, &krate).is_empty());
    let (back, _) = restarted.remember(&up, rel, key(&up, rel), answer(&["1.0.0"]), Some(&gone));
    assert!(back.seen.get(&v("1.0.0")).is_some());
}

#[test]
fn a_copy_from_the_tier_is_written_when_asked_and_only_while_memory_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let up = super::super::test_upstream();
    let krate = privreg_shared::CrateName::new("foo").unwrap();
    let rel = UpstreamPath::Index(&krate);
    let k = key(&up, rel);
    let (mem, _) = memory(&dir, 1 << 20);
    let disk = Cache::new(dir.path());
    let on_disk = || disk.load(&up, rel).unwrap().map(|s| s.body);
    let from_tier = |versions: &[&str]| {
        let body = foo_body(versions);
        Verified {
            sha256: sha2::Sha256::digest(&body).into(),
            stored: Stored {
                meta: Meta {
                    present: true,
                    etag: Some("\"t\"".into()),
                    last_modified: None,
                    fetched: store::now_secs(),
                },
                body,
            },
        }
    };
    let answer = Answer::Modified {
        body: foo_body(&["1.0.0"]),
        validators: validators(None, None),
    };
    let (first, _) = mem.remember(&up, rel, k.clone(), answer, None);
    let (copy, seen_changed) = mem.adopt(
        &up,
        rel,
        k.clone(),
        from_tier(&["1.0.0", "1.1.0"]),
        Some(&first),
    );
    // In memory, dated, with the digest the tier checked, but neither the file nor its record
    // is on disk yet.
    assert!(seen_changed && copy.disk.get() == OnDisk::Deferred);
    let body_sha256: [u8; 32] = sha2::Sha256::digest(&copy.body).into();
    assert_eq!(copy.digest.get(), Some(&body_sha256));
    assert!(copy.seen.get(&semver::Version::new(1, 1, 0)).is_some());
    assert_eq!(on_disk(), Some(foo_body(&["1.0.0"])));
    assert!(disk.first_seen(&up, &krate).is_empty());
    // Leaving memory unwritten, it would be asked for again without conditions.
    let left = copy.unwritten().expect("the disk lacks it");
    assert_eq!((left.fetched, left.etag), (0, None));
    assert!(mem.write_copy(&up, rel, &k, &copy, seen_changed));
    mem.cache.flush(Duration::from_secs(10));
    assert_eq!(copy.disk.get(), OnDisk::Same);
    assert_eq!(on_disk(), Some(foo_body(&["1.0.0", "1.1.0"])));
    assert_eq!(disk.first_seen(&up, &krate), *copy.seen);
    // Written once.
    assert!(!mem.write_copy(&up, rel, &k, &copy, seen_changed));
    // A copy that a newer answer replaced in memory is never written over it.
    let (stale, _) = mem.adopt(&up, rel, k.clone(), from_tier(&["1.2.0"]), None);
    let newer = Answer::Modified {
        body: foo_body(&["2.0.0"]),
        validators: validators(None, None),
    };
    mem.remember(&up, rel, k.clone(), newer, Some(&stale));
    assert!(!mem.write_copy(&up, rel, &k, &stale, false));
    mem.cache.flush(Duration::from_secs(10));
    assert_eq!(on_disk(), Some(foo_body(&["2.0.0"])));
}

#[test]
fn expiring_invalidating_and_restoring_an_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (memory, _) = memory(&dir, 1 << 20);
    let k: Key = ("acme-0".into(), "config.json".into());
    let old = Arc::new(entry(true, Some("\"e1\""), Some("monday"), 3));
    memory.insert(k.clone(), old.clone());
    let now = |m: &Memory| held_now(m, &k);

    memory.expire(k.clone(), &old, false);
    let e = now(&memory);
    assert_eq!(
        (e.meta.fetched, e.rev, e.disk.get()),
        (0, 3, OnDisk::Behind)
    );
    assert_eq!(e.meta.etag.as_deref(), Some("\"e1\""));
    memory.restore(k.clone(), &old);
    assert!(Arc::ptr_eq(&now(&memory), &old));

    memory.expire(k.clone(), &old, true);
    let e = now(&memory);
    assert_eq!(
        (e.meta.etag.clone(), e.meta.last_modified.clone()),
        (None, None)
    );
    // Something new came in meanwhile: it stays.
    let newer = Arc::new(entry(true, None, None, 4));
    memory.insert(k.clone(), newer.clone());
    memory.restore(k.clone(), &old);
    assert!(Arc::ptr_eq(&now(&memory), &newer));

    memory.invalidate(&k);
    let e = now(&memory);
    assert_eq!((e.meta.fetched, e.meta.etag.clone(), e.rev), (0, None, 4));
    assert!(e.meta.present);
}

#[test]
fn read_back_metadata_keeps_what_memory_knew() {
    let meta = |etag: Option<&str>, fetched| Meta {
        present: true,
        etag: etag.map(str::to_owned),
        last_modified: None,
        fetched,
    };
    let disk = meta(Some("\"e1\""), 100);
    // Confirmed later by a 304: the later time; never an earlier one.
    assert_eq!(
        overlay(disk.clone(), &meta(Some("\"e1\""), 500)),
        meta(Some("\"e1\""), 500)
    );
    assert_eq!(overlay(disk.clone(), &meta(Some("\"e1\""), 50)), disk);
    // Expired with its validators: stale, asked for conditionally.
    assert_eq!(
        overlay(disk.clone(), &meta(Some("\"e1\""), 0)),
        meta(Some("\"e1\""), 0)
    );
    // Invalidated (or a body never written): stale, asked for without conditions.
    assert_eq!(overlay(disk.clone(), &meta(None, 0)), meta(None, 0));
    // A disk copy written since (other validators) wins over a confirmation of the old one.
    assert_eq!(overlay(disk.clone(), &meta(Some("\"e0\""), 500)), disk);
    let absent = Meta {
        present: false,
        ..meta(None, 500)
    };
    assert_eq!(overlay(disk.clone(), &absent), disk);
}

#[test]
fn the_weight_counts_the_body_the_parsed_lines_and_the_bookkeeping() {
    let line = |v: u32| {
        format!(
            "{{\"name\":\"c\",\"vers\":\"1.0.{v}\",\"deps\":[],\"cksum\":\"{}\",\"features\":{{}},\"yanked\":false}}\n",
            "0".repeat(64)
        )
    };
    let body = Bytes::from((0..50).map(line).collect::<String>());
    let file = Arc::new(IndexFile::parse_bytes(body.clone()));
    assert_eq!(file.lines.len(), 50);
    let parsed = file.parsed_bytes();
    let e = Entry {
        file: Some(file),
        body: body.clone(),
        ..entry(true, Some("\"etag\""), None, 1)
    };
    assert!(e.weight() >= body.len() + parsed + size_of::<IndexFile>());
    let key: Key = ("acme-0123456789ab".into(), "c".into());
    let w = weigh(&Slot::File(key.clone()), &Held::File(Arc::new(e)));
    assert!(
        w as usize >= body.len() + parsed + OVERHEAD + key.0.len(),
        "{w}"
    );
    // Honest, not padded: within a few hundred bytes per line of what it holds.
    assert!((w as usize) < 2 * body.len() + parsed + 2 * OVERHEAD, "{w}");
    // A 404 weighs its bookkeeping only.
    let absent = weigh(
        &Slot::File(key),
        &Held::File(Arc::new(entry(false, None, None, 1))),
    );
    assert!((absent as usize) < OVERHEAD + 256, "{absent}");
}

fn modified(body: &str, etag: &str) -> Answer {
    Answer::Modified {
        body: Bytes::from(body.to_owned()),
        validators: validators(Some(etag), None),
    }
}

fn index_body(name: &str, versions: usize) -> String {
    (0..versions).fold(String::new(), |mut body, v| {
        let _ = writeln!(
            body,
            "{{\"name\":\"{name}\",\"vers\":\"1.0.{v}\",\"deps\":[],\"cksum\":\"{}\",\"features\":{{}},\"yanked\":false}}",
            "0".repeat(64)
        );
        body
    })
}

#[test]
fn memory_stays_within_its_budget_and_reads_evicted_files_back_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let budget = 64 << 10;
    let (memory, metrics) = memory(&dir, budget);
    let up = super::super::test_upstream();
    let names: Vec<CrateName> = (0..200)
        .map(|i| CrateName::new(&format!("crate-{i}")).unwrap())
        .collect();
    let mut first = None;
    for name in &names {
        let rel = UpstreamPath::Index(name);
        let body = index_body(name.as_str(), 12);
        let (e, changed) = memory.remember(&up, rel, key(&up, rel), modified(&body, "\"1\""), None);
        assert!(changed && e.disk.get() == OnDisk::Same);
        first.get_or_insert(e);
        let usage = memory.usage();
        assert!(usage.bytes <= budget, "{usage:?}");
        assert_eq!(usage.budget, budget);
    }
    let usage = memory.usage();
    assert!(usage.bytes > budget / 2, "the budget is used: {usage:?}");
    let counts = metrics.memory_counts();
    assert!(counts.evictions > 100, "{counts:?}");
    // What a caller holds stays whole after its file left memory.
    let first = first.unwrap();
    let rel = UpstreamPath::Index(&names[0]);
    assert!(!holds(&memory, &key(&up, rel)));
    assert_eq!(first.file.as_ref().unwrap().lines.len(), 12);

    // Read back from disk: the same body and metadata, still fresh.
    let back = memory.known(&up, rel, &key(&up, rel)).expect("on disk");
    assert_eq!((&back.body, &back.meta), (&first.body, &first.meta));
    assert_eq!(back.disk.get(), OnDisk::Same);
    assert!(fresh(&back, Duration::from_mins(1)));
    assert_eq!(back.file.as_ref().unwrap().lines.len(), 12);
    assert_eq!(metrics.memory_counts().disk_reads, 1);
    assert!(memory.usage().bytes <= budget);
}

/// Fills memory with other files until `key` has left it.
fn push_out(memory: &Memory, up: &Upstream, key: &Key) {
    let mut i = 0;
    while holds(memory, key) {
        let name = CrateName::new(&format!("filler-{i}")).unwrap();
        let rel = UpstreamPath::Index(&name);
        let body = index_body(name.as_str(), 12);
        memory.remember(up, rel, super::key(up, rel), modified(&body, "\"f\""), None);
        memory.usage();
        i += 1;
        assert!(i < 10_000, "the file never left memory");
    }
}

#[test]
fn confirmations_and_invalidations_survive_eviction() {
    let dir = tempfile::tempdir().unwrap();
    let (memory, _) = memory(&dir, 64 << 10);
    let up = super::super::test_upstream();
    let (a, b) = (
        CrateName::new("aaa").unwrap(),
        CrateName::new("bbb").unwrap(),
    );
    let (ra, rb) = (UpstreamPath::Index(&a), UpstreamPath::Index(&b));
    let (ka, kb) = (key(&up, ra), key(&up, rb));
    let body = index_body("aaa", 3);
    let (old, _) = memory.remember(&up, ra, ka.clone(), modified(&body, "\"1\""), None);
    // Written an hour ago, as far as the disk knows; then a 304 confirms it now, which
    // changes nothing on disk.
    let hour_ago = Stored {
        meta: Meta {
            fetched: old.meta.fetched - 3600,
            ..old.meta.clone()
        },
        body: old.body.clone(),
    };
    memory.cache.store(&up, ra, &hour_ago).unwrap();
    let stale = Arc::new(Entry {
        meta: hour_ago.meta.clone(),
        body: old.body.clone(),
        file: old.file.clone(),
        rev: old.rev,
        disk: DiskState::new(OnDisk::Same),
        seen: Arc::default(),
        digest: std::sync::OnceLock::new(),
    });
    let (confirmed, changed) = memory.remember(
        &up,
        ra,
        ka.clone(),
        Answer::NotModified(validators(Some("\"1\""), None)),
        Some(&stale),
    );
    assert!(!changed);
    assert_eq!(confirmed.disk.get(), OnDisk::Behind);
    assert_eq!(
        memory.cache.load(&up, ra).unwrap().unwrap().meta.fetched,
        hour_ago.meta.fetched
    );
    let ttl = Duration::from_mins(1);
    assert!(fresh(&confirmed, ttl));

    // Invalidate one that is held, and one that only the disk holds.
    memory.remember(
        &up,
        rb,
        kb.clone(),
        modified(&index_body("bbb", 3), "\"2\""),
        None,
    );
    push_out(&memory, &up, &ka);
    push_out(&memory, &up, &kb);
    memory.invalidate(&kb);

    let back = memory.known(&up, ra, &ka).unwrap();
    assert!(
        fresh(&back, ttl),
        "the 304's freshness was lost: {:?}",
        back.meta
    );
    assert_eq!(back.meta.etag.as_deref(), Some("\"1\""));
    let back = memory.known(&up, rb, &kb).unwrap();
    assert!(!fresh(&back, ttl));
    assert_eq!(
        (back.meta.etag.as_deref(), back.disk.get()),
        (None, OnDisk::Behind)
    );

    // Invalidated while held, then evicted: still stale and unconditional when read back.
    memory.invalidate(&ka);
    push_out(&memory, &up, &ka);
    let back = memory.known(&up, ra, &ka).unwrap();
    assert_eq!((back.meta.fetched, back.meta.etag.as_deref()), (0, None));

    // Forgotten: nothing of it is kept in memory.
    memory.forget(&ka);
    assert!(!holds(&memory, &ka));
}

#[test]
fn merged_views_share_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let (memory, _) = memory(&dir, 64 << 10);
    let krate = CrateName::new("foo").unwrap();
    assert!(memory.merged(&krate).is_none());
    let m = Arc::new(MergedBody::for_test(Bytes::from(vec![b'x'; 4096])));
    memory.remember_merged(krate.clone(), m.clone());
    assert!(Arc::ptr_eq(&memory.merged(&krate).unwrap(), &m));
    assert!(memory.usage().bytes >= 4096);
    memory.forget_merged(&krate);
    assert!(memory.merged(&krate).is_none());
    for i in 0..100 {
        let name = CrateName::new(&format!("m{i}")).unwrap();
        memory.remember_merged(
            name,
            Arc::new(MergedBody::for_test(Bytes::from(vec![b'x'; 4096]))),
        );
        assert!(memory.usage().bytes <= 64 << 10);
    }
}
