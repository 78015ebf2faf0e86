//! OpenPGP sealing as PGP/MIME (RFC 3156 over RFC 4880 / RFC 9580).
//!
//! Pure functions over bytes: no SMTP, no key store, no I/O besides the
//! caller's writer. Same shape as [`crate::smime`]: the functions take the
//! whole message and run it through [`crate::mime::prepare`] (see
//! [`prepare`]), so both formats share the parsing, the canonicalisation,
//! the header protection (RFC 9788: `hp="cipher"` / `hp="clear"` and
//! `HP-Outer`), the removal of `Bcc` and the detection of already protected
//! input. They return the complete outgoing message:
//!
//! - [`encrypt`] / [`sign_and_encrypt`]:
//!   `multipart/encrypted; protocol="application/pgp-encrypted"`, signed
//!   inside the encryption (one pass) when a [`SigningKey`] is given;
//! - [`sign`]: `multipart/signed; protocol="application/pgp-signature";
//!   micalg=pgp-sha256`, a detached signature over the canonical inner
//!   entity exactly as emitted.
//!
//! [`encrypt_to`] and [`sign_to`] stream the sealed message into a writer
//! (e.g. a spool file).
//!
//! The decrypted or verified content equals [`prepare`]'s `inner` byte for
//! byte. Every failure is a [`PgpError`] and means "do not send": there is
//! no plaintext fallback (SECURITY.md I6). Nothing is written to a caller's
//! writer before every key and input check has passed.

mod assemble;
mod encrypt;
mod error;
mod format;
mod keys;
mod sign;

use std::time::SystemTime;

use crate::mime::{self, Limits, PrepareOptions, Prepared};

pub use encrypt::{encrypt, encrypt_to, sign_and_encrypt};
pub use error::{CryptoSource, PgpError};
pub use format::{choose as choose_format, MessageFormat};
pub use keys::{Capabilities, Recipient, SigningKey};
pub use sign::{sign, sign_to};

/// Size of the writes into sequoia's writer stack (keeps its buffers, and
/// so memory, bounded whatever the message size).
const WRITE_CHUNK: usize = 256 * 1024;

/// Writes `data` into sequoia's writer stack in [`WRITE_CHUNK`] pieces (one
/// huge write would make its partial-body and cipher layers buffer a copy
/// of it) and finalizes the stack.
fn write_and_finalize(
    mut message: sequoia_openpgp::serialize::stream::Message<'_>,
    data: &[u8],
    operation: &'static str,
) -> Result<(), PgpError> {
    for chunk in data.chunks(WRITE_CHUNK) {
        std::io::Write::write_all(&mut message, chunk)?;
    }
    message
        .finalize()
        .map_err(|e| PgpError::crypto(operation, e))
}

/// Options for sealing one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgpOptions {
    /// Also encrypt to the sender's own certificate (the signing key's).
    pub encrypt_to_self: bool,
    /// Add an Autocrypt header with the sender's public key (off by default).
    pub autocrypt: bool,
    /// Replace the outer Subject of an encrypted message with
    /// [`mime::HIDDEN_SUBJECT`] (RFC 9788). No effect on signed-only mail,
    /// whose content is in clear anyway.
    pub hide_subject: bool,
    /// Seal input that is already signed or encrypted (wrapping it; it is
    /// never opened). Without it such input is refused.
    pub force: bool,
    /// The time at which keys must be valid, and the signature creation time.
    pub now: SystemTime,
    /// MIME bounds.
    pub limits: Limits,
}

impl Default for PgpOptions {
    fn default() -> Self {
        PgpOptions {
            encrypt_to_self: false,
            autocrypt: false,
            hide_subject: false,
            force: false,
            now: SystemTime::now(),
            limits: Limits::default(),
        }
    }
}

/// The outer fields and canonical inner entity that [`sign`]
/// (`encrypting == false`) or [`encrypt`] / [`sign_and_encrypt`]
/// (`encrypting == true`) seal: the decrypted or verified content equals
/// `inner` byte for byte. Already protected input is refused unless
/// [`PgpOptions::force`].
pub fn prepare(message: &[u8], opts: &PgpOptions, encrypting: bool) -> Result<Prepared, PgpError> {
    let prepared = mime::prepare(
        message,
        &PrepareOptions::for_sealing(encrypting, opts.hide_subject, opts.limits.clone()),
    )?;
    if prepared.protection.is_protected() && !opts.force {
        return Err(PgpError::AlreadyProtected(prepared.protection));
    }
    Ok(prepared)
}
