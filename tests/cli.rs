//! The command line: `pullcache ca …`, rejection of invalid configs with exit
//! code 64 and the offending key named, and the precedence of flags over
//! environment over the config file.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use crate::support::bin::pullcache_command;
use crate::support::proxy::Launch;
use crate::support::{run_bounded, toml_str, BoundedOutput, ProxyConfig, TestProxy};

/// `ca` commands and config errors return at once; this only guards the suite
/// against one that starts serving instead.
const COMMAND_LIMIT: Duration = Duration::from_secs(30);

/// Exit code for a configuration error (sysexits' EX_USAGE).
const EX_USAGE: i32 = 64;

/// An address that cannot be bound here (TEST-NET-1, never assigned to a
/// local interface): a listener that uses it fails, so a proxy that does start
/// proves a higher-precedence value won.
const UNBINDABLE: &str = "192.0.2.1:1";

/// A data directory with a config that intercepts two hosts, for `ca …`.
struct CaHome {
    dir: TempDir,
    config: PathBuf,
}

impl CaHome {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("e2e-cli")
            .tempdir()
            .expect("tempdir");
        let config = dir.path().join("pullcache.toml");
        let data = dir.path().join("data");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\ndata_dir = {}\n\n[intercept]\nhosts = [\"registry-1.docker.io\", \"*.pkg.dev\"]\n",
                toml_str(&data.display().to_string())
            ),
        )
        .expect("write config");
        CaHome { dir, config }
    }

    fn crt(&self) -> PathBuf {
        self.dir.path().join("data/ca/ca.crt")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("data/ca/ca.key")
    }

    /// Runs `pullcache ARGS --config CONFIG`.
    fn run(&self, args: &[&str]) -> BoundedOutput {
        let mut cmd = pullcache_command();
        cmd.args(args).arg("--config").arg(&self.config);
        run_bounded(cmd, COMMAND_LIMIT)
    }

    fn init(&self) {
        let out = self.run(&["ca", "init"]);
        assert_eq!(out.code(), 0, "ca init failed: {out:#?}");
    }
}

#[test]
fn ca_init_creates_a_certificate_and_a_private_key() {
    let home = CaHome::new();
    home.init();

    let crt = std::fs::read_to_string(home.crt()).expect("ca.crt written");
    assert!(crt.starts_with("-----BEGIN CERTIFICATE-----"), "{crt}");
    let key = std::fs::metadata(home.key()).expect("ca.key written");
    assert_eq!(
        key.permissions().mode() & 0o777,
        0o600,
        "the CA key must be readable by its owner only"
    );
}

#[test]
fn ca_init_keeps_an_existing_ca_unless_forced() {
    let home = CaHome::new();
    home.init();
    let crt = std::fs::read(home.crt()).expect("ca.crt");
    let key = std::fs::read(home.key()).expect("ca.key");

    let again = home.run(&["ca", "init"]);
    assert_ne!(again.code(), 0, "a second init must refuse: {again:#?}");
    assert_eq!(
        std::fs::read(home.crt()).expect("ca.crt"),
        crt,
        "ca.crt changed"
    );
    assert_eq!(
        std::fs::read(home.key()).expect("ca.key"),
        key,
        "ca.key changed"
    );

    let forced = home.run(&["ca", "init", "--force"]);
    assert_eq!(forced.code(), 0, "{forced:#?}");
    assert_ne!(
        std::fs::read(home.crt()).expect("ca.crt"),
        crt,
        "--force kept the old CA"
    );
    assert_ne!(
        std::fs::read(home.key()).expect("ca.key"),
        key,
        "--force kept the old key"
    );
}

