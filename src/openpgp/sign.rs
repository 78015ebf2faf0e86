//! multipart/signed (RFC 3156 section 5): a detached OpenPGP signature over
//! the inner entity exactly as emitted.
//!
//! The signature is a text signature (type 0x01) with SHA-256 (hence
//! `micalg=pgp-sha256`): over our CRLF-canonical entity it hashes the very
//! bytes sent, and it still verifies for a client that stored the part with
//! LF line ends. Signed-only content travels in clear, so it must be 7-bit
//! with lines of at most 998 octets, or an MTA hop could break the
//! signature: such input is refused, never "fixed" here.

use std::io::Write;
use std::time::SystemTime;

use sequoia_openpgp as pgp;

use pgp::armor;
use pgp::packet::signature::SignatureBuilder;
use pgp::policy::StandardPolicy;
use pgp::serialize::stream::{Armorer, Message, Signer};
use pgp::types::{HashAlgorithm, SignatureType};

use super::assemble::{self, CrlfWriter, Form};
use super::error::PgpError;
use super::keys::SigningKey;
use super::{mime_glue, prepare, PgpOptions};

/// Signs `inner` and returns the complete multipart/signed message.
pub fn sign(
    outer_headers: &[u8],
    inner: &[u8],
    signer: &SigningKey,
    opts: &PgpOptions,
    now: SystemTime,
) -> Result<Vec<u8>, PgpError> {
    let mut out = Vec::with_capacity(inner.len() + outer_headers.len() + 8192);
    sign_to(&mut out, outer_headers, inner, signer, opts, now)?;
    Ok(out)
}

/// Like [`sign`], streaming into `out`. Nothing is written unless every
/// check passed.
pub fn sign_to<W: Write + Send + Sync>(
    out: &mut W,
    outer_headers: &[u8],
    inner: &[u8],
    signer: &SigningKey,
    opts: &PgpOptions,
    now: SystemTime,
) -> Result<(), PgpError> {
    let policy = StandardPolicy::new();
    let input = prepare(outer_headers, inner, opts)?;
    for piece in input.pieces() {
        mime_glue::check_7bit(piece)?;
    }
    let keypair = signer.keypair(&policy, now)?;
    let autocrypt = if opts.autocrypt {
        assemble::autocrypt_header(&input.outer, signer, &policy, now)
    } else {
        None
    };
    let boundary = mime_glue::random_boundary(&input.pieces())?;

    // Every check passed: from here on we write.
    assemble::write_outer_header(
        out,
        &input.outer,
        Form::Signed,
        &boundary,
        opts,
        autocrypt.as_deref(),
    )?;
    assemble::write_signed_opening(out, &boundary)?;
    for piece in input.pieces() {
        out.write_all(piece)?;
    }
    assemble::write_signature_opening(out, &boundary)?;

    let crypto = |e| PgpError::crypto("sign", e);
    {
        let sink = CrlfWriter::new(&mut *out);
        let message = Message::new(sink);
        let message = Armorer::new(message)
            .kind(armor::Kind::Signature)
            .build()
            .map_err(crypto)?;
        let mut message =
            Signer::with_template(message, keypair, SignatureBuilder::new(SignatureType::Text))
                .map_err(crypto)?
                .detached()
                .hash_algo(HashAlgorithm::SHA256)
                .map_err(crypto)?
                .creation_time(now)
                .build()
                .map_err(crypto)?;
        for piece in input.pieces() {
            for chunk in piece.chunks(super::WRITE_CHUNK) {
                message.write_all(chunk)?;
            }
        }
        message.finalize().map_err(crypto)?;
    }
    assemble::write_closing(out, &boundary)?;
    Ok(())
}
