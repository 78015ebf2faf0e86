//! Key store timings, printed as plain figures:
//!
//!     cargo bench --bench keystore
//!     SEALGATE_BENCH_STORE_KEYS=20000 cargo bench --bench keystore   # smaller big store
//!
//! 1. Import of one PEM bundle of 10,000 certificates through `keys_cli::run` (the same code
//!    path as `sealgate keys import`), including the durable flush.
//! 2. Lookup of one address in a store of 100,000 keys (cold first lookup, then the mean over
//!    1,000 random addresses), plus the time to open that store.
//!
//! The certificates are variants of one openssl-made RSA-2048 certificate whose address
//! digits are rewritten (their signatures no longer verify, which the import does not check
//! without trust anchors); each has its own fingerprint and address.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use sealgate::cli::keys::{self, KeysCommand};
use sealgate::store::{pem, x509, Address, KeyStore, NewKey, SledStore};

const MARK: &[u8] = b"0000000";

fn template(dir: &Path) -> Vec<u8> {
    let key = dir.join("t.key");
    let crt = dir.join("t.der");
    let st = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
        ])
        .args(["-subj", "/CN=user0000000", "-outform", "DER"])
        .args(["-addext", "subjectAltName=email:user0000000@bench.test"])
        .args(["-addext", "keyUsage=digitalSignature,keyEncipherment"])
        .args(["-addext", "extendedKeyUsage=emailProtection"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .expect("openssl");
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    std::fs::read(&crt).expect("template")
}

fn variant(t: &[u8], i: usize) -> Vec<u8> {
    let digits = format!("{i:07}");
    let mut v = t.to_vec();
    let mut p = 0;
    while let Some(off) = v[p..].windows(MARK.len()).position(|w| w == MARK) {
        let at = p + off;
        v[at..at + MARK.len()].copy_from_slice(digits.as_bytes());
        p = at + MARK.len();
    }
    v
}

fn main() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = template(tmp.path());
    let now = SystemTime::now();

    // 1. 10,000 certificates in one PEM bundle, through the CLI code path.
    let n = 10_000;
    let mut bundle = String::new();
    for i in 0..n {
        bundle.push_str(&pem::encode("CERTIFICATE", &variant(&t, i)));
    }
    let file = tmp.path().join("bundle-10000.pem");
    std::fs::write(&file, &bundle).expect("write bundle");
    let store1 = tmp.path().join("store1");
    let start = Instant::now();
    let code = keys::run(
        KeysCommand::Import {
            private: false,
            passphrase_file: None,
            json: false,
            files: vec![file.clone()],
        },
        &store1,
        None,
        now,
    );
    let import_10k = start.elapsed();
    assert_eq!(code, std::process::ExitCode::SUCCESS);
    println!(
        "import of {n} certificates (one {:.1} MB PEM bundle, CLI path, flushed): {:.2} s",
        bundle.len() as f64 / 1e6,
        import_10k.as_secs_f64()
    );

    // 2. A store of 100,000 keys; lookup of one address.
    let total: usize = std::env::var("SEALGATE_BENCH_STORE_KEYS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let path = tmp.path().join("store2");
    let start = Instant::now();
    {
        let store = SledStore::open(&path, Duration::from_secs(5)).expect("open");
        let mut i = 0;
        while i < total {
            let end = (i + 10_000).min(total);
            let keys: Vec<NewKey> = (i..end)
                .map(|k| NewKey::from_x509(&variant(&t, k), now).expect("cert"))
                .collect();
            store.import(keys).expect("import");
            i = end;
        }
        assert_eq!(store.len(), total);
    }
    println!(
        "building a store of {total} keys (batches of 10,000): {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let start = Instant::now();
    let store = SledStore::open(&path, Duration::from_secs(5)).expect("open");
    println!(
        "opening the {total}-key store: {:.1} ms",
        start.elapsed().as_secs_f64() * 1e3
    );

    let a = Address::parse(&format!("user{:07}@bench.test", total / 2)).expect("address");
    let start = Instant::now();
    let l = store.lookup(&a, now).expect("lookup");
    let cold = start.elapsed();
    assert_eq!(l.smime.len(), 1, "{:?}", l.unusable);
    let rounds = 1000;
    let mut seed = 0x2545_f491_u64;
    let start = Instant::now();
    for _ in 0..rounds {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let k = (seed % total as u64) as usize;
        let a = Address::parse(&format!("user{k:07}@bench.test")).expect("address");
        let l = store.lookup(&a, now).expect("lookup");
        assert_eq!(l.smime.len(), 1);
    }
    let mean = start.elapsed() / rounds;
    println!(
        "lookup of one address in {total} keys: first {:.1} µs, mean of {rounds} random {:.1} µs",
        cold.as_secs_f64() * 1e6,
        mean.as_secs_f64() * 1e6
    );
    let _ = x509::MIN_RSA_BITS;
}
