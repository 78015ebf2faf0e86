//! Transfer encodings and line-end helpers.

use base64::Engine;

const HEX: &[u8; 16] = b"0123456789ABCDEF";
/// Longest quoted-printable line, without the CRLF (RFC 2045 §6.7).
const QP_LINE: usize = 76;

/// Converts bare LF and bare CR to CRLF (copies whole lines at a time).
pub(crate) fn normalize_line_ends(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + input.len() / 64 + 2);
    push_normalized(input, &mut out);
    out
}

/// Appends `bytes` with every line end (LF, CR, CRLF) written as CRLF.
pub(crate) fn push_normalized(bytes: &[u8], out: &mut Vec<u8>) {
    let mut rest = bytes;
    while let Some(i) = rest.iter().position(|&b| b == b'\r' || b == b'\n') {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(b"\r\n");
        let skip = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') {
            2
        } else {
            1
        };
        rest = &rest[i + skip..];
    }
    out.extend_from_slice(rest);
}

/// Quoted-printable encoding (RFC 2045 §6.7) of CRLF-normalised text: CRLF stays a hard line
/// break, lines are at most 76 octets, trailing white space is encoded, and so are `=`, every
/// octet outside 33..=126, a leading `.` and a leading `From ` (so that no MTA rewrites them).
pub fn encode_quoted_printable(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + text.len() / 8 + 8);
    let mut lines = text.split(|&b| b == b'\n').peekable();
    while let Some(raw_line) = lines.next() {
        let is_last = lines.peek().is_none();
        let line = raw_line.strip_suffix(b"\r").unwrap_or(raw_line);
        encode_qp_line(line, &mut out);
        if !is_last {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

fn encode_qp_line(line: &[u8], out: &mut Vec<u8>) {
    let mut col = 0usize;
    for (i, &b) in line.iter().enumerate() {
        let at_end = i + 1 == line.len();
        // At the start of a physical line (also after a soft break), `-` (a boundary delimiter
        // could appear), `.` and `From ` are encoded so that no MTA or parser misreads them.
        let literal_at = |col: usize| match b {
            b'=' => false,
            b' ' | b'\t' => !at_end,
            b'-' | b'.' if col == 0 => false,
            b'F' if col == 0 && line[i..].starts_with(b"From ") => false,
            33..=126 => true,
            _ => false,
        };
        let mut literal = literal_at(col);
        let width = if literal { 1 } else { 3 };
        // Keep room for the soft break "=" (the last char of the line may use the slot).
        let limit = if at_end { QP_LINE } else { QP_LINE - 1 };
        if col + width > limit {
            out.extend_from_slice(b"=\r\n");
            col = 0;
            literal = literal_at(col);
        }
        if literal {
            out.push(b);
            col += 1;
        } else {
            out.push(b'=');
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 15) as usize]);
            col += 3;
        }
    }
}

/// Lenient quoted-printable decoding: invalid escapes are kept literally, soft breaks removed,
/// hard line breaks become CRLF.
pub(crate) fn decode_quoted_printable(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut lines = input.split(|&b| b == b'\n').peekable();
    while let Some(raw_line) = lines.next() {
        let is_last = lines.peek().is_none();
        let mut line = raw_line.strip_suffix(b"\r").unwrap_or(raw_line);
        // Trailing white space is not part of the content (RFC 2045 §6.7 rule 3).
        while let Some((&last, rest)) = line.split_last() {
            if last == b' ' || last == b'\t' {
                line = rest;
            } else {
                break;
            }
        }
        let soft = line.last() == Some(&b'=');
        if soft {
            line = &line[..line.len() - 1];
        }
        let mut i = 0;
        while i < line.len() {
            let b = line[i];
            if b == b'=' {
                if let (Some(h), Some(l)) = (
                    line.get(i + 1).and_then(|c| hex_val(*c)),
                    line.get(i + 2).and_then(|c| hex_val(*c)),
                ) {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
            }
            out.push(b);
            i += 1;
        }
        if !soft && !is_last {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Base64 with 76-character lines, each ending in CRLF (an empty input gives an empty output).
pub fn encode_base64_body(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_base64_body_into(data, &mut out);
    out
}

/// [`encode_base64_body`], appended to `out`.
pub fn encode_base64_body_into(data: &[u8], out: &mut Vec<u8>) {
    const CHUNK: usize = 57; // 57 bytes -> 76 characters
    let lines = data.len().div_ceil(CHUNK);
    let start = out.len();
    out.resize(start + lines * 78, 0);
    let mut pos = start;
    for chunk in data.chunks(CHUNK) {
        // A 57-byte chunk always fits in 76 bytes: encode_slice cannot fail here.
        let n = base64::engine::general_purpose::STANDARD
            .encode_slice(chunk, &mut out[pos..pos + 76])
            .unwrap_or(0);
        pos += n;
        out[pos] = b'\r';
        out[pos + 1] = b'\n';
        pos += 2;
    }
    out.truncate(pos);
}

/// Lenient base64 decoding: characters outside the alphabet are skipped, decoding stops at the
/// first `=`; a dangling final character is dropped.
pub(crate) fn decode_base64_lenient(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for &c in input {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mime::canon::is_clean as is_7bit_clean;

    #[test]
    fn line_ends() {
        assert_eq!(normalize_line_ends(b"a\nb\rc\r\nd"), b"a\r\nb\r\nc\r\nd");
        assert_eq!(normalize_line_ends(b"\r\r\n\n"), b"\r\n\r\n\r\n");
    }

    #[test]
    fn qp_roundtrip_and_limits() {
        let mut text = Vec::new();
        for i in 0..3000u32 {
            text.push((i % 256) as u8);
            if i % 700 == 699 {
                text.extend_from_slice(b" \r\n");
            }
        }
        text.extend_from_slice(b"\r\nFrom me\r\n.\r\n--boundary\r\n");
        text.extend(std::iter::repeat_n(b'-', 300));
        text.extend_from_slice(b"\r\ntrailing \t");
        let norm = normalize_line_ends(&text);
        let enc = encode_quoted_printable(&norm);
        assert!(is_7bit_clean(&enc));
        for line in enc.split(|&b| b == b'\n') {
            let l = line.strip_suffix(b"\r").unwrap_or(line);
            assert!(l.len() <= 76, "line of {}", l.len());
            assert!(!l.ends_with(b" ") && !l.ends_with(b"\t"));
            assert!(!l.starts_with(b"From ") && !l.starts_with(b".") && !l.starts_with(b"-"));
        }
        assert_eq!(decode_quoted_printable(&enc), norm);
    }

    #[test]
    fn base64_roundtrip() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 256) as u8).collect();
        let enc = encode_base64_body(&data);
        assert!(enc.ends_with(b"\r\n"));
        assert!(enc.split(|&b| b == b'\n').all(|l| l.len() <= 77));
        assert_eq!(decode_base64_lenient(&enc), data);
        assert!(encode_base64_body(b"").is_empty());
    }
}
