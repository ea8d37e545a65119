//! The layering cases of issue 3's table that need no pin file (1, 2, 3, 4, 10), plus rule 8's
//! checksum memory. The pinned cases live with the pin file's tests.

use super::*;
use crate::index::IndexFile;

const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn file(name: &str, versions: &[(&str, &str, bool)]) -> IndexFile {
    let body: String = versions
        .iter()
        .map(|(v, ck, yanked)| {
            format!(r#"{{"name":"{name}","vers":"{v}","deps":[],"cksum":"{ck}","features":{{}},"yanked":{yanked}}}"#) + "\n"
        })
        .collect();
    let f = IndexFile::parse(body.as_bytes());
    assert!(f.skipped.is_empty());
    f
}

fn up(name: &str, priority: i32) -> UpstreamRef {
    UpstreamRef {
        name: name.into(),
        host: format!("{name}.example"),
        priority,
    }
}

fn corp_and_public() -> Vec<UpstreamRef> {
    vec![up("corp", 600), up("crates-io", 500)]
}

/// (upstream index, version, yanked) of every served version.
fn served(m: &Merged, answers: &[Answer<'_>]) -> Vec<(usize, String, bool)> {
    m.selected
        .iter()
        .map(|s| {
            let Answer::Has(f) = answers[s.upstream] else {
                panic!()
            };
            let l = &f.lines[s.line];
            (s.upstream, l.vers.to_string(), l.yanked || s.force_yanked)
        })
        .collect()
}

fn name(n: &str) -> CrateName {
    CrateName::new(n).unwrap()
}

/// [`merge`] of `krate` with no dates and no advisories.
fn run(
    krate: &str,
    ups: &[UpstreamRef],
    answers: &[Answer<'_>],
    pins: &dyn PinRules,
    remembered: &BTreeMap<Version, String>,
) -> Result<Merged, MergeError> {
    merge(&name(krate), ups, answers, pins, remembered, &Facts::at(0))
}

#[test]
fn case1_each_crate_from_the_upstream_that_has_it() {
    let ups = corp_and_public();
    let acme = file("acme-core", &[("0.1.0", A, false), ("0.2.0", A, false)]);
    let answers = [Answer::Has(&acme), Answer::Absent];
    let m = run("acme-core", &ups, &answers, &NoPins, &BTreeMap::new()).unwrap();
    assert_eq!(
        served(&m, &answers),
        vec![(0, "0.1.0".into(), false), (0, "0.2.0".into(), false)]
    );
    assert_eq!(m.owners, vec![0]);

    let serde = file("serde", &[("1.0.200", A, false), ("1.0.210", B, false)]);
    let answers = [Answer::Absent, Answer::Has(&serde)];
    let m = run("serde", &ups, &answers, &NoPins, &BTreeMap::new()).unwrap();
    assert_eq!(
        served(&m, &answers),
        vec![(1, "1.0.200".into(), false), (1, "1.0.210".into(), false)]
    );
}

#[test]
fn case2_private_name_is_owned_by_the_private_registry() {
    let ups = corp_and_public();
    let corp = file("acme-core", &[("0.2.0", A, false)]);
    let public = file("acme-core", &[("0.2.0", B, false), ("99.0.0", B, false)]);
    let answers = [Answer::Has(&corp), Answer::Has(&public)];
    let m = run("acme-core", &ups, &answers, &NoPins, &BTreeMap::new()).unwrap();
    assert_eq!(served(&m, &answers), vec![(0, "0.2.0".into(), false)]);
    let body = String::from_utf8(m.render(&answers, &|_| false).to_vec()).unwrap();
    assert!(body.contains(A) && !body.contains(B), "{body}");
    let shadowed: Vec<_> = m
        .decisions
        .iter()
        .filter(|d| d.state == State::Shadowed)
        .map(|d| d.version.to_string())
        .collect();
    assert_eq!(shadowed, vec!["0.2.0", "99.0.0"]);
}

#[test]
fn case3_fail_closed_when_the_owner_errors() {
    let ups = corp_and_public();
    let public = file("acme-core", &[("0.2.0", B, false), ("99.0.0", B, false)]);
    let answers = [Answer::Error, Answer::Has(&public)];
    let err = run("acme-core", &ups, &answers, &NoPins, &BTreeMap::new()).unwrap_err();
    assert_eq!(
        err,
        MergeError::Unavailable {
            upstreams: vec!["corp".into()]
        }
    );
    // With the last good answer cached, that is what is served.
    let corp = file("acme-core", &[("0.2.0", A, false)]);
    let answers = [Answer::Has(&corp), Answer::Has(&public)];
    let m = run("acme-core", &ups, &answers, &NoPins, &BTreeMap::new()).unwrap();
    assert_eq!(served(&m, &answers), vec![(0, "0.2.0".into(), false)]);
}

#[test]
fn an_error_from_a_lower_upstream_fails_closed_when_nobody_else_has_the_crate() {
    let ups = corp_and_public();
    let answers = [Answer::Absent, Answer::Error];
    assert!(run("serde", &ups, &answers, &NoPins, &BTreeMap::new()).is_err());
}

#[test]
fn an_error_from_a_lower_upstream_does_not_hide_the_owner() {
    let ups = corp_and_public();
    let corp = file("acme-core", &[("0.2.0", A, false)]);
    let answers = [Answer::Has(&corp), Answer::Error];
    let m = run("acme-core", &ups, &answers, &NoPins, &BTreeMap::new()).unwrap();
    assert_eq!(served(&m, &answers), vec![(0, "0.2.0".into(), false)]);
}

#[test]
fn absent_everywhere_serves_nothing() {
    let ups = corp_and_public();
    let answers = [Answer::Absent, Answer::Absent];
    let m = run("nope", &ups, &answers, &NoPins, &BTreeMap::new()).unwrap();
    assert!(m.selected.is_empty());
}

#[test]
fn case4_owner_shadows_other_versions() {
    let ups = corp_and_public();
    let corp = file("serde", &[("1.0.100", A, false)]);
    let public = file(
        "serde",
        &[
            ("1.0.100", B, false),
            ("1.0.150", B, false),
            ("1.0.210", B, false),
        ],
    );
    let answers = [Answer::Has(&corp), Answer::Has(&public)];
    let m = run("serde", &ups, &answers, &NoPins, &BTreeMap::new()).unwrap();
    assert_eq!(served(&m, &answers), vec![(0, "1.0.100".into(), false)]);
}

#[test]
fn case10_ties_merge_and_first_declared_wins_a_conflict() {
    let ups = vec![up("corp", 600), up("mirror", 600)];
    let corp = file("left-pad", &[("1.0.0", A, false)]);
    let mirror = file("left-pad", &[("1.0.0", B, false), ("1.1.0", B, true)]);
    let answers = [Answer::Has(&corp), Answer::Has(&mirror)];
    let m = run("left-pad", &ups, &answers, &NoPins, &BTreeMap::new()).unwrap();
    assert_eq!(
        served(&m, &answers),
        vec![(0, "1.0.0".into(), false), (1, "1.1.0".into(), true)]
    );
    assert_eq!(
        m.conflicts,
        vec![Conflict {
            version: "1.0.0".parse().unwrap(),
            winner: 0,
            loser: 1
        }]
    );
    assert_eq!(m.owners, vec![0, 1]);
}

#[test]
fn rule8_a_remembered_checksum_is_never_replaced() {
    let ups = vec![up("corp", 600), up("mirror", 600)];
    let corp = file("left-pad", &[("1.0.0", A, false)]);
    let mirror = file("left-pad", &[("1.0.0", B, false)]);
    let answers = [Answer::Has(&corp), Answer::Has(&mirror)];
    let remembered = BTreeMap::from([("1.0.0".parse().unwrap(), B.to_owned())]);
    let m = run("left-pad", &ups, &answers, &NoPins, &remembered).unwrap();
    assert_eq!(served(&m, &answers), vec![(1, "1.0.0".into(), false)]);

    // Only a different checksum is left: the version is hidden, not changed.
    let answers = [Answer::Has(&corp), Answer::Absent];
    let m = run("left-pad", &ups, &answers, &NoPins, &remembered).unwrap();
    assert!(m.selected.is_empty());
    assert!(matches!(
        m.decisions[0].state,
        State::ChecksumChanged { .. }
    ));
    assert_eq!(m.checksums(&answers), BTreeMap::new());
}

#[test]
fn single_upstream_view_applies_never_and_negative_pins_only() {
    let corp = up("corp", 600);
    let f = file(
        "openssl",
        &[
            ("0.10.55", A, false),
            ("0.10.66", A, false),
            ("0.10.70", A, true),
        ],
    );
    let pins = crate::pin::Preferences::parse_files([(
        "preferences",
        "Package: openssl\nPin: version =0.10.55\nPin-Priority: -1\n\nPackage: openssl\nPin: version =0.10.66\nPin-Priority: never\n",
    )])
    .unwrap();
    assert_eq!(
        single(&name("openssl"), &corp, &f, &pins, &Facts::at(0)),
        vec![(0, true), (2, false)]
    );
    assert_eq!(
        single(&name("openssl"), &corp, &f, &NoPins, &Facts::at(0)),
        vec![(0, false), (1, false), (2, false)]
    );
    let never = crate::pin::Preferences::parse_files([(
        "preferences",
        "Package: openssl\nPin: registry corp\nPin-Priority: never\n",
    )])
    .unwrap();
    assert!(single(&name("openssl"), &corp, &f, &never, &Facts::at(0)).is_empty());
    // A low priority that is not negative changes nothing in a single upstream's view.
    let low = crate::pin::Preferences::parse_files([(
        "preferences",
        "Package: openssl\nPin: registry corp\nPin-Priority: 1\n",
    )])
    .unwrap();
    assert_eq!(
        single(&name("openssl"), &corp, &f, &low, &Facts::at(0)).len(),
        3
    );
}

#[test]
fn an_unchanged_single_upstream_file_is_served_without_a_copy() {
    let ups = corp_and_public();
    let serde = file("serde", &[("1.0.200", A, false), ("1.0.210", B, false)]);
    let answers = [Answer::Absent, Answer::Has(&serde)];
    let m = run("serde", &ups, &answers, &NoPins, &BTreeMap::new()).unwrap();
    let body = m.render(&answers, &|_| false);
    assert_eq!(body, serde.body);
    assert_eq!(
        body.as_ptr(),
        serde.body.as_ptr(),
        "the upstream's own bytes, not a copy"
    );
    // A rewrite (a pin's yank) makes a new body.
    let pins = crate::pin::Preferences::parse_files([(
        "preferences",
        "Package: serde\nPin: version =1.0.210\nPin-Priority: -1\n",
    )])
    .unwrap();
    let m = run("serde", &ups, &answers, &pins, &BTreeMap::new()).unwrap();
    let body = m.render(&answers, &|_| false);
    assert_ne!(body.as_ptr(), serde.body.as_ptr());
    assert!(
        String::from_utf8(body.to_vec())
            .unwrap()
            .contains("\"yanked\":true")
    );
}
