//! The provider on protocol messages, with an in-memory store standing in for the keyring.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cargo_credential::CredentialRequest;
use privreg_shared::secrets::StoreKind;

use super::*;

const LOCAL: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Entries by keyring user, shared by every "opened" store of one test.
#[derive(Clone, Default)]
struct MemStore(Arc<Mutex<HashMap<String, String>>>);

impl MemStore {
    fn no_entry(entry: &EntryName) -> SecretsError {
        SecretsError::NoEntry {
            store: StoreKind::Keyutils,
            entry: entry.clone(),
        }
    }
}

impl SecretStore for MemStore {
    fn get(&self, entry: &EntryName) -> Result<Token, SecretsError> {
        let map = self.0.lock().unwrap();
        let text = map.get(entry.user()).ok_or_else(|| Self::no_entry(entry))?;
        Token::new(text.clone())
    }
    fn set(&self, entry: &EntryName, token: &Token) -> Result<(), SecretsError> {
        let mut map = self.0.lock().unwrap();
        map.insert(entry.user().to_owned(), token.expose().to_owned());
        Ok(())
    }
    fn delete(&self, entry: &EntryName) -> Result<(), SecretsError> {
        let mut map = self.0.lock().unwrap();
        map.remove(entry.user())
            .map(drop)
            .ok_or_else(|| Self::no_entry(entry))
    }
}

struct Fixture {
    setup: Setup,
    store: MemStore,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// A daemon on 127.0.0.1:7878 whose local token is [`LOCAL`].
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let setup = Setup {
            config_dir: dir.path().to_owned(),
            keyring: KeyringChoice::Auto,
            daemon_addrs: vec!["127.0.0.1:7878".parse().unwrap()],
        };
        let store = MemStore::default();
        store
            .set(
                &EntryName::local_token(&setup.config_dir),
                &Token::new(LOCAL).unwrap(),
            )
            .unwrap();
        Fixture {
            setup,
            store,
            _dir: dir,
        }
    }

    /// Runs one request line as cargo sends it; returns the reply line as the provider writes it.
    fn run(&self, request: &str) -> String {
        let req: CredentialRequest<'_> = serde_json::from_str(request).expect("request parses");
        let store = self.store.clone();
        let result = perform(
            &self.setup,
            || Ok(Box::new(store)),
            &req.registry,
            &req.action,
            &req.args,
        );
        serde_json::to_string(&result).unwrap()
    }
}

fn get(url: &str) -> String {
    format!(
        r#"{{"v":1,"registry":{{"index-url":"{url}","name":"alt"}},"kind":"get","operation":"read","args":[]}}"#
    )
}

fn login(url: &str, token: &str) -> String {
    format!(
        r#"{{"v":1,"registry":{{"index-url":"{url}","name":"alt"}},"kind":"login","token":"{token}","args":[]}}"#
    )
}

fn logout(url: &str) -> String {
    format!(
        r#"{{"v":1,"registry":{{"index-url":"{url}","name":"alt"}},"kind":"logout","args":[]}}"#
    )
}

fn ok_get(token: &str) -> String {
    format!(
        r#"{{"Ok":{{"kind":"get","token":"{token}","cache":"session","operation_independent":true}}}}"#
    )
}

const NOT_FOUND: &str = r#"{"Err":{"kind":"not-found"}}"#;
const REG: &str = "sparse+http://127.0.0.1:9999/index/";

#[test]
fn unknown_registry_is_not_found_so_cargo_tries_the_next_provider() {
    let f = Fixture::new();
    assert_eq!(f.run(&get(REG)), NOT_FOUND);
    assert_eq!(f.run(&logout(REG)), NOT_FOUND);
}

