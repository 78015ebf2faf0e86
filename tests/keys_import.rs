//! `sealgate keys import`: every format, every validity case the issue lists, re-import,
//! private identities, and corrupt / truncated input leaving the store untouched.

mod common;
use common::{fx, usable, Env};

#[test]
fn recipient_certificates_and_why_they_are_unusable() {
    let env = Env::new();
    env.import(&[
        "bob-rsa2048.pem",
        "carol-ec-p256.pem",
        "dave-expired.pem",
        "erin-not-yet-valid.pem",
        "frank-wrong-address.pem",
        "heidi-wrong-key-usage.pem",
        "ivan-no-email-eku.pem",
        "judy-rsa1024.pem",
        "kim-subject-email.pem",
    ]);
    let case = |addr: &str| usable(&env.show(addr));
    assert_eq!(case("bob@example.test"), (1, 0, vec![]));
    assert_eq!(
        case("BOB@Example.Test"),
        (1, 0, vec![]),
        "case-insensitive match"
    );
    assert_eq!(
        case("carol@example.test"),
        (1, 0, vec![]),
        "EC P-256 with keyAgreement"
    );
    assert_eq!(
        case("dave@example.test"),
        (0, 0, vec![vec!["expired".into()]])
    );
    assert_eq!(
        case("erin@example.test"),
        (0, 0, vec![vec!["not-yet-valid".into()]])
    );
    // frank's SAN is frank@other.test; the subject's emailAddress is not used when a SAN exists.
    assert_eq!(case("frank@example.test"), (0, 0, vec![]));
    assert_eq!(case("frank@other.test"), (1, 0, vec![]));
    assert_eq!(
        case("heidi@example.test"),
        (0, 0, vec![vec!["key-usage".into()]])
    );
    assert_eq!(
        case("ivan@example.test"),
        (0, 0, vec![vec!["key-usage".into()]])
    );
    assert_eq!(
        case("judy@example.test"),
        (0, 0, vec![vec!["weak-key".into()]])
    );
    assert_eq!(
        case("kim@example.test"),
        (1, 0, vec![]),
        "subject emailAddress fallback"
    );
    assert_eq!(case("nobody@example.test"), (0, 0, vec![]));
}

#[test]
fn openpgp_certificates_and_why_they_are_unusable() {
    let env = Env::new();
    env.import(&[
        "peggy-ed25519.asc",
        "victor-rsa3072.asc",
        "walter-revoked.asc",
        "xavier-no-encryption-subkey.asc",
        "yvonne-expired.asc",
    ]);
    let case = |addr: &str| usable(&env.show(addr));
    assert_eq!(case("peggy@example.test"), (0, 1, vec![]));
    assert_eq!(case("victor@example.test"), (0, 1, vec![]));
    let (_, n, r) = case("walter@example.test");
    assert_eq!(n, 0);
    assert!(r[0].contains(&"revoked".to_string()), "{r:?}");
    assert_eq!(
        case("xavier@example.test"),
        (0, 0, vec![vec!["no-encryption-key".into()]])
    );
    let (_, n, r) = case("yvonne@example.test");
    assert_eq!(n, 0);
    assert!(r[0].contains(&"expired".to_string()), "{r:?}");
}

#[test]
fn formats_are_detected_and_duplicates_update() {
    let env = Env::new();
    // DER, PEM bundle, DER .p7b and PEM .p7b all hold bob's certificate: one key in the end.
    let r = env.import(&[
        "bob-rsa2048.der",
        "bundle.pem",
        "bundle.p7b",
        "bundle-pem.p7b",
    ]);
    assert_eq!(r["added"].as_array().unwrap().len(), 2, "{r}");
    assert_eq!(env.list().as_array().unwrap().len(), 2);
    // binary and armored OpenPGP of the same certificate
    env.import(&["peggy-ed25519.gpg", "peggy-ed25519.asc"]);
    assert_eq!(env.list().as_array().unwrap().len(), 3);
    let r = env.import(&["bob-rsa2048.pem"]);
    assert_eq!(r["updated"].as_array().unwrap().len(), 1);
    assert_eq!(env.list().as_array().unwrap().len(), 3);
}

