//! Canonicalisation of the entity that gets signed (see the module docs of [`super`]).

use super::content_type::ContentType;
use super::encoding::{
    decode_base64_lenient, decode_quoted_printable, encode_base64_body, encode_quoted_printable,
    is_7bit_clean, normalize_line_ends,
};
use super::header::{next_line, parse_message, HeaderField};
use super::{Limits, MimeError, MAX_LINE};

/// Canonicalises a MIME entity (header fields, empty line, body) for signing: CRLF line ends,
/// 7-bit transfer encodings, lines of at most 998 octets, multiparts recursed into within
/// `limits`. Idempotent: `canonicalize(canonicalize(x)) == canonicalize(x)`.
pub fn canonicalize(entity: &[u8], limits: &Limits) -> Result<Vec<u8>, MimeError> {
    let mut out = Vec::with_capacity(entity.len() + entity.len() / 16 + 64);
    let mut parts = 0usize;
    canon_entity(entity, limits, 0, &mut parts, &mut out)?;
    Ok(out)
}

fn canon_entity(
    entity: &[u8],
    limits: &Limits,
    depth: usize,
    parts: &mut usize,
    out: &mut Vec<u8>,
) -> Result<(), MimeError> {
    if depth > limits.max_depth {
        return Err(MimeError::TooDeep {
            limit: limits.max_depth,
        });
    }
    *parts += 1;
    if *parts > limits.max_parts {
        return Err(MimeError::TooManyParts {
            limit: limits.max_parts,
        });
    }
    let parsed = parse_message(entity, limits)?;
    let body = &entity[parsed.body_offset.min(entity.len())..];
    let ct = parsed
        .field("content-type")
        .and_then(|f| ContentType::parse(&f.value()));
    let cte = parsed
        .field("content-transfer-encoding")
        .map(|f| f.value().to_ascii_lowercase());

    let mut new_body = Vec::new();
    let new_cte: Option<&'static str>;
    let multipart = ct
        .as_ref()
        .and_then(|c| c.multipart_boundary().map(|b| b.as_bytes().to_vec()));
    let is_message = ct
        .as_ref()
        .is_some_and(|c| c.is("message", "rfc822") || c.is("message", "global"));

    let structured = match &multipart {
        Some(boundary) => canon_multipart(body, boundary, limits, depth, parts, &mut new_body)?,
        None if is_message => {
            canon_entity(body, limits, depth + 1, parts, &mut new_body)?;
            true
        }
        None => false,
    };
    if structured {
        // Composite types only allow identity encodings (RFC 2045 §6.4).
        new_cte = cte.as_ref().map(|_| {
            if is_7bit_clean(&new_body) {
                "7bit"
            } else {
                "8bit"
            }
        });
    } else {
        let is_text = ct.as_ref().is_none_or(|c| c.mime_type == "text");
        let (b, c) = canon_leaf(body, cte.as_deref(), is_text);
        new_body = b;
        new_cte = c;
    }

    // Header section: fields refolded to <= 998, transfer encoding replaced.
    let mut cte_written = false;
    for field in &parsed.fields {
        if field.is("content-transfer-encoding") {
            if cte_written {
                continue;
            }
            cte_written = true;
            match new_cte {
                Some(c) if !c.eq_ignore_ascii_case(&field.value()) => {
                    HeaderField::new(field.name(), c).write_to(out)
                }
                _ => field.refold(MAX_LINE)?.write_to(out),
            }
            continue;
        }
        field.refold(MAX_LINE)?.write_to(out);
    }
    if !cte_written {
        if let Some(c) = new_cte {
            HeaderField::new("Content-Transfer-Encoding", c).write_to(out);
        }
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&new_body);
    Ok(())
}

/// Canonical body of a leaf part and the transfer encoding to declare (None: keep as is).
fn canon_leaf(body: &[u8], cte: Option<&str>, is_text: bool) -> (Vec<u8>, Option<&'static str>) {
    match cte {
        Some("base64") => {
            let normalized = normalize_line_ends(body);
            if is_7bit_clean(&normalized) && normalized.iter().all(|&b| is_base64_text(b)) {
                (normalized, None)
            } else {
                (encode_base64_body(&decode_base64_lenient(body)), None)
            }
        }
        Some("quoted-printable") => {
            let normalized = normalize_line_ends(body);
            if is_7bit_clean(&normalized) {
                (normalized, None)
            } else {
                let decoded = decode_quoted_printable(body);
                reencode(&decoded, is_text)
            }
        }
        other => {
            let normalized = normalize_line_ends(body);
            if is_7bit_clean(&normalized) {
                let declared = match other {
                    Some("8bit") | Some("binary") => Some("7bit"),
                    _ => None,
                };
                (normalized, declared)
            } else {
                reencode(body, is_text)
            }
        }
    }
}

