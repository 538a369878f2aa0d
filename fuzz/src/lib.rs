//! The checks behind pullcache's fuzz targets, one function per target.
//!
//! Each function takes the raw fuzz input, runs the real parser on it and
//! asserts the parser's invariants; a panic (from the parser or from an
//! assertion here) is a finding. It returns `false` for inputs that are not
//! worth keeping in the corpus (not UTF-8, or not in the target's input
//! format) and `true` otherwise.
//!
//! This file is shared: the fuzz targets in `fuzz/fuzz_targets/` call it, and
//! the regression test meant for the main workspace includes it with
//! `#[path = "../../fuzz/src/lib.rs"] mod checks;` so a saved crash input is
//! replayed against exactly the same assertions. It may therefore use only
//! `std`, `pullcache` and `pullcache_config`. See docs/fuzzing.md.

use std::net::IpAddr;

use pullcache::connect::{ConnectTarget, TargetHost};
use pullcache::registry::challenge::Challenge;
use pullcache::registry::digest::Digest;
use pullcache::registry::range::RangeRequest;
use pullcache::registry::route::{Reference, RegistryRoute, RouteKind};

/// One target's checks: the input in, "keep it in the corpus" out.
pub type Check = fn(&[u8]) -> bool;

/// Every target by name, for replaying stored inputs.
pub const TARGETS: &[(&str, Check)] = &[
    ("connect_authority", connect_authority),
    ("registry_route", registry_route),
    ("range_header", range_header),
    ("www_authenticate", www_authenticate),
    ("config_toml", config_toml),
];

/// `CONNECT` authorities: `ConnectTarget::parse`, and whatever it accepts
/// prints back to an authority that parses to the same value.
pub fn connect_authority(data: &[u8]) -> bool {
    let Ok(input) = std::str::from_utf8(data) else {
        return false;
    };
    let Ok(target) = ConnectTarget::parse(input) else {
        return true;
    };
    assert_ne!(target.port, 0, "port 0 accepted from {input:?}");
    let shown = target.to_string();
    assert_eq!(
        ConnectTarget::parse(&shown).as_ref(),
        Ok(&target),
        "{input:?} parsed, but its display {shown:?} does not parse back to it"
    );
    match &target.host {
        TargetHost::Name(name) => {
            assert!(!name.is_empty(), "empty name from {input:?}");
            assert!(!name.ends_with('.'), "trailing dot kept from {input:?}");
            assert!(
                !name.bytes().any(|b| b.is_ascii_uppercase()),
                "name not lowercased from {input:?}"
            );
            assert!(
                name.parse::<IpAddr>().is_err(),
                "IP literal {name:?} kept as a name from {input:?}"
            );
            assert_eq!(
                pullcache_config::normalize_host(name).as_deref(),
                Some(name.as_str()),
                "name from {input:?} is not in normal form"
            );
        }
        TargetHost::Ip(ip) => assert_eq!(target.host_str(), ip.to_string()),
    }
    // The https:// form drops only a default port and must still name the
    // same target.
    let https = target.https_authority();
    let with_port = if target.port == 443 {
        format!("{https}:443")
    } else {
        https
    };
    assert_eq!(
        ConnectTarget::parse(&with_port).as_ref(),
        Ok(&target),
        "https_authority of {input:?} names another target"
    );
    true
}

/// Registry API paths, digests and manifest references.
pub fn registry_route(data: &[u8]) -> bool {
    let Ok(input) = std::str::from_utf8(data) else {
        return false;
    };

    if let Ok(digest) = Digest::parse(input) {
        check_digest(&digest, input);
    }

    if let Some(reference) = Reference::parse(input) {
        match &reference {
            Reference::Digest(digest) => check_digest(digest, input),
            Reference::Tag(tag) => check_tag(tag, input),
        }
        assert_eq!(
            reference.to_string(),
            input,
            "reference does not print as read"
        );
    }

    if let Some(route) = RegistryRoute::parse(input) {
        let name = route.name.as_str();
        assert!(!name.is_empty(), "empty repo name from {input:?}");
        assert!(name.len() <= 255, "repo name over 255 bytes from {input:?}");
        assert!(!name.contains(".."), "repo name {name:?} has '..'");
        assert!(!name.contains("//"), "repo name {name:?} has '//'");
        assert!(!name.starts_with('/'), "repo name {name:?} starts with '/'");
        assert!(!name.ends_with('/'), "repo name {name:?} ends with '/'");
        assert!(
            name.bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' | b'/')),
            "repo name {name:?} has a byte outside [a-z0-9._/-]"
        );
        assert!(
            name.split('/').all(|c| c != "." && c != ".."),
            "repo name {name:?} has a dot component"
        );
        let rebuilt = match &route.kind {
            RouteKind::Blob(digest) => {
                check_digest(digest, &digest.to_string());
                format!("/v2/{name}/blobs/{digest}")
            }
            RouteKind::Manifest(reference) => {
                match reference {
                    Reference::Digest(digest) => check_digest(digest, &digest.to_string()),
                    Reference::Tag(tag) => check_tag(tag, tag),
                }
                format!("/v2/{name}/manifests/{reference}")
            }
        };
        // The route is a reading of the path, not a rewrite of it.
        assert_eq!(rebuilt, input, "route does not print back as the path");
    }
    true
}

