//! Synthetic container images written as OCI image layouts, with nothing but
//! std, `sha2` and `serde_json`.
//!
//! Layers are deterministic pseudo-random bytes (seeded, so every test gets
//! its own digests and no two tests can share cache state by accident),
//! wrapped in a real gzip stream made of "stored" deflate blocks: skopeo sniffs
//! layer compression and would re-compress an uncompressed layer when pushing
//! to a registry, which would change every digest behind the test's back.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use tempfile::TempDir;

pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub(crate) const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// `sha256:<hex>` of `bytes`.
pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hex part of `sha256:<hex>`.
pub(crate) fn digest_hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// A content-addressed blob of the layout.
#[derive(Clone, Debug)]
pub(crate) struct Blob {
    pub(crate) digest: String,
    pub(crate) size: u64,
    pub(crate) media_type: String,
}

impl Blob {
    fn descriptor(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

/// One platform's image: its manifest, config and layers.
#[derive(Clone, Debug)]
pub(crate) struct PlatformImage {
    pub(crate) os: String,
    pub(crate) architecture: String,
    pub(crate) manifest: Blob,
    pub(crate) config: Blob,
    pub(crate) layers: Vec<Blob>,
}

impl PlatformImage {
    /// Config and layers: every blob a pull of this image GETs from
    /// `/v2/<name>/blobs/`.
    pub(crate) fn blobs(&self) -> Vec<Blob> {
        let mut all = vec![self.config.clone()];
        all.extend(self.layers.iter().cloned());
        all
    }
}

/// An OCI image layout on disk holding one tag.
pub(crate) struct OciImage {
    dir: TempDir,
    tag: String,
    /// What the tag points at: a manifest or an index.
    pub(crate) top: Blob,
    pub(crate) platforms: Vec<PlatformImage>,
    /// Set for a multi-platform image (then equal to `top`).
    pub(crate) index: Option<Blob>,
    contents: BTreeMap<String, Vec<u8>>,
}

impl OciImage {
    /// A single-platform (linux/amd64) image with one layer per entry of
    /// `layer_sizes` (uncompressed payload bytes).
    pub(crate) fn single(seed: u64, tag: &str, layer_sizes: &[usize]) -> OciImage {
        let mut builder = Builder::new(seed);
        let platform = builder.platform("linux", "amd64", layer_sizes);
        let top = platform.manifest.clone();
        builder.finish(tag, top, vec![platform], None)
    }

    /// A two-platform image (linux/amd64 and linux/arm64, each with its own
    /// config and layers) whose tag points at an OCI index.
    pub(crate) fn multi_arch(seed: u64, tag: &str, layer_sizes: &[usize]) -> OciImage {
        let mut builder = Builder::new(seed);
        let amd64 = builder.platform("linux", "amd64", layer_sizes);
        let arm64 = builder.platform("linux", "arm64", layer_sizes);
        let manifests: Vec<Value> = [&amd64, &arm64]
            .iter()
            .map(|p| {
                let mut d = p.manifest.descriptor();
                d["platform"] = json!({"os": p.os, "architecture": p.architecture});
                d
            })
            .collect();
        let index = json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": manifests,
        });
        let index = builder.add(OCI_INDEX, json_bytes(&index));
        builder.finish(tag, index.clone(), vec![amd64, arm64], Some(index))
    }

    /// The layout directory (give it to `skopeo copy oci:DIR:TAG`).
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn tag(&self) -> &str {
        &self.tag
    }

    /// Every config and layer blob of every platform.
    pub(crate) fn blobs(&self) -> Vec<Blob> {
        self.platforms
            .iter()
            .flat_map(PlatformImage::blobs)
            .collect()
    }

    /// Every manifest (and the index, if any).
    pub(crate) fn manifests(&self) -> Vec<Blob> {
        let mut all: Vec<Blob> = self.platforms.iter().map(|p| p.manifest.clone()).collect();
        all.extend(self.index.iter().cloned());
        all
    }

