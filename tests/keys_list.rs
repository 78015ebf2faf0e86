//! `sealgate keys list`.

mod common;
use common::Env;

#[test]
fn one_row_per_key_with_kind_addresses_validity_usage() {
    let env = Env::new();
    let out = env.ok(&["list"]);
    assert!(out.contains("0 key(s)"));
    env.import(&[
        "bob-rsa2048.pem",
        "dave-expired.pem",
        "erin-not-yet-valid.pem",
        "heidi-wrong-key-usage.pem",
        "peggy-ed25519.asc",
        "walter-revoked.asc",
        "xavier-no-encryption-subkey.asc",
    ]);
    env.ok(&[
        "import",
        "--private",
        &common::fx("alice-openpgp-secret.asc"),
    ]);
    let rows = env.list();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 8);
    let row = |addr: &str| {
        rows.iter()
            .find(|r| r["addresses"][0] == addr)
            .unwrap_or_else(|| panic!("no row for {addr}"))
            .clone()
    };
    let bob = row("bob@example.test");
    assert_eq!(bob["kind"], "smime");
    assert_eq!(bob["state"], "valid");
    assert_eq!(bob["usage"], "sign,encrypt");
    assert_eq!(bob["key"], "RSA-2048");
    assert!(bob["id"].as_str().unwrap().starts_with("x509:"));
    assert_eq!(row("dave@example.test")["state"], "expired");
    assert_eq!(row("erin@example.test")["state"], "not-yet-valid");
    assert_eq!(row("heidi@example.test")["usage"], "sign");
    assert_eq!(row("peggy@example.test")["kind"], "openpgp");
    assert_eq!(row("peggy@example.test")["usage"], "sign,encrypt");
    assert_eq!(row("walter@example.test")["state"], "revoked");
    assert_eq!(row("xavier@example.test")["usage"], "sign");
    assert_eq!(row("alice@example.test")["secret"], true);
    assert_eq!(row("bob@example.test")["secret"], false);
    let text = env.ok(&["list"]);
    assert!(text.contains("8 key(s)"));
    assert!(text.contains("+secret"));
    assert!(!text.contains("PRIVATE"));
}
