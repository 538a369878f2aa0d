//! Locating and running the `pullcache` binary. The tests drive the real
//! executable, not the library, so that the CLI, config loading, exit codes and
//! logging are exercised exactly as an operator would meet them.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Environment variables the binary reads. They are removed from every child
/// so that a developer's shell settings cannot change what a test sees.
const PULLCACHE_ENV: &[&str] = &["PULLCACHE_CONFIG", "PULLCACHE_LISTEN", "PULLCACHE_DATA_DIR"];

/// Path of the built `pullcache` binary.
///
/// Cargo does not build other packages' binaries for an integration test of
/// the root package, so this looks next to the test executable
/// (`target/<profile>/deps/e2e-…` → `target/<profile>/pullcache`), which is
/// where `cargo build -p pullcache` puts it with the same target dir.
pub(crate) fn pullcache_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps");
    let bin = profile_dir.join(format!("pullcache{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build -p pullcache` first; tests/run.sh does",
        bin.display()
    );
    bin
}

/// A `Command` for the binary with a predictable environment: no inherited
/// `PULLCACHE_*`, no colours, and a log filter that includes pullcache's
/// debug lines (the tests grep them).
pub(crate) fn pullcache_command() -> Command {
    let mut cmd = Command::new(pullcache_bin());
    for var in PULLCACHE_ENV {
        cmd.env_remove(var);
    }
    cmd.env("RUST_LOG", "info,pullcache=debug")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    cmd
}

/// What a bounded run produced. `status` is `None` when the process had to be
/// killed because it outlived its time limit.
#[derive(Debug)]
pub(crate) struct BoundedOutput {
    pub(crate) status: Option<ExitStatus>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl BoundedOutput {
    /// The exit code, or a panic that shows the output when the process was
    /// killed by us or by a signal (either way the test's premise is broken).
    pub(crate) fn code(&self) -> i32 {
        match self.status.and_then(|s| s.code()) {
            Some(code) => code,
            None => panic!("process did not exit by itself: {self:#?}"),
        }
    }
}

/// Runs `cmd` to completion with captured output, killing it after `limit`.
///
/// Used for commands that should exit on their own (`ca …`, invalid configs):
/// if a regression makes one start serving instead, the test fails after
/// `limit` instead of hanging the suite.
pub(crate) fn run_bounded(mut cmd: Command, limit: Duration) -> BoundedOutput {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn command");
    // Drain both pipes on their own threads so a chatty child cannot block
    // on a full pipe while we are polling for its exit.
    let out = drain(child.stdout.take().expect("stdout piped"));
    let err = drain(child.stderr.take().expect("stderr piped"));
    let status = wait_bounded(&mut child, limit);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    BoundedOutput {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// Polls `child` until it exits or `limit` passes.
pub(crate) fn wait_bounded(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}
