//! Is mail that is labelled encrypted really encrypted? The label is only the client's word:
//! sealgate checks the structure (a CMS EnvelopedData / AuthEnvelopedData, or an OpenPGP
//! message starting with a session-key packet) without decrypting anything (SECURITY.md I10).

use base64::Engine;
use der::Decode;
use sequoia_openpgp::packet::Packet;
use sequoia_openpgp::parse::{PacketParser, PacketParserResult, Parse};

use crate::mime::{self, Limits, Protection};

const ID_ENVELOPED_DATA: &str = "1.2.840.113549.1.7.3";
const ID_CT_AUTH_ENVELOPED_DATA: &str = "1.2.840.113549.1.9.16.1.23";

/// True when `message`, labelled `protection`, carries an encrypted structure.
pub fn really_encrypted(message: &[u8], protection: Protection, limits: &Limits) -> bool {
    match protection {
        Protection::SmimeEncrypted => smime_enveloped(message, limits),
        Protection::PgpMimeEncrypted | Protection::InlinePgpEncrypted => pgp_encrypted(message),
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
    match cms::content_info::ContentInfo::from_der(&der) {
        Ok(ci) => {
            let oid = ci.content_type.to_string();
            oid == ID_ENVELOPED_DATA || oid == ID_CT_AUTH_ENVELOPED_DATA
        }
        Err(_) => false,
    }
}

fn pgp_encrypted(message: &[u8]) -> bool {
    const BEGIN: &[u8] = b"-----BEGIN PGP MESSAGE-----";
    let Some(start) = message.windows(BEGIN.len()).position(|w| w == BEGIN) else {
        return false;
    };
    let Ok(ppr) = PacketParser::from_bytes(&message[start..]) else {
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
