//! Runs cargo's own test registry server (`cargo-test-support`) as a separate process, so that
//! tests can start, fault and stop upstream registries. The server is cargo's; this file only
//! launches it and relays commands.
//!
//! Usage: `privreg-test-registry --root DIR [--alternative] [--auth-required]
//! [--watch CRATE,…]`. Prints one JSON line `{"index":…,"api":…,"token":…}` when ready, then
//! reads JSON commands from stdin, one per line, answering each with one JSON line:
//! - `{"publish":{"name":…,"vers":…,"deps":[{"name":…,"req":…,"registry":null|"alternative"}],
//!   "yanked":false,"lib":"…rust source…","pubtime":"YYYY-MM-DDTHH:MM:SSZ"}}` → `{"cksum":…}`
//! - `{"mode":"ok"|"500"|"503"|"hang"|"slow"|"hold"|"redirect BASE"}` → `{"ok":true}`: how the
//!   index files of the crates named in `--watch` (and `config.json`) are answered from now on
//!   (`slow`: after 500 ms; `hold`: not until the mode changes, then as the new mode says — a
//!   request in flight for as long as a test needs, released by an event rather than a clock;
//!   `redirect BASE`: 302 to BASE followed by the same path).
//! - `{"requests":true}` → `{"requests":[{"path":…,"if_none_match":…,"if_modified_since":…,
//!   "authorization":…}]}`: every request for those files so far.
//! - `{"api":true}` → `{"api":[{"method":…,"path":…,"authorization":…,"body":…}]}`: every
//!   owners, yank and unyank request for the crates named in `--api` so far.
//!
//! `--api NAME@VER[@VER…],…`: cargo's server only answers "ok" to owners, yank and unyank; for
//! these crates and versions they work instead (with the registry's token): owners are kept
//! (`cargo owner --list` shows them), and a yank or unyank rewrites the version's index line.
//!
//! It exits when stdin closes.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use cargo_test_support::registry::{
    Dependency, Package, RegistryBuilder, Request, Response, Token,
};

