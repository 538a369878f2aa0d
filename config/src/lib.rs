//! pullcache's configuration: the TOML file model, the built-in defaults,
//! command-line/environment overrides, and validation that reports every
//! problem at once with the key it concerns.
//!
//! Loading happens in three steps so each can be used on its own: the text
//! is parsed into a [`RawConfig`] that only checks key names and TOML types,
//! [`Overrides`] replace raw values, and [`Config::from_raw`] turns strings
//! into typed values. Precedence is overrides, then the file, then the
//! defaults in [`defaults`].

#![deny(missing_docs)]

mod access;
mod cache;
pub mod defaults;
mod error;
mod host;
mod intercept;
mod limits;
mod pattern;
mod raw;
mod timeouts;
mod upstream;
mod values;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use access::{AccessConfig, Users};
pub use cache::CacheConfig;
pub use defaults::DEFAULT_INTERCEPT_HOSTS;
pub use error::{ConfigError, Problem};
pub use host::{normalize_host, NameError};
pub use intercept::InterceptConfig;
pub use limits::Limits;
pub use pattern::{HostPattern, PatternError};
pub use raw::{RawAccess, RawCache, RawConfig, RawIntercept, RawLimits, RawTimeouts, RawUpstream};
pub use timeouts::Timeouts;
pub use upstream::UpstreamConfig;

use defaults::{DEFAULT_DATA_DIR, DEFAULT_LISTEN};
use error::Problems;

/// How problems with `--listen` / `PULLCACHE_LISTEN` are labelled, so the
/// operator does not search the file for a value that came from elsewhere.
pub const LISTEN_OVERRIDE_KEY: &str = "listen (from --listen or PULLCACHE_LISTEN)";

/// How problems with `--data-dir` / `PULLCACHE_DATA_DIR` are labelled.
pub const DATA_DIR_OVERRIDE_KEY: &str = "data_dir (from --data-dir or PULLCACHE_DATA_DIR)";

/// The validated configuration the proxy runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// Where the cache and the CA live.
    pub data_dir: PathBuf,
    /// Who may use the proxy and where CONNECT may go.
    pub access: AccessConfig,
    /// Which hosts are intercepted rather than tunnelled.
    pub intercept: InterceptConfig,
    /// How registries are reached.
    pub upstream: UpstreamConfig,
    /// Client and tunnel time limits.
    pub timeouts: Timeouts,
    /// `[cache]`: freshness of cached answers and upstream patience.
    pub cache: CacheConfig,
    /// `[limits]`: how much one client, or all of them, may ask.
    pub limits: Limits,
}

/// Values from the command line or environment that beat the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Replaces `listen`; validated like it.
    pub listen: Option<String>,
    /// Replaces `data_dir`; must not be empty.
    pub data_dir: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            access: AccessConfig::default(),
            intercept: InterceptConfig::default(),
            upstream: UpstreamConfig::default(),
            timeouts: Timeouts::default(),
            cache: CacheConfig::default(),
            limits: Limits::default(),
        }
    }
}

impl Config {
    /// Reads the file (if any), applies overrides, validates. The path is
    /// named in read and parse errors. With no path the defaults are used;
    /// a path that cannot be read is an error, never a silent fallback.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return Config::from_raw(RawConfig::default(), overrides);
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml_str(&text, &path.display().to_string(), overrides)
    }

    /// Parses TOML text (`source_name` is used in messages), applies
    /// overrides, validates.
    pub fn from_toml_str(
        text: &str,
        source_name: &str,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            source_name: source_name.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        Config::from_raw(raw, overrides)
    }

    /// Validates a raw config, collecting every problem before failing.
    ///
    /// An overridden file value is not looked at, so a bad value in the file
    /// can be worked around from the command line.
    pub fn from_raw(raw: RawConfig, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut problems = Problems::default();

        let listen = match &overrides.listen {
            Some(text) => parse_listen(&mut problems, LISTEN_OVERRIDE_KEY, text),
            None => raw.listen.as_deref().map_or(DEFAULT_LISTEN, |text| {
                parse_listen(&mut problems, "listen", text)
            }),
        };
        let data_dir = match &overrides.data_dir {
            Some(path) => values::non_empty_path(
                &mut problems,
                DATA_DIR_OVERRIDE_KEY,
                path.clone(),
                DEFAULT_DATA_DIR,
            ),
            None => raw.data_dir.map_or_else(
                || PathBuf::from(DEFAULT_DATA_DIR),
                |text| {
                    values::non_empty_path(&mut problems, "data_dir", text.into(), DEFAULT_DATA_DIR)
                },
            ),
        };
        let access = AccessConfig::from_raw(raw.access, &mut problems);
        let intercept = InterceptConfig::from_raw(raw.intercept, &mut problems);
        let upstream = UpstreamConfig::from_raw(raw.upstream, &mut problems);
        let timeouts = Timeouts::from_raw(raw.timeouts, &mut problems);
        let cache = CacheConfig::from_raw(raw.cache, &mut problems);
        let limits = Limits::from_raw(raw.limits, &mut problems);

        problems.finish(Config {
            listen,
            data_dir,
            access,
            intercept,
            upstream,
            timeouts,
            cache,
            limits,
        })
    }
}

