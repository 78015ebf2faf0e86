//! Outer/inner split and RFC 9788 header protection.

use super::assemble::is_content_field;
use super::canon::{canonicalize_for, Carrier};
use super::content_type::ContentType;
use super::header::{parse_message, HeaderField, ParsedMessage};
use super::protection::{detect_protection, Protection};
use super::{Limits, MimeError, MAX_LINE};

/// Header fields copied into the protected inner entity (RFC 9788), case-insensitive.
pub const PROTECTED_FIELDS: &[&str] = &[
    "From",
    "Sender",
    "Reply-To",
    "To",
    "Cc",
    "Date",
    "Message-ID",
    "Subject",
    "In-Reply-To",
    "References",
    "Keywords",
    "Comments",
];

/// The outer Subject of an encrypted message when the real one is hidden (RFC 9788).
pub const HIDDEN_SUBJECT: &str = "[...]";

/// Which RFC 9788 header protection to apply to the inner entity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum HeaderProtection {
    /// No copies of header fields in the inner entity.
    None,
    /// Signed only: copies, `hp="clear"`.
    Clear,
    /// Encrypted: copies, `hp="cipher"`, `HP-Outer` fields.
    #[default]
    Cipher,
}

/// How to prepare a message for sealing.
#[derive(Clone, Debug, Default)]
pub struct PrepareOptions {
    /// Header protection mode.
    pub header_protection: HeaderProtection,
    /// Replace the outer Subject with [`HIDDEN_SUBJECT`] (only with [`HeaderProtection::Cipher`]).
    pub hide_subject: bool,
    /// Parsing and canonicalisation bounds.
    pub limits: Limits,
    /// What carries the inner entity: in clear (signed only), bytes that cannot be made 7-bit
    /// reversibly are refused; inside encryption they are kept exactly (see [`Carrier`]).
    pub carrier: Carrier,
}

impl PrepareOptions {
    /// The options for sealing a message: [`HeaderProtection::Cipher`] when `encrypting`
    /// (signed or not), [`HeaderProtection::Clear`] when only signing; `hide_subject` only
    /// takes effect when encrypting.
    pub fn for_sealing(encrypting: bool, hide_subject: bool, limits: Limits) -> PrepareOptions {
        PrepareOptions {
            header_protection: if encrypting {
                HeaderProtection::Cipher
            } else {
                HeaderProtection::Clear
            },
            hide_subject: encrypting && hide_subject,
            limits,
            carrier: if encrypting {
                Carrier::Encrypted
            } else {
                Carrier::Clear
            },
        }
    }
}

/// A message ready to be sealed.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// Header fields of the outgoing message (never `Bcc`, no `Content-*`, no `MIME-Version`).
    pub outer: Vec<HeaderField>,
    /// The canonical inner entity: the bytes that are signed and/or encrypted.
    pub inner: Vec<u8>,
    /// Protection the input already had.
    pub protection: Protection,
}

fn is_bcc(field: &HeaderField) -> bool {
    field.is("bcc") || field.is("resent-bcc")
}

fn is_protected(field: &HeaderField) -> bool {
    PROTECTED_FIELDS.iter().any(|n| field.is(n))
}

/// Splits the header fields into the outer fields (everything that is not structural, never
/// `Bcc`/`Resent-Bcc`, no `MIME-Version`) and the `Content-*` fields of the inner entity.
pub fn split_headers(parsed: &ParsedMessage) -> (Vec<HeaderField>, Vec<HeaderField>) {
    let mut outer = Vec::new();
    let mut content = Vec::new();
    for field in &parsed.fields {
        if is_bcc(field) || field.is("mime-version") {
            continue;
        }
        if is_content_field(field) {
            content.push(field.clone());
        } else {
            outer.push(field.clone());
        }
    }
    (outer, content)
}

