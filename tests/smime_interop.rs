//! Interop tests: messages sealed by `sealgate::smime` are opened by `openssl cms` and `gpgsm`.
//!
//! Needs the `openssl` and `gpgsm` commands (Debian: `apt-get install openssl gpgsm gnupg`).
//! The PKI is generated per run by `keys/generate.sh --profile smime` into a temporary directory.

#[path = "common/keygen.rs"]
mod keygen;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use sealgate::mime::Protection;
use sealgate::smime::{
    self, CertProblem, ContentEncryption, KeyTransport, SigningIdentity, SmimeError, SmimeOptions,
};
use x509_cert::der::DecodePem;
use x509_cert::Certificate;

// ---------------------------------------------------------------------------------------------
// Fixtures

struct Pki {
    path: PathBuf,
}

/// The test PKI, generated once per run into `target/tmp/smime-interop-pki-<pid>` (a static is
/// never dropped, so it lives under target/ rather than in a leaked /tmp directory; older runs'
/// directories are removed first).
fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        if let Ok(entries) = std::fs::read_dir(base) {
            for e in entries.flatten() {
                if e.file_name()
                    .to_string_lossy()
                    .starts_with("smime-interop-pki-")
                {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let path = base.join(format!("smime-interop-pki-{}", std::process::id()));
        keygen::generate("smime", &path);
        Pki { path }
    })
}

fn file(name: &str) -> PathBuf {
    pki().path.join(name)
}

fn cert(name: &str) -> Certificate {
    let pem = std::fs::read(file(&format!("{name}.pem"))).unwrap();
    Certificate::from_pem(&pem).unwrap()
}

fn identity(name: &str) -> SigningIdentity {
    let mut chain = std::fs::read(file(&format!("{name}.pem"))).unwrap();
    chain.extend(std::fs::read(file("ca.pem")).unwrap());
    let key = std::fs::read(file(&format!("{name}.key"))).unwrap();
    SigningIdentity::from_pem(&chain, &key).unwrap()
}

