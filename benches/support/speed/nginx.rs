//! Debian's nginx as two baselines, in one process started by the
//! benchmark with a config generated into its temporary directory:
//!
//! - a static HTTPS file server on 127.0.0.1 serving the same blob files
//!   as the rustls ceiling (the "what you'd deploy instead of a cache hit"
//!   baseline);
//! - a caching reverse proxy (`proxy_cache`) in front of the benchmark's
//!   origin, verifying the origin's certificate, for the miss baseline.
//!
//! `daemon off; master_process off;` keeps it one process (one worker, the
//! one the benchmark started), so its CPU time is read from
//! `/proc/<pid>/stat` like pullcache's, and killing the child stops it.
//! Only the directives needed to run unprivileged in a temporary directory
//! and to serve TLS are set; buffers and everything else keep nginx's
//! defaults. The generated config is printed in the report.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// How long nginx may take to listen.
const STARTUP_LIMIT: Duration = Duration::from_secs(10);

/// Where the nginx binary is, if installed.
pub(crate) fn find() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PULLCACHE_BENCH_NGINX") {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// `nginx -v`'s answer, e.g. `nginx/1.22.1`.
pub(crate) fn version(bin: &Path) -> String {
    Command::new(bin)
        .arg("-v")
        .stdin(Stdio::null())
        .output()
        .ok()
        .map(|out| {
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .trim_start_matches("nginx version: ")
                .to_owned()
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// What nginx is started with.
pub(crate) struct NginxSetup<'a> {
    pub(crate) bin: &'a Path,
    /// A directory of its own (config, logs, temp files, cache).
    pub(crate) dir: &'a Path,
    /// Served as the static site's root.
    pub(crate) www: &'a Path,
    /// The certificate chain and key both servers present.
    pub(crate) cert: &'a Path,
    pub(crate) key: &'a Path,
    /// The name the clients ask for (also what it asks the origin for).
    pub(crate) host: &'a str,
    /// The origin's listener for nginx, and the CA that signed its leaf.
    pub(crate) origin: SocketAddr,
    pub(crate) origin_ca: &'a Path,
}

/// The running nginx.
pub(crate) struct Nginx {
    child: Child,
    static_addr: SocketAddr,
    cache_addr: SocketAddr,
    config: String,
    error_log: PathBuf,
}

impl Nginx {
    pub(crate) fn start(setup: &NginxSetup<'_>) -> anyhow::Result<Nginx> {
        let dir = setup.dir;
        for sub in ["tmp", "cache", "logs"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
        }
        let static_addr = free_port()?;
        let cache_addr = free_port()?;
        let config = config(setup, static_addr, cache_addr);
        let config_path = dir.join("nginx.conf");
        std::fs::write(&config_path, &config)
            .with_context(|| format!("cannot write {}", config_path.display()))?;
        let error_log = dir.join("logs").join("error.log");
        let child = Command::new(setup.bin)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&config_path)
            .arg("-e")
            .arg(&error_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", setup.bin.display()))?;
        let mut nginx = Nginx {
            child,
            static_addr,
            cache_addr,
            config,
            error_log,
        };
        let deadline = Instant::now() + STARTUP_LIMIT;
        for addr in [static_addr, cache_addr] {
            while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                if let Some(status) = nginx.child.try_wait()? {
                    bail!("nginx exited ({status}): {}", nginx.error_log_text());
                }
                if Instant::now() > deadline {
                    bail!(
                        "nginx does not listen on {addr} after {STARTUP_LIMIT:?}: {}",
                        nginx.error_log_text()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(nginx)
    }

    /// The static file server.
    pub(crate) fn static_addr(&self) -> SocketAddr {
        self.static_addr
    }

    /// The caching reverse proxy.
    pub(crate) fn cache_addr(&self) -> SocketAddr {
        self.cache_addr
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The generated `nginx.conf`.
    pub(crate) fn config(&self) -> &str {
        &self.config
    }

    /// Fails if nginx is no longer running.
    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!("nginx exited ({status}): {}", self.error_log_text()),
        }
    }

    /// The last lines of its error log.
    pub(crate) fn error_log_text(&self) -> String {
        let text = std::fs::read_to_string(&self.error_log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

fn config(setup: &NginxSetup<'_>, static_addr: SocketAddr, cache_addr: SocketAddr) -> String {
    let dir = setup.dir.display();
    let www = setup.www.display();
    let cert = setup.cert.display();
    let key = setup.key.display();
    let origin = setup.origin;
    let origin_ca = setup.origin_ca.display();
    let host = setup.host;
    format!(
        "\
# Generated by pullcache's speed benchmark. One process, one worker.
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/logs/error.log warn;
events {{
    worker_connections 1024;
}}
http {{
    access_log off;
    default_type application/octet-stream;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    proxy_cache_path {dir}/cache levels=1:2 keys_zone=bench:8m max_size=64g inactive=1d use_temp_path=off;

    # Static files: the direct baseline for cache hits.
    server {{
        listen {static_addr} ssl;
        server_name {host};
        root {www};
    }}

    # Caching reverse proxy in front of the origin: the miss baseline.
    server {{
        listen {cache_addr} ssl;
        server_name {host};
        location /v2/ {{
            proxy_pass https://{origin};
            proxy_http_version 1.1;
            proxy_set_header Host {host};
            proxy_set_header Connection \"\";
            proxy_ssl_server_name on;
            proxy_ssl_name {host};
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {origin_ca};
            proxy_cache bench;
            proxy_cache_key $uri;
            proxy_cache_valid 200 1d;
        }}
    }}
}}
"
    )
}
