//! Writing the outgoing message.

use super::header::HeaderField;

/// The outgoing message: `outer` fields, `MIME-Version: 1.0`, `Content-Type: content_type`,
/// `Content-Transfer-Encoding` if given, an empty line and `body` (written as is: it must
/// already have CRLF line ends). Any `MIME-Version` or `Content-*` field in `outer` is skipped.
pub fn assemble(
    outer: &[HeaderField],
    content_type: &str,
    transfer_encoding: Option<&str>,
    body: &[u8],
) -> Vec<u8> {
    let header_len: usize = outer.iter().map(|f| f.raw_value().len() + 32).sum();
    let mut out = Vec::with_capacity(header_len + body.len() + 256);
    for field in outer {
        if field.is("mime-version") || is_content_field(field) || field.is("bcc") {
            continue;
        }
        field.write_to(&mut out);
    }
    out.extend_from_slice(b"MIME-Version: 1.0\r\n");
    HeaderField::new("Content-Type", content_type).write_to(&mut out);
    if let Some(cte) = transfer_encoding {
        HeaderField::new("Content-Transfer-Encoding", cte).write_to(&mut out);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

pub(crate) fn is_content_field(field: &HeaderField) -> bool {
    field
        .name()
        .get(..8)
        .is_some_and(|p| p.eq_ignore_ascii_case("content-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_headers_and_body() {
        let outer = vec![
            HeaderField::new("From", "a@example.org"),
            HeaderField::new("Content-Type", "text/plain"),
            HeaderField::new("Bcc", "hidden@example.org"),
        ];
        let m = assemble(
            &outer,
            "application/pkcs7-mime;\r\n smime-type=enveloped-data",
            Some("base64"),
            b"QUJD\r\n",
        );
        assert_eq!(
            m,
            b"From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime;\r\n smime-type=enveloped-data\r\nContent-Transfer-Encoding: base64\r\n\r\nQUJD\r\n"
        );
    }
}
