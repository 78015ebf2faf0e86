//! Detection of mail that is already signed or encrypted (never decrypted: SECURITY.md I10).

use super::canon::contains;
use super::content_type::ContentType;
use super::header::parse_message;
use super::Limits;

/// What protection a message already carries, judged from its top-level Content-Type and from
/// inline OpenPGP armor in its body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Protection {
    /// Nothing recognised.
    None,
    /// S/MIME multipart/signed, or application/pkcs7-mime with smime-type=signed-data.
    SmimeSigned,
    /// S/MIME enveloped-data or authEnveloped-data (or pkcs7-mime without smime-type).
    SmimeEncrypted,
    /// S/MIME compressed-data.
    SmimeCompressed,
    /// PGP/MIME multipart/signed (RFC 3156).
    PgpMimeSigned,
    /// PGP/MIME multipart/encrypted (RFC 3156).
    PgpMimeEncrypted,
    /// multipart/signed with another protocol.
    OtherSigned,
    /// multipart/encrypted with another protocol.
    OtherEncrypted,
    /// Inline `-----BEGIN PGP SIGNED MESSAGE-----`.
    InlinePgpSigned,
    /// Inline `-----BEGIN PGP MESSAGE-----`.
    InlinePgpEncrypted,
}

impl Protection {
    /// True for everything except [`Protection::None`].
    pub fn is_protected(self) -> bool {
        self != Protection::None
    }

    /// True for the encrypted kinds.
    pub fn is_encrypted(self) -> bool {
        matches!(
            self,
            Protection::SmimeEncrypted
                | Protection::PgpMimeEncrypted
                | Protection::OtherEncrypted
                | Protection::InlinePgpEncrypted
        )
    }
}

/// Classifies `message`. Never fails: unparseable input is [`Protection::None`] unless it holds
/// inline PGP armor.
pub fn detect_protection(message: &[u8], limits: &Limits) -> Protection {
    let Ok(parsed) = parse_message(message, limits) else {
        return Protection::None;
    };
    if let Some(ct) = parsed
        .field("content-type")
        .and_then(|f| ContentType::parse(&f.value()))
    {
        let protocol = ct.param("protocol").unwrap_or("").to_ascii_lowercase();
        let by_type = match (ct.mime_type.as_str(), ct.subtype.as_str()) {
            ("multipart", "signed") => Some(if protocol.contains("pkcs7-signature") {
                Protection::SmimeSigned
            } else if protocol == "application/pgp-signature" {
                Protection::PgpMimeSigned
            } else {
                Protection::OtherSigned
            }),
            ("multipart", "encrypted") => Some(if protocol == "application/pgp-encrypted" {
                Protection::PgpMimeEncrypted
            } else {
                Protection::OtherEncrypted
            }),
            ("application", "pkcs7-mime") | ("application", "x-pkcs7-mime") => {
                let smime_type = ct.param("smime-type").unwrap_or("").to_ascii_lowercase();
                Some(match smime_type.as_str() {
                    "signed-data" => Protection::SmimeSigned,
                    "compressed-data" => Protection::SmimeCompressed,
                    "certs-only" => Protection::None,
                    _ => Protection::SmimeEncrypted,
                })
            }
            ("application", "pkcs7-signature") | ("application", "x-pkcs7-signature") => {
                Some(Protection::SmimeSigned)
            }
            ("application", "pgp-encrypted") => Some(Protection::PgpMimeEncrypted),
            _ => None,
        };
        if let Some(p) = by_type.filter(|p| p.is_protected()) {
            return p;
        }
    }
    let body = &message[parsed.body_offset.min(message.len())..];
    if has_armor_line(body, b"-----BEGIN PGP MESSAGE-----") {
        Protection::InlinePgpEncrypted
    } else if has_armor_line(body, b"-----BEGIN PGP SIGNED MESSAGE-----") {
        Protection::InlinePgpSigned
    } else {
        Protection::None
    }
}

/// `marker` at the start of a line.
fn has_armor_line(body: &[u8], marker: &[u8]) -> bool {
    if body.starts_with(marker) {
        return true;
    }
    let mut with_lf = Vec::with_capacity(marker.len() + 1);
    with_lf.push(b'\n');
    with_lf.extend_from_slice(marker);
    contains(body, &with_lf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detect(m: &[u8]) -> Protection {
        detect_protection(m, &Limits::default())
    }

    #[test]
    fn recognises_forms() {
        assert_eq!(detect(b"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=x\r\n\r\n"), Protection::SmimeSigned);
        assert_eq!(detect(b"Content-Type: multipart/signed; protocol=\"application/pgp-signature\"; boundary=x\r\n\r\n"), Protection::PgpMimeSigned);
        assert_eq!(detect(b"Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=x\r\n\r\n"), Protection::PgpMimeEncrypted);
        assert_eq!(
            detect(b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\n"),
            Protection::SmimeEncrypted
        );
        assert_eq!(
            detect(b"Content-Type: application/x-pkcs7-mime; name=smime.p7m\r\n\r\n"),
            Protection::SmimeEncrypted
        );
        assert_eq!(
            detect(b"Content-Type: application/pkcs7-mime; smime-type=authEnveloped-data\r\n\r\n"),
            Protection::SmimeEncrypted
        );
        assert_eq!(
            detect(b"Content-Type: application/pkcs7-mime; smime-type=signed-data\r\n\r\n"),
            Protection::SmimeSigned
        );
        assert_eq!(
            detect(b"Subject: x\r\n\r\nhello\r\n-----BEGIN PGP MESSAGE-----\r\n"),
            Protection::InlinePgpEncrypted
        );
        assert_eq!(
            detect(b"Subject: x\r\n\r\n-----BEGIN PGP SIGNED MESSAGE-----\r\n"),
            Protection::InlinePgpSigned
        );
        assert_eq!(
            detect(b"Subject: x\r\n\r\nquote -----BEGIN PGP MESSAGE-----\r\n"),
            Protection::None
        );
        assert_eq!(
            detect(b"Content-Type: text/plain\r\n\r\nhello"),
            Protection::None
        );
        assert_eq!(detect(b""), Protection::None);
        assert_eq!(detect(b"\xff\xff\xff"), Protection::None);
    }
}
