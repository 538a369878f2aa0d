//! Leaf minting as a TLS client sees it: leaves verify against the root with
//! rustls-webpki, carry the right extensions, complete a real rustls
//! handshake, and are minted once per host however many tasks ask at once.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use pullcache_ca::{mint_leaf, CaError, CertificateAuthority, Constraints, LeafCache, LeafOptions};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use x509_parser::extensions::GeneralName;

const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

fn verify(
    root: &CertificateDer<'_>,
    leaf: &CertificateDer<'_>,
    host: &str,
) -> Result<(), webpki::Error> {
    let anchors = [webpki::anchor_from_trusted_cert(root)?];
    let cert = webpki::EndEntityCert::try_from(leaf)?;
    cert.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &[],
        UnixTime::now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )?;
    cert.verify_is_valid_for_subject_name(&ServerName::try_from(host).unwrap())
}

fn ca(entries: &[&str]) -> Arc<CertificateAuthority> {
    let entries = entries.iter().map(|s| s.to_string()).collect();
    Arc::new(CertificateAuthority::generate(&Constraints::Permitted(entries)).unwrap())
}

#[test]
fn a_dns_leaf_verifies_and_has_the_expected_shape() {
    let ca = ca(&["docker.io"]);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = mint_leaf(&ca, &key, "registry-1.docker.io", WEEK).unwrap();
    verify(ca.cert_der(), &leaf, "registry-1.docker.io").unwrap();
    // The SAN is the only name: another host is not covered.
    assert_eq!(
        verify(ca.cert_der(), &leaf, "auth.docker.io"),
        Err(webpki::Error::CertNotValidForName(
            webpki::InvalidNameContext {
                expected: ServerName::try_from("auth.docker.io").unwrap(),
                presented: vec!["DnsName(\"registry-1.docker.io\")".into()],
            }
        ))
    );

    let (_, x509) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    assert!(!x509.is_ca());
    let bc = x509
        .basic_constraints()
        .unwrap()
        .expect("basicConstraints present");
    assert!(!bc.value.ca);
    assert!(
        x509.extended_key_usage()
            .unwrap()
            .unwrap()
            .value
            .server_auth
    );
    let ku = x509.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && !ku.key_cert_sign());
    assert_eq!(
        x509.subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        "registry-1.docker.io"
    );
    let sans = &x509
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names;
    assert_eq!(sans, &[GeneralName::DNSName("registry-1.docker.io")]);

    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let not_before = x509.validity().not_before.timestamp();
    let not_after = x509.validity().not_after.timestamp();
    assert!((now - 3600 - 5..=now - 3600 + 5).contains(&not_before));
    assert!(
        (now + WEEK.as_secs() as i64 - 5..=now + WEEK.as_secs() as i64 + 5).contains(&not_after)
    );

    // Two leaves for the same host still get distinct serials.
    let again = mint_leaf(&ca, &key, "registry-1.docker.io", WEEK).unwrap();
    let (_, again) = x509_parser::parse_x509_certificate(&again).unwrap();
    assert_ne!(x509.raw_serial(), again.raw_serial());
}

#[test]
fn an_ip_leaf_verifies_under_an_ip_permitting_root() {
    let ca = ca(&["registry.local", "10.0.0.5", "fd00::5"]);
    let key = rcgen::KeyPair::generate().unwrap();
    for (host, octets) in [
        ("10.0.0.5", vec![10u8, 0, 0, 5]),
        (
            "fd00::5",
            "fd00::5"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
                .to_vec(),
        ),
    ] {
        let leaf = mint_leaf(&ca, &key, host, WEEK).unwrap();
        verify(ca.cert_der(), &leaf, host).unwrap();
        let (_, x509) = x509_parser::parse_x509_certificate(&leaf).unwrap();
        let sans = &x509
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names;
        assert_eq!(
            sans,
            &[GeneralName::IPAddress(&octets)],
            "an IP SAN, never a DNS SAN"
        );
    }
    assert!(matches!(
        mint_leaf(&ca, &key, "10.0.0.6", WEEK),
        Err(CaError::NotPermitted { host }) if host == "10.0.0.6"
    ));
}

#[test]
fn leaves_never_outlive_the_root() {
    let tmp = tempfile::tempdir().unwrap();
    // A root expiring in two days.
    let root_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "short-lived root");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(2);
    let root = params.self_signed(&root_key).unwrap();
    std::fs::write(tmp.path().join("ca.crt"), root.pem()).unwrap();
    std::fs::write(tmp.path().join("ca.key"), root_key.serialize_pem()).unwrap();
    let ca = CertificateAuthority::load(tmp.path()).unwrap();

    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = mint_leaf(&ca, &key, "example.com", WEEK).unwrap();
    verify(ca.cert_der(), &leaf, "example.com").unwrap();
    let (_, leaf) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    assert_eq!(
        leaf.validity().not_after.timestamp(),
        ca.describe().not_after.unix_timestamp()
    );
}

