//! S/MIME sealing (RFC 8551) as pure functions over bytes: no SMTP, no key store, no I/O.
//!
//! - [`sign`]: `multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256` with a
//!   detached SignedData over the canonical inner entity (or, with
//!   [`SmimeOptions::opaque_signing`], `application/pkcs7-mime; smime-type=signed-data`).
//!   Signed attributes: content-type, message-digest, signing-time, SMIMECapabilities; the
//!   signer's certificate chain is included. RSA signs PKCS#1 v1.5 / SHA-256 through the rsa
//!   crate's blinded path; P-256 identities sign ECDSA / SHA-256.
//! - [`encrypt`]: `application/pkcs7-mime; smime-type=enveloped-data` (AES-256-CBC) or
//!   `smime-type=authEnveloped-data` (AES-256-GCM), one RecipientInfo per certificate given:
//!   RSA key transport (PKCS#1 v1.5 by default, or RSAES-OAEP/SHA-256), ECDH P-256 key agreement
//!   with AES-256 key wrap for EC certificates.
//! - [`sign_and_encrypt`]: the signed entity, encrypted.
//!
//! The caller chooses the recipients of each copy: to keep Bcc recipients invisible
//! (SECURITY.md I7), call [`encrypt`] once per Bcc recipient with only that certificate (plus,
//! if wanted, the sender's own). No `Bcc` field ever reaches the output (see [`crate::mime`]).
//! Already protected input is refused with [`SmimeError::AlreadyProtected`] unless
//! [`SmimeOptions::force`]; it is never decrypted.

mod certs;
mod envelope;
mod error;
mod identity;
mod oids;
mod options;
mod recipients;
mod signed;

use x509_cert::Certificate;

use crate::mime::{self, PrepareOptions, Prepared};

pub use certs::MIN_RSA_BITS;
pub use error::{CertProblem, SmimeError};
pub use identity::SigningIdentity;
pub use options::{ContentEncryption, KeyTransport, SmimeOptions};

use signed::Encapsulation;

/// The outer fields and canonical inner entity that [`sign`] (`encrypting == false`) or
/// [`encrypt`] / [`sign_and_encrypt`] (`encrypting == true`) seal: the decrypted or verified
/// content equals `inner` byte for byte.
pub fn prepare(
    message: &[u8],
    opts: &SmimeOptions,
    encrypting: bool,
) -> Result<Prepared, SmimeError> {
    let prepared = mime::prepare(
        message,
        &PrepareOptions::for_sealing(encrypting, opts.hide_subject, opts.limits.clone()),
    )?;
    if prepared.protection.is_protected() && !opts.force {
        return Err(SmimeError::AlreadyProtected(prepared.protection));
    }
    Ok(prepared)
}

/// A signed MIME entity in one buffer: its header fields, an empty line, the body.
struct SignedEntity {
    content_type: String,
    transfer_encoding: Option<&'static str>,
    bytes: Vec<u8>,
    body_offset: usize,
}

impl SignedEntity {
    fn new(content_type: String, transfer_encoding: Option<&'static str>, capacity: usize) -> Self {
        let mut bytes = Vec::with_capacity(capacity + 256);
        mime::HeaderField::new("Content-Type", &content_type).write_to(&mut bytes);
        if let Some(cte) = transfer_encoding {
            mime::HeaderField::new("Content-Transfer-Encoding", cte).write_to(&mut bytes);
        }
        bytes.extend_from_slice(b"\r\n");
        let body_offset = bytes.len();
        SignedEntity {
            content_type,
            transfer_encoding,
            bytes,
            body_offset,
        }
    }

    fn body(&self) -> &[u8] {
        &self.bytes[self.body_offset..]
    }
}

