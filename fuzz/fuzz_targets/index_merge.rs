//! Index lines and the layering merge (`shared/src/index.rs`, `shared/src/policy.rs`), with real
//! pin rules parsed by `shared/src/pin`.
//!
//! The input is a small text with sections, so that seeds are easy to write and read:
//!
//! ```text
//! === crate serde
//! === upstream acme cargo.acme.example 600
//! {"name":"serde","vers":"1.0.0",…}        <- the upstream's index body, bytes as they come
//! === upstream crates-io public-registry.invalid 500 error    <- or `absent`
//! === pins preferences
//! Package: serde                           <- a pin file (several `pins` sections: several files)
//! Pin: registry acme
//! Pin-Priority: 700
//! === remembered
//! 1.0.0 <sha256 hex>                       <- checksums served before (rule 8)
//! ```
//!
//! Every section and field is optional. The merge must not panic, its result must be consistent
//! (one decision per version and upstream, every listed version once, remembered checksums kept),
//! and the rendered index body must parse again into exactly the selected lines.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use privreg_shared::CrateName;
use privreg_shared::index::{CRATES_IO_KEY, IndexFile, registry_url_key};
use privreg_shared::pin::Preferences;
use privreg_shared::policy::{self, Answer, MergeError, State, UpstreamRef};
use semver::Version;

/// More upstreams than anyone configures; keeps each run quick.
const MAX_UPSTREAMS: usize = 6;

enum Kind {
    Has(IndexFile),
    Absent,
    Error,
}

struct Input {
    krate: CrateName,
    upstreams: Vec<(UpstreamRef, Kind)>,
    pins: Vec<(String, String)>,
    remembered: BTreeMap<Version, String>,
}

