//! RecipientInfo builders on cms 0.2.3's public `RecipientInfoBuilder` trait: RSA key transport
//! (PKCS#1 v1.5 or RSAES-OAEP/SHA-256, RFC 8017 / RFC 4055) and ECDH P-256 key agreement with
//! the X9.63 SHA-256 KDF and AES-256 key wrap (RFC 5753 §3.1, RFC 3394).

use cms::builder::{RecipientInfoBuilder, RecipientInfoType};
use cms::cert::IssuerAndSerialNumber;
use cms::content_info::CmsVersion;
use cms::enveloped_data::{
    EncryptedKey, KeyAgreeRecipientIdentifier, KeyAgreeRecipientInfo, KeyTransRecipientInfo,
    OriginatorIdentifierOrKey, OriginatorPublicKey, RecipientEncryptedKey, RecipientIdentifier,
    RecipientInfo,
};
use der::asn1::{Any, BitString, OctetString};
use der::{Encode, Sequence};
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use spki::AlgorithmIdentifierOwned;
use zeroize::Zeroizing;

use super::oids;
use super::options::KeyTransport;

type CmsResult<T> = Result<T, cms::builder::Error>;

fn builder_error(what: &str) -> cms::builder::Error {
    cms::builder::Error::Builder(what.to_string())
}

/// RSAES-OAEP-params (RFC 4055 §4.1) for SHA-256 / MGF1-SHA-256 / empty label.
#[derive(Clone, Debug, Sequence)]
struct OaepParams {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    hash: AlgorithmIdentifierOwned,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT")]
    mask_gen: AlgorithmIdentifierOwned,
}

fn sha256_identifier() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: oids::ID_SHA256,
        parameters: Some(Any::null()),
    }
}

pub(crate) fn oaep_algorithm() -> CmsResult<AlgorithmIdentifierOwned> {
    let params = OaepParams {
        hash: sha256_identifier(),
        mask_gen: AlgorithmIdentifierOwned {
            oid: oids::ID_MGF1,
            parameters: Some(Any::encode_from(&sha256_identifier())?),
        },
    };
    Ok(AlgorithmIdentifierOwned {
        oid: oids::ID_RSAES_OAEP,
        parameters: Some(Any::encode_from(&params)?),
    })
}

/// KeyTransRecipientInfo (version 0, issuerAndSerialNumber) for an RSA recipient.
pub(crate) struct KeyTransBuilder {
    pub(crate) rid: IssuerAndSerialNumber,
    pub(crate) key: rsa::RsaPublicKey,
    pub(crate) transport: KeyTransport,
}

impl RecipientInfoBuilder for KeyTransBuilder {
    fn recipient_info_type(&self) -> RecipientInfoType {
        RecipientInfoType::Ktri
    }

    fn recipient_info_version(&self) -> CmsVersion {
        CmsVersion::V0
    }

    fn build(&mut self, cek: &[u8]) -> CmsResult<RecipientInfo> {
        let (encrypted, key_enc_alg) = match self.transport {
            KeyTransport::RsaPkcs1v15 => (
                self.key
                    .encrypt(&mut OsRng, rsa::Pkcs1v15Encrypt, cek)
                    .map_err(|_| builder_error("RSA PKCS#1 v1.5 encryption"))?,
                AlgorithmIdentifierOwned {
                    oid: oids::RSA_ENCRYPTION,
                    parameters: Some(Any::null()),
                },
            ),
            KeyTransport::RsaOaepSha256 => (
                self.key
                    .encrypt(&mut OsRng, rsa::Oaep::new::<Sha256>(), cek)
                    .map_err(|_| builder_error("RSAES-OAEP encryption"))?,
                oaep_algorithm()?,
            ),
        };
        Ok(RecipientInfo::Ktri(KeyTransRecipientInfo {
            version: CmsVersion::V0,
            rid: RecipientIdentifier::IssuerAndSerialNumber(self.rid.clone()),
            key_enc_alg,
            enc_key: EncryptedKey::new(encrypted)?,
        }))
    }
}

/// ECC-CMS-SharedInfo (RFC 5753 §7.2), the KDF's SharedInfo.
#[derive(Clone, Debug, Sequence)]
struct EccCmsSharedInfo {
    key_info: AlgorithmIdentifierOwned,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    entity_u_info: Option<OctetString>,
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT")]
    supp_pub_info: OctetString,
}

/// ANSI X9.63 KDF with SHA-256 producing one 32-byte block (enough for an AES-256 KEK).
fn x963_kdf_sha256(shared_secret: &[u8], shared_info: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut hasher = Sha256::new();
    hasher.update(shared_secret);
    hasher.update(1u32.to_be_bytes());
    hasher.update(shared_info);
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&hasher.finalize());
    out
}

