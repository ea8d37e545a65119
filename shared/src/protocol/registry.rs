//! A sparse registry's `config.json`: the one the daemon serves for each of its views, and the
//! ones it and `privreg upstream check` read from upstreams.

use serde::Serialize;
use serde_json::Value;

/// `{"dl": …, "api": …, "auth-required": …}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RegistryConfig {
    /// The download URL template; cargo needs it. The daemon always writes one; an upstream's
    /// file may lack it, which `privreg upstream check` reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dl: Option<String>,
    /// The web API's base URL (search, publish); registries without one leave it out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    /// Whether cargo must send a token for every request.
    #[serde(rename = "auth-required")]
    pub auth_required: bool,
}

impl RegistryConfig {
    /// Reads an upstream's `config.json` as leniently as cargo does: unknown keys are ignored, and
    /// a key of the wrong type (or a document that is not an object) counts as absent. An error
    /// only for bytes that are not JSON at all.
    pub fn parse(data: &[u8]) -> Result<RegistryConfig, serde_json::Error> {
        let v: Value = serde_json::from_slice(data)?;
        let text = |key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
        Ok(RegistryConfig {
            dl: text("dl"),
            api: text("api"),
            auth_required: v
                .get("auth-required")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
    }

    /// The bytes the daemon serves.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a registry config serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_format_is_pinned() {
        let c = RegistryConfig {
            dl: Some("http://127.0.0.1:7878/dl/{crate}/{version}/{sha256-checksum}".into()),
            api: Some("http://127.0.0.1:7878".into()),
            auth_required: true,
        };
        let text = br#"{"dl":"http://127.0.0.1:7878/dl/{crate}/{version}/{sha256-checksum}","api":"http://127.0.0.1:7878","auth-required":true}"#;
        assert_eq!(c.to_bytes(), text);
        assert_eq!(RegistryConfig::parse(text).unwrap(), c);
    }

    #[test]
    fn reading_an_upstream_is_lenient() {
        let c =
            RegistryConfig::parse(br#"{"dl":"https://x/{crate}","other":[1],"api":7}"#).unwrap();
        assert_eq!(
            c,
            RegistryConfig {
                dl: Some("https://x/{crate}".into()),
                api: None,
                auth_required: false,
            }
        );
        assert_eq!(
            RegistryConfig::parse(b"[1, 2]").unwrap(),
            RegistryConfig::default()
        );
        assert!(RegistryConfig::parse(b"<html>").is_err());
        assert!(RegistryConfig::parse(b"").is_err());
    }
}
