//! The SMTP command parser (src/smtp/command.rs) on arbitrary lines.
//!
//! Checks: no panic; an error is a well-formed permanent reply; nothing parsed out of a line
//! without CR/LF can carry CR, LF or NUL to the upstream; MAIL/RCPT paths re-parse to the same
//! command from their wire form; BDAT and EHLO round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealgate::smtp::command::{parse, Command, PathWithParams};

fn no_line_break(s: &str) -> bool {
    !s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
}

fn check_path(p: &PathWithParams, verb: &str) {
    let wire = p.wire();
    assert!(no_line_break(&wire), "line break in wire form {wire:?}");
    assert!(
        !p.address
            .chars()
            .any(|c| c.is_control() || c == ' ' || c == '<' || c == '>'),
        "{:?}",
        p.address
    );
    for (k, v) in &p.params {
        assert!(
            !k.is_empty()
                && k.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
        );
        if let Some(v) = v {
            assert!(
                !v.is_empty() && !v.contains(['=', ' ']) && no_line_break(v),
                "{v:?}"
            );
        }
    }
    // What we send upstream means the same to a parser as what we understood.
    let again = format!("{verb}{wire}");
    let reparsed = parse(again.as_bytes()).unwrap_or_else(|e| panic!("{again:?}: {e}"));
    let p2 = match reparsed {
        Command::Mail(p2) | Command::Rcpt(p2) => p2,
        other => panic!("{again:?} became {other:?}"),
    };
    assert_eq!(&p2, p, "{again:?}");
}

fuzz_target!(|line: &[u8]| {
    let clean = !line.iter().any(|&b| b == b'\r' || b == b'\n');
    match parse(line) {
        Err(reply) => {
            assert!(reply.is_permanent(), "{reply}");
            let wire = reply.to_bytes();
            assert!(wire.ends_with(b"\r\n"));
            assert_eq!(wire.iter().filter(|&&b| b == b'\n').count(), 1);
        }
        Ok(cmd) => {
            assert!(!line.contains(&0));
            match &cmd {
                Command::Mail(p) => check_path(p, "MAIL FROM:"),
                Command::Rcpt(p) => {
                    assert!(!p.address.is_empty());
                    check_path(p, "RCPT TO:")
                }
                Command::Ehlo(d) | Command::Helo(d) => {
                    assert!(
                        !d.is_empty() && !d.chars().any(|c| c.is_whitespace() || c.is_control())
                    );
                    let again = format!("EHLO {d}");
                    assert_eq!(parse(again.as_bytes()), Ok(Command::Ehlo(d.clone())));
                }
                Command::Bdat { size, last } => {
                    let again = format!("BDAT {size}{}", if *last { " LAST" } else { "" });
                    assert_eq!(parse(again.as_bytes()), Ok(cmd));
                }
                Command::Auth { mechanism, initial } => {
                    if clean {
                        assert!(no_line_break(mechanism));
                        assert!(initial.as_deref().is_none_or(no_line_break));
                    }
                }
                _ => {}
            }
        }
    }
});