#[test]
fn reimport_with_new_expiry_and_with_revocation_updates_in_place() {
    let env = Env::new();
    env.import(&["yvonne-expired.asc"]);
    assert_eq!(usable(&env.show("yvonne@example.test")).1, 0);
    let r = env.import(&["yvonne-renewed.asc"]);
    assert_eq!(r["updated"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(usable(&env.show("yvonne@example.test")), (0, 1, vec![]));
    assert_eq!(env.list().as_array().unwrap().len(), 1);

    env.import(&["walter-before-revocation.asc"]);
    assert_eq!(usable(&env.show("walter@example.test")).1, 1);
    env.import(&["walter-revoked.asc"]);
    assert_eq!(usable(&env.show("walter@example.test")).1, 0);
    // An older copy imported later does not undo the revocation (certificates are merged).
    env.import(&["walter-before-revocation.asc"]);
    assert_eq!(usable(&env.show("walter@example.test")).1, 0);
    assert_eq!(env.list().as_array().unwrap().len(), 2);
}

fn assert_refused_untouched(env: &Env, file: &std::path::Path, needle: &str) {
    let before = env.ok(&["list", "--json"]);
    let path = file.display().to_string();
    let out = env.keys(&["import", &fx("carol-ec-p256.pem"), &path]);
    assert!(!out.status.success(), "{path} was accepted");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&path), "error does not name the file: {err}");
    assert!(err.contains(needle), "error {err:?} lacks {needle:?}");
    assert_eq!(env.ok(&["list", "--json"]), before, "store changed");
}

#[test]
fn corrupt_or_truncated_files_fail_and_leave_the_store_untouched() {
    let env = Env::new();
    env.import(&["bob-rsa2048.pem", "peggy-ed25519.asc"]);
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, data: &[u8]| {
        let p = tmp.path().join(name);
        std::fs::write(&p, data).unwrap();
        p
    };
    let bundle = std::fs::read(fx("bundle.pem")).unwrap();
    let p = write("truncated-bundle.pem", &bundle[..bundle.len() - 200]);
    assert_refused_untouched(&env, &p, "truncated");
    let der = std::fs::read(fx("bob-rsa2048.der")).unwrap();
    let p = write("truncated.der", &der[..der.len() / 2]);
    assert_refused_untouched(&env, &p, "truncated.der:");
    let p7b = std::fs::read(fx("bundle.p7b")).unwrap();
    let p = write("truncated.p7b", &p7b[..p7b.len() - 10]);
    assert_refused_untouched(&env, &p, "truncated.p7b:");
    let gpg = std::fs::read(fx("peggy-ed25519.gpg")).unwrap();
    let p = write("truncated.gpg", &gpg[..gpg.len() - 30]);
    assert_refused_untouched(&env, &p, "truncated.gpg:");
    let asc = std::fs::read_to_string(fx("victor-rsa3072.asc")).unwrap();
    let p = write("truncated.asc", &asc.as_bytes()[..asc.len() / 2]);
    assert_refused_untouched(&env, &p, "truncated.asc:");
    let mut bad = bundle.clone();
    let mid = bad.len() / 4;
    bad[mid..mid + 8].copy_from_slice(b"!!!!!!!!");
    let p = write("bad-base64.pem", &bad);
    assert_refused_untouched(&env, &p, "bad-base64.pem:");
    let p = write("garbage.bin", b"hello, this is not a key\n");
    assert_refused_untouched(&env, &p, "unrecognised format");
    let p = write("empty.pem", b"");
    assert_refused_untouched(&env, &p, "empty");
    assert_refused_untouched(&env, &tmp.path().join("missing.pem"), "missing.pem");
    // Private material through the public import is refused too.
    assert_refused_untouched(
        &env,
        &fixtures_path("alice-openpgp-secret.asc"),
        "--private",
    );
    assert_refused_untouched(&env, &fixtures_path("alice-smime.key"), "--private");
    assert_refused_untouched(&env, &fixtures_path("alice-smime.p12"), "--private");
}

fn fixtures_path(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(fx(name))
}

