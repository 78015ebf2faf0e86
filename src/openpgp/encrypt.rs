//! multipart/encrypted (RFC 3156 section 4), signed inside the encryption
//! in one pass when a signing key is given.
//!
//! Writer stack: CRLF <- Armorer <- Encryptor (one PKESK per selected
//! subkey, SEIPDv1+MDC or SEIPDv2) <- Signer (one-pass, SHA-256) <-
//! LiteralWriter (binary). No compression (no gain on already encoded
//! mail, and no compression side channel).

use std::io::Write;

use sequoia_openpgp as pgp;

use pgp::armor;
use pgp::crypto::KeyPair;
use pgp::packet::signature::SignatureBuilder;
use pgp::policy::StandardPolicy;
use pgp::serialize::stream::{self, Armorer, Encryptor, LiteralWriter, Message, Signer};
use pgp::types::{AEADAlgorithm, DataFormat, Features, HashAlgorithm, SignatureType};
use pgp::{Cert, KeyHandle};

use super::assemble::{self, CrlfWriter, Form};
use super::error::{CryptoSource, PgpError};
use super::format::{self, MessageFormat};
use super::keys::{encryption_keys, Capabilities, Recipient, Selected, SigningKey};
use super::{prepare, PgpOptions};
use crate::mime;

/// Encrypts `message` to every recipient: the complete PGP/MIME message.
///
/// Every recipient must yield at least one alive, non-revoked
/// transport-encryption subkey at [`PgpOptions::now`], else the whole
/// message is refused with an error naming that recipient.
pub fn encrypt(
    message: &[u8],
    recipients: &[Recipient],
    opts: &PgpOptions,
) -> Result<Vec<u8>, PgpError> {
    encrypt_vec(message, None, recipients, opts)
}

/// Signs `message` as `signer` inside the encryption (one pass), then
/// encrypts it to every recipient: the complete PGP/MIME message.
pub fn sign_and_encrypt(
    message: &[u8],
    signer: &SigningKey,
    recipients: &[Recipient],
    opts: &PgpOptions,
) -> Result<Vec<u8>, PgpError> {
    encrypt_vec(message, Some(signer), recipients, opts)
}

fn encrypt_vec(
    message: &[u8],
    signer: Option<&SigningKey>,
    recipients: &[Recipient],
    opts: &PgpOptions,
) -> Result<Vec<u8>, PgpError> {
    // base64 (4/3) with a CRLF every 64 characters (x 1.375), plus a margin
    // for packet framing and headers: too low an estimate would make the
    // Vec double.
    let estimate = (message.len() / 100).saturating_mul(139) + 16384;
    let mut out = Vec::with_capacity(estimate);
    encrypt_to(&mut out, message, signer, recipients, opts)?;
    Ok(out)
}

/// Like [`encrypt`] (or [`sign_and_encrypt`] when `signer` is given),
/// streaming into `out` (e.g. a spool file). Nothing is written unless
/// every check passed; on a later error (I/O, crypto) the output is
/// incomplete and must be discarded.
pub fn encrypt_to<W: Write + Send + Sync>(
    out: &mut W,
    message: &[u8],
    signer: Option<&SigningKey>,
    recipients: &[Recipient],
    opts: &PgpOptions,
) -> Result<(), PgpError> {
    let policy = StandardPolicy::new();
    let now = opts.now;
    let chosen = choose_keys(recipients, signer, opts, &policy)?;
    let caps: Vec<Capabilities> = chosen.iter().map(|(_, s)| s.caps.clone()).collect();
    let msg_format = format::choose(&caps, |a: AEADAlgorithm| a.is_supported());

    let keypair = signer.map(|s| s.keypair(&policy, now)).transpose()?;
    let input = prepare(message, opts, true)?;
    let autocrypt = match signer {
        Some(s) if opts.autocrypt => assemble::autocrypt_header(&input.outer, s, &policy, now),
        _ => None,
    };
    // The armored part cannot hold "=_", but check the fixed parts anyway.
    let boundary = mime::new_boundary(&[])?;

    // Every check passed: from here on we write.
    out.write_all(&assemble::outer_head(
        &input.outer,
        Form::Encrypted,
        &boundary,
        autocrypt,
    ))?;
    assemble::write_encrypted_opening(out, &boundary)?;
    let certs: Vec<&Cert> = chosen.iter().map(|(c, _)| *c).collect();
    {
        let sink = CrlfWriter::new(&mut *out);
        let mut message = encrypting(sink, stream_recipients(&chosen, msg_format), msg_format)?;
        if let Some(kp) = keypair {
            message = signing(message, kp, &certs, now)?;
        }
        let message = LiteralWriter::new(message)
            .format(DataFormat::Binary)
            .build()
            .map_err(crypto)?;
        super::write_and_finalize(message, &input.inner, "encrypt")?;
    }
    assemble::write_closing(out, &boundary)?;
    Ok(())
}

