//! Issue 17's selectors: `age` and `advisory`, their grammar, their tier, their evaluation, and
//! what they do in the real `policy::merge` (cooldown, expiry, advisory steering).

use std::collections::BTreeMap;

use semver::Version;

use super::{F, err_at, name, parse, up, v};
use crate::CrateName;
use crate::advisory::{AdvisoryHit, AdvisoryKind, AdvisorySource};
use crate::index::IndexFile;
use crate::pin::{AdvisoryItem, PinErrorKind, PinFile, Preferences, Tier};
use crate::policy::{
    Answer, Dated, Facts, PinPriority, PinRules, State, VersionFacts, merge, single,
};
use crate::store::FirstSeen;

const DAY: u64 = 86_400;
/// "Now" in these tests: 2025-01-10T00:00:00Z.
const NOW: u64 = 1_736_467_200;

fn pin(selectors: &str) -> String {
    format!("Package: serde\nPin: {selectors}\nPin-Priority: -1\n")
}

/// `Ok((younger, seconds))`, or the start of the reason it is refused.
type AgeOutcome = Result<(bool, u64), &'static str>;

#[test]
fn age_values() {
    let cases: &[(&str, AgeOutcome)] = &[
        ("<3d", Ok((true, 3 * DAY))),
        ("< 72h", Ok((true, 3 * DAY))),
        ("<2w", Ok((true, 14 * DAY))),
        ("<1h 30m", Ok((true, 5400))),
        (">30d", Ok((false, 30 * DAY))),
        ("<20s", Ok((true, 20))),
        ("3d", Err("no `<` or `>`")),
        ("=3d", Err("no `<` or `>`")),
        ("<=3d", Err("`<=` and `>=` are not supported")),
        ("<", Err("no duration")),
        ("<3 days ago", Err("")),
        ("<3x", Err("")),
        ("<0s", Err("the duration must be at least one second")),
        ("<500ms", Err("the duration must be at least one second")),
    ];
    for (value, want) in cases {
        let text = pin(&format!("age {value}"));
        match want {
            Ok((younger, secs)) => {
                let f = parse(&text);
                let age = f.stanzas[0].selectors.age.expect(value);
                assert_eq!(
                    (age.younger, age.limit.as_secs()),
                    (*younger, *secs),
                    "{value}"
                );
            }
            Err(reason) => match err_at(&text, 2) {
                PinErrorKind::BadAge {
                    value: v,
                    reason: r,
                } => {
                    assert_eq!(&v, value);
                    assert!(r.starts_with(reason), "{value}: {r}");
                }
                other => panic!("{value}: {other:?}"),
            },
        }
    }
    assert_eq!(
        PinFile::parse(F, pin("age 3d")).unwrap_err().to_string(),
        format!(
            "{F}:2: bad age `3d`: no `<` or `>`; expected `<DURATION` or `>DURATION`, e.g. `<3d`"
        )
    );
    assert_eq!(
        err_at(&pin("age"), 2),
        PinErrorKind::MissingSelectorValue("age")
    );
    assert_eq!(
        err_at(&pin("age <3d; Age >1d"), 2),
        PinErrorKind::RepeatedSelector("age")
    );
}

