//! The soak's clients. Most are in-process async tasks (raw tokio TCP for
//! the CONNECT, tokio-rustls, hyper's client connections), because 200 curl
//! processes would swamp two cores; a few are loops of the real curl, so a
//! registry client's own TLS and HTTP stack is in the mix too.
//!
//! An in-process client keeps its intercepted connection (CONNECT, TLS with
//! pullcache's CA, HTTP/1.1 or h2 by the client's number) for a few blob
//! requests, then drops it and opens a new one; tunnels and the deliberately
//! bad requests get a connection each. Every request runs under the
//! request timeout, and its latency covers everything from the TCP connect
//! (when it opens a connection) to the body's last byte.

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::stats::{Kind, Live, Outcome, Stats, TIMEOUT};
use super::{blob_path, lock, seeded_sha256, Rng, TUNNEL_HOST};
use crate::support::client::{curl_program, PROXY_ENV};
use crate::support::origin::{tunnel_path, Catalogue, Content};
use crate::support::{to_hex, REGISTRY_HOST};

/// Sizes of the never-requested blobs.
pub(crate) const MISS_SIZES: (u64, u64) = (64 * 1024, 2 * 1024 * 1024);

/// Sizes of the small bodies fetched through the tunnel.
const TUNNEL_SIZES: (u64, u64) = (1024, 32 * 1024);

/// The most blob requests one intercepted connection carries.
const MAX_REUSE: u64 = 8;

/// Detailed failure lines printed while the soak runs; the rest are only
/// counted.
const FAILURE_LINES: u64 = 30;

/// The default mix of an in-process client, as weights.
const MIX: &[(Kind, u64)] = &[
    (Kind::Hit, 45),
    (Kind::Miss, 15),
    (Kind::Tunnel, 25),
    (Kind::BadConnect, 5),
    (Kind::BadPort, 5),
    (Kind::NotConnect, 5),
];

/// The default mix of a curl client.
const CURL_MIX: &[(Kind, u64)] = &[
    (Kind::CurlHit, 50),
    (Kind::CurlMiss, 20),
    (Kind::CurlTunnel, 30),
];

/// What the clients ask for, as weights: one list for the in-process
/// clients, one for the curl clients.
#[derive(Clone, Debug)]
pub(crate) struct Mix {
    in_process: Vec<(Kind, u64)>,
    curl: Vec<(Kind, u64)>,
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            in_process: MIX.to_vec(),
            curl: CURL_MIX.to_vec(),
        }
    }
}

impl Mix {
    /// Parses `kind=weight,...` (kind names as in the report). Naming any
    /// in-process kind replaces the whole in-process mix (kinds left out get
    /// weight 0), and likewise for the curl kinds.
    pub(crate) fn parse(text: &str) -> anyhow::Result<Mix> {
        let mut mix = Mix::default();
        let (mut in_process, mut curl) = (Vec::new(), Vec::new());
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .with_context(|| format!("{part:?} is not kind=weight"))?;
            let kind = Kind::ALL
                .into_iter()
                .find(|k| k.name() == name.trim())
                .with_context(|| {
                    let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
                    format!("unknown kind {name:?} (kinds: {})", names.join(", "))
                })?;
            let weight: u64 = weight
                .trim()
                .parse()
                .with_context(|| format!("{part:?}: the weight is not an integer"))?;
            if CURL_MIX.iter().any(|(k, _)| *k == kind) {
                curl.push((kind, weight));
            } else {
                in_process.push((kind, weight));
            }
        }
        for (list, target, what) in [
            (in_process, &mut mix.in_process, "in-process"),
            (curl, &mut mix.curl, "curl"),
        ] {
            if list.is_empty() {
                continue;
            }
            if list.iter().all(|(_, w)| *w == 0) {
                bail!("the {what} kinds' weights add up to 0");
            }
            *target = list.into_iter().filter(|(_, w)| *w > 0).collect();
        }
        Ok(mix)
    }

    /// The mix in percent, for the report.
    pub(crate) fn describe(&self) -> String {
        let describe = |mix: &[(Kind, u64)]| {
            let total: u64 = mix.iter().map(|(_, w)| w).sum();
            mix.iter()
                .map(|(k, w)| format!("{} {:.0}%", k.name(), *w as f64 * 100.0 / total as f64))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "in-process: {}; curl: {}",
            describe(&self.in_process),
            describe(&self.curl)
        )
    }
}

