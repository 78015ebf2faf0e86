//! Shared helpers for the `keys_*` integration tests: fixtures made by keys/generate.sh
//! (openssl + gpg) into a temporary directory once per test binary, and a store per test.
#![allow(dead_code)]

pub mod keygen;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

pub struct Fixtures {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

/// The generated fixture directory (generated on first use).
pub fn fixtures() -> &'static Path {
    static F: OnceLock<Fixtures> = OnceLock::new();
    &F.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys");
        keygen::generate("demo", &path);
        Fixtures { _dir: dir, path }
    })
    .path
}

/// A fixture file's path.
pub fn fx(name: &str) -> String {
    fixtures().join(name).display().to_string()
}

/// A fresh config + store.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Self {
        Self::with_anchors(None)
    }

    pub fn with_anchors(anchors: Option<&str>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = String::from(
            "[[listen]]\naddress = \"127.0.0.1:2525\"\n\n[store]\npath = \"store\"\n\n[limits]\nmessage_size = 1\n",
        );
        if let Some(a) = anchors {
            cfg.push_str(&format!("\n[smime]\ntrust_anchors = \"{a}\"\n"));
        }
        std::fs::write(dir.path().join("sealgate.toml"), cfg).expect("write config");
        Env { dir }
    }

    pub fn config(&self) -> String {
        self.dir.path().join("sealgate.toml").display().to_string()
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// Runs `sealgate keys ARGS... --config CONFIG`.
    pub fn keys(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_sealgate"))
            .arg("keys")
            .args(args)
            .arg("--config")
            .arg(self.config())
            .output()
            .expect("run sealgate")
    }

    /// Like `keys` but asserts success and returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.keys(args);
        assert!(
            out.status.success(),
            "sealgate keys {args:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// `show ADDRESS --json`.
    pub fn show(&self, address: &str) -> Value {
        serde_json::from_str(&self.ok(&["show", address, "--json"])).expect("json")
    }

    /// `list --json`.
    pub fn list(&self) -> Value {
        serde_json::from_str(&self.ok(&["list", "--json"])).expect("json")
    }

    /// Imports fixture files by name.
    pub fn import(&self, names: &[&str]) -> Value {
        let files: Vec<String> = names.iter().map(|n| fx(n)).collect();
        let mut args = vec!["import", "--json"];
        args.extend(files.iter().map(String::as_str));
        serde_json::from_str(&self.ok(&args)).expect("json")
    }
}

/// Ids of usable S/MIME and OpenPGP keys and (id, reason codes) of unusable ones.
pub fn usable(show: &Value) -> (usize, usize, Vec<Vec<String>>) {
    let n = |k: &str| show[k].as_array().map(|a| a.len()).unwrap_or(0);
    let reasons = show["unusable"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|u| {
                    u["reasons"]
                        .as_array()
                        .map(|r| {
                            r.iter()
                                .map(|x| x["code"].as_str().unwrap_or("").to_string())
                                .collect()
                        })
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default();
    (n("smime"), n("openpgp"), reasons)
}
