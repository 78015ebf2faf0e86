//! `sealgate keys show ADDRESS|ID`.

mod common;
use common::{fx, Env};

#[test]
fn show_address_lists_usable_keys_and_reasons() {
    let env = Env::new();
    env.import(&["bob-rsa2048.pem", "peggy-ed25519.asc"]);
    // A second, expired certificate for bob's address would be listed as unusable:
    // use dave's expired certificate for dave, plus an OpenPGP key for dave? Keep to fixtures.
    env.import(&["dave-expired.pem"]);
    let text = env.ok(&["show", "dave@example.test"]);
    assert!(text.contains("no usable key"), "{text}");
    assert!(text.contains("expired at 2021-01-01"), "{text}");
    let text = env.ok(&["show", "Bob@EXAMPLE.test"]);
    assert!(text.contains("usable   x509:"), "{text}");
    let j = env.show("peggy@example.test");
    assert_eq!(j["openpgp"].as_array().unwrap().len(), 1);
    assert_eq!(j["address"], "peggy@example.test");
}

#[test]
fn show_id_by_full_id_prefix_and_key_id() {
    let env = Env::new();
    let r = env.import(&["heidi-wrong-key-usage.pem", "victor-rsa3072.asc"]);
    let ids: Vec<String> = r["added"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let x509 = ids.iter().find(|i| i.starts_with("x509:")).unwrap();
    let pgp = ids.iter().find(|i| i.starts_with("pgp:")).unwrap();
    let j: serde_json::Value = serde_json::from_str(&env.ok(&["show", x509, "--json"])).unwrap();
    assert_eq!(j["for"][0]["address"], "heidi@example.test");
    assert_eq!(j["for"][0]["encrypt"]["usable"], false);
    assert_eq!(j["for"][0]["encrypt"]["reasons"][0]["code"], "key-usage");
    // unique prefix of 8+ hex digits, without the kind
    let text = env.ok(&["show", &x509[5..17]]);
    assert!(
        text.contains("not usable for encryption: wrong key usage"),
        "{text}"
    );
    // the 16-digit OpenPGP key id (end of the fingerprint)
    let keyid = &pgp[pgp.len() - 16..];
    let text = env.ok(&["show", keyid]);
    assert!(
        text.contains("victor@example.test: usable for encryption"),
        "{text}"
    );
    // too short / unknown
    let out = env.keys(&["show", "abc"]);
    assert!(!out.status.success());
    let out = env.keys(&["show", "0123456789abcdef0123"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no key matches"));
}

#[test]
fn show_refuses_a_malformed_address() {
    let env = Env::new();
    let out = env.keys(&["show", "bob@exa mple.test"]);
    assert!(!out.status.success());
    let _ = fx("bob-rsa2048.pem");
}
