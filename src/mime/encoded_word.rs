//! RFC 2047 encoded words in unstructured header fields (Subject): decoding through
//! mail-parser (every charset it knows, B and Q, words split across folds), and encoding of a
//! UTF-8 text as B-encoded words short enough for any line.

use base64::Engine as _;

/// The decoded text of an unstructured field's raw value (what follows the colon, folds
/// included). Invalid encoded words are kept as written, as RFC 2047 section 6.3 asks.
pub fn decode_unstructured(raw_value: &[u8]) -> String {
    let mut field = Vec::with_capacity(raw_value.len() + 16);
    field.extend_from_slice(b"Subject:");
    field.extend_from_slice(raw_value);
    field.extend_from_slice(b"\r\n\r\n");
    mail_parser::MessageParser::new()
        .parse_headers(&field)
        .and_then(|m| m.subject().map(str::to_string))
        .unwrap_or_else(|| {
            String::from_utf8_lossy(raw_value)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
}

/// Longest UTF-8 payload of one word: base64 of 45 octets is 60 characters, and
/// `=?UTF-8?B?` + 60 + `?=` is 72, within RFC 2047's 75.
const WORD_PAYLOAD: usize = 45;

/// `text` as a field value: as is when it is plain ASCII that cannot be taken for an encoded
/// word, otherwise as UTF-8 B-encoded words separated by folds (white space between encoded
/// words is not part of the text, so splitting them changes nothing).
pub fn encode_unstructured(text: &str) -> String {
    if text.is_ascii() && !text.contains("=?") && !text.contains(['\r', '\n']) {
        return text.to_string();
    }
    let mut words = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.len().min(WORD_PAYLOAD);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (chunk, tail) = rest.split_at(end);
        words.push(format!(
            "=?UTF-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(chunk)
        ));
        rest = tail;
    }
    words.join("\r\n ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_b_q_split_and_other_charsets() {
        assert_eq!(
            decode_unstructured(b" =?UTF-8?Q?=5Bsecure=5D_Gr=C3=BC=C3=9Fe?="),
            "[secure] Gr\u{fc}\u{df}e"
        );
        assert_eq!(
            decode_unstructured(b" =?utf-8?b?W3NlY3VyZV0gR3LDvMOfZQ==?="),
            "[secure] Gr\u{fc}\u{df}e"
        );
        assert_eq!(
            decode_unstructured(b" =?UTF-8?Q?=5Bsec?=\r\n =?UTF-8?Q?ure=5D_x?="),
            "[secure] x"
        );
        assert_eq!(
            decode_unstructured(b" =?ISO-8859-1?Q?=5Bsecure=5D_caf=E9?="),
            "[secure] caf\u{e9}"
        );
        assert_eq!(decode_unstructured(b" plain  text"), "plain  text");
    }

    #[test]
    fn encodes_what_decodes_back() {
        for text in [
            "plain",
            "Gr\u{fc}\u{df}e aus K\u{f6}ln",
            &"\u{1f512}\u{e9}".repeat(40),
            "looks like =?an?encoded?= word",
        ] {
            let encoded = encode_unstructured(text);
            assert!(encoded.is_ascii(), "{encoded}");
            assert!(encoded.split("\r\n").all(|l| l.len() <= 76), "{encoded}");
            let raw = format!(" {encoded}");
            assert_eq!(decode_unstructured(raw.as_bytes()), text, "{encoded}");
        }
        assert_eq!(encode_unstructured("plain"), "plain");
    }
}
