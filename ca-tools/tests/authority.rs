//! The root CA's life cycle on disk (generate, save, load, load_or_create),
//! its refusals, and what `describe` and `permits` report.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use pullcache_ca::{CaError, CertificateAuthority, Constraints, CA_CERT_FILE, CA_KEY_FILE};

fn docker() -> Constraints {
    Constraints::Permitted(vec!["registry-1.docker.io".into()])
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn generate_save_load_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nested").join("ca");
    let ca = CertificateAuthority::generate(&docker()).unwrap();
    ca.save(&dir, false).unwrap();

    assert_eq!(mode(&dir), 0o700, "a created CA directory is private");
    assert_eq!(mode(&dir.join(CA_KEY_FILE)), 0o600);
    assert_eq!(mode(&dir.join(CA_CERT_FILE)), 0o644);
    assert_eq!(
        fs::read_to_string(dir.join(CA_CERT_FILE)).unwrap(),
        ca.cert_pem()
    );
    let key_pem = fs::read_to_string(dir.join(CA_KEY_FILE)).unwrap();
    assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    let leftovers: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != CA_CERT_FILE && n != CA_KEY_FILE)
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    let loaded = CertificateAuthority::load(&dir).unwrap();
    assert_eq!(loaded.cert_der(), ca.cert_der());
    assert_eq!(loaded.cert_pem(), ca.cert_pem());
    assert_eq!(loaded.describe(), ca.describe());
    assert_eq!(
        loaded.describe().sha256_fingerprint,
        ca.describe().sha256_fingerprint
    );

    // Saving a loaded CA elsewhere writes the same files back.
    let copy = tmp.path().join("copy");
    loaded.save(&copy, false).unwrap();
    assert_eq!(fs::read_to_string(copy.join(CA_KEY_FILE)).unwrap(), key_pem);
}

#[test]
fn two_generated_roots_differ() {
    let a = CertificateAuthority::generate(&docker())
        .unwrap()
        .describe();
    let b = CertificateAuthority::generate(&docker())
        .unwrap()
        .describe();
    assert_ne!(a.subject, b.subject, "installs must be told apart");
    assert_ne!(a.serial, b.serial);
    assert!(a.subject.contains("CN=pullcache root CA "), "{}", a.subject);
    assert!(a.subject.contains("O=pullcache"), "{}", a.subject);
    let years = (a.not_after - a.not_before).whole_days() / 365;
    assert_eq!(years, 10);
    assert!(a.not_before < time::OffsetDateTime::now_utc() - time::Duration::minutes(59));
}

#[test]
fn save_refuses_to_overwrite_unless_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let first = CertificateAuthority::generate(&docker()).unwrap();
    let second = CertificateAuthority::generate(&docker()).unwrap();
    first.save(tmp.path(), false).unwrap();
    let key_before = fs::read(tmp.path().join(CA_KEY_FILE)).unwrap();

    match second.save(tmp.path(), false) {
        Err(CaError::AlreadyExists { path }) => {
            assert!(path.starts_with(tmp.path()));
            assert!(
                path.ends_with(CA_KEY_FILE) || path.ends_with(CA_CERT_FILE),
                "{path:?}"
            );
        }
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(fs::read(tmp.path().join(CA_KEY_FILE)).unwrap(), key_before);
    assert_eq!(
        CertificateAuthority::load(tmp.path()).unwrap().cert_der(),
        first.cert_der()
    );

    // Either file alone is enough to refuse.
    fs::remove_file(tmp.path().join(CA_KEY_FILE)).unwrap();
    assert!(matches!(
        second.save(tmp.path(), false),
        Err(CaError::AlreadyExists { path }) if path.ends_with(CA_CERT_FILE)
    ));
    assert!(!tmp.path().join(CA_KEY_FILE).exists(), "nothing written");

    second.save(tmp.path(), true).unwrap();
    assert_eq!(
        CertificateAuthority::load(tmp.path()).unwrap().cert_der(),
        second.cert_der()
    );
    assert_eq!(mode(&tmp.path().join(CA_KEY_FILE)), 0o600);
}

#[test]
fn load_or_create_creates_once_then_reuses() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    let (created, was_created) = CertificateAuthority::load_or_create(&dir, &docker()).unwrap();
    assert!(was_created);
    let (reused, was_created) = CertificateAuthority::load_or_create(&dir, &docker()).unwrap();
    assert!(!was_created);
    assert_eq!(reused.cert_der(), created.cert_der());
    // Different constraints do not replace an existing CA.
    let (again, was_created) =
        CertificateAuthority::load_or_create(&dir, &Constraints::Unconstrained).unwrap();
    assert!(!was_created);
    assert_eq!(again.cert_der(), created.cert_der());
}

#[test]
fn concurrent_load_or_create_agrees_on_one_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| CertificateAuthority::load_or_create(&dir, &docker())))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let on_disk = CertificateAuthority::load(&dir).unwrap();
    let mut creators = 0;
    for result in results {
        let (ca, created) = result.unwrap();
        creators += usize::from(created);
        assert_eq!(ca.cert_der(), on_disk.cert_der());
    }
    assert_eq!(creators, 1);
}

