//! Which registry API call a request is, by the OCI distribution spec's
//! grammar: `/v2/<name>/blobs/<digest>` and `/v2/<name>/manifests/<ref>`.
//!
//! Anything that does not parse is not ours to cache and is passed through
//! untouched; nothing from the path is ever used as a file name (only a
//! validated [`Digest`] is).

use std::fmt;

use super::digest::Digest;

/// The longest repository name the reference implementation accepts.
const MAX_NAME_LEN: usize = 255;
/// The longest tag the spec allows.
const MAX_TAG_LEN: usize = 128;

/// A validated repository name, e.g. `library/alpine`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

/// A manifest reference: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    /// A tag such as `3.20` (mutable).
    Tag(String),
    /// A digest (immutable).
    Digest(Digest),
}

/// What a cacheable request asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RouteKind {
    /// `/v2/<name>/blobs/<digest>`
    Blob(Digest),
    /// `/v2/<name>/manifests/<reference>`
    Manifest(Reference),
}

/// A registry API path we know how to cache.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RegistryRoute {
    /// The repository.
    pub name: RepoName,
    /// Blob or manifest, and which.
    pub kind: RouteKind,
}

impl RegistryRoute {
    /// Parses a request path (without the query). `None` means "not a
    /// blob or manifest path we cache": pass it through.
    pub fn parse(path: &str) -> Option<RegistryRoute> {
        let rest = path.strip_prefix("/v2/")?;
        let (rest, reference) = rest.rsplit_once('/')?;
        let (name, kind) = rest.rsplit_once('/')?;
        let name = RepoName::parse(name)?;
        let kind = match kind {
            "blobs" => RouteKind::Blob(Digest::parse(reference).ok()?),
            "manifests" => RouteKind::Manifest(Reference::parse(reference)?),
            _ => return None,
        };
        Some(RegistryRoute { name, kind })
    }
}

impl RepoName {
    /// Validates a name: path components of `[a-z0-9]+` joined by `.`,
    /// `_`, `__` or runs of `-`, separated by `/`, at most 255 bytes.
    pub fn parse(name: &str) -> Option<RepoName> {
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return None;
        }
        name.split('/')
            .all(valid_component)
            .then(|| RepoName(name.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    // Between alphanumeric runs: exactly ".", "_" or "__", or any run of "-".
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let ok = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

impl Reference {
    /// A digest if it looks like one (contains `:`), else a tag
    /// `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
    pub fn parse(s: &str) -> Option<Reference> {
        if s.contains(':') {
            return Digest::parse(s).ok().map(Reference::Digest);
        }
        let bytes = s.as_bytes();
        let first_ok = bytes
            .first()
            .is_some_and(|&b| b.is_ascii_alphanumeric() || b == b'_');
        let rest_ok = bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        (first_ok && rest_ok && s.len() <= MAX_TAG_LEN).then(|| Reference::Tag(s.to_owned()))
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(tag) => f.write_str(tag),
            Reference::Digest(digest) => digest.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    mod parse {
        use super::*;

        #[test]
        fn blobs_and_manifests() {
            let blob =
                RegistryRoute::parse(&format!("/v2/library/alpine/blobs/sha256:{HEX}")).unwrap();
            assert_eq!(blob.name.as_str(), "library/alpine");
            assert!(matches!(blob.kind, RouteKind::Blob(ref d) if d.hex() == HEX));

            let tag = RegistryRoute::parse("/v2/a/b/c/manifests/v1.2.3-rc_1").unwrap();
            assert_eq!(tag.name.as_str(), "a/b/c");
            assert_eq!(
                tag.kind,
                RouteKind::Manifest(Reference::Tag("v1.2.3-rc_1".into()))
            );

            let pinned = RegistryRoute::parse(&format!("/v2/x/manifests/sha256:{HEX}")).unwrap();
            assert!(matches!(
                pinned.kind,
                RouteKind::Manifest(Reference::Digest(_))
            ));

            // A component called "blobs" is part of the name, not the route.
            let odd = RegistryRoute::parse(&format!("/v2/foo/blobs/blobs/sha256:{HEX}")).unwrap();
            assert_eq!(odd.name.as_str(), "foo/blobs");
        }

        #[test]
        fn names_follow_the_grammar() {
            for ok in [
                "a",
                "library/alpine",
                "a.b_c__d---e/f0",
                "k8s.gcr.io-x/pause",
            ] {
                assert!(RepoName::parse(ok).is_some(), "{ok}");
            }
            for bad in [
                "", "A", "a/", "/a", "a//b", "a..b", "a___b", "-a", "a-", "a_.b", "..", "a/../b",
                "a%2fb", "a b",
            ] {
                assert!(RepoName::parse(bad).is_none(), "{bad:?}");
            }
            assert!(RepoName::parse(&"a".repeat(256)).is_none());
        }

        #[test]
        fn everything_else_passes_through() {
            let cases = [
                "/v2/".to_owned(),
                "/v2".to_owned(),
                "/v2/_catalog".to_owned(),
                "/v2/library/alpine/tags/list".to_owned(),
                "/v2/library/alpine/blobs/uploads/".to_owned(),
                "/v2/library/alpine/referrers/sha256:".to_owned(),
                format!("/v2/library/alpine/blobs/sha256:{}", &HEX[1..]),
                format!("/v2/library/alpine/blobs/md5:{HEX}"),
                format!("/v2/../../etc/blobs/sha256:{HEX}"),
                format!("/v2/library/alpine/blobs/sha256:{HEX}/"),
                "/v2/library/alpine/manifests/".to_owned(),
                "/v2/library/alpine/manifests/-bad".to_owned(),
                format!("/v2/library/alpine/manifests/{}", "t".repeat(129)),
                "/v2/library/alpine/manifests/..".to_owned(),
                "/v1/library/alpine/manifests/latest".to_owned(),
                "/token".to_owned(),
            ];
            for case in cases {
                assert_eq!(RegistryRoute::parse(&case), None, "{case:?}");
            }
        }
    }
}