/// What all clients share.
pub(crate) struct Env {
    /// pullcache's address (loopback, checked at construction).
    proxy: SocketAddr,
    /// TLS towards pullcache's interception, trusting only pullcache's CA;
    /// one offering HTTP/1.1, one offering h2.
    intercept_h1: TlsConnector,
    intercept_h2: TlsConnector,
    /// TLS through the tunnel, trusting only the upstream's CA.
    tunnel_tls: TlsConnector,
    proxy_ca: PathBuf,
    upstream_ca: PathBuf,
    catalogue: Arc<Catalogue>,
    /// The primed blobs: `(hex, size)`.
    hits: Vec<(String, u64)>,
    next_miss_seed: AtomicU64,
    /// Every miss blob handed out, by hex, for the exactly-once check.
    misses: Mutex<Vec<String>>,
    timeout: Duration,
    mix: Mix,
    pub(crate) live: Live,
    failure_lines: AtomicU64,
}

impl Env {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        proxy: SocketAddr,
        proxy_ca: PathBuf,
        upstream_ca: PathBuf,
        catalogue: Arc<Catalogue>,
        hits: Vec<(String, u64)>,
        first_miss_seed: u64,
        timeout: Duration,
        mix: Mix,
    ) -> anyhow::Result<Env> {
        if !proxy.ip().is_loopback() {
            bail!("refusing to use non-loopback proxy {proxy}");
        }
        let intercept = |alpn: &[u8]| tls_connector(&proxy_ca, alpn);
        Ok(Env {
            proxy,
            intercept_h1: intercept(b"http/1.1")?,
            intercept_h2: intercept(b"h2")?,
            tunnel_tls: tls_connector(&upstream_ca, b"http/1.1")?,
            proxy_ca,
            upstream_ca,
            catalogue,
            hits,
            next_miss_seed: AtomicU64::new(first_miss_seed),
            misses: Mutex::default(),
            timeout,
            mix,
            live: Live::default(),
            failure_lines: AtomicU64::new(0),
        })
    }

    /// Every miss blob handed out so far.
    pub(crate) fn misses(&self) -> Vec<String> {
        lock(&self.misses).clone()
    }

    /// A fresh blob nobody has asked for: registered with the upstream,
    /// returned as `(hex, size)`. Generating and hashing it is the client's
    /// work, done before the request's clock starts.
    fn new_miss(&self, rng: &mut Rng) -> (String, u64) {
        let seed = self.next_miss_seed.fetch_add(1, Ordering::Relaxed);
        let size = rng.range(MISS_SIZES.0, MISS_SIZES.1);
        let hex = seeded_sha256(seed, size);
        self.catalogue
            .insert(hex.clone(), Content::Seeded { seed, size });
        lock(&self.misses).push(hex.clone());
        (hex, size)
    }

    fn report_failure(&self, client: usize, kind: Kind, detail: &str) {
        let n = self.failure_lines.fetch_add(1, Ordering::Relaxed);
        if n < FAILURE_LINES {
            eprintln!("soak: client {client}: {} failed: {detail}", kind.name());
        } else if n == FAILURE_LINES {
            eprintln!("soak: (further failures are only counted)");
        }
    }
}

