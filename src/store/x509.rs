//! X.509 certificates for S/MIME: parsing (PEM, DER, PEM bundles, PKCS#7/CMS `.p7b` bundles),
//! the facts the store keeps about each certificate, and the usability check at a given time.

use std::time::{Duration, SystemTime};

use const_oid::ObjectIdentifier;
use der::{Decode, Encode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAltName};
use x509_cert::Certificate;

use super::pem::{self, PemBlock};
use super::{Purpose, StoreError, Unusable};
use crate::address::Address;

const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_SHA256_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const OID_ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const OID_EMAIL_PROTECTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.4");
const OID_ANY_EKU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37.0");
const OID_EMAIL_ADDRESS_ATTR: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.1");
const OID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");

/// Smallest RSA modulus accepted for S/MIME.
pub const MIN_RSA_BITS: u32 = 2048;
/// Longest issuer chain followed when trust anchors are configured.
const MAX_CHAIN: usize = 6;

/// The public key of a certificate, as far as sealgate cares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyKind {
    /// RSA with the modulus length in bits.
    Rsa { bits: u32 },
    /// ECDSA/ECDH on NIST P-256.
    EcP256,
    /// Anything else (algorithm OID and curve if any); never usable.
    Other(String),
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyKind::Rsa { bits } => write!(f, "RSA-{bits}"),
            KeyKind::EcP256 => f.write_str("EC P-256"),
            KeyKind::Other(s) => write!(f, "unsupported ({s})"),
        }
    }
}

/// What the store records about one X.509 certificate (extracted once, at import).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct X509Info {
    /// SHA-256 over the DER encoding, lower-case hex.
    pub fingerprint: String,
    /// Subject distinguished name (RFC 4514 form).
    pub subject: String,
    /// Issuer distinguished name (RFC 4514 form).
    pub issuer: String,
    /// Serial number, hex.
    pub serial: String,
    /// rfc822Name entries of subjectAltName, or, only when there are none, emailAddress
    /// attributes of the subject; normalised display form (see [`Address`]).
    pub addresses: Vec<String>,
    /// notBefore, seconds since the Unix epoch.
    pub not_before: u64,
    /// notAfter, seconds since the Unix epoch.
    pub not_after: u64,
    /// Public key type and size.
    pub key: KeyKind,
    /// keyUsage bits (`digitalSignature` = bit 0 ... as in RFC 5280), `None` when absent.
    pub key_usage: Option<u16>,
    /// extendedKeyUsage OIDs (dotted), `None` when absent.
    pub extended_key_usage: Option<Vec<String>>,
    /// basicConstraints cA.
    pub is_ca: bool,
}

const KU_DIGITAL_SIGNATURE: u16 = 1 << 0;
const KU_KEY_ENCIPHERMENT: u16 = 1 << 2;
const KU_KEY_AGREEMENT: u16 = 1 << 4;

impl X509Info {
    /// Human-readable usage summary, e.g. `sign,encrypt`.
    pub fn usage_summary(&self) -> String {
        let mut v = Vec::new();
        if self.is_ca {
            v.push("ca");
        }
        if self.allows(Purpose::Sign) {
            v.push("sign");
        }
        if self.allows(Purpose::Encrypt) {
            v.push("encrypt");
        }
        if v.is_empty() {
            "none".into()
        } else {
            v.join(",")
        }
    }

    fn allows(&self, purpose: Purpose) -> bool {
        self.key_usage_ok(purpose) && self.eku_ok()
    }

    fn key_usage_ok(&self, purpose: Purpose) -> bool {
        let Some(ku) = self.key_usage else {
            return true; // RFC 5280: absent keyUsage does not restrict
        };
        match (purpose, &self.key) {
            (Purpose::Sign, _) => ku & KU_DIGITAL_SIGNATURE != 0,
            (Purpose::Encrypt, KeyKind::EcP256) => ku & KU_KEY_AGREEMENT != 0,
            (Purpose::Encrypt, _) => ku & KU_KEY_ENCIPHERMENT != 0,
        }
    }

    fn eku_ok(&self) -> bool {
        match &self.extended_key_usage {
            None => true,
            Some(ekus) => ekus
                .iter()
                .any(|o| *o == OID_EMAIL_PROTECTION.to_string() || *o == OID_ANY_EKU.to_string()),
        }
    }

