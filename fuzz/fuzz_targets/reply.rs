//! The upstream reply parser (src/smtp/reply.rs) on arbitrary bytes.
//!
//! Checks: no panic; a reply is taken only from complete lines, its code is in 200..=599 and
//! the same on every line; every shorter prefix of a reply's bytes asks for more; what we would
//! write back to a client (`to_bytes`) is well-formed, printable, and parses to the same reply;
//! `with_enhanced_default` gives an enhanced code of the reply's own class.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealgate::smtp::{Reply, ReplyParser};

fn well_formed(r: &Reply) {
    let wire = r.to_bytes();
    let text = std::str::from_utf8(&wire).expect("replies are ASCII");
    assert!(text.ends_with("\r\n"));
    let lines: Vec<&str> = text.split_terminator("\r\n").collect();
    assert_eq!(lines.len(), r.lines().len());
    for (i, line) in lines.iter().enumerate() {
        let b = line.as_bytes();
        assert!(
            b.len() >= 4 && b[..3].iter().all(u8::is_ascii_digit),
            "{line:?}"
        );
        assert_eq!(&line[..3], r.code().to_string());
        let sep = if i + 1 == lines.len() { b' ' } else { b'-' };
        assert_eq!(b[3], sep, "{line:?}");
        assert!(b.iter().all(|&c| (b' '..=b'~').contains(&c)), "{line:?}");
    }
}

fuzz_target!(|input: &[u8]| {
    let p = ReplyParser::default();
    let Ok(Some((reply, used))) = p.parse(input) else {
        return;
    };
    assert!(used > 0 && used <= input.len());
    assert_eq!(input[used - 1], b'\n');
    assert!((200..=599).contains(&reply.code()));
    // Fed a byte short, the parser must wait (never invent a reply from a partial line).
    for cut in [used - 1, used / 2, 1] {
        if cut < used {
            assert_eq!(p.parse(&input[..cut]), Ok(None), "cut {cut} of {used}");
        }
    }
    well_formed(&reply);
    let (again, n) = p
        .parse(&reply.to_bytes())
        .expect("our own output parses")
        .expect("complete");
    assert_eq!(n, reply.to_bytes().len());
    assert_eq!(again, reply);
    let fixed = reply.clone().with_enhanced_default();
    well_formed(&fixed);
    if let (Some(status), class @ (2 | 4 | 5)) = (fixed.status(), reply.code() / 100) {
        assert_eq!(u16::from(status.0), class);
    } else {
        assert!(!matches!(reply.code() / 100, 2 | 4 | 5));
    }
});
