//! Message content framing: the DATA receiver (dot-unstuffing, strict CRLF), the BDAT line-ending
//! check and the dot-stuffing encoder used towards the upstream.
//!
//! Policy (SECURITY.md I1): the end of data is only `CRLF . CRLF`. A bare CR or a bare LF anywhere
//! in the content is an error, never a line end: sealgate does not guess what a peer meant, so a
//! `\n.\n` or `\r\n.\r\r\n` can neither end a message early nor smuggle a second one.

/// What went wrong in the content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentError {
    /// A CR not followed by LF, or an LF not preceded by CR.
    BareLineEnding,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At the start of a line (the content starts here).
    LineStart,
    /// Inside a line.
    Text,
    /// Just after a CR inside a line.
    Cr,
    /// A line that began with '.'.
    Dot,
    /// '.' then CR at the start of a line.
    DotCr,
    /// The end-of-data line was seen.
    Done,
}

/// Progress of one `feed` call.
#[derive(Debug, PartialEq, Eq)]
pub struct Fed {
    /// Bytes of the input consumed (all of it unless `done`).
    pub consumed: usize,
    /// True when `CRLF.CRLF` was reached; the bytes after it are commands.
    pub done: bool,
}

/// Streaming DATA receiver: feed it raw bytes after the 354 reply; it appends the unstuffed
/// content (CRLF line ends, the final CRLF included) to an output buffer.
#[derive(Debug)]
pub struct DataReceiver {
    state: State,
    line_len: usize,
    longest_line: usize,
}

impl Default for DataReceiver {
    fn default() -> Self {
        Self::new()
    }
}

impl DataReceiver {
    pub fn new() -> Self {
        DataReceiver {
            state: State::LineStart,
            line_len: 0,
            longest_line: 0,
        }
    }

    /// Length of the longest line seen so far, without its CRLF.
    pub fn longest_line(&self) -> usize {
        self.longest_line
    }

    /// Consumes bytes from `input`, appending content to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Fed, ContentError> {
        for (i, &b) in input.iter().enumerate() {
            match (self.state, b) {
                (State::Done, _) => {
                    return Ok(Fed {
                        consumed: i,
                        done: true,
                    })
                }
                (State::LineStart, b'.') => self.state = State::Dot,
                (State::LineStart | State::Text | State::Dot, b'\r') => {
                    self.state = if self.state == State::Dot {
                        State::DotCr
                    } else {
                        State::Cr
                    }
                }
                (State::Cr, b'\n') => {
                    out.extend_from_slice(b"\r\n");
                    self.end_line();
                }
                (State::DotCr, b'\n') => {
                    self.state = State::Done;
                    return Ok(Fed {
                        consumed: i + 1,
                        done: true,
                    });
                }
                (_, b'\n') | (State::Cr | State::DotCr, _) => {
                    return Err(ContentError::BareLineEnding)
                }
                (State::LineStart | State::Text | State::Dot, _) => {
                    out.push(b);
                    self.line_len += 1;
                    self.state = State::Text;
                }
            }
        }
        Ok(Fed {
            consumed: input.len(),
            done: self.state == State::Done,
        })
    }

    fn end_line(&mut self) {
        self.longest_line = self.longest_line.max(self.line_len);
        self.line_len = 0;
        self.state = State::LineStart;
    }
}

/// Checks BDAT content (which is counted, not terminated) for bare CR and bare LF, across
/// chunk boundaries.
#[derive(Debug, Default)]
pub struct BdatChecker {
    pending_cr: bool,
    line_len: usize,
    longest_line: usize,
}

impl BdatChecker {
    pub fn check(&mut self, chunk: &[u8]) -> Result<(), ContentError> {
        for &b in chunk {
            match (self.pending_cr, b) {
                (true, b'\n') => {
                    self.pending_cr = false;
                    self.longest_line = self.longest_line.max(self.line_len);
                    self.line_len = 0;
                }
                (true, _) | (false, b'\n') => return Err(ContentError::BareLineEnding),
                (false, b'\r') => self.pending_cr = true,
                (false, _) => self.line_len += 1,
            }
        }
        Ok(())
    }

    /// Called after the LAST chunk: a trailing lone CR is a bare CR.
    pub fn finish(&self) -> Result<(), ContentError> {
        if self.pending_cr {
            Err(ContentError::BareLineEnding)
        } else {
            Ok(())
        }
    }

    pub fn longest_line(&self) -> usize {
        self.longest_line.max(self.line_len)
    }
}

/// Streaming dot-stuffer: turns canonical (CRLF) content into DATA wire form. `finish` adds a
/// CRLF if the content did not end with one, then the terminating `.CRLF`.
#[derive(Debug)]
pub struct DotStuffer {
    at_line_start: bool,
    last_was_cr: bool,
    empty: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer {
            at_line_start: true,
            last_was_cr: false,
            empty: true,
        }
    }
}

