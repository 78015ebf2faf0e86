//! Throughput of OpenPGP sealing, in messages per second, one thread.
//!
//!     cargo bench --bench openpgp            # all cases, ~3 s each
//!     SEALGATE_BENCH_SECS=1 cargo bench --bench openpgp
//!
//! Sign+encrypt to 2 recipients (Cv25519 encryption subkeys, SEIPDv1,
//! AES-256) of 10 KB and 1 MB messages, with an Ed25519 and an RSA-3072
//! signer; signed-only for comparison; then one 50 MB message with its
//! peak memory.

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use sealgate::openpgp::{encrypt, sign, sign_and_encrypt, PgpOptions, Recipient, SigningKey};
use sequoia_openpgp as pgp;

use pgp::cert::prelude::*;
use pgp::types::Features;

const OUTER: &[u8] =
    b"From: Alice <alice@x.test>\r\nTo: Bob <bob@x.test>, Carol <carol@x.test>\r\n\
Subject: bench\r\nDate: Mon, 02 Nov 2026 10:00:00 +0000\r\nMessage-ID: <b@x.test>\r\n";

/// A whole message of about `size` bytes: OUTER, then a base64 body.
fn message(size: usize) -> Vec<u8> {
    let mut v = [
        OUTER,
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n",
    ]
    .concat();
    let mut i = 0u32;
    while v.len() < size {
        for _ in 0..76 {
            v.push(
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
                    [(i % 64) as usize],
            );
            i = i.wrapping_mul(1_103_515_245).wrapping_add(12_345) >> 1;
        }
        v.extend_from_slice(b"\r\n");
    }
    v
}

fn gen(uid: &str, suite: CipherSuite) -> pgp::Cert {
    CertBuilder::general_purpose(Some(uid))
        .set_cipher_suite(suite)
        .set_profile(pgp::Profile::RFC4880)
        .and_then(|b| b.set_features(Features::empty().set_seipdv1()))
        .and_then(|b| b.generate())
        .map(|(c, _)| c)
        .unwrap_or_else(|e| panic!("key generation: {e}"))
}

fn vm_hwm_kb() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn rate(secs: f64, mut f: impl FnMut()) -> (f64, u32) {
    f(); // warm-up
    let start = Instant::now();
    let mut n = 0u32;
    while start.elapsed() < Duration::from_secs_f64(secs) {
        f();
        n += 1;
    }
    (f64::from(n) / start.elapsed().as_secs_f64(), n)
}

fn main() {
    let secs: f64 = std::env::var("SEALGATE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let now = SystemTime::now();
    let recipients = [
        Recipient::new(gen("Bob <bob@x.test>", CipherSuite::Cv25519), "bob@x.test"),
        Recipient::new(
            gen("Carol <carol@x.test>", CipherSuite::Cv25519),
            "carol@x.test",
        ),
    ];
    let signers = [
        ("Ed25519", gen("Alice <alice@x.test>", CipherSuite::Cv25519)),
        ("RSA-3072", gen("Alice <alice@x.test>", CipherSuite::RSA3k)),
    ];
    let opts = PgpOptions {
        now,
        ..PgpOptions::default()
    };

    println!("sealgate openpgp bench ({secs} s per case, one thread, release)");
    println!(
        "{:<34} {:>9} {:>12} {:>9}",
        "case", "size", "msgs/s", "MB/s"
    );
    for (name, tsk) in &signers {
        let key = SigningKey::from_cert(tsk.clone(), now).unwrap_or_else(|e| panic!("{e}"));
        for size in [10 * 1024, 1024 * 1024] {
            if std::env::var("SEALGATE_BENCH_1MB_ONLY").is_ok() && size != 1024 * 1024 {
                continue;
            }
            let msg = message(size);
            let (r, _) = rate(secs, || {
                let out = sign_and_encrypt(&msg, &key, &recipients, &opts);
                black_box(out.map(|o| o.len()).unwrap_or(0));
            });
            println!(
                "{:<34} {:>9} {:>12.1} {:>9.1}",
                format!("sign({name})+encrypt(2 rcpt)"),
                size,
                r,
                r * size as f64 / 1e6
            );
        }
        let msg = message(10 * 1024);
        let (r, _) = rate(secs, || {
            black_box(sign(&msg, &key, &opts).map(|o| o.len()).unwrap_or(0));
        });
        println!(
            "{:<34} {:>9} {:>12.1} {:>9.1}",
            format!("sign-only({name})"),
            10 * 1024,
            r,
            r * 10240.0 / 1e6
        );
    }
    let msg = message(10 * 1024);
    let (r, _) = rate(secs, || {
        black_box(
            encrypt(&msg, &recipients, &opts)
                .map(|o| o.len())
                .unwrap_or(0),
        );
    });
    println!(
        "{:<34} {:>9} {:>12.1} {:>9.1}",
        "encrypt-only(2 rcpt)",
        10240,
        r,
        r * 10240.0 / 1e6
    );

    // One 50 MB message: time and peak memory beyond the input.
    let big = message(50 * 1024 * 1024);
    let key = SigningKey::from_cert(signers[0].1.clone(), now).unwrap_or_else(|e| panic!("{e}"));
    let before = vm_hwm_kb().unwrap_or(0);
    let start = Instant::now();
    let out = sign_and_encrypt(&big, &key, &recipients, &opts).unwrap_or_else(|e| panic!("{e}"));
    let t = start.elapsed();
    let after = vm_hwm_kb().unwrap_or(0);
    println!(
        "50 MB sign(Ed25519)+encrypt(2 rcpt): {:.2} s, output {:.1} MB, peak RSS grew {:.1} MB (input {:.1} MB already resident)",
        t.as_secs_f64(),
        out.len() as f64 / 1e6,
        after.saturating_sub(before) as f64 / 1e3,
        big.len() as f64 / 1e6
    );
}