    /// Checks everything that depends only on the certificate itself, the address and `now`
    /// (not the chain: see [`verify_chain`]). Returns every reason it is unusable, in a fixed
    /// order, so a report names all problems at once.
    pub fn check(&self, address: &Address, now: SystemTime, purpose: Purpose) -> Vec<Unusable> {
        let mut reasons = Vec::new();
        let now_s = unix_secs(now);
        if self.is_ca {
            reasons.push(Unusable::CaCertificate);
        }
        if !self
            .addresses
            .iter()
            .filter_map(|a| Address::parse(a).ok())
            .any(|a| a.matches(address))
        {
            reasons.push(Unusable::WrongAddress);
        }
        if now_s < self.not_before {
            reasons.push(Unusable::NotYetValid {
                not_before: self.not_before,
            });
        }
        if now_s > self.not_after {
            reasons.push(Unusable::Expired {
                not_after: self.not_after,
            });
        }
        match &self.key {
            KeyKind::Rsa { bits } if *bits < MIN_RSA_BITS => {
                reasons.push(Unusable::WeakKey(format!(
                    "RSA-{bits} is below the minimum of {MIN_RSA_BITS} bits"
                )));
            }
            KeyKind::Other(s) => reasons.push(Unusable::UnsupportedKey(s.clone())),
            _ => {}
        }
        if !self.key_usage_ok(purpose) {
            let need = match (purpose, &self.key) {
                (Purpose::Sign, _) => "digitalSignature",
                (Purpose::Encrypt, KeyKind::EcP256) => "keyAgreement",
                (Purpose::Encrypt, _) => "keyEncipherment",
            };
            reasons.push(Unusable::KeyUsage(format!(
                "keyUsage does not allow {need}"
            )));
        }
        if !self.eku_ok() {
            reasons.push(Unusable::KeyUsage(
                "extendedKeyUsage present without emailProtection".into(),
            ));
        }
        reasons
    }
}

/// Seconds since the Unix epoch (0 for times before it).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Parses one DER certificate and extracts its [`X509Info`].
pub fn inspect(der: &[u8]) -> Result<(Certificate, X509Info), String> {
    let cert = Certificate::from_der(der).map_err(|e| format!("not a valid certificate: {e}"))?;
    let info = info_of(&cert, der)?;
    Ok((cert, info))
}

fn info_of(cert: &Certificate, der: &[u8]) -> Result<X509Info, String> {
    let tbs = &cert.tbs_certificate;
    let mut san_emails = Vec::new();
    let mut key_usage = None;
    let mut eku = None;
    let mut is_ca = false;
    for ext in tbs.extensions.iter().flatten() {
        let v = ext.extn_value.as_bytes();
        match ext.extn_id {
            id if id == const_oid::db::rfc5280::ID_CE_SUBJECT_ALT_NAME => {
                let san =
                    SubjectAltName::from_der(v).map_err(|e| format!("bad subjectAltName: {e}"))?;
                for gn in san.0 {
                    if let GeneralName::Rfc822Name(s) = gn {
                        san_emails.push(s.to_string());
                    }
                }
            }
            id if id == const_oid::db::rfc5280::ID_CE_KEY_USAGE => {
                let ku = KeyUsage::from_der(v).map_err(|e| format!("bad keyUsage: {e}"))?;
                key_usage = Some(ku.0.bits());
            }
            id if id == const_oid::db::rfc5280::ID_CE_EXT_KEY_USAGE => {
                let e = ExtendedKeyUsage::from_der(v)
                    .map_err(|e| format!("bad extendedKeyUsage: {e}"))?;
                eku = Some(e.0.iter().map(|o| o.to_string()).collect());
            }
            id if id == const_oid::db::rfc5280::ID_CE_BASIC_CONSTRAINTS => {
                let bc = BasicConstraints::from_der(v)
                    .map_err(|e| format!("bad basicConstraints: {e}"))?;
                is_ca = bc.ca;
            }
            _ => {}
        }
    }
    if san_emails.is_empty() {
        for rdn in tbs.subject.0.iter() {
            for atv in rdn.0.iter() {
                if atv.oid == OID_EMAIL_ADDRESS_ATTR {
                    if let Ok(s) = atv.value.decode_as::<der::asn1::Ia5StringRef<'_>>() {
                        san_emails.push(s.to_string());
                    }
                }
            }
        }
    }
    let mut addresses: Vec<String> = san_emails
        .iter()
        .filter_map(|a| Address::parse(a).ok())
        .map(|a| a.as_str().to_string())
        .collect();
    addresses.sort();
    addresses.dedup();
    Ok(X509Info {
        fingerprint: hex(&Sha256::digest(der)),
        subject: tbs.subject.to_string(),
        issuer: tbs.issuer.to_string(),
        serial: hex(tbs.serial_number.as_bytes()),
        addresses,
        not_before: tbs.validity.not_before.to_unix_duration().as_secs(),
        not_after: tbs.validity.not_after.to_unix_duration().as_secs(),
        key: key_kind(&tbs.subject_public_key_info),
        key_usage,
        extended_key_usage: eku,
        is_ca,
    })
}

