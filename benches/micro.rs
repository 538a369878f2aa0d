//! pullcache's micro benchmarks (criterion): the per-connection and
//! per-request pieces of the proxy that its public API lets us call in
//! isolation, each timed in-process without sockets. Leaf minting, cold
//! (a never-seen host every iteration, through `mint_leaf` and through
//! `LeafCache::get`) and warm (`LeafCache::get` of a cached host); the TLS
//! handshake with pullcache's own server config (full and resumed, both
//! ends in memory); `RegistryRoute::parse` on typical and hostile paths,
//! and the CONNECT line's `ConnectTarget::parse` + `policy::decide`;
//! SHA-256 and `IngestFile` write + verify (+ commit with its fsyncs) at
//! 1 MiB and 64 MiB; and the cache hit's per-request work: the index
//! lookup, opening the file (directly and through `spawn_blocking`, as the
//! hit path does), `RangeRequest::parse`, and draining `file_body` (the
//! hit's body before TLS) against a plain read loop. Not reachable: the
//! hit's response header building (`serve::blob_response` is private) and
//! anything inside hyper or rustls' record layer on a live connection; the
//! speed benchmark (`benches/speed.rs`) measures those end to end.
//!
//! `cargo bench --bench micro` (about two minutes); a filter selects
//! benchmarks (`cargo bench --bench micro -- leaf/`), and criterion's
//! `--save-baseline NAME` / `--baseline NAME` compare a change against a
//! saved run.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use http_body_util::BodyExt;
use pullcache::cache::block::{BlockPool, BLOCK_SIZE};
use pullcache::cache::flight;
use pullcache::cache::store::IngestFile;
use pullcache::cache::store::{digest_of, BlobStore};
use pullcache::cache::Cache;
use pullcache::connect::ConnectTarget;
use pullcache::policy;
use pullcache::registry::digest::{Algorithm, Digest};
use pullcache::registry::range::RangeRequest;
use pullcache::registry::route::RegistryRoute;
use pullcache::tls::TlsSettings;
use pullcache_ca::{mint_leaf, CertificateAuthority, Constraints, LeafCache, LeafOptions};
use rustls::client::Resumption;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use rustls_pki_types::ServerName;
use std::hint::black_box;

const MIB: usize = 1 << 20;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Incompressible bytes (splitmix64), so hashing and disks see real data.
fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

// === leaf minting and the handshake ===

fn leaf(c: &mut Criterion) {
    let rt = runtime();
    // Constrained to `test` (and `registry-1.docker.io` for the handshake),
    // as pullcache's own roots are constrained to the intercepted names.
    let ca = Arc::new(
        CertificateAuthority::generate(&Constraints::Permitted(vec![
            "test".to_owned(),
            "registry-1.docker.io".to_owned(),
        ]))
        .expect("CA"),
    );
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("leaf key");
    let week = Duration::from_secs(7 * 24 * 3600);
    let counter = AtomicU64::new(0);
    let fresh = || format!("h{}.test", counter.fetch_add(1, Ordering::Relaxed));

    let mut group = c.benchmark_group("leaf");
    group.bench_function("mint_leaf (fresh host)", |b| {
        b.iter(|| mint_leaf(&ca, &key, &fresh(), week).expect("mint"))
    });
    let cache = rt
        .block_on(LeafCache::new(ca.clone(), LeafOptions::default()))
        .expect("leaf cache");
    group.bench_function("LeafCache::get cold (fresh host)", |b| {
        b.to_async(&rt)
            .iter(|| async { cache.get(&fresh()).await.expect("leaf") })
    });
    rt.block_on(cache.get("registry-1.docker.io"))
        .expect("leaf");
    group.bench_function("LeafCache::get warm", |b| {
        b.to_async(&rt).iter(|| async {
            cache
                .get(black_box("registry-1.docker.io"))
                .await
                .expect("leaf")
        })
    });
    group.finish();

    // The TLS handshake an intercepted connection costs, with pullcache's
    // server config and its leaf; both ends run here, in memory.
    let tls = TlsSettings::new().expect("TLS settings");
    let certified = rt
        .block_on(cache.get("registry-1.docker.io"))
        .expect("leaf");
    let server = tls.server_config(certified);
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der().clone()).expect("root");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut full = client.clone();
    full.resumption = Resumption::disabled();
    let full = Arc::new(full);
    let resuming = Arc::new(client);
    handshake(&server, &resuming); // a ticket to resume with

    let mut group = c.benchmark_group("tls");
    group.bench_function("handshake full (client+server, TLS 1.3)", |b| {
        b.iter(|| handshake(&server, &full))
    });
    group.bench_function("handshake resumed (client+server, TLS 1.3)", |b| {
        b.iter(|| handshake(&server, &resuming))
    });
    group.finish();
}

