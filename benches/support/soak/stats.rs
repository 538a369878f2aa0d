//! What the soak's clients count: per kind of request, the attempts, the
//! successes, the failures by cause and every latency. Each client keeps its
//! own [`Stats`] (no locks on the hot path) and they are merged at the end;
//! a few shared atomics ([`Live`]) feed the progress lines.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The kinds of request in the mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Kind {
    /// GET of a primed blob through the in-process client.
    Hit,
    /// GET of a never-requested blob through the in-process client.
    Miss,
    /// CONNECT to `tunnel.test:443`, TLS to the upstream's own certificate,
    /// GET of a small body.
    Tunnel,
    /// `CONNECT nonsense HTTP/1.1`: 400 expected.
    BadConnect,
    /// CONNECT to a port not in `connect_ports`: 403 expected.
    BadPort,
    /// `GET http://example.invalid/`: 405 expected.
    NotConnect,
    /// [`Kind::Hit`] by the real curl.
    CurlHit,
    /// [`Kind::Miss`] by the real curl.
    CurlMiss,
    /// [`Kind::Tunnel`] by the real curl.
    CurlTunnel,
}

impl Kind {
    pub(crate) const ALL: [Kind; 9] = [
        Kind::Hit,
        Kind::Miss,
        Kind::Tunnel,
        Kind::BadConnect,
        Kind::BadPort,
        Kind::NotConnect,
        Kind::CurlHit,
        Kind::CurlMiss,
        Kind::CurlTunnel,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Hit => "hit",
            Kind::Miss => "miss",
            Kind::Tunnel => "tunnel",
            Kind::BadConnect => "bad-connect-400",
            Kind::BadPort => "bad-port-403",
            Kind::NotConnect => "not-connect-405",
            Kind::CurlHit => "curl-hit",
            Kind::CurlMiss => "curl-miss",
            Kind::CurlTunnel => "curl-tunnel",
        }
    }

    /// The status a deliberately bad request must get; `None` for the good
    /// kinds, which must succeed.
    pub(crate) fn expected_error(self) -> Option<u16> {
        match self {
            Kind::BadConnect => Some(400),
            Kind::BadPort => Some(403),
            Kind::NotConnect => Some(405),
            _ => None,
        }
    }

    /// Whether a success means a body whose SHA-256 was checked.
    pub(crate) fn has_digest(self) -> bool {
        self.expected_error().is_none()
    }

    fn index(self) -> usize {
        Kind::ALL
            .iter()
            .position(|k| *k == self)
            .expect("every kind is in ALL")
    }
}

/// How one request ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// A good request whose body (`bytes` long) had the right digest, or a
    /// bad request that got its expected status.
    Ok { bytes: u64 },
    /// Anything else; the cause is a short stable label (`timeout`,
    /// `status 502`, `digest`, ...).
    Failed(String),
}

/// One kind's counts.
#[derive(Default, Clone)]
pub(crate) struct KindStats {
    pub(crate) attempts: u64,
    pub(crate) ok: u64,
    pub(crate) bytes: u64,
    pub(crate) failures: BTreeMap<String, u64>,
    /// Latencies of every attempt, successful or not, in microseconds.
    pub(crate) latencies_us: Vec<u64>,
}

impl KindStats {
    pub(crate) fn failed(&self) -> u64 {
        self.attempts - self.ok
    }

    pub(crate) fn timeouts(&self) -> u64 {
        self.failures.get(TIMEOUT).copied().unwrap_or(0)
    }

    fn merge(&mut self, other: KindStats) {
        self.attempts += other.attempts;
        self.ok += other.ok;
        self.bytes += other.bytes;
        for (cause, n) in other.failures {
            *self.failures.entry(cause).or_default() += n;
        }
        self.latencies_us.extend(other.latencies_us);
    }

    /// `(p50, p99, max)` in milliseconds, nearest-rank; zeros when empty.
    pub(crate) fn latency_ms(&self) -> (f64, f64, f64) {
        if self.latencies_us.is_empty() {
            return (0.0, 0.0, 0.0);
        }
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        let rank = |q: f64| {
            let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            sorted[i - 1] as f64 / 1000.0
        };
        (
            rank(0.50),
            rank(0.99),
            sorted[sorted.len() - 1] as f64 / 1000.0,
        )
    }
}

/// The failure cause of a request that ran out of time.
pub(crate) const TIMEOUT: &str = "timeout";

/// Everything one client (or all of them, merged) counted.
#[derive(Clone)]
pub(crate) struct Stats {
    kinds: Vec<KindStats>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            kinds: vec![KindStats::default(); Kind::ALL.len()],
        }
    }
}

impl Stats {
    pub(crate) fn record(&mut self, kind: Kind, latency: Duration, outcome: Outcome, live: &Live) {
        let stats = &mut self.kinds[kind.index()];
        stats.attempts += 1;
        stats.latencies_us.push(latency.as_micros() as u64);
        live.attempts.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Outcome::Ok { bytes } => {
                stats.ok += 1;
                stats.bytes += bytes;
                live.bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            Outcome::Failed(cause) => {
                live.failures.fetch_add(1, Ordering::Relaxed);
                *stats.failures.entry(cause).or_default() += 1;
            }
        }
    }

    pub(crate) fn merge(&mut self, other: Stats) {
        for (mine, theirs) in self.kinds.iter_mut().zip(other.kinds) {
            mine.merge(theirs);
        }
    }

    pub(crate) fn get(&self, kind: Kind) -> &KindStats {
        &self.kinds[kind.index()]
    }

    /// All kinds together.
    pub(crate) fn total(&self) -> KindStats {
        let mut total = KindStats::default();
        for stats in &self.kinds {
            total.merge(stats.clone());
        }
        total
    }
}

/// Running totals for the progress lines.
#[derive(Default)]
pub(crate) struct Live {
    pub(crate) attempts: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) bytes: AtomicU64,
}
