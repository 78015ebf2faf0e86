//! Throughput of S/MIME sealing: `cargo bench --bench smime` (a plain binary, harness = false).
//!
//! Prints messages/s and MB/s for sign+encrypt (RSA-2048 signer, AES-256-CBC, 2 RSA-2048
//! recipients, PKCS#1 v1.5) at 10 KB, 1 MB and 20 MB, the rsa crate's raw RSA-2048 signing rate
//! (blinded, as sealgate signs, and unblinded for reference), and the peak memory of one 50 MB
//! message measured in a child process. `SEALGATE_BENCH_SECS` sets the time per case (default 3);
//! `SEALGATE_BENCH_ONLY="1 MB"` runs one size only.

#[path = "../tests/common/keygen.rs"]
mod keygen;

use std::process::Command;
use std::time::{Duration, Instant};

use rsa::pkcs8::DecodePrivateKey;
use sealgate::smime::{self, SigningIdentity, SmimeOptions};
use sha2::Sha256;
use signature::{RandomizedSigner, Signer};
use x509_cert::der::DecodePem;
use x509_cert::Certificate;

fn message(size: usize) -> Vec<u8> {
    let mut m = b"From: Alice <alice@example.org>\r\nTo: bob@example.org, carol@example.org\r\n\
Subject: benchmark\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <b@example.org>\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
Gr\xc3\xbc\xc3\x9fe, see the attachment.\r\n--b\r\nContent-Type: application/octet-stream\r\n\
Content-Transfer-Encoding: base64\r\n\r\n"
        .to_vec();
    let line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAx\r\n";
    while m.len() + line.len() + 8 < size {
        m.extend_from_slice(line);
    }
    m.extend_from_slice(b"--b--\r\n");
    m
}

struct Fixture {
    _dir: tempfile::TempDir,
    identity: SigningIdentity,
    recipients: Vec<Certificate>,
    signer_key: rsa::RsaPrivateKey,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    keygen::generate("smime", dir.path());
    let read = |n: &str| std::fs::read(dir.path().join(n)).expect("fixture file");
    let mut chain = read("signer.pem");
    chain.extend(read("ca.pem"));
    let identity = SigningIdentity::from_pem(&chain, &read("signer.key")).expect("identity");
    let recipients = ["rsa1.pem", "rsa2.pem"]
        .iter()
        .map(|n| Certificate::from_pem(read(n)).expect("cert"))
        .collect();
    let key_pem = String::from_utf8(read("signer.key")).expect("pem");
    let signer_key = rsa::RsaPrivateKey::from_pkcs8_pem(&key_pem).expect("key");
    Fixture {
        _dir: dir,
        identity,
        recipients,
        signer_key,
    }
}

fn budget() -> Duration {
    let secs = std::env::var("SEALGATE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(secs)
}

/// CPU seconds (user + system) used by this process so far, from /proc (0 if unavailable):
/// reported beside wall-clock rates because the benchmark machine is shared.
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1.to_string();
            let fields: Vec<&str> = after.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0)
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn memory_child(f: &Fixture) {
    let msg = message(50 * 1024 * 1024);
    let before = peak_rss_kib();
    let opts = SmimeOptions::default();
    let out = smime::sign_and_encrypt(&msg, &f.identity, &f.recipients, &opts).expect("seal");
    let after = peak_rss_kib();
    println!(
        "50 MB sign+encrypt: peak RSS {} MiB before, {} MiB after (input {} MiB, output {} MiB): \
         {:.1}x the message while sealing",
        before / 1024,
        after / 1024,
        msg.len() / (1024 * 1024),
        out.len() / (1024 * 1024),
        (after.saturating_sub(before)) as f64 * 1024.0 / msg.len() as f64
    );
}

fn main() {
    let f = fixture();
    if std::env::args().any(|a| a == "--memory-child") {
        memory_child(&f);
        return;
    }
    let budget = budget();
    let opts = SmimeOptions::default();
    println!("sealgate S/MIME sign+encrypt (RSA-2048 signer, AES-256-CBC, 2 RSA-2048 recipients)");
    for (label, size) in [
        ("10 KB", 10 * 1024),
        ("1 MB", 1024 * 1024),
        ("20 MB", 20 * 1024 * 1024),
    ] {
        if std::env::var("SEALGATE_BENCH_ONLY").is_ok_and(|o| o != label) {
            continue;
        }
        let msg = message(size);
        let start = Instant::now();
        let cpu_start = cpu_seconds();
        let mut n = 0u32;
        while n < 3 || start.elapsed() < budget {
            let out =
                smime::sign_and_encrypt(&msg, &f.identity, &f.recipients, &opts).expect("seal");
            std::hint::black_box(out);
            n += 1;
        }
        let secs = start.elapsed().as_secs_f64();
        let cpu = (cpu_seconds() - cpu_start).max(0.01);
        let mb = f64::from(n) * msg.len() as f64 / 1e6;
        println!(
            "  {label:>6}: {:>7.1} msg/s {:>6.1} MB/s wall | {:>7.1} msg/s {:>6.1} MB/s per CPU-s \
             ({n} msgs, {secs:.2} s wall, {cpu:.2} s CPU)",
            f64::from(n) / secs,
            mb / secs,
            f64::from(n) / cpu,
            mb / cpu,
        );
    }

    let blinded = rsa::pkcs1v15::SigningKey::<Sha256>::new(f.signer_key.clone());
    let mut rng = rand::rngs::OsRng;
    for (label, blind) in [("blinded (used)", true), ("unblinded", false)] {
        let start = Instant::now();
        let cpu_start = cpu_seconds();
        let mut n = 0u32;
        while n < 10 || start.elapsed() < budget {
            let sig = if blind {
                blinded.sign_with_rng(&mut rng, b"message")
            } else {
                blinded.sign(b"message")
            };
            std::hint::black_box(sig);
            n += 1;
        }
        let cpu = (cpu_seconds() - cpu_start).max(0.01);
        println!(
            "rsa crate RSA-2048 PKCS#1 v1.5 sign, {label}: {:.1} sign/s wall | {:.1} sign/s per CPU-s",
            f64::from(n) / start.elapsed().as_secs_f64(),
            f64::from(n) / cpu
        );
    }

    match std::env::current_exe() {
        Ok(exe) => {
            let status = Command::new(exe).arg("--memory-child").status();
            if !status.map(|s| s.success()).unwrap_or(false) {
                println!("memory measurement failed");
            }
        }
        Err(e) => println!("memory measurement skipped: {e}"),
    }
}