#[test]
fn ca_show_names_the_ca_its_permitted_hosts_and_fingerprint() {
    let home = CaHome::new();
    home.init();
    let der = CertificateDer::from_pem_file(home.crt()).expect("parse ca.crt");
    let fingerprint: String = Sha256::digest(der.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();

    let out = home.run(&["ca", "show"]);

    assert_eq!(out.code(), 0, "{out:#?}");
    assert!(out.stdout.contains("pullcache"), "{out:#?}");
    assert!(out.stdout.contains("registry-1.docker.io"), "{out:#?}");
    assert!(out.stdout.contains("pkg.dev"), "{out:#?}");
    // Accept `AB:CD:…` as well as `abcd…`.
    let flat = out.stdout.to_lowercase().replace(':', "");
    assert!(
        flat.contains(&fingerprint),
        "SHA-256 fingerprint {fingerprint} not shown: {out:#?}"
    );
}

#[test]
fn ca_init_unconstrained_drops_the_name_constraints() {
    let home = CaHome::new();
    home.init();
    let forced = home.run(&["ca", "init", "--force", "--unconstrained"]);
    assert_eq!(forced.code(), 0, "{forced:#?}");

    let out = home.run(&["ca", "show"]);

    assert_eq!(out.code(), 0, "{out:#?}");
    assert!(out.stdout.contains("pullcache"), "{out:#?}");
    assert!(
        !out.stdout.contains("registry-1.docker.io"),
        "an unconstrained CA should permit no particular names: {out:#?}"
    );
}

#[test]
fn ca_export_prints_the_certificate_file() {
    let home = CaHome::new();
    home.init();

    let out = home.run(&["ca", "export"]);

    assert_eq!(out.code(), 0, "{out:#?}");
    let crt = std::fs::read_to_string(home.crt()).expect("ca.crt");
    assert_eq!(out.stdout, crt);
}

#[test]
fn data_dir_flag_beats_the_config_file() {
    let home = CaHome::new();
    let elsewhere = tempfile::tempdir().expect("tempdir");

    let out = home.run(&[
        "ca",
        "init",
        "--data-dir",
        &elsewhere.path().display().to_string(),
    ]);

    assert_eq!(out.code(), 0, "{out:#?}");
    assert!(elsewhere.path().join("ca/ca.crt").is_file(), "{out:#?}");
    assert!(!home.crt().exists(), "the config's data_dir was used");
}

/// Starts `serve` on `toml` and expects exit code 64 with `needles` in stderr.
fn assert_config_rejected(toml: &str, needles: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("pullcache.toml");
    let data = dir.path().join("data");
    std::fs::write(
        &config,
        format!(
            "data_dir = {}\n{toml}",
            toml_str(&data.display().to_string())
        ),
    )
    .expect("write config");
    let mut cmd = pullcache_command();
    cmd.arg("serve").arg("--config").arg(&config);

    let out = run_bounded(cmd, COMMAND_LIMIT);

    assert_eq!(out.code(), EX_USAGE, "{out:#?}");
    for needle in needles {
        assert!(
            out.stderr.contains(needle),
            "stderr should mention {needle:?}: {out:#?}"
        );
    }
}

#[test]
fn invalid_listen_address_is_a_usage_error() {
    assert_config_rejected("listen = \"nonsense\"\n", &["listen", "nonsense"]);
}

#[test]
fn invalid_client_cidr_is_a_usage_error() {
    assert_config_rejected(
        "listen = \"127.0.0.1:0\"\n[access]\nclients = [\"127.0.0.300/8\"]\n",
        &["access.clients[0]"],
    );
}

#[test]
fn unknown_keys_are_usage_errors() {
    assert_config_rejected("listen = \"127.0.0.1:0\"\ncolour = \"blue\"\n", &["colour"]);
    assert_config_rejected(
        "listen = \"127.0.0.1:0\"\n[access]\ntunnelling = false\n",
        &["tunnelling"],
    );
}

#[test]
fn unreadable_upstream_ca_file_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-ca.crt");
    assert_config_rejected(
        &format!(
            "listen = \"127.0.0.1:0\"\n[upstream]\nca_files = [{}]\n",
            toml_str(&missing.display().to_string())
        ),
        &["upstream.ca_files[0]"],
    );
}

fn precedence_launch(args: &[&str], env: &[(&str, &str)]) -> Launch {
    let body = ProxyConfig::default().render();
    Launch {
        file_listen: UNBINDABLE.to_owned(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Launch::new(&body)
    }
}

/// Launches, expects a loopback listener, and shuts down cleanly.
fn assert_starts_on_loopback(launch: Launch) {
    let mut proxy = match TestProxy::launch(launch.clone()) {
        Ok(proxy) => proxy,
        Err(failure) => panic!("{launch:#?} did not start: {failure:#?}"),
    };
    assert!(
        proxy.addr().ip().is_loopback(),
        "listening on {}",
        proxy.addr()
    );
    let status = proxy.terminate(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "exit after SIGTERM: {status:?}; log: {:#?}",
        proxy.logs()
    );
}

#[test]
fn listen_from_the_config_file_is_used() {
    // The baseline that gives the other precedence tests their meaning.
    let launch = precedence_launch(&["serve", "--config", "{config}"], &[]);
    match TestProxy::launch(launch) {
        Ok(proxy) => panic!("bound {} although the file says {UNBINDABLE}", proxy.addr()),
        Err(failure) => assert!(
            failure.status.is_some_and(|s| !s.success()),
            "should exit non-zero: {failure:#?}"
        ),
    }
}

#[test]
fn listen_from_the_environment_beats_the_config_file() {
    // Also the bare form, without `serve`, with the config named by env.
    assert_starts_on_loopback(precedence_launch(
        &[],
        &[
            ("PULLCACHE_LISTEN", "127.0.0.1:0"),
            ("PULLCACHE_CONFIG", "{config}"),
        ],
    ));
}

#[test]
fn listen_flag_beats_the_environment_and_the_config_file() {
    assert_starts_on_loopback(precedence_launch(
        &["serve", "--config", "{config}", "--listen", "127.0.0.1:0"],
        &[("PULLCACHE_LISTEN", "192.0.2.1:2")],
    ));
}
