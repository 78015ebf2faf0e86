//! EnvelopedData (AES-256-CBC, through cms 0.2.3's builder) and AuthEnvelopedData (AES-256-GCM,
//! RFC 5083/5084, assembled here from `der` types since cms 0.2.3 lacks it).

use std::time::SystemTime;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use cms::builder::{ContentEncryptionAlgorithm, EnvelopedDataBuilder, RecipientInfoBuilder};
use cms::content_info::CmsVersion;
use cms::enveloped_data::{EncryptedContentInfo, RecipientInfo, RecipientInfos};
use der::asn1::{Any, OctetString};
use der::{Encode, Header, Sequence, Tag, TagNumber};
use rand::rngs::OsRng;
use rand::RngCore;
use spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;
use zeroize::Zeroizing;

use super::certs::{self, PublicKey, Usage};
use super::error::SmimeError;
use super::oids;
use super::options::{ContentEncryption, KeyTransport};
use super::recipients::{AnyRecipient, KeyAgreeBuilder, KeyTransBuilder};

/// AuthEnvelopedData (RFC 5083 §2.1) without the optional fields we never write.
#[derive(Clone, Debug, Sequence)]
struct AuthEnvelopedData {
    version: CmsVersion,
    recip_infos: RecipientInfos,
    auth_encrypted_content: EncryptedContentInfo,
    mac: OctetString,
}

/// GCMParameters (RFC 5084 §3.2) with a 16-octet ICV written out (the default is 12).
#[derive(Clone, Debug, Sequence)]
struct GcmParameters {
    nonce: OctetString,
    icv_len: u8,
}

/// An encrypted CMS object and the smime-type that labels it.
pub(crate) struct Enveloped {
    pub(crate) der: Vec<u8>,
    pub(crate) smime_type: &'static str,
}

/// One RecipientInfo builder per certificate, each checked at `now`.
fn builders(
    recipients: &[Certificate],
    transport: KeyTransport,
    now: SystemTime,
) -> Result<Vec<AnyRecipient>, SmimeError> {
    if recipients.is_empty() {
        return Err(SmimeError::NoRecipients);
    }
    recipients
        .iter()
        .map(|cert| {
            let rid = certs::issuer_and_serial(cert);
            Ok(match certs::usable_key(cert, Usage::Encryption, now)? {
                PublicKey::Rsa(key) => AnyRecipient::KeyTrans(KeyTransBuilder {
                    rid,
                    key,
                    transport,
                }),
                PublicKey::P256(key) => AnyRecipient::KeyAgree(KeyAgreeBuilder { rid, key }),
            })
        })
        .collect()
}

/// Checks every recipient certificate without encrypting anything.
pub(crate) fn check_recipients(
    recipients: &[Certificate],
    now: SystemTime,
) -> Result<(), SmimeError> {
    builders(recipients, KeyTransport::default(), now).map(|_| ())
}

/// Encrypts `content` to every certificate in `recipients` (one RecipientInfo each, nobody else).
pub(crate) fn envelope(
    content: Vec<u8>,
    recipients: &[Certificate],
    encryption: ContentEncryption,
    transport: KeyTransport,
    now: SystemTime,
) -> Result<Enveloped, SmimeError> {
    let builders = builders(recipients, transport, now)?;
    match encryption {
        ContentEncryption::Aes256Cbc => enveloped_cbc(content, builders),
        ContentEncryption::Aes256Gcm => auth_enveloped_gcm(content, builders),
    }
}

/// EnvelopedData with AES-256-CBC, built by cms's builder.
fn enveloped_cbc(content: Vec<u8>, builders: Vec<AnyRecipient>) -> Result<Enveloped, SmimeError> {
    let enveloped = {
        let mut builder =
            EnvelopedDataBuilder::new(None, &content, ContentEncryptionAlgorithm::Aes256Cbc, None)?;
        for b in builders {
            builder.add_recipient_info(b)?;
        }
        builder.build_with_rng(&mut OsRng)?
    };
    drop(content); // bound memory: plaintext gone before the DER copy is made
    let der = content_info_der(oids::ID_ENVELOPED_DATA, &enveloped)?;
    Ok(Enveloped {
        der,
        smime_type: "enveloped-data",
    })
}