/// A rustls client config trusting only the certificates in `ca_pem`.
fn tls_connector(ca_pem: &std::path::Path, alpn: &[u8]) -> anyhow::Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem)
        .with_context(|| format!("cannot read {}", ca_pem.display()))?
    {
        roots.add(cert.with_context(|| format!("bad PEM in {}", ca_pem.display()))?)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// One request's work, decided (and, for a miss, prepared) before its clock
/// starts.
enum Job {
    Blob {
        hex: String,
        size: u64,
    },
    Tunnel {
        seed: u64,
        size: u64,
        hex: String,
    },
    /// A bad request: the bytes to send.
    Bad(&'static [u8]),
}

fn pick(rng: &mut Rng, mix: &[(Kind, u64)]) -> Kind {
    let total: u64 = mix.iter().map(|(_, w)| w).sum();
    let mut roll = rng.range(0, total - 1);
    for (kind, weight) in mix {
        if roll < *weight {
            return *kind;
        }
        roll -= weight;
    }
    mix[0].0
}

fn prepare(env: &Env, rng: &mut Rng, kind: Kind) -> Job {
    match kind {
        Kind::Hit | Kind::CurlHit => {
            let (hex, size) = &env.hits[rng.range(0, env.hits.len() as u64 - 1) as usize];
            Job::Blob {
                hex: hex.clone(),
                size: *size,
            }
        }
        Kind::Miss | Kind::CurlMiss => {
            let (hex, size) = env.new_miss(rng);
            Job::Blob { hex, size }
        }
        Kind::Tunnel | Kind::CurlTunnel => {
            let seed = rng.next_u64();
            let size = rng.range(TUNNEL_SIZES.0, TUNNEL_SIZES.1);
            Job::Tunnel {
                seed,
                size,
                hex: seeded_sha256(seed, size),
            }
        }
        Kind::BadConnect => Job::Bad(b"CONNECT nonsense HTTP/1.1\r\nHost: nonsense\r\n\r\n"),
        Kind::BadPort => {
            Job::Bad(b"CONNECT tunnel.test:8443 HTTP/1.1\r\nHost: tunnel.test:8443\r\n\r\n")
        }
        Kind::NotConnect => {
            Job::Bad(b"GET http://example.invalid/ HTTP/1.1\r\nHost: example.invalid\r\n\r\n")
        }
    }
}

/// A failure: a short, stable cause for the counts and the detail for the
/// first few lines printed.
struct Fail {
    cause: String,
    detail: String,
}

impl Fail {
    fn new(cause: impl Into<String>, detail: impl std::fmt::Display) -> Fail {
        Fail {
            cause: cause.into(),
            detail: detail.to_string(),
        }
    }
}

type Step<T> = Result<T, Fail>;

/// An in-process client.
pub(crate) struct Client {
    id: usize,
    env: Arc<Env>,
    rng: Rng,
    /// Speaks h2 (else HTTP/1.1) on its intercepted connections.
    h2: bool,
    session: Option<Session>,
    stats: Stats,
}

/// An open intercepted connection and how many more requests it may carry.
struct Session {
    sender: Sender,
    uses_left: u64,
}

enum Sender {
    H1(http1::SendRequest<Empty<Bytes>>),
    H2(http2::SendRequest<Empty<Bytes>>),
}

impl Client {
    pub(crate) fn new(id: usize, env: Arc<Env>, seed: u64) -> Client {
        Client {
            id,
            env,
            rng: Rng::new(seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            h2: id % 2 == 1,
            session: None,
            stats: Stats::default(),
        }
    }

    /// Requests until `deadline`, then returns what it counted. A request
    /// under way at the deadline is finished (or times out) first.
    pub(crate) async fn run(mut self, deadline: Instant) -> Stats {
        while Instant::now() < deadline {
            let kind = pick(&mut self.rng, &self.env.mix.in_process);
            let job = prepare(&self.env, &mut self.rng, kind);
            let started = Instant::now();
            let result = tokio::time::timeout(self.env.timeout, self.execute(kind, job)).await;
            let latency = started.elapsed();
            let outcome = match result {
                Ok(Ok(bytes)) => Outcome::Ok { bytes },
                Ok(Err(fail)) => {
                    self.session = None;
                    self.env.report_failure(self.id, kind, &fail.detail);
                    Outcome::Failed(fail.cause)
                }
                Err(_) => {
                    self.session = None;
                    self.env.report_failure(
                        self.id,
                        kind,
                        &format!("no answer within {latency:?}"),
                    );
                    Outcome::Failed(TIMEOUT.to_owned())
                }
            };
            self.stats.record(kind, latency, outcome, &self.env.live);
        }
        self.stats
    }

    /// One blob request on a connection of its own (priming), under the
    /// request timeout.
    pub(crate) async fn fetch_once(&mut self, hex: &str, size: u64) -> anyhow::Result<u64> {
        self.session = None;
        let result = tokio::time::timeout(self.env.timeout, self.blob(hex, size)).await;
        self.session = None;
        match result {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(fail)) => bail!("{}", fail.detail),
            Err(_) => bail!("no answer within {:?}", self.env.timeout),
        }
    }

    /// Runs `job`; `Ok(bytes of verified body)` on success.
    async fn execute(&mut self, kind: Kind, job: Job) -> Step<u64> {
        match job {
            Job::Blob { hex, size } => self.blob(&hex, size).await,
            Job::Tunnel { seed, size, hex } => tunnel(&self.env, seed, size, &hex).await,
            Job::Bad(request) => {
                let expected = kind.expected_error().expect("a bad kind");
                bad_request(&self.env, request, expected).await
            }
        }
    }

    async fn blob(&mut self, hex: &str, size: u64) -> Step<u64> {
        let mut session = match self.session.take() {
            Some(session) => session,
            None => Session {
                sender: self.open_session().await?,
                uses_left: self.rng.range(1, MAX_REUSE),
            },
        };
        let path = blob_path(hex);
        let response = match &mut session.sender {
            Sender::H1(sender) => {
                let request = Request::get(path.as_str())
                    .header("host", REGISTRY_HOST)
                    .body(Empty::new())
                    .expect("request");
                sender
                    .ready()
                    .await
                    .map_err(|e| Fail::new("http", format!("connection not ready: {e}")))?;
                sender.send_request(request).await
            }
            Sender::H2(sender) => {
                let request = Request::get(format!("https://{REGISTRY_HOST}{path}"))
                    .body(Empty::new())
                    .expect("request");
                sender
                    .ready()
                    .await
                    .map_err(|e| Fail::new("http", format!("connection not ready: {e}")))?;
                sender.send_request(request).await
            }
        }
        .map_err(|e| Fail::new("http", format!("{path}: {e}")))?;
        let bytes = verified_body(response, hex, size).await?;
        session.uses_left -= 1;
        if session.uses_left > 0 {
            self.session = Some(session);
        }
        Ok(bytes)
    }

    /// CONNECT to the registry, TLS with pullcache's CA, then an HTTP/1.1
    /// or h2 client connection driven by a task of its own (which ends when
    /// the sender is dropped).
    async fn open_session(&self) -> Step<Sender> {
        let tcp = connect(&self.env, &format!("{REGISTRY_HOST}:443")).await?;
        let connector = if self.h2 {
            &self.env.intercept_h2
        } else {
            &self.env.intercept_h1
        };
        let name = ServerName::try_from(REGISTRY_HOST).expect("a valid name");
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| Fail::new("tls", format!("intercepted TLS: {e}")))?;
        let io = TokioIo::new(tls);
        if self.h2 {
            let (sender, connection) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| Fail::new("http", format!("h2 handshake: {e}")))?;
            tokio::spawn(connection);
            Ok(Sender::H2(sender))
        } else {
            let (sender, connection) = http1::handshake(io)
                .await
                .map_err(|e| Fail::new("http", format!("HTTP/1.1 handshake: {e}")))?;
            tokio::spawn(connection);
            Ok(Sender::H1(sender))
        }
    }
}

