use thiserror::Error;

use crate::mime::{MimeError, Protection};

/// Why a message could not be sealed. Nothing is ever sent in plaintext instead (SECURITY.md I6).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SmimeError {
    /// The message could not be parsed or canonicalised within the limits.
    #[error("MIME: {0}")]
    Mime(#[from] MimeError),
    /// The message is already signed or encrypted; set `force` to wrap it anyway.
    #[error("message is already protected ({0:?}); not sealed again")]
    AlreadyProtected(Protection),
    /// `encrypt` was called without any recipient.
    #[error("no recipient certificate given")]
    NoRecipients,
    /// A recipient or signer certificate cannot be used.
    #[error("certificate {subject:?} cannot be used: {problem}")]
    Certificate {
        /// Subject DN, for the log.
        subject: String,
        /// What is wrong with it.
        problem: CertProblem,
    },
    /// The signing identity has no certificate.
    #[error("signing identity without certificate")]
    EmptyChain,
    /// The private key does not belong to the signer certificate.
    #[error("the private key does not match the signer certificate")]
    KeyMismatch,
    /// The private key could not be read.
    #[error("cannot read private key ({format})")]
    PrivateKey {
        /// Which encoding was tried.
        format: &'static str,
    },
    /// A certificate could not be decoded.
    #[error("cannot decode certificate: {0}")]
    CertificateDecode(#[source] der::Error),
    /// DER encoding of a CMS structure failed.
    #[error("DER encoding: {0}")]
    Der(#[from] der::Error),
    /// The cms crate's builder failed.
    #[error("CMS builder: {0}")]
    Cms(cms::builder::Error),
    /// A cryptographic primitive failed (random generator, RSA, key wrap...).
    #[error("{operation} failed")]
    Crypto {
        /// Which operation.
        operation: &'static str,
    },
}

impl From<cms::builder::Error> for SmimeError {
    fn from(e: cms::builder::Error) -> Self {
        SmimeError::Cms(e)
    }
}

/// What makes a certificate unusable for the operation.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertProblem {
    /// Outside its validity period at the time given in the options.
    #[error("not valid at the given time")]
    NotValidAt,
    /// A public key algorithm other than RSA or EC P-256.
    #[error("unsupported public key algorithm {0}")]
    UnsupportedAlgorithm(String),
    /// An EC key on a curve other than P-256.
    #[error("unsupported elliptic curve")]
    UnsupportedCurve,
    /// RSA modulus below 2048 bits.
    #[error("RSA key of {bits} bits (at least 2048 needed)")]
    RsaKeyTooSmall {
        /// Modulus size.
        bits: usize,
    },
    /// The public key cannot be decoded.
    #[error("invalid public key")]
    InvalidPublicKey,
    /// The keyUsage extension forbids the operation.
    #[error("keyUsage lacks {0}")]
    KeyUsage(&'static str),
    /// The extendedKeyUsage extension has neither emailProtection nor anyExtendedKeyUsage.
    #[error("extendedKeyUsage lacks emailProtection")]
    ExtendedKeyUsage,
    /// An extension could not be decoded.
    #[error("malformed extension")]
    MalformedExtension,
}