fn check_digest(digest: &Digest, input: &str) {
    let hex = digest.hex();
    assert_eq!(
        hex.len(),
        digest.algorithm().hex_len(),
        "digest hex of the wrong length from {input:?}"
    );
    assert!(
        hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "digest hex {hex:?} is not lowercase hex (from {input:?})"
    );
    let shown = digest.to_string();
    assert_eq!(
        Digest::parse(&shown).as_ref(),
        Ok(digest),
        "digest display {shown:?} does not parse back"
    );
    assert_eq!(shown, input, "digest does not print as read");
}

fn check_tag(tag: &str, input: &str) {
    assert!(
        !tag.is_empty() && tag.len() <= 128,
        "tag length {} from {input:?}",
        tag.len()
    );
    assert!(
        !tag.starts_with(['.', '-']),
        "tag {tag:?} starts with '.' or '-'"
    );
    assert!(
        tag.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')),
        "tag {tag:?} has a byte outside [A-Za-z0-9_.-]"
    );
}

/// `Range` headers against a blob size. Input format: the size in decimal,
/// then optionally a newline and the header value (`100\nbytes=0-9`); no
/// newline means no `Range` header.
pub fn range_header(data: &[u8]) -> bool {
    let Ok(input) = std::str::from_utf8(data) else {
        return false;
    };
    let (size, header) = match input.split_once('\n') {
        Some((size, header)) => (size, Some(header)),
        None => (input, None),
    };
    let Ok(size) = size.parse::<u64>() else {
        return false;
    };

    let answer = RangeRequest::parse(header, size);
    match answer {
        RangeRequest::Partial { start, end } => {
            assert!(
                start <= end && end < size,
                "{header:?} on {size} bytes gave {start}-{end}"
            );
        }
        RangeRequest::Full => {}
        RangeRequest::Unsatisfiable => {
            assert!(header.is_some(), "no header, yet unsatisfiable");
        }
    }
    if header.is_none() {
        assert_eq!(answer, RangeRequest::Full);
    }

    // A plain `bytes=a-b` inside the blob is served exactly as asked.
    if let Some((a, b)) = header
        .and_then(|h| h.strip_prefix("bytes="))
        .and_then(|spec| spec.split_once('-'))
    {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
        if digits(a) && digits(b) {
            if let (Ok(a), Ok(b)) = (a.parse::<u64>(), b.parse::<u64>()) {
                if a <= b && b < size {
                    assert_eq!(
                        answer,
                        RangeRequest::Partial { start: a, end: b },
                        "{header:?} on {size} bytes"
                    );
                }
            }
        }
    }
    true
}

/// `WWW-Authenticate` values. A parsed Bearer challenge, written back out
/// with quoted parameters, parses to the same challenge.
pub fn www_authenticate(data: &[u8]) -> bool {
    let Ok(input) = std::str::from_utf8(data) else {
        return false;
    };
    match Challenge::parse(input) {
        None | Some(Challenge::Basic) => {}
        Some(Challenge::Other(scheme)) => {
            assert!(!scheme.is_empty(), "empty scheme from {input:?}");
            assert!(
                !scheme.eq_ignore_ascii_case("basic") && !scheme.eq_ignore_ascii_case("bearer"),
                "{scheme:?} reported as another scheme"
            );
            assert!(
                !scheme.bytes().any(|b| b.is_ascii_whitespace() || b == b'"'),
                "scheme {scheme:?} has whitespace or a quote"
            );
        }
        Some(bearer @ Challenge::Bearer { .. }) => {
            let Challenge::Bearer { realm, service } = &bearer else {
                unreachable!()
            };
            let mut rebuilt = format!("Bearer realm=\"{}\"", quote(realm));
            if let Some(service) = service {
                rebuilt.push_str(&format!(",service=\"{}\"", quote(service)));
            }
            assert_eq!(
                Challenge::parse(&rebuilt).as_ref(),
                Some(&bearer),
                "{input:?} -> {rebuilt:?} does not parse back"
            );
        }
    }
    true
}

fn quote(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A whole config file: `Config::from_toml_str` must return, never panic.
/// The file may name `upstream.ca_files`, which validation opens (only
/// opens); the fuzz target screens out special files before calling this.
pub fn config_toml(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let overrides = pullcache_config::Overrides::default();
    let first = pullcache_config::Config::from_toml_str(text, "fuzz", &overrides);
    if let Ok(config) = &first {
        assert_ne!(config.data_dir.as_os_str(), "", "empty data_dir accepted");
    }
    true
}
