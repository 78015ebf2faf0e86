//! Producing the content of one copy: sign and/or encrypt with S/MIME or OpenPGP. Runs on a
//! blocking thread (it is CPU work); never falls back to plaintext (SECURITY.md I6).

use std::time::SystemTime;

use crate::mime::{Limits, MimeError};
use crate::openpgp::{self, PgpError, PgpOptions};
use crate::policy::Outcome;
use crate::smime::{self, ContentEncryption, KeyTransport, SmimeError, SmimeOptions};

use super::keys::{RecipientKeys, SenderKeys};

/// Message-wide sealing settings from the policy.
#[derive(Clone, Debug)]
pub struct SealSettings {
    pub hide_subject: bool,
    pub encrypt_to_self: bool,
    pub limits: Limits,
    pub smime_encryption: ContentEncryption,
    pub smime_key_transport: KeyTransport,
    pub smime_opaque_signing: bool,
    pub autocrypt: bool,
}

impl SealSettings {
    /// The sealing settings the policy asks for.
    pub fn from_policy(policy: &crate::policy::PolicyConfig, limits: Limits) -> Self {
        use crate::policy::{SmimeCipher, SmimeKeyTransport};
        SealSettings {
            hide_subject: policy.hide_subject,
            encrypt_to_self: policy.encrypt_to_self,
            limits,
            smime_encryption: match policy.smime_cipher {
                SmimeCipher::Aes256Cbc => ContentEncryption::Aes256Cbc,
                SmimeCipher::Aes256Gcm => ContentEncryption::Aes256Gcm,
            },
            smime_key_transport: match policy.smime_key_transport {
                SmimeKeyTransport::RsaPkcs1v15 => KeyTransport::RsaPkcs1v15,
                SmimeKeyTransport::RsaOaep => KeyTransport::RsaOaepSha256,
            },
            smime_opaque_signing: policy.smime_opaque_signing,
            autocrypt: policy.autocrypt,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("S/MIME: {0}")]
    Smime(#[from] SmimeError),
    #[error("OpenPGP: {0}")]
    Openpgp(#[from] PgpError),
    #[error("MIME: {0}")]
    Mime(#[from] MimeError),
    #[error("copy cannot be signed: {0}")]
    Unsignable(String),
}

/// What one copy is: its sealing, its recipients' keys only, whether to sign, and whether the
/// client already protected the message (then it is wrapped, never opened).
pub struct CopySpec<'a> {
    pub seal: Outcome,
    pub recipients: Vec<&'a RecipientKeys>,
    pub sign: bool,
    pub wrap: bool,
}

/// One copy's content.
pub fn seal_copy(
    message: &[u8],
    spec: &CopySpec<'_>,
    sender: &SenderKeys,
    settings: &SealSettings,
    now: SystemTime,
) -> Result<Vec<u8>, SealError> {
    let CopySpec {
        seal,
        ref recipients,
        sign,
        wrap,
    } = *spec;
    let smime_opts = SmimeOptions {
        encryption: settings.smime_encryption,
        key_transport: settings.smime_key_transport,
        opaque_signing: settings.smime_opaque_signing,
        hide_subject: settings.hide_subject,
        force: wrap,
        now,
        limits: settings.limits.clone(),
        ..SmimeOptions::default()
    };
    let pgp_opts = PgpOptions {
        encrypt_to_self: settings.encrypt_to_self && sign && sender.openpgp.is_some(),
        autocrypt: settings.autocrypt,
        hide_subject: settings.hide_subject,
        force: wrap,
        now,
        limits: settings.limits.clone(),
    };
    match seal {
        Outcome::Plain if !sign => Ok(message.to_vec()),
        Outcome::Plain => match (&sender.smime, &sender.openpgp) {
            (Some(id), _) => Ok(smime::sign(message, id, &smime_opts)?),
            (None, Some(key)) => Ok(openpgp::sign(message, key, &pgp_opts)?),
            (None, None) => Err(SealError::Unsignable("no signing identity".into())),
        },
        Outcome::Smime => {
            let mut certs: Vec<_> = recipients
                .iter()
                .flat_map(|k| k.smime.iter().cloned())
                .collect();
            if let (true, Some(id)) = (settings.encrypt_to_self, &sender.smime) {
                certs.push(id.certificate().clone());
            }
            match (&sender.smime, sign) {
                (Some(id), true) => Ok(smime::sign_and_encrypt(message, id, &certs, &smime_opts)?),
                _ => Ok(smime::encrypt(message, &certs, &smime_opts)?),
            }
        }
        Outcome::Openpgp => {
            let keys: Vec<_> = recipients
                .iter()
                .flat_map(|k| k.openpgp.iter().cloned())
                .collect();
            match (&sender.openpgp, sign) {
                (Some(key), true) => Ok(openpgp::sign_and_encrypt(message, key, &keys, &pgp_opts)?),
                _ => Ok(openpgp::encrypt(message, &keys, &pgp_opts)?),
            }
        }
        Outcome::Refuse => Err(SealError::Unsignable(
            "refused recipient reached sealing".into(),
        )),
    }
}

/// Whether a copy sealed this way carries a signature, given the sender's identities.
pub fn copy_is_signed(seal: Outcome, sender: &SenderKeys, sign: bool) -> bool {
    sign && match seal {
        Outcome::Plain => sender.any(),
        Outcome::Smime => sender.smime.is_some(),
        Outcome::Openpgp => sender.openpgp.is_some(),
        Outcome::Refuse => false,
    }
}
