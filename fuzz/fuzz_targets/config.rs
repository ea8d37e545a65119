//! The `config.toml` loader (`Config::parse`): any text either gives a config that holds the
//! validation's promises or an error that names a line of the file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use privreg_shared::config::{Config, parse_index_url};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/cfg/config.toml");
    let config = match Config::parse(path, text) {
        Ok(c) => c,
        Err(e) => {
            assert_eq!(e.path, path);
            if let Some(line) = e.line {
                let lines = text.split('\n').count();
                assert!((1..=lines).contains(&line), "line {line} of {lines}: {e}");
            }
            let shown = e.to_string();
            assert!(shown.starts_with("/cfg/config.toml:"), "{shown}");
            assert!(!e.message.contains('\n'), "multi-line message: {shown:?}");
            return;
        }
    };
    assert!(config.upstreams.iter().filter(|u| u.publish).count() <= 1);
    for (i, u) in config.upstreams.iter().enumerate() {
        assert!(!u.name.is_empty());
        assert!(
            u.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{:?}",
            u.name
        );
        assert_eq!(config.upstream(&u.name).map(|f| &f.name), Some(&u.name));
        assert!(
            config.upstreams[..i].iter().all(|o| o.name != u.name),
            "{} twice",
            u.name
        );
        assert_ne!(u.priority, 0);
        assert!(!u.timeout.is_zero());
        assert!(matches!(u.base.scheme(), "http" | "https"));
        assert!(!u.host().is_empty(), "{} has no host", u.index);
        assert!(u.base.path().ends_with('/'), "{}", u.base);
        assert!(u.base.query().is_none() && u.base.fragment().is_none());
        assert!(u.base.username().is_empty() && u.base.password().is_none());
        // The base is a fixed point: checking it again gives it back.
        let again = parse_index_url(&format!("sparse+{}", u.base));
        assert_eq!(again.as_ref(), Ok(&u.base), "{}", u.index);
        let r = u.policy_ref();
        assert_eq!((r.name.as_str(), r.priority), (u.name.as_str(), u.priority));
        // What daemons join onto the base stays on the upstream's host.
        let joined = u
            .base
            .join("config.json")
            .expect("a base takes a relative path");
        assert_eq!(joined.host_str(), u.base.host_str());
    }
});
