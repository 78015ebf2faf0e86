//! Keys: the sender's signing key and the recipients' certificates, and the
//! choice, at the time of sending, of the subkeys to use.
//!
//! Usability is checked at use (per recipient, at `now`, under the standard
//! policy), never only at import. A certificate that yields no key is an
//! error naming the recipient: never a silent drop, never plaintext.

use std::fmt;
use std::time::SystemTime;

use sequoia_openpgp as pgp;

use pgp::cert::amalgamation::ValidAmalgamation;
use pgp::cert::{Preferences, ValidCert};
use pgp::crypto::KeyPair;
use pgp::packet::key::{PublicParts, UnspecifiedRole};
use pgp::packet::Key;
use pgp::parse::Parse;
use pgp::policy::{Policy, StandardPolicy};
use pgp::types::{AEADAlgorithm, Features, RevocationStatus, SymmetricAlgorithm};
use pgp::Cert;

use super::error::PgpError;

/// The sender's OpenPGP key (a TSK: certificate with secret key material).
///
/// Secret key material stays inside sequoia's `Key` type, which keeps it
/// encrypted in memory and zeroizes it on drop. `Debug` prints only the
/// fingerprint.
pub struct SigningKey {
    tsk: Cert,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("fingerprint", &self.tsk.fingerprint().to_hex())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Parses a secret key (ASCII-armored or binary, exactly one key) and
    /// checks that it holds an unencrypted, signing-capable secret key
    /// that is alive and not revoked at `now`.
    pub fn from_bytes(data: &[u8], now: SystemTime) -> Result<Self, PgpError> {
        let tsk = Cert::from_bytes(data).map_err(|e| PgpError::UnusableSigningKey {
            fingerprint: String::new(),
            reason: format!("cannot parse secret key: {e}"),
        })?;
        Self::from_cert(tsk, now)
    }

    /// Like [`SigningKey::from_bytes`], from an already parsed TSK.
    /// (Usability is checked under sequoia's `StandardPolicy`, here and at
    /// every use.)
    pub fn from_cert(tsk: Cert, now: SystemTime) -> Result<Self, PgpError> {
        if !tsk.is_tsk() {
            return Err(PgpError::UnusableSigningKey {
                fingerprint: tsk.fingerprint().to_hex(),
                reason: "no secret key material (a public certificate was given)".into(),
            });
        }
        let key = SigningKey { tsk };
        // Fails with a precise reason if nothing can sign at `now`.
        let _ = key.keypair(&StandardPolicy::new(), now)?;
        Ok(key)
    }

    /// Checks, at `now`, that the key can still sign (the same check
    /// `sign` and `encrypt` make).
    pub fn check(&self, now: SystemTime) -> Result<(), PgpError> {
        self.keypair(&StandardPolicy::new(), now).map(|_| ())
    }

    /// Fingerprint of the primary key (hex, upper case).
    pub fn fingerprint(&self) -> String {
        self.tsk.fingerprint().to_hex()
    }

    /// The public certificate, without any secret key material.
    pub fn public_cert(&self) -> Cert {
        self.tsk.clone().strip_secret_key_material()
    }

    pub(crate) fn tsk(&self) -> &Cert {
        &self.tsk
    }

    /// The signing key pair to use at `now`: among the alive, non-revoked,
    /// signing-capable keys with unencrypted secret material, the newest
    /// (as GnuPG does).
    pub(crate) fn keypair(
        &self,
        policy: &dyn Policy,
        now: SystemTime,
    ) -> Result<KeyPair, PgpError> {
        let fingerprint = self.tsk.fingerprint().to_hex();
        let unusable = |reason: String| PgpError::UnusableSigningKey {
            fingerprint: fingerprint.clone(),
            reason,
        };
        let vc = valid_at(&self.tsk, policy, now, "certificate not alive").map_err(unusable)?;

        let mut locked = false;
        let mut best: Option<(SystemTime, KeyPair)> = None;
        for ka in vc
            .keys()
            .supported()
            .alive()
            .revoked(false)
            .for_signing()
            .secret()
        {
            let key = ka.key();
            if !key.has_unencrypted_secret() {
                locked = true;
                continue;
            }
            let created = key.creation_time();
            if best.as_ref().is_some_and(|(t, _)| *t >= created) {
                continue;
            }
            match key.clone().into_keypair() {
                Ok(kp) => best = Some((created, kp)),
                Err(_) => locked = true,
            }
        }
        match best {
            Some((_, kp)) => Ok(kp),
            None if locked => Err(unusable(
                "the signing key is protected by a passphrase; an unencrypted key is required"
                    .into(),
            )),
            None => Err(unusable(
                "no signing-capable secret key that is alive and not revoked".into(),
            )),
        }
    }
}

/// How a recipient certificate is tied to the address it is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AddressBinding {
    /// The certificate must have a valid user ID with this address.
    UserId,
    /// The administrator pinned this certificate for the address.
    Pinned,
}

/// A recipient: a public certificate and the address it is used for.
#[derive(Debug, Clone)]
pub struct Recipient {
    cert: Cert,
    address: String,
    binding: AddressBinding,
}

impl Recipient {
    /// A recipient whose certificate must carry a valid (non-revoked) user
    /// ID with `address` (compared case-insensitively) at the time of use.
    /// Any secret key material in `cert` is dropped.
    pub fn new(cert: Cert, address: &str) -> Self {
        Recipient {
            cert: cert.strip_secret_key_material(),
            address: address.to_owned(),
            binding: AddressBinding::UserId,
        }
    }

