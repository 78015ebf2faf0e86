//! The key store: recipients' S/MIME and OpenPGP certificates and the senders' own signing
//! identities, behind the [`KeyStore`] trait (the sled implementation is [`SledStore`]).
//!
//! The relay asks one question per recipient, [`KeyStore::lookup`]: which S/MIME and OpenPGP
//! certificates are usable for this address at `now`, and why the others are not. Usability is
//! decided at lookup time, never at import, with the time passed in:
//!
//! * S/MIME ([`x509::X509Info::check`]): the address is an rfc822Name of subjectAltName (or,
//!   only when there is none, an emailAddress of the subject); notBefore <= now <= notAfter;
//!   keyUsage (when present) has keyEncipherment (RSA) or keyAgreement (EC P-256) for
//!   encryption and digitalSignature for signing; extendedKeyUsage (when present) has
//!   emailProtection (or anyExtendedKeyUsage); RSA has at least 2048 bits; the key is RSA or
//!   P-256; not a CA certificate; and, when trust anchors are configured, the certificate chains
//!   to one of them (recipients only: a sender identity is the administrator's own).
//! * OpenPGP ([`openpgp::check`]), under sequoia's `StandardPolicy` at `now`: the certificate is
//!   valid, not revoked, not expired; a valid non-revoked user id carries the address; a live,
//!   non-revoked transport-encryption subkey exists (signing: a signing-capable unencrypted
//!   secret key).
//!
//! Addresses are normalised by one rule, see [`crate::address`].

pub mod key_source;
pub mod openpgp;
pub mod owner;
pub mod pem;
pub mod private;
pub mod sled_store;
pub mod x509;

use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub use crate::address::{Address, AddressError};
pub use key_source::StoreKeys;
pub use owner::check_owner;
pub use private::PrivateIdentity;
pub use sled_store::SledStore;

/// Identifies a stored key: `x509:<sha-256 of the DER, lower-case hex>` or
/// `pgp:<primary key fingerprint, upper-case hex>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyId(String);

impl KeyId {
    /// The id of an X.509 certificate with this SHA-256 fingerprint (hex).
    pub fn x509(fingerprint_hex: &str) -> Self {
        KeyId(format!("x509:{}", fingerprint_hex.to_ascii_lowercase()))
    }
    /// The id of an OpenPGP certificate with this fingerprint (hex).
    pub fn openpgp(fingerprint_hex: &str) -> Self {
        KeyId(format!("pgp:{}", fingerprint_hex.to_ascii_uppercase()))
    }
    /// Parses a full id (`x509:...` or `pgp:...`).
    pub fn parse(s: &str) -> Option<Self> {
        let (kind, hex) = s.split_once(':')?;
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        match kind {
            "x509" => Some(Self::x509(hex)),
            "pgp" => Some(Self::openpgp(hex)),
            _ => None,
        }
    }
    /// The text form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The fingerprint part (hex, without the kind prefix).
    pub fn fingerprint(&self) -> &str {
        self.0.split_once(':').map(|(_, f)| f).unwrap_or(&self.0)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a key is checked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    /// Encrypting to a recipient.
    Encrypt,
    /// Signing as a sender.
    Sign,
}

/// Why a key is not usable for an address at a time. Machine code via [`Unusable::code`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", content = "detail", rename_all = "kebab-case")]
pub enum Unusable {
    /// Past notAfter / the key's expiration time (seconds since the epoch; 0 if unknown).
    Expired { not_after: u64 },
    /// Before notBefore / the key's creation time.
    NotYetValid { not_before: u64 },
    /// The key does not carry this address.
    WrongAddress,
    /// keyUsage / extendedKeyUsage do not allow the purpose.
    KeyUsage(String),
    /// Key too weak (RSA < 2048).
    WeakKey(String),
    /// Key algorithm or curve sealgate cannot use.
    UnsupportedKey(String),
    /// Does not chain to the configured trust anchors.
    Untrusted(String),
    /// A CA certificate is never a recipient or signer.
    CaCertificate,
    /// Revoked certificate or user id.
    Revoked(String),
    /// No live, non-revoked encryption-capable (sub)key.
    NoEncryptionKey,
    /// No live, non-revoked signing-capable key.
    NoSigningKey,
    /// No usable secret key for signing.
    NoSecretKey,
    /// Rejected by the OpenPGP policy (e.g. SHA-1 self-signatures, no valid binding).
    Policy(String),
    /// The stored record could not be read back.
    Corrupt(String),
}

impl Unusable {
    /// A stable machine-readable code, e.g. `expired`.
    pub fn code(&self) -> &'static str {
        match self {
            Unusable::Expired { .. } => "expired",
            Unusable::NotYetValid { .. } => "not-yet-valid",
            Unusable::WrongAddress => "wrong-address",
            Unusable::KeyUsage(_) => "key-usage",
            Unusable::WeakKey(_) => "weak-key",
            Unusable::UnsupportedKey(_) => "unsupported-key",
            Unusable::Untrusted(_) => "untrusted",
            Unusable::CaCertificate => "ca-certificate",
            Unusable::Revoked(_) => "revoked",
            Unusable::NoEncryptionKey => "no-encryption-key",
            Unusable::NoSigningKey => "no-signing-key",
            Unusable::NoSecretKey => "no-secret-key",
            Unusable::Policy(_) => "policy",
            Unusable::Corrupt(_) => "corrupt",
        }
    }
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unusable::Expired { not_after } => write!(f, "expired at {}", fmt_time(*not_after)),
            Unusable::NotYetValid { not_before } => {
                write!(f, "not valid before {}", fmt_time(*not_before))
            }
            Unusable::WrongAddress => f.write_str("does not carry this address"),
            Unusable::KeyUsage(s) => write!(f, "wrong key usage: {s}"),
            Unusable::WeakKey(s) => write!(f, "weak key: {s}"),
            Unusable::UnsupportedKey(s) => write!(f, "unsupported key: {s}"),
            Unusable::Untrusted(s) => write!(f, "not trusted: {s}"),
            Unusable::CaCertificate => f.write_str("is a CA certificate"),
            Unusable::Revoked(s) => write!(f, "revoked: {s}"),
            Unusable::NoEncryptionKey => f.write_str("no live encryption-capable subkey"),
            Unusable::NoSigningKey => f.write_str("no live signing-capable key"),
            Unusable::NoSecretKey => f.write_str("no usable secret signing key"),
            Unusable::Policy(s) => write!(f, "rejected by policy: {s}"),
            Unusable::Corrupt(s) => write!(f, "stored record unreadable: {s}"),
        }
    }
}

