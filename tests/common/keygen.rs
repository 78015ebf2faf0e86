//! Test key material from keys/generate.sh, the one generator for keys/demo, the Rust tests, the
//! Python tests and the benchmarks (profiles: keys/README.md).

use std::path::Path;
use std::process::Command;

/// Writes the key material of `profile` (`demo`, `smime` or `tls`) into `out`.
pub fn generate(profile: &str, out: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("keys/generate.sh");
    let result = Command::new("bash")
        .arg(&script)
        .args(["--profile", profile])
        .arg(out)
        .output()
        .expect("run keys/generate.sh (needs bash and openssl; the demo profile also gpg)");
    assert!(
        result.status.success(),
        "keys/generate.sh --profile {profile} failed:\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
}