/// Port 0 is accepted on purpose: it asks the OS for a free port, which
/// tests rely on.
fn parse_listen(problems: &mut Problems, key: &str, text: &str) -> SocketAddr {
    text.parse().unwrap_or_else(|_| {
        problems.push(
            key,
            format!(
                "{text:?} is not a socket address (expected IP:PORT, e.g. 0.0.0.0:3128 or [::]:3128)"
            ),
        );
        DEFAULT_LISTEN
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, "test.toml", &Overrides::default())
    }

    /// Every problem as "key: message", failing the test if the text was
    /// accepted or failed for another reason.
    fn problems(text: &str) -> Vec<String> {
        match parse(text) {
            Err(ConfigError::Invalid(problems)) => problems.iter().map(|p| p.to_string()).collect(),
            other => panic!("expected validation problems, got {other:?}"),
        }
    }

    fn parse_error(text: &str) -> String {
        match parse(text) {
            Err(ConfigError::Parse {
                source_name,
                message,
            }) => {
                assert_eq!(source_name, "test.toml");
                message
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    mod defaults {
        use super::*;

        #[test]
        fn default_equals_an_empty_file() {
            assert_eq!(parse("").unwrap(), Config::default());
            assert_eq!(
                Config::load(None, &Overrides::default()).unwrap(),
                Config::default()
            );
        }

        #[test]
        fn default_values() {
            let c = Config::default();
            assert_eq!(c.listen, "0.0.0.0:3128".parse().unwrap());
            assert_eq!(c.data_dir, PathBuf::from("/var/lib/pullcache"));
            assert_eq!(c.access.connect_ports, vec![443]);
            assert!(c.access.tunnel);
            assert_eq!(c.access.clients.len(), 6);
            assert_eq!(c.upstream.connect_timeout, Duration::from_secs(10));
            assert_eq!(c.timeouts.tunnel_idle, Duration::from_secs(300));
            assert_eq!(c.timeouts.header_read, Duration::from_secs(30));
        }

        #[test]
        fn default_intercept_list() {
            let c = Config::default();
            assert!(c.intercept.intercepts("registry-1.docker.io"));
            assert!(c.intercept.intercepts("us-docker.pkg.dev"));
            assert!(!c.intercept.intercepts("example.com"));
            assert!(!c.intercept.intercepts("pkg.dev"));
        }
    }

    mod from_toml_str {
        use super::*;

        #[test]
        fn full_example() {
            let ca = tempfile::NamedTempFile::new().unwrap();
            let text = format!(
                r#"
listen = "[::]:8080"
data_dir = "/srv/pullcache"

[access]
clients = ["10.0.0.0/8", "192.0.2.1"]
connect_ports = [443, 5000]
tunnel = false

[intercept]
hosts = ["registry-1.docker.io", "*.pkg.dev"]

[upstream]
ca_files = [{ca:?}]
connect_timeout = "3s"
[upstream.resolve]
"registry-1.docker.io" = "10.0.0.5:443"
"v6.example" = "[::1]:443"

[timeouts]
tls_handshake = "4s"
header_read = "5s"
tunnel_idle = "2m"
shutdown_grace = "1m 30s"
"#,
                ca = ca.path().to_str().unwrap()
            );
            let c = parse(&text).unwrap();
            let expected = Config {
                listen: "[::]:8080".parse().unwrap(),
                data_dir: PathBuf::from("/srv/pullcache"),
                access: AccessConfig {
                    clients: vec![
                        "10.0.0.0/8".parse().unwrap(),
                        "192.0.2.1/32".parse().unwrap(),
                    ],
                    connect_ports: vec![443, 5000],
                    tunnel: false,
                    ..AccessConfig::default()
                },
                intercept: InterceptConfig {
                    hosts: vec![
                        HostPattern::Exact("registry-1.docker.io".into()),
                        HostPattern::Wildcard {
                            suffix: "pkg.dev".into(),
                        },
                    ],
                },
                upstream: UpstreamConfig {
                    ca_files: vec![ca.path().to_path_buf()],
                    resolve: BTreeMap::from([
                        (
                            "registry-1.docker.io".to_owned(),
                            "10.0.0.5:443".parse().unwrap(),
                        ),
                        ("v6.example".to_owned(), "[::1]:443".parse().unwrap()),
                    ]),
                    connect_timeout: Duration::from_secs(3),
                },
                timeouts: Timeouts {
                    tls_handshake: Duration::from_secs(4),
                    header_read: Duration::from_secs(5),
                    tunnel_idle: Duration::from_secs(120),
                    shutdown_grace: Duration::from_secs(90),
                    ..Timeouts::default()
                },
                cache: CacheConfig::default(),
                limits: Limits::default(),
            };
            assert_eq!(c, expected);
            assert!(!c.intercept.intercepts("quay.io"));
        }

        #[test]
        fn bad_listen() {
            assert_eq!(
                problems("listen = \"nonsense\""),
                vec![
                    "listen: \"nonsense\" is not a socket address (expected IP:PORT, e.g. 0.0.0.0:3128 or [::]:3128)"
                ]
            );
        }

        #[test]
        fn empty_data_dir() {
            assert_eq!(
                problems("data_dir = \"\""),
                vec!["data_dir: must not be empty"]
            );
        }

        #[test]
        fn bad_client() {
            let p = problems("[access]\nclients = [\"10.0.0.0/8\", \"::1\", \"10.0.0.0/33\"]");
            assert_eq!(
                p,
                vec!["access.clients[2]: \"10.0.0.0/33\" is not a CIDR or IP address"]
            );
        }

        #[test]
        fn bad_port() {
            let p = problems("[access]\nconnect_ports = [0]");
            assert_eq!(
                p,
                vec!["access.connect_ports[0]: port 0 is not allowed (1-65535)"]
            );
            let p = problems("[access]\nconnect_ports = [443, 65536]");
            assert_eq!(
                p,
                vec!["access.connect_ports[1]: port 65536 is not allowed (1-65535)"]
            );
        }

        #[test]
        fn bad_intercept_host() {
            let p = problems("[intercept]\nhosts = [\"quay.io\", \"a.*.dev\"]");
            assert_eq!(
                p,
                vec!["intercept.hosts[1]: \"a.*.dev\": a wildcard may only be a leading \"*.\" label"]
            );
        }

        #[test]
        fn empty_intercept_list_is_allowed() {
            let c = parse("[intercept]\nhosts = []").unwrap();
            assert!(c.intercept.hosts.is_empty());
            assert!(!c.intercept.intercepts("registry-1.docker.io"));
        }

        #[test]
        fn unreadable_ca_file() {
            let p = problems("[upstream]\nca_files = [\"/nope.crt\"]");
            assert_eq!(
                p,
                vec!["upstream.ca_files[0]: cannot read \"/nope.crt\": No such file or directory (os error 2)"]
            );
        }

        #[test]
        fn bad_resolve_address() {
            let p = problems("[upstream.resolve]\n\"registry-1.docker.io\" = \"10.0.0.5\"");
            assert_eq!(
                p,
                vec![
                    "upstream.resolve.\"registry-1.docker.io\": \"10.0.0.5\" is not a socket address (expected IP:PORT)"
                ]
            );
        }

        #[test]
        fn bad_resolve_key() {
            let p = problems("[upstream.resolve]\n\"not a host\" = \"10.0.0.5:443\"");
            assert_eq!(p.len(), 1);
            assert!(
                p[0].starts_with(
                    "upstream.resolve.\"not a host\": \"not a host\" is not a valid host name"
                ),
                "{p:?}"
            );
        }

        #[test]
        fn bad_durations() {
            let p = problems("[timeouts]\ntunnel_idle = \"5 parsecs\"\nshutdown_grace = \"0s\"");
            assert_eq!(
                p,
                vec![
                    "timeouts.tunnel_idle: \"5 parsecs\" is not a duration (e.g. \"30s\", \"5m\")",
                    "timeouts.shutdown_grace: \"0s\" must be greater than zero",
                ]
            );
        }

        #[test]
        fn every_problem_is_reported() {
            let p = problems(
                r#"
listen = "nonsense"
data_dir = ""
[access]
clients = ["10.0.0.0/33"]
connect_ports = [0]
[intercept]
hosts = ["*.dev"]
[upstream]
ca_files = ["/nope.crt"]
connect_timeout = "soon"
[upstream.resolve]
"quay.io" = "10.0.0.5"
[timeouts]
tls_handshake = "0s"
"#,
            );
            let keys: Vec<&str> = p
                .iter()
                .map(|line| line.split(": ").next().unwrap())
                .collect();
            assert_eq!(
                keys,
                vec![
                    "listen",
                    "data_dir",
                    "access.clients[0]",
                    "access.connect_ports[0]",
                    "intercept.hosts[0]",
                    "upstream.ca_files[0]",
                    "upstream.resolve.\"quay.io\"",
                    "upstream.connect_timeout",
                    "timeouts.tls_handshake",
                ]
            );
        }

        #[test]
        fn unknown_top_level_key() {
            let message = parse_error("listen = \"0.0.0.0:3128\"\nlisten_port = 3128\n");
            assert!(message.contains("listen_port"), "{message}");
            assert!(message.contains("line 2"), "{message}");
        }

        #[test]
        fn unknown_nested_keys() {
            for (text, key) in [
                ("[access]\nallow = []\n", "allow"),
                ("[intercept]\nhost = []\n", "host"),
                ("[upstream]\ntimeout = \"1s\"\n", "timeout"),
                ("[timeouts]\nidle = \"1s\"\n", "idle"),
                ("[cache]\nsize = 1\n", "size"),
                ("[caches]\nsize = 1\n", "caches"),
            ] {
                let message = parse_error(text);
                assert!(message.contains(key), "{text:?}: {message}");
            }
        }

        #[test]
        fn syntax_error_is_a_parse_error() {
            let message = parse_error("listen = \n");
            assert!(message.contains("line 1"), "{message}");
        }

        #[test]
        fn wrong_type_is_a_parse_error() {
            let message = parse_error("[access]\ntunnel = \"yes\"\n");
            assert!(message.contains("tunnel"), "{message}");
        }

        #[test]
        fn parse_error_display_names_the_source() {
            let err = parse("bogus = 1").unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("cannot parse config test.toml: "),
                "{err}"
            );
        }
    }

    mod overrides {
        use super::*;

        #[test]
        fn overrides_beat_the_file() {
            let overrides = Overrides {
                listen: Some("127.0.0.1:9999".into()),
                data_dir: Some(PathBuf::from("/tmp/pc")),
            };
            let text = "listen = \"0.0.0.0:1234\"\ndata_dir = \"/srv/file\"\n";
            let c = Config::from_toml_str(text, "t", &overrides).unwrap();
            assert_eq!(c.listen, "127.0.0.1:9999".parse().unwrap());
            assert_eq!(c.data_dir, PathBuf::from("/tmp/pc"));
        }

        #[test]
        fn the_file_beats_the_defaults_when_not_overridden() {
            let text = "listen = \"0.0.0.0:1234\"\ndata_dir = \"/srv/file\"\n";
            let c = Config::from_toml_str(text, "t", &Overrides::default()).unwrap();
            assert_eq!(c.listen, "0.0.0.0:1234".parse().unwrap());
            assert_eq!(c.data_dir, PathBuf::from("/srv/file"));
        }

        #[test]
        fn bad_overrides_are_named_as_overrides() {
            let overrides = Overrides {
                listen: Some("localhost".into()),
                data_dir: Some(PathBuf::new()),
            };
            let err = Config::from_toml_str("", "t", &overrides).unwrap_err();
            let lines: Vec<String> = err.problems().iter().map(|p| p.to_string()).collect();
            assert_eq!(
                lines,
                vec![
                    "listen (from --listen or PULLCACHE_LISTEN): \"localhost\" is not a socket address (expected IP:PORT, e.g. 0.0.0.0:3128 or [::]:3128)",
                    "data_dir (from --data-dir or PULLCACHE_DATA_DIR): must not be empty",
                ]
            );
        }

        #[test]
        fn an_overridden_bad_file_value_is_ignored() {
            let overrides = Overrides {
                listen: Some("127.0.0.1:0".into()),
                data_dir: None,
            };
            let c = Config::from_toml_str("listen = \"nonsense\"", "t", &overrides).unwrap();
            assert_eq!(c.listen.port(), 0);
        }
    }

    mod load {
        use super::*;
        use std::io::Write;

        #[test]
        fn reads_a_file() {
            let mut file = tempfile::NamedTempFile::new().unwrap();
            writeln!(file, "listen = \"127.0.0.1:3129\"").unwrap();
            let c = Config::load(Some(file.path()), &Overrides::default()).unwrap();
            assert_eq!(c.listen, "127.0.0.1:3129".parse().unwrap());
        }

        #[test]
        fn parse_errors_name_the_path() {
            let mut file = tempfile::NamedTempFile::new().unwrap();
            writeln!(file, "nope = 1").unwrap();
            match Config::load(Some(file.path()), &Overrides::default()) {
                Err(ConfigError::Parse { source_name, .. }) => {
                    assert_eq!(source_name, file.path().display().to_string())
                }
                other => panic!("expected a parse error, got {other:?}"),
            }
        }

        #[test]
        fn missing_file_is_a_read_error() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("missing.toml");
            let err = Config::load(Some(&path), &Overrides::default()).unwrap_err();
            assert!(matches!(&err, ConfigError::Read { path: p, .. } if *p == path));
            assert!(err.to_string().contains("missing.toml"), "{err}");
        }
    }
}