fn reencode(data: &[u8], is_text: bool) -> (Vec<u8>, Option<&'static str>) {
    if is_text {
        (
            encode_quoted_printable(&normalize_line_ends(data)),
            Some("quoted-printable"),
        )
    } else {
        (encode_base64_body(data), Some("base64"))
    }
}

fn is_base64_text(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'\r' | b'\n' | b' ' | b'\t')
}

/// Canonicalises a multipart body with its boundary kept. Returns false (and writes nothing) if
/// no delimiter line is found: the caller then treats the body as a leaf.
fn canon_multipart(
    body: &[u8],
    boundary: &[u8],
    limits: &Limits,
    depth: usize,
    parts: &mut usize,
    out: &mut Vec<u8>,
) -> Result<bool, MimeError> {
    let mut delimiter = Vec::with_capacity(boundary.len() + 2);
    delimiter.extend_from_slice(b"--");
    delimiter.extend_from_slice(boundary);

    let mut preamble: Option<&[u8]> = None;
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    let mut current: Option<usize> = None;
    let mut epilogue: &[u8] = &[];
    let mut closed = false;
    let mut pos = 0;
    while pos < body.len() {
        let line_start = pos;
        let (line, next) = next_line(body, pos);
        pos = next;
        let Some(rest) = line.strip_prefix(delimiter.as_slice()) else {
            continue;
        };
        let is_close =
            rest.starts_with(b"--") && rest[2..].iter().all(|b| *b == b' ' || *b == b'\t');
        let is_delim = rest.iter().all(|b| *b == b' ' || *b == b'\t');
        if !is_close && !is_delim {
            continue;
        }
        let content_end = before_line_end(body, line_start);
        match current {
            Some(start) => ranges.push((start, content_end.max(start))),
            None => preamble = (line_start > 0).then(|| &body[..content_end]),
        }
        if ranges.len() > limits.max_parts {
            return Err(MimeError::TooManyParts {
                limit: limits.max_parts,
            });
        }
        if is_close {
            closed = true;
            epilogue = &body[next.min(body.len())..];
            break;
        }
        current = Some(next);
    }
    if !closed {
        match current {
            Some(start) => ranges.push((start.min(body.len()), body.len())),
            None => return Ok(false),
        }
    }

    if let Some(pre) = preamble {
        let pre = normalize_line_ends(pre);
        if is_7bit_clean(&pre) && !contains(&pre, &delimiter) {
            out.extend_from_slice(&pre);
            out.extend_from_slice(b"\r\n");
        }
    }
    for (start, end) in ranges {
        out.extend_from_slice(&delimiter);
        out.extend_from_slice(b"\r\n");
        canon_entity(&body[start..end], limits, depth + 1, parts, out)?;
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(&delimiter);
    out.extend_from_slice(b"--\r\n");
    let epilogue = normalize_line_ends(epilogue);
    if is_7bit_clean(&epilogue) {
        out.extend_from_slice(&epilogue);
    }
    Ok(true)
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
        assert!(is_7bit_clean(&c));
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
        assert!(is_7bit_clean(&c));
        let s = String::from_utf8(c).unwrap();
        assert!(s.contains("preamble\r\n--XX\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nh=E9\r\n--XX\r\n"), "{s}");
        assert!(
            s.contains("--YY\r\n\r\ninner\r\n--YY--\r\n\r\n--XX--\r\nepilogue\r\n"),
            "{s}"
        );
    }

    #[test]
    fn missing_close_and_missing_boundary() {
        let c = assert_idempotent(
            b"Content-Type: multipart/mixed; boundary=Q\r\n\r\n--Q\r\n\r\nunterminated",
        );
        assert!(c.ends_with(b"unterminated\r\n--Q--\r\n"));
        // boundary parameter absent or never used: treated as an opaque leaf
        assert_idempotent(b"Content-Type: multipart/mixed\r\n\r\n--Q\r\n\r\n\xff\xfe");
        assert_idempotent(b"Content-Type: multipart/mixed; boundary=Z\r\n\r\n--Q\r\n\r\n\xff\xfe");
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