/// AuthEnvelopedData with AES-256-GCM: `content` is encrypted in place under a fresh key and
/// nonce, and the key wrapped for every recipient.
fn auth_enveloped_gcm(
    content: Vec<u8>,
    mut builders: Vec<AnyRecipient>,
) -> Result<Enveloped, SmimeError> {
    let failed = |operation| SmimeError::Crypto { operation };
    let mut cek = Zeroizing::new([0u8; 32]);
    let mut nonce = [0u8; 12];
    OsRng
        .try_fill_bytes(cek.as_mut_slice())
        .and_then(|_| OsRng.try_fill_bytes(&mut nonce))
        .map_err(|_| failed("random generation"))?;
    let cipher = aes_gcm::Aes256Gcm::new_from_slice(cek.as_slice())
        .map_err(|_| failed("AES-GCM key setup"))?;
    let mut buffer = content; // encrypted in place
    let tag = cipher
        .encrypt_in_place_detached(&nonce.into(), b"", &mut buffer)
        .map_err(|_| failed("AES-GCM encryption"))?;
    let infos = builders
        .iter_mut()
        .map(|b| b.build(cek.as_slice()))
        .collect::<Result<Vec<RecipientInfo>, _>>()?;
    let params = GcmParameters {
        nonce: OctetString::new(nonce.to_vec())?,
        icv_len: 16,
    };
    let aed = AuthEnvelopedData {
        version: CmsVersion::V0,
        recip_infos: RecipientInfos::try_from(infos)?,
        auth_encrypted_content: EncryptedContentInfo {
            content_type: oids::ID_DATA,
            content_enc_alg: AlgorithmIdentifierOwned {
                oid: oids::ID_AES256_GCM,
                parameters: Some(Any::encode_from(&params)?),
            },
            encrypted_content: Some(OctetString::new(buffer)?),
        },
        mac: OctetString::new(tag.to_vec())?,
    };
    let der = content_info_der(oids::ID_CT_AUTH_ENVELOPED_DATA, &aed)?;
    Ok(Enveloped {
        der,
        smime_type: "authEnveloped-data",
    })
}

/// DER of `ContentInfo { contentType, [0] EXPLICIT content }`, written around `inner`'s own
/// encoding (the same bytes as encoding a `cms::content_info::ContentInfo`, without first
/// copying the content into an `Any`: this keeps 50 MB messages at a small memory multiple).
fn content_info_der(
    content_type: const_oid::ObjectIdentifier,
    inner: &impl Encode,
) -> Result<Vec<u8>, SmimeError> {
    let inner_len = inner.encoded_len()?;
    let explicit = Header::new(
        Tag::ContextSpecific {
            constructed: true,
            number: TagNumber::N0,
        },
        inner_len,
    )?;
    let explicit_len = (explicit.encoded_len()? + inner_len)?;
    let body_len = (content_type.encoded_len()? + explicit_len)?;
    let outer = Header::new(Tag::Sequence, body_len)?;
    let total = usize::try_from((outer.encoded_len()? + body_len)?)?;
    let mut out = Vec::with_capacity(total);
    outer.encode_to_vec(&mut out)?;
    content_type.encode_to_vec(&mut out)?;
    explicit.encode_to_vec(&mut out)?;
    inner.encode_to_vec(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cms::content_info::ContentInfo;
    use der::asn1::Any;

    #[test]
    fn content_info_matches_cms_encoding() {
        let params = GcmParameters {
            nonce: OctetString::new(vec![7u8; 12]).unwrap(),
            icv_len: 16,
        };
        let ours = content_info_der(oids::ID_DATA, &params).unwrap();
        let theirs = ContentInfo {
            content_type: oids::ID_DATA,
            content: Any::encode_from(&params).unwrap(),
        }
        .to_der()
        .unwrap();
        assert_eq!(ours, theirs);
    }
}
