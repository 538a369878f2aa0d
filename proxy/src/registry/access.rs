//! Who may get a cache hit: a repository's content is served from the
//! cache only once the proxy has confirmed that anyone may pull it.
//!
//! A blob fetched with one client's credentials must never reach a client
//! who could not have fetched it. So pullcache asks the registry itself, as
//! an anonymous client: a `HEAD` of the requested path without credentials,
//! and on a `401 Bearer` challenge an anonymous pull token from the realm
//! and the same `HEAD` with it. Success means public. The answer is kept
//! per registry and repository for `cache.visibility_ttl`, persisted so it
//! holds offline, and the anonymous token is reused for pullcache's own
//! fetches from public repositories.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode, Uri};
use http_body_util::BodyExt;
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use super::challenge::Challenge;
use super::fetch::{Fetcher, USER_AGENT};
use super::route::RepoName;
use crate::cache::{is_fresh, Cache};
use crate::error::ProxyError;

/// The largest token response we read.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;
/// Token lifetime when the token service does not say (the spec's default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Tokens are renewed this long before they expire.
const TOKEN_RENEW_MARGIN: Duration = Duration::from_secs(10);

/// The manifest types a probe asks for, so that any manifest answers 200.
const PROBE_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// Whether a repository's content may be served from the cache to anyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// Anonymous pulls are allowed.
    Public,
    /// Credentials are needed: pass requests through uncached.
    Private,
    /// Never checked and the registry cannot be asked now.
    Unknown,
}

/// A cached anonymous token.
#[derive(Clone)]
struct Token {
    authorization: HeaderValue,
    expires: Instant,
}

/// Visibility checks and anonymous tokens, per registry and repository.
pub struct Access {
    fetcher: Fetcher,
    ttl: Duration,
    /// `host/name` → anonymous token (absent: none needed or none yet).
    tokens: DashMap<String, Token>,
    /// `host` → the Bearer challenge it sent, if it sent one.
    challenges: DashMap<String, Challenge>,
    /// One probe at a time per `host/name`.
    probes: DashMap<String, Arc<Mutex<()>>>,
}

impl Access {
    /// Creates the checker; answers are believed for `ttl`.
    pub fn new(fetcher: Fetcher, ttl: Duration) -> Access {
        Access {
            fetcher,
            ttl,
            tokens: DashMap::new(),
            challenges: DashMap::new(),
            probes: DashMap::new(),
        }
    }

    /// Whether `name` on `registry` (an https authority) is public, asking
    /// upstream when the remembered answer is missing or old. `probe_path`
    /// is the path of the request being served.
    pub async fn visibility(
        &self,
        cache: &Cache,
        registry: &str,
        name: &RepoName,
        probe_path: &str,
    ) -> Visibility {
        let key = format!("{registry}/{name}");
        if let Some(known) = cache
            .repo(&key)
            .filter(|r| is_fresh(r.checked_at, self.ttl))
        {
            return visibility_of(known.public);
        }
        let lock = self.probes.entry(key.clone()).or_default().clone();
        let _guard = lock.lock().await;
        // Someone else may have probed while we waited.
        if let Some(known) = cache
            .repo(&key)
            .filter(|r| is_fresh(r.checked_at, self.ttl))
        {
            return visibility_of(known.public);
        }
        match self.probe(registry, name, probe_path).await {
            Ok(public) => {
                info!(registry.host = registry, oci.repository = %name, public, "checked repository visibility");
                // Durable in the background: the answer holds in memory now.
                tokio::spawn(cache.put_repo(&key, public));
                visibility_of(public)
            }
            Err(error) => match cache.repo(&key) {
                Some(stale) => {
                    warn!(registry.host = registry, oci.repository = %name, %error, "cannot check visibility; using the last answer");
                    visibility_of(stale.public)
                }
                None => {
                    debug!(registry.host = registry, oci.repository = %name, %error, "cannot check visibility");
                    Visibility::Unknown
                }
            },
        }
    }

    /// The `Authorization` pullcache uses for its own requests to a public
    /// repository: an anonymous token when the registry wants one.
    pub async fn authorization(&self, registry: &str, name: &RepoName) -> Option<HeaderValue> {
        let key = format!("{registry}/{name}");
        if let Some(token) = self.tokens.get(&key).filter(|t| t.expires > Instant::now()) {
            return Some(token.authorization.clone());
        }
        let challenge = self.challenges.get(registry)?.clone();
        match self.anonymous_token(&challenge, name).await {
            Ok(token) => {
                self.tokens.insert(key, token.clone());
                Some(token.authorization)
            }
            Err(error) => {
                debug!(registry.host = registry, %error, "cannot get an anonymous token");
                None
            }
        }
    }