    /// A recipient whose certificate was explicitly configured for
    /// `address`: the user IDs are not checked against it.
    pub fn pinned(cert: Cert, address: &str) -> Self {
        Recipient {
            binding: AddressBinding::Pinned,
            ..Recipient::new(cert, address)
        }
    }

    /// Parses a public certificate (armored or binary, exactly one).
    pub fn from_bytes(data: &[u8], address: &str) -> Result<Self, PgpError> {
        let cert = Cert::from_bytes(data).map_err(|e| PgpError::InvalidCertificate {
            reason: format!("certificate for <{address}>: {e}"),
        })?;
        Ok(Recipient::new(cert, address))
    }

    /// The address this certificate is used for.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The certificate.
    pub fn cert(&self) -> &Cert {
        &self.cert
    }

    /// Checks, at `now`, that this recipient can be encrypted to (the same
    /// check `encrypt` makes): for refusing at RCPT time (I6).
    pub fn check(&self, now: SystemTime) -> Result<(), PgpError> {
        let policy = StandardPolicy::new();
        encryption_keys(
            &self.cert,
            &self.address,
            self.checks_address(),
            &policy,
            now,
        )
        .map(|_| ())
    }

    /// Whether a user ID must match the address.
    pub(crate) fn checks_address(&self) -> bool {
        self.binding == AddressBinding::UserId
    }
}

/// What a recipient advertises, as far as the message format is concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// The Features subpacket; `None` if absent.
    pub features: Option<Features>,
    /// Preferred symmetric algorithms; `None` if absent.
    pub symmetric: Option<Vec<SymmetricAlgorithm>>,
    /// Preferred AEAD ciphersuites; `None` if absent.
    pub aead: Option<Vec<(SymmetricAlgorithm, AEADAlgorithm)>>,
}

impl Capabilities {
    fn of(vc: &ValidCert<'_>) -> Self {
        Capabilities {
            features: vc.features(),
            symmetric: vc.preferred_symmetric_algorithms().map(|s| s.to_vec()),
            aead: vc.preferred_aead_ciphersuites().map(|s| s.to_vec()),
        }
    }
}

/// The encryption keys chosen for one certificate.
pub(crate) struct Selected<'a> {
    pub(crate) caps: Capabilities,
    pub(crate) keys: Vec<&'a Key<PublicParts, UnspecifiedRole>>,
}

/// `cert` under `policy` at `now`, or why it cannot be used at all: not valid under the
/// policy, revoked, or not alive (worded by `not_alive`).
fn valid_at<'a>(
    cert: &'a Cert,
    policy: &'a dyn Policy,
    now: SystemTime,
    not_alive: &str,
) -> Result<ValidCert<'a>, String> {
    let vc = cert
        .with_policy(policy, now)
        .map_err(|e| format!("certificate not valid at this time: {e}"))?;
    if let RevocationStatus::Revoked(_) = vc.revocation_status() {
        return Err("certificate revoked".into());
    }
    vc.alive().map_err(|e| format!("{not_alive}: {e}"))?;
    Ok(vc)
}

/// Chooses ALL alive, non-revoked, supported transport-encryption subkeys
/// of `cert` at `now`; an empty choice is an error naming `address`.
pub(crate) fn encryption_keys<'a>(
    cert: &'a Cert,
    address: &str,
    check_address: bool,
    policy: &'a (dyn Policy + 'a),
    now: SystemTime,
) -> Result<Selected<'a>, PgpError> {
    let fingerprint = cert.fingerprint().to_hex();
    let none = |reason: String| PgpError::NoUsableEncryptionKey {
        address: address.to_owned(),
        fingerprint: fingerprint.clone(),
        reason,
    };
    let vc = valid_at(cert, policy, now, "certificate expired or not yet valid").map_err(none)?;

    if check_address && !has_user_id_for(&vc, address) {
        return Err(PgpError::AddressMismatch {
            address: address.to_owned(),
            fingerprint,
        });
    }

    let mut keys = Vec::new();
    for ka in vc
        .keys()
        .supported()
        .alive()
        .revoked(false)
        .for_transport_encryption()
    {
        // `key()` borrows from `cert`, not from the amalgamation.
        let key: &'a Key<PublicParts, _> = ka.key();
        keys.push(key.role_as_unspecified());
    }
    if keys.is_empty() {
        return Err(none(why_no_encryption_key(&vc)));
    }
    Ok(Selected {
        caps: Capabilities::of(&vc),
        keys,
    })
}

/// Explains, for the error message, why no encryption key was found.
fn why_no_encryption_key(vc: &ValidCert<'_>) -> String {
    let candidates: Vec<_> = vc.keys().for_transport_encryption().collect();
    if candidates.is_empty() {
        return "no transport-encryption-capable subkey".into();
    }
    let mut reasons = Vec::new();
    for ka in &candidates {
        let fpr = ka.key().fingerprint().to_hex();
        if let RevocationStatus::Revoked(_) = ka.revocation_status() {
            reasons.push(format!("encryption subkey {fpr} revoked"));
        } else if ka.alive().is_err() {
            reasons.push(format!("encryption subkey {fpr} expired"));
        } else {
            reasons.push(format!(
                "encryption subkey {fpr} uses an unsupported algorithm ({})",
                ka.key().pk_algo()
            ));
        }
    }
    reasons.join("; ")
}

fn has_user_id_for(vc: &ValidCert<'_>, address: &str) -> bool {
    let wanted = address.trim().to_lowercase();
    vc.userids().revoked(false).any(|u| {
        u.userid()
            .email_normalized()
            .ok()
            .flatten()
            .is_some_and(|e| e == wanted)
    })
}
