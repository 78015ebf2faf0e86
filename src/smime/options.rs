//! Options of the sealing functions.

use std::time::SystemTime;

use crate::mime::Limits;

/// Content encryption algorithm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ContentEncryption {
    /// EnvelopedData with AES-256-CBC: readable by every S/MIME client (gpgsm included).
    #[default]
    Aes256Cbc,
    /// AuthEnvelopedData with AES-256-GCM (RFC 5083/5084), smime-type=authEnveloped-data: only
    /// when every recipient is known to support it (gpgsm 2.2 does not).
    Aes256Gcm,
}

/// Key transport for RSA recipients (EC recipients always use ECDH key agreement).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyTransport {
    /// RSAES-PKCS1-v1_5: the interoperable baseline.
    #[default]
    RsaPkcs1v15,
    /// RSAES-OAEP with SHA-256 and MGF1-SHA-256 (gpgsm 2.2 cannot decrypt it).
    RsaOaepSha256,
}

/// How to sign and/or encrypt.
#[derive(Clone, Debug)]
pub struct SmimeOptions {
    /// Content encryption.
    pub encryption: ContentEncryption,
    /// Key transport for RSA recipients.
    pub key_transport: KeyTransport,
    /// Replace the outer Subject with `[...]` when encrypting (RFC 9788).
    pub hide_subject: bool,
    /// Opaque signed-data (application/pkcs7-mime) instead of multipart/signed.
    pub opaque_signing: bool,
    /// Seal a message that is already signed or encrypted (it is wrapped, never opened).
    pub force: bool,
    /// Algorithms advertised in the SMIMECapabilities signed attribute, preferred first.
    pub capabilities: Vec<const_oid::ObjectIdentifier>,
    /// The time used for the signing-time attribute and for certificate validity checks.
    pub now: SystemTime,
    /// MIME bounds.
    pub limits: Limits,
}

impl Default for SmimeOptions {
    fn default() -> Self {
        SmimeOptions {
            encryption: ContentEncryption::default(),
            key_transport: KeyTransport::default(),
            hide_subject: false,
            opaque_signing: false,
            force: false,
            capabilities: super::signed::default_capabilities(),
            now: SystemTime::now(),
            limits: Limits::default(),
        }
    }
}
