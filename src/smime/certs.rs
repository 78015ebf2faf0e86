//! Reading keys out of certificates and checking that they may be used (at `now`).

use std::time::SystemTime;

use cms::cert::IssuerAndSerialNumber;
use der::Encode;
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use x509_cert::ext::pkix::{ExtendedKeyUsage, KeyUsage};
use x509_cert::Certificate;

use super::error::{CertProblem, SmimeError};
use super::oids;

/// Smallest RSA modulus accepted, for recipients and signers.
pub const MIN_RSA_BITS: usize = 2048;

/// A public key we can encrypt to or verify with.
#[derive(Clone, Debug)]
pub(crate) enum PublicKey {
    Rsa(rsa::RsaPublicKey),
    P256(p256::PublicKey),
}

/// What the key is going to be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Usage {
    Encryption,
    Signing,
}

pub(crate) fn subject(cert: &Certificate) -> String {
    cert.tbs_certificate.subject.to_string()
}

fn problem(cert: &Certificate, problem: CertProblem) -> SmimeError {
    SmimeError::Certificate {
        subject: subject(cert),
        problem,
    }
}

pub(crate) fn issuer_and_serial(cert: &Certificate) -> IssuerAndSerialNumber {
    IssuerAndSerialNumber {
        issuer: cert.tbs_certificate.issuer.clone(),
        serial_number: cert.tbs_certificate.serial_number.clone(),
    }
}

/// The certificate's public key (RSA >= 2048 bits or EC P-256).
pub(crate) fn public_key(cert: &Certificate) -> Result<PublicKey, SmimeError> {
    let spki = &cert.tbs_certificate.subject_public_key_info;
    let spki_der = spki
        .to_der()
        .map_err(|_| problem(cert, CertProblem::InvalidPublicKey))?;
    if spki.algorithm.oid == oids::RSA_ENCRYPTION {
        let key = rsa::RsaPublicKey::from_public_key_der(&spki_der)
            .map_err(|_| problem(cert, CertProblem::InvalidPublicKey))?;
        let bits = key.n().bits();
        if bits < MIN_RSA_BITS {
            return Err(problem(cert, CertProblem::RsaKeyTooSmall { bits }));
        }
        Ok(PublicKey::Rsa(key))
    } else if spki.algorithm.oid == oids::ID_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<const_oid::ObjectIdentifier>().ok());
        if curve != Some(oids::SECP256R1) {
            return Err(problem(cert, CertProblem::UnsupportedCurve));
        }
        let key = p256::PublicKey::from_public_key_der(&spki_der)
            .map_err(|_| problem(cert, CertProblem::InvalidPublicKey))?;
        Ok(PublicKey::P256(key))
    } else {
        Err(problem(
            cert,
            CertProblem::UnsupportedAlgorithm(spki.algorithm.oid.to_string()),
        ))
    }
}

/// Checks validity at `now`, keyUsage and extendedKeyUsage for `usage`, and returns the key.
pub(crate) fn usable_key(
    cert: &Certificate,
    usage: Usage,
    now: SystemTime,
) -> Result<PublicKey, SmimeError> {
    let validity = &cert.tbs_certificate.validity;
    if now < validity.not_before.to_system_time() || now > validity.not_after.to_system_time() {
        return Err(problem(cert, CertProblem::NotValidAt));
    }
    let key = public_key(cert)?;
    let key_usage = cert
        .tbs_certificate
        .get::<KeyUsage>()
        .map_err(|_| problem(cert, CertProblem::MalformedExtension))?;
    if let Some((_, ku)) = key_usage {
        match (usage, &key) {
            (Usage::Encryption, PublicKey::Rsa(_)) if !ku.key_encipherment() => {
                return Err(problem(cert, CertProblem::KeyUsage("keyEncipherment")))
            }
            (Usage::Encryption, PublicKey::P256(_)) if !ku.key_agreement() => {
                return Err(problem(cert, CertProblem::KeyUsage("keyAgreement")))
            }
            (Usage::Signing, _) if !ku.digital_signature() && !ku.non_repudiation() => {
                return Err(problem(cert, CertProblem::KeyUsage("digitalSignature")))
            }
            _ => {}
        }
    }
    let eku = cert
        .tbs_certificate
        .get::<ExtendedKeyUsage>()
        .map_err(|_| problem(cert, CertProblem::MalformedExtension))?;
    if let Some((_, eku)) = eku {
        let ok = eku.0.iter().any(|oid| {
            *oid == oids::ID_KP_EMAIL_PROTECTION || *oid == oids::ANY_EXTENDED_KEY_USAGE
        });
        if !ok {
            return Err(problem(cert, CertProblem::ExtendedKeyUsage));
        }
    }
    Ok(key)
}
