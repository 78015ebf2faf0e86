//! OpenPGP certificates (sequoia): parsing certificates, keyrings and secret keys (TSK),
//! the facts kept about them, and the usability check at a given time under `StandardPolicy`.
//!
//! sequoia reports errors as `anyhow::Error`; they are turned into strings here, at the
//! module boundary, and never leave it as `anyhow`.

use std::time::SystemTime;

use sequoia_openpgp as pgp;

use pgp::cert::amalgamation::key::ValidKeyAmalgamationIter;
use pgp::cert::prelude::*;
use pgp::packet::key::{KeyParts, KeyRole};
use pgp::parse::Parse;
use pgp::policy::StandardPolicy;
use pgp::serialize::{Serialize as _, SerializeInto};
use pgp::types::RevocationStatus;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::x509::unix_secs;
use super::{Purpose, Unusable};
use crate::address::Address;

/// What the store records about one OpenPGP certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgpInfo {
    /// Primary key fingerprint, upper-case hex.
    pub fingerprint: String,
    /// Primary key algorithm and size, e.g. `EdDSA`, `RSA-3072`.
    pub algorithm: String,
    /// Every user id, as text (lossy UTF-8).
    pub userids: Vec<String>,
    /// Addresses of all user ids (normalised display form), including revoked ones so that a
    /// lookup can say why they are not used.
    pub addresses: Vec<String>,
    /// Primary key creation time, seconds since the epoch.
    pub created: u64,
}

fn describe_key<P: pgp::packet::key::KeyParts, R: pgp::packet::key::KeyRole>(
    k: &pgp::packet::Key<P, R>,
) -> String {
    match k.mpis().bits() {
        Some(b) if matches!(k.pk_algo(), pgp::types::PublicKeyAlgorithm::RSAEncryptSign) => {
            format!("RSA-{b}")
        }
        _ => k.pk_algo().to_string(),
    }
}

/// Extracts [`PgpInfo`].
pub fn info(cert: &Cert) -> PgpInfo {
    let userids: Vec<String> = cert
        .userids()
        .map(|u| String::from_utf8_lossy(u.userid().value()).into_owned())
        .collect();
    let mut addresses: Vec<String> = cert
        .userids()
        .filter_map(|u| u.userid().email().ok().flatten().map(str::to_string))
        .filter_map(|e| Address::parse(&e).ok())
        .map(|a| a.as_str().to_string())
        .collect();
    addresses.sort();
    addresses.dedup();
    PgpInfo {
        fingerprint: cert.fingerprint().to_hex(),
        algorithm: describe_key(cert.primary_key().key()),
        userids,
        addresses,
        created: unix_secs(cert.primary_key().key().creation_time()),
    }
}

/// True when `data` looks like OpenPGP: ASCII armor, or a binary packet header (high bit set).
pub fn looks_like_openpgp(data: &[u8]) -> bool {
    let start = data
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(data.len());
    let d = &data[start..];
    d.starts_with(b"-----BEGIN PGP ") || d.first().is_some_and(|b| b & 0x80 != 0)
}

