//! Upstream tokens: `PRIVREG_TOKEN_<NAME>` first, else the OS keyring entry for the upstream's
//! index URL. Read once per upstream and kept in memory; forgotten when the upstream refuses it
//! (so that a `privreg login` takes effect without a restart) and on every reload.

use std::collections::HashMap;
use std::sync::Mutex;

use privreg_shared::config::{KeyringChoice, Upstream};
use privreg_shared::secrets::{self, Keyring, SecretsError, Token};

pub(crate) struct Tokens {
    choice: Mutex<KeyringChoice>,
    keyring: Mutex<Option<Keyring>>,
    /// By (upstream name, index URL): the token, or `None` when there is none.
    known: Mutex<HashMap<(String, String), Option<Token>>>,
}

impl Tokens {
    pub(crate) fn new(choice: KeyringChoice, keyring: Option<Keyring>) -> Tokens {
        Tokens {
            choice: Mutex::new(choice),
            keyring: Mutex::new(keyring),
            known: Mutex::default(),
        }
    }

    /// Forgets every token (after a reload), and switches store if the config asks for another.
    pub(crate) fn reset(&self, choice: KeyringChoice) {
        let mut current = self.choice.lock().expect("tokens lock");
        if *current != choice {
            *current = choice;
            *self.keyring.lock().expect("tokens lock") = None;
        }
        self.known.lock().expect("tokens lock").clear();
    }

    /// Forgets one upstream's token, e.g. after it answered 401 or 403.
    pub(crate) fn forget(&self, up: &Upstream) {
        self.known
            .lock()
            .expect("tokens lock")
            .remove(&(up.name.to_string(), up.index.clone()));
    }

    /// The token to send to `up`, if any. Blocking (the keyring may be a D-Bus round trip):
    /// called through [`Tokens::get`].
    fn lookup(&self, up: &Upstream) -> Option<Token> {
        match secrets::token_from_env(&up.name) {
            Ok(Some(t)) => return Some(t),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(upstream = %up.name, error = %e, "ignoring the environment token");
            }
        }
        let keyring = {
            let mut k = self.keyring.lock().expect("tokens lock");
            if k.is_none() {
                let choice = *self.choice.lock().expect("tokens lock");
                match Keyring::open(choice) {
                    Ok(opened) => *k = Some(opened),
                    Err(e) => {
                        tracing::debug!(upstream = %up.name, error = %e, "no keyring; sending no token");
                        return None;
                    }
                }
            }
            k.clone()?
        };
        match secrets::upstream_token(&keyring, &up.name, &up.index) {
            Ok(t) => Some(t),
            Err(SecretsError::NoEntry { .. }) => None,
            Err(e) => {
                tracing::warn!(upstream = %up.name, error = %e, "cannot read the upstream's token");
                None
            }
        }
    }

    /// The token to send to `up`, if any.
    pub(crate) fn get(&self, up: &Upstream) -> Option<Token> {
        let key = (up.name.to_string(), up.index.clone());
        if let Some(t) = self.known.lock().expect("tokens lock").get(&key) {
            return t.clone();
        }
        let token = tokio::task::block_in_place(|| self.lookup(up));
        self.known
            .lock()
            .expect("tokens lock")
            .insert(key, token.clone());
        token
    }
}

pub(crate) use privreg_shared::http::authorization;