#[test]
fn a_lone_certificate_or_key_is_refused_and_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::generate(&docker()).unwrap();
    fs::write(tmp.path().join(CA_CERT_FILE), ca.cert_pem()).unwrap();

    let err = CertificateAuthority::load_or_create(tmp.path(), &docker()).unwrap_err();
    match &err {
        CaError::Incomplete { present, missing } => {
            assert!(present.ends_with(CA_CERT_FILE));
            assert!(missing.ends_with(CA_KEY_FILE));
        }
        other => panic!("expected Incomplete, got {other:?}"),
    }
    assert!(err.to_string().contains(CA_KEY_FILE), "{err}");
    assert_eq!(
        fs::read_to_string(tmp.path().join(CA_CERT_FILE)).unwrap(),
        ca.cert_pem()
    );
    assert!(!tmp.path().join(CA_KEY_FILE).exists());

    let other = tempfile::tempdir().unwrap();
    ca.save(other.path(), false).unwrap();
    fs::remove_file(other.path().join(CA_CERT_FILE)).unwrap();
    let key = fs::read(other.path().join(CA_KEY_FILE)).unwrap();
    assert!(matches!(
        CertificateAuthority::load_or_create(other.path(), &docker()),
        Err(CaError::Incomplete { present, .. }) if present.ends_with(CA_KEY_FILE)
    ));
    assert_eq!(fs::read(other.path().join(CA_KEY_FILE)).unwrap(), key);
    assert!(!other.path().join(CA_CERT_FILE).exists());
}

#[test]
fn a_key_that_does_not_match_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    CertificateAuthority::generate(&docker())
        .unwrap()
        .save(&a, false)
        .unwrap();
    CertificateAuthority::generate(&docker())
        .unwrap()
        .save(&b, false)
        .unwrap();
    fs::copy(b.join(CA_KEY_FILE), a.join(CA_KEY_FILE)).unwrap();

    let err = CertificateAuthority::load(&a).unwrap_err();
    assert!(
        matches!(&err, CaError::KeyMismatch { cert, key }
            if cert == &a.join(CA_CERT_FILE) && key == &a.join(CA_KEY_FILE)),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("does not match"), "{message}");
    assert!(message.contains(&a.join(CA_KEY_FILE).display().to_string()));
}

#[test]
fn garbage_pem_is_refused_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::generate(&docker()).unwrap();
    ca.save(tmp.path(), false).unwrap();
    let key = fs::read(tmp.path().join(CA_KEY_FILE)).unwrap();

    fs::write(tmp.path().join(CA_CERT_FILE), "this is not a certificate\n").unwrap();
    let err = CertificateAuthority::load(tmp.path()).unwrap_err();
    assert!(
        matches!(&err, CaError::BadPem { path, .. } if path.ends_with(CA_CERT_FILE)),
        "{err:?}"
    );
    assert!(err.to_string().contains(CA_CERT_FILE), "{err}");

    // A PEM block whose body is not a certificate.
    fs::write(
        tmp.path().join(CA_CERT_FILE),
        "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    assert!(matches!(
        CertificateAuthority::load(tmp.path()),
        Err(CaError::BadCertificate { path, .. }) if path.ends_with(CA_CERT_FILE)
    ));

    // Two certificates where one is expected.
    fs::write(
        tmp.path().join(CA_CERT_FILE),
        format!("{}{}", ca.cert_pem(), ca.cert_pem()),
    )
    .unwrap();
    assert!(matches!(
        CertificateAuthority::load(tmp.path()),
        Err(CaError::BadPem { path, what }) if path.ends_with(CA_CERT_FILE) && what.contains('2')
    ));

    fs::write(tmp.path().join(CA_CERT_FILE), ca.cert_pem()).unwrap();
    fs::write(tmp.path().join(CA_KEY_FILE), "garbage").unwrap();
    let err = CertificateAuthority::load(tmp.path()).unwrap_err();
    assert!(
        matches!(&err, CaError::BadPem { path, .. } if path.ends_with(CA_KEY_FILE)),
        "{err:?}"
    );

    // A truncated key: PEM framing intact, contents not a key.
    let key_text = String::from_utf8(key).unwrap();
    let mut lines: Vec<&str> = key_text.lines().collect();
    lines.remove(1);
    fs::write(tmp.path().join(CA_KEY_FILE), lines.join("\n")).unwrap();
    let err = CertificateAuthority::load(tmp.path()).unwrap_err();
    assert!(
        matches!(&err, CaError::BadKey { path, .. } | CaError::BadPem { path, .. }
            if path.ends_with(CA_KEY_FILE)),
        "{err:?}"
    );
}

#[test]
fn a_missing_directory_is_an_io_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let err = CertificateAuthority::load(&tmp.path().join("nope")).unwrap_err();
    assert!(matches!(&err, CaError::Io { path, .. } if path.ends_with(CA_CERT_FILE)));
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn a_certificate_that_is_not_a_ca_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["example.com".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    fs::write(tmp.path().join(CA_CERT_FILE), cert.pem()).unwrap();
    fs::write(tmp.path().join(CA_KEY_FILE), key.serialize_pem()).unwrap();
    assert!(matches!(
        CertificateAuthority::load(tmp.path()),
        Err(CaError::NotACa { path, .. }) if path.ends_with(CA_CERT_FILE)
    ));
}