#[test]
fn advisory_values() {
    use AdvisoryItem::{Any, Id, Kind};
    let vuln = Kind(AdvisoryKind::Vulnerability);
    // (selector, Ok(items) or the bad item)
    let cases: Vec<(&str, Result<Vec<AdvisoryItem>, &str>)> = vec![
        ("advisory", Ok(vec![vuln.clone()])),
        ("ADVISORY", Ok(vec![vuln.clone()])),
        ("advisory vulnerability", Ok(vec![vuln.clone()])),
        (
            "advisory unmaintained, Unsound,notice",
            Ok(vec![
                Kind(AdvisoryKind::Unmaintained),
                Kind(AdvisoryKind::Unsound),
                Kind(AdvisoryKind::Notice),
            ]),
        ),
        ("advisory any", Ok(vec![Any])),
        (
            "advisory rustsec-2023-0071",
            Ok(vec![Id("RUSTSEC-2023-0071".into())]),
        ),
        (
            "advisory RUSTSEC-2023-0071, unsound",
            Ok(vec![
                Id("RUSTSEC-2023-0071".into()),
                Kind(AdvisoryKind::Unsound),
            ]),
        ),
        ("advisory yanked", Err("yanked")),
        ("advisory RUSTSEC-23-0071", Err("RUSTSEC-23-0071")),
        ("advisory RUSTSEC-2023-00711", Err("RUSTSEC-2023-00711")),
        ("advisory GHSA-xxxx-xxxx-xxxx", Err("GHSA-xxxx-xxxx-xxxx")),
        ("advisory unsound,", Err("")),
        ("advisory unsound unmaintained", Err("unsound unmaintained")),
    ];
    for (selectors, want) in cases {
        let text = pin(selectors);
        match want {
            Ok(items) => {
                let f = parse(&text);
                let got = f.stanzas[0].selectors.advisory.clone().expect(selectors);
                assert_eq!(got.items, items, "{selectors}");
            }
            Err(item) => {
                assert_eq!(
                    err_at(&text, 2),
                    PinErrorKind::BadAdvisory(item.into()),
                    "{selectors}"
                );
            }
        }
    }
    assert_eq!(
        PinFile::parse(F, pin("advisory typo"))
            .unwrap_err()
            .to_string(),
        format!(
            "{F}:2: bad advisory `typo`; expected `vulnerability`, `unmaintained`, `unsound`, `notice`, `any` or an ID such as `RUSTSEC-2023-0071`"
        )
    );
    assert_eq!(
        err_at(&pin("advisory; advisory any"), 2),
        PinErrorKind::RepeatedSelector("advisory")
    );
}

#[test]
fn age_and_advisory_are_version_specific_and_allowed_with_star() {
    // (stanza's Package and Pin, tier)
    let cases = [
        ("serde", "age <3d", Tier::NamedWithVersion),
        ("serde", "advisory", Tier::NamedWithVersion),
        (
            "serde",
            "registry corp; advisory any",
            Tier::NamedWithVersion,
        ),
        ("serde", "registry corp", Tier::Named),
        ("*", "age <3d", Tier::General),
        ("*", "advisory RUSTSEC-2023-0071", Tier::General),
        ("*", "registry corp; age <3d", Tier::General),
    ];
    let public = up("corp", "cargo.acme.example", 600);
    for (package, selectors, tier) in cases {
        let text = format!("Package: {package}\nPin: {selectors}\nPin-Priority: -1\n");
        let prefs = Preferences::parse_files([("preferences", text.as_str())]).unwrap();
        let s = &prefs.files[0].stanzas[0];
        assert_eq!(s.tier(), tier, "{text}");
        // A version-specific stanza never sets a claim.
        assert_eq!(
            prefs.claim(&name("serde"), &public).is_none(),
            s.selectors.is_version_specific(),
            "{text}"
        );
        assert!(!s.applies(&name("serde"), &public, None) || !s.selectors.is_version_specific());
    }
    // `version` still needs a named package.
    assert_eq!(
        err_at(
            "Package: *\nPin: age <3d; version ^1\nPin-Priority: -1\n",
            2
        ),
        PinErrorKind::VersionWithStar
    );
}

