//! Is mail that is labelled encrypted really encrypted? The label is only the client's word:
//! sealgate checks the structure (a CMS EnvelopedData / AuthEnvelopedData, or an OpenPGP
//! message starting with a session-key packet) without decrypting anything (SECURITY.md I10).

use base64::Engine;
use sequoia_openpgp::packet::Packet;
use sequoia_openpgp::parse::{PacketParser, PacketParserResult, Parse};

use crate::mime::{self, ContentType, Limits, Protection};

/// DER contents octets of id-envelopedData (1.2.840.113549.1.7.3).
const ID_ENVELOPED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03];
/// DER contents octets of id-ct-authEnvelopedData (1.2.840.113549.1.9.16.1.23).
const ID_CT_AUTH_ENVELOPED_DATA: &[u8] = &[
    0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x01, 0x17,
];

/// True when `message`, labelled `protection`, carries an encrypted structure.
pub fn really_encrypted(message: &[u8], protection: Protection, limits: &Limits) -> bool {
    match protection {
        Protection::SmimeEncrypted => smime_enveloped(message, limits),
        Protection::PgpMimeEncrypted => pgp_mime_encrypted(message, limits),
        Protection::InlinePgpEncrypted => {
            let Ok(parsed) = mime::parse_message(message, limits) else {
                return false;
            };
            pgp_encrypted(&message[parsed.body_offset.min(message.len())..])
        }
        _ => false,
    }
}

fn smime_enveloped(message: &[u8], limits: &Limits) -> bool {
    let Ok(parsed) = mime::parse_message(message, limits) else {
        return false;
    };
    let body = &message[parsed.body_offset.min(message.len())..];
    let base64 = parsed
        .field("Content-Transfer-Encoding")
        .is_some_and(|f| f.value().trim().eq_ignore_ascii_case("base64"));
    let der = if base64 {
        let compact: Vec<u8> = body
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        match base64::engine::general_purpose::STANDARD.decode(compact) {
            Ok(d) => d,
            Err(_) => return false,
        }
    } else {
        body.to_vec()
    };
    cms_enveloped(&der)
}

/// One BER tag-length header: (tag octet, contents length or `None` for the indefinite form,
/// header length). Only low tag numbers (all that CMS uses here).
fn ber_header(data: &[u8]) -> Option<(u8, Option<usize>, usize)> {
    let tag = *data.first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let first = *data.get(1)?;
    if first < 0x80 {
        return Some((tag, Some(usize::from(first)), 2));
    }
    if first == 0x80 {
        // Indefinite length: constructed encodings only (X.690 8.1.3.2).
        return (tag & 0x20 != 0).then_some((tag, None, 2));
    }
    let n = usize::from(first & 0x7f);
    if n > 4 {
        return None;
    }
    let mut len = 0usize;
    for i in 0..n {
        len = (len << 8) | usize::from(*data.get(2 + i)?);
    }
    Some((tag, Some(len), 2 + n))
}

/// A CMS ContentInfo holding EnvelopedData or AuthEnvelopedData, in DER or in BER with
/// indefinite lengths (`openssl cms -encrypt -stream` and many clients): ContentInfo SEQUENCE,
/// the content type OID, `[0]` holding a SEQUENCE that starts with the INTEGER version and has
/// a non-empty SET of RecipientInfos (after the optional `[0]` OriginatorInfo). Nothing is
/// decrypted; this is the shape, not a proof.
fn cms_enveloped(der: &[u8]) -> bool {
    let check = || -> Option<bool> {
        let (tag, _, h) = ber_header(der)?;
        if tag != 0x30 {
            return None;
        }
        let rest = der.get(h..)?;
        let (tag, len, h) = ber_header(rest)?;
        let oid = rest.get(h..h + len?)?;
        if tag != 0x06 || (oid != ID_ENVELOPED_DATA && oid != ID_CT_AUTH_ENVELOPED_DATA) {
            return Some(false);
        }
        let rest = rest.get(h + oid.len()..)?;
        let (tag, _, h) = ber_header(rest)?;
        if tag != 0xa0 {
            return Some(false);
        }
        let rest = rest.get(h..)?;
        let (tag, _, h) = ber_header(rest)?;
        if tag != 0x30 {
            return Some(false);
        }
        let rest = rest.get(h..)?;
        let (tag, len, h) = ber_header(rest)?;
        let len = len?;
        if tag != 0x02 || len == 0 || len > 1 || *rest.get(h)? > 4 {
            return Some(false);
        }
        let mut rest = rest.get(h + len..)?;
        let (mut tag, mut len, mut h) = ber_header(rest)?;
        if tag == 0xa0 {
            // OriginatorInfo: skip it (definite length only).
            rest = rest.get(h + len?..)?;
            (tag, len, h) = ber_header(rest)?;
        }
        Some(tag == 0x31 && len != Some(0) && rest.len() > h)
    };
    check().unwrap_or(false)
}

