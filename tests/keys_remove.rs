//! `sealgate keys remove ID [--force]`.

mod common;
use common::{fx, usable, Env};

#[test]
fn removes_public_keys_and_protects_private_identities() {
    let env = Env::new();
    let r = env.import(&["bob-rsa2048.pem", "peggy-ed25519.asc"]);
    let bob = r["added"][0].as_str().unwrap().to_string();
    assert_eq!(usable(&env.show("bob@example.test")).0, 1);
    let out = env.ok(&["remove", &bob]);
    assert!(out.contains("removed"));
    assert_eq!(usable(&env.show("bob@example.test")), (0, 0, vec![]));
    assert_eq!(env.list().as_array().unwrap().len(), 1);
    let out = env.keys(&["remove", &bob]);
    assert!(!out.status.success(), "removing twice must fail");

    env.ok(&["import", "--private", &fx("alice-openpgp-secret.asc")]);
    let alice = env
        .list()
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["secret"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = env.keys(&["remove", &alice]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert_eq!(
        env.show("alice@example.test")["signing"]["openpgp"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    env.ok(&["remove", "--force", &alice]);
    let show = env.show("alice@example.test");
    assert_eq!(show["signing"]["openpgp"].as_array().unwrap().len(), 0);
    assert_eq!(usable(&show), (0, 0, vec![]));
    // Re-importing only the public part afterwards does not bring the secret back.
    env.import(&["alice-openpgp.asc"]);
    assert_eq!(
        env.show("alice@example.test")["signing"]["openpgp"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}
