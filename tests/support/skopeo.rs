//! skopeo as the real client: pushing synthetic images straight to the test
//! registry, and pulling them through pullcache.
//!
//! Every run gets an isolated environment: no inherited proxy variables, an
//! empty `registries.conf` (a machine-wide mirror for docker.io would
//! otherwise redirect the pull), no credentials, its own HOME and tmpdir, and
//! `--insecure-policy` so no `/etc/containers/policy.json` is needed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use tempfile::TempDir;

use super::bin::{run_bounded, BoundedOutput};
use super::image::{hex, OciImage};
use super::registry::RealRegistry;
use super::{TestCa, TestProxy, REGISTRY_HOST};

/// Longest a single push or pull may take.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// An isolated working area for skopeo runs: HOME, tmpdir, config files and
/// certificate directories.
struct Sandbox {
    dir: TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("e2e-skopeo")
            .tempdir()
            .expect("skopeo tempdir");
        for sub in ["home", "tmp", "run", "registries.d", "certs"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("skopeo sandbox dir");
        }
        std::fs::write(dir.path().join("registries.conf"), "").expect("registries.conf");
        Sandbox { dir }
    }

    /// A directory holding only `ca.crt` (a copy of `ca_file`): skopeo's
    /// `--*-cert-dir` rejects a `.key` without a matching `.cert`, so
    /// pullcache's own CA directory (which holds `ca.key`) cannot be used.
    fn cert_dir(&self, ca_file: &Path) -> PathBuf {
        let certs = self.dir.path().join("certs");
        std::fs::copy(ca_file, certs.join("ca.crt")).expect("copy ca.crt");
        certs
    }

    fn command(&self) -> Command {
        let d = self.dir.path();
        let mut cmd = Command::new("skopeo");
        // A clean slate: in particular no proxy variables from the caller.
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", d.join("home"))
            .env("TMPDIR", d.join("tmp"))
            .env("XDG_RUNTIME_DIR", d.join("run"))
            .env("CONTAINERS_REGISTRIES_CONF", d.join("registries.conf"))
            .env("REGISTRY_AUTH_FILE", d.join("auth.json"))
            .arg("--insecure-policy")
            .arg("--registries.d")
            .arg(d.join("registries.d"))
            .arg("--tmpdir")
            .arg(d.join("tmp"));
        cmd
    }
}

/// Pushes `image` (with `--all` for an index, `--preserve-digests` so
/// skopeo fails rather than rewrite anything) straight to the registry's
/// `127.0.0.1:<port>`, as `<repo>:<tag>`. Go never proxies loopback, and the
/// sandbox has no proxy variables anyway. Panics with skopeo's output if the
/// push fails.
pub(crate) fn push(image: &OciImage, registry: &RealRegistry, ca: &TestCa, repo: &str) {
    let sandbox = Sandbox::new();
    let certs = sandbox.cert_dir(ca.cert_path());
    let mut cmd = sandbox.command();
    cmd.arg("copy")
        .arg("--retry-times=0")
        .arg("--preserve-digests")
        .arg("--dest-no-creds")
        .arg("--dest-cert-dir")
        .arg(&certs);
    if image.index.is_some() {
        cmd.arg("--all");
    }
    cmd.arg(format!("oci:{}:{}", image.path().display(), image.tag()))
        .arg(format!(
            "docker://{}/{repo}:{}",
            registry.addr(),
            image.tag()
        ));
    let out = run_bounded(cmd, RUN_LIMIT);
    assert_eq!(
        out.status.and_then(|s| s.code()),
        Some(0),
        "skopeo push failed: {out:#?}"
    );
}

/// Pulls `docker://registry-1.docker.io/<reference>` (`repo:tag` or
/// `repo@sha256:…`) through the proxy into `dir:<dest>`, trusting
/// pullcache's CA. Returns skopeo's output; the caller asserts.
pub(crate) fn pull_via_proxy(
    proxy: &TestProxy,
    reference: &str,
    dest: &Path,
    all: bool,
) -> BoundedOutput {
    let source = format!("docker://{REGISTRY_HOST}/{reference}");
    pull(&source, &proxy.ca_cert_path(), Some(proxy.url()), dest, all)
}

