//! The pin file: grammar and its errors, matching, evaluation order, loading, and byte-preserving
//! edits. The layering table (issue 3) run through the real `policy::merge` is in `tests/table.rs`.

use std::path::{Path, PathBuf};

use semver::Version;

use super::parse::fold_glob;
use super::*;
use crate::name::CrateName;
use crate::policy::{PinMatch, PinRules, UpstreamRef, VersionFacts};

mod edit;
mod supply;
mod table;

const F: &str = "preferences.d/10-test.pref";

/// The example from DESIGN.md, "Pin file: format".
const DESIGN_EXAMPLE: &str = "\
# keep our names ours
Explanation: acme crates only ever come from the company registry
Package: acme-* acme_*
Pin: registry crates-io
Pin-Priority: never

Package: serde
Pin: registry crates-io; version >=1.0.200
Pin-Priority: 600

Package: openssl
Pin: version =0.10.55
Pin-Priority: -1
";

fn parse(text: &str) -> PinFile {
    match PinFile::parse(F, text) {
        Ok(f) => f,
        Err(e) => panic!("{e}"),
    }
}

/// Parses `text` as `F`, expects an error on `line`, and returns its kind.
fn err_at(text: &str, line: usize) -> PinErrorKind {
    let e = PinFile::parse(F, text).expect_err("the text should not parse");
    assert_eq!(e.file, F, "{e}");
    assert_eq!(e.line, Some(line), "{e}");
    assert!(e.to_string().starts_with(&format!("{F}:{line}: ")), "{e}");
    e.kind
}

fn name(n: &str) -> CrateName {
    CrateName::new(n).unwrap()
}

fn up(name: &str, host: &str, priority: i32) -> UpstreamRef {
    UpstreamRef {
        name: name.into(),
        host: host.into(),
        priority,
    }
}

fn v(s: &str) -> Version {
    s.parse().unwrap()
}

