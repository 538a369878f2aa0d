//! A real upstream registry: Debian's `docker-registry` (distribution 2.8)
//! serving TLS on `127.0.0.1:<port>` with filesystem storage in a tempdir.
//!
//! Its certificate comes from the test CA and names both
//! `registry-1.docker.io` (what pullcache connects to, via
//! `[upstream.resolve]`) and IP `127.0.0.1` (what skopeo verifies when it
//! pushes straight to the registry). Its access log (Apache combined format,
//! on stdout) is parsed so that tests can count exactly which requests reached
//! the upstream.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tempfile::TempDir;

use super::client::{curl, CurlOutput};
use super::{TestCa, TestProxy, REGISTRY_HOST};

/// How long the registry may take to answer `GET /v2/` after being spawned.
const READY_LIMIT: Duration = Duration::from_secs(20);
/// How long a killed registry may keep its port open (zombies linger here).
const STOP_LIMIT: Duration = Duration::from_secs(15);

/// One line of the access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AccessEntry {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) status: u16,
}

impl AccessEntry {
    /// Parses `127.0.0.1 - - [date] "GET /v2/ HTTP/2.0" 200 2 "" "ua"`.
    pub(crate) fn parse(line: &str) -> Option<AccessEntry> {
        // The date is bracketed, so the first quote opens the request line.
        let open = line.find('"')?;
        let rest = &line[open + 1..];
        let close = rest.find('"')?;
        let mut request = rest[..close].split_whitespace();
        let method = request.next()?.to_owned();
        let path = request.next()?.to_owned();
        let proto = request.next()?;
        if !proto.starts_with("HTTP/") || !path.starts_with('/') {
            return None;
        }
        let status = rest[close + 1..].split_whitespace().next()?.parse().ok()?;
        Some(AccessEntry {
            method,
            path,
            status,
        })
    }
}

#[derive(Default)]
struct Captured {
    /// Every line of stdout and stderr, prefixed with the stream's name.
    lines: Vec<String>,
    access: Vec<AccessEntry>,
    last_line_at: Option<Instant>,
}

pub(crate) struct RealRegistry {
    dir: TempDir,
    addr: SocketAddr,
    test_ca: PathBuf,
    child: Option<Child>,
    captured: Arc<Mutex<Captured>>,
    /// Access entries before this index are ignored by [`Self::requests`].
    baseline: usize,
}

impl RealRegistry {
    /// Starts a registry on a free loopback port and waits until it answers
    /// `GET /v2/` over verified TLS.
    pub(crate) fn start(ca: &TestCa) -> RealRegistry {
        let dir = tempfile::Builder::new()
            .prefix("e2e-registry")
            .tempdir()
            .expect("registry tempdir");
        let (chain, key) = ca.leaf(&[REGISTRY_HOST, "127.0.0.1"]);
        std::fs::write(dir.path().join("tls.crt"), chain_pem(&chain)).expect("write tls.crt");
        std::fs::write(dir.path().join("tls.key"), key_pem(&key)).expect("write tls.key");
        std::fs::create_dir_all(dir.path().join("storage")).expect("storage dir");
        let test_ca = ca.cert_path().to_path_buf();

        // The port is picked by binding and releasing it; another process may
        // grab it in between, so a failed start is retried on a new port.
        let mut registry = RealRegistry {
            dir,
            addr: free_port(),
            test_ca,
            child: None,
            captured: Arc::new(Mutex::new(Captured::default())),
            baseline: 0,
        };
        let mut last_failure = String::new();
        for _ in 0..3 {
            match registry.spawn() {
                Ok(()) => return registry,
                Err(why) => {
                    last_failure = why;
                    registry.kill();
                    registry.addr = free_port();
                }
            }
        }
        panic!("docker-registry did not start: {last_failure}");
    }

