//! Header section parsing that keeps the raw bytes of every field.

use super::{Limits, MimeError};

/// One header field as it appeared, with its line ends normalised to CRLF.
#[derive(Clone, PartialEq, Eq)]
pub struct HeaderField {
    name: String,
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
        let mut out = Vec::with_capacity(self.name.len() + self.raw_value.len() + 3);
        self.write_to(&mut out);
        out
    }

    /// Appends the whole field with its final CRLF.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.name.as_bytes());
        out.push(b':');
        out.extend_from_slice(&self.raw_value);
        out.extend_from_slice(b"\r\n");
    }

    /// Longest physical line of the field, in octets, without line ends.
    pub(crate) fn longest_line(&self) -> usize {
        let mut longest = 0;
        let mut current = self.name.len() + 1;
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

    /// Folds lines longer than `max` octets at the last space or tab before the limit.
    pub(crate) fn refold(&self, max: usize) -> Result<HeaderField, MimeError> {
        if self.longest_line() <= max {
            return Ok(self.clone());
        }
        // Split into logical segments on existing folds, then fold each too-long segment.
        let mut out = Vec::with_capacity(self.raw_value.len() + 16);
        let mut line_len = self.name.len() + 1;
        let mut last_ws: Option<usize> = None; // index in `out` of a white space we may fold at
        for &b in &self.raw_value {
            match b {
                b'\r' => continue,
                b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    line_len = 0;
                    last_ws = None;
                    continue;
                }
                _ => {}
            }
            if (b == b' ' || b == b'\t') && line_len > 0 {
                last_ws = Some(out.len());
            }
            out.push(b);
            line_len += 1;
            if line_len > max {
                match last_ws {
                    Some(pos) if pos > 0 => {
                        out.splice(pos..pos, *b"\r\n");
                        line_len = out.len() - (pos + 2);
                        last_ws = None;
                    }
                    _ => {
                        return Err(MimeError::UnfoldableHeaderLine {
                            name: self.name.clone(),
                        })
                    }
                }
            }
        }
        Ok(HeaderField {
            name: self.name.clone(),
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
/// is neither a field (`name:`) nor a continuation (which is not consumed: it belongs to the
/// body). Input without any header section gives no fields and `body_offset == 0`.
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
            });
        }
        if line[0] == b' ' || line[0] == b'\t' {
            match fields.last_mut() {
                Some(last) => {
                    last.raw_value.extend_from_slice(b"\r\n");
                    last.raw_value.extend_from_slice(line);
                    pos = next;
                    continue;
                }
                None => break, // continuation with nothing to continue: body starts here
            }
        }
        let colon = line.iter().position(|&b| b == b':');
        let name = match colon {
            Some(c) if c > 0 && line[..c].iter().all(|&b| (33..=126).contains(&b)) => &line[..c],
            _ => break, // not a header field: body starts here
        };
        if fields.len() >= limits.max_header_fields {
            return Err(MimeError::TooManyHeaderFields {
                limit: limits.max_header_fields,
            });
        }
        let value_start = name.len() + 1;
        fields.push(HeaderField {
            name: String::from_utf8_lossy(name).into_owned(),
            raw_value: line[value_start..].to_vec(),
        });
        pos = next;
    }
    if pos > limits.max_header_bytes {
        return Err(MimeError::HeaderTooLarge {
            limit: limits.max_header_bytes,
        });
    }
    Ok(ParsedMessage {
        fields,
        body_offset: pos,
    })
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

    #[test]
    fn refold_long_line() {
        let long = format!("{} end", "word ".repeat(400));
        let f = HeaderField::new("Subject", &long);
        assert!(f.longest_line() > 998);
        let g = f.refold(998).unwrap();
        assert!(g.longest_line() <= 998);
        assert_eq!(
            g.value().replace(char::is_whitespace, ""),
            f.value().replace(char::is_whitespace, "")
        );
        let h = HeaderField::new("X", &"y".repeat(2000));
        assert!(h.refold(998).is_err());
    }
}
