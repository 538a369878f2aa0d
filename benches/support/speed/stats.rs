//! The few statistics the speed report needs: medians with min–max, per
//! round ratios of two interleaved series (each round's pair was measured
//! back to back, so their ratio cancels drift the machine goes through
//! between rounds), CPU-seconds per GB, and the correctness ledger.

/// One route's results over the rounds of a phase.
#[derive(Default, Clone)]
pub(crate) struct Series {
    /// Seconds per round, in round order.
    pub(crate) secs: Vec<f64>,
    /// Bytes moved per round (all clients of a batch together).
    pub(crate) bytes_per_round: u64,
    /// The serving process's CPU over all rounds, in clock ticks; `None`
    /// when not measured.
    pub(crate) cpu_ticks: Option<u64>,
    /// The clients' (curl's) CPU over all rounds, in clock ticks; `None`
    /// when not measured.
    pub(crate) client_ticks: Option<u64>,
    /// The whole machine's busy CPU over the rounds' clients' runs (start
    /// to exit), in clock ticks, and the wall seconds of those runs.
    pub(crate) machine: Option<(u64, f64)>,
}

impl Series {
    pub(crate) fn new(bytes_per_round: u64) -> Series {
        Series {
            secs: Vec::new(),
            bytes_per_round,
            cpu_ticks: Some(0),
            client_ticks: None,
            machine: None,
        }
    }

    /// Adds the machine's busy CPU ticks over a round's client run of
    /// `secs` wall seconds.
    pub(crate) fn add_machine(&mut self, ticks: u64, secs: f64) {
        let (t, s) = self.machine.unwrap_or((0, 0.0));
        self.machine = Some((t + ticks, s + secs));
    }

    /// The whole machine's CPU-seconds per GB moved over this route's
    /// clients' runs: the server's, the client's, a relay's and the
    /// kernel's work, all counted.
    pub(crate) fn machine_cpu_per_gb(&self, ticks_per_sec: u64) -> Option<f64> {
        let bytes = self.bytes_per_round as f64 * self.secs.len() as f64;
        self.machine
            .map(|(ticks, _)| ticks as f64 / ticks_per_sec as f64 / (bytes / 1e9))
    }

    /// How many of the machine's cores were busy, on average, while this
    /// route's clients ran (everything on the machine counted).
    pub(crate) fn cores_busy(&self, ticks_per_sec: u64) -> Option<f64> {
        self.machine
            .filter(|&(_, secs)| secs > 0.0)
            .map(|(ticks, secs)| ticks as f64 / ticks_per_sec as f64 / secs)
    }

    /// Adds the clients' CPU ticks of a round.
    pub(crate) fn add_client(&mut self, ticks: u64) {
        self.client_ticks = Some(self.client_ticks.unwrap_or(0) + ticks);
    }

    /// The clients' CPU-seconds per GB moved.
    pub(crate) fn client_cpu_per_gb(&self, ticks_per_sec: u64) -> Option<f64> {
        let bytes = self.bytes_per_round as f64 * self.secs.len() as f64;
        self.client_ticks
            .map(|ticks| ticks as f64 / ticks_per_sec as f64 / (bytes / 1e9))
    }

    /// Adds a round and the CPU ticks it cost the server.
    pub(crate) fn push(&mut self, secs: f64, ticks: Option<u64>) {
        self.secs.push(secs);
        self.cpu_ticks = match (self.cpu_ticks, ticks) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.secs.is_empty()
    }

    /// Median seconds, min, max.
    pub(crate) fn summary(&self) -> Summary {
        summary(&self.secs)
    }

    /// MB/s (10^6 bytes) at the median time.
    pub(crate) fn mb_per_s(&self) -> f64 {
        self.bytes_per_round as f64 / 1e6 / self.summary().median
    }

    /// CPU-seconds per GB (10^9 bytes) moved.
    pub(crate) fn cpu_per_gb(&self, ticks_per_sec: u64) -> Option<f64> {
        let bytes = self.bytes_per_round as f64 * self.secs.len() as f64;
        self.cpu_ticks
            .map(|ticks| ticks as f64 / ticks_per_sec as f64 / (bytes / 1e9))
    }

    /// Throughput of `self` relative to `baseline`, per round
    /// (`baseline time / self time`, for equal bytes per round; scaled when
    /// they differ).
    pub(crate) fn speed_ratio(&self, baseline: &Series) -> Summary {
        let scale = self.bytes_per_round as f64 / baseline.bytes_per_round as f64;
        let ratios: Vec<f64> = self
            .secs
            .iter()
            .zip(&baseline.secs)
            .map(|(mine, base)| base / mine * scale)
            .collect();
        summary(&ratios)
    }
}

/// Median, minimum and maximum of some values.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Summary {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

/// `NaN` throughout for no values.
pub(crate) fn summary(values: &[f64]) -> Summary {
    if values.is_empty() {
        return Summary {
            median: f64::NAN,
            min: f64::NAN,
            max: f64::NAN,
        };
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    Summary {
        median,
        min: sorted[0],
        max: sorted[n - 1],
    }
}

/// Correctness problems; any one makes the benchmark exit non-zero.
#[derive(Default)]
pub(crate) struct Failures(pub(crate) Vec<String>);

impl Failures {
    pub(crate) fn add(&mut self, problem: String) {
        eprintln!("CORRECTNESS: {problem}");
        self.0.push(problem);
    }
}