/// The civil date of `secs` since the epoch (UTC): (year, month 1-12, day 1-31, days since the
/// epoch, seconds into the day). Howard Hinnant's civil-from-days.
pub fn civil_date(secs: u64) -> (i64, i64, i64, i64, u64) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, days, rem)
}

/// `YYYY-MM-DD HH:MM:SS UTC` for seconds since the epoch.
pub fn fmt_time(secs: u64) -> String {
    let (y, m, d, _, rem) = civil_date(secs);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Kind-specific facts of a stored key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Details {
    /// An X.509 certificate.
    Smime(x509::X509Info),
    /// An OpenPGP certificate.
    Openpgp(openpgp::PgpInfo),
}

/// One stored key (public part and metadata; secrets live apart).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The key's id.
    pub id: KeyId,
    /// Normalised addresses it is indexed under.
    pub addresses: Vec<String>,
    /// Whether a private identity (secret key) is stored for it.
    pub has_secret: bool,
    /// When it was (last) imported, seconds since the epoch.
    pub imported: u64,
    /// Kind-specific facts.
    pub details: Details,
    /// The public key: DER certificate or binary OpenPGP certificate.
    #[serde(with = "b64")]
    pub public: Vec<u8>,
    /// Certificates that came with a private S/MIME identity (its chain), DER.
    #[serde(default, with = "b64_list")]
    pub chain: Vec<Vec<u8>>,
}

impl KeyRecord {
    /// `smime` or `openpgp`.
    pub fn kind(&self) -> &'static str {
        match self.details {
            Details::Smime(_) => "smime",
            Details::Openpgp(_) => "openpgp",
        }
    }
    /// True for an X.509 CA certificate (kept as an intermediate for chain building).
    pub fn is_ca(&self) -> bool {
        matches!(&self.details, Details::Smime(i) if i.is_ca)
    }
}

mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}

mod b64_list {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            v.iter()
                .map(|x| base64::engine::general_purpose::STANDARD.encode(x)),
        )
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        v.into_iter()
            .map(|s| {
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map_err(serde::de::Error::custom)
            })
            .collect()
    }
}

/// A key to be imported: its record and, for a private identity, its secret.
pub struct NewKey {
    /// The public record.
    pub record: KeyRecord,
    /// PKCS#8 DER (S/MIME) or binary TSK (OpenPGP), zeroized on drop.
    pub secret: Option<Zeroizing<Vec<u8>>>,
}

