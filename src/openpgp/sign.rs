//! multipart/signed (RFC 3156 section 5): a detached OpenPGP signature over
//! the inner entity exactly as emitted.
//!
//! The signature is a text signature (type 0x01) with SHA-256 (hence
//! `micalg=pgp-sha256`): over the CRLF-canonical entity of
//! [`crate::mime::prepare`] it hashes the very bytes sent, and it still
//! verifies for a client that stored the part with LF line ends. That
//! entity is 7-bit with lines of at most 998 octets (transfer encodings
//! rewritten where needed, raw UTF-8 header fields aside), so MTA hops do
//! not break the signature.

use std::io::Write;

use sequoia_openpgp as pgp;

use pgp::armor;
use pgp::packet::signature::SignatureBuilder;
use pgp::policy::StandardPolicy;
use pgp::serialize::stream::{Armorer, Message, Signer};
use pgp::types::{HashAlgorithm, SignatureType};

use super::assemble::{self, CrlfWriter, Form};
use super::error::PgpError;
use super::keys::SigningKey;
use super::{prepare, PgpOptions};
use crate::mime;

/// Signs `message` as `signer`: the complete multipart/signed message.
pub fn sign(message: &[u8], signer: &SigningKey, opts: &PgpOptions) -> Result<Vec<u8>, PgpError> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 16 + 8192);
    sign_to(&mut out, message, signer, opts)?;
    Ok(out)
}

/// Like [`sign`], streaming into `out`. Nothing is written unless every
/// check passed.
pub fn sign_to<W: Write + Send + Sync>(
    out: &mut W,
    message: &[u8],
    signer: &SigningKey,
    opts: &PgpOptions,
) -> Result<(), PgpError> {
    let policy = StandardPolicy::new();
    let now = opts.now;
    let keypair = signer.keypair(&policy, now)?;
    let input = prepare(message, opts, false)?;
    let autocrypt = if opts.autocrypt {
        assemble::autocrypt_header(&input.outer, signer, &policy, now)
    } else {
        None
    };
    let boundary = mime::new_boundary(&[&input.inner])?;

    // Every check passed: from here on we write.
    out.write_all(&assemble::outer_head(
        &input.outer,
        Form::Signed,
        &boundary,
        autocrypt,
    ))?;
    assemble::write_signed_opening(out, &boundary)?;
    out.write_all(&input.inner)?;
    assemble::write_signature_opening(out, &boundary)?;

    let crypto = |e| PgpError::crypto("sign", e);
    {
        let sink = CrlfWriter::new(&mut *out);
        let message = Message::new(sink);
        let message = Armorer::new(message)
            .kind(armor::Kind::Signature)
            .build()
            .map_err(crypto)?;
        let message =
            Signer::with_template(message, keypair, SignatureBuilder::new(SignatureType::Text))
                .map_err(crypto)?
                .detached()
                .hash_algo(HashAlgorithm::SHA256)
                .map_err(crypto)?
                .creation_time(now)
                .build()
                .map_err(crypto)?;
        super::write_and_finalize(message, &input.inner, "sign")?;
    }
    assemble::write_closing(out, &boundary)?;
    Ok(())
}