/// The `hold` mode's number.
const HOLD: u8 = 6;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Dep {
    name: String,
    req: String,
    #[serde(default)]
    registry: Option<String>,
    #[serde(default)]
    package: Option<String>,
    #[serde(default)]
    dev: bool,
    #[serde(default)]
    optional: bool,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Publish {
    name: String,
    vers: String,
    #[serde(default)]
    deps: Vec<Dep>,
    #[serde(default)]
    yanked: bool,
    #[serde(default)]
    lib: Option<String>,
    #[serde(default)]
    features: std::collections::BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pubtime: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum Command {
    Publish(Publish),
    Mode(String),
    Requests(serde::de::IgnoredAny),
    Api(serde::de::IgnoredAny),
}

fn index_path(name: &str) -> String {
    let name = name.to_ascii_lowercase();
    match name.len() {
        1 => format!("1/{name}"),
        2 => format!("2/{name}"),
        3 => format!("3/{}/{name}", &name[..1]),
        _ => format!("{}/{}/{name}", &name[..2], &name[2..4]),
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut root, mut alternative, mut auth, mut faults) = (None, false, false, Vec::new());
    let mut api_crates: Vec<String> = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--root" => root = args.next().map(PathBuf::from),
            "--alternative" => alternative = true,
            "--auth-required" => auth = true,
            "--watch" => {
                faults = args
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .map(str::to_owned)
                    .collect();
            }
            "--api" => {
                api_crates = args
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .map(str::to_owned)
                    .collect();
            }
            other => panic!("unknown argument {other}"),
        }
    }
    let root = root.expect("--root DIR is required");
    std::fs::create_dir_all(&root).expect("create --root");
    let tmp: &'static str = Box::leak(root.display().to_string().into_boxed_str());
    let _guard = cargo_test_support::paths::init_root(tmp, PathBuf::from("registry"));

    let mode = Arc::new(AtomicU8::new(0));
    let seen: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let redirect_to: Arc<Mutex<String>> = Arc::default();
    // A token of this run's own, so that finding it anywhere else means it leaked.
    let token = format!(
        "test-registry-token-{}-{}",
        std::process::id(),
        root.display().to_string().len()
    );
    let mut builder = RegistryBuilder::new()
        .http_index()
        .http_api()
        .token(Token::Plaintext(token.clone()));
    if alternative {
        // cargo-test-support publishes "alternative" crates to the registry of that name.
        builder = builder.alternative();
    }
    if auth {
        builder = builder.auth_required();
    }
    let mut fault_paths: Vec<String> = vec!["/index/config.json".to_owned()];
    for krate in faults.iter().filter(|f| !f.is_empty()) {
        fault_paths.push(format!("/index/{}", index_path(krate)));
    }
    for path in fault_paths {
        let (mode, seen, token) = (mode.clone(), seen.clone(), token.clone());
        let redirect_to = redirect_to.clone();
        builder = builder.add_responder(path, move |req: &Request, server| {
            seen.lock().expect("seen lock").push(serde_json::json!({
                "path": req.url.path(),
                "if_none_match": req.if_none_match,
                "if_modified_since": req.if_modified_since,
                "authorization": req.authorization,
            }));
            // Custom responders bypass the server's own check; keep auth-required real.
            if auth && req.authorization.as_deref() != Some(token.as_str()) {
                return server.unauthorized(req);
            }
            let mut m = mode.load(Ordering::SeqCst);
            while m == HOLD {
                std::thread::sleep(std::time::Duration::from_millis(5));
                m = mode.load(Ordering::SeqCst);
            }
            match m {
                1 => server.internal_server_error(req),
                2 => Response {
                    code: 503,
                    headers: vec!["Retry-After: 1".into()],
                    body: b"unavailable".to_vec(),
                },
                3 => {
                    std::thread::sleep(std::time::Duration::from_secs(20));
                    server.internal_server_error(req)
                }
                4 => {
                    std::thread::sleep(std::time::Duration::from_millis(500));
                    server.index(req)
                }
                5 => Response {
                    code: 302,
                    headers: vec![format!(
                        "Location: {}{}",
                        redirect_to.lock().expect("redirect lock"),
                        req.url.path()
                    )],
                    body: Vec::new(),
                },
                _ => server.index(req),
            }
        });
    }
    let api_seen: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let index_root = root.join("cit/registry").join(if alternative {
        "alternative-registry"
    } else {
        "registry"
    });
    for spec in api_crates.iter().filter(|c| !c.is_empty()) {
        let mut parts = spec.split('@');
        let name = parts.next().expect("crate name").to_owned();
        let owners: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(vec!["first-owner".into()]));
        let record = {
            let (api_seen, token) = (api_seen.clone(), token.clone());
            move |req: &Request| -> bool {
                api_seen.lock().expect("api lock").push(serde_json::json!({
                    "method": req.method,
                    "path": req.url.path(),
                    "authorization": req.authorization,
                    "body": req.body.as_deref().map(String::from_utf8_lossy),
                }));
                req.authorization.as_deref() == Some(token.as_str())
            }
        };
        let rec = record.clone();
        builder = builder.add_responder(format!("/api/v1/crates/{name}/owners"), move |req, server| {
            if !rec(req) {
                return server.unauthorized(req);
            }
            let mut owners = owners.lock().expect("owners lock");
            let users: Vec<String> = req
                .body
                .as_deref()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
                .and_then(|v| serde_json::from_value(v["users"].clone()).ok())
                .unwrap_or_default();
            let body = match req.method.to_ascii_lowercase().as_str() {
                "get" => serde_json::json!({ "users": owners
                    .iter()
                    .enumerate()
                    .map(|(i, login)| serde_json::json!({ "id": i + 1, "login": login, "name": null }))
                    .collect::<Vec<_>>() }),
                "put" => {
                    owners.extend(users.iter().cloned());
                    serde_json::json!({ "ok": true, "msg": format!("added {}", users.join(", ")) })
                }
                _ => {
                    owners.retain(|o| !users.contains(o));
                    serde_json::json!({ "ok": true, "msg": format!("removed {}", users.join(", ")) })
                }
            };
            Response {
                code: 200,
                headers: vec![],
                body: body.to_string().into_bytes(),
            }
        });
        for vers in parts {
            for (action, yanked) in [("yank", true), ("unyank", false)] {
                let rec = record.clone();
                let (file, vers) = (index_root.join(index_path(&name)), vers.to_owned());
                builder = builder.add_responder(
                    format!("/api/v1/crates/{name}/{vers}/{action}"),
                    move |req, server| {
                        if !rec(req) {
                            return server.unauthorized(req);
                        }
                        let text = std::fs::read_to_string(&file).expect("index file");
                        let lines: Vec<String> = text
                            .lines()
                            .map(|l| {
                                let mut v: serde_json::Value =
                                    serde_json::from_str(l).expect("index line");
                                if v["vers"] == vers.as_str() {
                                    v["yanked"] = yanked.into();
                                }
                                v.to_string()
                            })
                            .collect();
                        std::fs::write(&file, lines.join("\n") + "\n").expect("write index");
                        server.ok(req)
                    },
                );
            }
        }
    }
    let registry = builder.build();
    let out = std::io::stdout();
    let reply = |v: serde_json::Value| {
        let mut o = out.lock();
        writeln!(o, "{v}").expect("stdout");
        o.flush().expect("stdout");
    };
    reply(serde_json::json!({
        "index": registry.index_url().to_string(),
        "api": registry.api_url().to_string(),
        "token": registry.token(),
    }));

    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let cmd: Command = match serde_json::from_str(&line) {
            Ok(c) => c,
            Err(e) => {
                reply(serde_json::json!({ "error": e.to_string() }));
                continue;
            }
        };
        match cmd {
            Command::Publish(p) => {
                let mut pkg = Package::new(&p.name, &p.vers);
                pkg.alternative(alternative).yanked(p.yanked);
                for d in &p.deps {
                    let mut dep = Dependency::new(&d.name, &d.req);
                    if let Some(r) = &d.registry {
                        dep.registry(r);
                    }
                    if let Some(pk) = &d.package {
                        dep.package(pk);
                    }
                    if d.dev {
                        dep.dev();
                    }
                    dep.optional(d.optional);
                    pkg.add_dep(&dep);
                }
                for (feature, enables) in &p.features {
                    let enables: Vec<&str> = enables.iter().map(String::as_str).collect();
                    pkg.feature(feature, &enables);
                }
                if let Some(lib) = &p.lib {
                    pkg.file("src/lib.rs", lib);
                }
                if let Some(t) = &p.pubtime {
                    pkg.pubtime(t);
                }
                let cksum = pkg.publish();
                reply(serde_json::json!({ "cksum": cksum }));
            }
            Command::Api(_) => {
                let seen = api_seen.lock().expect("api lock").clone();
                reply(serde_json::json!({ "api": seen }));
            }
            Command::Requests(_) => {
                let seen = seen.lock().expect("seen lock").clone();
                reply(serde_json::json!({ "requests": seen }));
            }
            Command::Mode(m) => {
                let v = match m.as_str() {
                    "ok" => 0,
                    "500" => 1,
                    "503" => 2,
                    "hang" => 3,
                    "slow" => 4,
                    "hold" => HOLD,
                    m if m.starts_with("redirect ") => {
                        m["redirect ".len()..]
                            .clone_into(&mut redirect_to.lock().expect("redirect lock"));
                        5
                    }
                    other => {
                        reply(serde_json::json!({ "error": format!("unknown mode {other}") }));
                        continue;
                    }
                };
                mode.store(v, Ordering::SeqCst);
                reply(serde_json::json!({ "ok": true }));
            }
        }
    }
    drop(registry);
}
