//! Canonicalisation of the entity that gets signed (see the module docs of [`super`]).
//!
//! The rule (issue 17): only what must change for a signature to survive transport changes -
//! line ends, the transfer encoding of leaf parts whose encoding is known, the length of lines
//! (by folding header fields or re-encoding bodies) - and every change is reversible to the
//! same MIME tree and the same decoded content. Everything else is copied as it is: preambles,
//! epilogues and delimiter lines (with any text after the boundary), parts with an unknown
//! transfer encoding, multiparts whose delimiters are not found, embedded messages without a
//! header. When such bytes are not 7-bit safe, [`Carrier`] decides: in clear they are refused
//! ([`MimeError::NotSevenBit`]), inside encryption they are kept exactly (the ciphertext is what
//! travels). Nothing is dropped, and no transfer encoding is ever put on a multipart or a
//! `message/rfc822` (RFC 2045 §6.4, RFC 2046 §5.2.1).

use super::content_type::ContentType;
use super::encoding::{
    decode_base64_lenient, decode_quoted_printable, encode_base64_body_into,
    encode_quoted_printable, normalize_line_ends, push_normalized,
};
use super::header::{next_line, parse_message, HeaderField, ParsedMessage};
use super::{Limits, MimeError, MAX_LINE};

/// What carries the canonical entity to its recipients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Carrier {
    /// Sent in clear (signed only): every octet must survive 7-bit transport, so bytes that no
    /// reversible re-encoding can make 7-bit are refused with [`MimeError::NotSevenBit`].
    #[default]
    Clear,
    /// Inside encryption: the ciphertext is what travels, so bytes that cannot be re-encoded
    /// reversibly are kept exactly as they are.
    Encrypted,
}

/// Canonicalises a MIME entity (header fields, empty line, body) for signing in clear: CRLF
/// line ends, 7-bit transfer encodings, lines of at most 998 octets, multiparts recursed into
/// within `limits`. Idempotent: `canonicalize(canonicalize(x)) == canonicalize(x)`.
pub fn canonicalize(entity: &[u8], limits: &Limits) -> Result<Vec<u8>, MimeError> {
    canonicalize_for(entity, limits, Carrier::Clear)
}

/// [`canonicalize`] for the given carrier (see [`Carrier`]). Also idempotent.
pub fn canonicalize_for(
    entity: &[u8],
    limits: &Limits,
    carrier: Carrier,
) -> Result<Vec<u8>, MimeError> {
    let mut out = Vec::with_capacity(entity.len() + entity.len() / 16 + 64);
    let mut canon = Canon {
        limits,
        carrier,
        parts: 0,
    };
    canon.entity(entity, 0, false, &mut out)?;
    Ok(out)
}

/// A `Content-Transfer-Encoding` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    /// No field (or an empty one).
    Absent,
    SevenBit,
    EightBit,
    Binary,
    Base64,
    QuotedPrintable,
    /// Anything else (`x-uuencode`, `7-bit`, `quoted-printable;`...): decoders leave it as is.
    Unknown,
}

impl Encoding {
    fn of(parsed: &ParsedMessage) -> Encoding {
        let Some(field) = parsed.field("content-transfer-encoding") else {
            return Encoding::Absent;
        };
        match field.value().to_ascii_lowercase().as_str() {
            "" => Encoding::Absent,
            "7bit" => Encoding::SevenBit,
            "8bit" => Encoding::EightBit,
            "binary" => Encoding::Binary,
            "base64" => Encoding::Base64,
            "quoted-printable" => Encoding::QuotedPrintable,
            _ => Encoding::Unknown,
        }
    }
}

/// What to do with the `Content-Transfer-Encoding` field of an entity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Label {
    Keep,
    Set(&'static str),
}

struct Canon<'l> {
    limits: &'l Limits,
    carrier: Carrier,
    parts: usize,
}