#[test]
fn describe_shows_the_constraints_in_the_certificate() {
    let ca = CertificateAuthority::generate(&Constraints::Permitted(vec![
        "registry-1.docker.io".into(),
        "*.pkg.dev".into(),
    ]))
    .unwrap();
    let d = ca.describe();
    let nc = d.name_constraints.as_ref().expect("constrained");
    assert!(nc.critical);
    assert_eq!(nc.permitted_dns, ["registry-1.docker.io", "pkg.dev"]);
    assert!(nc.permitted_ip.is_empty());
    assert_eq!(nc.excluded_ip, ["0.0.0.0/0", "::/0"]);
    assert!(nc.excluded_dns.is_empty());

    let text = d.to_string();
    for needle in [
        "registry-1.docker.io",
        "pkg.dev",
        "0.0.0.0/0",
        "::/0",
        &d.sha256_fingerprint,
        &d.subject,
        "critical",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    assert_eq!(d.sha256_fingerprint.len(), 95);
    assert!(d
        .sha256_fingerprint
        .chars()
        .all(|c| c == ':' || c.is_ascii_digit() || c.is_ascii_uppercase()));

    let ip = CertificateAuthority::generate(&Constraints::Permitted(vec![
        "registry.local".into(),
        "10.0.0.5".into(),
    ]))
    .unwrap()
    .describe();
    let nc = ip.name_constraints.unwrap();
    assert_eq!(nc.permitted_ip, ["10.0.0.5/32"]);
    assert_eq!(nc.excluded_ip, ["::/0"]);
}

#[test]
fn describe_says_none_for_an_unconstrained_root() {
    let d = CertificateAuthority::generate(&Constraints::Unconstrained)
        .unwrap()
        .describe();
    assert_eq!(d.name_constraints, None);
    let text = d.to_string();
    let line = text
        .lines()
        .find(|l| l.starts_with("Name constraints:"))
        .unwrap();
    assert!(line.contains("none"), "{text}");
}

#[test]
fn permits_follows_the_certificate() {
    let ca = CertificateAuthority::generate(&Constraints::Permitted(vec![
        "docker.io".into(),
        "*.pkg.dev".into(),
        "10.0.0.0/24".into(),
    ]))
    .unwrap();
    let cases = [
        ("docker.io", true),
        ("registry-1.docker.io", true),
        ("a.b.docker.io", true),
        ("DOCKER.IO", true),
        ("evil-docker.io", false),
        ("docker.io.evil.com", false),
        ("io", false),
        ("europe-docker.pkg.dev", true),
        ("pkg.dev", true),
        ("pkg.dev.example", false),
        ("example.com", false),
        ("10.0.0.1", true),
        ("10.0.0.255", true),
        ("10.0.1.1", false),
        ("::1", false),
        ("[fd00::1]", false),
        ("docker.io:443", false),
        ("", false),
    ];
    for (host, expected) in cases {
        assert_eq!(ca.permits(host), expected, "{host}");
    }

    let dns_only = CertificateAuthority::generate(&docker()).unwrap();
    for (host, expected) in [
        ("registry-1.docker.io", true),
        ("docker.io", false),
        ("127.0.0.1", false),
        ("::1", false),
    ] {
        assert_eq!(dns_only.permits(host), expected, "{host}");
    }

    let open = CertificateAuthority::generate(&Constraints::Unconstrained).unwrap();
    for host in ["example.com", "docker.io", "10.1.2.3", "::1"] {
        assert!(open.permits(host), "{host}");
    }
    assert!(!open.permits("not a host"));
}

#[test]
fn bad_constraints_are_refused() {
    assert!(matches!(
        CertificateAuthority::generate(&Constraints::Permitted(vec![])),
        Err(CaError::InvalidConstraint { .. })
    ));
    assert!(matches!(
        CertificateAuthority::generate(&Constraints::Permitted(vec!["docker.io:443".into()])),
        Err(CaError::InvalidConstraint { entry, .. }) if entry == "docker.io:443"
    ));
}

#[test]
fn a_foreign_root_can_be_brought() {
    // A P-384 root with an unusual subject and no constraints, made by
    // someone else's tooling.
    let tmp = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Example Corp Proxy Root");
    params
        .distinguished_name
        .push(rcgen::DnType::CountryName, "DE");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    fs::write(tmp.path().join(CA_CERT_FILE), cert.pem()).unwrap();
    fs::write(tmp.path().join(CA_KEY_FILE), key.serialize_pem()).unwrap();

    let ca = CertificateAuthority::load(tmp.path()).unwrap();
    assert_eq!(ca.describe().name_constraints, None);
    assert!(ca.describe().subject.contains("Example Corp Proxy Root"));
    assert!(ca.permits("example.com"));
}
