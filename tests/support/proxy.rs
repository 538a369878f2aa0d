//! A `pullcache serve` child process with its own data directory and config.
//!
//! The proxy always listens on `127.0.0.1:0`; the real port is taken from the
//! `listen.addr=` line it logs once bound, so tests can run in parallel
//! without racing for ports. Its stderr is collected line by line so tests can
//! assert on what it logged, and echoed to the test's own stderr so a failing
//! test shows the proxy's side of the story.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::bin::{pullcache_command, wait_bounded};
use super::{toml_str, REGISTRY_HOST};

/// How long the proxy may take to bind its listener.
const STARTUP_LIMIT: Duration = Duration::from_secs(20);

/// Builds the parts of a config file the tests vary. `render` produces a body
/// for [`TestProxy::start`], which adds `listen` and `data_dir` itself.
#[derive(Clone, Debug)]
pub(crate) struct ProxyConfig {
    pub(crate) clients: Vec<String>,
    pub(crate) connect_ports: Vec<u16>,
    pub(crate) tunnel: bool,
    pub(crate) intercept: Vec<String>,
    pub(crate) ca_files: Vec<PathBuf>,
    pub(crate) resolve: Vec<(String, SocketAddr)>,
    /// Appended verbatim, e.g. a `[timeouts]` table.
    pub(crate) extra: String,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            clients: vec!["127.0.0.0/8".into(), "::1/128".into()],
            connect_ports: vec![443],
            tunnel: true,
            // pullcache's CA is name-constrained to the intercepted hosts and
            // refuses to be created with none, so there is always one.
            intercept: vec![REGISTRY_HOST.to_owned()],
            ca_files: Vec::new(),
            resolve: Vec::new(),
            extra: String::new(),
        }
    }
}

impl ProxyConfig {
    pub(crate) fn render(&self) -> String {
        let list = |items: Vec<String>| items.join(", ");
        let mut out = String::new();
        out.push_str("[access]\n");
        out.push_str(&format!(
            "clients = [{}]\n",
            list(self.clients.iter().map(|c| toml_str(c)).collect())
        ));
        out.push_str(&format!(
            "connect_ports = [{}]\n",
            list(self.connect_ports.iter().map(u16::to_string).collect())
        ));
        out.push_str(&format!("tunnel = {}\n\n", self.tunnel));
        out.push_str("[intercept]\n");
        out.push_str(&format!(
            "hosts = [{}]\n\n",
            list(self.intercept.iter().map(|h| toml_str(h)).collect())
        ));
        out.push_str("[upstream]\n");
        out.push_str(&format!(
            "ca_files = [{}]\n\n",
            list(
                self.ca_files
                    .iter()
                    .map(|p| toml_str(&p.display().to_string()))
                    .collect()
            )
        ));
        out.push_str("[upstream.resolve]\n");
        for (host, addr) in &self.resolve {
            out.push_str(&format!(
                "{} = {}\n",
                toml_str(host),
                toml_str(&addr.to_string())
            ));
        }
        out.push('\n');
        out.push_str(&self.extra);
        out
    }
}

/// How to launch the proxy, for the tests that vary flags and environment.
#[derive(Clone, Debug)]
pub(crate) struct Launch {
    /// The config body (without `listen`/`data_dir`).
    pub(crate) body: String,
    /// The `listen` value written into the config file.
    pub(crate) file_listen: String,
    /// Arguments after the binary name; defaults to `serve --config FILE`.
    /// `{config}` here and in `env` values is replaced with the config
    /// file's path.
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
}

impl Launch {
    pub(crate) fn new(body: &str) -> Self {
        Launch {
            body: body.to_owned(),
            file_listen: "127.0.0.1:0".to_owned(),
            args: vec!["serve".into(), "--config".into(), "{config}".into()],
            env: Vec::new(),
        }
    }
}

/// Why a launch did not produce a listening proxy.
#[derive(Debug)]
pub(crate) struct StartFailure {
    /// `None` when the process was still running but never logged its address.
    pub(crate) status: Option<ExitStatus>,
    pub(crate) logs: Vec<String>,
}

pub(crate) struct TestProxy {
    child: Child,
    addr: SocketAddr,
    logs: Logs,
    dir: TempDir,
    /// How it was launched, so [`TestProxy::restart`] can do it again.
    launch: Launch,
}

impl TestProxy {
    /// Starts `pullcache serve` with `body` as its config (after a `listen`
    /// and `data_dir` this function puts at the top) and waits until it
    /// listens. Panics with the proxy's logs if it does not.
    pub(crate) fn start(body: &str) -> TestProxy {
        match TestProxy::launch(Launch::new(body)) {
            Ok(proxy) => proxy,
            Err(failure) => panic!(
                "pullcache did not start (status {:?}); its log:\n{}",
                failure.status,
                failure.logs.join("\n")
            ),
        }
    }