#[test]
fn private_identities_in_every_format() {
    let env = Env::new();
    let pass = fx("passphrase.txt");
    for p12 in ["alice-smime.p12", "alice-smime-legacy.p12"] {
        env.ok(&["import", "--private", &fx(p12), "--passphrase-file", &pass]);
    }
    env.ok(&[
        "import",
        "--private",
        &fx("alice-smime.key"),
        &fx("alice-smime.pem"),
    ]);
    env.ok(&["import", "--private", &fx("alice-openpgp-secret.asc")]);
    let show = env.show("alice@example.test");
    assert_eq!(
        show["signing"]["smime"].as_array().unwrap().len(),
        1,
        "{show}"
    );
    assert_eq!(
        show["signing"]["openpgp"].as_array().unwrap().len(),
        1,
        "{show}"
    );
    // the leaf plus the CA that came in the .p12, the OpenPGP key: no duplicates
    assert_eq!(env.list().as_array().unwrap().len(), 3);

    // Wrong or missing passphrase: refused, names the file, nothing stored.
    let before = env.ok(&["list", "--json"]);
    let tmp = tempfile::tempdir().unwrap();
    let wrong = tmp.path().join("wrong.txt");
    std::fs::write(&wrong, "not the passphrase\n").unwrap();
    let w = wrong.display().to_string();
    for args in [
        vec![
            "import",
            "--private",
            fx("alice-smime.p12").leak(),
            "--passphrase-file",
            w.as_str(),
        ],
        vec![
            "import",
            "--private",
            fx("alice2-openpgp-secret-protected.asc").leak(),
        ],
        vec![
            "import",
            "--private",
            fx("alice2-openpgp-secret-protected.asc").leak(),
            "--passphrase-file",
            w.as_str(),
        ],
        vec!["import", "--private", fx("bob-rsa2048.pem").leak()],
        vec!["import", "--private", fx("peggy-ed25519.asc").leak()],
    ] {
        let out = env.keys(&args);
        assert!(!out.status.success(), "{args:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(args[2]), "{err}");
        assert!(!err.contains("demo-passphrase"));
    }
    assert_eq!(env.ok(&["list", "--json"]), before);
    env.ok(&[
        "import",
        "--private",
        &fx("alice2-openpgp-secret-protected.asc"),
        "--passphrase-file",
        &pass,
    ]);
    let show = env.show("alice2@example.test");
    assert_eq!(
        show["signing"]["openpgp"].as_array().unwrap().len(),
        1,
        "{show}"
    );
}

#[cfg(unix)]
#[test]
fn store_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    env.ok(&["import", "--private", &fx("alice-openpgp-secret.asc")]);
    let mode = std::fs::metadata(env.store()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    for e in std::fs::read_dir(env.store()).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        let mode = m.permissions().mode() & 0o777;
        if m.is_file() {
            assert_eq!(mode, 0o600, "{:?}", e.path());
        }
    }
}

#[test]
fn trust_anchors_when_configured() {
    let env = Env::with_anchors(Some(&fx("ca.pem")));
    env.import(&["bob-rsa2048.pem", "carol-ec-p256.pem", "oscar-other-ca.pem"]);
    assert_eq!(usable(&env.show("bob@example.test")), (1, 0, vec![]));
    assert_eq!(usable(&env.show("carol@example.test")), (1, 0, vec![]));
    assert_eq!(
        usable(&env.show("oscar@example.test")),
        (0, 0, vec![vec!["untrusted".into()]])
    );
    // With the other CA as anchor it is the other way round (ECDSA P-256 issuer).
    let env2 = Env::with_anchors(Some(&fx("other-ca.pem")));
    env2.import(&["bob-rsa2048.pem", "oscar-other-ca.pem"]);
    assert_eq!(usable(&env2.show("oscar@example.test")), (1, 0, vec![]));
    assert_eq!(usable(&env2.show("bob@example.test")).0, 0);
    // Without anchors, imported = trusted.
    let env3 = Env::new();
    env3.import(&["oscar-other-ca.pem"]);
    assert_eq!(usable(&env3.show("oscar@example.test")), (1, 0, vec![]));
    // A bad anchors file is a clear error.
    let env4 = Env::with_anchors(Some("/nonexistent/anchors.pem"));
    let out = env4.keys(&["list"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/anchors.pem"));
}

#[test]
fn large_bundle_shows_progress() {
    // 1,500 copies of two certificates make a >1 MB file: progress goes to stderr, and the
    // duplicates collapse to two keys.
    let bundle = std::fs::read_to_string(fx("bundle.pem")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("big.pem");
    std::fs::write(&p, bundle.repeat(750)).unwrap();
    let env = Env::new();
    let out = env.keys(&["import", p.to_str().unwrap()]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("big.pem: read 1000/1500"), "{err}");
    assert_eq!(env.list().as_array().unwrap().len(), 2);
}
