//! Detection of mail that is already signed or encrypted (never decrypted: SECURITY.md I10).

use super::canon::contains;
use super::content_type::ContentType;
use super::header::{parse_message, ParsedMessage};
use super::Limits;

/// What protection a message already carries, judged from its top-level structure only: its
/// Content-Type, or a text body that is exactly one inline OpenPGP armored block.
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

/// Classifies `message` by its top-level structure. Never fails: unparseable input is
/// [`Protection::None`]. An armored block quoted inside a body, or in one part of a multipart,
/// is [`Protection::None`]: the message is sealed normally.
pub fn detect_protection(message: &[u8], limits: &Limits) -> Protection {
    let Ok(parsed) = parse_message(message, limits) else {
        return Protection::None;
    };
    let ct = parsed
        .field("content-type")
        .and_then(|f| ContentType::parse(&f.value()));
    if let Some(p) = ct.as_ref().and_then(by_content_type) {
        return p;
    }
    inline_pgp(&parsed, message)
}

/// The protection a top-level Content-Type declares, if any.
fn by_content_type(ct: &ContentType) -> Option<Protection> {
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
    by_type.filter(|p| p.is_protected())
}

/// Inline PGP only when the whole message is one text body that is exactly one armored
/// block: a block quoted inside a body says nothing about the message (SECURITY.md I10).
fn inline_pgp(parsed: &ParsedMessage, message: &[u8]) -> Protection {
    let text_body = parsed
        .field("content-type")
        .map(|f| ContentType::parse(&f.value()))
        .is_none_or(|ct| ct.is_none_or(|c| c.mime_type == "text"));
    let identity = parsed.field("content-transfer-encoding").is_none_or(|f| {
        matches!(
            f.value().to_ascii_lowercase().as_str(),
            "" | "7bit" | "8bit" | "binary"
        )
    });
    if !text_body || !identity {
        return Protection::None;
    }
    let body = trim_ascii_whitespace(&message[parsed.body_offset.min(message.len())..]);
    if is_one_armored_block(
        body,
        b"-----BEGIN PGP MESSAGE-----",
        b"-----END PGP MESSAGE-----",
    ) {
        Protection::InlinePgpEncrypted
    } else if is_one_armored_block(
        body,
        b"-----BEGIN PGP SIGNED MESSAGE-----",
        b"-----END PGP SIGNATURE-----",
    ) {
        Protection::InlinePgpSigned
    } else {
        Protection::None
    }
}

fn trim_ascii_whitespace(mut b: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = b {
        if first.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = b {
        if last.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    b
}

/// `body` (white space trimmed) starts with `begin`, ends with `end`, and holds no second
/// `begin`.
fn is_one_armored_block(body: &[u8], begin: &[u8], end: &[u8]) -> bool {
    body.starts_with(begin)
        && body.ends_with(end)
        && body.len() >= begin.len() + end.len()
        && !contains(&body[begin.len()..], begin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detect(m: &[u8]) -> Protection {
        detect_protection(m, &Limits::default())
    }

    /// Issue 9 item 4 (SECURITY.md I10): judged by the top-level structure only. A body that
    /// quotes an armored block, or a part of a multipart that holds one, is not protected.
    #[test]
    fn quoted_armor_is_not_protection() {
        const BLOCK: &str =
            "-----BEGIN PGP MESSAGE-----\r\n\r\nhQEMA1234\r\n-----END PGP MESSAGE-----\r\n";
        const SIGNED: &str = "-----BEGIN PGP SIGNED MESSAGE-----\r\nHash: SHA256\r\n\r\nx\r\n\
                              -----BEGIN PGP SIGNATURE-----\r\n\r\niQ\r\n-----END PGP SIGNATURE-----\r\n";
        for (body, kind) in [(BLOCK, "encrypted"), (SIGNED, "signed")] {
            let quoted = format!("Subject: fwd\r\n\r\nYou wrote:\r\n{body}\r\nMy answer.\r\n");
            assert_eq!(detect(quoted.as_bytes()), Protection::None, "quoted {kind}");
            let trailing = format!("Subject: fwd\r\n\r\n{body}\r\nsent from my phone\r\n");
            assert_eq!(
                detect(trailing.as_bytes()),
                Protection::None,
                "{kind} + text"
            );
            let two = format!("Subject: two\r\n\r\n{body}{body}");
            assert_eq!(
                detect(two.as_bytes()),
                Protection::None,
                "two {kind} blocks"
            );
            let in_part = format!(
                "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n{body}\r\n--b--\r\n"
            );
            assert_eq!(
                detect(in_part.as_bytes()),
                Protection::None,
                "{kind} in a part"
            );
            let html = format!("Content-Type: text/html\r\n\r\n{body}");
            assert_ne!(
                detect(html.as_bytes()),
                Protection::None,
                "text/html {kind}"
            );
            let attachment = format!("Content-Type: application/octet-stream\r\n\r\n{body}");
            assert_eq!(
                detect(attachment.as_bytes()),
                Protection::None,
                "{kind} attachment"
            );
            let exact = format!("Subject: x\r\n\r\n\r\n{body}\r\n\r\n");
            assert!(
                detect(exact.as_bytes()).is_protected(),
                "exactly one {kind} block"
            );
        }
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
            detect(b"Subject: x\r\n\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nhQEMA\r\n-----END PGP MESSAGE-----\r\n"),
            Protection::InlinePgpEncrypted
        );
        assert_eq!(
            detect(b"Subject: x\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n-----BEGIN PGP SIGNED MESSAGE-----\r\nHash: SHA256\r\n\r\nhi\r\n-----BEGIN PGP SIGNATURE-----\r\n\r\niQ\r\n-----END PGP SIGNATURE-----"),
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
        assert_eq!(detect(b"\r\n-----BEGIN PGP MESSAGE-----"), Protection::None);
        assert_eq!(detect(b"\xff\xff\xff"), Protection::None);
    }
}
