//! Header section parsing that keeps the raw bytes of every field.

use super::{Limits, MimeError, MAX_LINE};

/// One header field as it appeared, with its line ends normalised to CRLF.
#[derive(Clone, PartialEq, Eq)]
pub struct HeaderField {
    name: String,
    /// White space between the name and the colon (obsolete syntax, RFC 5322 §4.5.1), kept so
    /// that the field is written back exactly as it came.
    gap: Vec<u8>,
    /// Bytes after the colon up to (not including) the field's final line end; folds are kept
    /// as CRLF followed by the original white space.
    raw_value: Vec<u8>,
}

impl std::fmt::Debug for HeaderField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}",
            self.name,
            String::from_utf8_lossy(&self.raw_value)
        )
    }
}

impl HeaderField {
    /// A new field; `value` is written after `name: `. Line breaks in `value` must already be
    /// folds (CRLF followed by white space); stray CR or LF are replaced by spaces.
    pub fn new(name: &str, value: &str) -> HeaderField {
        let mut raw = Vec::with_capacity(value.len() + 1);
        raw.push(b' ');
        let bytes = value.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            let is_fold = b == b'\r'
                && bytes.get(i + 1) == Some(&b'\n')
                && matches!(bytes.get(i + 2), Some(b' ') | Some(b'\t'));
            if is_fold {
                raw.extend_from_slice(b"\r\n");
                i += 2;
                continue;
            }
            raw.push(if b == b'\r' || b == b'\n' { b' ' } else { b });
            i += 1;
        }
        HeaderField {
            name: sanitize_name(name),
            gap: Vec::new(),
            raw_value: raw,
        }
    }

    /// The field name as written (case kept).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Case-insensitive name comparison.
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// The raw bytes after the colon (folds included, no final CRLF).
    pub fn raw_value(&self) -> &[u8] {
        &self.raw_value
    }

    /// The unfolded value, leading and trailing white space removed, invalid UTF-8 replaced.
    pub fn value(&self) -> String {
        let mut out = Vec::with_capacity(self.raw_value.len());
        for &b in &self.raw_value {
            if b != b'\r' && b != b'\n' {
                out.push(b);
            }
        }
        String::from_utf8_lossy(&out).trim().to_string()
    }

    /// The whole field with its final CRLF, as written into a message.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(self.name.len() + self.gap.len() + self.raw_value.len() + 3);
        self.write_to(&mut out);
        out
    }

    /// Appends the whole field with its final CRLF.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(&self.gap);
        out.push(b':');
        out.extend_from_slice(&self.raw_value);
        out.extend_from_slice(b"\r\n");
    }

    /// Longest physical line of the field, in octets, without line ends.
    pub(crate) fn longest_line(&self) -> usize {
        let mut longest = 0;
        let mut current = self.name.len() + self.gap.len() + 1;
        for &b in &self.raw_value {
            if b == b'\n' {
                longest = longest.max(current);
                current = 0;
            } else if b != b'\r' {
                current += 1;
            }
        }
        longest.max(current)
    }

    /// The field with every physical line of at most `max` octets, folded (CRLF inserted before
    /// a space or tab, RFC 5322 §2.2.3) at the last white space that keeps the line within
    /// `max`. Unfolding gives back exactly the original value: nothing but the inserted CRLFs
    /// changes. A fold never leaves a line of white space only. A field whose lines already fit
    /// is returned as is; one with a line that has no such white space is
    /// [`MimeError::UnfoldableHeaderLine`].
    pub(crate) fn refold(&self, max: usize) -> Result<HeaderField, MimeError> {
        if self.longest_line() <= max {
            return Ok(self.clone());
        }
        let is_ws = |b: &u8| *b == b' ' || *b == b'\t';
        // In structured fields a fold never goes inside a quoted-string (a MIME parameter such
        // as a boundary with spaces): some parsers do not unfold parameter values.
        let unstructured = ["subject", "comments", "content-description"]
            .iter()
            .any(|n| self.is(n));
        let mut quoted = vec![false; self.raw_value.len()];
        if !unstructured {
            let (mut inside, mut escaped) = (false, false);
            for (q, &b) in quoted.iter_mut().zip(&self.raw_value) {
                *q = inside;
                match b {
                    _ if escaped => escaped = false,
                    b'\\' if inside => escaped = true,
                    b'"' => inside = !inside,
                    _ => {}
                }
            }
        }
        let mut out = Vec::with_capacity(self.raw_value.len() + self.raw_value.len() / 64 + 8);
        // Octets in front of the current line's value: the name, gap and colon on the first.
        let mut prefix = self.name.len() + self.gap.len() + 1;
        let mut offset = 0usize; // of the current line in raw_value
        for (n, whole) in self.raw_value.split(|&b| b == b'\n').enumerate() {
            if n > 0 {
                out.extend_from_slice(b"\r\n");
            }
            let mut line = whole.strip_suffix(b"\r").unwrap_or(whole);
            let mut at = offset;
            while prefix + line.len() > max {
                // The last white space within the limit, outside quotes, with text before it
                // (the name counts on the first line) and text after it on this line.
                let fold = (1..line.len())
                    .rev()
                    .filter(|&i| prefix + i <= max && is_ws(&line[i]) && !quoted[at + i])
                    .find(|&i| {
                        (prefix > 0 || line[..i].iter().any(|b| !is_ws(b)))
                            && line[i..].iter().any(|b| !is_ws(b))
                    })
                    .ok_or_else(|| MimeError::UnfoldableHeaderLine {
                        name: self.name.clone(),
                    })?;
                out.extend_from_slice(&line[..fold]);
                out.extend_from_slice(b"\r\n");
                line = &line[fold..];
                at += fold;
                prefix = 0;
            }
            out.extend_from_slice(line);
            prefix = 0;
            offset += whole.len() + 1;
        }
        Ok(HeaderField {
            name: self.name.clone(),
            gap: self.gap.clone(),
            raw_value: out,
        })
    }
}