/// Reads a 200 response's body, checking its length and SHA-256.
async fn verified_body(response: Response<Incoming>, hex: &str, size: u64) -> Step<u64> {
    let status = response.status().as_u16();
    if status != 200 {
        return Err(Fail::new(
            format!("status {status}"),
            format!("status {status} for sha256:{hex}"),
        ));
    }
    let mut body = response.into_body();
    let mut hasher = Sha256::new();
    let mut got = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Fail::new("body", format!("body of sha256:{hex}: {e}")))?;
        if let Some(data) = frame.data_ref() {
            hasher.update(data);
            got += data.len() as u64;
        }
    }
    check_body(got, &to_hex(&hasher.finalize()), hex, size)
}

fn check_body(got: u64, got_hex: &str, hex: &str, size: u64) -> Step<u64> {
    if got != size {
        return Err(Fail::new(
            "length",
            format!("{got} bytes for sha256:{hex}, expected {size}"),
        ));
    }
    if got_hex != hex {
        return Err(Fail::new(
            "digest",
            format!("body sha256:{got_hex} is not sha256:{hex}"),
        ));
    }
    Ok(got)
}

/// A TCP connection to pullcache on which `CONNECT authority` was answered
/// 200.
async fn connect(env: &Env, authority: &str) -> Step<TcpStream> {
    let mut tcp = TcpStream::connect(env.proxy)
        .await
        .map_err(|e| Fail::new("proxy connect", e))?;
    let _ = tcp.set_nodelay(true);
    let request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    tcp.write_all(request.as_bytes())
        .await
        .map_err(|e| Fail::new("io", format!("writing CONNECT: {e}")))?;
    let (status, head, rest) = read_head(&mut tcp).await?;
    if status != 200 {
        return Err(Fail::new(
            format!("CONNECT status {status}"),
            format!(
                "CONNECT {authority} answered {status}: {}",
                String::from_utf8_lossy(&head).trim()
            ),
        ));
    }
    if !rest.is_empty() {
        return Err(Fail::new(
            "CONNECT response",
            format!("{} bytes after the CONNECT response", rest.len()),
        ));
    }
    Ok(tcp)
}

