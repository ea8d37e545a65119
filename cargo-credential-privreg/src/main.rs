//! `cargo-credential-privreg`: cargo's credential provider for privreg.
//!
//! Cargo runs it with `--cargo-plugin` and speaks the credential protocol on stdin/stdout (the
//! `cargo-credential` crate does that part; nothing else here writes to stdout).
//!
//! - For an index URL served by the local privreg daemon (`sparse+http://ADDR/index/` and
//!   `sparse+http://ADDR/upstream/NAME/index/`, ADDR from `config.toml`'s `listen` or, when
//!   that uses port 0, from the daemon's `daemon.json`), `get` returns the daemon's local
//!   token; `login` and `logout` are refused, because `privreg init` manages that token.
//! - For any other registry, the token stored in the OS keyring under its index URL:
//!   `cargo login` stores it, `cargo logout` deletes it, and `get` answers `not-found` when
//!   there is none, so that cargo tries its next provider.
//!
//! Configure it in cargo's config:
//!
//! ```toml
//! [registries.acme]
//! index = "sparse+https://cargo.acme.example/index/"
//! credential-provider = ["cargo-credential-privreg"]
//! ```

mod provider;

fn main() {
    cargo_credential::main(provider::PrivregCredential);
}