/// An error of the OpenPGP writer stack.
fn crypto<E: Into<CryptoSource>>(e: E) -> PgpError {
    PgpError::crypto("encrypt", e)
}

/// Each certificate with the encryption keys chosen for it: every recipient's, then the
/// sender's when encrypting to self. An error names the first recipient without a usable key.
fn choose_keys<'a>(
    recipients: &'a [Recipient],
    signer: Option<&'a SigningKey>,
    opts: &PgpOptions,
    policy: &'a StandardPolicy<'a>,
) -> Result<Vec<(&'a Cert, Selected<'a>)>, PgpError> {
    if recipients.is_empty() {
        return Err(PgpError::NoRecipients);
    }
    let now = opts.now;
    let mut chosen = Vec::with_capacity(recipients.len() + 1);
    for r in recipients {
        let sel = encryption_keys(r.cert(), r.address(), r.checks_address(), policy, now)?;
        chosen.push((r.cert(), sel));
    }
    if opts.encrypt_to_self {
        let me = signer.ok_or(PgpError::EncryptToSelfWithoutSender)?;
        let sel = encryption_keys(me.tsk(), "sender (encrypt to self)", false, policy, now)?;
        chosen.push((me.tsk(), sel));
    }
    Ok(chosen)
}

/// One PKESK recipient per chosen key, named by fingerprint for SEIPDv2 and by key id for
/// SEIPDv1.
fn stream_recipients<'a>(
    chosen: &[(&'a Cert, Selected<'a>)],
    msg_format: MessageFormat,
) -> Vec<stream::Recipient<'a>> {
    let (features, v2) = match msg_format {
        MessageFormat::SeipdV1 { .. } => (Features::empty().set_seipdv1(), false),
        MessageFormat::SeipdV2 { .. } => (Features::empty().set_seipdv1().set_seipdv2(), true),
    };
    let mut out = Vec::new();
    for (_, sel) in chosen {
        for key in &sel.keys {
            let handle: KeyHandle = if v2 {
                key.fingerprint().into()
            } else {
                key.keyid().into()
            };
            out.push(stream::Recipient::new(features.clone(), handle, *key));
        }
    }
    out
}

/// The armored, encrypted writer over `sink`.
fn encrypting<'a, W: Write + Send + Sync + 'a>(
    sink: W,
    recipients: Vec<stream::Recipient<'a>>,
    msg_format: MessageFormat,
) -> Result<Message<'a>, PgpError> {
    let message = Armorer::new(Message::new(sink))
        .kind(armor::Kind::Message)
        .build()
        .map_err(crypto)?;
    let mut encryptor =
        Encryptor::for_recipients(message, recipients).symmetric_algo(msg_format.cipher());
    if let MessageFormat::SeipdV2 { aead, .. } = msg_format {
        encryptor = encryptor.aead_algo(aead);
    }
    encryptor.build().map_err(crypto)
}

/// A one-pass signer (SHA-256, binary) inside the encryption, naming every certificate the
/// message is encrypted to as an intended recipient.
fn signing<'a>(
    message: Message<'a>,
    keypair: KeyPair,
    intended: &[&Cert],
    now: std::time::SystemTime,
) -> Result<Message<'a>, PgpError> {
    let mut s = Signer::with_template(
        message,
        keypair,
        SignatureBuilder::new(SignatureType::Binary),
    )
    .map_err(crypto)?
    .hash_algo(HashAlgorithm::SHA256)
    .map_err(crypto)?
    .creation_time(now);
    for c in intended {
        s = s.add_intended_recipient(c);
    }
    s.build().map_err(crypto)
}