/// Reads a response head: `(status, head, bytes after it)`.
async fn read_head(tcp: &mut TcpStream) -> Step<(u16, Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            let status = std::str::from_utf8(&buf)
                .ok()
                .and_then(|text| text.split_whitespace().nth(1))
                .and_then(|code| code.parse().ok())
                .ok_or_else(|| {
                    Fail::new(
                        "bad response",
                        format!("unparsable head {:?}", String::from_utf8_lossy(&buf)),
                    )
                })?;
            return Ok((status, buf, rest));
        }
        if buf.len() > 64 * 1024 {
            return Err(Fail::new("bad response", "response head over 64 KiB"));
        }
        let n = tcp
            .read(&mut chunk)
            .await
            .map_err(|e| Fail::new("io", format!("reading a response head: {e}")))?;
        if n == 0 {
            return Err(Fail::new(
                "closed",
                format!(
                    "connection closed after {} bytes of a response head",
                    buf.len()
                ),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// CONNECT to `tunnel.test:443`, TLS trusting only the upstream's CA (so an
/// intercepted tunnel would fail the handshake), GET a small seeded body.
async fn tunnel(env: &Env, seed: u64, size: u64, hex: &str) -> Step<u64> {
    let tcp = connect(env, &format!("{TUNNEL_HOST}:443")).await?;
    let name = ServerName::try_from(TUNNEL_HOST).expect("a valid name");
    let tls = env
        .tunnel_tls
        .connect(name, tcp)
        .await
        .map_err(|e| Fail::new("tls", format!("tunnelled TLS: {e}")))?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| Fail::new("http", format!("tunnel HTTP/1.1 handshake: {e}")))?;
    tokio::spawn(connection);
    let request = Request::get(tunnel_path(seed, size))
        .header("host", TUNNEL_HOST)
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| Fail::new("http", format!("tunnel request: {e}")))?;
    verified_body(response, hex, size).await
}

/// Sends one bad request on a connection of its own and checks that the
/// answer is `expected`; reads the body too, then closes.
async fn bad_request(env: &Env, request: &[u8], expected: u16) -> Step<u64> {
    let mut tcp = TcpStream::connect(env.proxy)
        .await
        .map_err(|e| Fail::new("proxy connect", e))?;
    tcp.write_all(request)
        .await
        .map_err(|e| Fail::new("io", format!("writing the request: {e}")))?;
    let (status, head, mut rest) = read_head(&mut tcp).await?;
    if status != expected {
        return Err(Fail::new(
            format!("status {status}"),
            format!(
                "{:?} answered {status}, expected {expected}: {}",
                String::from_utf8_lossy(request.split(|b| *b == b'\r').next().unwrap_or(b"")),
                String::from_utf8_lossy(&head).trim()
            ),
        ));
    }
    let length = String::from_utf8_lossy(&head)
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut chunk = [0u8; 4096];
    while rest.len() < length.min(64 * 1024) {
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => rest.extend_from_slice(&chunk[..n]),
        }
    }
    let _ = tcp.shutdown().await;
    Ok(0)
}

/// A loop of the real curl: hits, misses and tunnels, one process each.
pub(crate) struct CurlClient {
    id: usize,
    env: Arc<Env>,
    rng: Rng,
    stats: Stats,
}

