//! `WWW-Authenticate` challenges (RFC 9110 §11.6.1) as registries send
//! them: `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`.

/// One parsed challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// Token auth: fetch a token from `realm`.
    Bearer {
        /// The token service URL.
        realm: String,
        /// The `service` parameter to pass back, if any.
        service: Option<String>,
    },
    /// Username and password on every request.
    Basic,
    /// Any other scheme.
    Other(String),
}

impl Challenge {
    /// Parses the first challenge of a `WWW-Authenticate` value. `None`
    /// when the value is empty or malformed.
    pub fn parse(value: &str) -> Option<Challenge> {
        let value = value.trim();
        let (scheme, rest) = value
            .split_once(|c: char| c.is_ascii_whitespace())
            .unwrap_or((value, ""));
        if scheme.is_empty() || !scheme.bytes().all(is_token_byte) {
            return None;
        }
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Some(Challenge::Other(scheme.to_owned()));
        }
        let params = parse_params(rest)?;
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        Some(Challenge::Bearer {
            realm: get("realm").filter(|realm| !realm.is_empty())?,
            service: get("service"),
        })
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `name=value` or `name="quoted \" value"`, separated by commas.
fn parse_params(mut rest: &str) -> Option<Vec<(String, String)>> {
    let mut params = Vec::new();
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_ascii_whitespace());
        if rest.is_empty() {
            return Some(params);
        }
        let (name, after) = rest.split_once('=')?;
        let name = name.trim();
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return None;
        }
        let after = after.trim_start();
        let (value, remainder) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => value.push(chars.next()?.1),
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end?..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            let value = after[..end].trim();
            // Strictly a token, but real registries put URLs here unquoted.
            if value.is_empty() || value.contains(|c: char| c.is_ascii_whitespace() || c == '"') {
                return None;
            }
            (value.to_owned(), &after[end..])
        };
        params.push((name.to_owned(), value));
        rest = remainder;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_style_bearer() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
            })
        );
    }

    #[test]
    fn other_shapes() {
        assert_eq!(
            Challenge::parse(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            Challenge::parse(r#"bearer realm=https://ghcr.io/token"#),
            Some(Challenge::Bearer {
                realm: "https://ghcr.io/token".into(),
                service: None
            })
        );
        assert_eq!(
            Challenge::parse(r#"Bearer realm="a\"b", service="s""#),
            Some(Challenge::Bearer {
                realm: "a\"b".into(),
                service: Some("s".into())
            })
        );
        assert_eq!(
            Challenge::parse("Negotiate"),
            Some(Challenge::Other("Negotiate".into()))
        );
    }

    #[test]
    fn malformed_values() {
        for bad in [
            "",
            "Bearer",
            "Bearer realm=\"\"",
            "Bearer service=\"x\"",
            "Bearer realm=\"unterminated",
            "Bearer realm=a b",
            "Be(arer realm=x",
            "Bearer =x",
        ] {
            assert!(
                !matches!(Challenge::parse(bad), Some(Challenge::Bearer { .. })),
                "{bad:?}"
            );
        }
    }
}