/// Pulls `<reference>` straight from the registry's `127.0.0.1:<port>`
/// (no proxy), trusting the test CA: checks the harness itself.
pub(crate) fn pull_direct(
    registry: &RealRegistry,
    ca: &TestCa,
    reference: &str,
    dest: &Path,
    all: bool,
) -> BoundedOutput {
    let source = format!("docker://{}/{reference}", registry.addr());
    pull(&source, ca.cert_path(), None, dest, all)
}

fn pull(
    source: &str,
    ca_file: &Path,
    proxy_url: Option<String>,
    dest: &Path,
    all: bool,
) -> BoundedOutput {
    let sandbox = Sandbox::new();
    let certs = sandbox.cert_dir(ca_file);
    let mut cmd = sandbox.command();
    if let Some(url) = proxy_url {
        cmd.env("HTTPS_PROXY", url);
    }
    cmd.arg("copy")
        .arg("--retry-times=0")
        .arg("--src-no-creds")
        .arg("--src-cert-dir")
        .arg(&certs);
    if all {
        cmd.arg("--all");
    }
    cmd.arg(source).arg(format!("dir:{}", dest.display()));
    run_bounded(cmd, RUN_LIMIT)
}

/// Asserts that a pull exited 0, showing its output otherwise.
#[track_caller]
pub(crate) fn assert_pulled(out: &BoundedOutput, what: &str) {
    assert_eq!(
        out.status.and_then(|s| s.code()),
        Some(0),
        "skopeo pull of {what} failed: {out:#?}"
    );
}

/// The content of a `dir:` destination: blob files (named by the hex of
/// their digest) and manifests (`manifest.json`, and `<hex>.manifest.json`
/// per instance with `--all`). Panics if any blob's bytes do not hash to its
/// name.
#[derive(Debug)]
pub(crate) struct PulledDir {
    /// `sha256:<hex>` → size, for every blob file.
    pub(crate) blobs: BTreeMap<String, u64>,
    /// `sha256:` digests of every manifest file's bytes, the top one included.
    pub(crate) manifests: Vec<String>,
    /// Digest of `manifest.json`.
    pub(crate) top_manifest: String,
}

pub(crate) fn read_pulled(dest: &Path) -> PulledDir {
    let mut blobs = BTreeMap::new();
    let mut manifests = Vec::new();
    let mut top_manifest = None;
    for entry in std::fs::read_dir(dest).expect("read pulled dir") {
        let entry = entry.expect("dir entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        let bytes = std::fs::read(entry.path()).expect("read pulled file");
        let digest = format!("sha256:{}", hex(&Sha256::digest(&bytes)));
        if name == "version" {
            continue;
        } else if name == "manifest.json" {
            top_manifest = Some(digest.clone());
            manifests.push(digest);
        } else if name.ends_with(".manifest.json") {
            manifests.push(digest);
        } else if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            assert_eq!(
                digest,
                format!("sha256:{name}"),
                "pulled blob {name} has the wrong content"
            );
            blobs.insert(digest, bytes.len() as u64);
        } else {
            panic!("unexpected file {name} in pulled dir {}", dest.display());
        }
    }
    PulledDir {
        blobs,
        manifests,
        top_manifest: top_manifest.expect("pulled dir has manifest.json"),
    }
}

/// Pulls `reference` through `proxy` into a fresh directory (`--all` for
/// an index), asserts skopeo succeeded, and reads back what it wrote. The
/// directory lives as long as the returned guard.
pub(crate) fn pull_ok(
    proxy: &TestProxy,
    reference: &str,
    all: bool,
) -> (tempfile::TempDir, PulledDir) {
    let tmp = tempfile::Builder::new()
        .prefix("e2e-pulled")
        .tempdir()
        .expect("pull tempdir");
    let dest = tmp.path().join("image");
    let out = pull_via_proxy(proxy, reference, &dest, all);
    assert_pulled(&out, reference);
    let pulled = read_pulled(&dest);
    (tmp, pulled)
}
