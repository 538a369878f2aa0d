//! The errors loading a configuration can fail with, and the collector that
//! lets validation report every problem in one go instead of stopping at the
//! first.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read at all.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// The text is not TOML, or has keys or value types the model does not
    /// know. The toml crate's message names the key and the line.
    #[error("cannot parse config {source_name}: {message}")]
    Parse {
        /// The file name (or other label) the text came from.
        source_name: String,
        /// The parser's explanation.
        message: String,
    },
    /// The text parsed but some values are unusable; every one is listed.
    #[error("{}", join_lines(.0))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// The validation problems, empty for read and parse errors.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid(problems) => problems,
            ConfigError::Read { .. } | ConfigError::Parse { .. } => &[],
        }
    }
}

fn join_lines(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// One unusable value: which key holds it and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key as an operator would find it in the file, e.g.
    /// `access.clients[2]` or `upstream.resolve."quay.io"`.
    pub key: String,
    /// What is wrong, quoting the offending value.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Accumulates problems while every section is validated, so one run of the
/// proxy tells the operator about all of them.
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<Problem>);

impl Problems {
    pub(crate) fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    /// `value` is only meaningful when nothing was reported, since validators
    /// substitute defaults for the values they refused.
    pub(crate) fn finish<T>(self, value: T) -> Result<T, ConfigError> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(ConfigError::Invalid(self.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    mod display {
        use super::*;

        #[test]
        fn invalid_lists_one_problem_per_line() {
            let mut problems = Problems::default();
            problems.push("listen", "bad");
            problems.push("data_dir", "must not be empty");
            let err = problems.finish(()).unwrap_err();
            assert_eq!(err.to_string(), "listen: bad\ndata_dir: must not be empty");
            assert_eq!(err.problems().len(), 2);
        }

        #[test]
        fn read_names_the_path() {
            let err = ConfigError::Read {
                path: PathBuf::from("/etc/pullcache.toml"),
                source: io::Error::from(io::ErrorKind::NotFound),
            };
            let text = err.to_string();
            assert!(
                text.starts_with("cannot read config file /etc/pullcache.toml: "),
                "{text}"
            );
            assert!(err.problems().is_empty());
        }
    }

    mod finish {
        use super::*;

        #[test]
        fn no_problems_gives_the_value() {
            assert_eq!(Problems::default().finish(7).unwrap(), 7);
        }
    }
}
