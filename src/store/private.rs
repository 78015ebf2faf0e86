//! Sender identities (private keys): PKCS#12 (`.p12`/`.pfx`) with a passphrase, PEM private key
//! plus certificate (in one file or several), and OpenPGP secret keys (TSK).
//!
//! PKCS#12 is read with `p12-keystore` 0.2 (pure Rust, on the same der 0.7 stack as `cms`):
//! it reads openssl's default (PBES2, AES-256-CBC, HMAC-SHA256 MAC) and the legacy
//! `PBE-SHA1-3DES` / SHA-1 MAC form. Secret bytes are kept in [`Zeroizing`] buffers here; the
//! copy p12-keystore makes internally while decoding is not zeroized by that crate.
//! Nothing in this module implements `Debug` or `Display` over secret material.

use der::{Decode, Encode};
use sequoia_openpgp::Cert;
use zeroize::Zeroizing;

use super::pem;
use super::x509;

/// A private identity ready to be stored.
pub enum PrivateIdentity {
    /// An S/MIME signing identity.
    Smime {
        /// The end-entity certificate (DER) whose public key matches `key`.
        cert: Vec<u8>,
        /// Other certificates that came with it (chain), DER.
        chain: Vec<Vec<u8>>,
        /// The private key, PKCS#8 DER, unencrypted.
        key: Zeroizing<Vec<u8>>,
    },
    /// An OpenPGP TSK with its secret keys decrypted.
    OpenPgp(Box<Cert>),
}

impl std::fmt::Debug for PrivateIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrivateIdentity::Smime { .. } => f.write_str("PrivateIdentity::Smime(<redacted>)"),
            PrivateIdentity::OpenPgp(c) => {
                write!(
                    f,
                    "PrivateIdentity::OpenPgp({}, <redacted>)",
                    c.fingerprint()
                )
            }
        }
    }
}

/// Reads a private identity from the concatenated contents of one or more files (`inputs`:
/// (name, bytes)). `passphrase` unlocks PKCS#12, encrypted PKCS#8 and OpenPGP secret keys.
pub fn parse(
    inputs: &[(String, Zeroizing<Vec<u8>>)],
    passphrase: Option<&Zeroizing<Vec<u8>>>,
) -> Result<Vec<PrivateIdentity>, String> {
    if inputs
        .iter()
        .all(|(_, d)| super::openpgp::looks_like_openpgp(d))
    {
        return parse_openpgp(inputs, passphrase);
    }
    if inputs.iter().all(|(_, d)| pem::looks_like_pem(d)) {
        return parse_pem(inputs, passphrase).map(|i| vec![i]);
    }
    let [(name, data)] = inputs else {
        return Err("a PKCS#12 file must be imported on its own".into());
    };
    parse_pkcs12(name, data, passphrase).map(|i| vec![i])
}

/// OpenPGP TSKs, each file on its own; every certificate must carry its secret key.
fn parse_openpgp(
    inputs: &[(String, Zeroizing<Vec<u8>>)],
    passphrase: Option<&Zeroizing<Vec<u8>>>,
) -> Result<Vec<PrivateIdentity>, String> {
    let mut out = Vec::new();
    for (name, data) in inputs {
        let certs = super::openpgp::parse_certs(data, &mut |_, _| {})
            .map_err(|e| format!("{name}: {e}"))?;
        for c in certs {
            if !c.is_tsk() {
                return Err(format!(
                    "{name}: certificate {} has no secret key (use `keys import` for public \
                     certificates)",
                    c.fingerprint()
                ));
            }
            let c = super::openpgp::unlock(c, passphrase.map(|p| p.as_slice()))
                .map_err(|e| format!("{name}: {e}"))?;
            out.push(PrivateIdentity::OpenPgp(Box::new(c)));
        }
    }
    Ok(out)
}

/// One PEM private key and its certificate(s), possibly across files.
fn parse_pem(
    inputs: &[(String, Zeroizing<Vec<u8>>)],
    passphrase: Option<&Zeroizing<Vec<u8>>>,
) -> Result<PrivateIdentity, String> {
    let mut keys = Vec::new();
    let mut certs = Vec::new();
    for (name, data) in inputs {
        let blocks = pem::parse(data).map_err(|e| format!("{name}: {e}"))?;
        for b in blocks {
            match b.label.as_str() {
                "CERTIFICATE" => certs.push(b.der.to_vec()),
                "EC PARAMETERS" => {}
                label => keys.push(
                    pkcs8_key(label, &b.der, passphrase).map_err(|e| format!("{name}: {e}"))?,
                ),
            }
        }
    }
    let names: Vec<&str> = inputs.iter().map(|(n, _)| n.as_str()).collect();
    let names = names.join(", ");
    if keys.len() != 1 {
        return Err(format!(
            "{names}: expected exactly one private key, found {}",
            keys.len()
        ));
    }
    let key = keys.remove(0);
    pair(key, certs).map_err(|e| format!("{names}: {e}"))
}

