//! What the demo tells its user for each message its sink receives: the exact command that
//! opens it, with the demo keys it ships (absolute paths, one line, ready to paste).

use std::path::Path;

use crate::mime::{self, ContentType};

/// The demo recipients whose private keys are shipped in keys/demo, by format.
struct Shipped {
    address: &'static str,
    smime: Option<(&'static str, &'static str)>,
    openpgp: Option<&'static str>,
}

const SHIPPED: [Shipped; 2] = [
    Shipped {
        address: "alice@example.test",
        smime: Some(("alice-smime.pem", "alice-smime.key")),
        openpgp: Some("alice-openpgp-secret.asc"),
    },
    Shipped {
        address: "alice2@example.test",
        smime: None,
        openpgp: Some("alice2-openpgp-secret-protected.asc"),
    },
];

/// What the message at `eml` is and how to open it. `envelope` is the sink's `N.envelope`
/// text; `keys` the (absolute) demo key folder.
pub fn instructions(message: &[u8], envelope: &str, eml: &Path, keys: &Path) -> String {
    let rcpts: Vec<&str> = envelope
        .lines()
        .filter_map(|l| l.strip_prefix("RCPT TO:<"))
        .filter_map(|l| l.split_once('>').map(|(a, _)| a))
        .collect();
    let ct = mime::parse_message(message, &mime::Limits::default())
        .ok()
        .and_then(|p| p.field("Content-Type").map(|f| f.value()))
        .and_then(|v| ContentType::parse(&v))
        .unwrap_or_default();
    let received = Received {
        to: rcpts.join(", "),
        rcpts,
        eml: eml.display().to_string(),
        keys,
    };
    let (to, eml) = (&received.to, &received.eml);
    if ct.is("application", "pkcs7-mime") {
        let smime_type = ct.param("smime-type").unwrap_or("").to_ascii_lowercase();
        if smime_type == "signed-data" {
            return format!(
                "S/MIME, signed (opaque), for {to}; verify it and show the content with:\n  {}",
                received.smime_verify()
            );
        }
        return received.smime_encrypted();
    }
    if ct.is("multipart", "encrypted") {
        return received.pgp_encrypted();
    }
    if ct.is("multipart", "signed") {
        let protocol = ct.param("protocol").unwrap_or("").to_ascii_lowercase();
        if protocol.contains("pkcs7-signature") {
            return format!(
                "S/MIME, signed (not encrypted: no key for {to}); verify it with:\n  {}",
                received.smime_verify()
            );
        }
        return format!(
            "PGP/MIME, signed (not encrypted: no key for {to}); read it with (the signature is \
             checked by an OpenPGP mail client):\n  cat {eml}"
        );
    }
    format!("plain, as sent (no key and no signing identity) for {to}; read it with:\n  cat {eml}")
}

/// One message the sink wrote, and what is needed to word the command that opens it.
struct Received<'a> {
    /// The envelope recipients, as one line.
    to: String,
    rcpts: Vec<&'a str>,
    /// The message file.
    eml: String,
    /// The demo key folder.
    keys: &'a Path,
}

impl Received<'_> {
    /// A file of the demo key folder, as an absolute path.
    fn key(&self, name: &str) -> String {
        self.keys.join(name).display().to_string()
    }

    /// The first recipient whose private key (in the format `pick` accepts) is shipped.
    fn shipped(&self, pick: impl Fn(&Shipped) -> bool) -> Option<&'static Shipped> {
        SHIPPED
            .iter()
            .find(|s| pick(s) && self.rcpts.iter().any(|r| r.eq_ignore_ascii_case(s.address)))
    }

    /// An encrypted copy nobody here can open.
    fn no_key(&self, format: &str) -> String {
        format!(
            "{format}, encrypted for {to}: the demo ships private keys only for \
             alice@example.test and alice2@example.test, so this copy cannot be opened here \
             (that is the point). Send to those two to see the whole round trip.",
            to = self.to
        )
    }

    /// The command that verifies an S/MIME signature (and prints the content).
    fn smime_verify(&self) -> String {
        format!(
            "openssl cms -verify -CAfile {ca} -in {eml}",
            ca = self.key("ca.pem"),
            eml = self.eml,
        )
    }

    fn smime_encrypted(&self) -> String {
        match self.shipped(|s| s.smime.is_some()) {
            Some(Shipped {
                smime: Some((cert, key)),
                ..
            }) => format!(
                "S/MIME, encrypted (and signed inside when the sender has an identity), for {to}; \
                 open it with:\n  openssl cms -decrypt -recip {cert} -inkey {key} -in {eml} \
                 | openssl cms -verify -CAfile {ca}",
                to = self.to,
                cert = self.key(cert),
                key = self.key(key),
                eml = self.eml,
                ca = self.key("ca.pem"),
            ),
            _ => self.no_key("S/MIME"),
        }
    }

    fn pgp_encrypted(&self) -> String {
        match self.shipped(|s| s.openpgp.is_some()) {
            Some(Shipped {
                openpgp: Some(secret),
                ..
            }) => format!(
                "PGP/MIME, encrypted and signed, for {to}; open it with (a throwaway GnuPG home; \
                 gpg finds the armored part inside the message):\n  \
                 GNUPGHOME=$(mktemp -d) sh -c 'gpg --batch -q --pinentry-mode loopback \
                 --passphrase-file {pass} --import {secret} {sender} && gpg --batch \
                 --pinentry-mode loopback --passphrase-file {pass} --decrypt {eml}; rc=$?; \
                 gpgconf --kill all; exit $rc'",
                to = self.to,
                pass = self.key("passphrase.txt"),
                secret = self.key(secret),
                sender = self.key("alice-openpgp.asc"),
                eml = self.eml,
            ),
            _ => self.no_key("PGP/MIME"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(ct: &str, rcpt: &str) -> String {
        let msg = format!("Content-Type: {ct}\r\n\r\nx\r\n");
        instructions(
            msg.as_bytes(),
            &format!("MAIL FROM:<a@x>\nRCPT TO:<{rcpt}>\n"),
            Path::new("/m/1.eml"),
            Path::new("/k"),
        )
    }

    #[test]
    fn each_kind_of_copy_gets_its_command() {
        let s = open(
            "application/pkcs7-mime; smime-type=enveloped-data",
            "Alice@example.test",
        );
        assert!(s.contains("openssl cms -decrypt -recip /k/alice-smime.pem -inkey /k/alice-smime.key -in /m/1.eml"), "{s}");
        let s = open(
            "multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b",
            "alice2@example.test",
        );
        assert!(
            s.contains("--import /k/alice2-openpgp-secret-protected.asc"),
            "{s}"
        );
        assert!(s.contains("--decrypt /m/1.eml"), "{s}");
        let s = open(
            "application/pkcs7-mime; smime-type=enveloped-data",
            "bob@example.test",
        );
        assert!(s.contains("cannot be opened here"), "{s}");
        let s = open(
            "multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=b",
            "bob@example.net",
        );
        assert!(
            s.contains("openssl cms -verify -CAfile /k/ca.pem -in /m/1.eml"),
            "{s}"
        );
        assert!(open("text/plain", "bob@example.net").ends_with("cat /m/1.eml"));
    }
}