/// Parses `message`, splits it, applies header protection and canonicalises the inner entity.
/// Outer fields with a line over 998 octets are refolded (they travel in clear); one that
/// cannot be folded is [`MimeError::UnfoldableHeaderLine`].
pub fn prepare(message: &[u8], opts: &PrepareOptions) -> Result<Prepared, MimeError> {
    let parsed = parse_message(message, &opts.limits)?;
    let protection = detect_protection(message, &opts.limits);
    let (outer, content) = split_headers(&parsed);
    let mut outer = outer
        .iter()
        .map(|f| f.refold(MAX_LINE))
        .collect::<Result<Vec<_>, _>>()?;
    let body = &message[parsed.body_offset.min(message.len())..];

    let mut inner_fields = protect_outer_fields(&mut outer, opts);
    inner_fields.extend(content_fields(content, opts.header_protection));
    let mut raw_inner: Vec<u8> = Vec::with_capacity(body.len() + 4096);
    for field in &inner_fields {
        field.write_to(&mut raw_inner);
    }
    raw_inner.extend_from_slice(b"\r\n");
    raw_inner.extend_from_slice(body);
    let inner = canonicalize_for(&raw_inner, &opts.limits, opts.carrier)?;
    Ok(Prepared {
        outer,
        inner,
        protection,
    })
}

/// The inner entity's copies of the protected outer fields (RFC 9788); when encrypting, the
/// outer Subject is hidden if asked, and `HP-Outer` fields record what the outer header shows.
fn protect_outer_fields(outer: &mut [HeaderField], opts: &PrepareOptions) -> Vec<HeaderField> {
    let hp = opts.header_protection;
    let mut inner_fields: Vec<HeaderField> = Vec::new();
    if hp != HeaderProtection::None {
        inner_fields.extend(outer.iter().filter(|f| is_protected(f)).cloned());
    }
    if hp == HeaderProtection::Cipher && opts.hide_subject {
        for field in outer.iter_mut().filter(|f| f.is("subject")) {
            *field = HeaderField::new(field.name(), HIDDEN_SUBJECT);
        }
    }
    if hp == HeaderProtection::Cipher {
        for field in outer.iter().filter(|f| is_protected(f)) {
            let value = format!("{}: {}", field.name(), field.value());
            inner_fields.push(HeaderField::new("HP-Outer", &value));
        }
    }
    inner_fields
}

