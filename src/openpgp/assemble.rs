//! PGP/MIME assembly (RFC 3156): the outer header block, the multipart
//! skeletons, the Autocrypt header, and a CRLF writer for sequoia's armor
//! (which ends its lines with a bare LF).

use std::io::{self, Write};
use std::time::SystemTime;

use base64::Engine as _;
use sequoia_openpgp as pgp;

use pgp::policy::Policy;
use pgp::serialize::SerializeInto;

use super::keys::SigningKey;
use crate::mime::{self, HeaderField};

/// What the outer header block is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    Encrypted,
    Signed,
}

/// The outer header block, including its terminating empty line: the
/// `outer` fields of [`mime::prepare`] (never Bcc), our own Autocrypt field
/// if given (replacing any in `outer`), MIME-Version and the multipart
/// Content-Type.
pub(crate) fn outer_head(
    outer: &[HeaderField],
    form: Form,
    boundary: &str,
    autocrypt: Option<HeaderField>,
) -> Vec<u8> {
    let content_type = match form {
        Form::Encrypted => format!(
            "multipart/encrypted;\r\n protocol=\"application/pgp-encrypted\";\r\n \
             boundary=\"{boundary}\""
        ),
        Form::Signed => format!(
            "multipart/signed; micalg=pgp-sha256;\r\n \
             protocol=\"application/pgp-signature\";\r\n boundary=\"{boundary}\""
        ),
    };
    match autocrypt {
        None => mime::assemble(outer, &content_type, None, b""),
        Some(a) => {
            let mut fields: Vec<HeaderField> = outer
                .iter()
                .filter(|f| !f.is("autocrypt"))
                .cloned()
                .collect();
            fields.push(a);
            mime::assemble(&fields, &content_type, None, b"")
        }
    }
}

/// From the preamble to the start of the armored encrypted data.
pub(crate) fn write_encrypted_opening(out: &mut dyn Write, boundary: &str) -> io::Result<()> {
    write!(
        out,
        "This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n\
         --{boundary}\r\n\
         Content-Type: application/pgp-encrypted\r\n\
         Content-Description: PGP/MIME version identification\r\n\
         \r\n\
         Version: 1\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\
         Content-Description: OpenPGP encrypted message\r\n\
         Content-Disposition: inline; filename=\"encrypted.asc\"\r\n\
         \r\n"
    )
}

/// From the preamble to the start of the signed entity.
pub(crate) fn write_signed_opening(out: &mut dyn Write, boundary: &str) -> io::Result<()> {
    write!(
        out,
        "This is an OpenPGP/MIME signed message (RFC 4880 and 3156)\r\n\
         --{boundary}\r\n"
    )
}

/// Between the signed entity and the armored signature. The CRLF before the
/// delimiter belongs to the delimiter, not to the signed data.
pub(crate) fn write_signature_opening(out: &mut dyn Write, boundary: &str) -> io::Result<()> {
    write!(
        out,
        "\r\n--{boundary}\r\n\
         Content-Type: application/pgp-signature; name=\"signature.asc\"\r\n\
         Content-Description: OpenPGP digital signature\r\n\
         Content-Disposition: attachment; filename=\"signature.asc\"\r\n\
         \r\n"
    )
}

/// The closing delimiter (after armor, which ends with a line end).
pub(crate) fn write_closing(out: &mut dyn Write, boundary: &str) -> io::Result<()> {
    write!(out, "\r\n--{boundary}--\r\n")
}

/// The Autocrypt header (Autocrypt Level 1) for the sender, or `None` when
/// the From field does not hold exactly one address that is a valid user ID
/// of the sender's certificate: Autocrypt is advisory, so it is left out
/// rather than failing the message.
pub(crate) fn autocrypt_header(
    outer: &[HeaderField],
    signer: &SigningKey,
    policy: &dyn Policy,
    now: SystemTime,
) -> Option<HeaderField> {
    let from = outer.iter().find(|f| f.is("from"))?;
    let addr = single_address(&from.value())?;
    let cert = signer.public_cert();
    let vc = cert.with_policy(policy, now).ok()?;
    let matches = |u: &pgp::packet::UserID| {
        u.email_normalized()
            .ok()
            .flatten()
            .is_some_and(|e| e == addr)
    };
    if !vc.userids().revoked(false).any(|u| matches(u.userid())) {
        return None;
    }
    // Keydata: the primary key, the matching user ID and the subkeys valid
    // now (Autocrypt asks for a minimal key).
    let valid_subkeys: Vec<_> = vc
        .keys()
        .subkeys()
        .alive()
        .revoked(false)
        .map(|k| k.key().fingerprint())
        .collect();
    let minimal = cert
        .clone()
        .retain_userids(|u| matches(u.userid()))
        .retain_subkeys(|k| valid_subkeys.contains(&k.key().fingerprint()));
    let keydata = minimal.to_vec().ok()?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(keydata);
    let mut value = format!("addr={addr}; keydata=");
    for chunk in b64.as_bytes().chunks(76) {
        value.push_str("\r\n ");
        value.push_str(std::str::from_utf8(chunk).ok()?);
    }
    Some(HeaderField::new("Autocrypt", &value))
}

/// The one address of a From value (`Name <a@b>` or `a@b`), lower-cased.
fn single_address(v: &str) -> Option<String> {
    let addr = match (v.find('<'), v.rfind('>')) {
        (Some(l), Some(r)) if l < r => {
            if v[r + 1..].contains(['<', ',']) || v[..l].contains('@') {
                return None;
            }
            &v[l + 1..r]
        }
        (None, None) => v,
        _ => return None,
    };
    let addr = addr.trim();
    let ok = addr.matches('@').count() == 1
        && !addr.is_empty()
        && !addr.contains([',', ';', ' ', '\t', '\r', '\n', '"', '<', '>']);
    ok.then(|| addr.to_lowercase())
}

/// Turns every LF written through it into CRLF (sequoia's armor writes
/// bare LFs; MIME needs CRLF). Must only carry data without CR.
pub(crate) struct CrlfWriter<W: Write> {
    inner: W,
}

impl<W: Write> CrlfWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        CrlfWriter { inner }
    }
}

impl<W: Write> Write for CrlfWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            self.inner.write_all(&rest[..i])?;
            self.inner.write_all(b"\r\n")?;
            rest = &rest[i + 1..];
        }
        self.inner.write_all(rest)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_writer() {
        let mut v = Vec::new();
        let mut w = CrlfWriter::new(&mut v);
        w.write_all(b"a\nb").unwrap();
        w.write_all(b"\n\nc\n").unwrap();
        assert_eq!(v, b"a\r\nb\r\n\r\nc\r\n");
    }

    #[test]
    fn from_addresses() {
        assert_eq!(
            single_address("Alice <Alice@X.test>").as_deref(),
            Some("alice@x.test")
        );
        assert_eq!(single_address("a@x.test").as_deref(), Some("a@x.test"));
        assert_eq!(single_address("a@x.test, b@x.test"), None);
        assert_eq!(single_address("A <a@x.test>, B <b@x.test>"), None);
        assert_eq!(single_address("a@x.test <b@x.test>"), None);
        assert_eq!(single_address("nobody"), None);
    }
}