#[test]
fn a_leaf_from_a_foreign_root_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let root_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CountryName, "DE");
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Example Corp");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Example Proxy Root");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let root = params.self_signed(&root_key).unwrap();
    std::fs::write(tmp.path().join("ca.crt"), root.pem()).unwrap();
    std::fs::write(tmp.path().join("ca.key"), root_key.serialize_pem()).unwrap();
    let ca = CertificateAuthority::load(tmp.path()).unwrap();

    let key = rcgen::KeyPair::generate().unwrap();
    for host in ["example.com", "192.0.2.1"] {
        let leaf = mint_leaf(&ca, &key, host, WEEK).unwrap();
        verify(ca.cert_der(), &leaf, host).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_for_a_host_mint_once() {
    let ca = ca(&["docker.io", "quay.io"]);
    let cache = Arc::new(
        LeafCache::new(Arc::clone(&ca), LeafOptions::default())
            .await
            .unwrap(),
    );

    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let cache = Arc::clone(&cache);
            tokio::spawn(async move { cache.get("registry-1.docker.io").await })
        })
        .collect();
    let mut leaves = Vec::new();
    for task in tasks {
        leaves.push(task.await.unwrap().unwrap());
    }
    assert_eq!(cache.minted(), 1);
    assert!(leaves.iter().all(|l| Arc::ptr_eq(l, &leaves[0])));

    let first = &leaves[0];
    assert_eq!(first.cert.len(), 2, "chain is [leaf, root]");
    assert_eq!(&first.cert[1], ca.cert_der());
    first.keys_match().unwrap();
    verify(ca.cert_der(), &first.cert[0], "registry-1.docker.io").unwrap();

    let quay = cache.get("quay.io").await.unwrap();
    assert_eq!(cache.minted(), 2);
    assert!(!Arc::ptr_eq(&quay, first));
    // Both leaves share the process's one key.
    let (_, a) = x509_parser::parse_x509_certificate(&first.cert[0]).unwrap();
    let (_, b) = x509_parser::parse_x509_certificate(&quay.cert[0]).unwrap();
    assert_eq!(a.public_key().raw, b.public_key().raw);

    // Cached from now on.
    let again = cache.get("registry-1.docker.io").await.unwrap();
    assert!(Arc::ptr_eq(&again, first));
    assert_eq!(cache.minted(), 2);
}

#[tokio::test]
async fn the_cache_refuses_hosts_outside_the_constraints() {
    let cache = LeafCache::new(ca(&["docker.io"]), LeafOptions::default())
        .await
        .unwrap();
    for host in ["example.com", "evil-docker.io", "10.0.0.1", "::1"] {
        assert!(
            matches!(cache.get(host).await, Err(CaError::NotPermitted { .. })),
            "{host}"
        );
    }
    assert!(matches!(
        cache.get("docker.io:443").await,
        Err(CaError::InvalidHost { .. })
    ));
    assert_eq!(cache.minted(), 0);
}

#[tokio::test]
async fn bad_options_are_refused() {
    let options = LeafOptions {
        validity: Duration::from_secs(500 * 24 * 3600),
        ..LeafOptions::default()
    };
    assert!(matches!(
        LeafCache::new(ca(&["docker.io"]), options).await,
        Err(CaError::InvalidOptions(_))
    ));
}

#[tokio::test]
async fn a_cached_leaf_serves_a_real_tls_handshake() {
    let ca = ca(&["docker.io"]);
    let cache = LeafCache::new(Arc::clone(&ca), LeafOptions::default())
        .await
        .unwrap();
    let certified = cache.get("registry-1.docker.io").await.unwrap();

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let server_config = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der().clone()).unwrap();
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();

    let mut server = rustls::ServerConnection::new(Arc::new(server_config)).unwrap();
    let mut client = rustls::ClientConnection::new(
        Arc::new(client_config),
        ServerName::try_from("registry-1.docker.io").unwrap(),
    )
    .unwrap();
    client.writer().write_all(b"ping").unwrap();

    let mut buf = Vec::new();
    for _ in 0..10 {
        buf.clear();
        client.write_tls(&mut buf).unwrap();
        server.read_tls(&mut buf.as_slice()).unwrap();
        server.process_new_packets().unwrap();
        buf.clear();
        server.write_tls(&mut buf).unwrap();
        client.read_tls(&mut buf.as_slice()).unwrap();
        client.process_new_packets().unwrap();
        if !client.is_handshaking() && !server.is_handshaking() {
            break;
        }
    }
    assert!(!client.is_handshaking() && !server.is_handshaking());
    buf.clear();
    client.write_tls(&mut buf).unwrap();
    server.read_tls(&mut buf.as_slice()).unwrap();
    server.process_new_packets().unwrap();
    let mut received = [0u8; 4];
    server.reader().read_exact(&mut received).unwrap();
    assert_eq!(&received, b"ping");
}