    /// The bytes of a blob, manifest or index of this image.
    pub(crate) fn bytes(&self, digest: &str) -> &[u8] {
        self.contents
            .get(digest)
            .unwrap_or_else(|| panic!("{digest} is not part of this image"))
    }
}

struct Builder {
    dir: TempDir,
    rng: SplitMix64,
    contents: BTreeMap<String, Vec<u8>>,
}

impl Builder {
    fn new(seed: u64) -> Builder {
        let dir = tempfile::Builder::new()
            .prefix("e2e-oci-layout")
            .tempdir()
            .expect("layout tempdir");
        std::fs::create_dir_all(dir.path().join("blobs").join("sha256")).expect("blobs dir");
        Builder {
            dir,
            // Mixed so that neighbouring seeds give unrelated streams.
            rng: SplitMix64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03),
            contents: BTreeMap::new(),
        }
    }

    fn add(&mut self, media_type: &str, bytes: Vec<u8>) -> Blob {
        let digest = sha256_digest(&bytes);
        let path = self
            .dir
            .path()
            .join("blobs")
            .join("sha256")
            .join(digest_hex(&digest));
        std::fs::write(&path, &bytes).expect("write blob");
        let blob = Blob {
            digest: digest.clone(),
            size: bytes.len() as u64,
            media_type: media_type.to_owned(),
        };
        self.contents.insert(digest, bytes);
        blob
    }

    fn platform(&mut self, os: &str, architecture: &str, layer_sizes: &[usize]) -> PlatformImage {
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for &size in layer_sizes {
            let mut payload = vec![0u8; size];
            self.rng.fill(&mut payload);
            diff_ids.push(sha256_digest(&payload));
            layers.push(self.add(OCI_LAYER_GZIP, gzip_stored(&payload)));
        }
        let config = json!({
            "architecture": architecture,
            "os": os,
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [],
        });
        let config = self.add(OCI_CONFIG, json_bytes(&config));
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
        });
        let manifest = self.add(OCI_MANIFEST, json_bytes(&manifest));
        PlatformImage {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            manifest,
            config,
            layers,
        }
    }

    fn finish(
        self,
        tag: &str,
        top: Blob,
        platforms: Vec<PlatformImage>,
        index: Option<Blob>,
    ) -> OciImage {
        let mut top_descriptor = top.descriptor();
        top_descriptor["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        let index_json = json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [top_descriptor],
        });
        std::fs::write(self.dir.path().join("index.json"), json_bytes(&index_json))
            .expect("write index.json");
        std::fs::write(
            self.dir.path().join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .expect("write oci-layout");
        OciImage {
            dir: self.dir,
            tag: tag.to_owned(),
            top,
            platforms,
            index,
            contents: self.contents,
        }
    }
}

fn json_bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("serialize json")
}

/// Deterministic pseudo-random bytes; quality is irrelevant, only that the
/// output is incompressible-looking and unique per seed.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Pseudo-random bytes for `seed`, e.g. a blob for the fake registry.
pub(crate) fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = SplitMix64(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x5851_F42D_4C95_7F2D);
    let mut out = vec![0u8; len];
    rng.fill(&mut out);
    out
}

/// A valid gzip stream of `data` using uncompressed ("stored") deflate
/// blocks: no compression library needed, and any gzip reader accepts it.
pub(crate) fn gzip_stored(data: &[u8]) -> Vec<u8> {
    const MAX_BLOCK: usize = 65_535;
    let mut out = Vec::with_capacity(data.len() + data.len() / MAX_BLOCK * 5 + 32);
    // Magic, CM=deflate, no flags, mtime 0, no extra flags, OS unknown.
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
    let mut chunks = data.chunks(MAX_BLOCK).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let len = chunk.len() as u16;
        out.push(u8::from(last)); // BFINAL, BTYPE=00 (stored)
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, entry) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *entry = c;
    }
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc = table[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc ^ 0xFFFF_FFFF
}