/// Splits the input into sections at lines that start with `=== `.
fn sections(data: &[u8]) -> Vec<(String, Bytes)> {
    let data = Bytes::copy_from_slice(data);
    let mut heads = Vec::new();
    let mut start = 0;
    while start < data.len() {
        let end = data[start..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(data.len(), |p| start + p + 1);
        if data[start..].starts_with(b"=== ") {
            heads.push((start, end));
        }
        start = end;
    }
    heads
        .iter()
        .enumerate()
        .map(|(i, &(h, body))| {
            let head = String::from_utf8_lossy(&data[h + 4..body])
                .trim()
                .to_owned();
            let next = heads.get(i + 1).map_or(data.len(), |n| n.0);
            (head, data.slice(body..next))
        })
        .collect()
}

fn input(data: &[u8]) -> Input {
    let mut input = Input {
        krate: CrateName::new("serde").unwrap(),
        upstreams: Vec::new(),
        pins: Vec::new(),
        remembered: BTreeMap::new(),
    };
    for (head, body) in sections(data) {
        let words: Vec<&str> = head.split_whitespace().collect();
        match words.as_slice() {
            ["crate", name, ..] => {
                if let Ok(k) = CrateName::new(name) {
                    input.krate = k;
                }
            }
            ["upstream", rest @ ..] if input.upstreams.len() < MAX_UPSTREAMS => {
                let n = input.upstreams.len();
                let up = UpstreamRef {
                    name: rest.first().map_or(format!("u{n}"), |s| (*s).to_owned()),
                    host: rest
                        .get(1)
                        .map_or(format!("h{n}.example"), |s| (*s).to_owned()),
                    priority: rest.get(2).and_then(|p| p.parse().ok()).unwrap_or(500),
                };
                let kind = match rest.get(3) {
                    Some(&"error") => Kind::Error,
                    Some(&"absent") => Kind::Absent,
                    _ => Kind::Has(IndexFile::parse_bytes(body)),
                };
                input.upstreams.push((up, kind));
            }
            ["pins", rest @ ..] => {
                let name = rest.first().map_or("preferences", |s| s).to_owned();
                input
                    .pins
                    .push((name, String::from_utf8_lossy(&body).into_owned()));
            }
            ["remembered", ..] => {
                for line in String::from_utf8_lossy(&body).lines() {
                    if let Some((v, ck)) = line.trim().split_once(' ')
                        && let Ok(v) = Version::parse(v)
                    {
                        input.remembered.insert(v, ck.trim().to_owned());
                    }
                }
            }
            _ => {}
        }
    }
    input
}

fuzz_target!(|data: &[u8]| {
    let input = input(data);
    // Real pin rules; a pin file that does not parse means none (the daemon refuses to load it).
    let pins = Preferences::parse_files(input.pins.iter().map(|(n, t)| (n.as_str(), t.as_str())))
        .unwrap_or_default();
    let ups: Vec<UpstreamRef> = input.upstreams.iter().map(|(u, _)| u.clone()).collect();
    let answers: Vec<Answer<'_>> = input
        .upstreams
        .iter()
        .map(|(_, k)| match k {
            Kind::Has(f) => Answer::Has(f),
            Kind::Absent => Answer::Absent,
            Kind::Error => Answer::Error,
        })
        .collect();

    // Each parsed file keeps the body, one line per version, and says when it is canonical.
    for (_, kind) in &input.upstreams {
        if let Kind::Has(f) = kind {
            check_file(f);
        }
    }

    let facts = policy::Facts::at(1_736_467_200);
    let merged = match policy::merge(
        &input.krate,
        &ups,
        &answers,
        &pins,
        &input.remembered,
        &facts,
    ) {
        Ok(m) => m,
        Err(MergeError::Unavailable { upstreams }) => {
            assert!(!upstreams.is_empty());
            for name in &upstreams {
                assert!(
                    ups.iter()
                        .zip(&answers)
                        .any(|(u, a)| &u.name == name && matches!(a, Answer::Error)),
                    "{name} is named unavailable but did not fail"
                );
            }
            return;
        }
    };
    assert_eq!(merged.claims.len(), ups.len());
    for &o in &merged.owners {
        assert!(
            matches!(answers[o], Answer::Has(_)),
            "owner {o} has no answer"
        );
    }

    // One decision per (upstream, line).
    let lines: usize = answers
        .iter()
        .map(|a| match a {
            Answer::Has(f) => f.lines.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(merged.decisions.len(), lines);

    // Every listed version once, from a decision that lists it, with a remembered checksum kept.
    let file = |u: usize| match answers[u] {
        Answer::Has(f) => f,
        _ => panic!("selected from upstream {u}, which has no answer"),
    };
    let mut versions = BTreeSet::new();
    for s in &merged.selected {
        let line = &file(s.upstream).lines[s.line];
        assert!(
            versions.insert(line.vers.clone()),
            "{} listed twice",
            line.vers
        );
        let d = merged
            .decisions
            .iter()
            .find(|d| d.upstream == s.upstream && d.version == line.vers)
            .expect("a selected line has a decision");
        let want = if s.force_yanked {
            State::YankedByPin
        } else {
            State::Served
        };
        assert_eq!(d.state, want, "{}", line.vers);
        if let Some(old) = input.remembered.get(&line.vers) {
            assert_eq!(&line.cksum, old, "{} served with a new checksum", line.vers);
        }
    }
    let listed = merged
        .decisions
        .iter()
        .filter(|d| matches!(d.state, State::Served | State::YankedByPin))
        .count();
    assert_eq!(listed, merged.selected.len());
    assert!(
        merged
            .selected
            .windows(2)
            .all(|w| (w[0].upstream, w[0].line) < (w[1].upstream, w[1].line))
    );
    assert_eq!(merged.checksums(&answers).len(), merged.selected.len());
    for c in &merged.conflicts {
        assert!(c.winner < ups.len() && c.loser < ups.len() && c.winner != c.loser);
    }

    // The rendered body parses into exactly the selected lines, rewritten as promised.
    let layered: BTreeSet<String> = std::iter::once(CRATES_IO_KEY.to_owned())
        .chain(
            ups.iter()
                .map(|u| registry_url_key(&format!("sparse+http://{}/index/", u.host))),
        )
        .collect();
    let is_layered = |url: &str| layered.contains(&registry_url_key(url));
    let body = merged.render(&answers, &is_layered);
    let again = IndexFile::parse_bytes(body.clone());
    assert!(
        again.skipped.is_empty(),
        "rendered lines skipped: {:?}",
        again.skipped
    );
    assert_eq!(again.lines.len(), merged.selected.len(), "{body:?}");
    for (got, s) in again.lines.iter().zip(&merged.selected) {
        let orig = &file(s.upstream).lines[s.line];
        assert_eq!(
            (&got.name, &got.vers, &got.cksum),
            (&orig.name, &orig.vers, &orig.cksum)
        );
        assert_eq!(
            got.yanked,
            orig.yanked || s.force_yanked,
            "{} yanked: was {}, forced {}, served {:?}",
            orig.vers,
            orig.yanked,
            s.force_yanked,
            got.raw()
        );
        let want: Vec<_> = orig
            .dependencies()
            .into_iter()
            .map(|mut d| {
                if d.registry.as_deref().is_some_and(is_layered) {
                    d.registry = None;
                }
                d
            })
            .collect();
        assert_eq!(got.dependencies(), want, "deps of {}", orig.vers);
    }

    // Each upstream's own view lists its lines in order.
    for (u, a) in ups.iter().zip(&answers) {
        if let Answer::Has(f) = a {
            let served = policy::single(&input.krate, u, f, &pins, &facts);
            assert!(served.windows(2).all(|w| w[0].0 < w[1].0));
            assert!(served.iter().all(|(i, _)| *i < f.lines.len()));
        }
    }
});

fn check_file(f: &IndexFile) {
    let mut seen = BTreeSet::new();
    for l in &f.lines {
        assert!(seen.insert(l.vers.clone()), "{} twice in one file", l.vers);
        assert_eq!(l.cksum.len(), 64);
        assert!(!l.raw().contains('\n'));
        assert_eq!(f.version(&l.vers).map(|x| x.raw()), Some(l.raw()));
    }
    if f.canonical {
        let mut joined = Vec::with_capacity(f.body.len());
        for l in &f.lines {
            joined.extend_from_slice(l.raw().as_bytes());
            joined.push(b'\n');
        }
        assert_eq!(joined, f.body, "canonical, but not its lines");
    }
}