/// One handshake between a fresh client and server connection.
fn handshake(server: &Arc<ServerConfig>, client: &Arc<ClientConfig>) {
    let name = ServerName::try_from("registry-1.docker.io").expect("name");
    let mut client = ClientConnection::new(client.clone(), name).expect("client");
    let mut server = ServerConnection::new(server.clone()).expect("server");
    let mut buf = Vec::with_capacity(16 * 1024);
    while client.is_handshaking() || server.is_handshaking() {
        buf.clear();
        while client.wants_write() {
            client.write_tls(&mut buf).expect("client write");
        }
        let mut input = &buf[..];
        while !input.is_empty() {
            server.read_tls(&mut input).expect("server read");
        }
        server.process_new_packets().expect("server handshake");
        buf.clear();
        while server.wants_write() {
            server.write_tls(&mut buf).expect("server write");
        }
        let mut input = &buf[..];
        while !input.is_empty() {
            client.read_tls(&mut input).expect("client read");
        }
        client.process_new_packets().expect("client handshake");
    }
    black_box((client, server));
}

// === routing ===

fn route(c: &mut Criterion) {
    let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let longest_name = format!("{}a", "a-".repeat(127)); // 255 bytes
    let cases: Vec<(&str, String)> = vec![
        ("blob", format!("/v2/library/alpine/blobs/sha256:{hex}")),
        (
            "manifest tag",
            "/v2/library/alpine/manifests/3.20".to_owned(),
        ),
        (
            "nested manifest digest",
            format!("/v2/org/team/project/image/manifests/sha256:{hex}"),
        ),
        (
            "not cacheable (tags/list)",
            "/v2/library/alpine/tags/list".to_owned(),
        ),
        (
            "hostile: longest valid name",
            format!("/v2/{longest_name}/blobs/sha256:{hex}"),
        ),
        (
            "hostile: 64 KiB of path segments",
            format!("/v2/{}blobs/sha256:{hex}", "a/".repeat(32 * 1024)),
        ),
        (
            "hostile: 8 KiB tag",
            format!("/v2/library/alpine/manifests/{}", "t".repeat(8192)),
        ),
        (
            "hostile: bad digest hex",
            format!("/v2/library/alpine/blobs/sha256:{}", "Z".repeat(64)),
        ),
    ];
    let mut group = c.benchmark_group("route");
    for (name, path) in &cases {
        group.bench_with_input(
            BenchmarkId::new("RegistryRoute::parse", name),
            path,
            |b, path| b.iter(|| RegistryRoute::parse(black_box(path))),
        );
    }
    let config = pullcache_config::Config::default();
    for (name, authority) in [
        ("intercepted", "registry-1.docker.io:443"),
        ("wildcard", "europe-west1-docker.pkg.dev:443"),
        ("tunnelled", "example.com:443"),
    ] {
        group.bench_with_input(
            BenchmarkId::new("CONNECT parse + decide", name),
            authority,
            |b, authority| {
                b.iter(|| {
                    let target = ConnectTarget::parse(black_box(authority)).expect("target");
                    policy::decide(&config, &target).expect("allowed")
                })
            },
        );
    }
    group.finish();
}

// === hashing and committing ===

fn store(c: &mut Criterion) {
    let dir = tempfile::Builder::new()
        .prefix("pullcache-micro")
        .tempdir()
        .expect("tempdir");
    let store = BlobStore::open(dir.path()).expect("store");
    let mut group = c.benchmark_group("store");
    group.sample_size(10);
    for (mib, seed) in [(1usize, 1u64), (64, 2)] {
        let data = bytes(mib * MIB, seed);
        let digest = digest_of(Algorithm::Sha256, &data);
        group.throughput(Throughput::Bytes(data.len() as u64));
        let id = |what: &str| BenchmarkId::new(what, format!("{mib} MiB"));
        group.bench_function(id("sha256"), |b| {
            b.iter(|| digest_of(Algorithm::Sha256, black_box(&data)))
        });
        // What a fill does per blob: copy the bytes into pooled 1 MiB
        // blocks, write each with direct I/O and hash it, then verify; the
        // file is dropped (deleted). Next to it, the same blocks written
        // through the page cache, as misses did before.
        let pool = Arc::new(BlockPool::for_downloads());
        let fill = |mut ingest: IngestFile| {
            for piece in data.chunks(BLOCK_SIZE) {
                let mut block = pool.take();
                block.fill(piece);
                ingest
                    .write_announcing(&[block.freeze()], |_| {})
                    .expect("write");
            }
            ingest
        };
        group.bench_function(id("blocks, direct write+verify"), |b| {
            b.iter(|| {
                let ingest = store
                    .create_direct_ingest(Algorithm::Sha256)
                    .expect("ingest");
                fill(ingest)
                    .verify(&digest, Some(data.len() as u64))
                    .expect("verified")
            })
        });
        group.bench_function(id("blocks, page-cache write+verify"), |b| {
            b.iter(|| {
                let ingest = store.create_ingest(Algorithm::Sha256).expect("ingest");
                fill(ingest)
                    .verify(&digest, Some(data.len() as u64))
                    .expect("verified")
            })
        });
        // Each fill and the commit: fsync, rename, directory fsyncs. The
        // blob committed by the previous iteration is removed, untimed.
        // These are wall times: a direct write waits for the device where a
        // page-cache write leaves the work to writeback and the fsync, and
        // a real fill overlaps each write with receiving the next block.
        // The CPU cost is the speed benchmark's miss figure.
        for (name, direct) in [
            ("blocks, direct write+commit (fsync)", true),
            ("blocks, page-cache write+commit (fsync)", false),
        ] {
            group.bench_function(id(name), |b| {
                b.iter_batched(
                    || store.remove_blob(&digest).expect("remove"),
                    |()| {
                        let ingest = if direct {
                            store.create_direct_ingest(Algorithm::Sha256)
                        } else {
                            store.create_ingest(Algorithm::Sha256)
                        };
                        fill(ingest.expect("ingest"))
                            .commit(&store, &digest, Some(data.len() as u64))
                            .expect("committed")
                    },
                    BatchSize::PerIteration,
                )
            });
        }
    }
    group.finish();
}

