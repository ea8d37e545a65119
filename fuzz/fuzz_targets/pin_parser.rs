//! The pin-file parser (`shared/src/pin`): any text either parses or is refused with an error that
//! names a line of the file; a parsed file is then evaluated, listed, and edited, and the edits
//! must keep the promises their docs make (every other stanza stays, a re-added stanza parses back
//! as written).
#![no_main]

use libfuzzer_sys::fuzz_target;
use privreg_shared::CrateName;
use privreg_shared::pin::{PinFile, Preferences, add_stanza, remove_stanza};
use privreg_shared::advisory::{AdvisoryHit, AdvisoryKind, AdvisorySource};
use privreg_shared::policy::{Dated, PinRules, UpstreamRef, VersionFacts};

use semver::Version;

/// "Now" for `age` selectors.
const NOW: u64 = 1_736_467_200;

/// Every version is affected by one advisory of each kind.
struct EveryKind;

impl AdvisorySource for EveryKind {
    fn affected(&self, _: &CrateName, _: &Version) -> Vec<AdvisoryHit> {
        ["vulnerability", "unmaintained", "unsound", "notice", "other"]
            .into_iter()
            .enumerate()
            .map(|(i, k)| AdvisoryHit {
                id: format!("RUSTSEC-2024-000{i}"),
                kind: AdvisoryKind::parse(k),
                patched: Vec::new(),
                withdrawn: false,
            })
            .collect()
    }
}

const FILE: &str = "preferences.d/10-fuzz.pref";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lines = text.split('\n').count();
    let file = match PinFile::parse(FILE, text.as_ref()) {
        Ok(file) => file,
        Err(e) => {
            assert_eq!(e.file, FILE);
            let line = e.line.expect("a parse error names its line");
            assert!(
                (1..=lines).contains(&line),
                "error on line {line} of {lines}: {e}"
            );
            assert!(
                e.to_string().starts_with(&format!("{FILE}:{line}: ")),
                "{e}"
            );
            return;
        }
    };
    for (i, s) in file.stanzas.iter().enumerate() {
        assert!(
            s.lines.contains(&s.line),
            "{:?} outside {:?}",
            s.line,
            s.lines
        );
        assert!(s.lines.end <= lines + 1, "{:?} past line {lines}", s.lines);
        assert_eq!(file.stanza_ref(i).map(|r| r.line), Some(s.line));
        let _ = s.to_string();
        let _ = s.tier();
    }

    // Evaluation over a few names and upstreams: nothing may panic, and a claim never comes from a
    // stanza with a `version` selector (rule 2).
    let prefs = Preferences::parse_files([(FILE, text.as_ref())]).expect("parsed once already");
    let ups = [
        up("crates-io", "public-registry.invalid", 500),
        up("acme", "cargo.acme.example", 600),
    ];
    let versions: [Version; 3] = [
        Version::new(1, 0, 0),
        Version::parse("0.10.55").unwrap(),
        Version::parse("2.0.0-rc.1+build.5").unwrap(),
    ];
    for name in ["serde", "acme-core", "Acme_Core", "openssl", "a", "_x-Y_z"] {
        let krate = CrateName::new(name).unwrap();
        for u in &ups {
            if let Some(m) = prefs.claim(&krate, u) {
                let s = file
                    .stanzas
                    .iter()
                    .find(|s| s.line == m.stanza.line)
                    .expect("a claim names a stanza of the file");
                assert!(!s.selectors.is_version_specific(), "claim by {s}");
                assert!(s.packages.matches(&krate));
            }
            // Each version as old, as published an hour ago, and with every kind of advisory.
            let hour_ago = Dated::FirstSeen(NOW - 3600);
            let facts = versions.iter().flat_map(|v| {
                [
                    VersionFacts::bare(v),
                    VersionFacts::at(v, hour_ago, NOW).with_advisories(&krate, &EveryKind),
                ]
            });
            for v in facts {
                if let Some(m) = prefs.prio(&krate, u, &v) {
                    let s = file
                        .stanzas
                        .iter()
                        .find(|s| s.line == m.stanza.line)
                        .unwrap();
                    let ver = v.version();
                    assert!(s.applies(&krate, u, Some(&v)), "{s} for {name} {ver}");
                    assert_eq!(s.priority, m.priority);
                }
            }
        }
    }
    let list = prefs.list();
    assert_eq!(list.len(), file.stanzas.len());
    for e in &list {
        let _ = e.to_string();
    }

    // Removing a stanza leaves exactly the others.
    for i in 0..file.stanzas.len() {
        let out = remove_stanza(&file.text, i).expect("the stanza exists");
        let after = PinFile::parse(FILE, out.as_str())
            .unwrap_or_else(|e| panic!("removing stanza {i} broke the file: {e}\n{out:?}"));
        let keep: Vec<_> = file
            .stanzas
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, s)| summary(s))
            .collect();
        let got: Vec<_> = after.stanzas.iter().map(summary).collect();
        assert_eq!(got, keep, "after removing stanza {i} of {:?}", file.text);
    }
    assert!(remove_stanza(&file.text, file.stanzas.len()).is_none());

    // Appending a copy of each stanza parses back as that stanza, after all the others.
    for s in &file.stanzas {
        let explanation = s.explanations.first().map(String::as_str);
        let values = [
            s.package_text.as_str(),
            s.pin_text.as_str(),
            explanation.unwrap_or(""),
        ];
        let added = add_stanza(
            FILE,
            &file.text,
            &s.package_text,
            &s.pin_text,
            s.priority,
            explanation,
        );
        if values.iter().any(|v| v.contains(char::is_control)) {
            assert!(added.is_err(), "control characters accepted: {values:?}");
            continue;
        }
        let out = added.unwrap_or_else(|e| panic!("re-adding {s} failed: {e}"));
        assert!(
            out.starts_with(file.text.as_str()),
            "add_stanza changed existing bytes"
        );
        let after = PinFile::parse(FILE, out.as_str()).expect("add_stanza checks its result");
        assert_eq!(after.stanzas.len(), file.stanzas.len() + 1);
        let last = after.stanzas.last().unwrap();
        assert_eq!(summary(last), summary(s), "in {out:?}");
    }
});

fn up(name: &str, host: &str, priority: i32) -> UpstreamRef {
    UpstreamRef {
        name: name.into(),
        host: host.into(),
        priority,
    }
}

/// What a stanza says, without where it is.
fn summary(s: &privreg_shared::pin::Stanza) -> (String, String, String) {
    (
        s.package_text.clone(),
        s.pin_text.clone(),
        s.priority.to_string(),
    )
}
