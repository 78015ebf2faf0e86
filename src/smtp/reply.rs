//! SMTP replies: what we send to clients, and a bounded, sans-IO parser for what upstream
//! servers send us.

use std::fmt;

/// An RFC 3463 enhanced status code (`class.subject.detail`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnhancedCode(pub u8, pub u16, pub u16);

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

impl EnhancedCode {
    /// Parses `x.y.z` with the limits of RFC 3463 (class 2/4/5, up to three digits each).
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split('.');
        let class: u8 = parse_digits(parts.next()?, 1)?.try_into().ok()?;
        let subject = parse_digits(parts.next()?, 3)?;
        let detail = parse_digits(parts.next()?, 3)?;
        if parts.next().is_some() || !matches!(class, 2 | 4 | 5) {
            return None;
        }
        Some(EnhancedCode(class, subject, detail))
    }
}

fn parse_digits(s: &str, max: usize) -> Option<u16> {
    if s.is_empty() || s.len() > max || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// One SMTP reply: a basic code, an enhanced code and one or more lines of text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    code: u16,
    status: Option<EnhancedCode>,
    lines: Vec<String>,
}

impl Reply {
    /// A reply with an enhanced status code, e.g. `Reply::new(451, "4.4.1", "...")`.
    ///
    /// `status` is a literal chosen by our own code; a malformed one is dropped rather than sent.
    pub fn new(code: u16, status: &str, text: impl Into<String>) -> Self {
        Reply {
            code,
            status: EnhancedCode::parse(status),
            lines: vec![sanitize(&text.into())],
        }
    }

    /// A reply without enhanced status code (greeting, EHLO and 334 challenges carry none).
    pub fn plain(code: u16, lines: Vec<String>) -> Self {
        let lines = if lines.is_empty() {
            vec![String::new()]
        } else {
            lines.iter().map(|l| sanitize(l)).collect()
        };
        Reply {
            code,
            status: None,
            lines,
        }
    }

    pub fn code(&self) -> u16 {
        self.code
    }

    pub fn status(&self) -> Option<EnhancedCode> {
        self.status
    }

    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    pub fn is_intermediate(&self) -> bool {
        (300..400).contains(&self.code)
    }

    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// Ensures the reply carries an enhanced code consistent with its class, adding the generic
    /// `x.0.0` of its class where the upstream gave none (or a wrong class).
    pub fn with_enhanced_default(mut self) -> Self {
        let class = (self.code / 100) as u8;
        let consistent = self.status.is_some_and(|s| s.0 == class);
        if !consistent && matches!(class, 2 | 4 | 5) {
            self.status = Some(EnhancedCode(class, 0, 0));
        }
        self
    }

    /// Wire form, CRLF terminated, with `-` continuation lines.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        let n = self.lines.len();
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i + 1 == n { ' ' } else { '-' };
            out.extend_from_slice(format!("{}{}", self.code, sep).as_bytes());
            if let Some(status) = self.status {
                out.extend_from_slice(status.to_string().as_bytes());
                if !line.is_empty() {
                    out.push(b' ');
                }
            }
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(status) = self.status {
            write!(f, " {status}")?;
        }
        write!(f, " {}", self.lines.join(" / "))
    }
}

/// Keeps reply text printable ASCII so nothing from upstream can inject lines or controls.
fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect()
}

/// Why an upstream reply could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("reply line longer than {0} bytes")]
    LineTooLong(usize),
    #[error("reply longer than {0} lines")]
    TooManyLines(usize),
    #[error("malformed reply line")]
    Malformed,
    #[error("reply code out of range")]
    CodeOutOfRange,
    #[error("reply lines disagree on the code")]
    InconsistentCode,
    #[error("unexpected reply code {0}")]
    Unexpected(u16),
    #[error("reply received before any command was sent")]
    Unsolicited,
}

/// Bounded, sans-IO parser of (possibly multi-line) replies.
#[derive(Debug)]
pub struct ReplyParser {
    max_line: usize,
    max_lines: usize,
}

impl Default for ReplyParser {
    fn default() -> Self {
        // RFC 5321 4.5.3.1.5: reply lines are at most 512 octets; we tolerate a little more.
        ReplyParser {
            max_line: 2048,
            max_lines: 128,
        }
    }
}