fn write_temp(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

fn run(cmd: &mut Command, stdin: &[u8]) -> (bool, Vec<u8>, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------------------------------------
// External tools

/// `openssl cms -decrypt` with a recipient's key: the decrypted bytes.
fn openssl_decrypt(message: &[u8], recipient: &str) -> Result<Vec<u8>, String> {
    let dir = tempfile::tempdir().unwrap();
    let input = write_temp(dir.path(), "in.eml", message);
    let (ok, out, err) = run(
        Command::new("openssl")
            .args(["cms", "-decrypt", "-binary", "-in"])
            .arg(&input)
            .arg("-recip")
            .arg(file(&format!("{recipient}.pem")))
            .arg("-inkey")
            .arg(file(&format!("{recipient}.key"))),
        b"",
    );
    if ok {
        Ok(out)
    } else {
        Err(err)
    }
}

/// `openssl cms -verify -CAfile`: the signed content. (Not `-binary`: in that mode OpenSSL
/// 3.0 reads the MIME parts as LF-terminated lines and mangles a CRLF blank line before the
/// delimiter; the default mode digests the CRLF-canonical content, which ours already is.)
fn openssl_verify(message: &[u8]) -> Result<Vec<u8>, String> {
    let dir = tempfile::tempdir().unwrap();
    let input = write_temp(dir.path(), "in.eml", message);
    let (ok, out, err) = run(
        Command::new("openssl")
            .args(["cms", "-verify", "-in"])
            .arg(&input)
            .arg("-CAfile")
            .arg(file("ca.pem")),
        b"",
    );
    if ok && err.contains("Verification successful") {
        Ok(out)
    } else {
        Err(err)
    }
}

/// `openssl cms -cmsout -print` of the CMS object in a message.
fn openssl_print(message: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let input = write_temp(dir.path(), "in.eml", message);
    let (ok, out, err) = run(
        Command::new("openssl")
            .args(["cms", "-cmsout", "-print", "-in"])
            .arg(&input),
        b"",
    );
    assert!(ok, "{err}");
    String::from_utf8_lossy(&out).into_owned()
}

/// A fresh gpgsm home per test: the test CA trusted ("S relax"), CRL checks off, Bob's
/// (rsa1) PKCS#12 imported. Dropping it stops its gpg-agent and removes the directory.
struct Gpgsm {
    home: tempfile::TempDir,
}

fn gpgsm() -> Gpgsm {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    std::fs::write(
        h.join("gpgsm.conf"),
        "disable-crl-checks\ndisable-dirmngr\n",
    )
    .unwrap();
    std::fs::write(h.join("gpg-agent.conf"), "allow-loopback-pinentry\n").unwrap();
    let fpr = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha1", "-in"])
        .arg(file("ca.pem"))
        .output()
        .unwrap();
    let fpr = String::from_utf8_lossy(&fpr.stdout);
    let fpr = fpr.trim().rsplit('=').next().unwrap().to_string();
    std::fs::write(h.join("trustlist.txt"), format!("{fpr} S relax\n")).unwrap();
    let g = Gpgsm { home };
    let (ok, _, err) = run(g.cmd().arg("--import").arg(file("ca.pem")), b"");
    assert!(ok, "gpgsm import ca: {err}");
    let (ok, _, err) = run(g.cmd().arg("--import").arg(file("rsa1.p12")), b"test\n");
    assert!(ok, "gpgsm import p12: {err}");
    g
}

impl Drop for Gpgsm {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(self.home.path())
            .args(["--kill", "all"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Gpgsm {
    fn cmd(&self) -> Command {
        let mut c = Command::new("gpgsm");
        c.arg("--homedir").arg(self.home.path()).args([
            "--batch",
            "--no-tty",
            "--pinentry-mode",
            "loopback",
            "--passphrase-fd",
            "0",
        ]);
        c
    }

    fn decrypt(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        let dir = tempfile::tempdir().unwrap();
        let der = write_temp(dir.path(), "in.p7m", &cms_der(message));
        // gpgsm exits 2 when a RecipientInfo before ours is for a key it lacks, even though it
        // then decrypts with ours: judge by the DECRYPTION_OKAY status line.
        let (_, out, err) = run(
            self.cmd().args(["--status-fd", "2", "--decrypt"]).arg(&der),
            b"test\n",
        );
        if err.contains("[GNUPG:] DECRYPTION_OKAY") {
            Ok(out)
        } else {
            Err(err)
        }
    }

    /// Verifies an opaque signed-data message; returns the signed content.
    fn verify_opaque(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        let dir = tempfile::tempdir().unwrap();
        let der = write_temp(dir.path(), "in.p7m", &cms_der(message));
        let out = dir.path().join("content");
        let (ok, status, err) = run(
            self.cmd()
                .args(["--status-fd", "1", "--output"])
                .arg(&out)
                .arg("--verify")
                .arg(&der),
            b"",
        );
        let status = String::from_utf8_lossy(&status).into_owned();
        if ok && status.contains("GOODSIG") && status.contains("VALIDSIG") {
            Ok(std::fs::read(out).unwrap())
        } else {
            Err(format!("{status}\n{err}"))
        }
    }

    /// Verifies a multipart/signed message; returns gpgsm's status lines.
    fn verify_detached(&self, message: &[u8]) -> Result<String, String> {
        let (content, sig) = split_multipart_signed(message);
        let dir = tempfile::tempdir().unwrap();
        let sig = write_temp(dir.path(), "sig.p7s", &sig);
        let content = write_temp(dir.path(), "content", &content);
        let (ok, out, err) = run(
            self.cmd()
                .args(["--status-fd", "1", "--verify"])
                .arg(&sig)
                .arg(&content),
            b"",
        );
        let status = String::from_utf8_lossy(&out).into_owned();
        if ok && status.contains("GOODSIG") && status.contains("VALIDSIG") {
            Ok(status)
        } else {
            Err(format!("{status}\n{err}"))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Independent MIME helpers (deliberately not using sealgate::mime)

fn header_end(m: &[u8]) -> usize {
    m.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .expect("header end")
}

fn headers_of(m: &[u8]) -> String {
    String::from_utf8_lossy(&m[..header_end(m)]).into_owned()
}

fn b64decode(text: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let clean: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(clean)
        .expect("base64")
}

/// The DER in a message whose body is base64.
fn cms_der(message: &[u8]) -> Vec<u8> {
    b64decode(&message[header_end(message)..])
}

/// (first part bytes, signature DER) of a multipart/signed message.
fn split_multipart_signed(message: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let headers = headers_of(message).replace("\r\n ", " ");
    let b = headers
        .split("boundary=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let delim = format!("\r\n--{b}");
    let body = &message[header_end(message)..];
    let s = String::from_utf8_lossy(body).into_owned();
    assert!(s.is_ascii() || !s.contains('\u{fffd}'));
    let first = format!("--{b}\r\n");
    let start = find(body, first.as_bytes()).unwrap() + first.len();
    let end = start + find(&body[start..], delim.as_bytes()).unwrap();
    let rest = &body[end + delim.len()..];
    let sig_part_end = find(rest, format!("\r\n--{b}--").as_bytes()).unwrap();
    let sig_part = &rest[..sig_part_end];
    let sig_body = &sig_part[header_end(sig_part)..];
    (body[start..end].to_vec(), b64decode(sig_body))
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

fn qp_decode(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'=' {
            if text[i + 1..].starts_with(b"\r\n") {
                i += 3;
                continue;
            }
            let hex = std::str::from_utf8(&text[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    out
}

fn assert_7bit_crlf(m: &[u8], allow_8bit_headers: bool) {
    let body_start = header_end(m);
    for (i, line) in m.split(|&b| b == b'\n').enumerate() {
        assert!(line.len() <= 999, "line {i} has {} octets", line.len());
    }
    for (i, w) in m.windows(2).enumerate() {
        assert!(!(w[1] == b'\n' && w[0] != b'\r'), "bare LF at {i}");
        assert!(!(w[0] == b'\r' && w[1] != b'\n'), "bare CR at {i}");
    }
    assert!(m.iter().all(|&b| b != 0), "NUL");
    for line in m.split(|&b| b == b'\n') {
        if line.iter().any(|&b| b >= 0x80) {
            // Raw UTF-8 is only allowed in the (protected copies of the) Subject field.
            let ok = allow_8bit_headers
                && (line.starts_with(b"Subject: ") || line.starts_with(b"HP-Outer: Subject: "));
            assert!(ok, "8-bit line: {}", String::from_utf8_lossy(line));
        }
    }
    let _ = body_start;
}

fn assert_no_bcc(m: &[u8]) {
    let lower = String::from_utf8_lossy(m).to_ascii_lowercase();
    assert!(!lower.contains("bcc:"), "Bcc field present");
    assert!(!lower.contains("hidden@example.org"), "Bcc address present");
}

// ---------------------------------------------------------------------------------------------
// Test messages

/// 8-bit text, UTF-8 headers (raw and encoded-word), a long line, no final CRLF, a Bcc.
fn text_message() -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(b"Received: from client.example.org by relay\r\n");
    m.extend_from_slice(b"From: Alice <alice@example.org>\r\n");
    m.extend_from_slice(b"To: Bob <bob@example.org>, carol@example.org\r\n");
    m.extend_from_slice(b"Cc: dave@example.org\r\n");
    m.extend_from_slice(b"Bcc: hidden@example.org\r\n");
    m.extend_from_slice("Subject: Gr\u{fc}\u{df}e =?UTF-8?B?w6TDtsO8?= \u{1f512}\r\n".as_bytes());
    m.extend_from_slice(b"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n");
    m.extend_from_slice(b"Message-ID: <1@example.org>\r\n");
    m.extend_from_slice(b"MIME-Version: 1.0\r\n");
    m.extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\n");
    m.extend_from_slice(b"Content-Transfer-Encoding: 8bit\r\n\r\n");
    m.extend_from_slice(
        "Sch\u{f6}ne Gr\u{fc}\u{df}e aus K\u{f6}ln.\r\nFrom here on: \r\n.\r\n".as_bytes(),
    );
    m.extend(std::iter::repeat_n(b'x', 2500));
    m.extend_from_slice(b"\r\nlast line without CRLF \t");
    m
}

fn attachment_bytes() -> Vec<u8> {
    (0..20_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// Nested multiparts: mixed(alternative(text 8-bit, html), binary attachment), an embedded
/// message/rfc822, and a bare-LF part.
fn multipart_message() -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(
        b"From: alice@example.org\r\nTo: bob@example.org\r\nBcc: hidden@example.org\r\n",
    );
    m.extend_from_slice(b"Subject: attachment\r\nMIME-Version: 1.0\r\n");
    m.extend_from_slice(b"Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n");
    m.extend_from_slice(b"This is a multi-part message in MIME format.\r\n");
    m.extend_from_slice(b"--outer\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n");
    m.extend_from_slice(b"--inner\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n");
    m.extend_from_slice(b"caf\xe9 cr\xe8me\r\n");
    m.extend_from_slice(
        b"--inner\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>hi</p>\n<p>bare LF</p>\r\n",
    );
    m.extend_from_slice(b"--inner--\r\n");
    m.extend_from_slice(
        b"--outer\r\nContent-Type: application/octet-stream; name=\"blob.bin\"\r\n",
    );
    m.extend_from_slice(b"Content-Disposition: attachment; filename=\"blob.bin\"\r\nContent-Transfer-Encoding: binary\r\n\r\n");
    m.extend_from_slice(&attachment_bytes());
    m.extend_from_slice(b"\r\n--outer\r\nContent-Type: message/rfc822\r\n\r\n");
    m.extend_from_slice(b"From: x@example.org\r\nSubject: fwd\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\xc3\xa9t\xc3\xa9\r\n");
    m.extend_from_slice(b"--outer--\r\n");
    m
}

fn opts() -> SmimeOptions {
    pki(); // certificates are issued "now": generate them before taking the time
    SmimeOptions::default()
}

fn recipients(names: &[&str]) -> Vec<Certificate> {
    names.iter().map(|n| cert(n)).collect()
}

// ---------------------------------------------------------------------------------------------
// Signing

#[test]
fn detached_rsa_signature_verifies_with_openssl_and_gpgsm() {
    let msg = text_message();
    let signed = smime::sign(&msg, &identity("signer"), &opts()).unwrap();
    let expected = smime::prepare(&msg, &opts(), false).unwrap().inner;

    assert_7bit_crlf(&signed, true);
    assert_no_bcc(&signed);
    let headers = headers_of(&signed);
    assert!(headers.contains(
        "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256;"
    ));
    assert!(
        headers.contains("\r\nSubject: Gr\u{fc}\u{df}e"),
        "{headers}"
    );

    let content = openssl_verify(&signed).expect("openssl verify");
    assert_eq!(content, expected);
    // The signed content carries the original text, quoted-printable encoded.
    let body = &content[header_end(&content)..];
    assert!(String::from_utf8_lossy(&content).contains("hp=\"clear\""));
    let mut original_body = text_message();
    original_body.drain(..header_end(&original_body));
    assert_eq!(qp_decode(body), original_body);

    let status = gpgsm().verify_detached(&signed).expect("gpgsm verify");
    assert!(status.contains("GOODSIG"));

    // Signed attributes and certificates as required.
    let print = openssl_print(&signed);
    for needed in [
        "contentType",
        "messageDigest",
        "signingTime",
        "S/MIME Capabilities",
        "aes-256-cbc",
    ] {
        assert!(print.contains(needed), "missing {needed} in\n{print}");
    }
    assert!(
        print.matches("CN=sealgate test root").count() >= 2,
        "chain missing"
    );
}

#[test]
fn tampered_signature_fails() {
    let signed = smime::sign(&text_message(), &identity("signer"), &opts()).unwrap();
    let pos = find(&signed, b"Sch=C3=B6ne").unwrap();
    let mut tampered = signed.clone();
    tampered[pos] = b's';
    assert!(openssl_verify(&tampered).is_err());
    let g = gpgsm();
    assert!(g.verify_detached(&tampered).is_err());
    assert!(
        g.verify_detached(&signed).is_ok(),
        "control: the untampered message verifies"
    );
}

#[test]
fn opaque_rsa_signature_verifies_with_openssl_and_gpgsm() {
    let o = SmimeOptions {
        opaque_signing: true,
        ..opts()
    };
    let msg = text_message();
    let signed = smime::sign(&msg, &identity("signer"), &o).unwrap();
    assert!(headers_of(&signed).contains("smime-type=signed-data"));
    assert_7bit_crlf(&signed, true);
    let expected = smime::prepare(&msg, &o, false).unwrap().inner;
    assert_eq!(openssl_verify(&signed).unwrap(), expected);
    assert_eq!(
        gpgsm().verify_opaque(&signed).expect("gpgsm verify"),
        expected
    );
}

#[test]
fn ecdsa_p256_signature_verifies_with_openssl_and_gpgsm() {
    let msg = multipart_message();
    let signed = smime::sign(&msg, &identity("ec-signer"), &opts()).unwrap();
    assert_eq!(
        openssl_verify(&signed).unwrap(),
        smime::prepare(&msg, &opts(), false).unwrap().inner
    );
    assert!(openssl_print(&signed).contains("ecdsa-with-SHA256"));
    gpgsm()
        .verify_detached(&signed)
        .expect("gpgsm verifies ECDSA P-256");
}

#[test]
fn multipart_signature_keeps_attachment() {
    let msg = multipart_message();
    let signed = smime::sign(&msg, &identity("signer"), &opts()).unwrap();
    assert_7bit_crlf(&signed, false);
    assert_no_bcc(&signed);
    let content = openssl_verify(&signed).unwrap();
    assert_eq!(content, smime::prepare(&msg, &opts(), false).unwrap().inner);
    // The binary attachment is base64 now and decodes to the original bytes.
    let s = String::from_utf8(content.clone()).unwrap();
    let att = s.split("filename=\"blob.bin\"\r\n").nth(1).unwrap();
    assert!(
        att.starts_with("Content-Transfer-Encoding: base64\r\n\r\n"),
        "{}",
        &att[..80]
    );
    let b64 = att
        .split("\r\n\r\n")
        .nth(1)
        .unwrap()
        .split("\r\n--outer")
        .next()
        .unwrap();
    assert_eq!(b64decode(b64.as_bytes()), attachment_bytes());
    assert!(s.contains("caf=E9 cr=E8me"));
    assert!(s.contains("<p>hi</p>\r\n<p>bare LF</p>"));
    gpgsm().verify_detached(&signed).expect("gpgsm verify");
}

// ---------------------------------------------------------------------------------------------
// Encryption

#[test]
fn cbc_pkcs1_to_three_mixed_recipients() {
    let msg = text_message();
    let rcpts = recipients(&["rsa1", "rsa2", "ec1"]);
    let o = SmimeOptions {
        hide_subject: true,
        ..opts()
    };
    let sealed = smime::encrypt(&msg, &rcpts, &o).unwrap();
    let expected = smime::prepare(&msg, &o, true).unwrap().inner;

    assert_7bit_crlf(&sealed, true);
    assert_no_bcc(&sealed);
    let headers = headers_of(&sealed);
    assert!(headers.contains("Content-Type: application/pkcs7-mime; smime-type=enveloped-data;"));
    assert!(headers.contains("\r\nSubject: [...]\r\n"), "{headers}");
    assert!(headers.contains("Received: from client.example.org"));

    for who in ["rsa1", "rsa2", "ec1"] {
        let inner = openssl_decrypt(&sealed, who).unwrap_or_else(|e| panic!("{who}: {e}"));
        assert_eq!(inner, expected, "{who}");
        assert_no_bcc(&inner);
    }
    let inner = String::from_utf8(expected).unwrap();
    assert!(inner.contains("\r\nSubject: Gr\u{fc}\u{df}e"));
    assert!(inner.contains("HP-Outer: Subject: [...]\r\n"));
    assert!(inner.contains("hp=\"cipher\""));
    assert!(
        openssl_decrypt(&sealed, "signer").is_err(),
        "non-recipient must not decrypt"
    );

    let print = openssl_print(&sealed);
    assert_eq!(print.matches("d.ktri").count(), 2, "{print}");
    assert_eq!(print.matches("d.kari").count(), 1, "{print}");
    assert!(print.contains("aes-256-cbc"));

    let from_gpgsm = gpgsm().decrypt(&sealed).expect("gpgsm decrypt");
    assert_eq!(String::from_utf8_lossy(&from_gpgsm), inner);
}

#[test]
fn oaep_key_transport_decrypts_with_openssl() {
    let o = SmimeOptions {
        key_transport: KeyTransport::RsaOaepSha256,
        ..opts()
    };
    let msg = multipart_message();
    let sealed = smime::encrypt(&msg, &recipients(&["rsa1", "ec1"]), &o).unwrap();
    let expected = smime::prepare(&msg, &o, true).unwrap().inner;
    assert_eq!(openssl_decrypt(&sealed, "rsa1").unwrap(), expected);
    assert_eq!(openssl_decrypt(&sealed, "ec1").unwrap(), expected);
    let print = openssl_print(&sealed);
    assert!(print.contains("rsaesOaep"), "{print}");
    assert!(print.contains("sha256"), "{print}");
}

#[test]
fn aes_gcm_auth_enveloped_decrypts_with_openssl() {
    let o = SmimeOptions {
        encryption: ContentEncryption::Aes256Gcm,
        ..opts()
    };
    let msg = text_message();
    let sealed = smime::encrypt(&msg, &recipients(&["rsa1", "ec1"]), &o).unwrap();
    assert!(headers_of(&sealed).contains("smime-type=authEnveloped-data;"));
    let expected = smime::prepare(&msg, &o, true).unwrap().inner;
    assert_eq!(openssl_decrypt(&sealed, "rsa1").unwrap(), expected);
    assert_eq!(openssl_decrypt(&sealed, "ec1").unwrap(), expected);
    assert!(openssl_print(&sealed).contains("aes-256-gcm"));

    // Flipping one ciphertext bit must make decryption fail (authenticated).
    let mut der = cms_der(&sealed);
    let n = der.len();
    der[n - 40] ^= 1;
    let dir = tempfile::tempdir().unwrap();
    let p = write_temp(dir.path(), "bad.der", &der);
    let (ok, _, _) = run(
        Command::new("openssl")
            .args(["cms", "-decrypt", "-inform", "DER", "-in"])
            .arg(&p)
            .arg("-recip")
            .arg(file("rsa1.pem"))
            .arg("-inkey")
            .arg(file("rsa1.key")),
        b"",
    );
    assert!(!ok);
}

// ---------------------------------------------------------------------------------------------
// Sign then encrypt

#[test]
fn sign_and_encrypt_detached_cbc_with_openssl_and_gpgsm() {
    let msg = multipart_message();
    let o = opts();
    let sealed =
        smime::sign_and_encrypt(&msg, &identity("signer"), &recipients(&["rsa1", "ec1"]), &o)
            .unwrap();
    let expected = smime::prepare(&msg, &o, true).unwrap().inner;
    assert_no_bcc(&sealed);
    for who in ["rsa1", "ec1"] {
        let signed_entity = openssl_decrypt(&sealed, who).unwrap();
        assert!(headers_of(&signed_entity).starts_with("Content-Type: multipart/signed;"));
        assert_eq!(openssl_verify(&signed_entity).unwrap(), expected, "{who}");
    }
    let g = gpgsm();
    let signed_entity = g.decrypt(&sealed).expect("gpgsm decrypt");
    g.verify_detached(&signed_entity).expect("gpgsm verify");
}

#[test]
fn sign_and_encrypt_opaque_gcm_oaep_with_openssl() {
    let o = SmimeOptions {
        opaque_signing: true,
        encryption: ContentEncryption::Aes256Gcm,
        key_transport: KeyTransport::RsaOaepSha256,
        hide_subject: true,
        ..opts()
    };
    let msg = text_message();
    let sealed = smime::sign_and_encrypt(
        &msg,
        &identity("ec-signer"),
        &recipients(&["rsa2", "ec1"]),
        &o,
    )
    .unwrap();
    let expected = smime::prepare(&msg, &o, true).unwrap().inner;
    let signed_entity = openssl_decrypt(&sealed, "rsa2").unwrap();
    assert!(headers_of(&signed_entity).contains("smime-type=signed-data"));
    assert_eq!(openssl_verify(&signed_entity).unwrap(), expected);
}

// ---------------------------------------------------------------------------------------------
// Refusals and invariants

#[test]
fn already_protected_input_is_refused_unless_forced() {
    let sealed = smime::encrypt(&text_message(), &recipients(&["rsa1"]), &opts()).unwrap();
    let err = smime::encrypt(&sealed, &recipients(&["rsa2"]), &opts()).unwrap_err();
    assert!(
        matches!(
            err,
            SmimeError::AlreadyProtected(Protection::SmimeEncrypted)
        ),
        "{err}"
    );
    let err = smime::sign(&sealed, &identity("signer"), &opts()).unwrap_err();
    assert!(matches!(err, SmimeError::AlreadyProtected(_)));
    let pgp = b"From: a@example.org\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=x\r\n\r\n--x\r\n\r\nVersion: 1\r\n--x--\r\n";
    assert!(matches!(
        smime::sign(pgp, &identity("signer"), &opts()),
        Err(SmimeError::AlreadyProtected(Protection::PgpMimeEncrypted))
    ));
    let inline = b"From: a@example.org\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nhQ\r\n-----END PGP MESSAGE-----\r\n";
    assert!(matches!(
        smime::encrypt(inline, &recipients(&["rsa1"]), &opts()),
        Err(SmimeError::AlreadyProtected(Protection::InlinePgpEncrypted))
    ));

    // With force the encrypted message is wrapped, byte for byte, never opened.
    let o = SmimeOptions {
        force: true,
        ..opts()
    };
    let wrapped = smime::encrypt(&sealed, &recipients(&["rsa2"]), &o).unwrap();
    let inner = openssl_decrypt(&wrapped, "rsa2").unwrap();
    let original_body = &sealed[header_end(&sealed)..];
    assert!(inner.ends_with(original_body));
    assert!(openssl_decrypt(&sealed, "rsa1").is_ok());
}

#[test]
fn bcc_copy_has_only_its_recipient() {
    // The relay sends the Bcc copy separately: encrypted to the Bcc recipient alone.
    let msg = text_message();
    let to_copy = smime::encrypt(&msg, &recipients(&["rsa1", "ec1"]), &opts()).unwrap();
    let bcc_copy = smime::encrypt(&msg, &recipients(&["rsa2"]), &opts()).unwrap();
    assert!(openssl_decrypt(&to_copy, "rsa2").is_err());
    let print = openssl_print(&to_copy);
    assert!(
        !print.contains("CN=Carol"),
        "Bcc recipient's RecipientInfo leaked"
    );
    let print = openssl_print(&bcc_copy);
    assert!(!print.contains("CN=Bob") && !print.contains("CN=Dave"));
    assert_eq!(
        print.matches("d.ktri").count() + print.matches("d.kari").count(),
        1
    );
    for m in [&to_copy, &bcc_copy] {
        assert_no_bcc(m);
    }
    assert_no_bcc(&openssl_decrypt(&bcc_copy, "rsa2").unwrap());
}

#[test]
fn unusable_certificates_are_refused() {
    let msg = text_message();
    let err = smime::encrypt(&msg, &recipients(&["rsa1", "rsa1024"]), &opts()).unwrap_err();
    assert!(
        matches!(
            err,
            SmimeError::Certificate {
                problem: CertProblem::RsaKeyTooSmall { bits: 1024 },
                ..
            }
        ),
        "{err}"
    );
    let err = smime::encrypt(&msg, &recipients(&["server-only"]), &opts()).unwrap_err();
    assert!(
        matches!(
            err,
            SmimeError::Certificate {
                problem: CertProblem::ExtendedKeyUsage,
                ..
            }
        ),
        "{err}"
    );
    // ec-signer has no keyAgreement usage
    let err = smime::encrypt(&msg, &recipients(&["ec-signer"]), &opts()).unwrap_err();
    assert!(
        matches!(
            err,
            SmimeError::Certificate {
                problem: CertProblem::KeyUsage("keyAgreement"),
                ..
            }
        ),
        "{err}"
    );
    let future = SmimeOptions {
        now: SystemTime::now() + Duration::from_secs(20 * 365 * 86400),
        ..opts()
    };
    let err = smime::encrypt(&msg, &recipients(&["rsa1"]), &future).unwrap_err();
    assert!(
        matches!(
            err,
            SmimeError::Certificate {
                problem: CertProblem::NotValidAt,
                ..
            }
        ),
        "{err}"
    );
    let err = smime::sign(&msg, &identity("signer"), &future).unwrap_err();
    assert!(
        matches!(
            err,
            SmimeError::Certificate {
                problem: CertProblem::NotValidAt,
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        smime::encrypt(&msg, &[], &opts()),
        Err(SmimeError::NoRecipients)
    ));
    // rsa1 (keyEncipherment only for signing? it has digitalSignature) with ec1's key: mismatch
    let chain = std::fs::read(file("rsa1.pem")).unwrap();
    let key = std::fs::read(file("ec1.key")).unwrap();
    assert!(matches!(
        SigningIdentity::from_pem(&chain, &key),
        Err(SmimeError::KeyMismatch)
    ));
}

#[test]
fn identity_debug_never_shows_key() {
    let id = identity("signer");
    let dbg = format!("{id:?}");
    assert!(dbg.contains("Alice") && dbg.contains("RSA"), "{dbg}");
    let key_pem = std::fs::read_to_string(file("signer.key")).unwrap();
    let key_line = key_pem.lines().nth(3).unwrap();
    assert!(!dbg.contains(key_line));
    assert!(dbg.len() < 300);
}
