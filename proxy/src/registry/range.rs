//! The `Range` header for cached blobs: a single `bytes=a-b`, `a-` or `-n`
//! range (RFC 9110 §14). Anything else is ignored and the whole blob is
//! served, as the RFC allows.

/// What to send for a request of a blob of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No (usable) range: the whole blob, 200.
    Full,
    /// Bytes `start..=end`, 206.
    Partial {
        /// First byte.
        start: u64,
        /// Last byte, inclusive.
        end: u64,
    },
    /// A range that does not overlap the blob: 416.
    Unsatisfiable,
}

impl RangeRequest {
    /// Interprets a `Range` header value against a blob of `size` bytes.
    pub fn parse(header: Option<&str>, size: u64) -> RangeRequest {
        let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
            return RangeRequest::Full;
        };
        if spec.contains(',') {
            // Multiple ranges would need multipart/byteranges; no registry
            // client asks for them.
            return RangeRequest::Full;
        }
        let Some((first, last)) = spec.trim().split_once('-') else {
            return RangeRequest::Full;
        };
        let number = |s: &str| -> Option<Option<u64>> {
            let s = s.trim();
            if s.is_empty() {
                Some(None)
            } else if s.bytes().all(|b| b.is_ascii_digit()) {
                s.parse().ok().map(Some)
            } else {
                None
            }
        };
        let (Some(first), Some(last)) = (number(first), number(last)) else {
            return RangeRequest::Full;
        };
        match (first, last) {
            (Some(start), last) => {
                if let Some(end) = last {
                    if end < start {
                        return RangeRequest::Full;
                    }
                }
                if start >= size {
                    return RangeRequest::Unsatisfiable;
                }
                let end = last.map_or(size - 1, |end| end.min(size - 1));
                RangeRequest::Partial { start, end }
            }
            (None, Some(suffix)) => {
                if suffix == 0 || size == 0 {
                    return RangeRequest::Unsatisfiable;
                }
                RangeRequest::Partial {
                    start: size.saturating_sub(suffix),
                    end: size - 1,
                }
            }
            (None, None) => RangeRequest::Full,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeRequest::*;

    #[test]
    fn single_ranges() {
        let cases: &[(Option<&str>, RangeRequest)] = &[
            (None, Full),
            (Some("bytes=0-9"), Partial { start: 0, end: 9 }),
            (Some("bytes=10-"), Partial { start: 10, end: 99 }),
            (Some("bytes=-10"), Partial { start: 90, end: 99 }),
            (Some("bytes=-1000"), Partial { start: 0, end: 99 }),
            (Some("bytes=50-5000"), Partial { start: 50, end: 99 }),
            (Some("bytes=100-"), Unsatisfiable),
            (Some("bytes=100-200"), Unsatisfiable),
            (Some("bytes=-0"), Unsatisfiable),
            (Some("bytes=9-3"), Full),
            (Some("bytes=0-1,5-6"), Full),
            (Some("items=0-1"), Full),
            (Some("bytes=a-b"), Full),
            (Some("bytes=-"), Full),
            (Some("bytes=+1-2"), Full),
            (Some("bytes=99999999999999999999999-"), Full),
        ];
        for (header, expected) in cases {
            assert_eq!(RangeRequest::parse(*header, 100), *expected, "{header:?}");
        }
        assert_eq!(RangeRequest::parse(Some("bytes=0-"), 0), Unsatisfiable);
    }
}
