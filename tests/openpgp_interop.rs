//! Interop tests for `sealgate::openpgp`: every form we produce is opened by
//! GnuPG 2.2 (`gpg`) and, where it can, by Debian's `sq`; SEIPDv2 messages
//! (which neither reads) by sequoia itself.
//!
//! Needs: gnupg, sq (Debian packages). Keys are generated at run time:
//! by gpg in temporary GNUPGHOMEs (ed25519/cv25519, rsa3072/rsa3072, one
//! without encryption subkey, one whose encryption subkey expired), and by
//! sequoia (SEIPDv1-only features; SEIPDv2 with AEAD preferences).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use sealgate::mime::{self, Limits, PrepareOptions, Protection, HIDDEN_SUBJECT};
use sealgate::openpgp::{
    encrypt, encrypt_to, sign, sign_and_encrypt, PgpError, PgpOptions, Recipient, SigningKey,
};
use sequoia_openpgp as pgp;

use pgp::cert::prelude::*;
use pgp::crypto::SessionKey;
use pgp::packet::signature::SignatureBuilder;
use pgp::packet::{Packet, PKESK, SKESK};
use pgp::parse::stream::{
    DecryptionHelper, DecryptorBuilder, MessageLayer, MessageStructure, VerificationHelper,
};
use pgp::parse::{PacketParser, PacketParserResult, Parse};
use pgp::policy::StandardPolicy;
use pgp::serialize::SerializeInto;
use pgp::types::{AEADAlgorithm, Features, ReasonForRevocation, SignatureType, SymmetricAlgorithm};
use pgp::{Cert, KeyHandle};

// ---------------------------------------------------------------- fixtures

/// One GnuPG home directory.
struct GpgHome {
    dir: PathBuf,
}

impl GpgHome {
    fn new(root: &Path, name: &str) -> Self {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        std::fs::write(dir.join("gpg-agent.conf"), "allow-loopback-pinentry\n").unwrap();
        GpgHome { dir }
    }