/// PGP/MIME (RFC 3156): the second body part of the multipart/encrypted is the encrypted
/// message; a block anywhere else (a preamble, the first part) does not count.
fn pgp_mime_encrypted(message: &[u8], limits: &Limits) -> bool {
    let Ok(parsed) = mime::parse_message(message, limits) else {
        return false;
    };
    let Some(ct) = parsed
        .field("content-type")
        .and_then(|f| ContentType::parse(&f.value()))
    else {
        return false;
    };
    let Some(boundary) = ct.multipart_boundary() else {
        return false;
    };
    let body = &message[parsed.body_offset.min(message.len())..];
    let Ok(Some(layout)) = mime::split_multipart(body, boundary.as_bytes(), limits.max_parts)
    else {
        return false;
    };
    let Some(&(start, end)) = layout.parts.get(1) else {
        return false;
    };
    let part = &body[start..end];
    let Ok(part_header) = mime::parse_message(part, limits) else {
        return false;
    };
    pgp_encrypted(&part[part_header.body_offset.min(part.len())..])
}

/// `data` (white space first allowed) is an armored OpenPGP message whose first packet is a
/// session-key packet.
fn pgp_encrypted(data: &[u8]) -> bool {
    const BEGIN: &[u8] = b"-----BEGIN PGP MESSAGE-----";
    let start = data
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(data.len());
    if !data[start..].starts_with(BEGIN) {
        return false;
    }
    let Ok(ppr) = PacketParser::from_bytes(&data[start..]) else {
        return false;
    };
    match ppr {
        PacketParserResult::Some(pp) => matches!(pp.packet, Packet::PKESK(_) | Packet::SKESK(_)),
        PacketParserResult::EOF(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The start of an EnvelopedData ContentInfo with indefinite lengths, as
    /// `openssl cms -encrypt -stream` writes it.
    fn ber_enveloped(oid: &[u8]) -> Vec<u8> {
        let mut v = vec![0x30, 0x80, 0x06, oid.len() as u8];
        v.extend_from_slice(oid);
        v.extend_from_slice(&[0xa0, 0x80, 0x30, 0x80, 0x02, 0x01, 0x00, 0x31, 0x80]);
        v.extend_from_slice(&[0x30, 0x03, 0x02, 0x01, 0x00, 0x00, 0x00]); // a RecipientInfo
        v.extend_from_slice(&[0x30, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]);
        v
    }

    fn smime_message(der: &[u8]) -> Vec<u8> {
        let mut m = b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
        m.extend_from_slice(&crate::mime::encode_base64_body(der));
        m
    }

    /// Issue 17 item 5: BER (indefinite lengths) is recognised like DER.
    #[test]
    fn ber_enveloped_data_is_recognised() {
        let l = Limits::default();
        for oid in [ID_ENVELOPED_DATA, ID_CT_AUTH_ENVELOPED_DATA] {
            let m = smime_message(&ber_enveloped(oid));
            assert!(really_encrypted(&m, Protection::SmimeEncrypted, &l));
        }
        // DER, definite lengths (long form too).
        let mut der = vec![0x30, 0x82, 0x01, 0x00, 0x06, 0x09];
        der.extend_from_slice(ID_ENVELOPED_DATA);
        der.extend_from_slice(&[0xa0, 0x81, 0xf0, 0x30, 0x81, 0xed, 0x02, 0x01, 0x02]);
        der.extend_from_slice(&[
            0xa0, 0x02, 0x30, 0x00, 0x31, 0x05, 0x30, 0x03, 0x02, 0x01, 0x00,
        ]);
        assert!(really_encrypted(
            &smime_message(&der),
            Protection::SmimeEncrypted,
            &l
        ));
        // Other content types, truncation, an empty RecipientInfos set: not encrypted.
        const ID_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
        let data = smime_message(&ber_enveloped(ID_DATA));
        assert!(!really_encrypted(&data, Protection::SmimeEncrypted, &l));
        let full = ber_enveloped(ID_ENVELOPED_DATA);
        for cut in 0..22 {
            let m = smime_message(&full[..cut]);
            assert!(
                !really_encrypted(&m, Protection::SmimeEncrypted, &l),
                "cut {cut}"
            );
        }
        let mut empty_set = full.clone();
        empty_set[21] = 0x00; // SET length 0 instead of indefinite
        assert_eq!(empty_set[20], 0x31);
        assert!(!really_encrypted(
            &smime_message(&empty_set),
            Protection::SmimeEncrypted,
            &l
        ));
    }

    #[test]
    fn pgp_mime_block_must_be_the_second_part() {
        let l = Limits::default();
        // A real-looking armor header is enough to reach the packet parser; a plaintext second
        // part with the block in the preamble must not count.
        let fake = b"Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nhQEMA1234\r\n-----END PGP MESSAGE-----\r\n--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--b\r\nContent-Type: application/octet-stream\r\n\r\nplain text\r\n--b--\r\n";
        assert!(!really_encrypted(fake, Protection::PgpMimeEncrypted, &l));
    }

    #[test]
    fn labels_without_structure_are_not_encrypted() {
        let l = Limits::default();
        let fake_smime = b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\nContent-Transfer-Encoding: base64\r\n\r\nbm90IGVuY3J5cHRlZA==\r\n";
        assert!(!really_encrypted(
            fake_smime,
            Protection::SmimeEncrypted,
            &l
        ));
        let fake_pgp = b"Content-Type: text/plain\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nhQEMA1234\r\n-----END PGP MESSAGE-----\r\n";
        assert!(!really_encrypted(
            fake_pgp,
            Protection::InlinePgpEncrypted,
            &l
        ));
        assert!(!really_encrypted(b"x", Protection::OtherEncrypted, &l));
    }
}