/// The unencrypted PKCS#8 DER of a PEM private key block labelled `label` (PKCS#8, encrypted
/// PKCS#8, PKCS#1 RSA or SEC1 P-256).
fn pkcs8_key(
    label: &str,
    der: &[u8],
    passphrase: Option<&Zeroizing<Vec<u8>>>,
) -> Result<Zeroizing<Vec<u8>>, String> {
    match label {
        "PRIVATE KEY" => Ok(Zeroizing::new(der.to_vec())),
        "ENCRYPTED PRIVATE KEY" => {
            let pw = passphrase.ok_or("the private key is encrypted: give --passphrase-file")?;
            let enc = pkcs8::EncryptedPrivateKeyInfo::from_der(der)
                .map_err(|e| format!("bad encrypted private key: {e}"))?;
            let doc = enc
                .decrypt(pw.as_slice())
                .map_err(|_| "wrong passphrase for the private key")?;
            Ok(Zeroizing::new(doc.as_bytes().to_vec()))
        }
        "RSA PRIVATE KEY" => {
            use rsa::pkcs1::DecodeRsaPrivateKey;
            use rsa::pkcs8::EncodePrivateKey;
            let k = rsa::RsaPrivateKey::from_pkcs1_der(der)
                .map_err(|e| format!("bad RSA private key: {e}"))?;
            let doc = k.to_pkcs8_der().map_err(|e| e.to_string())?;
            Ok(Zeroizing::new(doc.as_bytes().to_vec()))
        }
        "EC PRIVATE KEY" => {
            use p256::pkcs8::EncodePrivateKey;
            let k = p256::SecretKey::from_sec1_der(der)
                .map_err(|e| format!("bad EC private key: {e}"))?;
            let doc = k.to_pkcs8_der().map_err(|e| e.to_string())?;
            Ok(Zeroizing::new(doc.as_bytes().to_vec()))
        }
        l => Err(format!("unexpected PEM block {l:?}")),
    }
}

/// A PKCS#12 file (one file on its own): its private key and the certificate that matches it.
fn parse_pkcs12(
    name: &str,
    data: &[u8],
    passphrase: Option<&Zeroizing<Vec<u8>>>,
) -> Result<PrivateIdentity, String> {
    let pw = match passphrase {
        Some(p) => std::str::from_utf8(p)
            .map_err(|_| format!("{name}: the PKCS#12 passphrase must be UTF-8"))?
            .to_string(),
        None => String::new(),
    };
    let pw = Zeroizing::new(pw);
    let ks = p12_keystore::KeyStore::from_pkcs12(data, &pw).map_err(|e| {
        if passphrase.is_none() {
            format!("{name}: cannot read PKCS#12 ({e}); is a --passphrase-file needed?")
        } else {
            format!("{name}: cannot read PKCS#12 (wrong passphrase or corrupt file: {e})")
        }
    })?;
    let (_, chain) = ks
        .private_key_chain()
        .ok_or_else(|| format!("{name}: the PKCS#12 file holds no private key"))?;
    let key = Zeroizing::new(chain.key().to_vec());
    let certs = chain.chain().iter().map(|c| c.as_der().to_vec()).collect();
    pair(key, certs).map_err(|e| format!("{name}: {e}"))
}

/// Finds the certificate matching the PKCS#8 key among `certs`.
fn pair(key: Zeroizing<Vec<u8>>, certs: Vec<Vec<u8>>) -> Result<PrivateIdentity, String> {
    let public = public_key_of(&key)?;
    let mut leaf = None;
    let mut chain = Vec::new();
    for c in certs {
        let (cert, _) = x509::inspect(&c)?;
        let spki = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| e.to_string())?;
        if leaf.is_none() && spki == public {
            leaf = Some(c);
        } else {
            chain.push(c);
        }
    }
    let cert = leaf.ok_or("no certificate matches the private key")?;
    Ok(PrivateIdentity::Smime { cert, chain, key })
}

/// The SubjectPublicKeyInfo DER of a PKCS#8 private key (RSA or P-256).
fn public_key_of(pkcs8_der: &[u8]) -> Result<Vec<u8>, String> {
    let info = pkcs8::PrivateKeyInfo::from_der(pkcs8_der)
        .map_err(|e| format!("bad PKCS#8 private key: {e}"))?;
    let oid = info.algorithm.oid.to_string();
    if oid == "1.2.840.113549.1.1.1" {
        use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
        let k = rsa::RsaPrivateKey::from_pkcs8_der(pkcs8_der)
            .map_err(|e| format!("bad RSA private key: {e}"))?;
        let p = k
            .to_public_key()
            .to_public_key_der()
            .map_err(|e| e.to_string())?;
        Ok(p.as_bytes().to_vec())
    } else if oid == "1.2.840.10045.2.1" {
        use p256::pkcs8::{DecodePrivateKey, EncodePublicKey};
        let k = p256::SecretKey::from_pkcs8_der(pkcs8_der)
            .map_err(|e| format!("bad EC private key (only P-256 is supported): {e}"))?;
        let p = k
            .public_key()
            .to_public_key_der()
            .map_err(|e| e.to_string())?;
        Ok(p.as_bytes().to_vec())
    } else {
        Err(format!("unsupported private key algorithm {oid}"))
    }
}
