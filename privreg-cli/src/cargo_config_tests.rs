//! Install and uninstall of cargo's configuration, on text.

use super::*;

const URL: &str = "sparse+http://127.0.0.1:7878/index/";

fn file() -> PathBuf {
    PathBuf::from("/home/u/.cargo/config.toml")
}

fn round_trip(original: Option<&str>) -> (String, State) {
    let (installed, state) = install(&file(), original, &wanted(URL, &[]), None).unwrap();
    let doc: DocumentMut = installed.replace("\r\n", "\n").parse().unwrap();
    for w in wanted(URL, &[]) {
        assert_eq!(
            value_at(&doc, &w.path).map(plain),
            Some(plain(&w.value)),
            "{original:?}:\n{installed}"
        );
    }
    let restored = uninstall(&installed, &state).unwrap();
    assert!(restored.kept.is_empty(), "{restored:?}");
    assert_eq!(
        restored.text.as_deref(),
        original,
        "installed:\n{installed}"
    );
    (installed, state)
}

#[test]
fn uninstall_restores_every_byte() {
    for original in [
        "",
        "\n",
        "# my cargo settings\n[build]\njobs = 2 # two cores\n\n[net]\nretry = 0\n\n# the end\n",
        "[build]\njobs = 2",
        "[build]\r\njobs = 2 # two\r\n\r\n[net]\r\nretry = 0\r\n",
        "[source.crates-io]\nreplace-with = 'vendored-sources'   # offline builds\n\n[source.vendored-sources]\ndirectory = \"vendor\"\n",
        "[registries.other]\nindex = \"sparse+http://127.0.0.1:9/index/\"\n\n[build]\njobs = 1\n",
        "registries.other.index = \"sparse+http://127.0.0.1:9/index/\"\n",
        "source = { crates-io = { replace-with = \"x\" }, x = { directory = \"v\" } }\n",
        "registries = { other = { index = \"sparse+http://127.0.0.1:9/index/\" } }\n",
        "[registries.privreg]\nindex = \"sparse+http://127.0.0.1:1/index/\"\ntoken = \"kept\"\n",
        "[source.crates-io]\n[alias]\nb = \"build\"\n",
    ] {
        round_trip(Some(original));
    }
}

#[test]
fn a_file_install_created_is_removed() {
    let (installed, state) = install(&file(), None, &wanted(URL, &[]), None).unwrap();
    assert!(state.created);
    assert_eq!(
        installed,
        "[source.crates-io]\nreplace-with = \"privreg\"\n\n[registries.privreg]\nindex = \"sparse+http://127.0.0.1:7878/index/\"\ncredential-provider = [\"cargo-credential-privreg\"]\n"
    );
    assert_eq!(uninstall(&installed, &state).unwrap().text, None);
    // Unless the user added something since.
    let edited = format!("{installed}\n[alias]\nb = \"build\"\n");
    assert_eq!(
        uninstall(&edited, &state).unwrap().text.as_deref(),
        Some("\n[alias]\nb = \"build\"\n")
    );
}

#[test]
fn prior_values_come_back_with_their_comments() {
    let original = "[source.crates-io]\nreplace-with = \"vendored\"  # offline\n";
    let (installed, state) = round_trip(Some(original));
    assert_eq!(
        installed.lines().nth(1),
        Some("replace-with = \"privreg\"  # offline")
    );
    assert_eq!(
        state.keys[0].prior,
        Some(Prior {
            repr: "\"vendored\"".into(),
            prefix: Some(" ".into()),
            suffix: Some("  # offline".into()),
        })
    );
}

#[test]
fn edits_made_since_install_are_kept() {
    let original = "# mine\n[build]\njobs = 2\n\n[source.crates-io]\nreplace-with = \"vendored\"\n";
    let (installed, state) = install(&file(), Some(original), &wanted(URL, &[]), None).unwrap();
    // The user adds a table, edits a comment, and adds a key to privreg's registry table.
    let edited = installed
        .replace("# mine", "# mine, edited")
        .replace("jobs = 2", "jobs = 4")
        + "\n[alias]\nt = \"test\"\n";
    let edited = edited.replace(
        "credential-provider = [\"cargo-credential-privreg\"]\n",
        "credential-provider = [\"cargo-credential-privreg\"]\nprotocol = \"sparse\"\n",
    );
    let restored = uninstall(&edited, &state).unwrap();
    assert!(restored.kept.is_empty());
    assert_eq!(
        restored.text.unwrap(),
        "# mine, edited\n[build]\njobs = 4\n\n[source.crates-io]\nreplace-with = \"vendored\"\n\n[registries.privreg]\nprotocol = \"sparse\"\n\n[alias]\nt = \"test\"\n"
    );
}