fn signed_entity(
    inner: &[u8],
    identity: &SigningIdentity,
    opts: &SmimeOptions,
) -> Result<SignedEntity, SmimeError> {
    if opts.opaque_signing {
        let der = signed::signed_data(
            inner,
            identity,
            Encapsulation::Opaque,
            opts.now,
            &opts.capabilities,
        )?;
        let mut entity = SignedEntity::new(
            "application/pkcs7-mime; smime-type=signed-data;\r\n name=\"smime.p7m\"".into(),
            Some("base64"),
            der.len() * 4 / 3 + der.len() / 38 + 4,
        );
        mime::encode_base64_body_into(&der, &mut entity.bytes);
        return Ok(entity);
    }
    let der = signed::signed_data(
        inner,
        identity,
        Encapsulation::Detached,
        opts.now,
        &opts.capabilities,
    )?;
    let signature = mime::encode_base64_body(&der);
    let boundary = mime::new_boundary(&[inner, &signature])?;
    let mut entity = SignedEntity::new(
        format!(
            "multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256;\r\n boundary=\"{boundary}\""
        ),
        None,
        inner.len() + signature.len() + 512,
    );
    let body = &mut entity.bytes;
    body.extend_from_slice(b"This is a cryptographically signed message in MIME format.\r\n\r\n--");
    body.extend_from_slice(boundary.as_bytes());
    body.extend_from_slice(b"\r\n");
    body.extend_from_slice(inner);
    body.extend_from_slice(b"\r\n--");
    body.extend_from_slice(boundary.as_bytes());
    body.extend_from_slice(
        b"\r\nContent-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\n\
          Content-Transfer-Encoding: base64\r\n\
          Content-Disposition: attachment; filename=\"smime.p7s\"\r\n\
          Content-Description: S/MIME Cryptographic Signature\r\n\r\n",
    );
    body.extend_from_slice(&signature);
    body.extend_from_slice(b"--");
    body.extend_from_slice(boundary.as_bytes());
    body.extend_from_slice(b"--\r\n");
    Ok(entity)
}

/// Signs `message` as `identity`: the complete outgoing message.
pub fn sign(
    message: &[u8],
    identity: &SigningIdentity,
    opts: &SmimeOptions,
) -> Result<Vec<u8>, SmimeError> {
    let prepared = prepare(message, opts, false)?;
    let entity = signed_entity(&prepared.inner, identity, opts)?;
    drop(prepared.inner);
    Ok(mime::assemble(
        &prepared.outer,
        &entity.content_type,
        entity.transfer_encoding,
        entity.body(),
    ))
}

/// Encrypts `content` (consumed, to bound memory) and writes the outgoing message.
fn enveloped_message(
    outer: &[mime::HeaderField],
    content: Vec<u8>,
    recipients: &[Certificate],
    opts: &SmimeOptions,
) -> Result<Vec<u8>, SmimeError> {
    let enveloped = envelope::envelope(
        content,
        recipients,
        opts.encryption,
        opts.key_transport,
        opts.now,
    )?;
    let content_type = format!(
        "application/pkcs7-mime; smime-type={};\r\n name=\"smime.p7m\"",
        enveloped.smime_type
    );
    let mut out = mime::assemble(outer, &content_type, Some("base64"), b"");
    out.reserve(enveloped.der.len() / 57 * 78 + 80);
    mime::encode_base64_body_into(&enveloped.der, &mut out);
    Ok(out)
}

/// Encrypts `message` to exactly the given certificates: the complete outgoing message.
pub fn encrypt(
    message: &[u8],
    recipients: &[Certificate],
    opts: &SmimeOptions,
) -> Result<Vec<u8>, SmimeError> {
    envelope::check_recipients(recipients, opts.now)?;
    let prepared = prepare(message, opts, true)?;
    enveloped_message(&prepared.outer, prepared.inner, recipients, opts)
}

/// Signs as `identity`, then encrypts the signed entity to exactly the given certificates.
pub fn sign_and_encrypt(
    message: &[u8],
    identity: &SigningIdentity,
    recipients: &[Certificate],
    opts: &SmimeOptions,
) -> Result<Vec<u8>, SmimeError> {
    envelope::check_recipients(recipients, opts.now)?;
    let prepared = prepare(message, opts, true)?;
    let entity = signed_entity(&prepared.inner, identity, opts)?;
    drop(prepared.inner);
    enveloped_message(&prepared.outer, entity.bytes, recipients, opts)
}