fn at(file: &str, line: usize, priority: PinPriority) -> PinMatch {
    PinMatch {
        priority,
        stanza: StanzaRef {
            file: file.into(),
            line,
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Grammar

#[test]
fn the_design_example_parses() {
    let f = parse(DESIGN_EXAMPLE);
    assert_eq!(f.stanzas.len(), 3);
    let s = &f.stanzas[0];
    assert_eq!(s.line, 2, "position is the first non-comment line");
    assert_eq!(s.lines, 1..6, "the comment above belongs to the stanza");
    assert_eq!(
        s.explanations,
        vec!["acme crates only ever come from the company registry"]
    );
    assert_eq!(s.package_text, "acme-* acme_*");
    assert_eq!(s.priority, PinPriority::Never);
    assert_eq!(s.tier(), Tier::Named);
    assert_eq!(
        s.selectors.registry.as_ref().map(NameGlob::as_str),
        Some("crates-io")
    );
    let s = &f.stanzas[1];
    assert_eq!((s.line, s.lines.clone()), (7, 7..10));
    assert_eq!(s.tier(), Tier::NamedWithVersion);
    assert_eq!(s.priority, PinPriority::Value(600));
    assert_eq!(
        s.selectors
            .version
            .as_ref()
            .map(std::string::ToString::to_string),
        Some(">=1.0.200".into())
    );
    let s = &f.stanzas[2];
    assert_eq!((s.line, s.priority), (11, PinPriority::Value(-1)));
    assert_eq!(
        s.to_string(),
        "Package: openssl | Pin: version =0.10.55 | Pin-Priority: -1"
    );
}

#[test]
fn field_names_are_case_insensitive_and_layout_is_forgiving() {
    let text = "\u{feff}# header\r\n\r\n  # indented comment\r\nPIN-PRIORITY: 900\r\npackage:   serde\r\n\
                # a comment inside\r\nexplanation: one\r\nExplanation: two,\r\n  continued\r\n\
                pin: REGISTRY corp ;  Version  ^1\r\n   \r\n\
                Package: a\n  b\nPin: origin *.example\nPin-Priority: +7\n";
    let f = parse(text);
    assert_eq!(f.stanzas.len(), 2);
    let s = &f.stanzas[0];
    assert_eq!((s.line, s.lines.clone()), (4, 3..11));
    assert_eq!(s.explanations, vec!["one", "two, continued"]);
    assert_eq!(s.package_text, "serde");
    assert_eq!(s.pin_text, "REGISTRY corp ;  Version  ^1");
    assert_eq!(s.priority, PinPriority::Value(900));
    assert_eq!(s.tier(), Tier::NamedWithVersion);
    let s = &f.stanzas[1];
    assert_eq!(s.package_text, "a b");
    let Packages::Named(p) = &s.packages else {
        panic!("named")
    };
    assert_eq!(
        p.iter().map(PackagePattern::as_str).collect::<Vec<_>>(),
        vec!["a", "b"]
    );
    assert_eq!(s.priority, PinPriority::Value(7));
    assert_eq!(s.tier(), Tier::Named);
}

#[test]
fn comments_only_and_empty_files_have_no_stanzas() {
    assert!(parse("").stanzas.is_empty());
    assert!(parse("\n\n  \n").stanzas.is_empty());
    assert!(parse("# one\n# two\n\n# three").stanzas.is_empty());
}

#[test]
fn missing_fields_are_reported_at_the_first_field_line() {
    let stanza = "# note\nPackage: serde\nPin: registry corp\nPin-Priority: 1\n";
    parse(stanza);
    let without = |field: &str| {
        stanza
            .lines()
            .filter(|l| !l.starts_with(&format!("{field}:")))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let prefix = format!("{stanza}\n");
    let e = err_at(&(prefix.clone() + &without("Package")), 7);
    assert_eq!(e, PinErrorKind::MissingField("Package"));
    assert_eq!(
        err_at(&(prefix.clone() + &without("Pin")), 7),
        PinErrorKind::MissingField("Pin")
    );
    assert_eq!(
        err_at(&(prefix + &without("Pin-Priority")), 7),
        PinErrorKind::MissingField("Pin-Priority")
    );
    let e = PinFile::parse(F, "Package: x\nPin: registry a\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "preferences.d/10-test.pref:1: stanza has no `Pin-Priority:` field"
    );
}

#[test]
fn priorities() {
    let with = |p: &str| format!("Package: x\nPin: registry a\nPin-Priority: {p}\n");
    assert_eq!(err_at(&with("0"), 3), PinErrorKind::ZeroPriority);
    assert_eq!(err_at(&with("-0"), 3), PinErrorKind::ZeroPriority);
    assert_eq!(
        err_at(&with("high"), 3),
        PinErrorKind::BadPriority("high".into())
    );
    assert_eq!(
        err_at(&with("1.5"), 3),
        PinErrorKind::BadPriority("1.5".into())
    );
    assert_eq!(
        err_at(&with("4294967296"), 3),
        PinErrorKind::BadPriority("4294967296".into())
    );
    assert_eq!(
        err_at(&with(""), 3),
        PinErrorKind::EmptyField("Pin-Priority")
    );
    let e = PinFile::parse(F, with("0")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "preferences.d/10-test.pref:3: priority 0 is not allowed; use a non-zero integer or `never`"
    );
    assert_eq!(
        parse(&with("NEVER")).stanzas[0].priority,
        PinPriority::Never
    );
    assert_eq!(
        parse(&with("-2147483648")).stanzas[0].priority,
        PinPriority::Value(i32::MIN)
    );
}

#[test]
fn field_errors() {
    let ok = "Package: x\nPin: registry a\nPin-Priority: 1\n\n";
    assert_eq!(
        err_at(&format!("{ok}Package: y\nPriority: 5\n"), 6),
        PinErrorKind::UnknownField("Priority".into())
    );
    assert_eq!(
        err_at(&format!("{ok}Package: y\nPin: registry b\npackage: z\n"), 7),
        PinErrorKind::RepeatedField {
            field: "Package",
            first: 5
        }
    );
    assert_eq!(
        err_at(&format!("{ok}Pin-Priority: 1\nPin-priority: 2\n"), 6),
        PinErrorKind::RepeatedField {
            field: "Pin-Priority",
            first: 5
        }
    );
    assert_eq!(
        err_at(&format!("{ok}Package y\n"), 5),
        PinErrorKind::ExpectedField("Package y".into())
    );
    assert_eq!(
        err_at(&format!("{ok}Pin Priority: 3\n"), 5),
        PinErrorKind::ExpectedField("Pin Priority: 3".into())
    );
    assert_eq!(
        err_at(&format!("{ok}# c\n  continued\n"), 6),
        PinErrorKind::StrayContinuation
    );
    assert_eq!(
        err_at("Package:\nPin: registry a\nPin-Priority: 1\n", 1),
        PinErrorKind::EmptyField("Package")
    );
    assert_eq!(
        err_at("Package: a\nPin:  \nPin-Priority: 1\n", 2),
        PinErrorKind::EmptyField("Pin")
    );
    let e = PinFile::parse(F, "Package: x\nWhatever: 1\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "preferences.d/10-test.pref:2: unknown field `Whatever`; expected `Explanation`, \
         `Package`, `Pin` or `Pin-Priority`"
    );
}

#[test]
fn package_errors() {
    let with = |p: &str| format!("# c\nPin-Priority: 1\nPin: registry a\nPackage: {p}\n");
    assert!(matches!(
        err_at(&with("acme-["), 4),
        PinErrorKind::BadGlob { pattern, .. } if pattern == "acme-["
    ));
    assert!(matches!(
        err_at(&with("ok /acme(/"), 4),
        PinErrorKind::BadRegex { pattern, reason } if pattern == "/acme(/" && reason == "unclosed group"
    ));
    assert!(matches!(
        err_at(&with("/acme"), 4),
        PinErrorKind::BadRegex { reason, .. } if reason.contains("closing")
    ));
    assert!(matches!(
        err_at(&with("foo.bar"), 4),
        PinErrorKind::BadPackage { pattern, .. } if pattern == "foo.bar"
    ));
    assert_eq!(err_at(&with("* serde"), 4), PinErrorKind::StarWithOthers);
    let e = PinFile::parse(F, with("ok /acme(/"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "preferences.d/10-test.pref:4: bad regex `/acme(/`: unclosed group"
    );
    assert!(!e.contains('\n'));
}

#[test]
fn selector_errors() {
    let with = |p: &str| {
        format!(
            "Package: serde\nPin: registry a\nPin-Priority: 1\n\n# c\nPackage: x\nPin: {p}\nPin-Priority: 1\n"
        )
    };
    let e = |p: &str| err_at(&with(p), 7);
    assert_eq!(
        e("release a=stable"),
        PinErrorKind::UnknownSelector("release".into())
    );
    assert_eq!(
        e("registry a; Registry b"),
        PinErrorKind::RepeatedSelector("registry")
    );
    assert_eq!(
        e("version ^1; origin a; version ^2"),
        PinErrorKind::RepeatedSelector("version")
    );
    assert_eq!(
        e("registry"),
        PinErrorKind::MissingSelectorValue("registry")
    );
    assert_eq!(e("origin  ;"), PinErrorKind::MissingSelectorValue("origin"));
    assert_eq!(e("registry a;"), PinErrorKind::EmptySelector);
    assert_eq!(e("registry a;; version 1"), PinErrorKind::EmptySelector);
    assert!(matches!(
        e("version >=one"),
        PinErrorKind::BadVersionReq { req, .. } if req == ">=one"
    ));
    assert!(matches!(
        e("version 1.0.0 2.0.0"),
        PinErrorKind::BadVersionReq { .. }
    ));
    assert!(matches!(
        e("origin [oops"),
        PinErrorKind::BadGlob { pattern, .. } if pattern == "[oops"
    ));
    assert!(matches!(
        e("registry crates io"),
        PinErrorKind::BadGlob { pattern, .. } if pattern == "crates io"
    ));
    // The error is on the `Pin:` line even when `Package: *` comes after it.
    let text = "Pin-Priority: 5\nPin: version ^1\nPackage: *\n";
    assert_eq!(err_at(text, 2), PinErrorKind::VersionWithStar);
    let text = "Package: *\nPin: origin x; version =1.0.0\nPin-Priority: 5\n";
    assert_eq!(
        PinFile::parse(F, text).unwrap_err().to_string(),
        "preferences.d/10-test.pref:2: `version` needs a named package, not `*`"
    );
    let e = PinFile::parse(F, with("version >=one"))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("preferences.d/10-test.pref:7: bad version requirement `>=one`: "),
        "{e}"
    );
}

#[test]
fn errors_name_the_file_they_are_in() {
    let e = Preferences::parse_files([
        ("preferences", DESIGN_EXAMPLE),
        (
            "preferences.d/20-x.pref",
            "\n\nPackage: x\nPin: version ~1\n",
        ),
    ])
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "preferences.d/20-x.pref:3: stanza has no `Pin-Priority:` field"
    );
}

#[test]
fn a_hash_inside_a_line_is_not_a_comment() {
    let text = "Package: serde # the serializer\nPin: registry a\nPin-Priority: 1\n";
    let e = PinFile::parse(F, text).unwrap_err();
    assert_eq!(e.line, Some(1));
    assert!(
        matches!(&e.kind, PinErrorKind::BadPackage { pattern, .. } if pattern == "#"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// Matching

fn packages(p: &str) -> Packages {
    parse(&format!("Package: {p}\nPin: registry *\nPin-Priority: 1\n")).stanzas[0]
        .packages
        .clone()
}

#[test]
fn names_and_globs_treat_dash_and_underscore_alike_and_ignore_case() {
    let p = packages("acme-* acme_*");
    for yes in ["acme_core", "ACME-Core", "acme-", "Acme_x_y"] {
        assert!(p.matches(&name(yes)), "{yes}");
    }
    for no in ["acmecore", "my-acme-core", "acm"] {
        assert!(!p.matches(&name(no)), "{no}");
    }
    let p = packages("Foo_Bar-baz");
    assert!(p.matches(&name("foo-bar_baz")));
    assert!(!p.matches(&name("foo-bar-baz2")));
    let p = packages("acme[_]core a?c");
    assert!(p.matches(&name("acme-core")) && p.matches(&name("acme_core")));
    assert!(p.matches(&name("a_c")) && p.matches(&name("aXc")));
    let p = packages("x[!_]y");
    assert!(p.matches(&name("xay")) && !p.matches(&name("x-y")) && !p.matches(&name("x_y")));
    let p = packages("{serde,tokio}_*");
    assert!(p.matches(&name("serde-json")) && p.matches(&name("tokio_util")));
    assert!(!p.matches(&name("serde")));
    assert_eq!(fold_glob("a_[b_c]_[!_]"), "a-[bc-]-[!-]");
}

#[test]
fn regexes_are_unanchored_case_insensitive_and_separator_blind() {
    for re in ["/^acme-/", "/^acme_/", "/^ACME[-_]/"] {
        let p = packages(re);
        for yes in ["acme_core", "ACME-Core", "acme-"] {
            assert!(p.matches(&name(yes)), "{re} {yes}");
        }
        for no in ["my-acme-core", "acmecore"] {
            assert!(!p.matches(&name(no)), "{re} {no}");
        }
    }
    let p = packages("/core$/");
    assert!(p.matches(&name("acme-core")) && !p.matches(&name("core-x")));
}

#[test]
fn registry_and_origin_globs() {
    let f =
        parse("Package: serde\nPin: origin *.ACME.example; registry corp*\nPin-Priority: 700\n");
    let s = &f.stanzas[0];
    let serde = name("serde");
    assert!(s.applies(&serde, &up("corp", "cargo.acme.example", 1), None));
    assert!(s.applies(&serde, &up("Corp-EU", "eu.acme.example", 1), None));
    assert!(!s.applies(&serde, &up("corp", "acme.example.org", 1), None));
    assert!(!s.applies(&serde, &up("crates-io", "cargo.acme.example", 1), None));
    assert!(!s.applies(&name("tokio"), &up("corp", "cargo.acme.example", 1), None));
}

// ---------------------------------------------------------------------------------------------
// Evaluation order (rules 2 and 3)

const NAMED_AND_STAR: &str = "\
Package: *
Pin: registry crates-io
Pin-Priority: 100

Package: serde
Pin: registry crates-io; version >=1.0.200
Pin-Priority: 1001

Package: serde
Pin: registry crates-io
Pin-Priority: 700

Package: serde
Pin: registry *
Pin-Priority: 50
";

#[test]
fn a_star_stanza_loses_to_a_named_one_regardless_of_order() {
    let prefs = Preferences::parse_files([("preferences", NAMED_AND_STAR)]).unwrap();
    let public = up("crates-io", "index.public.example", 500);
    let corp = up("corp", "cargo.acme.example", 600);
    let (serde, tokio) = (name("serde"), name("tokio"));
    let p = |l, n| Some(at("preferences", l, PinPriority::Value(n)));
    assert_eq!(prefs.claim(&serde, &public), p(9, 700));
    assert_eq!(prefs.claim(&serde, &corp), p(13, 50));
    assert_eq!(prefs.claim(&tokio, &public), p(1, 100));
    assert_eq!(prefs.claim(&tokio, &corp), None);
    // Named-with-version first, even though a version-less stanza comes later.
    assert_eq!(
        prefs.prio(&serde, &public, &VersionFacts::bare(&v("1.0.210"))),
        p(5, 1001)
    );
    assert_eq!(
        prefs.prio(&serde, &public, &VersionFacts::bare(&v("1.0.100"))),
        p(9, 700)
    );
    assert_eq!(
        prefs.prio(&serde, &corp, &VersionFacts::bare(&v("1.0.210"))),
        p(13, 50)
    );
    assert_eq!(
        prefs.prio(&tokio, &public, &VersionFacts::bare(&v("1.0.0"))),
        p(1, 100)
    );
    assert_eq!(
        prefs.prio(&tokio, &corp, &VersionFacts::bare(&v("1.0.0"))),
        None
    );
}

#[test]
fn earlier_files_win_within_a_tier() {
    let stanza = |n: i32| format!("Package: serde\nPin: registry *\nPin-Priority: {n}\n");
    let prefs = Preferences::parse_files([
        (
            "preferences".to_owned(),
            format!(
                "Package: *\nPin: registry *\nPin-Priority: 9\n\n{}",
                stanza(1)
            ),
        ),
        ("preferences.d/10-a.pref".to_owned(), stanza(2)),
        (
            "preferences.d/20-b.pref".to_owned(),
            format!(
                "Package: serde\nPin: version *\nPin-Priority: 3\n\n{}",
                stanza(4)
            ),
        ),
    ])
    .unwrap();
    let u = up("crates-io", "index.public.example", 500);
    let serde = name("serde");
    assert_eq!(
        prefs.claim(&serde, &u),
        Some(at("preferences", 5, PinPriority::Value(1)))
    );
    assert_eq!(
        prefs.prio(&serde, &u, &VersionFacts::bare(&v("1.0.0"))),
        Some(at("preferences.d/20-b.pref", 1, PinPriority::Value(3)))
    );
    assert_eq!(
        prefs.prio(&serde, &u, &VersionFacts::bare(&v("1.0.0-rc.1"))),
        Some(at("preferences", 5, PinPriority::Value(1))),
        "`version *` does not match a pre-release"
    );
}

// ---------------------------------------------------------------------------------------------
// Loading

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("privreg-pin-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn write(&self, rel: &str, text: &str) {
        let path = self.0.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn load_reads_preferences_then_preferences_d_in_lexical_order() {
    let dir = Scratch::new("order");
    let stanza = |n: i32| format!("Package: serde\nPin: registry *\nPin-Priority: {n}\n");
    dir.write("preferences.d/20-b.pref", &stanza(20));
    dir.write("preferences.d/10-a.pref", &format!("# a\n{}", stanza(10)));
    dir.write("preferences.d/README", "not a pin file");
    dir.write("preferences.d/05-x.pref.bak", "not a pin file");
    dir.write("preferences.d/.#10-a.pref", "an editor's lock file");
    dir.write("preferences.d/00-none", "not a pin file");
    let u = up("crates-io", "index.public.example", 500);

    let prefs = Preferences::load(dir.path()).unwrap();
    let names: Vec<_> = prefs.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        vec!["preferences.d/10-a.pref", "preferences.d/20-b.pref"]
    );
    assert_eq!(
        prefs.claim(&name("serde"), &u),
        Some(at("preferences.d/10-a.pref", 2, PinPriority::Value(10)))
    );

    dir.write("preferences", &format!("\n{}", stanza(1)));
    let prefs = Preferences::load(dir.path()).unwrap();
    assert_eq!(prefs.files[0].name, "preferences");
    assert_eq!(prefs.files.len(), 3);
    assert_eq!(
        prefs.claim(&name("serde"), &u),
        Some(at("preferences", 2, PinPriority::Value(1)))
    );
}

#[test]
fn load_without_files_means_no_pins() {
    let dir = Scratch::new("none");
    let prefs = Preferences::load(dir.path()).unwrap();
    assert!(prefs.files.is_empty() && prefs.is_empty());
    let prefs = Preferences::load(&dir.path().join("does-not-exist")).unwrap();
    assert!(prefs.is_empty());
}

#[test]
fn load_errors_name_the_path() {
    let dir = Scratch::new("errors");
    dir.write(
        "preferences.d/30-bad.pref",
        "Package: x\nPin: registry a\nPin-Priority: 0\n",
    );
    let e = Preferences::load(dir.path()).unwrap_err();
    let path = dir.path().join("preferences.d/30-bad.pref");
    assert_eq!(e.file, path.display().to_string());
    assert_eq!(e.line, Some(3));
    assert!(
        e.to_string()
            .starts_with(&format!("{}:3: ", path.display())),
        "{e}"
    );

    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(dir.path().join("preferences")).unwrap();
    let e = Preferences::load(dir.path()).unwrap_err();
    assert_eq!(e.file, dir.path().join("preferences").display().to_string());
    assert_eq!(e.line, None);
    assert!(matches!(e.kind, PinErrorKind::Unreadable(_)), "{e}");
    assert!(e.to_string().contains(": cannot read: "), "{e}");

    std::fs::remove_dir(dir.path().join("preferences")).unwrap();
    std::fs::write(dir.path().join("preferences"), b"Package: \xff\n").unwrap();
    let e = Preferences::load(dir.path()).unwrap_err();
    assert!(matches!(e.kind, PinErrorKind::Unreadable(_)), "{e}");
}