impl fmt::Debug for NewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewKey")
            .field("id", &self.record.id)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl NewKey {
    /// A public X.509 certificate (DER).
    pub fn from_x509(der: &[u8], now: SystemTime) -> Result<Self, String> {
        let (_, info) = x509::inspect(der)?;
        Ok(NewKey {
            record: KeyRecord {
                id: KeyId::x509(&info.fingerprint),
                addresses: info.addresses.clone(),
                has_secret: false,
                imported: x509::unix_secs(now),
                details: Details::Smime(info),
                public: der.to_vec(),
                chain: Vec::new(),
            },
            secret: None,
        })
    }

    /// A public OpenPGP certificate (secret key material, if any, is not taken).
    pub fn from_openpgp(cert: &sequoia_openpgp::Cert, now: SystemTime) -> Result<Self, String> {
        let public = cert.clone().strip_secret_key_material();
        let info = openpgp::info(&public);
        Ok(NewKey {
            record: KeyRecord {
                id: KeyId::openpgp(&info.fingerprint),
                addresses: info.addresses.clone(),
                has_secret: false,
                imported: x509::unix_secs(now),
                details: Details::Openpgp(info),
                public: openpgp::public_bytes(&public)?,
                chain: Vec::new(),
            },
            secret: None,
        })
    }

    /// A private identity: the identity itself plus, for S/MIME, its chain certificates as
    /// public records (they serve as intermediates).
    pub fn from_private(identity: PrivateIdentity, now: SystemTime) -> Result<Vec<Self>, String> {
        match identity {
            PrivateIdentity::Smime { cert, chain, key } => {
                let mut me = NewKey::from_x509(&cert, now)?;
                me.record.has_secret = true;
                me.record.chain = chain.clone();
                me.secret = Some(key);
                let mut out = vec![me];
                for c in &chain {
                    out.push(NewKey::from_x509(c, now)?);
                }
                Ok(out)
            }
            PrivateIdentity::OpenPgp(tsk) => {
                let mut me = NewKey::from_openpgp(&tsk, now)?;
                me.record.has_secret = true;
                me.secret = Some(openpgp::tsk_bytes(&tsk)?);
                Ok(vec![me])
            }
        }
    }
}

/// What an import changed.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// Keys that were not in the store.
    pub added: Vec<KeyId>,
    /// Keys that were there and got updated (merged / replaced).
    pub updated: Vec<KeyId>,
}

/// A usable S/MIME recipient certificate.
#[derive(Clone, Debug)]
pub struct SmimeCert {
    /// Its id.
    pub id: KeyId,
    /// DER.
    pub der: Vec<u8>,
    /// Extracted facts.
    pub info: x509::X509Info,
}

/// A usable OpenPGP recipient certificate.
#[derive(Clone, Debug)]
pub struct OpenPgpCert {
    /// Its id.
    pub id: KeyId,
    /// The certificate (public parts only).
    pub cert: sequoia_openpgp::Cert,
}

/// The answer to "which keys can I encrypt to for this address, now?".
#[derive(Clone, Debug)]
pub struct Lookup {
    /// The normalised address asked for.
    pub address: Address,
    /// Usable S/MIME certificates.
    pub smime: Vec<SmimeCert>,
    /// Usable OpenPGP certificates.
    pub openpgp: Vec<OpenPgpCert>,
    /// Keys indexed under the address that are not usable, with every reason.
    pub unusable: Vec<(KeyId, Vec<Unusable>)>,
}

impl Lookup {
    /// True when nothing usable was found.
    pub fn is_empty(&self) -> bool {
        self.smime.is_empty() && self.openpgp.is_empty()
    }
}