/// KeyAgreeRecipientInfo (version 3) for a P-256 recipient: ephemeral-static ECDH
/// (dhSinglePass-stdDH-sha256kdf-scheme), CEK wrapped with AES-256 key wrap.
pub(crate) struct KeyAgreeBuilder {
    pub(crate) rid: IssuerAndSerialNumber,
    pub(crate) key: p256::PublicKey,
}

impl RecipientInfoBuilder for KeyAgreeBuilder {
    fn recipient_info_type(&self) -> RecipientInfoType {
        RecipientInfoType::Kari
    }

    fn recipient_info_version(&self) -> CmsVersion {
        CmsVersion::V3
    }

    fn build(&mut self, cek: &[u8]) -> CmsResult<RecipientInfo> {
        use p256::elliptic_curve::sec1::ToEncodedPoint;

        let ephemeral = p256::ecdh::EphemeralSecret::random(&mut OsRng);
        let ephemeral_public = ephemeral.public_key().to_encoded_point(false);
        let shared = ephemeral.diffie_hellman(&self.key);
        let wrap_alg = AlgorithmIdentifierOwned {
            oid: oids::ID_AES256_WRAP,
            parameters: None,
        };
        let shared_info = EccCmsSharedInfo {
            key_info: wrap_alg.clone(),
            entity_u_info: None,
            supp_pub_info: OctetString::new(256u32.to_be_bytes().to_vec())?,
        }
        .to_der()?;
        let kek = x963_kdf_sha256(shared.raw_secret_bytes().as_slice(), &shared_info);
        let wrapped = aes_kw::KekAes256::from(*kek)
            .wrap_vec(cek)
            .map_err(|_| builder_error("AES key wrap"))?;

        Ok(RecipientInfo::Kari(KeyAgreeRecipientInfo {
            version: CmsVersion::V3,
            originator: OriginatorIdentifierOrKey::OriginatorKey(OriginatorPublicKey {
                algorithm: AlgorithmIdentifierOwned {
                    oid: oids::ID_EC_PUBLIC_KEY,
                    parameters: None,
                },
                public_key: BitString::from_bytes(ephemeral_public.as_bytes())?,
            }),
            ukm: None,
            key_enc_alg: AlgorithmIdentifierOwned {
                oid: oids::DH_SINGLE_PASS_STD_DH_SHA256_KDF,
                parameters: Some(Any::encode_from(&wrap_alg)?),
            },
            recipient_enc_keys: vec![RecipientEncryptedKey {
                rid: KeyAgreeRecipientIdentifier::IssuerAndSerialNumber(self.rid.clone()),
                enc_key: EncryptedKey::new(wrapped)?,
            }],
        }))
    }
}

/// One builder per recipient, whatever its key type.
pub(crate) enum AnyRecipient {
    KeyTrans(KeyTransBuilder),
    KeyAgree(KeyAgreeBuilder),
}

impl RecipientInfoBuilder for AnyRecipient {
    fn recipient_info_type(&self) -> RecipientInfoType {
        match self {
            AnyRecipient::KeyTrans(b) => b.recipient_info_type(),
            AnyRecipient::KeyAgree(b) => b.recipient_info_type(),
        }
    }

    fn recipient_info_version(&self) -> CmsVersion {
        match self {
            AnyRecipient::KeyTrans(b) => b.recipient_info_version(),
            AnyRecipient::KeyAgree(b) => b.recipient_info_version(),
        }
    }

    fn build(&mut self, cek: &[u8]) -> CmsResult<RecipientInfo> {
        match self {
            AnyRecipient::KeyTrans(b) => b.build(cek),
            AnyRecipient::KeyAgree(b) => b.build(cek),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oaep_params_der() {
        // RFC 4055 encoding for SHA-256 / MGF1-SHA-256, NULL hash parameters.
        let der = oaep_algorithm().unwrap().to_der().unwrap();
        let hex: String = der.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "303c06092a864886f70d010107\
             302fa00f300d06096086480165030402010500\
             a11c301a06092a864886f70d010108300d06096086480165030402010500"
        );
    }

    #[test]
    fn kdf_known_answer() {
        // SHA-256(Z || 00000001 || info) computed independently.
        let k = x963_kdf_sha256(b"Z", b"info");
        let mut h = Sha256::new();
        h.update(b"Z\x00\x00\x00\x01info");
        assert_eq!(k.as_slice(), h.finalize().as_slice());
    }
}