#[test]
fn login_get_logout_round_trip() {
    let f = Fixture::new();
    assert_eq!(f.run(&login(REG, " s3cret ")), r#"{"Ok":{"kind":"login"}}"#);
    assert_eq!(
        f.store.0.lock().unwrap().get(REG).map(String::as_str),
        Some("s3cret"),
        "stored under the index URL, input trimmed"
    );
    assert_eq!(f.run(&get(REG)), ok_get("s3cret"));
    // Other operations and the URL without its trailing slash find the same entry.
    let publish = r#"{"v":1,"registry":{"index-url":"sparse+http://127.0.0.1:9999/index","name":"alt"},"kind":"get","operation":"publish","name":"foo","vers":"0.1.0","cksum":"abc","args":[]}"#;
    assert_eq!(f.run(publish), ok_get("s3cret"));
    assert_eq!(f.run(&logout(REG)), r#"{"Ok":{"kind":"logout"}}"#);
    assert_eq!(f.run(&get(REG)), NOT_FOUND);
    assert_eq!(f.run(&logout(REG)), NOT_FOUND);
}

#[test]
fn daemon_urls_get_the_local_token() {
    let f = Fixture::new();
    for url in [
        "sparse+http://127.0.0.1:7878/index/",
        "sparse+http://127.0.0.1:7878/index",
        "sparse+http://127.0.0.1:7878/upstream/acme/index/",
        "sparse+http://localhost:7878/index/",
    ] {
        assert_eq!(f.run(&get(url)), ok_get(LOCAL), "{url}");
    }
    // Another port, path or scheme is some other registry.
    for url in [
        "sparse+http://127.0.0.1:7879/index/",
        "sparse+http://127.0.0.1:7878/dl/",
        "sparse+http://127.0.0.1:7878/upstream/index/",
        "sparse+https://127.0.0.1:7878/index/",
        "http://127.0.0.1:7878/index/",
    ] {
        assert_eq!(f.run(&get(url)), NOT_FOUND, "{url}");
    }
}

#[test]
fn daemon_url_without_local_token_says_run_init() {
    let f = Fixture::new();
    f.store.0.lock().unwrap().clear();
    let reply: serde_json::Value =
        serde_json::from_str(&f.run(&get("sparse+http://127.0.0.1:7878/index/"))).unwrap();
    assert_eq!(reply["Err"]["kind"], "other", "{reply}");
    let message = reply["Err"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("privreg's local token (config dir "),
        "{message}"
    );
    assert!(
        message.ends_with("run `privreg init` to create it"),
        "{message}"
    );
}

#[test]
fn login_and_logout_refused_for_the_daemon() {
    let f = Fixture::new();
    let url = "sparse+http://127.0.0.1:7878/index/";
    for request in [login(url, "new-token-value"), logout(url)] {
        let reply: serde_json::Value = serde_json::from_str(&f.run(&request)).unwrap();
        assert_eq!(reply["Err"]["kind"], "other", "{reply}");
        let message = reply["Err"]["message"].as_str().unwrap();
        assert!(message.contains("managed by `privreg init`"), "{message}");
        assert!(!message.contains("new-token-value"), "{message}");
    }
    assert_eq!(f.run(&get(url)), ok_get(LOCAL), "local token unchanged");
}

#[test]
fn unknown_requests_and_arguments() {
    let f = Fixture::new();
    let unknown =
        format!(r#"{{"v":1,"registry":{{"index-url":"{REG}"}},"kind":"frobnicate","args":[]}}"#);
    assert_eq!(
        f.run(&unknown),
        r#"{"Err":{"kind":"operation-not-supported"}}"#
    );
    let with_args = format!(
        r#"{{"v":1,"registry":{{"index-url":"{REG}"}},"kind":"get","operation":"read","args":["hunter2"]}}"#
    );
    assert_eq!(
        f.run(&with_args),
        r#"{"Err":{"kind":"other","message":"cargo-credential-privreg takes no arguments (it was given 1)","caused-by":[]}}"#
    );
}

#[test]
fn bad_login_tokens_are_refused_without_echo() {
    let f = Fixture::new();
    // (cargo-credential's borrowed strings cannot hold JSON escapes, so control characters
    // only reach the provider typed at a terminal; `Token::new` refuses those too.)
    let reply = f.run(&login(REG, "   "));
    assert_eq!(
        reply,
        r#"{"Err":{"kind":"other","message":"the token is not usable: it is empty","caused-by":[]}}"#
    );
    assert!(f.store.0.lock().unwrap().get(REG).is_none());
}

#[test]
fn keyring_errors_are_reported_and_not_opened_needlessly() {
    let f = Fixture::new();
    let line = get(REG);
    let req: CredentialRequest<'_> = serde_json::from_str(&line).unwrap();
    let result = perform::<MemStore>(
        &f.setup,
        || {
            Err(SecretsError::NoStore {
                tried: vec![(StoreKind::SecretService, "no bus".to_owned())],
            })
        },
        &req.registry,
        &req.action,
        &req.args,
    );
    let reply: serde_json::Value = serde_json::to_value(&result).unwrap();
    assert_eq!(reply["Err"]["kind"], "other");
    assert!(
        reply["Err"]["message"]
            .as_str()
            .unwrap()
            .starts_with("no keyring answered (secret service: no bus); start a secret service"),
        "{reply}"
    );
    // Refusals and unknown requests need no keyring.
    let line = logout("sparse+http://127.0.0.1:7878/index/");
    let req: CredentialRequest<'_> = serde_json::from_str(&line).unwrap();
    let result = perform::<MemStore>(
        &f.setup,
        || panic!("keyring opened"),
        &req.registry,
        &req.action,
        &req.args,
    );
    assert!(result.is_err());
}

#[test]
fn daemon_addresses() {
    let addrs: Vec<SocketAddr> = vec!["0.0.0.0:7000".parse().unwrap()];
    assert!(served_by_daemon(
        "sparse+http://127.0.0.1:7000/index/",
        &addrs
    ));
    assert!(served_by_daemon(
        "sparse+http://localhost:7000/index/",
        &addrs
    ));
    assert!(!served_by_daemon(
        "sparse+http://10.1.2.3:7000/index/",
        &addrs
    ));
    let v6: Vec<SocketAddr> = vec!["[::1]:7000".parse().unwrap()];
    assert!(served_by_daemon("sparse+http://[::1]:7000/index/", &v6));
    assert!(!served_by_daemon(
        "sparse+http://127.0.0.1:7000/index/",
        &v6
    ));
    assert!(!served_by_daemon(
        "sparse+http://127.0.0.1:7000/index/",
        &[]
    ));
    assert!(!served_by_daemon(
        "sparse+http://127.0.0.1:7000/upstream/a/b/index/",
        &addrs
    ));
    assert!(!served_by_daemon(
        "sparse+http://127.0.0.1:7000/index/?x=1",
        &addrs
    ));
}

#[test]
fn daemon_state_file() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(read_daemon_addr(dir.path()), None);
    std::fs::write(
        dir.path().join(privreg_shared::protocol::DAEMON_STATE_FILE),
        r#"{"addr":"127.0.0.1:41234","pid":77}"#,
    )
    .unwrap();
    assert_eq!(
        read_daemon_addr(dir.path()),
        Some("127.0.0.1:41234".parse().unwrap())
    );
    std::fs::write(
        dir.path().join(privreg_shared::protocol::DAEMON_STATE_FILE),
        "garbage",
    )
    .unwrap();
    assert_eq!(read_daemon_addr(dir.path()), None);
}