/// An S/MIME signing identity. `Debug` never shows the key.
pub struct SmimeSigner {
    /// Its id.
    pub id: KeyId,
    /// The signer's certificate (DER).
    pub cert: Vec<u8>,
    /// Chain certificates that came with it (DER), to include in signatures.
    pub chain: Vec<Vec<u8>>,
    /// The private key, PKCS#8 DER.
    pub key: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for SmimeSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmimeSigner")
            .field("id", &self.id)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// An OpenPGP signing identity (a TSK with unencrypted secret keys; sequoia keeps them
/// encrypted in memory and zeroizes them).
pub struct OpenPgpSigner {
    /// Its id.
    pub id: KeyId,
    /// The TSK.
    pub tsk: sequoia_openpgp::Cert,
}

impl fmt::Debug for OpenPgpSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenPgpSigner")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The answer to "as which identities may I sign for this sender address, now?".
#[derive(Debug)]
pub struct SigningIdentity {
    /// The normalised address asked for.
    pub address: Address,
    /// Usable S/MIME signers.
    pub smime: Vec<SmimeSigner>,
    /// Usable OpenPGP signers.
    pub openpgp: Vec<OpenPgpSigner>,
    /// Private identities for the address that cannot sign, with every reason.
    pub unusable: Vec<(KeyId, Vec<Unusable>)>,
}

/// Errors of the store. sequoia's `anyhow` errors are turned into text at the boundary.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The database failed.
    #[error("key store database error: {0}")]
    Db(String),
    /// Another process holds the store.
    #[error(
        "key store {0} is locked by another process (a running sealgate or another `keys` \
         command); try again"
    )]
    Locked(String),
    /// The store belongs to another user than the one running this process (see [`owner`]).
    #[error("{0}")]
    NotOwner(String),
    /// An input could not be parsed.
    #[error("{what}: {reason}")]
    Parse {
        /// What was parsed (usually the file name).
        what: String,
        /// Why it failed.
        reason: String,
    },
    /// A stored record is unreadable.
    #[error("stored key {id} is unreadable: {reason}")]
    Corrupt {
        /// The key.
        id: String,
        /// Why.
        reason: String,
    },
    /// A bad address.
    #[error(transparent)]
    Address(#[from] AddressError),
}

