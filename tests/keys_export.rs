//! `sealgate keys export ID`: public part only, readable by openssl and gpg.

mod common;
use common::{fx, Env};
use std::process::Command;

#[test]
fn exports_pem_and_armor_without_secrets() {
    let env = Env::new();
    env.ok(&[
        "import",
        "--private",
        &fx("alice-smime.p12"),
        "--passphrase-file",
        &fx("passphrase.txt"),
    ]);
    env.ok(&["import", "--private", &fx("alice-openpgp-secret.asc")]);
    let rows = env.list();
    let tmp = tempfile::tempdir().unwrap();
    for row in rows.as_array().unwrap() {
        if row["addresses"][0] != "alice@example.test" {
            continue;
        }
        let id = row["id"].as_str().unwrap();
        let out = env.ok(&["export", id]);
        assert!(!out.contains("PRIVATE"), "secret exported");
        let p = tmp.path().join("export");
        std::fs::write(&p, &out).unwrap();
        if let Some(fpr) = id.strip_prefix("x509:") {
            assert!(out.starts_with("-----BEGIN CERTIFICATE-----"));
            let fp = Command::new("openssl")
                .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
                .arg(&p)
                .output()
                .unwrap();
            let fp = String::from_utf8_lossy(&fp.stdout)
                .replace(':', "")
                .to_lowercase();
            assert!(fp.contains(fpr), "{fp} vs {id}");
        } else {
            assert!(out.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"));
            let home = tempfile::tempdir().unwrap();
            let shown = Command::new("gpg")
                .arg("--homedir")
                .arg(home.path())
                .args(["--batch", "--with-colons", "--show-keys"])
                .arg(&p)
                .output()
                .unwrap();
            let s = String::from_utf8_lossy(&shown.stdout);
            assert!(s.contains(&id[4..]), "{s}");
            assert!(!s.contains("\nsec:"), "secret key exported: {s}");
        }
    }
    let out = env.keys(&["export", "x509:00000000"]);
    assert!(!out.status.success());
}