// === the cache hit's per-request work ===

fn hit(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::Builder::new()
        .prefix("pullcache-micro")
        .tempdir()
        .expect("tempdir");
    let (cache, _) = Cache::open(dir.path()).expect("cache");
    let size = 64 * MIB;
    let data = bytes(size, 3);
    let digest: Digest = digest_of(Algorithm::Sha256, &data);
    let mut ingest = cache
        .store()
        .create_ingest(Algorithm::Sha256)
        .expect("ingest");
    ingest.write(&data).expect("write");
    ingest
        .commit(cache.store(), &digest, Some(size as u64))
        .expect("commit");
    drop(data);
    rt.block_on(cache.record_blob(&digest, size as u64, Some("application/octet-stream")));
    let cache = Arc::new(cache);

    let mut group = c.benchmark_group("hit");
    group.bench_function("RangeRequest::parse (none)", |b| {
        b.iter(|| RangeRequest::parse(black_box(None), black_box(size as u64)))
    });
    group.bench_function("RangeRequest::parse (bytes=a-b)", |b| {
        b.iter(|| RangeRequest::parse(black_box(Some("bytes=1048576-2097151")), size as u64))
    });
    group.bench_function("lookup + open + note_hit (inline)", |b| {
        b.iter(|| {
            let info = cache.blob(black_box(&digest)).expect("cached");
            let opened = cache.store().open_blob(&digest).expect("open");
            cache.note_hit(&digest);
            black_box((info, opened))
        })
    });
    // As `serve_blob_hit` does it: the open on the blocking pool.
    group.bench_function("lookup + open via spawn_blocking + note_hit", |b| {
        b.to_async(&rt).iter(|| async {
            let info = cache.blob(black_box(&digest)).expect("cached");
            let store = cache.store().clone();
            let wanted = digest.clone();
            let opened = tokio::task::spawn_blocking(move || store.open_blob(&wanted))
                .await
                .expect("task")
                .expect("open");
            cache.note_hit(&digest);
            black_box((info, opened))
        })
    });
    group.finish();

    // The body of a 64 MiB hit (page cache warm): pullcache's reader
    // (256 KiB reads into recycled blocks, from the page cache on the
    // executor when it can) against a plain read loop into one reused
    // 256 KiB buffer.
    let path = cache.store().blob_path(&digest);
    let mut group = c.benchmark_group("hit body 64 MiB");
    group.sample_size(20);
    group.throughput(Throughput::Bytes(size as u64));
    group.bench_function("flight::file_body drained", |b| {
        b.to_async(&rt).iter(|| async {
            let file = std::fs::File::open(&path).expect("open");
            let mut body = flight::file_body(cache.read_blocks.clone(), file, 0, size as u64);
            let mut total = 0;
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.expect("frame").into_data() {
                    total += data.len();
                }
            }
            assert_eq!(total, size);
        })
    });
    group.bench_function("plain read loop (256 KiB buffer)", |b| {
        let mut buffer = vec![0u8; flight::READ_CHUNK];
        b.iter(|| {
            let mut file = std::fs::File::open(&path).expect("open");
            let mut total = 0;
            loop {
                let n = file.read(&mut buffer).expect("read");
                if n == 0 {
                    break;
                }
                total += n;
            }
            assert_eq!(total, size);
        })
    });
    group.finish();
}

fn config() -> Criterion {
    // Short windows: the whole file runs in about two minutes on 2 cores.
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = leaf, route, store, hit
}
criterion_main!(benches);