impl ReplyParser {
    /// Tries to take one complete reply from the front of `buf`. Returns the reply and the
    /// number of bytes it used, `Ok(None)` when more bytes are needed, or an error when the
    /// input can never become a valid reply (the caller aborts the connection).
    pub fn parse(&self, buf: &[u8]) -> Result<Option<(Reply, usize)>, ReplyError> {
        let mut pos = 0;
        let mut code = None;
        let mut status = None;
        let mut lines = Vec::new();
        loop {
            let rest = &buf[pos..];
            let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                if rest.len() > self.max_line {
                    return Err(ReplyError::LineTooLong(self.max_line));
                }
                return Ok(None);
            };
            if nl + 1 > self.max_line {
                return Err(ReplyError::LineTooLong(self.max_line));
            }
            let mut line = &rest[..nl];
            if let Some(stripped) = line.strip_suffix(b"\r") {
                line = stripped;
            }
            pos += nl + 1;
            if line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) {
                return Err(ReplyError::Malformed);
            }
            let this_code = u16::from(line[0] - b'0') * 100
                + u16::from(line[1] - b'0') * 10
                + u16::from(line[2] - b'0');
            if !(200..=599).contains(&this_code) {
                return Err(ReplyError::CodeOutOfRange);
            }
            if *code.get_or_insert(this_code) != this_code {
                return Err(ReplyError::InconsistentCode);
            }
            let (last, text) = match line.get(3) {
                None => (true, &[][..]),
                Some(b' ') => (true, &line[4..]),
                Some(b'-') => (false, &line[4..]),
                Some(_) => return Err(ReplyError::Malformed),
            };
            let text = String::from_utf8_lossy(text);
            // The first line says whether the reply uses enhanced codes (RFC 2034); only then
            // is a code in front of a later line that field, and not text.
            let uses_codes = lines.is_empty() || status.is_some();
            let text = match text.split_once(' ') {
                Some((first, rest)) if uses_codes && EnhancedCode::parse(first).is_some() => {
                    if lines.is_empty() {
                        status = EnhancedCode::parse(first);
                    }
                    rest.to_string()
                }
                _ if uses_codes && EnhancedCode::parse(&text).is_some() => {
                    if lines.is_empty() {
                        status = EnhancedCode::parse(&text);
                    }
                    String::new()
                }
                _ => text.into_owned(),
            };
            lines.push(sanitize(&text));
            if lines.len() > self.max_lines {
                return Err(ReplyError::TooManyLines(self.max_lines));
            }
            if last {
                let reply = Reply {
                    code: this_code,
                    status,
                    lines,
                };
                return Ok(Some((reply, pos)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_multiline_with_enhanced_code() {
        let r = Reply {
            code: 250,
            status: Some(EnhancedCode(2, 0, 0)),
            lines: vec!["a".into(), "b".into()],
        };
        assert_eq!(r.to_bytes(), b"250-2.0.0 a\r\n250 2.0.0 b\r\n");
        let r = Reply::plain(250, vec!["host".into(), "PIPELINING".into()]);
        assert_eq!(r.to_bytes(), b"250-host\r\n250 PIPELINING\r\n");
    }

    #[test]
    fn text_cannot_inject_lines() {
        let r = Reply::new(550, "5.7.1", "no\r\n250 ok");
        assert_eq!(r.to_bytes(), b"550 5.7.1 no??250 ok\r\n");
    }

    #[test]
    fn parses_multiline_split_anywhere() {
        let wire = b"250-mx.example\r\n250-SIZE 1000\r\n250 STARTTLS\r\nextra";
        let p = ReplyParser::default();
        for cut in 0..wire.len() - 5 {
            let got = p.parse(&wire[..cut]).unwrap();
            assert!(got.is_none(), "complete at {cut}");
        }
        let (r, used) = p.parse(wire).unwrap().unwrap();
        assert_eq!(used, wire.len() - 5);
        assert_eq!(r.code(), 250);
        assert_eq!(r.lines(), ["mx.example", "SIZE 1000", "STARTTLS"]);
    }

    #[test]
    fn parses_enhanced_code_and_bare_code() {
        let p = ReplyParser::default();
        let (r, _) = p.parse(b"451 4.3.0 try later\r\n").unwrap().unwrap();
        assert_eq!(r.status(), Some(EnhancedCode(4, 3, 0)));
        assert_eq!(r.lines(), ["try later"]);
        let (r, _) = p.parse(b"354\r\n").unwrap().unwrap();
        assert_eq!(r.code(), 354);
    }

    /// A reply uses enhanced codes when its first line does (RFC 2034): otherwise the text of
    /// later lines is kept as the upstream wrote it, and what we pass on parses back the same.
    /// Found by the reply fuzz target.
    #[test]
    fn later_lines_keep_their_text_when_the_first_has_no_enhanced_code() {
        let p = ReplyParser::default();
        let (r, _) = p
            .parse(b"250-2.2.1.0 a\r\n250 4.1.0 4.1.0 b\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.status(), None);
        assert_eq!(r.lines(), ["2.2.1.0 a", "4.1.0 4.1.0 b"]);
        let (again, _) = p.parse(&r.to_bytes()).unwrap().unwrap();
        assert_eq!(again, r);
        // With an enhanced code on the first line, the later lines' codes are the same field.
        let (r, _) = p.parse(b"250-2.0.0 a\r\n250 2.0.0 b\r\n").unwrap().unwrap();
        assert_eq!(r.lines(), ["a", "b"]);
    }

    #[test]
    fn rejects_hostile_replies() {
        let p = ReplyParser::default();
        assert_eq!(p.parse(b"999 x\r\n"), Err(ReplyError::CodeOutOfRange));
        assert_eq!(p.parse(b"099 x\r\n"), Err(ReplyError::CodeOutOfRange));
        assert_eq!(p.parse(b"25\r\n"), Err(ReplyError::Malformed));
        assert_eq!(p.parse(b"250x\r\n"), Err(ReplyError::Malformed));
        assert_eq!(
            p.parse(b"250-a\r\n550 b\r\n"),
            Err(ReplyError::InconsistentCode)
        );
        let endless = vec![b'2'; 3000];
        assert_eq!(p.parse(&endless), Err(ReplyError::LineTooLong(2048)));
        let many = b"250-x\r\n".repeat(200);
        assert_eq!(p.parse(&many), Err(ReplyError::TooManyLines(128)));
    }

    #[test]
    fn enhanced_default_follows_class() {
        let p = ReplyParser::default();
        let (r, _) = p.parse(b"550 no such user\r\n").unwrap().unwrap();
        assert_eq!(
            r.with_enhanced_default().to_bytes(),
            b"550 5.0.0 no such user\r\n"
        );
        let (r, _) = p.parse(b"451 5.1.1 odd\r\n").unwrap().unwrap();
        assert_eq!(
            r.with_enhanced_default().status(),
            Some(EnhancedCode(4, 0, 0))
        );
    }
}
