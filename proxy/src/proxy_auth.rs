//! Optional proxy authentication: `Proxy-Authorization: Basic` checked
//! against the bcrypt hashes of `access.users_file`.
//!
//! bcrypt is slow on purpose (tens of milliseconds per check), and clients
//! authenticate every CONNECT, so a successful check is remembered for a
//! few minutes under a SHA-256 of the header value: the password itself is
//! never kept, and a wrong one is always checked in full.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use dashmap::DashMap;
use http::HeaderMap;
use pullcache_config::Users;
use sha2::{Digest as _, Sha256};

/// How long a verified `Proxy-Authorization` value is trusted without
/// running bcrypt again.
const VERIFIED_FOR: Duration = Duration::from_secs(300);
/// How many verified values are remembered at most.
const MAX_REMEMBERED: usize = 10_000;

/// Why a request was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Proxy-Authorization` header.
    #[error("proxy authentication required")]
    Missing,
    /// Not `Basic` with `user:password` in base64.
    #[error("malformed Proxy-Authorization header")]
    Malformed,
    /// Unknown user or wrong password (deliberately not told apart).
    #[error("wrong user or password")]
    Rejected,
}

/// Checks proxy credentials.
pub struct ProxyAuth {
    users: Arc<Users>,
    verified: DashMap<[u8; 32], Instant>,
}

impl ProxyAuth {
    /// Checks against `users`.
    pub fn new(users: Users) -> ProxyAuth {
        ProxyAuth {
            users: Arc::new(users),
            verified: DashMap::new(),
        }
    }

    /// Verifies the request's `Proxy-Authorization`, returning the user.
    pub async fn check(&self, headers: &HeaderMap) -> Result<String, AuthError> {
        let value = headers
            .get(http::header::PROXY_AUTHORIZATION)
            .ok_or(AuthError::Missing)?
            .as_bytes();
        let (user, password) = parse_basic(value).ok_or(AuthError::Malformed)?;
        let key: [u8; 32] = Sha256::digest(value).into();
        if let Some(at) = self.verified.get(&key) {
            if at.elapsed() < VERIFIED_FOR {
                return Ok(user);
            }
        }
        let hash = self
            .users
            .hash_of(&user)
            .ok_or(AuthError::Rejected)?
            .to_owned();
        let ok =
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        if !ok {
            return Err(AuthError::Rejected);
        }
        if self.verified.len() >= MAX_REMEMBERED {
            self.verified.retain(|_, at| at.elapsed() < VERIFIED_FOR);
        }
        self.verified.insert(key, Instant::now());
        Ok(user)
    }
}

/// `Basic <base64(user:password)>` → (user, password).
fn parse_basic(value: &[u8]) -> Option<(String, String)> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn auth() -> ProxyAuth {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        ProxyAuth::new(Users {
            path: "users".into(),
            entries: vec![("alice".into(), hash)],
        })
    }

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::PROXY_AUTHORIZATION,
            HeaderValue::from_str(value).unwrap(),
        );
        headers
    }

    fn basic(credentials: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        )
    }

    #[tokio::test]
    async fn right_credentials_pass_and_are_remembered() {
        let auth = auth();
        let h = headers(&basic("alice:s3cret"));
        assert_eq!(auth.check(&h).await, Ok("alice".into()));
        assert_eq!(auth.verified.len(), 1);
        assert_eq!(auth.check(&h).await, Ok("alice".into()));
    }

    #[tokio::test]
    async fn everything_else_is_refused() {
        let auth = auth();
        assert_eq!(auth.check(&HeaderMap::new()).await, Err(AuthError::Missing));
        assert_eq!(
            auth.check(&headers(&basic("alice:wrong"))).await,
            Err(AuthError::Rejected)
        );
        assert_eq!(
            auth.check(&headers(&basic("bob:s3cret"))).await,
            Err(AuthError::Rejected)
        );
        assert_eq!(
            auth.check(&headers("Bearer abc")).await,
            Err(AuthError::Malformed)
        );
        assert_eq!(
            auth.check(&headers("Basic !!!")).await,
            Err(AuthError::Malformed)
        );
        assert_eq!(
            auth.check(&headers(&basic("no-colon"))).await,
            Err(AuthError::Malformed)
        );
        assert!(auth.verified.is_empty(), "failures are never remembered");
    }
}
