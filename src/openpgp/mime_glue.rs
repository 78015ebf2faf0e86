//! MIME GLUE — the few MIME helpers this module needs, kept in this one file
//! so that they can be replaced by the shared `mime` module when it lands.
//!
//! Nothing here decodes or re-encodes content: the caller hands us entities
//! that are already canonical (CRLF line ends; for signed-only mail, 7-bit
//! with lines of at most 998 octets), and we check that they are.
//!
//! Provided: header-field splitting (with folding), canonical-form checks,
//! a minimal detection of already signed/encrypted input, the
//! `protected-headers="v1"` marker on the inner Content-Type, and random
//! boundaries.

use sequoia_openpgp as pgp;

use super::error::PgpError;

/// The longest line (without CRLF) RFC 5322 allows.
pub const MAX_LINE: usize = 998;

/// One header field, as it appears in the input.
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    /// The field name, as written.
    pub name: &'a [u8],
    /// The whole field: name, colon, value and every folded line, each
    /// line with its CRLF.
    pub raw: &'a [u8],
}

impl Field<'_> {
    /// Case-insensitive name comparison.
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }

    /// The value after the colon, without the final CRLF (folding kept).
    pub fn value(&self) -> &[u8] {
        let v = &self.raw[self.name.len() + 1..];
        v.strip_suffix(b"\r\n").unwrap_or(v)
    }
}

/// A header block split into fields. `end` is the offset just past the
/// empty line that ends it, or the length of the input if there is none.
#[derive(Debug)]
pub struct Header<'a> {
    /// The fields, in order.
    pub fields: Vec<Field<'a>>,
    /// Where the body starts.
    pub end: usize,
}

impl<'a> Header<'a> {
    /// The first field called `name`.
    pub fn get(&self, name: &str) -> Option<&Field<'a>> {
        self.fields.iter().find(|f| f.is(name))
    }
}

/// Splits a header block. Lines must end in CRLF; continuation lines start
/// with SP or HTAB; a field name is printable ASCII without ':'.
pub fn parse_header(block: &[u8]) -> Result<Header<'_>, PgpError> {
    let mut fields: Vec<Field<'_>> = Vec::new();
    let mut pos = 0;
    let mut start: Option<(usize, usize)> = None; // (field start, name len)
    loop {
        if pos == block.len() {
            push(&mut fields, block, start, pos);
            return Ok(Header { fields, end: pos });
        }
        if block[pos..].starts_with(b"\r\n") {
            push(&mut fields, block, start, pos);
            return Ok(Header {
                fields,
                end: pos + 2,
            });
        }
        let line_end =
            find(&block[pos..], b"\r\n")
                .map(|i| pos + i + 2)
                .ok_or(PgpError::NotCanonical {
                    what: "header line without CRLF",
                    offset: pos,
                })?;
        let line = &block[pos..line_end - 2];
        if let Some(bad) = line
            .iter()
            .position(|&b| b == b'\r' || b == b'\n' || b == 0)
        {
            return Err(PgpError::NotCanonical {
                what: "bare CR, LF or NUL in a header",
                offset: pos + bad,
            });
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if start.is_none() {
                return Err(PgpError::NotCanonical {
                    what: "header block starts with a continuation line",
                    offset: pos,
                });
            }
        } else {
            push(&mut fields, block, start, pos);
            let colon = line.iter().position(|&b| b == b':');
            match colon {
                Some(n) if n > 0 && line[..n].iter().all(|&b| (33..=126).contains(&b)) => {
                    start = Some((pos, n));
                }
                _ => {
                    return Err(PgpError::NotCanonical {
                        what: "malformed header field",
                        offset: pos,
                    })
                }
            }
        }
        pos = line_end;
    }
}

fn push<'a>(
    fields: &mut Vec<Field<'a>>,
    block: &'a [u8],
    start: Option<(usize, usize)>,
    end: usize,
) {
    if let Some((s, n)) = start {
        fields.push(Field {
            name: &block[s..s + n],
            raw: &block[s..end],
        });
    }
}

/// Every CR is followed by LF and every LF preceded by CR.
pub fn check_crlf(data: &[u8]) -> Result<(), PgpError> {
    let mut prev = 0u8;
    for (i, &b) in data.iter().enumerate() {
        let bad = (b == b'\n' && prev != b'\r') || (prev == b'\r' && b != b'\n');
        if bad {
            return Err(PgpError::NotCanonical {
                what: "bare CR or LF",
                offset: i,
            });
        }
        prev = b;
    }
    if prev == b'\r' {
        return Err(PgpError::NotCanonical {
            what: "bare CR",
            offset: data.len() - 1,
        });
    }
    Ok(())
}

