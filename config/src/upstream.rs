//! How the proxy reaches registries: the `[upstream]` section, validated.
//!
//! CA files are opened at load time so a typo in a path stops the proxy at
//! start-up instead of surfacing later as a TLS failure against one
//! registry.

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::defaults::DEFAULT_CONNECT_TIMEOUT;
use crate::error::Problems;
use crate::host::{canonical_host, normalize_host};
use crate::raw::RawUpstream;
use crate::values;

/// The validated `[upstream]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// Extra PEM root certificates trusted for upstream TLS, in addition to
    /// the built-in roots. Relative paths are relative to the working
    /// directory.
    pub ca_files: Vec<PathBuf>,
    /// Addresses to connect to instead of resolving a host with DNS, keyed
    /// by normalised host name (lowercase, no trailing dot).
    pub resolve: BTreeMap<String, SocketAddr>,
    /// How long to wait for a TCP connection to an upstream.
    pub connect_timeout: Duration,
}

impl UpstreamConfig {
    /// The configured address for `host`, if any. Case-insensitive, and a
    /// single trailing dot is ignored.
    pub fn resolve_override(&self, host: &str) -> Option<SocketAddr> {
        self.resolve.get(&normalize_host(host)?).copied()
    }

    pub(crate) fn from_raw(raw: RawUpstream, problems: &mut Problems) -> UpstreamConfig {
        let ca_files = raw
            .ca_files
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .filter_map(|(i, path)| {
                let path = PathBuf::from(path);
                match check_readable_file(&path) {
                    Ok(()) => Some(path),
                    Err(message) => {
                        problems.push(format!("upstream.ca_files[{i}]"), message);
                        None
                    }
                }
            })
            .collect();

        let mut resolve = BTreeMap::new();
        // Remembers which key as written produced each normalised name, to
        // explain a collision like "Quay.io" vs "quay.io.".
        let mut written_as: BTreeMap<String, String> = BTreeMap::new();
        for (name, addr) in raw.resolve.unwrap_or_default() {
            let key = format!("upstream.resolve.{name:?}");
            let host = match canonical_host(&name) {
                Ok(host) => Some(host),
                Err(reason) => {
                    problems.push(&key, format!("{name:?} is not a valid host name: {reason}"));
                    None
                }
            };
            let addr = match addr.parse::<SocketAddr>() {
                Ok(a) if a.port() == 0 => {
                    problems.push(
                        &key,
                        format!("{addr:?} has port 0, which cannot be connected to"),
                    );
                    None
                }
                Ok(a) => Some(a),
                Err(_) => {
                    problems.push(
                        &key,
                        format!("{addr:?} is not a socket address (expected IP:PORT)"),
                    );
                    None
                }
            };
            let (Some(host), Some(addr)) = (host, addr) else {
                continue;
            };
            if let Some(first) = written_as.get(&host) {
                problems.push(&key, format!("names the same host as {first:?}"));
                continue;
            }
            written_as.insert(host.clone(), name);
            resolve.insert(host, addr);
        }

        UpstreamConfig {
            ca_files,
            resolve,
            connect_timeout: values::duration(
                problems,
                "upstream.connect_timeout",
                raw.connect_timeout.as_deref(),
                DEFAULT_CONNECT_TIMEOUT,
            ),
        }
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            ca_files: Vec::new(),
            resolve: BTreeMap::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

/// Opening the file is the only reliable readability test (permissions,
/// ACLs, SELinux); the metadata check catches directories, which `open`
/// accepts on Unix.
fn check_readable_file(path: &Path) -> Result<(), String> {
    if path.as_os_str().is_empty() {
        return Err("must not be empty".to_owned());
    }
    let shown = path.display();
    let file = fs::File::open(path).map_err(|e| format!("cannot read \"{shown}\": {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read \"{shown}\": {e}"))?;
    if !meta.is_file() {
        return Err(format!("\"{shown}\" is not a file"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(raw: RawUpstream) -> (UpstreamConfig, Vec<String>) {
        let mut problems = Problems::default();
        let upstream = UpstreamConfig::from_raw(raw, &mut problems);
        let messages = match problems.finish(()) {
            Ok(()) => vec![],
            Err(e) => e.problems().iter().map(|p| p.to_string()).collect(),
        };
        (upstream, messages)
    }

    fn resolve_map(entries: &[(&str, &str)]) -> RawUpstream {
        RawUpstream {
            resolve: Some(
                entries
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..RawUpstream::default()
        }
    }

    mod resolve_override {
        use super::*;

        #[test]
        fn case_insensitive_and_trailing_dot() {
            let (u, messages) = load(resolve_map(&[
                ("Registry-1.Docker.io", "10.0.0.5:443"),
                ("v6.example.", "[::1]:8443"),
            ]));
            assert!(messages.is_empty(), "{messages:?}");
            let expected: SocketAddr = "10.0.0.5:443".parse().unwrap();
            assert_eq!(u.resolve_override("registry-1.docker.io"), Some(expected));
            assert_eq!(u.resolve_override("REGISTRY-1.DOCKER.IO."), Some(expected));
            assert_eq!(
                u.resolve_override("v6.example"),
                Some("[::1]:8443".parse().unwrap())
            );
            assert_eq!(u.resolve_override("quay.io"), None);
            assert_eq!(u.resolve_override("registry-1.docker.io.."), None);
        }
    }

    mod from_raw {
        use super::*;

        #[test]
        fn bad_resolve_entries_are_named_by_key() {
            let (_, messages) = load(resolve_map(&[
                ("registry-1.docker.io", "10.0.0.5"),
                ("bad_name", "10.0.0.6:443"),
                ("quay.io", "10.0.0.7:0"),
                ("*.pkg.dev", "10.0.0.8:443"),
            ]));
            assert_eq!(messages.len(), 4, "{messages:?}");
            assert!(messages.contains(
                &"upstream.resolve.\"registry-1.docker.io\": \"10.0.0.5\" is not a socket address (expected IP:PORT)"
                    .to_owned()
            ));
            assert!(messages.iter().any(|m| m.starts_with(
                "upstream.resolve.\"bad_name\": \"bad_name\" is not a valid host name"
            )));
            assert!(messages
                .iter()
                .any(|m| m.starts_with("upstream.resolve.\"*.pkg.dev\": ")
                    && m.contains("not a valid host name")));
            assert!(messages
                .iter()
                .any(|m| m.starts_with("upstream.resolve.\"quay.io\": ") && m.contains("port 0")));
        }

        #[test]
        fn keys_that_collide_after_normalising_are_refused() {
            let (_, messages) = load(resolve_map(&[
                ("Quay.io", "10.0.0.1:443"),
                ("quay.io.", "10.0.0.2:443"),
            ]));
            assert_eq!(
                messages,
                vec!["upstream.resolve.\"quay.io.\": names the same host as \"Quay.io\""]
            );
        }

        #[test]
        fn readable_ca_file_is_kept() {
            let file = tempfile::NamedTempFile::new().unwrap();
            let raw = RawUpstream {
                ca_files: Some(vec![file.path().to_str().unwrap().to_owned()]),
                ..RawUpstream::default()
            };
            let (u, messages) = load(raw);
            assert!(messages.is_empty(), "{messages:?}");
            assert_eq!(u.ca_files, vec![file.path().to_path_buf()]);
        }

        #[test]
        fn missing_or_directory_ca_files_are_refused() {
            let dir = tempfile::tempdir().unwrap();
            let missing = dir.path().join("nope.crt");
            let raw = RawUpstream {
                ca_files: Some(vec![
                    missing.to_str().unwrap().to_owned(),
                    dir.path().to_str().unwrap().to_owned(),
                    String::new(),
                ]),
                ..RawUpstream::default()
            };
            let (u, messages) = load(raw);
            assert!(u.ca_files.is_empty());
            assert_eq!(messages.len(), 3, "{messages:?}");
            assert_eq!(
                messages[0],
                format!(
                    "upstream.ca_files[0]: cannot read \"{}\": No such file or directory (os error 2)",
                    missing.display()
                )
            );
            assert!(
                messages[1].starts_with("upstream.ca_files[1]: ")
                    && messages[1].ends_with("is not a file")
            );
            assert_eq!(messages[2], "upstream.ca_files[2]: must not be empty");
        }

        #[test]
        fn connect_timeout_is_validated() {
            let raw = RawUpstream {
                connect_timeout: Some("0s".into()),
                ..RawUpstream::default()
            };
            let (_, messages) = load(raw);
            assert_eq!(
                messages,
                vec!["upstream.connect_timeout: \"0s\" must be greater than zero"]
            );
        }
    }
}
