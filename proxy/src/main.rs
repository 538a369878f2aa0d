//! The `pullcache` command: `serve` (the default) runs the proxy; `ca`
//! creates, shows and exports its root CA; `cache verify` re-hashes the
//! cached blobs offline and removes the corrupt ones.

#![allow(clippy::print_stdout)] // the CA and cache commands print their results on purpose

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use pullcache::cache::verify::{self, VerifyError};
use pullcache::{constraints_for, data_dir};

/// jemalloc keeps freed memory for reuse where glibc's malloc hands large
/// buffers (the upstream h2 connection's read buffers) back to the kernel
/// and faults them in again: a miss spent 9% of its CPU in page faults.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
use pullcache_ca::{CertificateAuthority, Constraints};
use pullcache_config::{Config, Overrides};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// sysexits' EX_USAGE: the configuration or command line is wrong.
const EXIT_USAGE: u8 = 64;

#[derive(Parser)]
#[command(
    name = "pullcache",
    version,
    about = "A caching HTTPS proxy for container registries"
)]
struct Cli {
    /// TOML config file (without one, the embedded defaults apply)
    #[arg(long, global = true, env = "PULLCACHE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 0.0.0.0:3128 (beats the file's `listen`)
    #[arg(long, global = true, env = "PULLCACHE_LISTEN", value_name = "ADDR")]
    listen: Option<String>,
    /// Folder for the CA and the cache (beats the file's `data_dir`)
    #[arg(long, global = true, env = "PULLCACHE_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default)
    Serve,
    /// Manage the root CA in <data_dir>/ca
    #[command(subcommand)]
    Ca(CaCommand),
    /// Check the blob cache in <data_dir> (with the server stopped)
    #[command(subcommand)]
    Cache(CacheCommand),
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Re-hash every cached blob and remove the corrupt ones (exit 0 when
    /// the cache could be read, corrupt blobs or not; 1 when it could not)
    Verify,
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create the root CA (refuses to replace one without --force)
    Init {
        /// Replace an existing CA; nodes must then trust the new ca.crt
        #[arg(long)]
        force: bool,
        /// Create a CA without name constraints (it can sign for any host)
        #[arg(long)]
        unconstrained: bool,
    },
    /// Print the CA's subject, validity, fingerprint and name constraints
    Show,
    /// Print the CA certificate (PEM) to stdout
    Export,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides = Overrides {
        listen: cli.listen.clone(),
        data_dir: cli.data_dir.clone(),
    };
    let config = match Config::load(cli.config.as_deref(), &overrides) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("pullcache: invalid configuration:\n{error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config),
        Command::Ca(command) => ca(command, &config),
        Command::Cache(CacheCommand::Verify) => cache_verify(&config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pullcache: {}", describe(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `: `-separated like `{:#}`, minus causes
/// whose text the message already holds: most of the crate's errors print
/// their source in their own message, and `{:#}` would repeat it.
fn describe(error: &anyhow::Error) -> String {
    let mut out = error.to_string();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

fn serve(config: Config) -> anyhow::Result<()> {
    init_logging("info");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        if let Err(error) = pullcache::run(config, shutdown).await {
            error!(%error, "cannot start");
            return Err(error.into());
        }
        info!("stopped");
        Ok(())
    })
}

/// Cancels `shutdown` on SIGTERM or SIGINT.
async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        error!("cannot install signal handlers; stop with SIGKILL");
        return;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    info!(signal = name, "shutting down");
    shutdown.cancel();
}

/// Logs to stderr at `default` unless `PULLCACHE_LOG` or `RUST_LOG` says
/// otherwise.
fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PULLCACHE_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn ca(command: CaCommand, config: &Config) -> anyhow::Result<()> {
    let dir = data_dir::ca_dir(&config.data_dir);
    match command {
        CaCommand::Init {
            force,
            unconstrained,
        } => {
            data_dir::prepare(&config.data_dir)?;
            let constraints = if unconstrained {
                Constraints::Unconstrained
            } else {
                constraints_for(config)
            };
            let ca =
                CertificateAuthority::generate(&constraints).context("cannot create the CA")?;
            ca.save(&dir, force)
                .with_context(|| format!("cannot save the CA in {}", dir.display()))?;
            println!("created {}", dir.join("ca.crt").display());
            println!("{}", ca.describe());
        }
        CaCommand::Show => {
            let ca = CertificateAuthority::load(&dir)
                .with_context(|| format!("cannot load the CA from {}", dir.display()))?;
            println!("{}", ca.describe());
        }
        CaCommand::Export => {
            let ca = CertificateAuthority::load(&dir)
                .with_context(|| format!("cannot load the CA from {}", dir.display()))?;
            print!("{}", ca.cert_pem());
        }
    }
    Ok(())
}

/// `pullcache cache verify`: prints one line per corrupt blob and a summary.
/// Corrupt blobs that were removed are a success (the cache is consistent
/// again); a cache that cannot be read, or a corrupt blob that could not be
/// removed, is a failure.
fn cache_verify(config: &Config) -> anyhow::Result<()> {
    // Warnings only by default: the report is on stdout, and the removal of
    // each corrupt blob is printed there already.
    init_logging("warn");
    // Flat messages: the errors already name their cause, and `{:#}` would
    // print it a second time from the source chain.
    let report = verify::verify(&config.data_dir).map_err(|error| match error {
        VerifyError::InUse(_) => anyhow::anyhow!("{error}; stop the server first"),
        other => anyhow::anyhow!("cannot verify the cache: {other}"),
    })?;
    let recovery = &report.recovery;
    if recovery.index_rebuilt {
        match &recovery.damaged_index {
            Some(aside) => println!(
                "index was damaged; rebuilt from blobs/ ({} blobs); the damaged file is {}",
                recovery.files_adopted,
                aside.display()
            ),
            None => println!(
                "index was missing; rebuilt from blobs/ ({} blobs)",
                recovery.files_adopted
            ),
        }
    }
    if recovery.ingest_removed > 0 {
        println!(
            "removed {} unfinished downloads from ingest/",
            recovery.ingest_removed
        );
    }
    for corrupt in &report.corrupt {
        match &corrupt.removal_error {
            None => println!("corrupt {}: {}; removed", corrupt.digest, corrupt.problem),
            Some(why) => println!(
                "corrupt {}: {}; NOT removed: {why}",
                corrupt.digest, corrupt.problem
            ),
        }
    }
    if report.tags_dropped > 0 {
        println!(
            "dropped {} tags that pointed at removed manifests",
            report.tags_dropped
        );
    }
    println!("{}", report.summary());
    let left = report.corrupt.len() - report.removed();
    if left > 0 {
        anyhow::bail!("{left} corrupt blobs could not be removed; fix the cause and run again");
    }
    Ok(())
}