/// 7-bit, no NUL, lines of at most [`MAX_LINE`] octets: what survives any
/// MTA hop unchanged, so that a signature in clear stays valid. Assumes
/// [`check_crlf`] passed.
pub fn check_7bit(data: &[u8]) -> Result<(), PgpError> {
    let mut line_start = 0;
    for (i, &b) in data.iter().enumerate() {
        if b == 0 || b >= 0x80 {
            return Err(PgpError::NotCanonical {
                what: "8-bit or NUL octet in signed-only content (must be transfer-encoded)",
                offset: i,
            });
        }
        if b == b'\n' {
            line_start = i + 1;
        } else if b != b'\r' && i - line_start >= MAX_LINE {
            // The (MAX_LINE + 1)th octet of a line (CR only precedes LF).
            return Err(PgpError::NotCanonical {
                what: "line longer than 998 octets (must be transfer-encoded)",
                offset: i,
            });
        }
    }
    Ok(())
}

/// The `type/subtype` of a Content-Type value, lower-cased, without
/// parameters, whitespace or folding.
pub fn media_type(value: &[u8]) -> String {
    let end = value.iter().position(|&b| b == b';').unwrap_or(value.len());
    value[..end]
        .iter()
        .filter(|b| !b.is_ascii_whitespace())
        .map(|b| b.to_ascii_lowercase() as char)
        .collect()
}

/// Media types that mean "already signed or encrypted".
const PROTECTED_TYPES: [&str; 6] = [
    "multipart/encrypted",
    "multipart/signed",
    "application/pgp-encrypted",
    "application/pkcs7-mime",
    "application/x-pkcs7-mime",
    "application/pkcs7-signature",
];

/// Minimal detection of input that is already protected: a protective
/// top-level Content-Type (in the outer or the inner header), or an inline
/// OpenPGP armored message / cleartext signature at the start of a line in
/// the body. Returns what was found. (The shared mime module does this
/// properly, including encoded and nested parts.)
pub fn detect_protected(
    outer: &Header<'_>,
    inner: &Header<'_>,
    body: &[u8],
) -> Option<&'static str> {
    for h in [outer, inner] {
        if let Some(ct) = h.get("Content-Type") {
            let t = media_type(ct.value());
            if let Some(k) = PROTECTED_TYPES.iter().find(|k| **k == t) {
                return Some(k);
            }
        }
    }
    const ARMORS: [(&[u8], &str); 2] = [
        (b"-----BEGIN PGP MESSAGE-----", "inline OpenPGP message"),
        (
            b"-----BEGIN PGP SIGNED MESSAGE-----",
            "inline OpenPGP signed message",
        ),
    ];
    let mut pos = 0;
    while pos < body.len() {
        let line = &body[pos..];
        for (armor, kind) in ARMORS {
            if line.starts_with(armor) {
                return Some(kind);
            }
        }
        match find(line, b"\n") {
            Some(i) => pos += i + 1,
            None => break,
        }
    }
    None
}

/// Does the header carry protected header fields (anything besides the
/// MIME content fields)? Then it is the root of a Cryptographic Payload
/// with header protection.
pub fn has_protected_headers(h: &Header<'_>) -> bool {
    h.fields.iter().any(|f| {
        let name = f.name.to_ascii_lowercase();
        !(name.starts_with(b"content-") || name == b"mime-version")
    })
}

/// When the inner entity carries protected headers and its Content-Type
/// lacks `protected-headers`, returns its header block rewritten with
/// `protected-headers="v1"` appended (as a folded line) to the Content-Type
/// field. `None` means "use the header as it is".
pub fn mark_protected_headers(inner: &[u8], h: &Header<'_>) -> Option<Vec<u8>> {
    if !has_protected_headers(h) {
        return None;
    }
    let ct = h.get("Content-Type")?;
    let lower = ct.value().to_ascii_lowercase();
    if find(&lower, b"protected-headers").is_some() {
        return None;
    }
    let ct_start = ct.raw.as_ptr() as usize - inner.as_ptr() as usize;
    let ct_end = ct_start + ct.raw.len();
    let mut out = Vec::with_capacity(h.end + 32);
    out.extend_from_slice(&inner[..ct_start]);
    out.extend_from_slice(ct.raw.strip_suffix(b"\r\n").unwrap_or(ct.raw));
    out.extend_from_slice(b";\r\n protected-headers=\"v1\"\r\n");
    out.extend_from_slice(&inner[ct_end..h.end]);
    Some(out)
}

/// A random boundary (144 bits) absent from every part of `contents`.
/// "=_" cannot occur in base64 nor start a valid quoted-printable escape.
pub fn random_boundary(contents: &[&[u8]]) -> Result<String, PgpError> {
    for _ in 0..8 {
        let mut r = [0u8; 18];
        pgp::crypto::random(&mut r[..]).map_err(|e| PgpError::crypto("random", e))?;
        let mut b = String::with_capacity(4 + 36);
        b.push_str("=_sg");
        for byte in r {
            b.push_str(&format!("{byte:02x}"));
        }
        if contents.iter().all(|c| find(c, b.as_bytes()).is_none()) {
            return Ok(b);
        }
    }
    Err(PgpError::Boundary)
}

