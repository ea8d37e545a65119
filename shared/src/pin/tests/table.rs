//! Issue 3's layering table, run through the real `policy::merge` with real parsed pin files.
//! Upstreams: `corp` 600 declared first, `crates-io` 500 (or `mirror` 600 declared second).

use std::collections::BTreeMap;

use crate::index::IndexFile;
use crate::pin::Preferences;
use crate::policy::{
    Answer, Conflict, Facts, MergeError, Merged, NoPins, PinRules, StanzaRef, State, UpstreamRef,
    merge,
};

use super::{DESIGN_EXAMPLE, name};

const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn file(krate: &str, versions: &[(&str, &str, bool)]) -> IndexFile {
    let body: String = versions
        .iter()
        .map(|(v, ck, yanked)| {
            format!(r#"{{"name":"{krate}","vers":"{v}","deps":[],"cksum":"{ck}","features":{{}},"yanked":{yanked}}}"#) + "\n"
        })
        .collect();
    let f = IndexFile::parse(body.as_bytes());
    assert!(f.skipped.is_empty());
    f
}

fn up(name: &str, host: &str, priority: i32) -> UpstreamRef {
    UpstreamRef {
        name: name.into(),
        host: host.into(),
        priority,
    }
}

fn corp_and_public() -> Vec<UpstreamRef> {
    vec![
        up("corp", "cargo.acme.example", 600),
        up("crates-io", "index.public.example", 500),
    ]
}

fn corp_and_mirror() -> Vec<UpstreamRef> {
    vec![
        up("corp", "cargo.acme.example", 600),
        up("mirror", "mirror.acme.example", 600),
    ]
}

/// A real parsed `preferences` file.
fn pins(text: &str) -> Preferences {
    match Preferences::parse_files([("preferences", text)]) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// "No pins", as a real (comment-only) pin file.
fn no_pins() -> Preferences {
    let p = pins("# no pins yet\n");
    assert!(p.is_empty());
    p
}

/// (upstream name, version, checksum, yanked) of every served version, in order.
fn served(
    m: &Merged,
    ups: &[UpstreamRef],
    answers: &[Answer<'_>],
) -> Vec<(String, String, String, bool)> {
    m.selected
        .iter()
        .map(|s| {
            let Answer::Has(f) = answers[s.upstream] else {
                panic!("served from an upstream without an answer")
            };
            let l = &f.lines[s.line];
            (
                ups[s.upstream].name.clone(),
                l.vers.to_string(),
                l.cksum.clone(),
                l.yanked || s.force_yanked,
            )
        })
        .collect()
}

fn row(up: &str, v: &str, ck: &str, yanked: bool) -> (String, String, String, bool) {
    (up.into(), v.into(), ck.into(), yanked)
}

fn run(
    krate: &str,
    ups: &[UpstreamRef],
    answers: &[Answer<'_>],
    pins: &dyn PinRules,
) -> Result<Merged, MergeError> {
    merge(
        &name(krate),
        ups,
        answers,
        pins,
        &BTreeMap::new(),
        &Facts::at(0),
    )
}

#[test]
fn case1_each_crate_from_the_upstream_that_has_it() {
    let ups = corp_and_public();
    let acme = file("acme-core", &[("0.1.0", A, false), ("0.2.0", A, false)]);
    let answers = [Answer::Has(&acme), Answer::Absent];
    let m = run("acme-core", &ups, &answers, &no_pins()).unwrap();
    assert_eq!(
        served(&m, &ups, &answers),
        vec![
            row("corp", "0.1.0", A, false),
            row("corp", "0.2.0", A, false)
        ]
    );
    let serde = file("serde", &[("1.0.200", B, false), ("1.0.210", B, false)]);
    let answers = [Answer::Absent, Answer::Has(&serde)];
    let m = run("serde", &ups, &answers, &no_pins()).unwrap();
    assert_eq!(
        served(&m, &ups, &answers),
        vec![
            row("crates-io", "1.0.200", B, false),
            row("crates-io", "1.0.210", B, false)
        ]
    );
}

#[test]
fn case2_a_private_name_is_owned_by_the_private_registry() {
    let ups = corp_and_public();
    let corp = file("acme-core", &[("0.2.0", A, false)]);
    let public = file("acme-core", &[("0.2.0", B, false), ("99.0.0", B, false)]);
    let answers = [Answer::Has(&corp), Answer::Has(&public)];
    let m = run("acme-core", &ups, &answers, &no_pins()).unwrap();
    assert_eq!(
        served(&m, &ups, &answers),
        vec![row("corp", "0.2.0", A, false)]
    );
    assert_eq!(m.owners, vec![0]);
    let body = String::from_utf8(m.render(&answers, &|_| false).to_vec()).unwrap();
    assert!(body.contains(A) && !body.contains(B) && !body.contains("99.0.0"));
}

#[test]
fn case3_fail_closed_when_the_owner_answers_503() {
    let ups = corp_and_public();
    let public = file("acme-core", &[("0.2.0", B, false), ("99.0.0", B, false)]);
    // Nothing cached for corp: an error (the daemon answers 503), never 99.0.0, never 404.
    let answers = [Answer::Error, Answer::Has(&public)];
    assert_eq!(
        run("acme-core", &ups, &answers, &no_pins()).unwrap_err(),
        MergeError::Unavailable {
            upstreams: vec!["corp".into()]
        }
    );
    // corp's last good answer is cached: that is what is served.
    let cached = file("acme-core", &[("0.2.0", A, false)]);
    let answers = [Answer::Has(&cached), Answer::Has(&public)];
    let m = run("acme-core", &ups, &answers, &no_pins()).unwrap();
    assert_eq!(
        served(&m, &ups, &answers),
        vec![row("corp", "0.2.0", A, false)]
    );
    // A public crate: corp's cached "absent" keeps it resolving while corp is down; without that
    // cache it fails closed too.
    let serde = file("serde", &[("1.0.210", B, false)]);
    let answers = [Answer::Absent, Answer::Has(&serde)];
    let m = run("serde", &ups, &answers, &no_pins()).unwrap();
    assert_eq!(
        served(&m, &ups, &answers),
        vec![row("crates-io", "1.0.210", B, false)]
    );
    let answers = [Answer::Error, Answer::Has(&serde)];
    assert!(run("serde", &ups, &answers, &no_pins()).is_err());
}

fn case4_answers() -> (IndexFile, IndexFile) {
    (
        file("serde", &[("1.0.100", A, false)]),
        file(
            "serde",
            &[
                ("1.0.100", B, false),
                ("1.0.150", B, false),
                ("1.0.210", B, false),
            ],
        ),
    )
}

#[test]
fn case4_the_owner_shadows_other_versions() {
    let ups = corp_and_public();
    let (corp, public) = case4_answers();
    let answers = [Answer::Has(&corp), Answer::Has(&public)];
    let m = run("serde", &ups, &answers, &no_pins()).unwrap();
    assert_eq!(
        served(&m, &ups, &answers),
        vec![row("corp", "1.0.100", A, false)]
    );
}

#[test]
fn case5_a_registry_pin_makes_a_tie_that_merges() {
    let ups = corp_and_public();
    let (corp, public) = case4_answers();
    let answers = [Answer::Has(&corp), Answer::Has(&public)];
    let p = pins("Package: serde\nPin: registry crates-io\nPin-Priority: 600\n");
    let m = run("serde", &ups, &answers, &p).unwrap();
    assert_eq!(
        served(&m, &ups, &answers),
        vec![
            row("corp", "1.0.100", A, false),
            row("crates-io", "1.0.150", B, false),
            row("crates-io", "1.0.210", B, false),
        ]
    );
    assert_eq!(m.owners, vec![0, 1]);
    assert_eq!(m.claims, vec![Some(600), Some(600)]);
    assert_eq!(
        m.conflicts,
        vec![Conflict {
            version: "1.0.100".parse().unwrap(),
            winner: 0,
            loser: 1
        }]
    );
}

#[test]
fn case6_a_versioned_pin_lets_only_those_versions_through() {
    let ups = corp_and_public();
    let (corp, public) = case4_answers();
    let answers = [Answer::Has(&corp), Answer::Has(&public)];
    let p = pins(
        "# newer serde from the public registry\n\
         Package: serde\nPin: registry crates-io; version >=1.0.200\nPin-Priority: 600\n",
    );
    let m = run("serde", &ups, &answers, &p).unwrap();
    assert_eq!(
        served(&m, &ups, &answers),
        vec![
            row("corp", "1.0.100", A, false),
            row("crates-io", "1.0.210", B, false),
        ]
    );
    // A versioned stanza does not raise the claim: corp alone owns serde.
    assert_eq!(m.claims, vec![Some(600), Some(500)]);
    let d = |v: &str| {
        m.decisions
            .iter()
            .find(|d| d.upstream == 1 && d.version.to_string() == v)
            .unwrap()
    };
    assert_eq!(d("1.0.150").state, State::Shadowed);
    assert_eq!(
        d("1.0.210").stanza,
        Some(StanzaRef {
            file: "preferences".into(),
            line: 2
        })
    );
}

#[test]
fn case7_a_hold_lists_only_the_held_versions() {
    let ups = corp_and_public();
    let tokio = file(
        "tokio",
        &[
            ("1.37.0", B, false),
            ("1.38.0", B, false),
            ("1.38.1", B, false),
            ("1.39.0", B, false),
        ],
    );
    let answers = [Answer::Absent, Answer::Has(&tokio)];
    let p = pins("Package: tokio\nPin: version >=1.38.0, <1.39.0\nPin-Priority: 1001\n");
    let m = run("tokio", &ups, &answers, &p).unwrap();
    assert_eq!(
        served(&m, &ups, &answers),
        vec![
            row("crates-io", "1.38.0", B, false),
            row("crates-io", "1.38.1", B, false),
        ]
    );
    let not_held: Vec<String> = m
        .decisions
        .iter()
        .filter(|d| d.state == State::NotHeld)
        .map(|d| d.version.to_string())
        .collect();
    assert_eq!(not_held, vec!["1.37.0", "1.39.0"]);
}

#[test]
fn case8_a_negative_pin_yanks() {
    let ups = corp_and_public();
    let openssl = file("openssl", &[("0.10.55", B, false), ("0.10.66", B, false)]);
    let answers = [Answer::Absent, Answer::Has(&openssl)];
    let p = pins("Package: openssl\nPin: version =0.10.55\nPin-Priority: -1\n");
    let m = run("openssl", &ups, &answers, &p).unwrap();
    assert_eq!(
        served(&m, &ups, &answers),
        vec![
            row("crates-io", "0.10.55", B, true),
            row("crates-io", "0.10.66", B, false),
        ]
    );
    assert_eq!(m.decisions[0].state, State::YankedByPin);
    let body = String::from_utf8(m.render(&answers, &|_| false).to_vec()).unwrap();
    let lines: Vec<&str> = body.lines().collect();
    assert!(lines[0].contains("\"yanked\":true") && lines[1].contains("\"yanked\":false"));
}

#[test]
fn case9_never_removes_the_public_registry_for_private_names() {
    let ups = corp_and_public();
    let public = file("acme-old", &[("1.0.0", B, false)]);
    let answers = [Answer::Absent, Answer::Has(&public)];
    let p = pins("Package: acme-*\nPin: registry crates-io\nPin-Priority: never\n");
    let m = run("acme-old", &ups, &answers, &p).unwrap();
    assert!(served(&m, &ups, &answers).is_empty());
    assert_eq!(m.claims, vec![Some(600), None]);
    assert!(m.owners.is_empty());
    // Also under the other spelling, and it stays closed when corp fails.
    let m = run("ACME_old", &ups, &answers, &p).unwrap();
    assert!(m.selected.is_empty());
    let answers = [Answer::Error, Answer::Has(&public)];
    assert!(run("acme-old", &ups, &answers, &p).is_err());
}

#[test]
fn case10_ties_merge_and_the_first_declared_wins_a_conflict() {
    let ups = corp_and_mirror();
    let corp = file("left-pad", &[("1.0.0", A, false)]);
    let mirror = file("left-pad", &[("1.0.0", B, false), ("1.1.0", B, true)]);
    let answers = [Answer::Has(&corp), Answer::Has(&mirror)];
    let m = run("left-pad", &ups, &answers, &no_pins()).unwrap();
    assert_eq!(
        served(&m, &ups, &answers),
        vec![
            row("corp", "1.0.0", A, false),
            row("mirror", "1.1.0", B, true)
        ]
    );
    assert_eq!(
        m.conflicts,
        vec![Conflict {
            version: "1.0.0".parse().unwrap(),
            winner: 0,
            loser: 1
        }]
    );
}

#[test]
fn no_pins_file_and_no_pins_agree() {
    let ups = corp_and_public();
    let (corp, public) = case4_answers();
    let answers = [Answer::Has(&corp), Answer::Has(&public)];
    assert_eq!(
        run("serde", &ups, &answers, &no_pins()),
        run("serde", &ups, &answers, &NoPins)
    );
}

#[test]
fn the_design_example_file_gives_cases_6_8_and_9_at_once() {
    let ups = corp_and_public();
    let p = pins(DESIGN_EXAMPLE);
    let (corp, public) = case4_answers();
    let answers = [Answer::Has(&corp), Answer::Has(&public)];
    let m = run("serde", &ups, &answers, &p).unwrap();
    assert_eq!(
        served(&m, &ups, &answers),
        vec![
            row("corp", "1.0.100", A, false),
            row("crates-io", "1.0.210", B, false)
        ]
    );
    let openssl = file("openssl", &[("0.10.55", B, false), ("0.10.66", B, false)]);
    let answers = [Answer::Absent, Answer::Has(&openssl)];
    let m = run("openssl", &ups, &answers, &p).unwrap();
    assert_eq!(
        served(&m, &ups, &answers),
        vec![
            row("crates-io", "0.10.55", B, true),
            row("crates-io", "0.10.66", B, false)
        ]
    );
    let acme = file("acme_old", &[("1.0.0", B, false)]);
    let answers = [Answer::Absent, Answer::Has(&acme)];
    assert!(
        run("acme_old", &ups, &answers, &p)
            .unwrap()
            .selected
            .is_empty()
    );
    // And a private crate that corp has keeps coming from corp.
    let corp = file("acme-core", &[("0.2.0", A, false)]);
    let public = file("acme-core", &[("0.2.0", B, false), ("99.0.0", B, false)]);
    let answers = [Answer::Has(&corp), Answer::Has(&public)];
    let m = run("acme-core", &ups, &answers, &p).unwrap();
    assert_eq!(
        served(&m, &ups, &answers),
        vec![row("corp", "0.2.0", A, false)]
    );
    assert_eq!(
        m.decisions
            .iter()
            .filter(|d| d.state == State::Blocked)
            .count(),
        2,
        "crates-io's copies are listed as blocked by the `never` stanza, for `privreg policy`"
    );
}

#[test]
fn a_star_stanza_loses_to_a_named_one_in_the_merge() {
    let ups = corp_and_public();
    let (corp, public) = case4_answers();
    let answers = [Answer::Has(&corp), Answer::Has(&public)];
    let star = "Package: *\nPin: registry crates-io\nPin-Priority: 700\n";
    // The `*` stanza alone hands serde to crates-io.
    let m = run("serde", &ups, &answers, &pins(star)).unwrap();
    assert_eq!(
        served(&m, &ups, &answers),
        vec![
            row("crates-io", "1.0.100", B, false),
            row("crates-io", "1.0.150", B, false),
            row("crates-io", "1.0.210", B, false),
        ]
    );
    // A named stanza after it wins anyway.
    let both = format!("{star}\nPackage: serde\nPin: registry crates-io\nPin-Priority: 400\n");
    let m = run("serde", &ups, &answers, &pins(&both)).unwrap();
    assert_eq!(
        served(&m, &ups, &answers),
        vec![row("corp", "1.0.100", A, false)]
    );
    assert_eq!(m.claims, vec![Some(600), Some(400)]);
}

#[test]
fn origin_pins_select_by_host() {
    let ups = corp_and_public();
    let (corp, public) = case4_answers();
    let answers = [Answer::Has(&corp), Answer::Has(&public)];
    let p = pins("Package: serde\nPin: origin *.public.example\nPin-Priority: 601\n");
    let m = run("serde", &ups, &answers, &p).unwrap();
    assert_eq!(m.owners, vec![1]);
    assert_eq!(m.selected.len(), 3);
    assert_eq!(
        m.decisions
            .iter()
            .find(|d| d.upstream == 0)
            .map(|d| (&d.state, d.priority)),
        Some((&State::Shadowed, 600))
    );
}