impl Canon<'_> {
    /// Writes the canonical form of `entity` to `out`. `in_digest`: the entity is a part of a
    /// multipart/digest, whose default type is message/rfc822 (RFC 2046 §5.1.5).
    fn entity(
        &mut self,
        entity: &[u8],
        depth: usize,
        in_digest: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), MimeError> {
        if depth > self.limits.max_depth {
            return Err(MimeError::TooDeep {
                limit: self.limits.max_depth,
            });
        }
        self.parts += 1;
        if self.parts > self.limits.max_parts {
            return Err(MimeError::TooManyParts {
                limit: self.limits.max_parts,
            });
        }
        let parsed = parse_message(entity, self.limits)?;
        let body = &entity[parsed.body_offset.min(entity.len())..];
        let ct = parsed
            .field("content-type")
            .and_then(|f| ContentType::parse(&f.value()));
        let encoding = Encoding::of(&parsed);

        // The body goes to `out` first; the header section is inserted before it once the
        // transfer encoding to declare is known.
        let mark = out.len();
        let label = match ct.as_ref() {
            Some(c) if c.mime_type == "multipart" => {
                self.multipart(c, body, encoding, depth, out)?
            }
            Some(c) if c.is("message", "rfc822") || c.is("message", "global") => {
                self.message(body, encoding, depth, out)?
            }
            Some(c) if c.is("message", "partial") || c.is("message", "external-body") => {
                // 7bit only (RFC 2046 §5.2.2, §5.2.3): never re-encoded.
                self.verbatim(body, "a message/partial or message/external-body part", out)?;
                Label::Keep
            }
            None if in_digest => self.message(body, encoding, depth, out)?,
            _ => self.leaf(body, encoding, is_text(ct.as_ref()), out)?,
        };

        let mut head = self.head(&parsed, label)?;
        // The empty line is kept where there was one, never invented where there was none
        // (an entity without a header stays without one) - except before a body that was
        // re-encoded, whose first line must not be taken for a header field.
        let reencoded = matches!(label, Label::Set(_)) && out.len() > mark;
        if parsed.separator || reencoded {
            head.extend_from_slice(b"\r\n");
        }
        out.splice(mark..mark, head);
        Ok(())
    }

    /// The entity's header fields, refolded, with the Content-Transfer-Encoding that `label`
    /// sets (in place of the first one, or added at the end; later ones dropped).
    fn head(&self, parsed: &ParsedMessage, label: Label) -> Result<Vec<u8>, MimeError> {
        let mut head = Vec::with_capacity(parsed.body_offset + 64);
        let mut cte_written = false;
        for field in &parsed.fields {
            if field.is("content-transfer-encoding") {
                match label {
                    Label::Set(_) if cte_written => continue,
                    Label::Set(c) if !c.eq_ignore_ascii_case(&field.value()) => {
                        HeaderField::new(field.name(), c).write_to(&mut head);
                        cte_written = true;
                        continue;
                    }
                    _ => cte_written = true,
                }
            }
            self.refold(field)?.write_to(&mut head);
        }
        if let (Label::Set(c), false) = (label, cte_written) {
            HeaderField::new("Content-Transfer-Encoding", c).write_to(&mut head);
        }
        Ok(head)
    }

    /// A header field with its lines folded to 998 octets. One that cannot be folded is
    /// refused in clear and kept as it is inside encryption.
    fn refold(&self, field: &HeaderField) -> Result<HeaderField, MimeError> {
        match field.refold(MAX_LINE) {
            Err(_) if self.carrier == Carrier::Encrypted => Ok(field.clone()),
            other => other,
        }
    }

    /// Bytes copied as they are: line ends made CRLF if they are 7-bit safe; otherwise refused
    /// in clear (naming `what`), kept exactly inside encryption.
    fn verbatim(
        &self,
        bytes: &[u8],
        what: &'static str,
        out: &mut Vec<u8>,
    ) -> Result<(), MimeError> {
        if is_clean(bytes) {
            push_normalized(bytes, out);
            Ok(())
        } else if self.carrier == Carrier::Encrypted {
            out.extend_from_slice(bytes);
            Ok(())
        } else {
            Err(MimeError::NotSevenBit { what })
        }
    }

    fn leaf(
        &self,
        body: &[u8],
        encoding: Encoding,
        is_text: bool,
        out: &mut Vec<u8>,
    ) -> Result<Label, MimeError> {
        if is_clean(body) {
            push_normalized(body, out);
            // 7-bit content labelled 8bit or binary is declared 7bit, so that no MTA converts
            // it on the way (that would break the signature).
            return Ok(match encoding {
                Encoding::EightBit | Encoding::Binary => Label::Set("7bit"),
                _ => Label::Keep,
            });
        }
        Ok(match encoding {
            Encoding::Base64 => {
                // 8-bit octets or overlong lines: decoders skip what is not base64, so the
                // same data re-encoded decodes to the same octets.
                encode_base64_body_into(&decode_base64_lenient(body), out);
                Label::Keep
            }
            Encoding::QuotedPrintable => reencode(&decode_quoted_printable(body), is_text, out),
            Encoding::Unknown => {
                self.verbatim(body, "a part with an unknown transfer encoding", out)?;
                Label::Keep
            }
            _ => reencode(body, is_text, out),
        })
    }

    fn message(
        &mut self,
        body: &[u8],
        encoding: Encoding,
        depth: usize,
        out: &mut Vec<u8>,
    ) -> Result<Label, MimeError> {
        match encoding {
            // Not allowed on message/rfc822, but then the body is encoded: a leaf.
            Encoding::Base64 | Encoding::QuotedPrintable => {
                return self.leaf(body, encoding, false, out)
            }
            Encoding::Unknown => {
                self.verbatim(
                    body,
                    "an embedded message with an unknown transfer encoding",
                    out,
                )?;
                return Ok(Label::Keep);
            }
            _ => {}
        }
        let inner = parse_message(body, self.limits)?;
        if inner.fields.is_empty() && !inner.separator {
            // No parsable header (e.g. an mbox "From " line first): an empty header would turn
            // the embedded message's header into body text. Left as it is.
            self.verbatim(body, "an embedded message without a header", out)?;
            return Ok(Label::Keep);
        }
        let mark = out.len();
        self.entity(body, depth + 1, false, out)?;
        Ok(composite_label(encoding, &out[mark..]))
    }

    fn multipart(
        &mut self,
        ct: &ContentType,
        body: &[u8],
        encoding: Encoding,
        depth: usize,
        out: &mut Vec<u8>,
    ) -> Result<Label, MimeError> {
        let layout = match ct.multipart_boundary() {
            Some(b) => split_multipart(body, b.as_bytes(), self.limits.max_parts)?,
            None => None,
        };
        let Some(layout) = layout else {
            // No boundary, or no delimiter line: not a structure we can recurse into, and not
            // a leaf either (a multipart never gets a transfer encoding).
            self.verbatim(body, "a multipart whose delimiters are not found", out)?;
            return Ok(Label::Keep);
        };
        let signed_or_encrypted = ct.subtype == "signed" || ct.subtype == "encrypted";
        if signed_or_encrypted && (is_clean(body) || self.carrier == Carrier::Encrypted) {
            // The client's own signature or encryption covers these bytes: never touched.
            self.verbatim(body, "a signed multipart", out)?;
            return Ok(Label::Keep);
        }
        let digest = ct.subtype == "digest";
        let mark = out.len();
        let mut at = 0;
        for &(start, end) in &layout.parts {
            self.verbatim(
                &body[at..start],
                "the preamble or a delimiter line of a multipart",
                out,
            )?;
            self.entity(&body[start..end], depth + 1, digest, out)?;
            at = end;
        }
        self.verbatim(
            &body[at..],
            "the epilogue or the close delimiter of a multipart",
            out,
        )?;
        Ok(composite_label(encoding, &out[mark..]))
    }
}