#[test]
fn a_key_the_user_changed_since_is_kept() {
    let original = "[source.crates-io]\nreplace-with = \"vendored\"\n";
    let (installed, state) = install(&file(), Some(original), &wanted(URL, &[]), None).unwrap();
    let edited = installed.replace("replace-with = \"privreg\"", "replace-with = \"mirror\"");
    let restored = uninstall(&edited, &state).unwrap();
    assert_eq!(restored.kept, ["source.crates-io.replace-with"]);
    let text = restored.text.unwrap();
    assert_eq!(text, "[source.crates-io]\nreplace-with = \"mirror\"\n");
}

#[test]
fn installing_again_changes_nothing_and_keeps_the_first_prior() {
    let original = "[source.crates-io]\nreplace-with = \"vendored\"\n";
    let (once, state) = install(&file(), Some(original), &wanted(URL, &[]), None).unwrap();
    let (twice, state2) =
        install(&file(), Some(&once), &wanted(URL, &[]), Some(state.clone())).unwrap();
    assert_eq!(once, twice);
    assert_eq!(state, state2);
    // A new address: the index changes, the prior stays the original one.
    let other = "sparse+http://127.0.0.1:7879/index/";
    let (moved, state3) =
        install(&file(), Some(&twice), &wanted(other, &[]), Some(state2)).unwrap();
    assert!(moved.contains(other), "{moved}");
    assert_eq!(state3.keys[0].prior, state.keys[0].prior);
    assert_eq!(
        uninstall(&moved, &state3).unwrap().text.as_deref(),
        Some(original)
    );
}

#[test]
fn broken_files_are_refused_with_their_line() {
    let e = install(
        &file(),
        Some("[build]\njobs = = 2\n"),
        &wanted(URL, &[]),
        None,
    )
    .unwrap_err();
    assert_eq!(e.line, Some(2), "{e}");
    assert!(
        e.to_string().starts_with("/home/u/.cargo/config.toml:2: "),
        "{e}"
    );
    let e = install(&file(), Some("source = 3\n"), &wanted(URL, &[]), None).unwrap_err();
    assert!(e.to_string().contains("`source` is not a table"), "{e}");
}

#[test]
fn private_upstreams_get_their_own_view_and_leave_without_a_trace() {
    let private = [Private {
        name: "acme".into(),
        index: "sparse+https://cargo.acme.example/index/".into(),
    }];
    let original =
        "# mine\n[registries.acme]\nindex = \"sparse+https://old.acme.example/index/\" # old\n";
    let (installed, state) =
        install(&file(), Some(original), &wanted(URL, &private), None).unwrap();
    let doc: DocumentMut = installed.parse().unwrap();
    let at = |p: &[&str]| {
        value_at(
            &doc,
            &p.iter()
                .map(std::string::ToString::to_string)
                .collect::<Vec<_>>(),
        )
        .map(plain)
    };
    let text = |v: &str| Some(plain(&Value::from(v)));
    assert_eq!(
        at(&["source", "privreg-upstream-acme", "registry"]),
        text("sparse+https://cargo.acme.example/index/")
    );
    assert_eq!(
        at(&["source", "privreg-upstream-acme", "replace-with"]),
        text("privreg-acme")
    );
    assert_eq!(
        at(&["registries", "privreg-acme", "index"]),
        text("sparse+http://127.0.0.1:7878/upstream/acme/index/")
    );
    assert_eq!(
        at(&["registries", "acme", "index"]),
        text("sparse+https://cargo.acme.example/index/")
    );
    let restored = uninstall(&installed, &state).unwrap();
    assert_eq!(restored.text.as_deref(), Some(original));
    // The printed snippet is the same configuration.
    let printed = snippet(URL, &private).unwrap();
    assert!(printed.contains("[registries.privreg-acme]"), "{printed}");
}
