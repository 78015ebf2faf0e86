//! The MIME path (src/mime): header parsing, canonicalisation and `prepare` (outer/inner split
//! with header protection), with the header section compared against mail-parser's reading of
//! the same bytes.
//!
//! Checks: no panic, bounded by the configured limits; where the header section is plainly
//! well-formed (CRLF lines of `name[WSP]:value` and folds, ended by an empty line, printable
//! ASCII) sealgate and mail-parser see the same fields, values and body offset; canonical output
//! for a clear carrier has only CRLF line ends and lines of at most 998 octets, and for any
//! carrier is a fixed point; `prepare` never
//! leaves `Bcc`, `Resent-Bcc`, `MIME-Version` or a `Content-*` field outside, and no `Bcc`
//! inside, as mail-parser (a receiving MUA) reads the result.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mail_parser::MessageParser;
use sealgate::mime::{
    canonicalize, canonicalize_for, parse_message, prepare, Carrier, HeaderProtection, Limits,
    PrepareOptions,
};

fn crlf_only(content: &[u8]) -> bool {
    content.iter().enumerate().all(|(i, &b)| match b {
        b'\r' => content.get(i + 1) == Some(&b'\n'),
        b'\n' => i > 0 && content[i - 1] == b'\r',
        _ => true,
    })
}

fn longest_line(x: &[u8]) -> usize {
    x.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l).len())
        .max()
        .unwrap_or(0)
}

/// The header section `h` (empty line included) is one both parsers must read alike.
fn plainly_well_formed(h: &[u8]) -> bool {
    let Some(fields) = h.strip_suffix(b"\r\n\r\n") else {
        return false;
    };
    if h.iter()
        .any(|&b| !(b == b'\t' || b == b'\r' || b == b'\n' || (b' '..=b'~').contains(&b)))
        || !crlf_only(h)
    {
        return false;
    }
    fields.split(|&b| b == b'\n').enumerate().all(|(i, line)| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            // A fold: not first, and not white space only (mail-parser ends a field there).
            return i > 0 && line.iter().any(|&b| b != b' ' && b != b'\t');
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return false;
        };
        let name = line[..colon].trim_ascii_end();
        !name.is_empty() && name.iter().all(|&b| b > b' ' && b != b':')
    })
}

fn compare_with_mail_parser(input: &[u8], limits: &Limits) {
    let Ok(ours) = parse_message(input, limits) else {
        return;
    };
    let h = &input[..ours.body_offset];
    if ours.fields.is_empty() || !plainly_well_formed(h) {
        return;
    }
    let Some(theirs) = MessageParser::new().parse(input) else {
        panic!(
            "mail-parser found no message where we found {} fields",
            ours.fields.len()
        );
    };
    let root = theirs.root_part();
    let names: Vec<String> = ours
        .fields
        .iter()
        .map(|f| f.name().to_ascii_lowercase())
        .collect();
    let their_names: Vec<String> = root
        .headers
        .iter()
        .map(|f| f.name.as_str().to_ascii_lowercase())
        .collect();
    assert_eq!(names, their_names, "field names");
    for (f, t) in ours.fields.iter().zip(&root.headers) {
        let raw = &input[t.offset_start as usize..t.offset_end as usize];
        let unfolded: Vec<u8> = raw
            .iter()
            .copied()
            .filter(|&b| b != b'\r' && b != b'\n')
            .collect();
        assert_eq!(
            f.value(),
            String::from_utf8_lossy(&unfolded).trim(),
            "value of {}",
            f.name()
        );
    }
    assert_eq!(ours.body_offset, root.offset_body as usize, "body offset");
}

fn no_bcc_as_mail_parser_reads(section: &[u8]) {
    if let Some(m) = MessageParser::new().parse(section) {
        for h in m.root_part().headers.iter() {
            let n = h.name.as_str().to_ascii_lowercase();
            assert!(n != "bcc" && n != "resent-bcc", "{n} survived");
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, message)) = input.split_first() else {
        return;
    };
    let limits = Limits {
        max_header_bytes: 4096,
        max_header_fields: 64,
        max_depth: 8,
        max_parts: 64,
    };
    // Canonical and prepared output may hold a few more fields and folds than the input.
    let roomy = Limits {
        max_header_bytes: 64 * 1024,
        max_header_fields: 512,
        ..limits.clone()
    };
    compare_with_mail_parser(message, &limits);

    if let Ok(c) = canonicalize(message, &limits) {
        assert!(crlf_only(&c), "bare CR/LF in canonical form");
        assert!(longest_line(&c) <= 998, "line of {}", longest_line(&c));
        let again = canonicalize(&c, &roomy).expect("canonical form is accepted");
        assert!(again == c, "canonicalize is not idempotent");
    }
    // Inside encryption, bytes that cannot travel 7-bit are kept: only idempotence is promised.
    if let Ok(c) = canonicalize_for(message, &limits, Carrier::Encrypted) {
        let again = canonicalize_for(&c, &roomy, Carrier::Encrypted).expect("accepted again");
        assert!(again == c, "canonicalize_for(Encrypted) is not idempotent");
    }

    let header_protection = match mode % 3 {
        0 => HeaderProtection::None,
        1 => HeaderProtection::Clear,
        _ => HeaderProtection::Cipher,
    };
    let carrier = if mode & 8 != 0 {
        Carrier::Encrypted
    } else {
        Carrier::Clear
    };
    let opts = PrepareOptions {
        header_protection,
        hide_subject: mode & 4 != 0,
        limits: limits.clone(),
        carrier,
    };
    let Ok(p) = prepare(message, &opts) else {
        return;
    };
    let mut outer = Vec::new();
    for f in &p.outer {
        for bad in ["bcc", "resent-bcc", "mime-version"] {
            assert!(!f.is(bad), "{bad} left outside");
        }
        assert!(
            !f.name().to_ascii_lowercase().starts_with("content-"),
            "{f:?} outside"
        );
        f.write_to(&mut outer);
    }
    outer.extend_from_slice(b"\r\n");
    no_bcc_as_mail_parser_reads(&outer);
    if carrier == Carrier::Clear {
        assert!(crlf_only(&p.inner), "bare CR/LF in the inner entity");
        assert!(longest_line(&p.inner) <= 998);
    }
    let inner = parse_message(&p.inner, &roomy).expect("inner entity parses");
    assert!(!inner
        .fields
        .iter()
        .any(|f| f.is("bcc") || f.is("resent-bcc")));
    no_bcc_as_mail_parser_reads(&p.inner[..inner.body_offset]);
    if header_protection == HeaderProtection::Cipher && opts.hide_subject {
        assert!(p
            .outer
            .iter()
            .filter(|f| f.is("subject"))
            .all(|f| f.value() == "[...]"));
    }
});
