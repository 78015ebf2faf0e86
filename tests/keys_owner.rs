//! The key store is opened only by the owner of its directory: `sealgate keys ...` run as
//! root on the service user's store is refused, with the command to run instead, before
//! anything is written (otherwise it leaves root-owned files the service cannot open).
//!
//! Run as root (as in CI), the tests hand directories to `nobody` (uid 65534) with chown. Run
//! as another user, they use "/" (owned by root) as the foreign store: the same rule, checked
//! from the other side.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const NOBODY: u32 = 65534;

fn is_root() -> bool {
    sealgate::store::owner::effective_uid() == 0
}

fn bob() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("keys/demo/bob-rsa2048.pem")
        .display()
        .to_string()
}

/// A config naming `store` as the key store; returns its path.
fn config(dir: &Path, store: &Path) -> PathBuf {
    let cfg = dir.join("sealgate.toml");
    std::fs::write(&cfg, format!("[store]\npath = \"{}\"\n", store.display()))
        .expect("write config");
    cfg
}

fn keys(cfg: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sealgate"))
        .arg("keys")
        .args(args)
        .arg("--config")
        .arg(cfg)
        .output()
        .expect("run sealgate")
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn assert_refused(out: &Output, owner: &str, store: &Path) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "must fail; stderr: {stderr}");
    assert!(
        stderr.contains(&format!("belongs to {owner}")),
        "names the owner: {stderr}"
    );
    let instead = if sealgate::store::owner::effective_uid() == 0 {
        format!("sudo -u {owner} sealgate keys ...")
    } else {
        format!("sudo -u {owner} ...")
    };
    assert!(
        stderr.contains(&instead),
        "says what to run instead: {stderr}"
    );
    assert!(
        stderr.contains(&store.display().to_string()),
        "names the store: {stderr}"
    );
}

#[test]
fn root_is_refused_on_a_store_owned_by_another_user() {
    if !is_root() {
        // "/" exists and belongs to root: for anyone else it is another user's store.
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(dir.path(), Path::new("/"));
        let out = keys(&cfg, &["import", &bob()]);
        assert_refused(&out, "root", Path::new("/"));
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    std::fs::create_dir(&store).expect("mkdir store");
    std::os::unix::fs::chown(&store, Some(NOBODY), Some(NOBODY)).expect("chown to nobody");
    let cfg = config(dir.path(), &store);

    for args in [
        vec!["import", bob().as_str()],
        vec!["list"],
        vec!["remove", "x509:0123456789abcdef"],
    ] {
        let out = keys(&cfg, &args);
        assert_refused(&out, "nobody", &store);
        assert!(
            entries(&store).is_empty(),
            "`keys {args:?}` wrote into the foreign store: {:?}",
            entries(&store)
        );
    }
    // The rule is about the owner, not about root: once the store is root's, root may use it.
    std::os::unix::fs::chown(&store, Some(0), Some(0)).expect("chown to root");
    let out = keys(&cfg, &["import", &bob()]);
    assert!(
        out.status.success(),
        "import into root's own store: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        entries(&store).iter().any(|e| e == "db"),
        "{:?}",
        entries(&store)
    );
}

#[test]
fn root_does_not_create_a_store_inside_another_users_directory() {
    if !is_root() {
        // Only root can create files in another user's directory: nothing to show otherwise.
        eprintln!("keys_owner: not root, the missing-store case is not exercised");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("mkdir");
    std::os::unix::fs::chown(&state, Some(NOBODY), Some(NOBODY)).expect("chown to nobody");
    let store = state.join("keys/store");
    let cfg = config(dir.path(), &store);
    let out = keys(&cfg, &["import", &bob()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "must fail: {stderr}");
    assert!(
        stderr.contains("would be created in") && stderr.contains("which belongs to nobody"),
        "{stderr}"
    );
    assert!(stderr.contains("sudo -u nobody sealgate keys"), "{stderr}");
    assert!(entries(&state).is_empty(), "{:?}", entries(&state));
}

#[test]
fn check_config_as_root_reports_a_store_of_another_user() {
    if !is_root() {
        eprintln!("keys_owner: not root, check-config on another user's store not exercised");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    std::fs::create_dir(&store).expect("mkdir store");
    std::os::unix::fs::chown(&store, Some(NOBODY), Some(NOBODY)).expect("chown to nobody");
    let cfg = dir.path().join("sealgate.toml");
    let text = format!(
        "[store]\npath = \"{}\"\n\n[[listen]]\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\n\
         [upstream]\naddress = \"127.0.0.1:9\"\ntls = \"starttls\"\n",
        store.display()
    );
    std::fs::write(&cfg, text).expect("write config");
    let check = |cfg: &Path| {
        Command::new(env!("CARGO_BIN_EXE_sealgate"))
            .args(["check-config", "--config"])
            .arg(cfg)
            .output()
            .expect("run sealgate")
    };
    // serve would refuse this store, so the check says so (root could write there).
    let out = check(&cfg);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("store.path: the key store") && stderr.contains("belongs to nobody"),
        "{stderr}"
    );
    assert!(stderr.contains("sudo -u nobody sealgate ..."), "{stderr}");
    assert!(entries(&store).is_empty(), "{:?}", entries(&store));
    // Root's own store passes.
    std::os::unix::fs::chown(&store, Some(0), Some(0)).expect("chown to root");
    let out = check(&cfg);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
