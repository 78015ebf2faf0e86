//! The question the relay asks the key store, as a trait: the store implements it, tests can
//! use an in-memory one.

use std::sync::Arc;
use std::time::SystemTime;

use x509_cert::Certificate;

use crate::openpgp;
use crate::policy::KeyAvailability;
use crate::smime::SigningIdentity;

/// Keys usable now to encrypt to one recipient.
#[derive(Default)]
pub struct RecipientKeys {
    pub smime: Vec<Certificate>,
    pub openpgp: Vec<openpgp::Recipient>,
    /// Why other keys for this address are not usable (for explanations and logs).
    pub unusable: Vec<String>,
}

impl RecipientKeys {
    pub fn availability(&self) -> KeyAvailability {
        KeyAvailability {
            smime: !self.smime.is_empty(),
            openpgp: !self.openpgp.is_empty(),
            unusable: self.unusable.clone(),
        }
    }
}

/// The sender's signing identities usable now.
#[derive(Default)]
pub struct SenderKeys {
    pub smime: Option<SigningIdentity>,
    pub openpgp: Option<openpgp::SigningKey>,
}

impl SenderKeys {
    pub fn any(&self) -> bool {
        self.smime.is_some() || self.openpgp.is_some()
    }
}

/// The key source cannot answer now (store being written by `sealgate keys`, I/O error): the
/// client gets a temporary failure, never a decision made without keys.
#[derive(Debug, thiserror::Error)]
#[error("key store unavailable: {0}")]
pub struct KeysUnavailable(pub String);

/// Where keys come from.
pub trait KeySource: Send + Sync {
    fn recipient(&self, address: &str, now: SystemTime) -> Result<RecipientKeys, KeysUnavailable>;
    /// Shared, because parsing private keys for every message is costly: sources may cache.
    fn sender(&self, address: &str, now: SystemTime) -> Result<Arc<SenderKeys>, KeysUnavailable>;
}
