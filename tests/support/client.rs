//! Clients for the proxy: the real curl, as a registry client's TLS stack
//! would behave, and raw sockets for requests curl refuses to send (malformed
//! CONNECT lines) or for holding a tunnel open.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Proxy variables curl would otherwise honour; removed so that only the
/// explicit `-x` decides where a request goes.
const PROXY_ENV: &[&str] = &[
    "http_proxy",
    "https_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// Separates the body from curl's `-w` summary in stdout.
const WRITE_OUT_MARK: &str = "\n@@e2e-curl@@ ";

#[derive(Debug)]
pub(crate) struct CurlOutput {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl CurlOutput {
    /// curl's exit code (0 on success; 60 is a certificate verification
    /// failure, 56 a refused CONNECT).
    pub(crate) fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }
}

/// Runs curl with `args`, silent but showing errors, bounded by `--max-time`.
pub(crate) fn curl(args: &[&str]) -> CurlOutput {
    let program = if Path::new("/usr/bin/curl").exists() {
        "/usr/bin/curl"
    } else {
        "curl"
    };
    let mut cmd = Command::new(program);
    for var in PROXY_ENV {
        cmd.env_remove(var);
    }
    // Ignore any ~/.curlrc so the flags below are the whole story.
    cmd.arg("-q")
        .args([
            "--silent",
            "--show-error",
            "--max-time",
            "20",
            "--connect-timeout",
            "10",
        ])
        .args(args)
        .stdin(Stdio::null());
    let out = cmd
        .output()
        .expect("run curl (tests/run.sh installs it if missing)");
    CurlOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A curl transfer picked apart: the CONNECT answer, the final status, the
/// negotiated HTTP version, the response headers and the body.
#[derive(Debug)]
pub(crate) struct Fetch {
    pub(crate) curl: CurlOutput,
    /// `%{http_connect}`: the proxy's answer to CONNECT (0 if none).
    pub(crate) connect_code: u16,
    /// `%{http_code}`: the final response's status (0 if none).
    pub(crate) http_code: u16,
    /// `%{http_version}`: "1.1" or "2".
    pub(crate) http_version: String,
    /// Every header line curl received, CONNECT answer included.
    pub(crate) headers: String,
    pub(crate) body: String,
}

impl Fetch {
    /// The last value of header `name` (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.headers
            .lines()
            .rev()
            .filter_map(|line| line.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
    }

    /// The issuer of the server certificate curl saw, from `-v` output.
    pub(crate) fn issuer(&self) -> Option<String> {
        self.curl
            .stderr
            .lines()
            .find_map(|line| line.split_once("issuer:"))
            .map(|(_, v)| v.trim().to_owned())
    }
}

/// Runs curl verbosely with `args` (which name the proxy, the trust anchors
/// and the URL) and collects the transfer's details. Assertions are the
/// caller's: a failed transfer is a normal result here.
pub(crate) fn fetch(args: &[&str]) -> Fetch {
    let headers_file = tempfile::NamedTempFile::new().expect("headers tempfile");
    let headers_path = headers_file.path().display().to_string();
    let write_out = format!("{WRITE_OUT_MARK}%{{http_connect}} %{{http_code}} %{{http_version}}");
    let mut all: Vec<&str> = vec!["-v", "-D", &headers_path, "-w", &write_out];
    all.extend_from_slice(args);
    let curl = curl(&all);
    let headers = std::fs::read_to_string(headers_file.path()).unwrap_or_default();
    let (body, summary) = curl
        .stdout
        .rsplit_once(WRITE_OUT_MARK)
        .unwrap_or((curl.stdout.as_str(), ""));
    let fields: Vec<&str> = summary.split_whitespace().collect();
    let code = |i: usize| fields.get(i).and_then(|f| f.parse().ok()).unwrap_or(0);
    let (connect_code, http_code) = (code(0), code(1));
    let http_version = fields.get(2).copied().unwrap_or("").to_owned();
    Fetch {
        body: body.to_owned(),
        connect_code,
        http_code,
        http_version,
        headers,
        curl,
    }
}

/// Writes `request` to a fresh connection to `addr` and returns what came
/// back up to the end of the response head (or whatever arrived before the
/// peer closed or 10 s passed). The connection is closed afterwards.
pub(crate) fn raw_request(addr: SocketAddr, request: &[u8]) -> String {
    let (_stream, head) = raw_exchange(addr, request);
    head
}

/// Like [`raw_request`], but hands back the open connection too, e.g. a
/// tunnel that a CONNECT established.
pub(crate) fn raw_exchange(addr: SocketAddr, request: &[u8]) -> (TcpStream, String) {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to proxy");
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    stream.write_all(request).expect("write request");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !contains(&got, b"\r\n\r\n") && Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            // A reset after the answer still leaves the answer to assert on.
            Err(_) => break,
        }
    }
    (stream, String::from_utf8_lossy(&got).into_owned())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