    /// Headers for pullcache's own request to a public repository: who we
    /// are, and an anonymous token when the registry wants one.
    pub async fn own_headers(&self, registry: &str, name: &RepoName) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        if let Some(authorization) = self.authorization(registry, name).await {
            headers.insert(header::AUTHORIZATION, authorization);
        }
        headers
    }

    /// Drops a token the registry refused, so the next call fetches anew.
    pub fn forget_token(&self, registry: &str, name: &RepoName) {
        self.tokens.remove(&format!("{registry}/{name}"));
    }

    /// Asks the registry whether an anonymous client may read `path`.
    /// `Err` means the registry could not answer (down, 5xx, 429).
    async fn probe(&self, registry: &str, name: &RepoName, path: &str) -> Result<bool, ProxyError> {
        let uri = https_uri(registry, path)?;
        let mut headers = HeaderMap::new();
        // Without an Accept, some registries answer 404 for OCI manifests.
        headers.insert(header::ACCEPT, HeaderValue::from_static(PROBE_ACCEPT));
        let response = self
            .fetcher
            .send_following(Method::HEAD, uri.clone(), headers.clone())
            .await?;
        match classify(response.status()) {
            Probe::Readable => return Ok(true),
            Probe::Refused => return Ok(false),
            Probe::Unavailable => return Err(unavailable(registry, response.status())),
            Probe::Challenged => {}
        }
        let challenge = response
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(Challenge::parse)
            .find(|c| matches!(c, Challenge::Bearer { .. }));
        let Some(challenge) = challenge else {
            // Basic or unknown auth: only credentialed clients can pull.
            return Ok(false);
        };
        self.challenges
            .insert(registry.to_owned(), challenge.clone());
        let token = match self.anonymous_token(&challenge, name).await {
            Ok(token) => token,
            Err(TokenError::Refused) => return Ok(false),
            Err(TokenError::Unavailable(error)) => return Err(error),
        };
        headers.insert(header::AUTHORIZATION, token.authorization.clone());
        let response = self
            .fetcher
            .send_following(Method::HEAD, uri, headers)
            .await?;
        match classify(response.status()) {
            Probe::Readable => {
                self.tokens.insert(format!("{registry}/{name}"), token);
                Ok(true)
            }
            Probe::Unavailable => Err(unavailable(registry, response.status())),
            Probe::Refused | Probe::Challenged => Ok(false),
        }
    }

    /// Fetches an anonymous pull token for `name` from the challenge's realm.
    async fn anonymous_token(
        &self,
        challenge: &Challenge,
        name: &RepoName,
    ) -> Result<Token, TokenError> {
        let Challenge::Bearer { realm, service } = challenge else {
            return Err(TokenError::Refused);
        };
        let uri = token_uri(realm, service.as_deref(), name).ok_or(TokenError::Refused)?;
        let response = self
            .fetcher
            .send(Method::GET, uri, HeaderMap::new())
            .await
            .map_err(TokenError::Unavailable)?;
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Err(TokenError::Unavailable(unavailable(
                "token service",
                status,
            )));
        }
        if !status.is_success() {
            return Err(TokenError::Refused);
        }
        let body = http_body_util::Limited::new(response.into_body(), MAX_TOKEN_RESPONSE)
            .collect()
            .await
            .map_err(|e| {
                TokenError::Unavailable(ProxyError::BadGateway(format!("token response: {e}")))
            })?
            .to_bytes();
        parse_token(&body).ok_or(TokenError::Refused)
    }
}

#[derive(Debug, thiserror::Error)]
enum TokenError {
    /// The token service said no, or answered nonsense.
    #[error("the token service refused an anonymous token")]
    Refused,
    /// The token service could not answer.
    #[error(transparent)]
    Unavailable(ProxyError),
}

enum Probe {
    Readable,
    Challenged,
    Refused,
    Unavailable,
}

fn classify(status: StatusCode) -> Probe {
    match status.as_u16() {
        // 404 to an anonymous client still means no credentials were needed.
        200..=299 | 404 => Probe::Readable,
        401 => Probe::Challenged,
        429 | 500..=599 => Probe::Unavailable,
        _ => Probe::Refused,
    }
}