    /// Restarts a stopped registry on the same port with the same storage.
    pub(crate) fn start_again(&mut self) {
        assert!(self.child.is_none(), "registry is still running");
        if let Err(why) = self.spawn() {
            self.kill();
            panic!("docker-registry did not start again: {why}");
        }
    }

    /// Kills the registry and waits until its port refuses connections.
    pub(crate) fn stop(&mut self) {
        self.kill();
        let deadline = Instant::now() + STOP_LIMIT;
        while TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "registry port {} still accepts connections {STOP_LIMIT:?} after kill",
                self.addr
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every line the registry printed (stdout and stderr), prefixed with
    /// `out: ` or `err: `.
    pub(crate) fn log_lines(&self) -> Vec<String> {
        self.captured
            .lock()
            .expect("registry log lock")
            .lines
            .clone()
    }

    /// Every access-log entry since the last [`Self::reset_counts`].
    pub(crate) fn access_entries(&self) -> Vec<AccessEntry> {
        let captured = self.captured.lock().expect("registry log lock");
        captured.access[self.baseline.min(captured.access.len())..].to_vec()
    }

    /// How many requests with `method` and a path containing `path_contains`
    /// the registry logged since the last [`Self::reset_counts`].
    pub(crate) fn requests(&self, method: &str, path_contains: &str) -> usize {
        self.access_entries()
            .iter()
            .filter(|e| e.method == method && e.path.contains(path_contains))
            .count()
    }

    /// Makes [`Self::requests`] count only requests logged from now on.
    pub(crate) fn reset_counts(&mut self) {
        self.settle();
        self.baseline = self
            .captured
            .lock()
            .expect("registry log lock")
            .access
            .len();
    }

    /// A readable dump of the access entries, for assertion messages.
    pub(crate) fn access_summary(&self) -> String {
        self.access_entries()
            .iter()
            .map(|e| format!("{} {} {}", e.method, e.path, e.status))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits (at most 5 s) until the registry has printed nothing for
    /// 300 ms. distribution writes an access-log line when the handler
    /// returns, which can be a moment after the client has its last byte.
    pub(crate) fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let last = self
                .captured
                .lock()
                .expect("registry log lock")
                .last_line_at;
            let quiet = last.is_none_or(|t| t.elapsed() >= Duration::from_millis(300));
            if quiet || Instant::now() >= deadline {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `curl` straight to the registry (not through the proxy), trusting the
    /// test CA; e.g. to check what a push stored.
    pub(crate) fn curl_direct(&self, args: &[&str], path: &str) -> CurlOutput {
        let url = format!("https://{}{path}", self.addr);
        let ca = self.test_ca.display().to_string();
        let mut all = vec!["--cacert", ca.as_str()];
        all.extend_from_slice(args);
        all.push(&url);
        curl(&all)
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yml")
    }

    fn write_config(&self) {
        let d = self.dir.path();
        let config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n\
             \x20 maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: {addr}\n  secret: e2e-not-a-secret\n\
             \x20 tls:\n    certificate: {cert}\n    key: {key}\n",
            storage = yaml_str(&d.join("storage")),
            addr = self.addr,
            cert = yaml_str(&d.join("tls.crt")),
            key = yaml_str(&d.join("tls.key")),
        );
        std::fs::write(self.config_path(), config).expect("write registry config");
    }

    fn spawn(&mut self) -> Result<(), String> {
        self.write_config();
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve")
            .arg(self.config_path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("spawn docker-registry (tests/run.sh installs it): {e}"))?;
        capture(
            child.stdout.take().expect("stdout piped"),
            "out",
            self.captured.clone(),
        );
        capture(
            child.stderr.take().expect("stderr piped"),
            "err",
            self.captured.clone(),
        );
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_LIMIT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait().expect("try_wait registry") {
                    thread::sleep(Duration::from_millis(100));
                    return Err(format!(
                        "exited with {status}; its output:\n{}",
                        self.log_lines().join("\n")
                    ));
                }
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                let out = self.curl_direct(
                    &["--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}"],
                    "/v2/",
                );
                if out.code() == 0 && out.stdout.trim() == "200" {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no 200 for GET /v2/ on {} within {READY_LIMIT:?}; its output:\n{}",
                    self.addr,
                    self.log_lines().join("\n")
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RealRegistry {
    fn drop(&mut self) {
        self.kill();
    }
}

fn capture(pipe: impl Read + Send + 'static, stream: &'static str, sink: Arc<Mutex<Captured>>) {
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let entry = if stream == "out" {
                AccessEntry::parse(&line)
            } else {
                None
            };
            // Echoed for a failing test's output, minus the noise: the
            // structured "response completed" lines repeat the access log at
            // length, and a push's upload requests are not what tests study.
            let upload = entry
                .as_ref()
                .is_some_and(|e| matches!(e.method.as_str(), "POST" | "PATCH" | "PUT"));
            if !upload && !line.contains("response completed") {
                eprintln!("[registry {stream}] {line}");
            }
            let mut captured = sink.lock().expect("registry log lock");
            if let Some(entry) = entry {
                captured.access.push(entry);
            }
            captured.lines.push(format!("{stream}: {line}"));
            captured.last_line_at = Some(Instant::now());
        }
    });
}

fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind for a free port");
    listener.local_addr().expect("local addr")
}

fn yaml_str(path: &Path) -> String {
    // JSON strings are valid YAML double-quoted scalars.
    serde_json::to_string(&path.display().to_string()).expect("quote path")
}

fn chain_pem(chain: &[CertificateDer<'static>]) -> String {
    chain
        .iter()
        .map(|cert| pem("CERTIFICATE", cert.as_ref()))
        .collect()
}

fn key_pem(key: &PrivateKeyDer<'static>) -> String {
    match key {
        PrivateKeyDer::Pkcs8(k) => pem("PRIVATE KEY", k.secret_pkcs8_der()),
        other => panic!("unexpected key type from TestCa::leaf: {other:?}"),
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ascii"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A binary-safe curl transfer.
#[derive(Debug)]
pub(crate) struct BinaryFetch {
    pub(crate) curl: CurlOutput,
    /// `%{http_code}` (0 if none).
    pub(crate) http_code: u16,
    /// `%{num_redirects}`: redirects curl itself followed.
    pub(crate) num_redirects: u32,
    /// Response header lines (the CONNECT answer included).
    pub(crate) headers: String,
    pub(crate) body: Vec<u8>,
}

impl BinaryFetch {
    /// The last value of header `name` (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.headers
            .lines()
            .rev()
            .filter_map(|line| line.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
    }

    /// Every status line curl received (e.g. `HTTP/2 200`), in order.
    pub(crate) fn status_lines(&self) -> Vec<String> {
        self.headers
            .lines()
            .filter(|l| l.starts_with("HTTP/"))
            .map(|l| l.trim().to_owned())
            .collect()
    }

    /// A short description for assertion messages (without the body).
    pub(crate) fn describe(&self) -> String {
        format!(
            "curl exit {}, http {}, redirects {}, {} body bytes\nheaders:\n{}\nstderr:\n{}",
            self.curl.code(),
            self.http_code,
            self.num_redirects,
            self.body.len(),
            self.headers,
            self.curl.stderr
        )
    }
}

/// `curl -x PROXY --cacert <pullcache ca> [args] URL`, keeping the body as
/// bytes. No `-L`: a redirect reaching the client shows.
pub(crate) fn proxied_curl(proxy: &TestProxy, args: &[&str], url: &str) -> BinaryFetch {
    let ca = proxy.ca_cert_path().display().to_string();
    let proxy_url = proxy.url();
    let mut all = vec!["-x", proxy_url.as_str(), "--cacert", ca.as_str()];
    all.extend_from_slice(args);
    curl_bytes(&all, url)
}

/// `curl [args] URL` keeping the body as bytes and the response headers.
pub(crate) fn curl_bytes(args: &[&str], url: &str) -> BinaryFetch {
    let tmp = tempfile::Builder::new()
        .prefix("e2e-curl")
        .tempdir()
        .expect("curl tempdir");
    let body_path = tmp.path().join("body");
    let headers_path = tmp.path().join("headers");
    let (body_s, headers_s) = (
        body_path.display().to_string(),
        headers_path.display().to_string(),
    );
    let mut all = vec![
        "-o",
        body_s.as_str(),
        "-D",
        headers_s.as_str(),
        "-w",
        "%{http_code} %{num_redirects}",
    ];
    all.extend_from_slice(args);
    all.push(url);
    let curl = curl(&all);
    let mut fields = curl.stdout.split_whitespace();
    let http_code = fields.next().and_then(|f| f.parse().ok()).unwrap_or(0);
    let num_redirects = fields.next().and_then(|f| f.parse().ok()).unwrap_or(0);
    BinaryFetch {
        http_code,
        num_redirects,
        headers: std::fs::read_to_string(&headers_path).unwrap_or_default(),
        body: std::fs::read(&body_path).unwrap_or_default(),
        curl,
    }
}

/// `https://registry-1.docker.io/v2/<repo>/blobs/<digest>`.
pub(crate) fn blob_url(repo: &str, digest: &str) -> String {
    format!("https://{REGISTRY_HOST}/v2/{repo}/blobs/{digest}")
}

/// `https://registry-1.docker.io/v2/<repo>/manifests/<reference>`.
pub(crate) fn manifest_url(repo: &str, reference: &str) -> String {
    format!("https://{REGISTRY_HOST}/v2/{repo}/manifests/{reference}")
}

/// Waits up to `limit` for `dir` to be empty or absent; returns what is
/// left in it otherwise.
pub(crate) fn wait_dir_empty(dir: &Path, limit: Duration) -> Result<(), Vec<PathBuf>> {
    let deadline = Instant::now() + limit;
    loop {
        let left: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(_) => Vec::new(),
        };
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(left);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Where pullcache commits a blob: `<data_dir>/blobs/sha256/<2 hex>/<64 hex>`.
pub(crate) fn cached_blob_path(proxy: &TestProxy, digest: &str) -> PathBuf {
    let hex = super::image::digest_hex(digest);
    proxy
        .data_dir()
        .join("blobs")
        .join("sha256")
        .join(&hex[..2])
        .join(hex)
}

/// pullcache in front of `registry` (as `registry-1.docker.io`), trusting
/// the test CA upstream, with the given `[cache]` tag TTL.
pub(crate) fn proxy_for(ca: &TestCa, registry: &RealRegistry, tag_ttl: &str) -> TestProxy {
    let config = super::ProxyConfig {
        intercept: vec![REGISTRY_HOST.to_owned()],
        ca_files: vec![ca.cert_path().to_path_buf()],
        resolve: vec![(REGISTRY_HOST.to_owned(), registry.addr())],
        extra: format!(
            "[cache]\ntag_ttl = \"{tag_ttl}\"\nvisibility_ttl = \"1h\"\nupstream_stall = \"60s\"\n"
        ),
        ..super::ProxyConfig::default()
    };
    TestProxy::start(&config.render())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_distribution_access_log_lines() {
        let line = r#"127.0.0.1 - - [22/Nov/2026:01:15:26 +0000] "HEAD /v2/x/manifests/latest HTTP/2.0" 404 96 "" "curl/7.88.1""#;
        assert_eq!(
            AccessEntry::parse(line),
            Some(AccessEntry {
                method: "HEAD".into(),
                path: "/v2/x/manifests/latest".into(),
                status: 404,
            })
        );
        assert_eq!(
            AccessEntry::parse(r#"time="2026" level=info msg="x""#),
            None
        );
    }

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
