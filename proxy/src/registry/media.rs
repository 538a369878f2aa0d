//! Registry header names, manifest media types, and whether a cached
//! manifest's media type is acceptable under a client's `Accept` header.

/// The header carrying a response's content digest.
pub const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";
/// The header a registry sends on `/v2/` to say which API it speaks.
pub const DOCKER_DISTRIBUTION_API_VERSION: &str = "docker-distribution-api-version";
/// What a blob is served as when upstream did not say.
pub const OCTET_STREAM: &str = "application/octet-stream";

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index (multi-platform).
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list (multi-platform).
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The largest manifest we buffer (the reference registry's own limit).
pub const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;

/// Whether `media_type` satisfies the client's `Accept` header. No header
/// accepts anything; otherwise an exact type, `type/*` or `*/*` with a
/// non-zero quality must be listed.
pub fn accepts(accept: Option<&str>, media_type: &str) -> bool {
    let Some(accept) = accept else {
        return true;
    };
    let media_type = essence(media_type);
    let (main_type, _) = media_type.split_once('/').unwrap_or((media_type, ""));
    accept.split(',').any(|range| {
        let mut params = range.split(';');
        let candidate = params.next().unwrap_or("").trim().to_ascii_lowercase();
        let refused = params.any(|p| {
            let p = p.trim();
            p.strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        if refused || candidate.is_empty() {
            return false;
        }
        candidate == "*/*"
            || candidate == media_type
            || candidate.strip_suffix("/*") == Some(main_type)
    })
}

/// The media type without parameters (`a/b; charset=x` → `a/b`).
pub fn essence(media_type: &str) -> &str {
    media_type.split(';').next().unwrap_or("").trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_matching() {
        let docker = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json;q=0.9";
        assert!(accepts(Some(docker), DOCKER_MANIFEST));
        assert!(accepts(Some(docker), DOCKER_MANIFEST_LIST));
        assert!(!accepts(Some(docker), OCI_INDEX));
        assert!(accepts(None, OCI_INDEX));
        assert!(accepts(Some("*/*"), OCI_INDEX));
        assert!(accepts(Some("application/*"), OCI_MANIFEST));
        assert!(!accepts(Some("text/*"), OCI_MANIFEST));
        assert!(!accepts(
            Some("application/vnd.oci.image.index.v1+json;q=0"),
            OCI_INDEX
        ));
        assert!(accepts(
            Some(OCI_INDEX),
            "application/vnd.oci.image.index.v1+json; charset=utf-8"
        ));
        assert!(!accepts(Some(""), OCI_INDEX));
    }
}
