//! Byte-preserving edits (`add_stanza`, `remove_stanza`) and `privreg pin list` numbering.

use super::{DESIGN_EXAMPLE, F, parse};
use crate::pin::{PinErrorKind, PinFile, Preferences, add_stanza, remove_stanza};
use crate::policy::PinPriority;

const KEPT: &str = "\
# privreg pins -- keep this header

# about acme
Package: acme-*
Pin: registry crates-io
Pin-Priority: never
# trailing note on acme


pin-priority:   600
package:  serde
# between fields
pin: registry crates-io ;version >=1.0.200

Explanation: hold tokio
Package: tokio
Pin: version >=1.38.0, <1.39.0
Pin-Priority: 1001
";

#[test]
fn remove_each_stanza_keeps_every_other_byte() {
    assert_eq!(parse(KEPT).stanzas.len(), 3);
    let first = remove_stanza(KEPT, 0).unwrap();
    assert_eq!(
        first,
        "\
# privreg pins -- keep this header


pin-priority:   600
package:  serde
# between fields
pin: registry crates-io ;version >=1.0.200

Explanation: hold tokio
Package: tokio
Pin: version >=1.38.0, <1.39.0
Pin-Priority: 1001
"
    );
    let second = remove_stanza(KEPT, 1).unwrap();
    assert_eq!(
        second,
        "\
# privreg pins -- keep this header

# about acme
Package: acme-*
Pin: registry crates-io
Pin-Priority: never
# trailing note on acme


Explanation: hold tokio
Package: tokio
Pin: version >=1.38.0, <1.39.0
Pin-Priority: 1001
"
    );
    // The last stanza has no blank line after it: the one before it goes.
    let third = remove_stanza(KEPT, 2).unwrap();
    assert_eq!(third, KEPT.strip_suffix("\nExplanation: hold tokio\nPackage: tokio\nPin: version >=1.38.0, <1.39.0\nPin-Priority: 1001\n").unwrap());
    for (text, left) in [(&first, 2), (&second, 2), (&third, 2)] {
        assert_eq!(parse(text).stanzas.len(), left);
    }
    assert_eq!(remove_stanza(KEPT, 3), None);
    // Removing everything one by one leaves the header comment alone.
    let all = remove_stanza(&remove_stanza(&third, 1).unwrap(), 0).unwrap();
    assert_eq!(all, "# privreg pins -- keep this header\n\n");
}

#[test]
fn remove_handles_file_edges_and_broken_stanzas() {
    assert_eq!(remove_stanza("Package: a", 0).as_deref(), Some(""));
    assert_eq!(
        remove_stanza("Package: a\r\n\r\nPackage: b\r\n", 0).as_deref(),
        Some("Package: b\r\n")
    );
    assert_eq!(
        remove_stanza("Package: a\n\nPackage: b", 1).as_deref(),
        Some("Package: a\n")
    );
    // A broken stanza can be removed from a file that does not parse.
    let broken = "Package: a\nPin: registry x\nPin-Priority: 1\n\nPackage: b\nPin-Priority: 0\n";
    assert!(PinFile::parse(F, broken).is_err());
    let fixed = remove_stanza(broken, 1).unwrap();
    assert_eq!(fixed, "Package: a\nPin: registry x\nPin-Priority: 1\n");
    assert_eq!(parse(&fixed).stanzas.len(), 1);
}

#[test]
fn add_appends_after_every_existing_byte() {
    let added = add_stanza(
        F,
        KEPT,
        "openssl",
        "version =0.10.55",
        PinPriority::Value(-1),
        Some("CVE-2024-0000"),
    )
    .unwrap();
    assert_eq!(
        added,
        format!(
            "{KEPT}\nExplanation: CVE-2024-0000\nPackage: openssl\nPin: version =0.10.55\nPin-Priority: -1\n"
        )
    );
    let f = parse(&added);
    assert_eq!(f.stanzas.len(), 4);
    assert_eq!(f.stanzas[3].line, 20);
    // And removing it gives back the original bytes.
    assert_eq!(remove_stanza(&added, 3).unwrap(), KEPT);

    let never = "Package: acme-*\nPin: registry crates-io\nPin-Priority: never\n";
    assert_eq!(
        add_stanza(
            F,
            "",
            "acme-*",
            "registry crates-io",
            PinPriority::Never,
            None
        )
        .unwrap(),
        never
    );
    // No final line end: one is added, then the blank separator.
    assert_eq!(
        add_stanza(
            F,
            "# x",
            "acme-*",
            "registry crates-io",
            PinPriority::Never,
            Some(" ")
        )
        .unwrap(),
        format!("# x\n\n{never}")
    );
    // Already ends with a blank line: no second one.
    assert_eq!(
        add_stanza(
            F,
            "# x\n\n",
            "acme-*",
            "registry crates-io",
            PinPriority::Never,
            None
        )
        .unwrap(),
        format!("# x\n\n{never}")
    );
    // CRLF files get CRLF lines.
    assert_eq!(
        add_stanza(
            F,
            "# x\r\n",
            "acme-*",
            "registry crates-io",
            PinPriority::Never,
            None
        )
        .unwrap(),
        format!("# x\r\n\r\n{}", never.replace('\n', "\r\n"))
    );
}