fn key_kind(spki: &spki::SubjectPublicKeyInfoOwned) -> KeyKind {
    if spki.algorithm.oid == OID_RSA {
        let Some(bytes) = spki.subject_public_key.as_bytes() else {
            return KeyKind::Other("malformed RSA key".into());
        };
        match rsa::pkcs1::RsaPublicKey::from_der(bytes) {
            Ok(k) => {
                let m = k.modulus.as_bytes();
                let first = m.iter().position(|b| *b != 0).unwrap_or(m.len());
                let m = &m[first..];
                let bits = match m.first() {
                    Some(b) => (m.len() as u32) * 8 - b.leading_zeros(),
                    None => 0,
                };
                KeyKind::Rsa { bits }
            }
            Err(_) => KeyKind::Other("malformed RSA key".into()),
        }
    } else if spki.algorithm.oid == OID_EC {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
        match curve {
            Some(c) if c == OID_P256 => KeyKind::EcP256,
            Some(c) => KeyKind::Other(format!("EC curve {c}")),
            None => KeyKind::Other("EC without named curve".into()),
        }
    } else {
        KeyKind::Other(format!("key algorithm {}", spki.algorithm.oid))
    }
}

/// Every certificate found in `data`, as DER, in file order.
///
/// Accepts a PEM file with any number of `CERTIFICATE` / `X509 CERTIFICATE` / `TRUSTED
/// CERTIFICATE` / `PKCS7` / `CMS` blocks, a single DER certificate, or a DER PKCS#7/CMS
/// SignedData certificate bundle. A private key in the file is an error (private material is
/// only taken by `import --private`). `progress` is called with (done, total) per block.
pub fn parse_certificates(
    data: &[u8],
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Vec<u8>>, String> {
    if pem::looks_like_pem(data) {
        let blocks = pem::parse(data)?;
        let total = blocks.len();
        let mut out = Vec::with_capacity(total);
        for (i, PemBlock { label, der }) in blocks.into_iter().enumerate() {
            match label.as_str() {
                "CERTIFICATE" | "X509 CERTIFICATE" | "TRUSTED CERTIFICATE" => {
                    // TRUSTED CERTIFICATE carries openssl's trust settings after the certificate.
                    let der = first_der_element(&der)?;
                    out.push(der);
                }
                "PKCS7" | "CMS" => out.extend(certs_from_cms(&der)?),
                l if l.contains("PRIVATE KEY") => {
                    return Err(format!(
                        "contains a private key (block {}); private keys are imported with \
                         `keys import --private`",
                        i + 1
                    ))
                }
                l => return Err(format!("unexpected PEM block {l:?} (block {})", i + 1)),
            }
            progress(i + 1, total);
        }
        if out.is_empty() {
            return Err("no certificate found".into());
        }
        Ok(out)
    } else if data.first() == Some(&0x30) {
        if Certificate::from_der(data).is_ok() {
            return Ok(vec![data.to_vec()]);
        }
        let certs = certs_from_cms(data).map_err(|e| {
            format!("DER data is neither a certificate nor a PKCS#7/CMS bundle ({e})")
        })?;
        if certs.is_empty() {
            return Err("PKCS#7/CMS bundle holds no certificate".into());
        }
        Ok(certs)
    } else {
        Err("not an X.509 certificate".into())
    }
}

fn first_der_element(der: &[u8]) -> Result<Vec<u8>, String> {
    let mut reader = der::SliceReader::new(der).map_err(|e| e.to_string())?;
    let any: der::asn1::AnyRef<'_> =
        der::Decode::decode(&mut reader).map_err(|e| format!("bad certificate: {e}"))?;
    any.to_der().map_err(|e| e.to_string())
}

fn certs_from_cms(der: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let ci = cms::content_info::ContentInfo::from_der(der)
        .map_err(|e| format!("bad PKCS#7/CMS structure: {e}"))?;
    if ci.content_type != OID_SIGNED_DATA {
        return Err(format!(
            "PKCS#7/CMS content is {} rather than SignedData",
            ci.content_type
        ));
    }
    let sd: cms::signed_data::SignedData = ci
        .content
        .decode_as()
        .map_err(|e| format!("bad PKCS#7/CMS SignedData: {e}"))?;
    let mut out = Vec::new();
    for choice in sd.certificates.iter().flat_map(|s| s.0.iter()) {
        if let cms::cert::CertificateChoices::Certificate(c) = choice {
            out.push(c.to_der().map_err(|e| e.to_string())?);
        }
    }
    Ok(out)
}

/// Verifies that `cert` chains to one of `anchors` (DER), using `intermediates` (DER) to fill
/// gaps. Each link's signature is checked (RSA PKCS#1 v1.5 with SHA-256, or ECDSA P-256 with
/// SHA-256) and each issuer must be a CA valid at `now`. An anchor is trusted as configured
/// (its own validity is still checked).
pub fn verify_chain(
    cert: &Certificate,
    anchors: &[Vec<u8>],
    intermediates: &[Vec<u8>],
    now: SystemTime,
) -> Result<(), String> {
    let parse = |list: &[Vec<u8>]| -> Vec<Certificate> {
        list.iter()
            .filter_map(|d| Certificate::from_der(d).ok())
            .collect()
    };
    let anchors = parse(anchors);
    let inters = parse(intermediates);
    let mut current = cert.clone();
    let mut last_err = String::from("no trust anchor issued this certificate");
    for _ in 0..MAX_CHAIN {
        let issuer_name = &current.tbs_certificate.issuer;
        for a in anchors
            .iter()
            .filter(|a| &a.tbs_certificate.subject == issuer_name)
        {
            match verify_signed_by(&current, a, now) {
                Ok(()) => return Ok(()),
                Err(e) => last_err = e,
            }
        }
        let next = inters
            .iter()
            .filter(|i| &i.tbs_certificate.subject == issuer_name && *i != &current)
            .find(|i| verify_signed_by(&current, i, now).is_ok());
        match next {
            Some(n) => current = n.clone(),
            None => return Err(last_err),
        }
    }
    Err("certificate chain too long".into())
}

fn verify_signed_by(
    child: &Certificate,
    issuer: &Certificate,
    now: SystemTime,
) -> Result<(), String> {
    let der = issuer.to_der().map_err(|e| e.to_string())?;
    let info = info_of(issuer, &der)?;
    let now_s = unix_secs(now);
    if !info.is_ca {
        return Err(format!("issuer {} is not a CA", info.subject));
    }
    if now_s < info.not_before || now_s > info.not_after {
        return Err(format!("issuer {} is not valid now", info.subject));
    }
    let tbs = child.tbs_certificate.to_der().map_err(|e| e.to_string())?;
    let sig = child
        .signature
        .as_bytes()
        .ok_or("malformed signature bit string")?;
    let spki = &issuer.tbs_certificate.subject_public_key_info;
    let alg = child.signature_algorithm.oid;
    if alg == OID_SHA256_RSA && spki.algorithm.oid == OID_RSA {
        use rsa::pkcs1::DecodeRsaPublicKey;
        use signature::Verifier;
        let raw = spki
            .subject_public_key
            .as_bytes()
            .ok_or("malformed issuer key")?;
        let key = rsa::RsaPublicKey::from_pkcs1_der(raw).map_err(|e| e.to_string())?;
        let vk = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key);
        let sig = rsa::pkcs1v15::Signature::try_from(sig).map_err(|e| e.to_string())?;
        vk.verify(&tbs, &sig)
            .map_err(|_| format!("bad signature by {}", info.subject))
    } else if alg == OID_ECDSA_SHA256 && info.key == KeyKind::EcP256 {
        use signature::Verifier;
        let raw = spki
            .subject_public_key
            .as_bytes()
            .ok_or("malformed issuer key")?;
        let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(raw).map_err(|e| e.to_string())?;
        let sig = p256::ecdsa::DerSignature::try_from(sig).map_err(|e| e.to_string())?;
        vk.verify(&tbs, &sig)
            .map_err(|_| format!("bad signature by {}", info.subject))
    } else {
        Err(format!(
            "unsupported signature algorithm {alg} (supported: sha256WithRSAEncryption, \
             ecdsa-with-SHA256 on P-256)"
        ))
    }
}

/// A time `secs` after the Unix epoch.
pub fn from_unix(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// Parses trust anchors (any certificate format [`parse_certificates`] reads).
/// Reads and parses a PEM trust-anchors file (`[smime] trust_anchors`): the one loader that
/// `check-config`, `serve` and `policy explain` share. The error names the file.
pub fn load_anchors_file(path: &std::path::Path) -> Result<Vec<Vec<u8>>, String> {
    let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let anchors = load_anchors(&data).map_err(|e| format!("{}: {e}", path.display()))?;
    if anchors.is_empty() {
        return Err(format!("{}: no certificate in the file", path.display()));
    }
    Ok(anchors)
}

pub fn load_anchors(data: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
    parse_certificates(data, &mut |_, _| {}).map_err(|reason| StoreError::Parse {
        what: "trust anchors".into(),
        reason,
    })
}
