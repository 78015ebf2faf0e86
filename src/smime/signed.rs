//! CMS SignedData (RFC 5652 §5, RFC 8551 §2.5) on top of cms 0.2.3's `SignerInfoBuilder`.

use std::time::SystemTime;

use cms::builder::{SignedDataBuilder, SignerInfoBuilder};
use cms::cert::CertificateChoices;
use cms::signed_data::{EncapsulatedContentInfo, SignerIdentifier};
use der::asn1::{Any, SetOfVec};
use der::{Decode, Encode, Tag};
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use signature::{Keypair, RandomizedSigner};
use spki::{AlgorithmIdentifierOwned, DynSignatureAlgorithmIdentifier};
use x509_cert::attr::Attribute;

use super::certs::{self, Usage};
use super::error::SmimeError;
use super::identity::{SignerKey, SigningIdentity};
use super::oids;

/// RSA PKCS#1 v1.5 / SHA-256 signer that always signs through rsa's blinded path
/// (`RandomizedSigner`), avoiding the unblinded `Signer` impl (RUSTSEC-2023-0071).
struct BlindedRsaSigner<'k>(&'k rsa::pkcs1v15::SigningKey<Sha256>);

impl Keypair for BlindedRsaSigner<'_> {
    type VerifyingKey = rsa::pkcs1v15::VerifyingKey<Sha256>;
    fn verifying_key(&self) -> Self::VerifyingKey {
        self.0.verifying_key()
    }
}

impl DynSignatureAlgorithmIdentifier for BlindedRsaSigner<'_> {
    /// `rsaEncryption` with NULL parameters, as RFC 3370 §3.2 and most S/MIME producers write it.
    fn signature_algorithm_identifier(&self) -> spki::Result<AlgorithmIdentifierOwned> {
        Ok(AlgorithmIdentifierOwned {
            oid: oids::RSA_ENCRYPTION,
            parameters: Some(Any::null()),
        })
    }
}

impl signature::Signer<rsa::pkcs1v15::Signature> for BlindedRsaSigner<'_> {
    fn try_sign(&self, msg: &[u8]) -> Result<rsa::pkcs1v15::Signature, signature::Error> {
        self.0.try_sign_with_rng(&mut OsRng, msg)
    }
}

fn attribute(oid: const_oid::ObjectIdentifier, value: Any) -> Result<Attribute, SmimeError> {
    let mut values = SetOfVec::new();
    values.insert(value)?;
    Ok(Attribute { oid, values })
}

/// signing-time (RFC 5652 §11.3): UTCTime until 2049, GeneralizedTime after.
fn signing_time(now: SystemTime) -> Result<Attribute, SmimeError> {
    let dt = der::DateTime::from_system_time(now)?;
    let der = if dt.year() < 2050 {
        der::asn1::UtcTime::from_date_time(dt)?.to_der()?
    } else {
        der::asn1::GeneralizedTime::from_date_time(dt).to_der()?
    };
    attribute(oids::ID_SIGNING_TIME, Any::from_der(&der)?)
}

/// SMIMECapabilities (RFC 8551 §2.5.2): the algorithms the sender's client accepts, in order of
/// preference.
fn smime_capabilities(caps: &[const_oid::ObjectIdentifier]) -> Result<Attribute, SmimeError> {
    let seq: Vec<AlgorithmIdentifierOwned> = caps
        .iter()
        .map(|oid| AlgorithmIdentifierOwned {
            oid: *oid,
            parameters: None,
        })
        .collect();
    attribute(oids::ID_SMIME_CAPABILITIES, Any::encode_from(&seq)?)
}

/// What the SignedData carries.
pub(crate) enum Encapsulation {
    /// Detached signature (multipart/signed): eContent absent.
    Detached,
    /// Opaque signed-data: the content is inside.
    Opaque,
}

/// DER of a ContentInfo holding SignedData over `content`, with signed attributes content-type,
/// message-digest (added by the cms builder), signing-time and SMIMECapabilities, and the
/// signer's certificate chain.
pub(crate) fn signed_data(
    content: &[u8],
    identity: &SigningIdentity,
    encapsulation: Encapsulation,
    now: SystemTime,
    capabilities: &[const_oid::ObjectIdentifier],
) -> Result<Vec<u8>, SmimeError> {
    certs::usable_key(identity.certificate(), Usage::Signing, now)?;
    let digest = Sha256::digest(content);
    let eci = EncapsulatedContentInfo {
        econtent_type: oids::ID_DATA,
        econtent: match encapsulation {
            Encapsulation::Detached => None,
            Encapsulation::Opaque => Some(Any::new(Tag::OctetString, content)?),
        },
    };
    let external_digest = match encapsulation {
        Encapsulation::Detached => Some(digest.as_slice()),
        Encapsulation::Opaque => None,
    };
    let sid =
        SignerIdentifier::IssuerAndSerialNumber(certs::issuer_and_serial(identity.certificate()));
    let digest_alg = AlgorithmIdentifierOwned {
        oid: oids::ID_SHA256,
        parameters: None,
    };

    let mut builder = SignedDataBuilder::new(&eci);
    builder.add_digest_algorithm(digest_alg.clone())?;
    let mut seen: Vec<Vec<u8>> = Vec::new();
    for cert in identity.chain() {
        let der = cert.to_der()?;
        if !seen.contains(&der) {
            seen.push(der);
            builder.add_certificate(CertificateChoices::Certificate(cert.clone()))?;
        }
    }
    let time_attr = signing_time(now)?;
    let caps_attr = smime_capabilities(capabilities)?;
    match &identity.key {
        SignerKey::Rsa(key) => {
            let signer = BlindedRsaSigner(key);
            let mut sib = SignerInfoBuilder::new(&signer, sid, digest_alg, &eci, external_digest)?;
            sib.add_signed_attribute(time_attr)?;
            sib.add_signed_attribute(caps_attr)?;
            builder.add_signer_info::<_, rsa::pkcs1v15::Signature>(sib)?;
        }
        SignerKey::P256(key) => {
            let mut sib = SignerInfoBuilder::new(key, sid, digest_alg, &eci, external_digest)?;
            sib.add_signed_attribute(time_attr)?;
            sib.add_signed_attribute(caps_attr)?;
            builder.add_signer_info::<_, p256::ecdsa::DerSignature>(sib)?;
        }
    }
    let content_info = builder.build()?;
    Ok(content_info.to_der()?)
}

/// The default SMIMECapabilities: what common mail clients decrypt (strongest first).
pub(crate) fn default_capabilities() -> Vec<const_oid::ObjectIdentifier> {
    vec![
        oids::ID_AES256_CBC,
        oids::ID_AES192_CBC,
        oids::ID_AES128_CBC,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::Tagged;

    #[test]
    fn signing_time_encodings() {
        use std::time::{Duration, UNIX_EPOCH};
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000); // 2027
        let a = signing_time(t).unwrap();
        assert_eq!(a.values.get(0).unwrap().tag(), Tag::UtcTime);
        let t = UNIX_EPOCH + Duration::from_secs(2_600_000_000); // 2052
        let a = signing_time(t).unwrap();
        assert_eq!(a.values.get(0).unwrap().tag(), Tag::GeneralizedTime);
    }
}