#[test]
fn add_refuses_what_would_not_parse() {
    let e = add_stanza(
        F,
        DESIGN_EXAMPLE,
        "serde",
        "release a=stable",
        PinPriority::Value(5),
        None,
    )
    .unwrap_err();
    assert_eq!(e.file, F);
    assert_eq!(e.line, Some(16));
    assert_eq!(e.kind, PinErrorKind::UnknownSelector("release".into()));
    let e = add_stanza(F, "", "*", "version ^1", PinPriority::Value(5), None).unwrap_err();
    assert_eq!((e.line, e.kind), (Some(2), PinErrorKind::VersionWithStar));
    let e = add_stanza(F, "", "", "registry a", PinPriority::Value(5), None).unwrap_err();
    assert_eq!(
        (e.line, e.kind),
        (Some(1), PinErrorKind::EmptyField("Package"))
    );
    // A broken file stays broken: the error points at the existing problem.
    let e = add_stanza(
        F,
        "Package: x\n",
        "serde",
        "registry a",
        PinPriority::Value(5),
        None,
    )
    .unwrap_err();
    assert_eq!(
        (e.line, e.kind),
        (Some(1), PinErrorKind::MissingField("Pin"))
    );
    // No smuggling of extra fields or stanzas through a value.
    let e = add_stanza(
        F,
        "# x\n",
        "serde",
        "registry a",
        PinPriority::Value(5),
        Some("x\n\nPackage: *\nPin: registry evil\nPin-Priority: 1001"),
    )
    .unwrap_err();
    assert_eq!(
        (e.line, e.kind),
        (Some(3), PinErrorKind::NotOneLine("Explanation"))
    );
    let e = add_stanza(F, "", "serde\rx", "registry a", PinPriority::Value(5), None).unwrap_err();
    assert_eq!(
        (e.line, e.kind),
        (Some(1), PinErrorKind::NotOneLine("Package"))
    );
}

#[test]
fn list_numbers_stanzas_across_files() {
    let prefs = Preferences::parse_files([
        ("preferences", DESIGN_EXAMPLE),
        ("preferences.d/10-empty.pref", "# nothing\n"),
        (
            "preferences.d/20-tokio.pref",
            "\n\nPackage: tokio\nPin: version ^1.38\nPin-Priority: 1001\n",
        ),
    ])
    .unwrap();
    let list = prefs.list();
    let shown: Vec<String> = list.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        vec![
            "1  preferences:2  Package: acme-* acme_* | Pin: registry crates-io | Pin-Priority: never",
            "2  preferences:7  Package: serde | Pin: registry crates-io; version >=1.0.200 | Pin-Priority: 600",
            "3  preferences:11  Package: openssl | Pin: version =0.10.55 | Pin-Priority: -1",
            "4  preferences.d/20-tokio.pref:3  Package: tokio | Pin: version ^1.38 | Pin-Priority: 1001",
        ]
    );
    assert_eq!((list[3].file, list[3].index), (2, 0));
    assert_eq!(prefs.files[2].stanza_ref(0), Some(list[3].at.clone()));

    let (file, text) = prefs.remove_numbered(4).unwrap();
    assert_eq!((file, text.as_str()), ("preferences.d/20-tokio.pref", "\n"));
    let (file, text) = prefs.remove_numbered(2).unwrap();
    assert_eq!(file, "preferences");
    assert_eq!(
        text,
        DESIGN_EXAMPLE.replace(
            "Package: serde\nPin: registry crates-io; version >=1.0.200\nPin-Priority: 600\n\n",
            ""
        )
    );
    assert!(prefs.remove_numbered(0).is_none() && prefs.remove_numbered(5).is_none());
}

/// Every short file over a small alphabet of lines: parsing never panics, and on every file that
/// parses, removing any stanza leaves exactly the others, and adding one keeps every byte.
#[test]
fn small_files_exhaustively() {
    const ALPHABET: [&str; 7] = [
        "",
        "# c",
        "Package: a",
        "Pin: registry x",
        "Pin-Priority: 1",
        "  cont",
        "Package: b",
    ];
    let summary = |f: &PinFile| -> Vec<String> {
        f.stanzas
            .iter()
            .map(std::string::ToString::to_string)
            .collect()
    };
    let mut valid = 0;
    for len in 0..=5u32 {
        for mut n in 0..ALPHABET.len().pow(len) {
            let mut lines = Vec::new();
            for _ in 0..len {
                lines.push(ALPHABET[n % ALPHABET.len()]);
                n /= ALPHABET.len();
            }
            for end in ["", "\n"] {
                let text = lines.join("\n") + end;
                let Ok(file) = PinFile::parse(F, text.as_str()) else {
                    continue;
                };
                valid += 1;
                let before = summary(&file);
                for i in 0..before.len() {
                    let removed = remove_stanza(&text, i).unwrap();
                    let mut expected = before.clone();
                    expected.remove(i);
                    assert_eq!(summary(&parse(&removed)), expected, "{text:?} - {i}");
                    // Only one contiguous run of bytes went.
                    let p = text
                        .bytes()
                        .zip(removed.bytes())
                        .take_while(|(a, b)| a == b)
                        .count();
                    assert!(text.ends_with(&removed[p..]), "{text:?} - {i}");
                }
                assert_eq!(remove_stanza(&text, before.len()), None);
                let added =
                    add_stanza(F, &text, "c", "version ^1", PinPriority::Value(9), None).unwrap();
                assert!(added.starts_with(&text), "{text:?}");
                let after = summary(&parse(&added));
                assert_eq!(after[..before.len()], before[..], "{text:?}");
                assert_eq!(after.len(), before.len() + 1, "{text:?}");
            }
        }
    }
    assert!(valid > 100, "{valid}");
}