/// A fake advisory database: (crate, version, id, kind, withdrawn).
struct Db(Vec<(&'static str, &'static str, &'static str, AdvisoryKind, bool)>);

impl AdvisorySource for Db {
    fn affected(&self, krate: &CrateName, version: &Version) -> Vec<AdvisoryHit> {
        self.0
            .iter()
            .filter(|(k, ver, ..)| krate.as_str() == *k && version.to_string() == *ver)
            .map(|(_, _, id, kind, withdrawn)| AdvisoryHit {
                id: (*id).into(),
                kind: kind.clone(),
                patched: vec![">=1.0.3".into()],
                withdrawn: *withdrawn,
            })
            .collect()
    }
}

fn db() -> Db {
    Db(vec![
        (
            "serde",
            "1.0.1",
            "RUSTSEC-2024-0001",
            AdvisoryKind::Vulnerability,
            false,
        ),
        (
            "serde",
            "1.0.2",
            "RUSTSEC-2024-0002",
            AdvisoryKind::Unmaintained,
            false,
        ),
        (
            "serde",
            "1.0.2",
            "RUSTSEC-2024-0003",
            AdvisoryKind::Unsound,
            false,
        ),
        (
            "serde",
            "1.0.4",
            "RUSTSEC-2024-0004",
            AdvisoryKind::Vulnerability,
            true,
        ),
        (
            "serde",
            "1.0.5",
            "RUSTSEC-2024-0005",
            AdvisoryKind::Other("x".into()),
            false,
        ),
    ])
}

#[test]
fn the_advisory_selector_matches_non_withdrawn_hits_by_kind_or_id() {
    let db = db();
    let serde = name("serde");
    let u = up("crates-io", "index.public.example", 500);
    // (selectors, versions of serde it matches)
    let cases = [
        ("advisory", vec!["1.0.1"]),
        ("advisory unmaintained", vec!["1.0.2"]),
        ("advisory unsound, vulnerability", vec!["1.0.1", "1.0.2"]),
        ("advisory notice", vec![]),
        ("advisory any", vec!["1.0.1", "1.0.2", "1.0.5"]),
        ("advisory RUSTSEC-2024-0003", vec!["1.0.2"]),
        // Withdrawn advisories never match, not even by ID.
        ("advisory rustsec-2024-0004", vec![]),
        ("advisory; version >=1.0.2", vec![]),
    ];
    let versions = ["1.0.0", "1.0.1", "1.0.2", "1.0.3", "1.0.4", "1.0.5"].map(v);
    for (selectors, want) in cases {
        let prefs = Preferences::parse_files([("p", pin(selectors))]).unwrap();
        let got: Vec<String> = versions
            .iter()
            .filter(|ver| {
                let facts = VersionFacts::bare(ver).with_advisories(&serde, &db);
                prefs.prio(&serde, &u, &facts).is_some()
            })
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, want, "{selectors}");
        // Another crate with the same versions is not affected.
        let other = name("other");
        assert!(versions.iter().all(|ver| {
            let facts = VersionFacts::bare(ver).with_advisories(&other, &db);
            prefs.prio(&other, &u, &facts).is_none()
        }));
    }
}

#[test]
fn the_age_selector_measures_from_pubtime_or_first_seen_and_notes_when_it_turns() {
    let u = up("crates-io", "index.public.example", 500);
    let serde = name("serde");
    let ver = v("1.0.0");
    let (young, old) = (
        Preferences::parse_files([("p", pin("age <3d"))]).unwrap(),
        Preferences::parse_files([("p", pin("age >3d"))]).unwrap(),
    );
    // (dated, matches `age <3d`, the moment that answer turns)
    let cases = [
        (Dated::Pubtime(NOW), true, Some(NOW + 3 * DAY)),
        (Dated::Pubtime(NOW - DAY), true, Some(NOW + 2 * DAY)),
        (Dated::FirstSeen(NOW - 3 * DAY + 1), true, Some(NOW + 1)),
        (Dated::FirstSeen(NOW - 3 * DAY), false, None),
        (Dated::Pubtime(NOW - 30 * DAY), false, None),
        // Published "in the future" (a clock ahead): young.
        (Dated::Pubtime(NOW + DAY), true, Some(NOW + 4 * DAY)),
        // Present at privreg's first fetch, without pubtime: old.
        (Dated::Old, false, None),
    ];
    for (dated, matches, turns) in cases {
        let facts = VersionFacts::at(&ver, dated, NOW);
        assert_eq!(
            young.prio(&serde, &u, &facts).is_some(),
            matches,
            "{dated:?}"
        );
        assert_eq!(facts.flips_at(), turns, "{dated:?}");
        let facts = VersionFacts::at(&ver, dated, NOW);
        assert_eq!(
            old.prio(&serde, &u, &facts).is_some(),
            !matches,
            "{dated:?}"
        );
        assert_eq!(facts.flips_at(), turns, "{dated:?}");
    }
    let later = VersionFacts::at(&ver, Dated::Pubtime(NOW - DAY), NOW + 2 * DAY);
    assert!(young.prio(&serde, &u, &later).is_none());
    assert_eq!(later.flips_at(), None);
}

const CK: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

/// `serde`'s index file: (version, pubtime).
fn serde_file(versions: &[(&str, Option<&str>)]) -> IndexFile {
    let body: String = versions
        .iter()
        .map(|(ver, pubtime)| {
            let pubtime = pubtime.map_or(String::new(), |p| format!(r#","pubtime":"{p}""#));
            format!(r#"{{"name":"serde","vers":"{ver}","deps":[],"cksum":"{CK}","yanked":false{pubtime}}}"#)
                + "\n"
        })
        .collect();
    IndexFile::parse(body.as_bytes())
}

const COOLDOWN: &str = "\
Package: *
Pin: age <3d
Pin-Priority: -1
";

/// (version, state, stanza line) of every decision.
fn states(m: &crate::policy::Merged) -> Vec<(String, State, Option<usize>)> {
    m.decisions
        .iter()
        .map(|d| {
            (
                d.version.to_string(),
                d.state.clone(),
                d.stanza.as_ref().map(|s| s.line),
            )
        })
        .collect()
}

#[test]
fn a_cooldown_soft_blocks_young_versions_until_they_age() {
    let ups = [up("crates-io", "index.public.example", 500)];
    // 1.0.0 backdated, 1.1.0 a day old, 1.2.0 without pubtime but first seen an hour ago, 1.3.0
    // without pubtime and present at the first fetch.
    let f = serde_file(&[
        ("1.0.0", Some("2024-01-01T00:00:00Z")),
        ("1.1.0", Some("2025-01-09T00:00:00Z")),
        ("1.2.0", None),
        ("1.3.0", None),
    ]);
    let seen: FirstSeen = serde_json::from_str(&format!(r#"{{"1.2.0":{}}}"#, NOW - 3600)).unwrap();
    let first_seen = [Some(&seen)];
    let answers = [Answer::Has(&f)];
    let run = |pins: &str, now: u64| {
        let prefs = Preferences::parse_files([("preferences", pins)]).unwrap();
        let facts = Facts {
            now,
            first_seen: &first_seen,
            advisories: &crate::advisory::NoAdvisories,
        };
        let m = merge(
            &name("serde"),
            &ups,
            &answers,
            &prefs,
            &BTreeMap::new(),
            &facts,
        )
        .unwrap();
        let forced: Vec<bool> = m.selected.iter().map(|s| s.force_yanked).collect();
        (m, forced)
    };
    let (m, forced) = run(COOLDOWN, NOW);
    assert_eq!(
        states(&m),
        [
            ("1.0.0".into(), State::Served, None),
            ("1.1.0".into(), State::YankedByPin, Some(1)),
            ("1.2.0".into(), State::YankedByPin, Some(1)),
            ("1.3.0".into(), State::Served, None),
        ]
    );
    assert_eq!(forced, [false, true, true, false]);
    // The earliest change: 1.1.0 turns three days old two days from now.
    assert_eq!(m.expires, Some(NOW + 2 * DAY));
    let (m, _) = run(COOLDOWN, NOW + 2 * DAY);
    assert_eq!(m.decisions[1].state, State::Served);
    assert_eq!(m.decisions[2].state, State::YankedByPin);
    assert_eq!(m.expires, Some(NOW - 3600 + 3 * DAY));
    let (m, forced) = run(COOLDOWN, NOW + 3 * DAY);
    assert_eq!(forced, [false; 4]);
    assert_eq!(m.expires, None);

    // `never` hides young versions instead.
    let (m, _) = run(&COOLDOWN.replace("-1", "never"), NOW);
    let listed: Vec<String> = m
        .selected
        .iter()
        .map(|s| f.lines[s.line].vers.to_string())
        .collect();
    assert_eq!(listed, ["1.0.0", "1.3.0"]);
    assert_eq!(m.decisions[1].state, State::Blocked);

    // A named stanza exempts a crate, and one above the cooldown exempts an upstream.
    for exempt in [
        format!("{COOLDOWN}\nPackage: serde\nPin: registry crates-io\nPin-Priority: 500\n"),
        format!("Package: *\nPin: registry crates-io\nPin-Priority: 500\n\n{COOLDOWN}"),
    ] {
        let (m, forced) = run(&exempt, NOW);
        assert_eq!(forced, [false; 4], "{exempt}");
        assert!(
            m.decisions.iter().all(|d| d.state == State::Served),
            "{exempt}"
        );
    }
    // A hold on a young version wins over the cooldown.
    let hold = format!("{COOLDOWN}\nPackage: serde\nPin: version =1.1.0\nPin-Priority: 1001\n");
    let (m, _) = run(&hold, NOW);
    assert_eq!(m.selected.len(), 1);
    assert_eq!(m.decisions[1].state, State::Served);
}

#[test]
fn an_advisory_pin_steers_to_the_patched_version_and_the_per_upstream_view_agrees() {
    let ups = [up("crates-io", "index.public.example", 500)];
    let f = serde_file(&[("1.0.1", None), ("1.0.2", None), ("1.0.3", None)]);
    let answers = [Answer::Has(&f)];
    let db = db();
    let facts = Facts {
        now: NOW,
        first_seen: &[],
        advisories: &db,
    };
    let prefs = Preferences::parse_files([(
        "preferences",
        "Package: *\nPin: advisory\nPin-Priority: never\n",
    )])
    .unwrap();
    let m = merge(
        &name("serde"),
        &ups,
        &answers,
        &prefs,
        &BTreeMap::new(),
        &facts,
    )
    .unwrap();
    let listed: Vec<String> = m
        .selected
        .iter()
        .map(|s| f.lines[s.line].vers.to_string())
        .collect();
    assert_eq!(listed, ["1.0.2", "1.0.3"]);
    assert_eq!(m.expires, None);
    let lines = single(&name("serde"), &ups[0], &f, &prefs, &facts);
    assert_eq!(lines, [(1, false), (2, false)]);
    // Without the database nothing is affected.
    let m = merge(
        &name("serde"),
        &ups,
        &answers,
        &prefs,
        &BTreeMap::new(),
        &Facts::at(NOW),
    )
    .unwrap();
    assert_eq!(m.selected.len(), 3);
    assert_eq!(prefs.files[0].stanzas[0].priority, PinPriority::Never);
}

#[test]
fn the_per_upstream_view_keeps_a_cooldown_too() {
    let u = up("acme", "cargo.acme.example", 600);
    let f = serde_file(&[("1.0.0", None), ("1.1.0", None)]);
    let seen: FirstSeen = serde_json::from_str(&format!(r#"{{"1.1.0":{NOW}}}"#)).unwrap();
    let prefs = Preferences::parse_files([("preferences", COOLDOWN)]).unwrap();
    let facts = |now| Facts {
        now,
        first_seen: &[],
        advisories: &crate::advisory::NoAdvisories,
    };
    let first_seen = [Some(&seen)];
    let with_seen = Facts {
        first_seen: &first_seen,
        ..facts(NOW)
    };
    assert_eq!(
        single(&name("serde"), &u, &f, &prefs, &with_seen),
        [(0, false), (1, true)]
    );
    assert_eq!(
        single(&name("serde"), &u, &f, &prefs, &facts(NOW)),
        [(0, false), (1, false)]
    );
}

#[test]
fn pin_add_takes_the_new_selectors_and_refuses_bad_ones() {
    let text = "# mine\n";
    let added = crate::pin::add_stanza(
        "preferences",
        text,
        "*",
        "age <3d",
        PinPriority::Value(-1),
        Some("a cooldown"),
    )
    .unwrap();
    let f = PinFile::parse("preferences", added).unwrap();
    assert_eq!(f.stanzas[0].selectors.age.unwrap().to_string(), "<3days");
    for bad in ["age 3d", "advisory typo", "age <3d; version ^1"] {
        let e = crate::pin::add_stanza("preferences", text, "*", bad, PinPriority::Never, None)
            .unwrap_err();
        assert!(e.to_string().starts_with("preferences:"), "{bad}: {e}");
    }
    crate::pin::add_stanza(
        "preferences",
        text,
        "openssl",
        "advisory RUSTSEC-2023-0071; registry crates-io",
        PinPriority::Never,
        None,
    )
    .unwrap();
}