/// First occurrence of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut pos = 0;
    while pos + needle.len() <= hay.len() {
        let i = hay[pos..=hay.len() - needle.len()]
            .iter()
            .position(|&b| b == first)?;
        let at = pos + i;
        if &hay[at + 1..at + needle.len()] == rest {
            return Some(at);
        }
        pos = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_with_folding_and_blank_line() {
        let h = b"From: a@x\r\nSubject: one\r\n two\r\n\r\nbody";
        let p = parse_header(h).unwrap();
        assert_eq!(p.fields.len(), 2);
        assert_eq!(p.fields[1].raw, b"Subject: one\r\n two\r\n");
        assert_eq!(p.fields[1].value(), b" one\r\n two");
        assert_eq!(&h[p.end..], b"body");
    }

    #[test]
    fn header_errors() {
        assert!(parse_header(b" cont\r\n").is_err());
        assert!(parse_header(b"From: a\n").is_err());
        assert!(parse_header(b"From: a\r\nnocolon\r\n").is_err());
        assert!(parse_header(b"Fr om: a\r\n").is_err());
        assert!(parse_header(b"From: a\rb\r\n").is_err());
        assert!(parse_header(b"From: a").is_err());
        assert_eq!(parse_header(b"").unwrap().end, 0);
        assert_eq!(parse_header(b"\r\nbody").unwrap().end, 2);
    }

    #[test]
    fn crlf_checks() {
        assert!(check_crlf(b"a\r\nb\r\n").is_ok());
        assert!(check_crlf(b"a\nb").is_err());
        assert!(check_crlf(b"a\rb").is_err());
        assert!(check_crlf(b"a\r").is_err());
        assert!(check_crlf(b"\r\r\n").is_err());
    }

    #[test]
    fn seven_bit_and_line_limit() {
        let ok = [vec![b'a'; MAX_LINE], b"\r\n".to_vec()].concat();
        assert!(check_7bit(&ok).is_ok());
        let long = [vec![b'a'; MAX_LINE + 1], b"\r\n".to_vec()].concat();
        assert!(check_7bit(&long).is_err());
        assert!(check_7bit(&vec![b'a'; MAX_LINE + 1]).is_err());
        assert!(check_7bit("é\r\n".as_bytes()).is_err());
        assert!(check_7bit(b"a\0").is_err());
    }

    #[test]
    fn detection() {
        let empty = parse_header(b"").unwrap();
        let enc =
            parse_header(b"Content-Type: Multipart/Encrypted;\r\n protocol=x\r\n\r\n").unwrap();
        assert_eq!(
            detect_protected(&empty, &enc, b""),
            Some("multipart/encrypted")
        );
        let plain = parse_header(b"Content-Type: text/plain\r\n\r\n").unwrap();
        assert_eq!(
            detect_protected(&enc, &plain, b""),
            Some("multipart/encrypted")
        );
        assert_eq!(detect_protected(&empty, &plain, b"hi\r\n"), None);
        assert_eq!(
            detect_protected(&empty, &plain, b"hi\r\n-----BEGIN PGP MESSAGE-----\r\n"),
            Some("inline OpenPGP message")
        );
        assert_eq!(
            detect_protected(&empty, &plain, b"-----BEGIN PGP SIGNED MESSAGE-----\r\n"),
            Some("inline OpenPGP signed message")
        );
        assert_eq!(
            detect_protected(&empty, &plain, b"> -----BEGIN PGP MESSAGE-----\r\n"),
            None
        );
    }

    #[test]
    fn protected_headers_marker() {
        let inner = b"Content-Type: text/plain; charset=us-ascii\r\nSubject: hi\r\n\r\nbody\r\n";
        let h = parse_header(inner).unwrap();
        let m = mark_protected_headers(inner, &h).unwrap();
        assert_eq!(
            m,
            b"Content-Type: text/plain; charset=us-ascii;\r\n protected-headers=\"v1\"\r\nSubject: hi\r\n\r\n"
        );
        // Idempotent.
        let again = [m.as_slice(), b"body\r\n"].concat();
        assert!(mark_protected_headers(&again, &parse_header(&again).unwrap()).is_none());
        // Nothing to mark without protected headers.
        let bare = b"Content-Type: text/plain\r\n\r\nbody";
        assert!(mark_protected_headers(bare, &parse_header(bare).unwrap()).is_none());
    }

    #[test]
    fn boundaries_are_random_and_absent() {
        let a = random_boundary(&[b"x"]).unwrap();
        let b = random_boundary(&[b"x"]).unwrap();
        assert_ne!(a, b);
        assert!(a.len() >= 4 + 32);
        assert_eq!(find(b"hello world", b"o w"), Some(4));
        assert_eq!(find(b"hello", b"hello!"), None);
        assert_eq!(find(b"aab", b"ab"), Some(1));
    }
}