impl CurlClient {
    pub(crate) fn new(id: usize, env: Arc<Env>, seed: u64) -> CurlClient {
        CurlClient {
            id,
            env,
            rng: Rng::new(seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            stats: Stats::default(),
        }
    }

    pub(crate) async fn run(mut self, deadline: Instant) -> Stats {
        while Instant::now() < deadline {
            let kind = pick(&mut self.rng, &self.env.mix.curl);
            let job = prepare(&self.env, &mut self.rng, kind);
            let (url, ca, hex, size) = match job {
                Job::Blob { hex, size } => (
                    format!("https://{REGISTRY_HOST}{}", blob_path(&hex)),
                    self.env.proxy_ca.clone(),
                    hex,
                    size,
                ),
                Job::Tunnel { seed, size, hex } => (
                    format!("https://{TUNNEL_HOST}{}", tunnel_path(seed, size)),
                    self.env.upstream_ca.clone(),
                    hex,
                    size,
                ),
                Job::Bad(_) => unreachable!("curl clients send no bad requests"),
            };
            let proxy = self.env.proxy;
            let limit = self.env.timeout;
            // HTTP/1.1 for half of the curl clients, curl's choice (h2 by
            // ALPN) for the others.
            let http1 = self.id.is_multiple_of(2);
            let started = Instant::now();
            let result =
                tokio::task::spawn_blocking(move || curl(proxy, &ca, &url, limit, http1)).await;
            let latency = started.elapsed();
            let checked = match result {
                Ok(Ok(body)) => check_body(
                    body.len() as u64,
                    &to_hex(&Sha256::digest(&body)),
                    &hex,
                    size,
                ),
                Ok(Err(fail)) => Err(fail),
                Err(e) => Err(Fail::new("curl", format!("curl task: {e}"))),
            };
            let outcome = match checked {
                Ok(bytes) => Outcome::Ok { bytes },
                Err(fail) => {
                    self.env.report_failure(self.id, kind, &fail.detail);
                    Outcome::Failed(fail.cause)
                }
            };
            self.stats.record(kind, latency, outcome, &self.env.live);
        }
        self.stats
    }
}

/// Runs curl through pullcache for `url`, bounded by `limit` (curl's own
/// `--max-time`, and a kill a little later should curl not honour it).
/// Returns the body.
fn curl(
    proxy: SocketAddr,
    ca: &std::path::Path,
    url: &str,
    limit: Duration,
    http1: bool,
) -> Step<Vec<u8>> {
    let mut cmd = Command::new(curl_program());
    for var in PROXY_ENV {
        cmd.env_remove(var);
    }
    // `-q` first: ignore any ~/.curlrc, so the flags below are the whole story.
    cmd.arg("-q")
        .args(["--silent", "--show-error", "--fail", "--max-time"])
        .arg(format!("{:.1}", limit.as_secs_f64()));
    if http1 {
        cmd.arg("--http1.1");
    }
    cmd.arg("-x")
        .arg(format!("http://{proxy}"))
        .arg("--cacert")
        .arg(ca)
        .arg("-o")
        .arg("-")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| Fail::new("curl", format!("cannot run curl: {e}")))?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let out = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + limit + Duration::from_secs(5);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let body = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    match status.map(|s| s.code()) {
        Some(Some(0)) => Ok(body),
        // 28: curl's own --max-time ran out.
        Some(Some(28)) | None => Err(Fail::new(TIMEOUT, format!("curl {url}: {}", stderr.trim()))),
        Some(code) => Err(Fail::new(
            format!("curl exit {}", code.unwrap_or(-1)),
            format!("curl {url}: {}", stderr.trim()),
        )),
    }
}

/// `GET path` of pullcache's admin pages (e.g. `/metrics`) on a connection
/// of its own: `(status, body)`.
pub(crate) async fn admin_get(env: &Env, path: &str) -> anyhow::Result<(u16, String)> {
    let mut tcp = TcpStream::connect(env.proxy)
        .await
        .context("cannot connect to pullcache")?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        env.proxy
    );
    tcp.write_all(request.as_bytes()).await?;
    let mut all = Vec::new();
    tokio::time::timeout(env.timeout, tcp.read_to_end(&mut all))
        .await
        .context("no answer in time")??;
    let text = String::from_utf8_lossy(&all).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("unparsable answer {head:?}"))?;
    Ok((status, body.to_owned()))
}