/// A place that keeps keys. Implementations provide storage; the provided methods
/// ([`lookup`](KeyStore::lookup), [`signing_identity`](KeyStore::signing_identity),
/// [`check_record`](KeyStore::check_record)) implement the usability rules once for all.
pub trait KeyStore {
    /// Stores all `keys` atomically (all or none), durably, before returning. A key already
    /// present is updated: X.509 records are replaced, OpenPGP certificates merged (new expiry,
    /// revocations, user ids); a stored secret is kept unless a new one replaces it.
    fn import(&self, keys: Vec<NewKey>) -> Result<ImportReport, StoreError>;
    /// Removes a key, its index entries and its secret, atomically and durably.
    /// Returns the removed record, `None` when absent.
    fn remove(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError>;
    /// The record of a key.
    fn get(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError>;
    /// Ids of keys indexed under an address.
    fn ids_for(&self, address: &Address) -> Result<Vec<KeyId>, StoreError>;
    /// The stored secret of a private identity.
    fn secret(&self, id: &KeyId) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError>;
    /// Every record, in id order.
    fn list(&self) -> Result<Vec<KeyRecord>, StoreError>;
    /// Ids whose text or fingerprint starts with `prefix` (case-insensitive; an OpenPGP
    /// 16-hex-digit key id matches the end of the fingerprint).
    fn find(&self, prefix: &str) -> Result<Vec<KeyId>, StoreError>;
    /// DER of every stored CA certificate (intermediates for chain building).
    fn ca_certs(&self) -> Result<Vec<Vec<u8>>, StoreError>;
    /// The configured S/MIME trust anchors (DER), `None` when unset (imported = trusted).
    fn trust_anchors(&self) -> Option<&[Vec<u8>]>;

    /// Every reason `record` cannot be used for `purpose` with `address` at `now` (empty =
    /// usable). For S/MIME encryption the trust anchors apply.
    fn check_record(
        &self,
        record: &KeyRecord,
        address: &Address,
        now: SystemTime,
        purpose: Purpose,
    ) -> Result<Vec<Unusable>, StoreError> {
        Ok(match &record.details {
            Details::Smime(info) => {
                let mut reasons = info.check(address, now, purpose);
                if reasons.is_empty() && purpose == Purpose::Encrypt {
                    if let Some(anchors) = self.trust_anchors() {
                        match x509::inspect(&record.public) {
                            Ok((cert, _)) => {
                                let inters = self.ca_certs()?;
                                if let Err(e) = x509::verify_chain(&cert, anchors, &inters, now) {
                                    reasons.push(Unusable::Untrusted(e));
                                }
                            }
                            Err(e) => reasons.push(Unusable::Corrupt(e)),
                        }
                    }
                }
                reasons
            }
            Details::Openpgp(_) => match openpgp::from_bytes(&record.public) {
                Ok(cert) => {
                    if purpose == Purpose::Sign {
                        match self.pgp_tsk(record, cert) {
                            Ok(Some(tsk)) => openpgp::check(&tsk, address, now, purpose),
                            Ok(None) => vec![Unusable::NoSecretKey],
                            Err(e) => vec![Unusable::Corrupt(e)],
                        }
                    } else {
                        openpgp::check(&cert, address, now, purpose)
                    }
                }
                Err(e) => vec![Unusable::Corrupt(e)],
            },
        })
    }

    /// The TSK of an OpenPGP private identity, merged with the current public certificate (so
    /// a later-imported revocation or expiry applies to signing too).
    #[doc(hidden)]
    fn pgp_tsk(
        &self,
        record: &KeyRecord,
        public: sequoia_openpgp::Cert,
    ) -> Result<Option<sequoia_openpgp::Cert>, String> {
        if !record.has_secret {
            return Ok(None);
        }
        let Some(secret) = self.secret(&record.id).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let tsk = openpgp::from_bytes(&secret)?;
        openpgp::merge(public, tsk).map(Some)
    }

    /// Which usable S/MIME and OpenPGP certificates exist for `address` at `now`, and why the
    /// other keys indexed under it are not usable.
    fn lookup(&self, address: &Address, now: SystemTime) -> Result<Lookup, StoreError> {
        let mut out = Lookup {
            address: address.clone(),
            smime: Vec::new(),
            openpgp: Vec::new(),
            unusable: Vec::new(),
        };
        for (id, checked) in checked_records(self, address, now, Purpose::Encrypt)? {
            let record = match checked {
                Ok(record) => record,
                Err(reasons) => {
                    out.unusable.push((id, reasons));
                    continue;
                }
            };
            match record.details {
                Details::Smime(info) => out.smime.push(SmimeCert {
                    id,
                    der: record.public,
                    info,
                }),
                Details::Openpgp(_) => match openpgp::from_bytes(&record.public) {
                    Ok(cert) => out.openpgp.push(OpenPgpCert { id, cert }),
                    Err(e) => out.unusable.push((id, vec![Unusable::Corrupt(e)])),
                },
            }
        }
        Ok(out)
    }

    /// The private identities usable to sign as `address` at `now`.
    fn signing_identity(
        &self,
        address: &Address,
        now: SystemTime,
    ) -> Result<SigningIdentity, StoreError> {
        let mut out = SigningIdentity {
            address: address.clone(),
            smime: Vec::new(),
            openpgp: Vec::new(),
            unusable: Vec::new(),
        };
        for (id, checked) in checked_records(self, address, now, Purpose::Sign)? {
            let record = match checked {
                Ok(record) => record,
                Err(reasons) => {
                    out.unusable.push((id, reasons));
                    continue;
                }
            };
            match &record.details {
                Details::Smime(_) => match self.secret(&id)? {
                    Some(key) => out.smime.push(SmimeSigner {
                        id,
                        cert: record.public,
                        chain: record.chain,
                        key,
                    }),
                    None => out.unusable.push((id, vec![Unusable::NoSecretKey])),
                },
                Details::Openpgp(_) => {
                    let tsk =
                        openpgp::from_bytes(&record.public).and_then(|c| self.pgp_tsk(&record, c));
                    match tsk {
                        Ok(Some(tsk)) => out.openpgp.push(OpenPgpSigner { id, tsk }),
                        Ok(None) => out.unusable.push((id, vec![Unusable::NoSecretKey])),
                        Err(e) => out.unusable.push((id, vec![Unusable::Corrupt(e)])),
                    }
                }
            }
        }
        Ok(out)
    }
}

/// A key's record when it is usable, else every reason it is not.
type Checked = Result<KeyRecord, Vec<Unusable>>;

/// Each key indexed under `address` with its record when it is usable for `purpose` at `now`,
/// else with every reason it is not; in index order. For signing, only the keys that hold a
/// secret are considered.
fn checked_records<S: KeyStore + ?Sized>(
    store: &S,
    address: &Address,
    now: SystemTime,
    purpose: Purpose,
) -> Result<Vec<(KeyId, Checked)>, StoreError> {
    let mut out = Vec::new();
    for id in store.ids_for(address)? {
        let Some(record) = store.get(&id)? else {
            continue;
        };
        if purpose == Purpose::Sign && !record.has_secret {
            continue;
        }
        let reasons = store.check_record(&record, address, now, purpose)?;
        out.push((
            id,
            if reasons.is_empty() {
                Ok(record)
            } else {
                Err(reasons)
            },
        ));
    }
    Ok(out)
}
