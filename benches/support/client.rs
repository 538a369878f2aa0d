//! The benchmark's client: the real curl, as a registry client's TLS and
//! HTTP stack would behave, downloading one blob either straight from the
//! upstream or through pullcache (CONNECT, then TLS with pullcache's CA).
//! The body goes to a file; timing comes from curl's own `%{time_total}`,
//! so process start-up is not counted. Hashing the file afterwards is not
//! timed either.

use std::fs::File;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _};
use sha2::{Digest as _, Sha256};

use super::{blob_path, to_hex, REGISTRY_HOST};

/// The HTTP version curl is told to use, for all three kinds of transfer.
pub(crate) const HTTP_VERSION_FLAG: &str = "--http1.1";
/// The same, for the report.
pub(crate) const HTTP_VERSION_LABEL: &str = "HTTP/1.1";

/// Proxy variables curl would otherwise honour; removed so that only an
/// explicit `-x` decides where a request goes.
pub(crate) const PROXY_ENV: &[&str] = &[
    "http_proxy",
    "https_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// Where a download goes.
pub(crate) enum Route<'a> {
    /// Straight to the upstream listening on `addr` (127.0.0.1), with
    /// `--resolve` so the URL and SNI still name `registry-1.docker.io`.
    Direct { addr: SocketAddr, ca: &'a Path },
    /// Through pullcache at `proxy`, trusting its CA.
    Proxy { proxy: SocketAddr, ca: &'a Path },
}

/// What curl reported about a successful transfer.
#[derive(Clone, Debug)]
pub(crate) struct Transfer {
    /// `%{time_total}`: from start to the last byte, in seconds.
    pub(crate) secs: f64,
    /// `%{size_download}`.
    pub(crate) bytes: u64,
    /// `%{http_version}`: `1.1` or `2`.
    pub(crate) http_version: String,
}

/// The curl program: `/usr/bin/curl`, or whatever `curl` is on `PATH`.
pub(crate) fn curl_program() -> &'static str {
    if Path::new("/usr/bin/curl").exists() {
        "/usr/bin/curl"
    } else {
        "curl"
    }
}

/// Downloads blob `hex` by `route` into `out`. Fails if curl does (including
/// any non-2xx status, thanks to `--fail`).
pub(crate) fn download(route: &Route<'_>, hex: &str, out: &Path) -> anyhow::Result<Transfer> {
    let path = blob_path(hex);
    let mut cmd = Command::new(curl_program());
    for var in PROXY_ENV {
        cmd.env_remove(var);
    }
    // `-q` first: ignore any ~/.curlrc, so the flags below are the whole story.
    cmd.arg("-q")
        .args(["--silent", "--show-error", "--fail", "--max-time", "600"])
        .arg(HTTP_VERSION_FLAG)
        .arg("-o")
        .arg(out)
        .args(["-w", "%{time_total} %{size_download} %{http_version}"]);
    match route {
        Route::Direct { addr, ca } => {
            if !addr.ip().is_loopback() {
                bail!("refusing to download from non-loopback {addr}");
            }
            let port = addr.port();
            cmd.arg("--cacert")
                .arg(ca)
                .arg("--resolve")
                .arg(format!("{REGISTRY_HOST}:{port}:{}", addr.ip()))
                .arg(format!("https://{REGISTRY_HOST}:{port}{path}"));
        }
        Route::Proxy { proxy, ca } => {
            if !proxy.ip().is_loopback() {
                bail!("refusing to use non-loopback proxy {proxy}");
            }
            cmd.arg("-x")
                .arg(format!("http://{proxy}"))
                .arg("--cacert")
                .arg(ca)
                .arg(format!("https://{REGISTRY_HOST}{path}"));
        }
    }
    cmd.stdin(Stdio::null());
    let output = cmd.output().context("cannot run curl")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "curl failed ({}) for {path}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let fields: Vec<&str> = stdout.split_whitespace().collect();
    let parsed = match fields.as_slice() {
        [secs, bytes, version] => secs
            .parse()
            .ok()
            .zip(bytes.parse().ok())
            .map(|(secs, bytes)| Transfer {
                secs,
                bytes,
                http_version: (*version).to_owned(),
            }),
        _ => None,
    };
    parsed.with_context(|| format!("unexpected curl -w output: {stdout:?}"))
}

/// SHA-256 of the file at `path`, as lower-case hex.
pub(crate) fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(to_hex(&hasher.finalize()))
}