/// The transfer encoding to declare on a multipart or message/rfc822 whose body is `body`:
/// only 7bit, 8bit or binary are allowed (RFC 2045 §6.4); 8bit and binary become 7bit when the
/// body is 7-bit, as for leaves.
fn composite_label(encoding: Encoding, body: &[u8]) -> Label {
    let clean = is_clean(body);
    match encoding {
        Encoding::Absent | Encoding::SevenBit => Label::Keep,
        Encoding::EightBit | Encoding::Binary if !clean => Label::Keep,
        _ if clean => Label::Set("7bit"),
        _ => Label::Set("8bit"),
    }
}

/// A leaf's body is text (quoted-printable, CRLF line ends) if it is `text/*` or has no
/// Content-Type, and its charset is not a 16- or 32-bit one (whose octets are not lines).
fn is_text(ct: Option<&ContentType>) -> bool {
    match ct {
        None => true,
        Some(c) if c.mime_type == "text" => !c.param("charset").is_some_and(|cs| {
            let cs = cs.to_ascii_lowercase();
            cs.starts_with("utf-16") || cs.starts_with("utf-32") || cs.starts_with("ucs")
        }),
        Some(_) => false,
    }
}

fn reencode(data: &[u8], is_text: bool, out: &mut Vec<u8>) -> Label {
    if is_text {
        out.extend_from_slice(&encode_quoted_printable(&normalize_line_ends(data)));
        Label::Set("quoted-printable")
    } else {
        encode_base64_body_into(data, out);
        Label::Set("base64")
    }
}

