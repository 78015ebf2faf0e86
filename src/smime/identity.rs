//! The sender's signing identity: certificate chain and private key.

use std::fmt;

use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use sha2::Sha256;
use x509_cert::Certificate;
use zeroize::Zeroizing;

use super::certs::{self, PublicKey};
use super::error::SmimeError;

/// The private half of a signing identity. Both variants zeroize their secret on drop
/// (`rsa::RsaPrivateKey` and `ecdsa::SigningKey` implement `ZeroizeOnDrop`).
pub(crate) enum SignerKey {
    /// RSA, signed with PKCS#1 v1.5 / SHA-256 through the blinded path.
    Rsa(Box<rsa::pkcs1v15::SigningKey<Sha256>>),
    /// ECDSA P-256 with SHA-256.
    P256(p256::ecdsa::SigningKey),
}

/// A signer certificate (first), its chain, and the matching private key.
///
/// `Debug` shows the subject and key type, never the key.
pub struct SigningIdentity {
    chain: Vec<Certificate>,
    pub(crate) key: SignerKey,
}

impl fmt::Debug for SigningIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.key {
            SignerKey::Rsa(_) => "RSA",
            SignerKey::P256(_) => "ECDSA P-256",
        };
        f.debug_struct("SigningIdentity")
            .field("subject", &self.chain.first().map(certs::subject))
            .field("chain_len", &self.chain.len())
            .field("key", &kind)
            .finish()
    }
}

impl SigningIdentity {
    /// An RSA identity; `chain[0]` must hold the public half of `key`.
    pub fn new_rsa(chain: Vec<Certificate>, key: rsa::RsaPrivateKey) -> Result<Self, SmimeError> {
        let cert = chain.first().ok_or(SmimeError::EmptyChain)?;
        match certs::public_key(cert)? {
            PublicKey::Rsa(pk) if pk == key.to_public_key() => {}
            _ => return Err(SmimeError::KeyMismatch),
        }
        Ok(SigningIdentity {
            chain,
            key: SignerKey::Rsa(Box::new(rsa::pkcs1v15::SigningKey::<Sha256>::new(key))),
        })
    }

    /// A P-256 identity; `chain[0]` must hold the public half of `key`.
    pub fn new_p256(chain: Vec<Certificate>, key: p256::SecretKey) -> Result<Self, SmimeError> {
        let cert = chain.first().ok_or(SmimeError::EmptyChain)?;
        match certs::public_key(cert)? {
            PublicKey::P256(pk) if pk == key.public_key() => {}
            _ => return Err(SmimeError::KeyMismatch),
        }
        Ok(SigningIdentity {
            chain,
            key: SignerKey::P256(p256::ecdsa::SigningKey::from(&key)),
        })
    }

    /// From PEM: `chain_pem` holds the signer certificate first, then its chain; `key_pem` an
    /// unencrypted PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`)
    /// key. Decoded key bytes are zeroized.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, SmimeError> {
        let chain =
            Certificate::load_pem_chain(chain_pem).map_err(SmimeError::CertificateDecode)?;
        let (label, der) =
            der::pem::decode_vec(key_pem).map_err(|_| SmimeError::PrivateKey { format: "PEM" })?;
        let der = Zeroizing::new(der);
        match label {
            "PRIVATE KEY" => Self::from_pkcs8_der(chain, &der),
            "RSA PRIVATE KEY" => {
                let key = rsa::RsaPrivateKey::from_pkcs1_der(&der)
                    .map_err(|_| SmimeError::PrivateKey { format: "PKCS#1" })?;
                Self::new_rsa(chain, key)
            }
            "EC PRIVATE KEY" => {
                let key = p256::SecretKey::from_sec1_der(&der)
                    .map_err(|_| SmimeError::PrivateKey { format: "SEC1" })?;
                Self::new_p256(chain, key)
            }
            _ => Err(SmimeError::PrivateKey {
                format: "unknown PEM label",
            }),
        }
    }

    /// From decoded certificates (signer first) and an unencrypted PKCS#8 DER key (RSA or P-256),
    /// as the key store keeps them.
    pub fn from_pkcs8_der(chain: Vec<Certificate>, key_der: &[u8]) -> Result<Self, SmimeError> {
        if let Ok(key) = rsa::RsaPrivateKey::from_pkcs8_der(key_der) {
            Self::new_rsa(chain, key)
        } else if let Ok(key) = p256::SecretKey::from_pkcs8_der(key_der) {
            Self::new_p256(chain, key)
        } else {
            Err(SmimeError::PrivateKey { format: "PKCS#8" })
        }
    }

    /// The signer certificate.
    pub fn certificate(&self) -> &Certificate {
        // The constructors refuse an empty chain.
        &self.chain[0]
    }

    /// Signer certificate followed by its chain.
    pub fn chain(&self) -> &[Certificate] {
        &self.chain
    }
}
