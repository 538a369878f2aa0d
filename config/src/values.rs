//! Parsers for the scalar value kinds several sections share (durations,
//! paths), each reporting a problem under the caller's key and falling back
//! to the default so validation can carry on and find further problems.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::Problems;

/// A humantime duration that must be greater than zero; `None` in the file
/// means `default`.
pub(crate) fn duration(
    problems: &mut Problems,
    key: &str,
    text: Option<&str>,
    default: Duration,
) -> Duration {
    let Some(text) = text else {
        return default;
    };
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => {
            problems.push(key, format!("{text:?} must be greater than zero"));
            default
        }
        Ok(d) => d,
        Err(_) => {
            problems.push(
                key,
                format!("{text:?} is not a duration (e.g. \"30s\", \"5m\")"),
            );
            default
        }
    }
}

/// A path that must not be empty; other checks are left to the caller since
/// what "usable" means differs between a directory and a file.
pub(crate) fn non_empty_path(
    problems: &mut Problems,
    key: &str,
    path: PathBuf,
    default: &str,
) -> PathBuf {
    if path.as_os_str().is_empty() {
        problems.push(key, "must not be empty");
        PathBuf::from(default)
    } else {
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    mod duration {
        use super::*;

        const DEFAULT: Duration = Duration::from_secs(1);

        fn parse(text: Option<&str>) -> (Duration, Vec<String>) {
            let mut problems = Problems::default();
            let d = duration(&mut problems, "k", text, DEFAULT);
            let messages = match problems.finish(()) {
                Ok(()) => vec![],
                Err(e) => e.problems().iter().map(|p| p.to_string()).collect(),
            };
            (d, messages)
        }

        #[test]
        fn missing_is_the_default() {
            assert_eq!(parse(None), (DEFAULT, vec![]));
        }

        #[test]
        fn humantime_forms_parse() {
            assert_eq!(parse(Some("5m")).0, Duration::from_secs(300));
            assert_eq!(parse(Some("1h 30m")).0, Duration::from_secs(5400));
            assert_eq!(parse(Some("250ms")).0, Duration::from_millis(250));
        }

        #[test]
        fn zero_is_refused() {
            let (_, messages) = parse(Some("0s"));
            assert_eq!(messages, vec!["k: \"0s\" must be greater than zero"]);
        }

        #[test]
        fn garbage_is_refused() {
            let (_, messages) = parse(Some("5 parsecs"));
            assert_eq!(
                messages,
                vec!["k: \"5 parsecs\" is not a duration (e.g. \"30s\", \"5m\")"]
            );
        }
    }
}