    fn gpg(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = Command::new("gpg");
        cmd.arg("--homedir")
            .arg(&self.dir)
            .args([
                "--batch",
                "--no-tty",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
            ])
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .expect("gpg must be installed (apt-get install gnupg)");
        if let Some(data) = stdin {
            use std::io::Write;
            let mut si = child.stdin.take().unwrap();
            si.write_all(data).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> Output {
        let o = self.gpg(args, None);
        assert!(
            o.status.success(),
            "gpg {:?} failed: {}",
            args,
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }

    /// Generates a key; returns its primary fingerprint.
    fn gen(
        &self,
        uid: &str,
        algo: &str,
        enc: Option<(&str, &str)>,
        faked_time: Option<&str>,
    ) -> String {
        let mut base: Vec<String> = Vec::new();
        if let Some(t) = faked_time {
            base.push("--faked-system-time".into());
            base.push(t.into());
        }
        let with = |extra: &[&str]| -> Vec<String> {
            base.iter()
                .cloned()
                .chain(extra.iter().map(|s| s.to_string()))
                .collect()
        };
        let a = with(&["--quick-gen-key", uid, algo, "sign", "never"]);
        self.ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
        let fpr = self.fingerprint(uid);
        if let Some((ealgo, expire)) = enc {
            let a = with(&["--quick-add-key", &fpr, ealgo, "encr", expire]);
            self.ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
        }
        fpr
    }

    fn fingerprint(&self, query: &str) -> String {
        let o = self.ok(&["--with-colons", "--list-keys", query]);
        String::from_utf8(o.stdout)
            .unwrap()
            .lines()
            .find_map(|l| {
                l.strip_prefix("fpr:")
                    .map(|r| r.trim_matches(':').to_string())
            })
            .unwrap()
    }

    fn export(&self, fpr: &str) -> Vec<u8> {
        self.ok(&["--export", fpr]).stdout
    }

    fn export_secret(&self, fpr: &str) -> Vec<u8> {
        self.ok(&["--export-secret-keys", fpr]).stdout
    }

    fn import(&self, data: &[u8]) {
        let o = self.gpg(&["--import"], Some(data));
        assert!(
            o.status.success(),
            "import: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// The keys every test uses, generated once per test binary.
struct Fixture {
    root: PathBuf,
    /// Sender: gpg ed25519 (sign) + cv25519 (encr).
    alice: GpgHome,
    alice_tsk: Vec<u8>,
    alice_cert: Cert,
    /// Recipient: gpg ed25519 + cv25519.
    bob: GpgHome,
    bob_cert: Cert,
    /// Recipient and second signer: gpg rsa3072 + rsa3072 encr.
    carol: GpgHome,
    carol_tsk: Vec<u8>,
    carol_cert: Cert,
    /// Recipient made by sequoia, SEIPDv1-only features (imported into gpg).
    dave: GpgHome,
    dave_tsk: Cert,
    /// Sequoia, advertises SEIPDv2 and (AES256, GCM): v2 recipient.
    erin_tsk: Cert,
    /// gpg key without an encryption subkey.
    no_encryption_subkey: Cert,
    /// gpg key whose encryption subkey expired in 2020.
    expired_encryption_subkey: Cert,
    /// sequoia key whose encryption subkey is revoked.
    revoked_encryption_subkey: Cert,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(make_fixture)
}

fn make_fixture() -> Fixture {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    // Agents of earlier runs: stop them and remove their homes.
    if let Ok(entries) = std::fs::read_dir(&base) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("pgp-interop-") {
                if let Ok(homes) = std::fs::read_dir(e.path()) {
                    for h in homes.flatten() {
                        let _ = Command::new("gpgconf")
                            .arg("--homedir")
                            .arg(h.path())
                            .args(["--kill", "gpg-agent"])
                            .output();
                    }
                }
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let root = base.join(format!("pgp-interop-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();

    let alice = GpgHome::new(&root, "alice");
    let afpr = alice.gen(
        "Alice <alice@x.test>",
        "ed25519",
        Some(("cv25519", "never")),
        None,
    );
    let alice_tsk = alice.export_secret(&afpr);
    let alice_pub = alice.export(&afpr);

    let bob = GpgHome::new(&root, "bob");
    let bfpr = bob.gen(
        "Bob <bob@x.test>",
        "ed25519",
        Some(("cv25519", "never")),
        None,
    );

    let carol = GpgHome::new(&root, "carol");
    let cfpr = carol.gen(
        "Carol <carol@x.test>",
        "rsa3072",
        Some(("rsa3072", "never")),
        None,
    );
    let carol_tsk = carol.export_secret(&cfpr);
    let carol_pub = carol.export(&cfpr);

    let misc = GpgHome::new(&root, "misc");
    let nfpr = misc.gen("NoEnc <noenc@x.test>", "ed25519", None, None);
    let efpr = misc.gen(
        "Expired <expired@x.test>",
        "ed25519",
        Some(("cv25519", "1d")),
        Some("20200101T000000!"),
    );

    // Sequoia-made recipients.
    let (dave_tsk, _) = CertBuilder::general_purpose(Some("Dave <dave@x.test>"))
        .set_profile(pgp::Profile::RFC4880)
        .unwrap()
        .set_features(Features::empty().set_seipdv1())
        .unwrap()
        .generate()
        .unwrap();
    let dave = GpgHome::new(&root, "dave");
    dave.import(&dave_tsk.as_tsk().to_vec().unwrap());

    let (erin_tsk, _) = CertBuilder::new()
        .set_profile(pgp::Profile::RFC4880)
        .unwrap()
        .add_userid_with(
            "Erin <erin@x.test>",
            SignatureBuilder::new(SignatureType::PositiveCertification)
                .set_preferred_aead_ciphersuites(vec![
                    (SymmetricAlgorithm::AES256, AEADAlgorithm::OCB),
                    (SymmetricAlgorithm::AES256, AEADAlgorithm::GCM),
                ])
                .unwrap(),
        )
        .unwrap()
        .add_signing_subkey()
        .add_transport_encryption_subkey()
        .generate()
        .unwrap();
    assert!(erin_tsk
        .with_policy(&StandardPolicy::new(), None)
        .unwrap()
        .features()
        .unwrap()
        .supports_seipdv2());

    let (rev, _) = CertBuilder::general_purpose(Some("Rev <rev@x.test>"))
        .set_features(Features::empty().set_seipdv1())
        .unwrap()
        .generate()
        .unwrap();
    let revoked_encryption_subkey = {
        let p = StandardPolicy::new();
        let mut signer = rev
            .primary_key()
            .key()
            .clone()
            .parts_into_secret()
            .unwrap()
            .into_keypair()
            .unwrap();
        let vc = rev.with_policy(&p, None).unwrap();
        let sub = vc
            .keys()
            .subkeys()
            .for_transport_encryption()
            .next()
            .unwrap();
        let sig = SubkeyRevocationBuilder::new()
            .set_reason_for_revocation(ReasonForRevocation::KeyCompromised, b"test")
            .unwrap()
            .build(&mut signer, &rev, sub.key(), None)
            .unwrap();
        rev.clone()
            .insert_packets(Some(Packet::from(sig)))
            .unwrap()
            .0
    };

    // Everyone who verifies needs the signers' certificates.
    for home in [&bob, &carol, &dave] {
        home.import(&alice_pub);
        home.import(&carol_pub);
    }
    alice.import(&carol_pub);

    let parse = |b: &[u8]| Cert::from_bytes(b).unwrap();
    Fixture {
        alice_cert: parse(&alice_pub),
        bob_cert: parse(&bob.export(&bfpr)),
        carol_cert: parse(&carol_pub),
        no_encryption_subkey: parse(&misc.export(&nfpr)),
        expired_encryption_subkey: parse(&misc.export(&efpr)),
        root,
        alice,
        alice_tsk,
        bob,
        carol,
        carol_tsk,
        dave,
        dave_tsk,
        erin_tsk,
        revoked_encryption_subkey,
    }
}

fn now() -> SystemTime {
    SystemTime::now()
}

fn alice_key() -> SigningKey {
    SigningKey::from_bytes(&fixture().alice_tsk, now()).unwrap()
}

fn carol_key() -> SigningKey {
    SigningKey::from_bytes(&fixture().carol_tsk, now()).unwrap()
}

fn bob() -> Recipient {
    Recipient::new(fixture().bob_cert.clone(), "bob@x.test")
}
fn carol() -> Recipient {
    Recipient::new(fixture().carol_cert.clone(), "carol@x.test")
}
fn dave() -> Recipient {
    Recipient::new(fixture().dave_tsk.clone(), "dave@x.test")
}
fn erin() -> Recipient {
    Recipient::new(fixture().erin_tsk.clone(), "erin@x.test")
}

// ------------------------------------------------------ a tiny MIME reader
// (independent of the code under test)

/// Splits a message at the first empty line.
fn split_head(msg: &[u8]) -> (String, &[u8]) {
    let i = msg
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header/body separator");
    (
        String::from_utf8(msg[..i + 2].to_vec()).unwrap(),
        &msg[i + 4..],
    )
}

fn boundary_of(head: &str) -> String {
    let i = head.find("boundary=\"").expect("boundary parameter") + 10;
    let j = head[i..].find('"').unwrap();
    head[i..i + j].to_string()
}

/// The body parts of a multipart body, exactly (the CRLF before each
/// delimiter excluded).
fn parts<'a>(body: &'a [u8], boundary: &str) -> Vec<&'a [u8]> {
    let delim = format!("\r\n--{boundary}");
    let mut text = Vec::with_capacity(body.len() + 2);
    text.extend_from_slice(b"\r\n");
    text.extend_from_slice(body);
    let mut cuts = Vec::new();
    let mut pos = 0;
    while let Some(i) = text[pos..]
        .windows(delim.len())
        .position(|w| w == delim.as_bytes())
    {
        cuts.push(pos + i);
        pos += i + delim.len();
    }
    let mut out = Vec::new();
    for w in cuts.windows(2) {
        let start = w[0] + delim.len();
        let line_end = start + text[start..].windows(2).position(|x| x == b"\r\n").unwrap() + 2;
        // Map back into `body` (offset by the 2 bytes we prepended).
        out.push(&body[line_end - 2..w[1] - 2]);
    }
    let last = *cuts.last().unwrap() + delim.len();
    assert!(text[last..].starts_with(b"--"), "closing delimiter");
    out
}

/// For a multipart/encrypted message: (outer head, armored data).
fn encrypted_payload(msg: &[u8]) -> (String, Vec<u8>) {
    let (head, body) = split_head(msg);
    assert!(
        head.contains("Content-Type: multipart/encrypted;"),
        "{head}"
    );
    assert!(
        head.contains("protocol=\"application/pgp-encrypted\""),
        "{head}"
    );
    let b = boundary_of(&head);
    let ps = parts(body, &b);
    assert_eq!(ps.len(), 2);
    let (v_head, v_body) = split_head(ps[0]);
    assert!(v_head.contains("Content-Type: application/pgp-encrypted"));
    assert_eq!(v_body, b"Version: 1\r\n");
    let (d_head, d_body) = split_head(ps[1]);
    assert!(d_head.contains("Content-Type: application/octet-stream"));
    assert!(d_body.starts_with(b"-----BEGIN PGP MESSAGE-----\r\n"));
    assert!(d_body.ends_with(b"-----END PGP MESSAGE-----\r\n"));
    (head, d_body.to_vec())
}

/// Every line ends in CRLF; 7-bit; at most 998 octets.
fn assert_wire_safe(msg: &[u8]) {
    for (n, line) in msg.split(|&b| b == b'\n').enumerate() {
        if n + 1 < msg.split(|&b| b == b'\n').count() {
            assert!(line.ends_with(b"\r"), "line {n} lacks CR");
        }
        assert!(line.len() <= 999, "line {n} too long");
        assert!(line.iter().all(|&b| b < 0x80), "line {n} not 7-bit");
    }
}

// ------------------------------------------------ running the other tools

struct Gpg {
    out: Vec<u8>,
    status: String,
    ok: bool,
}

fn tmpfile(data: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new_in(&fixture().root).unwrap();
    use std::io::Write;
    f.write_all(data).unwrap();
    f.flush().unwrap();
    f
}

fn gpg_decrypt(home: &GpgHome, armored: &[u8]) -> Gpg {
    let input = tmpfile(armored);
    let status = tempfile::NamedTempFile::new_in(&fixture().root).unwrap();
    let output = fixture().root.join(format!("dec-{}", rand_name()));
    let o = home.gpg(
        &[
            "--status-file",
            status.path().to_str().unwrap(),
            "-o",
            output.to_str().unwrap(),
            "--decrypt",
            input.path().to_str().unwrap(),
        ],
        None,
    );
    let out = std::fs::read(&output).unwrap_or_default();
    let _ = std::fs::remove_file(&output);
    Gpg {
        out,
        status: String::from_utf8_lossy(&std::fs::read(status.path()).unwrap()).into_owned(),
        ok: o.status.success(),
    }
}

fn gpg_verify(home: &GpgHome, sig: &[u8], data: &[u8]) -> Gpg {
    let s = tmpfile(sig);
    let d = tmpfile(data);
    let status = tempfile::NamedTempFile::new_in(&fixture().root).unwrap();
    let o = home.gpg(
        &[
            "--status-file",
            status.path().to_str().unwrap(),
            "--verify",
            s.path().to_str().unwrap(),
            d.path().to_str().unwrap(),
        ],
        None,
    );
    Gpg {
        out: Vec::new(),
        status: String::from_utf8_lossy(&std::fs::read(status.path()).unwrap()).into_owned(),
        ok: o.status.success(),
    }
}

fn rand_name() -> String {
    let mut b = [0u8; 8];
    pgp::crypto::random(&mut b[..]).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Asserts gpg decrypted with integrity protection and a good signature by
/// the key with primary fingerprint `signer_fpr`.
fn assert_gpg_good(r: &Gpg, signer: Option<&Cert>) {
    assert!(r.ok, "gpg failed:\n{}", r.status);
    assert!(
        r.status.contains("[GNUPG:] DECRYPTION_OKAY"),
        "{}",
        r.status
    );
    assert!(r.status.contains("[GNUPG:] GOODMDC"), "{}", r.status);
    assert!(!r.status.contains("DECRYPTION_FAILED"), "{}", r.status);
    assert_good_sig(&r.status, signer);
}

fn assert_good_sig(status: &str, signer: Option<&Cert>) {
    match signer {
        Some(cert) => {
            assert!(status.contains("[GNUPG:] GOODSIG"), "{status}");
            let fpr = cert.fingerprint().to_hex();
            let validsig = status
                .lines()
                .find(|l| l.starts_with("[GNUPG:] VALIDSIG"))
                .unwrap_or_else(|| panic!("no VALIDSIG: {status}"));
            // The last field is the primary key's fingerprint.
            assert!(validsig.ends_with(&fpr), "{validsig} vs {fpr}");
            assert!(!status.contains("BADSIG"), "{status}");
        }
        None => assert!(!status.contains("SIG "), "{status}"),
    }
}

fn sq(args: &[&str]) -> Output {
    Command::new("sq")
        .args(args)
        .output()
        .expect("sq must be installed (apt-get install sq)")
}

/// `sq decrypt` with `key` (a TSK), verifying with `signer` if given.
fn sq_decrypt(key: &[u8], signer: Option<&Cert>, armored: &[u8]) -> (bool, Vec<u8>, String) {
    let k = tmpfile(key);
    let input = tmpfile(armored);
    let s = signer.map(|c| tmpfile(&c.armored().to_vec().unwrap()));
    let mut args = vec!["decrypt", "--recipient-key", k.path().to_str().unwrap()];
    if let Some(s) = &s {
        args.extend(["--signer-cert", s.path().to_str().unwrap()]);
    }
    args.push(input.path().to_str().unwrap());
    let o = sq(&args);
    (
        o.status.success(),
        o.stdout,
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Decrypts with sequoia itself (the version we link), verifying against
/// `signer`. Returns (plaintext, good signature seen).
fn sequoia_decrypt(tsk: &Cert, signer: &Cert, armored: &[u8]) -> (Vec<u8>, bool) {
    struct H<'a> {
        tsk: &'a Cert,
        signer: &'a Cert,
        good: bool,
    }
    impl VerificationHelper for H<'_> {
        fn get_certs(&mut self, _ids: &[KeyHandle]) -> pgp::Result<Vec<Cert>> {
            Ok(vec![self.signer.clone()])
        }
        fn check(&mut self, structure: MessageStructure) -> pgp::Result<()> {
            for layer in structure {
                if let MessageLayer::SignatureGroup { results } = layer {
                    self.good |= results.iter().any(|r| r.is_ok());
                }
            }
            Ok(())
        }
    }
    impl DecryptionHelper for H<'_> {
        fn decrypt(
            &mut self,
            pkesks: &[PKESK],
            _skesks: &[SKESK],
            sym: Option<SymmetricAlgorithm>,
            decrypt: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool,
        ) -> pgp::Result<Option<Cert>> {
            let p = StandardPolicy::new();
            for ka in self
                .tsk
                .keys()
                .with_policy(&p, None)
                .for_transport_encryption()
                .secret()
            {
                let mut kp = ka.key().clone().into_keypair()?;
                for pkesk in pkesks {
                    if let Some((algo, sk)) = pkesk.decrypt(&mut kp, sym) {
                        if decrypt(algo, &sk) {
                            return Ok(None);
                        }
                    }
                }
            }
            Err(pgp::Error::InvalidOperation("no key".into()).into())
        }
    }
    let p = StandardPolicy::new();
    let h = H {
        tsk,
        signer,
        good: false,
    };
    let mut d = DecryptorBuilder::from_bytes(armored)
        .unwrap()
        .with_policy(&p, None, h)
        .unwrap();
    let mut out = Vec::new();
    std::io::copy(&mut d, &mut out).unwrap();
    let good = d.into_helper().good;
    (out, good)
}

/// (SEIP version, number of PKESKs) of an armored message.
fn packet_summary(armored: &[u8]) -> (u8, usize) {
    let mut ppr = PacketParser::from_bytes(armored).unwrap();
    let mut pkesks = 0;
    let mut seip = 0;
    while let PacketParserResult::Some(pp) = ppr {
        match &pp.packet {
            Packet::PKESK(_) => pkesks += 1,
            Packet::SEIP(s) => seip = s.version(),
            p if p.tag() == pgp::packet::Tag::SED => panic!("unprotected SED packet"),
            _ => {}
        }
        // Do not descend into the encrypted container.
        ppr = pp.next().unwrap().1;
    }
    (seip, pkesks)
}

// -------------------------------------------------------------- contents
//
// A message is OUTER's fields followed by one of the entities below (its
// Content-* fields and body): see `message`.

const OUTER: &[u8] = b"From: Alice <alice@x.test>\r\n\
To: Bob <bob@x.test>\r\n\
Bcc: Secret Person <secret@hidden.test>\r\n\
Subject: Quarterly numbers\r\n\
Date: Mon, 02 Nov 2026 10:00:00 +0000\r\n\
Message-ID: <1@x.test>\r\n";

const SIMPLE: &[u8] = b"Content-Type: text/plain; charset=us-ascii\r\n\
\r\n\
Hello Bob,\r\n\
\r\n\
the numbers are fine.\r\n";

fn eight_bit_qp() -> Vec<u8> {
    b"Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
Gr=C3=BC=C3=9Fe aus K=C3=B6ln, =E2=82=AC 10 =\r\n\
continued soft line\r\n"
        .to_vec()
}

fn long_line_qp() -> Vec<u8> {
    let mut v = b"Content-Type: text/plain; charset=us-ascii\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        .to_vec();
    // A 10,000-character line, QP soft-broken at 76.
    let line: Vec<u8> = (0..10_000).map(|i| b'a' + (i % 26) as u8).collect();
    for chunk in line.chunks(75) {
        v.extend_from_slice(chunk);
        v.extend_from_slice(b"=\r\n");
    }
    v.extend_from_slice(b"\r\n");
    v
}

fn raw_long_line() -> Vec<u8> {
    let mut v = b"Content-Type: text/plain\r\n\r\n".to_vec();
    v.extend(std::iter::repeat_n(b'x', 5000));
    v.extend_from_slice(b"\r\n");
    v
}

fn base64_lines(data: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let b = base64::engine::general_purpose::STANDARD.encode(data);
    let mut v = Vec::new();
    for c in b.as_bytes().chunks(76) {
        v.extend_from_slice(c);
        v.extend_from_slice(b"\r\n");
    }
    v
}

fn attachment() -> Vec<u8> {
    let mut bin = vec![0u8; 100_000];
    pgp::crypto::random(&mut bin[..]).unwrap();
    let mut v = b"Content-Type: multipart/mixed; boundary=\"outer-b\"\r\n\r\n\
--outer-b\r\n\
Content-Type: text/plain; charset=us-ascii\r\n\r\n\
See attachment.\r\n\
--outer-b\r\n\
Content-Type: application/octet-stream; name=\"data.bin\"\r\n\
Content-Disposition: attachment; filename=\"data.bin\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\n"
        .to_vec();
    v.extend(base64_lines(&bin));
    v.extend_from_slice(b"--outer-b--\r\n");
    v
}

fn nested() -> Vec<u8> {
    let mut v = b"Content-Type: multipart/mixed; boundary=\"m1\"\r\n\r\n\
preamble\r\n\
--m1\r\n\
Content-Type: multipart/alternative; boundary=\"m2\"\r\n\r\n\
--m2\r\n\
Content-Type: text/plain; charset=us-ascii\r\n\r\n\
plain\r\n\
--m2\r\n\
Content-Type: multipart/related; boundary=\"m3\"\r\n\r\n\
--m3\r\n\
Content-Type: text/html; charset=us-ascii\r\n\r\n\
<p>html <img src=\"cid:i1\"></p>\r\n\
--m3\r\n\
Content-Type: image/png\r\n\
Content-ID: <i1>\r\n\
Content-Transfer-Encoding: base64\r\n\r\n"
        .to_vec();
    v.extend(base64_lines(b"\x89PNG\r\n\x1a\nnot really a png"));
    v.extend_from_slice(
        b"--m3--\r\n\
--m2--\r\n\
--m1\r\n\
Content-Type: message/rfc822\r\n\r\n\
From: x@y.test\r\n\
Subject: forwarded\r\n\r\n\
inner mail\r\n\
--m1--\r\n\
epilogue\r\n",
    );
    v
}

/// A message with raw UTF-8 (RFC 6532) and an encoded word in its Subject.
fn utf8_subject() -> Vec<u8> {
    "From: Alice <alice@x.test>\r\n\
To: Bob <bob@x.test>\r\n\
Bcc: secret@hidden.test\r\n\
Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= und Grüße\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
Gr=C3=BC=C3=9Fe\r\n"
        .as_bytes()
        .to_vec()
}

/// The whole message: OUTER's fields, then `entity`.
fn message(entity: &[u8]) -> Vec<u8> {
    [OUTER, entity].concat()
}

/// What the recipient must get: the inner entity `mime::prepare` makes of
/// `message` when encrypting (or only signing), byte for byte.
fn expected(message: &[u8], encrypting: bool, hide_subject: bool) -> Vec<u8> {
    let opts = PrepareOptions::for_sealing(encrypting, hide_subject, Limits::default());
    let prepared = mime::prepare(message, &opts).unwrap();
    assert_eq!(prepared.protection, Protection::None);
    prepared.inner
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Header protection as `mime` makes it for both formats (RFC 9788), and
/// never a Bcc.
fn assert_protected_inner(inner: &[u8], encrypting: bool) {
    let (head, _) = split_head(inner);
    assert!(head.contains("From: Alice <alice@x.test>\r\n"), "{head}");
    if encrypting {
        assert!(head.contains("; hp=\"cipher\""), "{head}");
        assert!(head.contains("HP-Outer: From: Alice <alice@x.test>\r\n"));
    } else {
        assert!(head.contains("; hp=\"clear\""), "{head}");
        assert!(!head.contains("HP-Outer"), "{head}");
    }
    assert!(!head.to_ascii_lowercase().contains("bcc"), "{head}");
    assert!(!contains(inner, b"secret@hidden.test"));
}

// ------------------------------------------------------------------ tests

/// Signs `entity` as Alice inside the encryption to Bob, opens it with gpg
/// and sq: both give back exactly what `mime::prepare` made of it.
fn roundtrip_bob(entity: &[u8]) {
    let f = fixture();
    let msg = message(entity);
    let inner = expected(&msg, true, false);
    assert_protected_inner(&inner, true);
    let sealed = sign_and_encrypt(&msg, &alice_key(), &[bob()], &PgpOptions::default()).unwrap();
    assert_wire_safe(&sealed);
    let (_, armored) = encrypted_payload(&sealed);
    let r = gpg_decrypt(&f.bob, &armored);
    assert_gpg_good(&r, Some(&f.alice_cert));
    assert!(
        r.status.contains("[GNUPG:] DECRYPTION_INFO 2 9"),
        "AES-256: {}",
        r.status
    );
    assert!(
        r.out == inner,
        "gpg: decrypted entity differs from mime::prepare's"
    );

    let bob_tsk = f.bob.export_secret(&f.bob_cert.fingerprint().to_hex());
    let (ok, out, err) = sq_decrypt(&bob_tsk, Some(&f.alice_cert), &armored);
    assert!(ok, "sq: {err}");
    assert!(
        out == inner,
        "sq: decrypted entity differs from mime::prepare's"
    );
}

#[test]
fn simple_text_gpg_and_sq() {
    roundtrip_bob(SIMPLE);
    // A 7-bit entity keeps its body as it was.
    assert!(expected(&message(SIMPLE), true, false).ends_with(split_head(SIMPLE).1));
}

#[test]
fn eight_bit_payload_quoted_printable() {
    roundtrip_bob(&eight_bit_qp());
}

#[test]
fn long_lines() {
    roundtrip_bob(&long_line_qp());
    // An unencoded long line is quoted-printable encoded by mime::prepare.
    roundtrip_bob(&raw_long_line());
}

#[test]
fn attachment_roundtrip() {
    roundtrip_bob(&attachment());
}

#[test]
fn nested_multiparts() {
    roundtrip_bob(&nested());
}

#[test]
fn outer_headers_bcc_dropped_and_kept_fields() {
    let msg = sign_and_encrypt(
        &message(SIMPLE),
        &alice_key(),
        &[bob()],
        &PgpOptions::default(),
    )
    .unwrap();
    let (head, _) = split_head(&msg);
    assert!(!head.to_ascii_lowercase().contains("bcc"), "{head}");
    assert!(!String::from_utf8_lossy(&msg).contains("secret@hidden.test"));
    assert!(head.contains("Subject: Quarterly numbers\r\n"));
    assert!(head.contains("From: Alice <alice@x.test>\r\n"));
    assert!(head.contains("Message-ID: <1@x.test>\r\n"));
    assert!(head.contains("MIME-Version: 1.0\r\n"));
    assert!(!head.contains("Autocrypt"));
}

#[test]
fn header_protection_utf8_and_hidden_subject() {
    let f = fixture();
    let msg = utf8_subject();
    let inner = expected(&msg, true, true);
    assert_protected_inner(&inner, true);
    let inner_head = split_head(&inner).0;
    assert!(inner_head.contains("Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= und Grüße\r\n"));
    assert!(inner_head.contains(&format!("HP-Outer: Subject: {HIDDEN_SUBJECT}\r\n")));
    let opts = PgpOptions {
        hide_subject: true,
        ..Default::default()
    };
    let sealed = sign_and_encrypt(&msg, &alice_key(), &[bob()], &opts).unwrap();
    let (head, armored) = encrypted_payload(&sealed);
    assert!(
        head.contains(&format!("Subject: {HIDDEN_SUBJECT}\r\n")),
        "{head}"
    );
    assert!(!head.contains("Gr"), "{head}");
    let r = gpg_decrypt(&f.bob, &armored);
    assert_gpg_good(&r, Some(&f.alice_cert));
    assert!(r.out == inner, "{}", String::from_utf8_lossy(&r.out));
}

#[test]
fn rsa_recipient_and_rsa_signer() {
    let f = fixture();
    let msg = message(SIMPLE);
    let inner = expected(&msg, true, false);
    let sealed = sign_and_encrypt(&msg, &carol_key(), &[carol()], &PgpOptions::default()).unwrap();
    let (_, armored) = encrypted_payload(&sealed);
    let r = gpg_decrypt(&f.carol, &armored);
    assert_gpg_good(&r, Some(&f.carol_cert));
    assert_eq!(r.out, inner);
    let carol_tsk = &f.carol_tsk;
    let (ok, out, err) = sq_decrypt(carol_tsk, Some(&f.carol_cert), &armored);
    assert!(ok, "sq: {err}");
    assert_eq!(out, inner);
}

#[test]
fn three_recipients_each_can_decrypt() {
    let f = fixture();
    let msg = message(&nested());
    let inner = expected(&msg, true, false);
    let sealed = sign_and_encrypt(
        &msg,
        &alice_key(),
        &[bob(), carol(), dave()],
        &PgpOptions::default(),
    )
    .unwrap();
    let (_, armored) = encrypted_payload(&sealed);
    assert_eq!(packet_summary(&armored), (1, 3));
    for home in [&f.bob, &f.carol, &f.dave] {
        let r = gpg_decrypt(home, &armored);
        assert_gpg_good(&r, Some(&f.alice_cert));
        assert!(r.out == inner);
    }
    // sq with the sequoia-made key.
    let (ok, out, err) = sq_decrypt(
        &f.dave_tsk.as_tsk().to_vec().unwrap(),
        Some(&f.alice_cert),
        &armored,
    );
    assert!(ok, "{err}");
    assert!(out == inner);
}

#[test]
fn encrypt_to_self_adds_the_sender() {
    let f = fixture();
    let msg = message(SIMPLE);
    let inner = expected(&msg, true, false);
    let opts = PgpOptions {
        encrypt_to_self: true,
        ..Default::default()
    };
    let sealed = sign_and_encrypt(&msg, &alice_key(), &[bob()], &opts).unwrap();
    let (_, armored) = encrypted_payload(&sealed);
    assert_eq!(packet_summary(&armored), (1, 2));
    let r = gpg_decrypt(&f.alice, &armored);
    assert_gpg_good(&r, Some(&f.alice_cert));
    assert_eq!(r.out, inner);
    // And without it the sender cannot read it.
    let sealed = sign_and_encrypt(&msg, &alice_key(), &[bob()], &PgpOptions::default()).unwrap();
    let (_, armored) = encrypted_payload(&sealed);
    assert_eq!(packet_summary(&armored), (1, 1));
    assert!(!gpg_decrypt(&f.alice, &armored).ok);

    let err = encrypt(&msg, &[bob()], &opts).unwrap_err();
    assert!(matches!(err, PgpError::EncryptToSelfWithoutSender));
}

#[test]
fn unsigned_encryption() {
    let f = fixture();
    let msg = message(SIMPLE);
    let sealed = encrypt(&msg, &[bob()], &PgpOptions::default()).unwrap();
    let (_, armored) = encrypted_payload(&sealed);
    let r = gpg_decrypt(&f.bob, &armored);
    assert_gpg_good(&r, None);
    assert_eq!(r.out, expected(&msg, true, false));
}

#[test]
fn seipd_v2_only_when_all_recipients_advertise_it() {
    let f = fixture();
    let msg = message(SIMPLE);
    let inner = expected(&msg, true, false);
    // Erin alone: v2 (AES-256 with an AEAD mode she lists).
    let sealed = sign_and_encrypt(&msg, &alice_key(), &[erin()], &PgpOptions::default()).unwrap();
    let (_, armored) = encrypted_payload(&sealed);
    assert_eq!(packet_summary(&armored), (2, 1));
    let (out, good) = sequoia_decrypt(&f.erin_tsk, &f.alice_cert, &armored);
    assert!(good, "signature inside SEIPDv2");
    assert_eq!(out, inner);

    // Erin and Bob (gpg, v1 only): v1, and gpg reads it.
    let sealed =
        sign_and_encrypt(&msg, &alice_key(), &[erin(), bob()], &PgpOptions::default()).unwrap();
    let (_, armored) = encrypted_payload(&sealed);
    assert_eq!(packet_summary(&armored), (1, 2));
    let r = gpg_decrypt(&f.bob, &armored);
    assert_gpg_good(&r, Some(&f.alice_cert));
    assert_eq!(r.out, inner);
    let (out, good) = sequoia_decrypt(&f.erin_tsk, &f.alice_cert, &armored);
    assert!(good);
    assert_eq!(out, inner);

    // Sequoia's SEIPDv1-only key: v1.
    let sealed = encrypt(&msg, &[dave()], &PgpOptions::default()).unwrap();
    assert_eq!(packet_summary(&encrypted_payload(&sealed).1), (1, 1));
}

#[test]
fn recipient_without_encryption_subkey_is_refused() {
    let f = fixture();
    let noenc = Recipient::new(f.no_encryption_subkey.clone(), "noenc@x.test");
    let mut out = Vec::new();
    let err = encrypt_to(
        &mut out,
        &message(SIMPLE),
        Some(&alice_key()),
        &[bob(), noenc],
        &PgpOptions::default(),
    )
    .unwrap_err();
    match &err {
        PgpError::NoUsableEncryptionKey {
            address, reason, ..
        } => {
            assert_eq!(address, "noenc@x.test");
            assert!(reason.contains("no transport-encryption"), "{reason}");
        }
        e => panic!("unexpected {e:?}"),
    }
    assert!(err.to_string().contains("noenc@x.test"));
    assert!(out.is_empty(), "nothing written on refusal");
}

#[test]
fn recipient_with_expired_encryption_subkey_is_refused() {
    let f = fixture();
    let r = Recipient::new(f.expired_encryption_subkey.clone(), "expired@x.test");
    assert!(r.check(now()).is_err(), "RCPT-time check agrees");
    // On the day it was made (2020-01-01), the subkey was usable.
    let in_2020 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_577_880_000);
    r.check(in_2020).unwrap();
    let err = encrypt(&message(SIMPLE), &[r], &PgpOptions::default()).unwrap_err();
    match &err {
        PgpError::NoUsableEncryptionKey {
            address, reason, ..
        } => {
            assert_eq!(address, "expired@x.test");
            assert!(reason.contains("expired"), "{reason}");
        }
        e => panic!("unexpected {e:?}"),
    }
}

#[test]
fn recipient_with_revoked_encryption_subkey_is_refused() {
    let f = fixture();
    let r = Recipient::new(f.revoked_encryption_subkey.clone(), "rev@x.test");
    let err = encrypt(&message(SIMPLE), &[r], &PgpOptions::default()).unwrap_err();
    match &err {
        PgpError::NoUsableEncryptionKey { reason, .. } => {
            assert!(reason.contains("revoked"), "{reason}")
        }
        e => panic!("unexpected {e:?}"),
    }
}

#[test]
fn key_checked_at_the_time_of_sending() {
    // Bob's key did not exist in 2000.
    let then = PgpOptions {
        now: SystemTime::UNIX_EPOCH + Duration::from_secs(946_684_800),
        ..Default::default()
    };
    let err = encrypt(&message(SIMPLE), &[bob()], &then).unwrap_err();
    assert!(
        matches!(err, PgpError::NoUsableEncryptionKey { .. }),
        "{err:?}"
    );
}

#[test]
fn wrong_address_refused_unless_pinned() {
    let f = fixture();
    let msg = message(SIMPLE);
    let opts = PgpOptions::default();
    let wrong = Recipient::new(f.bob_cert.clone(), "mallory@x.test");
    let err = encrypt(&msg, &[wrong], &opts).unwrap_err();
    assert!(matches!(err, PgpError::AddressMismatch { .. }), "{err:?}");
    let pinned = Recipient::pinned(f.bob_cert.clone(), "list@x.test");
    encrypt(&msg, &[pinned], &opts).unwrap();
    // Case-insensitive match.
    let upper = Recipient::new(f.bob_cert.clone(), "BOB@X.TEST");
    encrypt(&msg, &[upper], &opts).unwrap();
}

#[test]
fn no_recipients_refused() {
    let err = encrypt(&message(SIMPLE), &[], &PgpOptions::default()).unwrap_err();
    assert!(matches!(err, PgpError::NoRecipients));
}

#[test]
fn signing_key_checks() {
    let f = fixture();
    // A public certificate is not a signing key.
    let public = f.alice_cert.armored().to_vec().unwrap();
    assert!(matches!(
        SigningKey::from_bytes(&public, now()),
        Err(PgpError::UnusableSigningKey { .. })
    ));
    assert!(SigningKey::from_bytes(b"garbage", now()).is_err());
    // Debug never shows key material.
    let dbg = format!("{:?}", alice_key());
    assert!(dbg.contains(&f.alice_cert.fingerprint().to_hex()));
    assert!(dbg.len() < 120, "{dbg}");
}

#[test]
fn already_protected_input_refused_unless_forced() {
    let f = fixture();
    let opts = PgpOptions::default();
    // A whole PGP/MIME message as the input.
    let first = encrypt(&message(SIMPLE), &[bob()], &opts).unwrap();
    let err = encrypt(&first, &[bob()], &opts).unwrap_err();
    assert!(
        matches!(
            err,
            PgpError::AlreadyProtected(Protection::PgpMimeEncrypted)
        ),
        "{err:?}"
    );
    let err = sign(&first, &alice_key(), &opts).unwrap_err();
    assert!(matches!(err, PgpError::AlreadyProtected(_)), "{err:?}");

    // Inline armor is detected too.
    let armored = encrypted_payload(&first).1;
    let inline = message(&[b"Content-Type: text/plain\r\n\r\n".as_slice(), &armored].concat());
    let err = encrypt(&inline, &[bob()], &opts).unwrap_err();
    assert!(
        matches!(
            err,
            PgpError::AlreadyProtected(Protection::InlinePgpEncrypted)
        ),
        "{err:?}"
    );

    // And S/MIME, through the same detection as the S/MIME side.
    let smime = message(
        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n\
Content-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHA6CAMIACAQAx\r\n",
    );
    let err = sign(&smime, &alice_key(), &opts).unwrap_err();
    assert!(
        matches!(err, PgpError::AlreadyProtected(Protection::SmimeEncrypted)),
        "{err:?}"
    );

    // Forced: wrapped, never opened; gpg returns the wrapped bytes intact.
    let force = PgpOptions {
        force: true,
        ..Default::default()
    };
    let sealed = sign_and_encrypt(&first, &alice_key(), &[bob()], &force).unwrap();
    let r = gpg_decrypt(&f.bob, &encrypted_payload(&sealed).1);
    assert_gpg_good(&r, Some(&f.alice_cert));
    let wrapped = mime::prepare(
        &first,
        &PrepareOptions::for_sealing(true, false, Limits::default()),
    )
    .unwrap();
    assert_eq!(wrapped.protection, Protection::PgpMimeEncrypted);
    assert!(r.out == wrapped.inner);
    assert!(
        contains(&r.out, &armored),
        "the wrapped ciphertext is intact"
    );
}

#[test]
fn non_canonical_input_is_canonicalised() {
    let f = fixture();
    // Bare LF line ends, 8-bit text without a transfer encoding, a long line.
    let mut msg = "From: Alice <alice@x.test>\nTo: bob@x.test\nSubject: lf\n\
Content-Type: text/plain; charset=utf-8\n\nGrüße\nbare LF\n"
        .as_bytes()
        .to_vec();
    msg.extend(std::iter::repeat_n(b'x', 2000));
    msg.push(b'\n');
    // Signed-only: the signed part is 7-bit CRLF text that survives MTAs.
    let signed = signed_roundtrip(&msg, &alice_key(), &f.alice_cert).0;
    assert!(signed.is_ascii());
    assert!(split_head(&signed)
        .0
        .contains("Content-Transfer-Encoding: quoted-printable\r\n"));
    // Encrypted: the same canonical entity, with cipher header protection.
    let inner = expected(&msg, true, false);
    let sealed = sign_and_encrypt(&msg, &alice_key(), &[bob()], &PgpOptions::default()).unwrap();
    assert_wire_safe(&sealed);
    let r = gpg_decrypt(&f.bob, &encrypted_payload(&sealed).1);
    assert_gpg_good(&r, Some(&f.alice_cert));
    assert!(r.out == inner);
}

/// Signs `msg`, checks the structure, verifies with gpg and sq; returns
/// (signed part, signature) for further checks. The signed part must be
/// what `mime::prepare` made of `msg`.
fn signed_roundtrip(msg: &[u8], key: &SigningKey, cert: &Cert) -> (Vec<u8>, Vec<u8>) {
    let f = fixture();
    let inner = expected(msg, false, false);
    assert_protected_inner(&inner, false);
    let sealed = sign(msg, key, &PgpOptions::default()).unwrap();
    if msg.is_ascii() {
        assert_wire_safe(&sealed);
    }
    let (head, body) = split_head(&sealed);
    assert!(
        head.contains("Content-Type: multipart/signed; micalg=pgp-sha256;"),
        "{head}"
    );
    assert!(head.contains("protocol=\"application/pgp-signature\""));
    assert!(!head.to_ascii_lowercase().contains("bcc:"));
    let ps = parts(body, &boundary_of(&head));
    assert_eq!(ps.len(), 2);
    assert!(
        ps[0] == inner,
        "signed part must be mime::prepare's inner entity exactly"
    );
    let (sig_head, sig) = split_head(ps[1]);
    assert!(sig_head.contains("Content-Type: application/pgp-signature"));
    assert!(sig.starts_with(b"-----BEGIN PGP SIGNATURE-----\r\n"));

    let r = gpg_verify(&f.bob, sig, ps[0]);
    assert!(r.ok, "{}", r.status);
    assert_good_sig(&r.status, Some(cert));

    let s = tmpfile(sig);
    let d = tmpfile(ps[0]);
    let c = tmpfile(&cert.armored().to_vec().unwrap());
    let o = sq(&[
        "verify",
        "--detached",
        s.path().to_str().unwrap(),
        "--signer-cert",
        c.path().to_str().unwrap(),
        d.path().to_str().unwrap(),
    ]);
    assert!(
        o.status.success(),
        "sq verify: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    (ps[0].to_vec(), sig.to_vec())
}

#[test]
fn signed_only_verified_by_gpg_and_sq() {
    let f = fixture();
    for entity in [
        SIMPLE.to_vec(),
        eight_bit_qp(),
        long_line_qp(),
        raw_long_line(),
        attachment(),
        nested(),
    ] {
        signed_roundtrip(&message(&entity), &alice_key(), &f.alice_cert);
    }
    // Raw UTF-8 in a header field is kept as is (RFC 6532), as for S/MIME.
    let (signed, _) = signed_roundtrip(&utf8_subject(), &alice_key(), &f.alice_cert);
    assert!(split_head(&signed)
        .0
        .contains("Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= und Grüße\r\n"));
}

#[test]
fn signed_only_rsa_signer() {
    let f = fixture();
    signed_roundtrip(&message(SIMPLE), &carol_key(), &f.carol_cert);
}

#[test]
fn tampered_signed_message_fails_verification() {
    let f = fixture();
    let (mut data, sig) = signed_roundtrip(&message(SIMPLE), &alice_key(), &f.alice_cert);
    let i = data.iter().position(|&b| b == b'f').unwrap();
    data[i] = b'F';
    let r = gpg_verify(&f.bob, &sig, &data);
    assert!(!r.ok);
    assert!(r.status.contains("BADSIG"), "{}", r.status);
}

#[test]
fn autocrypt_header_carries_the_sender_key() {
    let f = fixture();
    let msg = message(SIMPLE);
    let opts = PgpOptions {
        autocrypt: true,
        ..Default::default()
    };
    let sealed = sign_and_encrypt(&msg, &alice_key(), &[bob()], &opts).unwrap();
    assert_wire_safe(&sealed);
    let (head, _) = split_head(&sealed);
    let i = head
        .find("Autocrypt: addr=alice@x.test; keydata=\r\n")
        .expect("Autocrypt header");
    let rest = &head[i..];
    let mut b64 = String::new();
    for line in rest.split("\r\n").skip(1) {
        match line.strip_prefix(' ') {
            Some(l) => b64.push_str(l),
            None => break,
        }
    }
    use base64::Engine;
    let keydata = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let cert = Cert::from_bytes(&keydata).unwrap();
    assert_eq!(cert.fingerprint(), f.alice_cert.fingerprint());
    assert!(!cert.is_tsk(), "public key only");
    // Signed-only mail gets it too.
    let sealed = sign(&msg, &alice_key(), &opts).unwrap();
    assert!(split_head(&sealed)
        .0
        .contains("Autocrypt: addr=alice@x.test;"));
    // Off by default.
    let sealed = sign(&msg, &alice_key(), &PgpOptions::default()).unwrap();
    assert!(!split_head(&sealed).0.contains("Autocrypt"));
}

#[test]
fn fifty_megabytes() {
    let f = fixture();
    let mut msg = message(
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n",
    );
    let line = [b'Q'; 76];
    while msg.len() < 50 * 1024 * 1024 {
        msg.extend_from_slice(&line);
        msg.extend_from_slice(b"\r\n");
    }
    let sealed = sign_and_encrypt(&msg, &alice_key(), &[bob()], &PgpOptions::default()).unwrap();
    // Output is the armored message: about 4/3 of the input plus line ends.
    assert!(
        sealed.len() < msg.len() * 14 / 10 + 10_000,
        "{}",
        sealed.len()
    );
    let (_, armored) = encrypted_payload(&sealed);
    drop(sealed);
    let r = gpg_decrypt(&f.bob, &armored);
    assert_gpg_good(&r, Some(&f.alice_cert));
    let inner = expected(&msg, true, false);
    assert!(r.out == inner);
}
