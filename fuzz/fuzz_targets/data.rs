//! The DATA/BDAT framer (src/smtp/data.rs).
//!
//! The first byte picks how the input is split into reads; the rest is the wire after 354.
//! Checks the DATA receiver against a plain reference model (the end is only CRLF.CRLF, a bare
//! CR or LF before it is an error, one leading dot removed per line), that the result does not
//! depend on how the bytes were split, that the content has only CRLF line ends, and that the
//! dot-stuffer's output reads back to the same content. The BDAT checker must agree with a
//! whole-buffer check whatever the chunking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealgate::smtp::data::{BdatChecker, ContentError, DataReceiver, DotStuffer};

/// Reference: (content, bytes consumed) or an error; None when the end was not reached.
fn reference(wire: &[u8]) -> Option<Result<(Vec<u8>, usize), ContentError>> {
    let mut content = Vec::new();
    let mut pos = 0;
    loop {
        // One line: up to the next LF; it must end with CRLF and hold no other CR.
        let rest = &wire[pos..];
        let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
            // No complete line yet: a CR not at its very end is already an error.
            let cr = rest.iter().position(|&b| b == b'\r');
            return match cr {
                Some(i) if i + 1 < rest.len() => Some(Err(ContentError::BareLineEnding)),
                _ => None,
            };
        };
        let line = &rest[..=lf];
        let Some(body) = line.strip_suffix(b"\r\n") else {
            return Some(Err(ContentError::BareLineEnding));
        };
        if body.contains(&b'\r') {
            return Some(Err(ContentError::BareLineEnding));
        }
        pos += lf + 1;
        if body == b"." {
            return Some(Ok((content, pos)));
        }
        content.extend_from_slice(body.strip_prefix(b".").unwrap_or(body));
        content.extend_from_slice(b"\r\n");
    }
}

fn receive(wire: &[u8], split: usize) -> Option<Result<(Vec<u8>, usize), ContentError>> {
    let mut r = DataReceiver::new();
    let mut out = Vec::new();
    let mut pos = 0;
    for chunk in wire.chunks(split.max(1)) {
        match r.feed(chunk, &mut out) {
            Err(e) => return Some(Err(e)),
            Ok(fed) => {
                assert!(fed.consumed <= chunk.len());
                pos += fed.consumed;
                if fed.done {
                    return Some(Ok((out, pos)));
                }
                assert_eq!(fed.consumed, chunk.len(), "stopped early without an end");
            }
        }
    }
    None
}

fn crlf_only(content: &[u8]) -> bool {
    content.iter().enumerate().all(|(i, &b)| match b {
        b'\r' => content.get(i + 1) == Some(&b'\n'),
        b'\n' => i > 0 && content[i - 1] == b'\r',
        _ => true,
    })
}

fuzz_target!(|input: &[u8]| {
    let Some((&split, wire)) = input.split_first() else {
        return;
    };
    let split = usize::from(split % 16) + 1;
    let expected = reference(wire);
    let whole = receive(wire, wire.len());
    let pieces = receive(wire, split);
    assert_eq!(whole, expected, "whole");
    assert_eq!(pieces, whole, "split {split}");
    if let Some(Ok((content, consumed))) = &whole {
        assert!(crlf_only(content));
        assert!(content.is_empty() || content.ends_with(b"\r\n"));
        assert!(wire[..*consumed].ends_with(b".\r\n"));
        // The same content, stuffed again, reads back identically and ends where it should.
        let mut stuffed = Vec::new();
        let mut s = DotStuffer::default();
        for chunk in content.chunks(split) {
            s.stuff(chunk, &mut stuffed);
        }
        s.finish(&mut stuffed);
        let back = receive(&stuffed, split);
        assert_eq!(back, Some(Ok((content.clone(), stuffed.len()))));
    }

    // BDAT: the same bytes as counted chunks.
    let mut chunked = BdatChecker::default();
    let mut chunk_result = Ok(());
    for chunk in wire.chunks(split) {
        chunk_result = chunked.check(chunk);
        if chunk_result.is_err() {
            break;
        }
    }
    let chunk_result = chunk_result.and_then(|_| chunked.finish());
    let valid = crlf_only(wire);
    assert_eq!(chunk_result.is_ok(), valid, "BDAT checker");
    if valid {
        // Any content at all, stuffed, comes back whole.
        let mut stuffed = Vec::new();
        let mut s = DotStuffer::default();
        s.stuff(wire, &mut stuffed);
        s.finish(&mut stuffed);
        let mut expected = wire.to_vec();
        if !expected.is_empty() && !expected.ends_with(b"\r\n") {
            expected.extend_from_slice(b"\r\n");
        }
        assert_eq!(
            receive(&stuffed, split),
            Some(Ok((expected, stuffed.len())))
        );
        let longest = wire
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l).len())
            .max()
            .unwrap_or(0);
        assert_eq!(chunked.longest_line(), longest);
    }
});