    pub(crate) fn launch(launch: Launch) -> Result<TestProxy, StartFailure> {
        let dir = tempfile::Builder::new()
            .prefix("e2e-pullcache")
            .tempdir()
            .expect("tempdir");
        let config_path = dir.path().join("pullcache.toml");
        let data_dir = dir.path().join("data");
        // Top-level keys must precede the body's tables in TOML.
        let config = format!(
            "listen = {}\ndata_dir = {}\n\n{}",
            toml_str(&launch.file_listen),
            toml_str(&data_dir.display().to_string()),
            launch.body
        );
        std::fs::write(&config_path, config).expect("write config");
        let (child, addr, logs) = spawn(&launch, &config_path)?;
        Ok(TestProxy {
            child,
            addr,
            logs,
            dir,
            launch,
        })
    }

    /// Starts the proxy again with the same config and data directory
    /// (on a new port), e.g. after [`TestProxy::send_sigkill`] or
    /// [`TestProxy::terminate`]. A proxy still running is killed first.
    /// On failure the old (exited) process stays in place.
    pub(crate) fn restart(&mut self) -> Result<(), StartFailure> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, addr, logs) = spawn(&self.launch, &self.config_path())?;
        self.child = child;
        self.addr = addr;
        self.logs = logs;
        Ok(())
    }

    /// The config file the proxy was started with.
    pub(crate) fn config_path(&self) -> PathBuf {
        self.dir.path().join("pullcache.toml")
    }

    /// The address the proxy is listening on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, for curl's `-x`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The root certificate pullcache created, which clients must trust.
    pub(crate) fn ca_cert_path(&self) -> PathBuf {
        self.data_dir().join("ca").join("ca.crt")
    }

    pub(crate) fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("log lock").clone()
    }

    /// Waits up to `limit` for a logged line containing `needle`.
    pub(crate) fn wait_for_log(&self, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.logs().iter().any(|line| line.contains(needle)) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits up to `limit` for the exit status; `None` if
    /// the proxy is still running then (it is killed on drop).
    pub(crate) fn terminate(&mut self, limit: Duration) -> Option<ExitStatus> {
        self.send_sigterm();
        self.wait_exit(limit)
    }

    pub(crate) fn send_sigterm(&self) {
        // The `kill` command, because the crate forbids unsafe code and std
        // offers no way to send a signal other than SIGKILL.
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed: {sent}");
    }

    /// Sends SIGKILL: no shutdown, no flush, exactly like a crash. Takes
    /// `&self` so that it can be sent while other threads use the proxy;
    /// reap it with [`TestProxy::wait_exit`].
    pub(crate) fn send_sigkill(&self) {
        let sent = Command::new("kill")
            .args(["-KILL", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -KILL failed: {sent}");
    }

    /// Waits up to `limit` for the proxy to exit.
    pub(crate) fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        wait_bounded(&mut self.child, limit)
    }
}

/// The lines a proxy logged, shared with the thread that reads its stderr.
type Logs = Arc<Mutex<Vec<String>>>;

/// Spawns `pullcache` as `launch` says with `config_path`, and waits until it
/// logs its listening address.
fn spawn(
    launch: &Launch,
    config_path: &std::path::Path,
) -> Result<(Child, SocketAddr, Logs), StartFailure> {
    let mut cmd: Command = pullcache_command();
    for arg in &launch.args {
        cmd.arg(arg.replace("{config}", &config_path.display().to_string()));
    }
    for (key, value) in &launch.env {
        cmd.env(
            key,
            value.replace("{config}", &config_path.display().to_string()),
        );
    }
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn pullcache");

    let logs = Arc::new(Mutex::new(Vec::new()));
    let stderr = child.stderr.take().expect("stderr piped");
    let sink = logs.clone();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            eprintln!("[pullcache] {line}");
            sink.lock().expect("log lock").push(line);
        }
    });

    let deadline = Instant::now() + STARTUP_LIMIT;
    loop {
        let found = logs
            .lock()
            .expect("log lock")
            .iter()
            .find_map(|line| parse_listen_addr(line));
        if let Some(addr) = found {
            return Ok((child, addr, logs));
        }
        let exited = child.try_wait().expect("try_wait");
        if exited.is_some() || Instant::now() >= deadline {
            if exited.is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
            // Give the reader thread a moment to collect the last lines.
            thread::sleep(Duration::from_millis(100));
            let logs = logs.lock().expect("log lock").clone();
            return Err(StartFailure {
                status: exited,
                logs,
            });
        }
        thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Extracts the address from a log line containing `listen.addr=IP:PORT`
/// (tolerating a quoted or Debug-formatted value).
pub(crate) fn parse_listen_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listen.addr=")? + "listen.addr=".len()..];
    let value = rest
        .split_whitespace()
        .next()?
        .trim_matches(|c| c == '"' || c == ',');
    value.parse().ok()
}