fn sanitize_name(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_graphic() && *c != ':')
        .collect()
}

/// A message split into header fields and body.
#[derive(Clone, Debug)]
pub struct ParsedMessage {
    /// Header fields in order.
    pub fields: Vec<HeaderField>,
    /// Offset of the first body byte in the input.
    pub body_offset: usize,
    /// The header section ended with an empty line (consumed). False when it ended at a line
    /// that is not a field, or at the end of the input.
    pub separator: bool,
}

impl ParsedMessage {
    /// First field with this name (case-insensitive).
    pub fn field(&self, name: &str) -> Option<&HeaderField> {
        self.fields.iter().find(|f| f.is(name))
    }
}

/// Splits `input` into header fields and the body offset.
///
/// The header section ends at the first empty line (which is consumed), or at the first line that
/// is neither a field nor a continuation (which is not consumed: it belongs to the body). Input
/// without any header section gives no fields and `body_offset == 0`. White space in front of
/// the first field is skipped (mail-parser does the same; Python's `email` skips such a line).
///
/// A field is a name of printable US-ASCII octets (33-126, no colon), optional spaces or tabs,
/// then a colon: as Postfix's `is_header()` and mail-parser read it, white space before the colon
/// (the obsolete syntax of RFC 5322 §4.5.1, e.g. `X-A : b`) does not end the header section, so
/// a `Bcc` or trigger field after such a line is still seen. The white space is kept.
pub fn parse_message(input: &[u8], limits: &Limits) -> Result<ParsedMessage, MimeError> {
    let mut fields: Vec<HeaderField> = Vec::new();
    let mut pos = 0;
    while pos < input.len() {
        if pos > limits.max_header_bytes {
            return Err(MimeError::HeaderTooLarge {
                limit: limits.max_header_bytes,
            });
        }
        let (line, next) = next_line(input, pos);
        if line.is_empty() {
            // Empty line: end of the header section, consumed.
            return Ok(ParsedMessage {
                fields,
                body_offset: next,
                separator: true,
            });
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some(last) = fields.last_mut() {
                last.raw_value.extend_from_slice(b"\r\n");
                last.raw_value.extend_from_slice(line);
                pos = next;
                continue;
            }
        }
        // White space in front of the first field (invalid): skipped, as mail-parser does, so
        // that the fields after it (a Bcc among them) are read, not taken for body text.
        let line = if fields.is_empty() {
            let start = line.iter().position(|&b| b != b' ' && b != b'\t');
            match start {
                None => {
                    pos = next; // a line of white space only
                    continue;
                }
                Some(start) => &line[start..],
            }
        } else {
            line
        };
        let Some((name_len, colon)) = field_name(line) else {
            if fields.is_empty() {
                pos = 0; // no header section: white space skipped above is body after all
            }
            break; // not a header field: body starts here
        };
        if fields.len() >= limits.max_header_fields {
            return Err(MimeError::TooManyHeaderFields {
                limit: limits.max_header_fields,
            });
        }
        fields.push(HeaderField {
            name: String::from_utf8_lossy(&line[..name_len]).into_owned(),
            gap: line[name_len..colon].to_vec(),
            raw_value: line[colon + 1..].to_vec(),
        });
        pos = next;
    }
    if pos > limits.max_header_bytes {
        return Err(MimeError::HeaderTooLarge {
            limit: limits.max_header_bytes,
        });
    }
    Ok(ParsedMessage {
        body_offset: if fields.is_empty() { 0 } else { pos },
        fields,
        separator: false,
    })
}

