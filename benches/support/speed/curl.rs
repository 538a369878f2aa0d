//! curl as the benchmark's client, one process per download, always
//! `--http1.1` (the same for every route, so routes differ only in what
//! serves them), either straight to a server on 127.0.0.1 (`--resolve` keeps
//! the URL's name and the SNI) or through pullcache (`-x`, CONNECT). Timing
//! comes from curl's own `-w` variables, so process start-up is not
//! counted. Bodies go where the caller says: `/dev/null` for timed
//! downloads (only curl's byte count is checked), a file on tmpfs, hashed
//! afterwards, for the untimed verification downloads.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context as _};

use crate::support::client::{curl_program, PROXY_ENV};

/// The same for every route.
pub(crate) const HTTP_VERSION_FLAG: &str = "--http1.1";

const WRITE_OUT: &str = "%{http_code} %{size_download} %{time_total} %{time_starttransfer} %{time_appconnect} %{time_connect} %{http_version}";

/// How a download reaches its server.
#[derive(Clone, Copy)]
pub(crate) enum Via {
    /// Straight to this address (`--resolve host:port:ip`).
    Direct(SocketAddr),
    /// Through pullcache at this address (`-x`), to `host:443`.
    Proxy(SocketAddr),
}

/// One download.
#[derive(Clone, Copy)]
pub(crate) struct Get<'a> {
    pub(crate) via: Via,
    pub(crate) host: &'a str,
    pub(crate) path: &'a str,
    /// The CA the server's certificate must chain to.
    pub(crate) ca: &'a Path,
}

/// What curl reported.
#[derive(Clone, Debug)]
pub(crate) struct Timing {
    pub(crate) status: u16,
    pub(crate) bytes: u64,
    /// `time_total`: start to last byte, seconds.
    pub(crate) total: f64,
    /// `time_starttransfer`: start to first response byte.
    pub(crate) first_byte: f64,
    /// `time_appconnect`: start to the end of the TLS handshake with the
    /// server (through the tunnel, when proxied).
    pub(crate) tls_done: f64,
    /// `time_connect`: start to the TCP connection (to the proxy, when
    /// proxied).
    pub(crate) tcp_done: f64,
    pub(crate) http_version: String,
    /// curl's own CPU time in clock ticks, when the caller measured it.
    pub(crate) client_ticks: u64,
}

impl Get<'_> {
    fn command(&self, out: &Path, extra: &[&str]) -> anyhow::Result<Command> {
        let mut cmd = Command::new(curl_program());
        for var in PROXY_ENV {
            cmd.env_remove(var);
        }
        // `-q` first: ignore any ~/.curlrc.
        cmd.arg("-q")
            .args(["--silent", "--show-error", "--max-time", "900"])
            .arg(HTTP_VERSION_FLAG)
            .arg("--cacert")
            .arg(self.ca)
            .arg("-o")
            .arg(out)
            .args(extra);
        let host = self.host;
        let path = self.path;
        match self.via {
            Via::Direct(addr) => {
                if !addr.ip().is_loopback() {
                    bail!("refusing to download from non-loopback {addr}");
                }
                let port = addr.port();
                cmd.arg("--resolve")
                    .arg(format!("{host}:{port}:{}", addr.ip()))
                    .arg(format!("https://{host}:{port}{path}"));
            }
            Via::Proxy(proxy) => {
                if !proxy.ip().is_loopback() {
                    bail!("refusing to use non-loopback proxy {proxy}");
                }
                cmd.arg("-x")
                    .arg(format!("http://{proxy}"))
                    .arg(format!("https://{host}{path}"));
            }
        }
        cmd.stdin(Stdio::null());
        Ok(cmd)
    }

    /// Starts the download into `out`; [`finish`] waits for it.
    pub(crate) fn spawn(&self, out: &Path) -> anyhow::Result<Child> {
        let mut cmd = self.command(out, &["-w", WRITE_OUT])?;
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.spawn().context("cannot run curl")
    }

    /// Downloads into `out`; fails unless curl succeeds with a 200.
    pub(crate) fn run(&self, out: &Path) -> anyhow::Result<Timing> {
        let child = self.spawn(out)?;
        finish(child, self.path)
    }

    /// One `HEAD` with `-v`: the TLS version and cipher, and the ALPN
    /// protocol, as curl reports them (for the report).
    pub(crate) fn describe_tls(&self) -> String {
        let described = self
            .command(Path::new("/dev/null"), &["-I", "-v"])
            .ok()
            .and_then(|mut cmd| cmd.stdout(Stdio::null()).output().ok())
            .map(|out| {
                let text = String::from_utf8_lossy(&out.stderr).into_owned();
                // Through a proxy curl reports the inner connection last.
                let tls = text
                    .lines()
                    .filter_map(|l| l.split_once("SSL connection using ").map(|(_, r)| r))
                    .next_back()
                    .unwrap_or("TLS unknown")
                    .trim()
                    .to_owned();
                let alpn = text
                    .lines()
                    .filter_map(|l| l.split_once("ALPN: server accepted ").map(|(_, r)| r))
                    .next_back()
                    .map_or_else(|| "no ALPN".to_owned(), |p| format!("ALPN {}", p.trim()));
                format!("{tls}, {alpn}")
            });
        described.unwrap_or_else(|| "curl -v failed".to_owned())
    }
}

/// Waits for a download started with [`Get::spawn`].
pub(crate) fn finish(child: Child, path: &str) -> anyhow::Result<Timing> {
    let output = child.wait_with_output().context("cannot wait for curl")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "curl failed ({}) for {path}: {} {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            stdout.trim()
        );
    }
    let fields: Vec<&str> = stdout.split_whitespace().collect();
    let timing = match fields.as_slice() {
        [status, bytes, total, first, tls, tcp, version] => (|| {
            Some(Timing {
                status: status.parse().ok()?,
                bytes: bytes.parse().ok()?,
                total: total.parse().ok()?,
                first_byte: first.parse().ok()?,
                tls_done: tls.parse().ok()?,
                tcp_done: tcp.parse().ok()?,
                http_version: (*version).to_owned(),
                client_ticks: 0,
            })
        })(),
        _ => None,
    };
    let timing = timing.with_context(|| format!("unexpected curl -w output: {stdout:?}"))?;
    if timing.status != 200 {
        bail!("HTTP {} for {path}", timing.status);
    }
    Ok(timing)
}

/// `curl --version`'s first line, shortened: `curl 7.88.1 (OpenSSL/3.0.x)`.
pub(crate) fn version() -> String {
    Command::new(curl_program())
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()
        .and_then(|out| {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let line = text.lines().next()?.to_owned();
            let mut words = line.split_whitespace();
            let version = words.nth(1)?.to_owned();
            let tls = line
                .split_whitespace()
                .find(|w| w.starts_with("OpenSSL/") || w.starts_with("GnuTLS/"))
                .unwrap_or("?")
                .to_owned();
            Some(format!("curl {version} ({tls})"))
        })
        .unwrap_or_else(|| "curl".to_owned())
}