impl DotStuffer {
    pub fn stuff(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        out.reserve(chunk.len() + chunk.len() / 64 + 2);
        for &b in chunk {
            if self.at_line_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            self.at_line_start = self.last_was_cr && b == b'\n';
            self.last_was_cr = b == b'\r';
            self.empty = false;
        }
    }

    pub fn finish(self, out: &mut Vec<u8>) {
        if !self.empty && !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive_split(wire: &[u8], split: usize) -> Result<(Vec<u8>, usize), ContentError> {
        let mut r = DataReceiver::new();
        let mut out = Vec::new();
        let mut pos = 0;
        for chunk in wire.chunks(split.max(1)) {
            let fed = r.feed(chunk, &mut out)?;
            pos += fed.consumed;
            if fed.done {
                return Ok((out, pos));
            }
        }
        panic!("no end of data in {:?}", String::from_utf8_lossy(wire));
    }

    #[test]
    fn unstuffs_and_stops_at_crlf_dot_crlf_for_every_split() {
        let wire = b"Subject: x\r\n\r\n..leading dot\r\n.\r\nMAIL FROM:<a@b>\r\n";
        for split in 1..wire.len() {
            let (content, consumed) = receive_split(wire, split).unwrap();
            assert_eq!(content, b"Subject: x\r\n\r\n.leading dot\r\n");
            assert_eq!(&wire[consumed..], b"MAIL FROM:<a@b>\r\n");
        }
    }

    #[test]
    fn empty_message() {
        let (content, consumed) = receive_split(b".\r\n", 1).unwrap();
        assert!(content.is_empty());
        assert_eq!(consumed, 3);
    }

    #[test]
    fn smuggling_sequences_are_errors_not_ends() {
        for wire in [
            &b"a\r\n\n.\n"[..],
            b"a\n.\r\n",
            b"a\r\n.\n",
            b"a\r.\r",
            b"a\r\n.\r\r\n",
            b"a\r\n.\x00\r\n.\r\n",
            b"a\rb\r\n.\r\n",
            b"\n.\r\n",
        ] {
            for split in 1..wire.len() {
                let mut r = DataReceiver::new();
                let mut out = Vec::new();
                let mut result = Ok(false);
                for chunk in wire.chunks(split) {
                    match r.feed(chunk, &mut out) {
                        Ok(f) if f.done => {
                            result = Ok(true);
                            break;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
                let text = String::from_utf8_lossy(wire);
                match result {
                    Err(ContentError::BareLineEnding) => {}
                    // NUL next to the dot is content, but then the message must not end there.
                    Ok(done) => {
                        assert!(wire.contains(&0), "{text:?} accepted");
                        assert!(done && out == b"a\r\n\x00\r\n", "{text:?} ended early");
                    }
                }
            }
        }
    }

    #[test]
    fn tracks_longest_line() {
        let mut r = DataReceiver::new();
        let mut out = Vec::new();
        r.feed(b"abc\r\nabcdefg\r\n.\r\n", &mut out).unwrap();
        assert_eq!(r.longest_line(), 7);
    }

    #[test]
    fn bdat_checker_finds_bare_endings_across_chunks() {
        let mut c = BdatChecker::default();
        c.check(b"a\r").unwrap();
        c.check(b"\nb\r\n").unwrap();
        c.finish().unwrap();
        let mut c = BdatChecker::default();
        c.check(b"a\r").unwrap();
        assert!(c.check(b"b").is_err());
        let mut c = BdatChecker::default();
        assert!(c.check(b"a\nb").is_err());
        let mut c = BdatChecker::default();
        c.check(b"a\r").unwrap();
        assert!(c.finish().is_err());
    }

    #[test]
    fn stuffing_round_trips_through_the_receiver() {
        let contents: [&[u8]; 6] = [
            b"",
            b".\r\n",
            b"..\r\n.x\r\n\r\n.\r\n",
            b"no final newline",
            b"line\r\n.",
            b"a\r\n.\r\nb\r\n",
        ];
        for content in contents {
            let mut wire = Vec::new();
            let mut s = DotStuffer::default();
            for chunk in content.chunks(2) {
                s.stuff(chunk, &mut wire);
            }
            s.finish(&mut wire);
            let (back, consumed) = receive_split(&wire, 3).unwrap();
            assert_eq!(consumed, wire.len());
            let mut expected = content.to_vec();
            if !expected.is_empty() && !expected.ends_with(b"\r\n") {
                expected.extend_from_slice(b"\r\n");
            }
            assert_eq!(back, expected, "{:?}", String::from_utf8_lossy(content));
        }
    }
}