/// If `line` starts a header field: the length of its name and the offset of its colon.
fn field_name(line: &[u8]) -> Option<(usize, usize)> {
    let name_len = line
        .iter()
        .position(|&b| !(33..=126).contains(&b) || b == b':')?;
    if name_len == 0 {
        return None;
    }
    let colon = name_len
        + line[name_len..]
            .iter()
            .position(|&b| b != b' ' && b != b'\t')?;
    (line[colon] == b':').then_some((name_len, colon))
}

/// `message` with every header field that has a line over 998 octets refolded
/// (folded at white space: the value unfolds to the same octets). The same bytes when no line
/// is too long, or when the header cannot be parsed; a line that cannot be folded is left as it
/// is (the upstream then judges what the client sent). For mail relayed without sealing.
pub fn refold_header_section(message: Vec<u8>, limits: &Limits) -> Vec<u8> {
    let Ok(parsed) = parse_message(&message, limits) else {
        return message;
    };
    if parsed.fields.iter().all(|f| f.longest_line() <= MAX_LINE) {
        return message;
    }
    let mut out = Vec::with_capacity(message.len() + 64);
    for field in &parsed.fields {
        match field.refold(MAX_LINE) {
            Ok(folded) => folded.write_to(&mut out),
            Err(_) => field.write_to(&mut out),
        }
    }
    if parsed.separator {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(&message[parsed.body_offset.min(message.len())..]);
    out
}

/// The line starting at `pos` without its line end (CRLF, LF or bare CR), and where the next
/// line starts.
pub(crate) fn next_line(input: &[u8], pos: usize) -> (&[u8], usize) {
    let rest = &input[pos.min(input.len())..];
    match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
        None => (rest, input.len()),
        Some(i) => {
            let skip = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') {
                2
            } else {
                1
            };
            (&rest[..i], pos + i + skip)
        }
    }
}