/// Every certificate in an armored or binary certificate, keyring or TSK. Any parse error
/// anywhere fails the whole file (a truncated keyring must not import half).
pub fn parse_certs(
    data: &[u8],
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Cert>, String> {
    let parser = CertParser::from_bytes(data).map_err(|e| format!("not OpenPGP data: {e}"))?;
    let mut out = Vec::new();
    for c in parser {
        let c =
            c.map_err(|e| format!("bad OpenPGP data after {} certificate(s): {e}", out.len()))?;
        out.push(c);
        progress(out.len(), 0);
    }
    if out.is_empty() {
        return Err("no OpenPGP certificate found".into());
    }
    Ok(out)
}

/// Binary serialisation of the public parts.
pub fn public_bytes(cert: &Cert) -> Result<Vec<u8>, String> {
    cert.to_vec().map_err(|e| e.to_string())
}

/// Binary serialisation with secret key material (zeroized on drop).
pub fn tsk_bytes(cert: &Cert) -> Result<Zeroizing<Vec<u8>>, String> {
    let mut v = Zeroizing::new(Vec::new());
    cert.as_tsk()
        .serialize(&mut *v)
        .map_err(|e| e.to_string())?;
    Ok(v)
}

/// ASCII armor of the public parts.
pub fn armored_public(cert: &Cert) -> Result<String, String> {
    let v = cert.armored().to_vec().map_err(|e| e.to_string())?;
    String::from_utf8(v).map_err(|e| e.to_string())
}

/// Parses one stored certificate.
pub fn from_bytes(bytes: &[u8]) -> Result<Cert, String> {
    Cert::from_bytes(bytes).map_err(|e| e.to_string())
}

/// Merges `new` into `old` (same fingerprint): new self-signatures (a changed expiry), new
/// revocations, user ids and subkeys are added; sequoia then uses the newest valid ones.
pub fn merge(old: Cert, new: Cert) -> Result<Cert, String> {
    old.merge_public_and_secret(new).map_err(|e| e.to_string())
}

/// Decrypts every encrypted secret key with `passphrase` (when needed), so that the relay can
/// sign unattended. Errors when a key is protected and no (or a wrong) passphrase is given.
pub fn unlock(cert: Cert, passphrase: Option<&[u8]>) -> Result<Cert, String> {
    let mut decrypted: Vec<pgp::Packet> = Vec::new();
    for ka in cert.keys().secret() {
        if ka.key().has_unencrypted_secret() {
            continue;
        }
        let Some(pw) = passphrase else {
            return Err(format!(
                "secret key {} is passphrase-protected: give --passphrase-file",
                ka.key().fingerprint()
            ));
        };
        let password = pgp::crypto::Password::from(pw);
        let key =
            ka.key().clone().decrypt_secret(&password).map_err(|_| {
                format!("wrong passphrase for secret key {}", ka.key().fingerprint())
            })?;
        if ka.primary() {
            decrypted.push(key.role_into_primary().into());
        } else {
            decrypted.push(key.role_into_subordinate().into());
        }
    }
    if decrypted.is_empty() {
        return Ok(cert);
    }
    cert.insert_packets(decrypted)
        .map(|(c, _)| c)
        .map_err(|e| e.to_string())
}

/// Every reason `cert` cannot be used for `purpose` towards/as `address` at `now`.
/// For [`Purpose::Sign`], `cert` must be the TSK: a signing-capable, unencrypted secret key is
/// required.
pub fn check(cert: &Cert, address: &Address, now: SystemTime, purpose: Purpose) -> Vec<Unusable> {
    let mut reasons = Vec::new();
    let has_address = cert.userids().any(|u| names(u.userid(), address));
    if !has_address {
        reasons.push(Unusable::WrongAddress);
    }
    let created = cert.primary_key().key().creation_time();
    if now < created {
        reasons.push(Unusable::NotYetValid {
            not_before: unix_secs(created),
        });
        return reasons;
    }
    let policy = StandardPolicy::new();
    let vc = match cert.with_policy(&policy, now) {
        Ok(vc) => vc,
        Err(e) => {
            reasons.push(Unusable::Policy(e.to_string()));
            return reasons;
        }
    };
    if let RevocationStatus::Revoked(_) = vc.revocation_status() {
        reasons.push(Unusable::Revoked("certificate is revoked".into()));
    }
    if vc.alive().is_err() {
        let not_after = vc
            .primary_key()
            .key_expiration_time()
            .map(unix_secs)
            .unwrap_or(0);
        reasons.push(Unusable::Expired { not_after });
    }
    if has_address
        && !vc.userids().any(|u| {
            names(u.userid(), address)
                && !matches!(u.revocation_status(), RevocationStatus::Revoked(_))
        })
    {
        reasons.push(Unusable::Revoked(format!(
            "no valid, non-revoked user id for {address}"
        )));
    }
    reasons.extend(missing_key(&vc, purpose));
    reasons
}

/// True when the user id's email is `address`.
fn names(userid: &pgp::packet::UserID, address: &Address) -> bool {
    userid
        .email()
        .ok()
        .flatten()
        .and_then(|e| Address::parse(e).ok())
        .is_some_and(|a| a.matches(address))
}

/// Why no key of `vc` serves `purpose`, if none does: no capable key, or (to sign) none whose
/// secret is at hand unencrypted.
fn missing_key(vc: &ValidCert<'_>, purpose: Purpose) -> Option<Unusable> {
    match purpose {
        Purpose::Encrypt => current(vc.keys())
            .for_transport_encryption()
            .next()
            .is_none()
            .then_some(Unusable::NoEncryptionKey),
        Purpose::Sign => {
            if current(vc.keys()).for_signing().next().is_none() {
                Some(Unusable::NoSigningKey)
            } else if current(vc.keys().unencrypted_secret())
                .for_signing()
                .next()
                .is_none()
            {
                Some(Unusable::NoSecretKey)
            } else {
                None
            }
        }
    }
}

/// The keys that sequoia supports, alive and not revoked.
fn current<'a, P: KeyParts, R: KeyRole>(
    keys: ValidKeyAmalgamationIter<'a, P, R>,
) -> ValidKeyAmalgamationIter<'a, P, R> {
    keys.supported().alive().revoked(false)
}

/// Usage summary at `now`, e.g. `certify,sign,encrypt`.
pub fn usage_summary(cert: &Cert, now: SystemTime) -> String {
    let policy = StandardPolicy::new();
    let Ok(vc) = cert.with_policy(&policy, now) else {
        return "none (invalid under policy)".into();
    };
    let mut v = Vec::new();
    if vc
        .keys()
        .alive()
        .revoked(false)
        .for_signing()
        .next()
        .is_some()
    {
        v.push("sign");
    }
    if vc
        .keys()
        .alive()
        .revoked(false)
        .for_transport_encryption()
        .next()
        .is_some()
    {
        v.push("encrypt");
    }
    if v.is_empty() {
        "none".into()
    } else {
        v.join(",")
    }
}

/// Validity summary at `now` for listings: `(expires, state)`.
pub fn validity(cert: &Cert, now: SystemTime) -> (Option<u64>, String) {
    let policy = StandardPolicy::new();
    match cert.with_policy(&policy, now) {
        Err(e) => (None, format!("invalid: {e}")),
        Ok(vc) => {
            let exp = vc.primary_key().key_expiration_time().map(unix_secs);
            let state = if let RevocationStatus::Revoked(_) = vc.revocation_status() {
                "revoked"
            } else if vc.alive().is_err() {
                "expired"
            } else {
                "valid"
            };
            (exp, state.into())
        }
    }
}