/// True if every line (ended by CRLF, LF or CR) has at most 998 octets, none 8-bit or NUL.
pub(crate) fn is_clean(bytes: &[u8]) -> bool {
    let mut line = 0usize;
    for &b in bytes {
        match b {
            b'\r' | b'\n' => line = 0,
            0 | 0x80..=0xff => return false,
            _ => {
                line += 1;
                if line > MAX_LINE {
                    return false;
                }
            }
        }
    }
    true
}

/// Where the body parts of a multipart are.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    /// The content of each body part (after its delimiter line and that line's end, up to the
    /// line end before the next delimiter line). Between and around them: the preamble, the
    /// delimiter lines, the close delimiter and the epilogue.
    pub parts: Vec<(usize, usize)>,
    /// A close delimiter was found.
    pub closed: bool,
}

/// Finds the delimiter lines of a multipart body. A delimiter line is `--` and the boundary at
/// the start of a line, followed by the end of the line, white space, or any octet that cannot
/// continue a boundary: RFC 2046's note to implementors allows other text after the boundary
/// (`--boundary junk`), while `--boundary2` is another boundary. `--boundary--` is the close
/// delimiter whatever follows. `None` when there is no delimiter line at all.
pub(crate) fn split_multipart(
    body: &[u8],
    boundary: &[u8],
    max_parts: usize,
) -> Result<Option<Layout>, MimeError> {
    let mut delimiter = Vec::with_capacity(boundary.len() + 2);
    delimiter.extend_from_slice(b"--");
    delimiter.extend_from_slice(boundary);

    let mut parts: Vec<(usize, usize)> = Vec::new();
    let mut current: Option<usize> = None;
    let mut found = false;
    let mut closed = false;
    let mut pos = 0;
    while pos < body.len() {
        let line_start = pos;
        let (line, next) = next_line(body, pos);
        pos = next;
        let Some(is_close) = delimiter_line(line, &delimiter) else {
            continue;
        };
        found = true;
        if let Some(start) = current.take() {
            parts.push((start, before_line_end(body, line_start).max(start)));
            if parts.len() > max_parts {
                return Err(MimeError::TooManyParts { limit: max_parts });
            }
        }
        if is_close {
            closed = true;
            break;
        }
        current = Some(next.min(body.len()));
    }
    if let Some(start) = current {
        parts.push((start, body.len()));
    }
    Ok(found.then_some(Layout { parts, closed }))
}

/// `Some(true)` for a close delimiter line, `Some(false)` for a delimiter line.
fn delimiter_line(line: &[u8], delimiter: &[u8]) -> Option<bool> {
    let rest = line.strip_prefix(delimiter)?;
    if rest.starts_with(b"--") {
        return Some(true);
    }
    match rest.first() {
        None | Some(b' ') | Some(b'\t') => Some(false),
        Some(&c) if is_bchar(c) => None,
        Some(_) => Some(false),
    }
}

/// RFC 2046 `bcharsnospace`.
fn is_bchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"'()+_,-./:=?".contains(&c)
}

/// Offset of the line end that precedes the line starting at `line_start`.
fn before_line_end(body: &[u8], line_start: usize) -> usize {
    if line_start >= 2 && &body[line_start - 2..line_start] == b"\r\n" {
        line_start - 2
    } else {
        line_start.saturating_sub(1)
    }
}

pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    if needle.is_empty() {
        return true;
    }
    let first = needle[0];
    let mut i = 0;
    while i + needle.len() <= haystack.len() {
        match haystack[i..haystack.len() - needle.len() + 1]
            .iter()
            .position(|&b| b == first)
        {
            None => return false,
            Some(p) => {
                i += p;
                if &haystack[i..i + needle.len()] == needle {
                    return true;
                }
                i += 1;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(x: &[u8]) -> Vec<u8> {
        canonicalize(x, &Limits::default()).unwrap()
    }

    /// Canonical form inside encryption; checked idempotent.
    fn encrypted(x: &[u8]) -> Vec<u8> {
        let l = Limits::default();
        let once = canonicalize_for(x, &l, Carrier::Encrypted).unwrap();
        let twice = canonicalize_for(&once, &l, Carrier::Encrypted).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&once),
            String::from_utf8_lossy(&twice)
        );
        once
    }

    fn clear_err(x: &[u8]) -> MimeError {
        canonicalize(x, &Limits::default()).unwrap_err()
    }

    fn header_of(x: &[u8]) -> String {
        let end = x
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(x.len());
        String::from_utf8_lossy(&x[..end]).into_owned()
    }

    fn assert_idempotent(x: &[u8]) -> Vec<u8> {
        let once = canon(x);
        let twice = canon(&once);
        assert_eq!(
            String::from_utf8_lossy(&once),
            String::from_utf8_lossy(&twice)
        );
        once
    }

    fn assert_clean_lines(x: &[u8]) {
        for (i, w) in x.windows(2).enumerate() {
            if w[1] == b'\n' {
                assert_eq!(w[0], b'\r', "bare LF at {i}");
            }
            if w[0] == b'\r' {
                assert_eq!(w[1], b'\n', "bare CR at {i}");
            }
        }
        assert!(x.split(|&b| b == b'\n').all(|l| l.len() <= 999));
    }

    #[test]
    fn eight_bit_text_becomes_qp() {
        let x = "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nGr\u{fc}\u{df}e\nzweite Zeile".as_bytes();
        let c = assert_idempotent(x);
        let s = String::from_utf8(c.clone()).unwrap();
        assert!(
            s.contains("Content-Transfer-Encoding: quoted-printable\r\n"),
            "{s}"
        );
        assert!(
            s.ends_with("\r\n\r\nGr=C3=BC=C3=9Fe\r\nzweite Zeile"),
            "{s}"
        );
        assert!(is_clean(&c));
        assert_clean_lines(&c);
    }

    #[test]
    fn clean_8bit_label_becomes_7bit() {
        let c = assert_idempotent(b"Content-Transfer-Encoding: 8BIT\r\n\r\nplain\r\n");
        assert_eq!(c, b"Content-Transfer-Encoding: 7bit\r\n\r\nplain\r\n");
    }

    #[test]
    fn binary_attachment_becomes_base64() {
        let mut x =
            b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n"
                .to_vec();
        let data: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        x.extend_from_slice(&data);
        let c = assert_idempotent(&x);
        let body_at = c.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert_eq!(decode_base64_lenient(&c[body_at..]), data);
        assert!(String::from_utf8_lossy(&c).contains("Content-Transfer-Encoding: base64\r\n"));
    }

    #[test]
    fn long_lines_are_encoded() {
        let mut x = b"Content-Type: text/plain\r\n\r\n".to_vec();
        x.extend(std::iter::repeat_n(b'a', 5000));
        x.extend_from_slice(b"\r\n");
        let c = assert_idempotent(&x);
        assert_clean_lines(&c);
        assert!(c.split(|&b| b == b'\n').all(|l| l.len() <= 77));
    }

    #[test]
    fn multipart_recursion_keeps_structure() {
        let x = b"Content-Type: multipart/mixed; boundary=\"XX\"\n\npreamble\n--XX\nContent-Type: text/plain\n\nh\xe9\n--XX\nContent-Type: multipart/alternative; boundary=YY\n\n--YY\n\ninner\n--YY--\n--XX--\nepilogue\n";
        let c = assert_idempotent(x);
        assert_clean_lines(&c);
        assert!(is_clean(&c));
        let s = String::from_utf8(c).unwrap();
        assert!(s.contains("preamble\r\n--XX\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nh=E9\r\n--XX\r\n"), "{s}");
        assert!(
            s.ends_with("--YY\r\n\r\ninner\r\n--YY--\r\n--XX--\r\nepilogue\r\n"),
            "{s}"
        );
    }

    #[test]
    fn missing_close_and_missing_boundary() {
        // A missing close delimiter is not invented (parsers end the last part at the end).
        let c = assert_idempotent(
            b"Content-Type: multipart/mixed; boundary=Q\r\n\r\n--Q\r\n\r\nunterminated \xe9",
        );
        assert!(c.ends_with(
            b"--Q\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nunterminated =E9"
        ));
        // Boundary parameter absent or never used: opaque, kept exactly inside encryption,
        // refused in clear; never given a transfer encoding.
        for x in [
            &b"Content-Type: multipart/mixed\r\n\r\n--Q\r\n\r\n\xff\xfe"[..],
            b"Content-Type: multipart/mixed; boundary=Z\r\n\r\n--Q\r\n\r\n\xff\xfe",
        ] {
            let c = encrypted(x);
            assert_eq!(c, x);
            assert!(matches!(
                canonicalize(x, &Limits::default()),
                Err(MimeError::NotSevenBit { .. })
            ));
        }
    }

    // ------------------------------------------------------------------------------------
    // Issue 17, one test per class, written from its description.

    /// Class 1: preamble and epilogue are kept, also when 8-bit (inside encryption) or when
    /// they hold lines that look like delimiters; delimiter lines with text after the boundary
    /// are delimiters (RFC 2046's note) and are kept as they are.
    #[test]
    fn preamble_epilogue_and_delimiter_text_are_kept() {
        let x = b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
                  This is a preamble.\r\n--bogus line that is not ours\r\n--b2 another boundary\r\n\
                  --b junk after the boundary\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n\
                  --b\tmore junk\r\nContent-Type: text/plain\r\n\r\nsecond\r\n\
                  --b-- close with text\r\nthe epilogue\r\n--b\r\nnot a part any more\r\n";
        for c in [assert_idempotent(x), encrypted(x)] {
            let s = String::from_utf8(c).unwrap();
            assert!(s.contains("\r\n\r\nThis is a preamble.\r\n--bogus line that is not ours\r\n--b2 another boundary\r\n--b junk after the boundary\r\n"), "{s}");
            assert!(s.contains("\r\nGr=C3=BC=C3=9Fe\r\n--b\tmore junk\r\nContent-Type: text/plain\r\n\r\nsecond\r\n"), "{s}");
            assert!(
                s.ends_with(
                    "\r\n--b-- close with text\r\nthe epilogue\r\n--b\r\nnot a part any more\r\n"
                ),
                "{s}"
            );
            assert!(!header_of(s.as_bytes()).contains("Transfer"), "{s}");
        }
        // 8-bit preamble or epilogue: kept exactly inside encryption, refused in clear.
        for x in [
            &b"Content-Type: multipart/mixed; boundary=b\r\n\r\npr\xe9amble\r\n--b\r\n\r\n\xe9\r\n--b--\r\n"[..],
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n\xe9\r\n--b--\r\n\xe9pilogue\r\n",
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b \xe9\r\n\r\n\xe9\r\n--b--\r\n",
        ] {
            let c = encrypted(x);
            let s = String::from_utf8_lossy(&c);
            assert!(s.contains("\r\n\r\n=E9\r\n--b"), "part re-encoded: {s}");
            let keep: &[&[u8]] = &[b"pr\xe9amble\r\n--b", b"\r\n\xe9pilogue\r\n", b"--b \xe9\r\n"];
            assert!(
                keep.iter().any(|k| contains(&c, k)),
                "8-bit bytes kept exactly: {s}"
            );
            assert!(matches!(clear_err(x), MimeError::NotSevenBit { .. }));
        }
    }

    /// The message of class 1: every delimiter line has text after the boundary; the parts
    /// must not vanish.
    #[test]
    fn delimiters_with_junk_do_not_lose_parts() {
        let x = b"Content-Type: multipart/mixed; boundary=\"XyZ\"\r\n\r\n--XyZ junk\r\nContent-Type: text/plain\r\n\r\nfirst \xe9\r\n--XyZ junk\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n\x00\x01\xff\r\n--XyZ-- junk\r\n";
        let c = String::from_utf8(assert_idempotent(x)).unwrap();
        assert!(c.contains("--XyZ junk\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nfirst =E9\r\n--XyZ junk\r\n"), "{c}");
        assert!(
            c.contains("Content-Transfer-Encoding: base64\r\n\r\nAAH/\r\n\r\n--XyZ-- junk\r\n"),
            "{c}"
        );
    }

    /// Class 2: a multipart never gets a transfer encoding, whatever its boundary.
    #[test]
    fn multipart_never_gets_a_transfer_encoding() {
        let long = "B".repeat(3000);
        let x = format!("Content-Type: multipart/mixed; boundary=\"{long}\"\r\n\r\n--{long}\r\nContent-Type: text/plain\r\n\r\n\u{e9}t\u{e9}\r\n--{long}--\r\n");
        let c = encrypted(x.as_bytes());
        let s = String::from_utf8(c).unwrap();
        assert!(
            !header_of(s.as_bytes())
                .to_ascii_lowercase()
                .contains("transfer-encoding"),
            "{s}"
        );
        assert!(s.contains(&format!("--{long}\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=C3=A9t=C3=A9\r\n--{long}--\r\n")));
        // In clear, the 3000-octet delimiter line cannot travel: refused, not re-encoded.
        assert!(matches!(
            clear_err(x.as_bytes()),
            MimeError::NotSevenBit { .. }
        ));
        // A multipart labelled base64 by a broken client, with a real structure: declared 7bit.
        let y = b"Content-Type: multipart/mixed; boundary=b\r\nContent-Transfer-Encoding: base64\r\n\r\n--b\r\n\r\n\xe9\r\n--b--\r\n";
        let s = String::from_utf8(assert_idempotent(y)).unwrap();
        assert!(s.starts_with("Content-Type: multipart/mixed; boundary=b\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"), "{s}");
    }

    /// Class 3: an unknown transfer encoding is never relabelled nor re-encoded.
    #[test]
    fn unknown_transfer_encoding_is_left_exact() {
        let x = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 r\xe9sum\xe9.txt\r\n#86)C\r\n`\r\nend\r\n--b--\r\n";
        assert_eq!(encrypted(x), x);
        assert!(matches!(clear_err(x), MimeError::NotSevenBit { .. }));
        // 7-bit clean: the same bytes in clear too, label kept.
        let y = b"Content-Transfer-Encoding: X-UUENCODE\r\n\r\nbegin 644 a.txt\r\n#86)C\r\n`\r\nend\r\n";
        assert_eq!(canon(y), y);
    }

    /// Class 4: an embedded message without a parsable header is left as it is: no empty
    /// header section is inserted in front of it.
    #[test]
    fn embedded_message_without_header_is_left_as_is() {
        let x = b"Content-Type: message/rfc822\r\n\r\nFrom someone@example.org Mon Jan  1 00:00:00 2024\r\nSubject: forwarded\r\nContent-Type: text/plain\r\n\r\nhello\r\n";
        assert_eq!(canon(x), x);
        let y = b"Content-Type: message/rfc822\r\n\r\nFrom someone Mon Jan  1 00:00:00 2024\r\nSubject: forwarded\r\n\r\nh\xe9\r\n";
        assert_eq!(encrypted(y), y);
        assert!(matches!(clear_err(y), MimeError::NotSevenBit { .. }));
        // With a header, it is recursed into, and keeps an identity encoding.
        let z = b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\nSubject: forwarded\r\nContent-Type: text/plain\r\n\r\nh\xe9\r\n";
        let s = String::from_utf8(assert_idempotent(z)).unwrap();
        assert_eq!(s, "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 7bit\r\n\r\nSubject: forwarded\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nh=E9\r\n");
        // An empty part or a part without a header gets no empty line invented.
        let w = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n--b\r\nno header here\r\n--b--\r\n";
        assert_eq!(canon(w), w);
        // multipart/digest parts default to message/rfc822.
        let d = b"Content-Type: multipart/digest; boundary=b\r\n\r\n--b\r\n\r\nSubject: one\r\n\r\nh\xe9\r\n--b--\r\n";
        let s = String::from_utf8(assert_idempotent(d)).unwrap();
        assert!(s.contains("--b\r\n\r\nSubject: one\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nh=E9\r\n--b--"), "{s}");
    }

    /// Class 6 (inner side): header lines over 998 octets are folded, meaning kept; one that
    /// cannot be folded is refused in clear and kept inside encryption.
    #[test]
    fn long_header_lines_are_refolded() {
        let to = (0..200)
            .map(|i| format!("user{i}@example.org"))
            .collect::<Vec<_>>()
            .join(", ");
        let x = format!("To: {to}\r\nContent-Type: text/plain\r\n\r\nbody\r\n");
        let c = assert_idempotent(x.as_bytes());
        assert_clean_lines(&c);
        let parsed = parse_message(&c, &Limits::default()).unwrap();
        assert_eq!(parsed.fields[0].value().replace("\r\n", ""), to);
        let y = format!(
            "Content-Type: text/plain\r\nX-Id: {}\r\n\r\nbody\r\n",
            "x".repeat(2000)
        );
        assert!(matches!(
            clear_err(y.as_bytes()),
            MimeError::UnfoldableHeaderLine { .. }
        ));
        assert_eq!(encrypted(y.as_bytes()), y.as_bytes());
    }

    /// The client's signed multipart is never touched when its bytes can travel as they are.
    #[test]
    fn signed_multipart_is_kept_byte_exact() {
        let x = b"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=s\r\n\r\n--s\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: 8bit\r\n\r\nsigned text\r\n--s\r\nContent-Type: application/pkcs7-signature\r\n\r\nAAAA\r\n--s--\r\n";
        assert_eq!(canon(x), x);
        let y = b"Content-Type: multipart/signed; protocol=\"application/pgp-signature\"; boundary=s\r\n\r\n--s\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: 8bit\r\n\r\nsigned t\xe9xt\r\n--s\r\n\r\nsig\r\n--s--\r\n";
        assert_eq!(encrypted(y), y);
    }

    #[test]
    fn hostile_inputs_do_not_panic() {
        // 10,000 nested multiparts: refused with TooDeep, no stack overflow
        let mut x = Vec::new();
        for i in 0..10_000 {
            x.extend_from_slice(
                format!("Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n")
                    .as_bytes(),
            );
        }
        x.extend_from_slice(b"\r\nleaf\r\n");
        assert!(matches!(
            canonicalize(&x, &Limits::default()),
            Err(MimeError::TooDeep { .. })
        ));
        // no header/body separator, garbage, empty
        for input in [
            &b""[..],
            b"\r\n",
            b"\n\n\n",
            b"garbage without colon",
            b"A: b",
            b"Content-Type: multipart/mixed; boundary=\r\n\r\n--\r\n",
            b"Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n--a\r\n--a--",
            b"Content-Type: message/rfc822\r\n\r\nContent-Type: multipart/mixed; boundary=a\r\n\r\n--a",
            b"Content-Transfer-Encoding: base64\r\n\r\n\xff\xff====",
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n=\xff=4=\r\n",
            b" continuation first\r\n\r\n",
            b"\xff\xfe: x\r\n\r\nbody",
        ] {
            assert_idempotent(input);
        }
        // many parts: bounded
        let mut many = b"Content-Type: multipart/mixed; boundary=m\r\n\r\n".to_vec();
        for _ in 0..20_000 {
            many.extend_from_slice(b"--m\r\n\r\nx\r\n");
        }
        assert!(matches!(
            canonicalize(&many, &Limits::default()),
            Err(MimeError::TooManyParts { .. })
        ));
    }

    #[test]
    fn depth_limit_exact() {
        let limits = Limits {
            max_depth: 3,
            ..Limits::default()
        };
        let nest = |n: usize| {
            let mut x = Vec::new();
            for i in 0..n {
                x.extend_from_slice(
                    format!("Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n")
                        .as_bytes(),
                );
            }
            x.extend_from_slice(b"\r\nleaf\r\n");
            x
        };
        assert!(canonicalize(&nest(3), &limits).is_ok());
        assert!(canonicalize(&nest(4), &limits).is_err());
    }

    /// Random messages assembled from MIME-ish fragments: never a panic, always idempotent,
    /// CRLF only, lines <= 998 octets.
    #[test]
    fn random_inputs_are_handled() {
        let fragments: &[&[u8]] = &[
            b"Content-Type: multipart/mixed; boundary=a\r\n",
            b"Content-Type: multipart/alternative; boundary=\"b\"\n",
            b"Content-Type: text/plain; charset=utf-8\r\n",
            b"Content-Type: message/rfc822\r\n",
            b"Content-Type: application/octet-stream\r\n",
            b"Content-Transfer-Encoding: base64\r\n",
            b"Content-Transfer-Encoding: quoted-printable\r\n",
            b"Content-Transfer-Encoding: 8bit\r\n",
            b"\r\n",
            b"\n",
            b"\r",
            b"--a\r\n",
            b"--a--\r\n",
            b"--b\n",
            b"--b--",
            b"hello world ",
            b"\xc3\xa9\xff\x00",
            b"=C3=A9=\r\n",
            b"QUJD",
            b" folded\r\n",
            b"Subject: x\r\n",
        ];
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..3000 {
            let mut input = Vec::new();
            for _ in 0..(next() % 40) {
                input.extend_from_slice(fragments[(next() % fragments.len() as u64) as usize]);
                if next() % 50 == 0 {
                    input.extend(std::iter::repeat_n(b'z', 1200));
                }
            }
            if let Ok(once) = canonicalize_for(&input, &Limits::default(), Carrier::Encrypted) {
                let twice =
                    canonicalize_for(&once, &Limits::default(), Carrier::Encrypted).unwrap();
                assert!(once == twice, "not idempotent inside encryption");
            }
            let Ok(once) = canonicalize(&input, &Limits::default()) else {
                continue;
            };
            let twice = canonicalize(&once, &Limits::default()).unwrap();
            assert!(
                once == twice,
                "not idempotent for input of {} bytes: {:?}",
                input.len(),
                String::from_utf8_lossy(&input[..input.len().min(300)])
            );
            assert_clean_lines(&once);
        }
    }

    #[test]
    fn contains_works() {
        assert!(contains(b"abcabd", b"abd"));
        assert!(!contains(b"abcab", b"abd"));
        assert!(contains(b"x", b""));
        assert!(!contains(b"", b"x"));
    }
}