/// `value` without its comments (RFC 5322 3.2.2: parenthesised, nested, with quoted-pairs);
/// parentheses inside quoted strings are text, not comments.
pub(super) fn strip_comments(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut depth = 0usize;
    let mut in_quote = false;
    let mut escaped = false;
    for c in value.chars() {
        if escaped {
            if depth == 0 {
                out.push(c);
            }
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quote || depth > 0 => {
                escaped = true;
                if depth == 0 {
                    out.push(c);
                }
            }
            '"' if depth == 0 => {
                in_quote = !in_quote;
                out.push(c);
            }
            '(' if !in_quote => depth += 1,
            ')' if !in_quote && depth > 0 => depth -= 1,
            _ if depth > 0 => {}
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_folded_fields_and_body() {
        let msg = b"Subject: hello\r\n world\r\nTo: a@b\r\n\r\nbody\r\n";
        let p = parse_message(msg, &Limits::default()).unwrap();
        assert_eq!(p.fields.len(), 2);
        assert_eq!(p.fields[0].value(), "hello world");
        assert_eq!(p.fields[0].to_bytes(), b"Subject: hello\r\n world\r\n");
        assert_eq!(&msg[p.body_offset..], b"body\r\n");
    }

    #[test]
    fn bare_lf_and_no_separator() {
        let msg = b"From: x\nnot a header line\nmore";
        let p = parse_message(msg, &Limits::default()).unwrap();
        assert_eq!(p.fields.len(), 1);
        assert_eq!(&msg[p.body_offset..], b"not a header line\nmore");
        let p = parse_message(b"no header at all", &Limits::default()).unwrap();
        assert!(p.fields.is_empty());
        assert_eq!(p.body_offset, 0);
        let p = parse_message(b"A: b", &Limits::default()).unwrap();
        assert_eq!(p.fields.len(), 1);
        assert_eq!(p.body_offset, 4);
    }

    /// Issue 9 item 5: white space before the colon (obsolete syntax that Postfix and
    /// mail-parser accept) must not end the header section, or a later Bcc is not seen.
    #[test]
    fn white_space_before_the_colon_is_a_field() {
        let msg = b"From: a@b\r\nX-A : b\r\nBcc: secret@x\r\nX-B\t\t: c\r\nResent-Bcc : r@x\r\n\r\nbody\r\n";
        let p = parse_message(msg, &Limits::default()).unwrap();
        let names: Vec<&str> = p.fields.iter().map(|f| f.name()).collect();
        assert_eq!(names, ["From", "X-A", "Bcc", "X-B", "Resent-Bcc"]);
        assert!(p.separator);
        assert_eq!(&msg[p.body_offset..], b"body\r\n");
        assert!(p.field("bcc").is_some() && p.field("resent-bcc").is_some());
        assert_eq!(p.fields[1].value(), "b");
        // Written back byte for byte.
        let written: Vec<u8> = p.fields.iter().flat_map(|f| f.to_bytes()).collect();
        assert_eq!(written, &msg[..p.body_offset - 2]);
        // Not fields: white space inside the name, nothing before the colon, an mbox line.
        for line in [
            &b"A B: c"[..],
            b": c",
            b"From someone@example.org Mon Jan  1 12:34:56 2024",
            b"X-A \x01: b",
        ] {
            let mut m = b"Subject: s\r\n".to_vec();
            m.extend_from_slice(line);
            m.extend_from_slice(b"\r\nBcc: x\r\n\r\n");
            let p = parse_message(&m, &Limits::default()).unwrap();
            assert_eq!(p.fields.len(), 1, "{:?}", String::from_utf8_lossy(line));
            assert!(!p.separator);
            assert_eq!(p.body_offset, 12);
        }
    }

    /// White space in front of the first field does not hide the header section (a Bcc in it
    /// must be seen); with no field at all, nothing is skipped from the body.
    #[test]
    fn white_space_before_the_first_field() {
        let l = Limits::default();
        let p = parse_message(b" From: a@b\r\nBcc: c@d\r\n\r\nx", &l).unwrap();
        assert_eq!(p.fields.len(), 2);
        assert_eq!(p.fields[0].to_bytes(), b"From: a@b\r\n");
        let p = parse_message(b"      \r\nSubject: s\r\nBcc: c\r\n\r\nx", &l).unwrap();
        assert_eq!(p.fields.len(), 2);
        for m in [&b"  \r\n  indented text\r\nmore"[..], b"   ", b" \r\n"] {
            let p = parse_message(m, &l).unwrap();
            assert!(p.fields.is_empty());
            assert_eq!(p.body_offset, 0, "{:?}", String::from_utf8_lossy(m));
        }
    }

    #[test]
    fn header_limits() {
        let limits = Limits {
            max_header_bytes: 100,
            max_header_fields: 3,
            ..Limits::default()
        };
        let many = b"A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
        assert_eq!(
            parse_message(many, &limits).unwrap_err(),
            MimeError::TooManyHeaderFields { limit: 3 }
        );
        let mut big = b"A: ".to_vec();
        big.extend(std::iter::repeat_n(b'x', 200));
        big.extend_from_slice(b"\r\n\r\n");
        assert!(matches!(
            parse_message(&big, &limits),
            Err(MimeError::HeaderTooLarge { .. })
        ));
    }

    fn unfold(raw: &[u8]) -> Vec<u8> {
        raw.iter()
            .copied()
            .filter(|&b| b != b'\r' && b != b'\n')
            .collect()
    }

    #[test]
    fn refold_long_line() {
        let long = format!("{} end", "word ".repeat(400));
        let f = HeaderField::new("Subject", &long);
        assert!(f.longest_line() > 998);
        let g = f.refold(998).unwrap();
        assert!(g.longest_line() <= 998);
        assert_eq!(unfold(g.raw_value()), unfold(f.raw_value()), "meaning kept");
        let h = HeaderField::new("X", &"y".repeat(2000));
        assert!(matches!(
            h.refold(998),
            Err(MimeError::UnfoldableHeaderLine { .. })
        ));
        // A line that fits is not touched.
        let short = HeaderField::new("To", "a@b,  c@d");
        assert_eq!(short.refold(998).unwrap(), short);
    }

    /// A fold never goes inside a quoted-string of a structured field (a boundary with
    /// spaces); unstructured fields fold at any white space.
    #[test]
    fn refold_avoids_quoted_strings() {
        let boundary = "a b ".repeat(300);
        let f = HeaderField::new(
            "Content-Type",
            &format!("multipart/mixed; charset=x; boundary=\"{boundary}\""),
        );
        assert!(matches!(
            f.refold(998),
            Err(MimeError::UnfoldableHeaderLine { .. })
        ));
        let g = HeaderField::new(
            "Content-Type",
            &format!("multipart/mixed; x=\"{}\" boundary=\"b\"", "q ".repeat(480)),
        );
        let folded = g.refold(998).unwrap();
        assert!(folded.longest_line() <= 998);
        assert!(folded.raw_value().ends_with(b"\"\r\n boundary=\"b\""));
        let s = HeaderField::new("Subject", &format!("\"{}\"", "q ".repeat(600)));
        assert!(s.refold(998).unwrap().longest_line() <= 998);
    }

    /// Issue 17 item 6: refolding keeps the value (unfolding gives the same octets), never
    /// makes a line of white space only, and keeps the obsolete gap before the colon.
    #[test]
    fn refold_keeps_meaning_in_every_shape() {
        let limits = Limits::default();
        let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let pieces: [&[u8]; 7] = [
            b" ",
            b"\t",
            b"  ",
            b"a",
            b"=?utf-8?q?x?=",
            b"\r\n a",
            b"\xc3\xa9",
        ];
        for _ in 0..500 {
            let mut m = b"X-Long :".to_vec();
            let n = next() % 3000;
            while (m.len() as u64) < n {
                m.extend_from_slice(pieces[(next() % pieces.len() as u64) as usize]);
            }
            m.extend_from_slice(b"\r\n\r\n");
            let p = parse_message(&m, &limits).unwrap();
            let [f] = p.fields.as_slice() else {
                panic!("one field expected");
            };
            let Ok(g) = f.refold(78) else {
                continue;
            };
            assert_eq!(unfold(g.raw_value()), unfold(f.raw_value()));
            let bytes = g.to_bytes();
            assert!(bytes.starts_with(b"X-Long :"));
            for line in bytes.split(|&b| b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                assert!(line.len() <= 78 || f.longest_line() <= 78);
                if !line.is_empty() {
                    assert!(
                        line.iter().any(|&b| b != b' ' && b != b'\t'),
                        "white-space-only line in {:?}",
                        String::from_utf8_lossy(&bytes)
                    );
                }
            }
        }
    }
}
