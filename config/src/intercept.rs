//! Which CONNECT targets the proxy terminates TLS for: the `[intercept]`
//! section, validated.

use crate::defaults::DEFAULT_INTERCEPT_HOSTS;
use crate::error::Problems;
use crate::host::normalize_host;
use crate::pattern::HostPattern;
use crate::raw::RawIntercept;

/// The validated `[intercept]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterceptConfig {
    /// The patterns; a host matching any of them is intercepted. Empty
    /// intercepts nothing.
    pub hosts: Vec<HostPattern>,
}

impl InterceptConfig {
    /// Whether connections to `host` are intercepted.
    pub fn intercepts(&self, host: &str) -> bool {
        self.matching_pattern(host).is_some()
    }

    /// The first pattern that matches `host`, for logging why a connection
    /// was intercepted.
    pub fn matching_pattern(&self, host: &str) -> Option<&HostPattern> {
        let host = normalize_host(host)?;
        self.hosts.iter().find(|p| p.matches_normalized(&host))
    }

    pub(crate) fn from_raw(raw: RawIntercept, problems: &mut Problems) -> InterceptConfig {
        let Some(list) = raw.hosts else {
            return InterceptConfig::default();
        };
        let hosts = list
            .iter()
            .enumerate()
            .filter_map(|(i, text)| match HostPattern::parse(text) {
                Ok(pattern) => Some(pattern),
                Err(err) => {
                    problems.push(format!("intercept.hosts[{i}]"), err.to_string());
                    None
                }
            })
            .collect();
        InterceptConfig { hosts }
    }
}

impl Default for InterceptConfig {
    fn default() -> Self {
        InterceptConfig {
            hosts: DEFAULT_INTERCEPT_HOSTS
                .iter()
                .map(|text| {
                    HostPattern::parse(text).expect("DEFAULT_INTERCEPT_HOSTS are valid patterns")
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    mod intercepts {
        use super::*;

        #[test]
        fn default_list() {
            let i = InterceptConfig::default();
            assert_eq!(i.hosts.len(), DEFAULT_INTERCEPT_HOSTS.len());
            for host in [
                "registry-1.docker.io",
                "Registry-1.Docker.io.",
                "us-docker.pkg.dev",
                "eu.gcr.io",
                "gcr.io",
                "westus.data.mcr.microsoft.com",
                "quay.io",
            ] {
                assert!(i.intercepts(host), "{host}");
            }
            for host in [
                "example.com",
                "pkg.dev",
                "docker.io",
                "data.mcr.microsoft.com",
                "",
                "not a host",
            ] {
                assert!(!i.intercepts(host), "{host}");
            }
        }

        #[test]
        fn empty_list_intercepts_nothing() {
            let i = InterceptConfig { hosts: vec![] };
            assert!(!i.intercepts("registry-1.docker.io"));
        }

        #[test]
        fn matching_pattern_names_the_pattern() {
            let i = InterceptConfig::default();
            let p = i.matching_pattern("us-docker.pkg.dev").unwrap();
            assert_eq!(p.as_str(), "*.pkg.dev");
        }
    }

    mod from_raw {
        use super::*;

        #[test]
        fn list_replaces_defaults_and_bad_entries_are_named() {
            let raw = RawIntercept {
                hosts: Some(vec!["registry.internal".into(), "a.*.dev".into()]),
            };
            let mut problems = Problems::default();
            let i = InterceptConfig::from_raw(raw, &mut problems);
            assert_eq!(
                i.hosts,
                vec![HostPattern::Exact("registry.internal".into())]
            );
            let err = problems.finish(i).unwrap_err();
            assert_eq!(
                err.to_string(),
                "intercept.hosts[1]: \"a.*.dev\": a wildcard may only be a leading \"*.\" label"
            );
        }
    }
}
