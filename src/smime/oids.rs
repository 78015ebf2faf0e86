//! Object identifiers used by the S/MIME module.

use const_oid::ObjectIdentifier as Oid;

pub(crate) const ID_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.1");
pub(crate) const ID_ENVELOPED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.3");
pub(crate) const ID_CT_AUTH_ENVELOPED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.9.16.1.23");
pub(crate) const ID_SIGNING_TIME: Oid = Oid::new_unwrap("1.2.840.113549.1.9.5");
pub(crate) const ID_SMIME_CAPABILITIES: Oid = Oid::new_unwrap("1.2.840.113549.1.9.15");
pub(crate) const ID_SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.1");
pub(crate) const RSA_ENCRYPTION: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
pub(crate) const ID_RSAES_OAEP: Oid = Oid::new_unwrap("1.2.840.113549.1.1.7");
pub(crate) const ID_MGF1: Oid = Oid::new_unwrap("1.2.840.113549.1.1.8");
pub(crate) const ID_EC_PUBLIC_KEY: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
pub(crate) const SECP256R1: Oid = Oid::new_unwrap("1.2.840.10045.3.1.7");
/// dhSinglePass-stdDH-sha256kdf-scheme (RFC 5753 §7.1.4).
pub(crate) const DH_SINGLE_PASS_STD_DH_SHA256_KDF: Oid = Oid::new_unwrap("1.3.132.1.11.1");
pub(crate) const ID_AES128_CBC: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.2");
pub(crate) const ID_AES192_CBC: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.22");
pub(crate) const ID_AES256_CBC: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.42");
pub(crate) const ID_AES256_WRAP: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.45");
pub(crate) const ID_AES256_GCM: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.1.46");
pub(crate) const ID_KP_EMAIL_PROTECTION: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.4");
pub(crate) const ANY_EXTENDED_KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.37.0");
