//! The one error type of the OpenPGP module.
//!
//! Sequoia reports failures as `anyhow::Error`; they are wrapped here, at
//! the module boundary, so that no `anyhow` type appears in our public API.
//! Messages name recipients by address and fingerprint, never key material.

use std::error::Error as StdError;

use crate::mime::{MimeError, Protection};

/// A boxed error from the crypto library, kept as the `source()` of
/// [`PgpError::Crypto`].
pub type CryptoSource = Box<dyn StdError + Send + Sync + 'static>;

/// Why a message could not be sealed. Every variant is a refusal: the
/// caller must not send the message in plaintext instead (SECURITY.md I6).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgpError {
    /// No recipients were given to `encrypt`.
    #[error("no recipients: refusing to encrypt to nobody")]
    NoRecipients,

    /// A recipient's certificate has no transport-encryption subkey that is
    /// valid, alive and not revoked at the time of sending.
    #[error("no usable encryption key for <{address}> (certificate {fingerprint}): {reason}")]
    NoUsableEncryptionKey {
        /// The address the certificate was to be used for.
        address: String,
        /// The certificate's primary key fingerprint.
        fingerprint: String,
        /// What was wrong (no encryption subkey, expired, revoked, ...).
        reason: String,
    },

    /// The certificate has no valid user ID for the address it is used for.
    #[error("certificate {fingerprint} has no valid user ID for <{address}>")]
    AddressMismatch {
        /// The address the certificate was to be used for.
        address: String,
        /// The certificate's primary key fingerprint.
        fingerprint: String,
    },

    /// A certificate could not be parsed, or was a secret key where a
    /// public certificate was expected (or the other way round).
    #[error("invalid OpenPGP certificate: {reason}")]
    InvalidCertificate {
        /// What was wrong.
        reason: String,
    },

    /// The signing key is unusable: no unencrypted secret signing-capable
    /// key that is alive and not revoked.
    #[error("unusable signing key {fingerprint}: {reason}")]
    UnusableSigningKey {
        /// The certificate's primary key fingerprint (empty if unparsable).
        fingerprint: String,
        /// What was wrong.
        reason: String,
    },

    /// `encrypt_to_self` was asked for, but no signing key (which is also
    /// the sender's certificate) was given.
    #[error("encrypt_to_self requires the sender's key")]
    EncryptToSelfWithoutSender,

    /// The message could not be parsed or canonicalised within the limits.
    #[error("MIME: {0}")]
    Mime(#[from] MimeError),

    /// The input is already signed or encrypted (I10); set
    /// [`super::PgpOptions::force`] to wrap it anyway.
    #[error("message is already protected ({0:?}); not sealed again")]
    AlreadyProtected(Protection),

    /// A failure inside the OpenPGP library while doing `operation`.
    #[error("OpenPGP {operation} failed")]
    Crypto {
        /// The operation: "encrypt", "sign", "parse key", ...
        operation: &'static str,
        /// The library's error.
        #[source]
        source: CryptoSource,
    },

    /// Writing the output failed.
    #[error("writing the sealed message failed")]
    Io(#[from] std::io::Error),
}

impl PgpError {
    /// Wraps an error of the OpenPGP library (an `anyhow::Error`).
    pub(crate) fn crypto<E: Into<CryptoSource>>(operation: &'static str, e: E) -> Self {
        PgpError::Crypto {
            operation,
            source: e.into(),
        }
    }
}