/// The inner entity's `Content-*` fields, its (first) Content-Type marked with `hp=` under
/// header protection (a text/plain one added when there is none).
fn content_fields(content: Vec<HeaderField>, hp: HeaderProtection) -> Vec<HeaderField> {
    let hp_value = match hp {
        HeaderProtection::None => None,
        HeaderProtection::Clear => Some("clear"),
        HeaderProtection::Cipher => Some("cipher"),
    };
    let mut fields = Vec::with_capacity(content.len() + 1);
    let mut has_content_type = false;
    for field in content {
        if field.is("content-type") && !has_content_type {
            has_content_type = true;
            let parsed_ct = ContentType::parse(&field.value());
            if let (Some(hp_value), Some(ct)) = (hp_value, parsed_ct) {
                if ct.param("hp").is_none() {
                    let mut value = String::from_utf8_lossy(field.raw_value())
                        .trim()
                        .to_string();
                    value.push_str(&format!("; hp=\"{hp_value}\""));
                    fields.push(HeaderField::new(field.name(), &value));
                    continue;
                }
            }
        }
        fields.push(field);
    }
    if !has_content_type {
        if let Some(hp_value) = hp_value {
            fields.push(HeaderField::new(
                "Content-Type",
                &format!("text/plain; charset=us-ascii; hp=\"{hp_value}\""),
            ));
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"Received: from x\r\nFrom: Alice <alice@example.org>\r\nTo: bob@example.org\r\nBcc: secret@example.org\r\nSubject: Hello\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhi\r\n";

    #[test]
    fn cipher_protection_and_hidden_subject() {
        let p = prepare(
            MSG,
            &PrepareOptions {
                hide_subject: true,
                ..PrepareOptions::default()
            },
        )
        .unwrap();
        let outer: Vec<String> = p.outer.iter().map(|f| format!("{f:?}")).collect();
        assert_eq!(
            outer,
            [
                "Received: from x",
                "From: Alice <alice@example.org>",
                "To: bob@example.org",
                "Subject: [...]"
            ]
        );
        let inner = String::from_utf8(p.inner).unwrap();
        assert_eq!(
            inner,
            "From: Alice <alice@example.org>\r\nTo: bob@example.org\r\nSubject: Hello\r\n\
             HP-Outer: From: Alice <alice@example.org>\r\nHP-Outer: To: bob@example.org\r\n\
             HP-Outer: Subject: [...]\r\nContent-Type: text/plain; charset=utf-8; hp=\"cipher\"\r\n\r\nhi\r\n"
        );
        assert!(!inner.to_ascii_lowercase().contains("bcc"));
    }

    #[test]
    fn clear_protection_keeps_subject() {
        let p = prepare(
            MSG,
            &PrepareOptions {
                header_protection: HeaderProtection::Clear,
                hide_subject: true,
                ..PrepareOptions::default()
            },
        )
        .unwrap();
        assert!(p
            .outer
            .iter()
            .any(|f| f.is("subject") && f.value() == "Hello"));
        let inner = String::from_utf8(p.inner).unwrap();
        assert!(inner.contains("hp=\"clear\""));
        assert!(!inner.contains("HP-Outer"));
    }

    #[test]
    fn options_for_sealing() {
        let enc = PrepareOptions::for_sealing(true, true, Limits::default());
        assert_eq!(enc.header_protection, HeaderProtection::Cipher);
        assert!(enc.hide_subject);
        let signed = PrepareOptions::for_sealing(false, true, Limits::default());
        assert_eq!(signed.header_protection, HeaderProtection::Clear);
        assert!(
            !signed.hide_subject,
            "the subject is only hidden when encrypting"
        );
        let p = prepare(MSG, &signed).unwrap();
        assert!(p
            .outer
            .iter()
            .any(|f| f.is("subject") && f.value() == "Hello"));
        let p = prepare(MSG, &enc).unwrap();
        assert!(p
            .outer
            .iter()
            .any(|f| f.is("subject") && f.value() == HIDDEN_SUBJECT));
    }

    /// Issue 17 item 6: outer fields travel in clear and are refolded; their value is kept.
    #[test]
    fn outer_long_lines_are_refolded() {
        let refs = (0..120)
            .map(|i| format!("<message-{i}@example.org>"))
            .collect::<Vec<_>>()
            .join(" ");
        let msg = format!("From: a@b\r\nReferences: {refs}\r\nX-Note : kept\r\n\r\nx\r\n");
        for opts in [
            PrepareOptions::for_sealing(true, false, Limits::default()),
            PrepareOptions::for_sealing(false, false, Limits::default()),
        ] {
            let p = prepare(msg.as_bytes(), &opts).unwrap();
            let r = p.outer.iter().find(|f| f.is("references")).unwrap();
            assert!(r.longest_line() <= 998);
            assert_eq!(r.value().replace("\r\n", ""), refs);
            assert!(p.outer.iter().any(|f| f.to_bytes() == b"X-Note : kept\r\n"));
        }
        let bad = format!("From: a@b\r\nX-Id: {}\r\n\r\nx\r\n", "y".repeat(1200));
        assert!(matches!(
            prepare(bad.as_bytes(), &PrepareOptions::default()),
            Err(MimeError::UnfoldableHeaderLine { .. })
        ));
    }

    #[test]
    fn no_content_type_gets_default() {
        let p = prepare(b"From: a@b\r\n\r\nx", &PrepareOptions::default()).unwrap();
        assert!(String::from_utf8(p.inner)
            .unwrap()
            .contains("Content-Type: text/plain; charset=us-ascii; hp=\"cipher\"\r\n\r\nx"));
    }
}