fn visibility_of(public: bool) -> Visibility {
    if public {
        Visibility::Public
    } else {
        Visibility::Private
    }
}

fn unavailable(who: &str, status: StatusCode) -> ProxyError {
    ProxyError::BadGateway(format!("{who} answered {status}"))
}

/// `https://<registry><path>`.
pub fn https_uri(registry: &str, path_and_query: &str) -> Result<Uri, ProxyError> {
    Uri::builder()
        .scheme("https")
        .authority(registry)
        .path_and_query(path_and_query)
        .build()
        .map_err(|e| ProxyError::BadRequest(format!("cannot build an upstream URI: {e}")))
}

/// `realm?service=…&scope=repository:<name>:pull`, keeping any query the
/// realm already has.
fn token_uri(realm: &str, service: Option<&str>, name: &RepoName) -> Option<Uri> {
    let mut uri = realm.to_owned();
    let mut separator = if realm.contains('?') { '&' } else { '?' };
    if let Some(service) = service {
        uri.push(separator);
        uri.push_str("service=");
        uri.push_str(&query_escape(service));
        separator = '&';
    }
    uri.push(separator);
    uri.push_str("scope=");
    uri.push_str(&query_escape(&format!("repository:{name}:pull")));
    let uri: Uri = uri.parse().ok()?;
    (uri.scheme_str() == Some("https") && uri.host().is_some()).then_some(uri)
}

/// Percent-encodes everything but RFC 3986 unreserved characters and the
/// `:` and `/` that scopes are made of.
fn query_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads `{"token": …}` or `{"access_token": …}` and `expires_in`.
fn parse_token(body: &[u8]) -> Option<Token> {
    #[derive(serde::Deserialize)]
    struct TokenResponse {
        token: Option<String>,
        access_token: Option<String>,
        expires_in: Option<u64>,
    }
    let parsed: TokenResponse = serde_json::from_slice(body).ok()?;
    let token = parsed
        .token
        .or(parsed.access_token)
        .filter(|t| !t.is_empty())?;
    let authorization = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    let lifetime = parsed
        .expires_in
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TOKEN_LIFETIME);
    let expires = Instant::now()
        + lifetime
            .saturating_sub(TOKEN_RENEW_MARGIN)
            .max(Duration::from_secs(1));
    Some(Token {
        authorization,
        expires,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_uris_carry_service_and_scope() {
        let name = RepoName::parse("library/alpine").unwrap();
        let uri = token_uri(
            "https://auth.docker.io/token",
            Some("registry.docker.io"),
            &name,
        )
        .unwrap();
        assert_eq!(
            uri.to_string(),
            "https://auth.docker.io/token?service=registry.docker.io&scope=repository:library/alpine:pull"
        );
        let uri = token_uri("https://ghcr.io/token?x=1", Some("a b&c"), &name).unwrap();
        assert_eq!(
            uri.to_string(),
            "https://ghcr.io/token?x=1&service=a%20b%26c&scope=repository:library/alpine:pull"
        );
        assert!(token_uri("http://insecure.example/token", None, &name).is_none());
    }

    #[test]
    fn token_responses() {
        assert!(parse_token(br#"{"token":"abc","expires_in":300}"#).is_some());
        assert!(parse_token(br#"{"access_token":"abc"}"#).is_some());
        assert!(parse_token(br#"{"token":""}"#).is_none());
        assert!(parse_token(b"not json").is_none());
        let token = parse_token(br#"{"token":"abc"}"#).unwrap();
        assert_eq!(token.authorization, "Bearer abc");
    }

    #[test]
    fn probe_statuses() {
        assert!(matches!(classify(StatusCode::OK), Probe::Readable));
        assert!(matches!(classify(StatusCode::NOT_FOUND), Probe::Readable));
        assert!(matches!(
            classify(StatusCode::UNAUTHORIZED),
            Probe::Challenged
        ));
        assert!(matches!(classify(StatusCode::FORBIDDEN), Probe::Refused));
        assert!(matches!(
            classify(StatusCode::TOO_MANY_REQUESTS),
            Probe::Unavailable
        ));
        assert!(matches!(
            classify(StatusCode::BAD_GATEWAY),
            Probe::Unavailable
        ));
    }
}
