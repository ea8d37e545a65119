//! Which requests carry an upstream's token: where cargo itself would send that registry's
//! token, and nowhere else. Pure: no I/O.
//!
//! Cargo reads `config.json` without a token first, and again with the token only when that
//! answer was a 401. Index files and downloads carry the token only when the registry requires
//! authentication (its `config.json` says `auth-required: true`, or answered 401); the web API
//! calls that act for an owner (publish, yank, unyank, owners) always carry it, to the `api` URL;
//! a search carries it only when the registry requires authentication. So a token never
//! travels to a public registry's download host.

use privreg_shared::store::UpstreamPath;

/// What a request to an upstream is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestKind {
    /// Its `config.json`.
    Config,
    /// An index file.
    Index,
    /// A `.crate` file, from its `dl` URL.
    Download,
    /// A web API call made for an owner: publish, yank, unyank, owners.
    Owner,
    /// A web API search.
    Search,
}

impl RequestKind {
    /// The kind of request for an index-side file.
    pub(crate) fn of(rel: UpstreamPath<'_>) -> RequestKind {
        match rel {
            UpstreamPath::Config => RequestKind::Config,
            UpstreamPath::Index(_) => RequestKind::Index,
        }
    }
}

/// Whether a request of `kind` carries the upstream's token, given whether the upstream requires
/// authentication (as far as is known: see [`says_auth_required`]).
pub(super) fn carries_token(kind: RequestKind, auth_required: bool) -> bool {
    match kind {
        RequestKind::Owner => true,
        RequestKind::Config | RequestKind::Index | RequestKind::Download | RequestKind::Search => {
            auth_required
        }
    }
}

/// What to do after an upstream refused a request that went without the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// Nothing more: the refusal stands.
    Stands,
    /// The registry requires authentication (cargo's probe: a 401 for `config.json`): note
    /// that, and ask again with the token.
    AuthRequired,
    /// Read what `config.json` says first (cargo reads it before any index file); ask again with
    /// the token only if it requires authentication.
    AskConfig,
}

/// What an answer with `status` to a request of `kind` means when it went without the token
/// (`sent_token` false): only a 401 is a request for authentication, as in cargo.
pub(super) fn refused(kind: RequestKind, status: u16, sent_token: bool) -> Refused {
    match kind {
        _ if status != 401 || sent_token => Refused::Stands,
        RequestKind::Config => Refused::AuthRequired,
        RequestKind::Index => Refused::AskConfig,
        RequestKind::Download | RequestKind::Owner | RequestKind::Search => Refused::Stands,
    }
}

/// Whether an upstream's `config.json` says `"auth-required": true` (unreadable: no).
pub(super) fn says_auth_required(config_json: &[u8]) -> bool {
    privreg_shared::protocol::RegistryConfig::parse(config_json).is_ok_and(|c| c.auth_required)
}

#[cfg(test)]
mod tests {
    use super::*;
    use RequestKind::*;

    #[test]
    fn the_token_goes_where_cargo_sends_it() {
        // (kind, token when auth is not required, token when it is)
        let cases = [
            (Config, false, true),
            (Index, false, true),
            (Download, false, true),
            (Owner, true, true),
            (Search, false, true),
        ];
        for (kind, open, closed) in cases {
            assert_eq!(carries_token(kind, false), open, "{kind:?} open");
            assert_eq!(carries_token(kind, true), closed, "{kind:?} auth-required");
        }
    }

    #[test]
    fn only_a_401_without_the_token_asks_again() {
        use Refused::*;
        // (kind, status, token sent, what next)
        let cases = [
            (Config, 401, false, AuthRequired),
            (Config, 401, true, Stands),
            (Config, 403, false, Stands),
            (Config, 404, false, Stands),
            (Index, 401, false, AskConfig),
            (Index, 401, true, Stands),
            (Index, 403, false, Stands),
            (Index, 404, false, Stands),
            (Download, 401, false, Stands),
            (Owner, 401, false, Stands),
            (Search, 401, false, Stands),
        ];
        for (kind, status, sent, want) in cases {
            assert_eq!(
                refused(kind, status, sent),
                want,
                "{kind:?} {status} {sent}"
            );
        }
    }

    #[test]
    fn auth_required_is_read_from_config_json() {
        let cases = [
            (r#"{"dl":"http://h/dl","auth-required":true}"#, true),
            (r#"{"dl":"http://h/dl","auth-required":false}"#, false),
            (r#"{"dl":"http://h/dl"}"#, false),
            (r#"{"dl":"http://h/dl","auth-required":"yes"}"#, false),
            (r#"{"dl":"http://h/dl","auth_required":true}"#, false),
            ("not json", false),
            ("", false),
        ];
        for (json, want) in cases {
            assert_eq!(says_auth_required(json.as_bytes()), want, "{json}");
        }
        let key = |k: &CrateName| RequestKind::of(UpstreamPath::Index(k));
        assert_eq!(key(&CrateName::new("serde").unwrap()), Index);
        assert_eq!(RequestKind::of(UpstreamPath::Config), Config);
    }

    use privreg_shared::CrateName;
}
