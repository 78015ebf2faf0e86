//! Parsing of SMTP command lines (RFC 5321 section 4.1) into typed commands.
//!
//! The parser is strict about what it accepts and never allocates beyond the line it is given;
//! the session decides what is allowed in which state.

use super::reply::Reply;

/// One client command.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    Mail(PathWithParams),
    Rcpt(PathWithParams),
    Data,
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    Vrfy,
    Help,
    StartTls,
    /// AUTH mechanism and optional initial response, kept as received (never logged).
    Auth {
        mechanism: String,
        initial: Option<String>,
    },
}

/// A reverse- or forward-path with its ESMTP parameters, both as given by the client.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct PathWithParams {
    /// The address inside the angle brackets (empty for the null reverse-path `<>`).
    pub address: String,
    /// Parameters in the client's order: keyword (upper-cased) and the raw value.
    pub params: Vec<(String, Option<String>)>,
}

impl PathWithParams {
    pub fn param(&self, keyword: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(k, _)| k == keyword)
            .map(|(_, v)| v.as_deref())
    }

    /// The path and parameters in wire form, e.g. `<a@b> SIZE=10 BODY=8BITMIME`.
    pub fn wire(&self) -> String {
        let mut s = format!("<{}>", self.address);
        for (k, v) in &self.params {
            s.push(' ');
            s.push_str(k);
            if let Some(v) = v {
                s.push('=');
                s.push_str(v);
            }
        }
        s
    }
}

/// Parses one command line (without its CRLF). Errors are the reply to send.
pub fn parse(line: &[u8]) -> Result<Command, Reply> {
    if line.contains(&0) {
        return Err(Reply::new(500, "5.5.2", "NUL character in command"));
    }
    let line = std::str::from_utf8(line)
        .map_err(|_| Reply::new(500, "5.5.2", "Command is not valid UTF-8"))?;
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, ""),
    };
    let verb = verb.to_ascii_uppercase();
    let no_args = |cmd: Command| {
        if rest.trim().is_empty() {
            Ok(cmd)
        } else {
            Err(Reply::new(
                501,
                "5.5.4",
                "Syntax error: no arguments allowed",
            ))
        }
    };
    match verb.as_str() {
        "EHLO" | "HELO" => {
            let domain = rest.trim();
            if domain.is_empty() || domain.contains(char::is_whitespace) {
                return Err(Reply::new(501, "5.5.4", "Syntax: EHLO domain"));
            }
            if domain.chars().any(|c| c.is_control()) {
                return Err(Reply::new(501, "5.5.4", "Invalid domain"));
            }
            Ok(if verb == "EHLO" {
                Command::Ehlo(domain.to_string())
            } else {
                Command::Helo(domain.to_string())
            })
        }
        "MAIL" => parse_path(rest, "FROM:", true).map(Command::Mail),
        "RCPT" => parse_path(rest, "TO:", false).map(Command::Rcpt),
        "DATA" => no_args(Command::Data),
        "BDAT" => parse_bdat(rest),
        "RSET" => no_args(Command::Rset),
        "NOOP" => Ok(Command::Noop),
        "QUIT" => no_args(Command::Quit),
        "VRFY" | "EXPN" => Ok(Command::Vrfy),
        "HELP" => Ok(Command::Help),
        "STARTTLS" => no_args(Command::StartTls),
        "AUTH" => {
            let mut parts = rest.split(' ');
            let mechanism = parts.next().unwrap_or("").to_ascii_uppercase();
            let initial = parts.next().map(str::to_string);
            if mechanism.is_empty() || parts.next().is_some() {
                return Err(Reply::new(
                    501,
                    "5.5.4",
                    "Syntax: AUTH mechanism [initial-response]",
                ));
            }
            Ok(Command::Auth { mechanism, initial })
        }
        _ => Err(Reply::new(500, "5.5.1", "Command unrecognized")),
    }
}

fn parse_bdat(rest: &str) -> Result<Command, Reply> {
    let syntax = || Reply::new(501, "5.5.4", "Syntax: BDAT size [LAST]");
    let mut parts = rest.split(' ');
    let size = parts.next().unwrap_or("");
    if size.is_empty() || size.len() > 19 || !size.bytes().all(|b| b.is_ascii_digit()) {
        return Err(syntax());
    }
    let size: u64 = size.parse().map_err(|_| syntax())?;
    let last = match parts.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(syntax()),
    };
    if parts.next().is_some() {
        return Err(syntax());
    }
    Ok(Command::Bdat { size, last })
}

fn parse_path(rest: &str, prefix: &str, reverse: bool) -> Result<PathWithParams, Reply> {
    let syntax = || {
        Reply::new(
            501,
            "5.5.4",
            if reverse {
                "Syntax: MAIL FROM:<address> [parameters]"
            } else {
                "Syntax: RCPT TO:<address> [parameters]"
            },
        )
    };
    // Compared as bytes: the line may hold UTF-8 anywhere, and slicing a str there could panic.
    let head_ok = rest
        .as_bytes()
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()));
    if !head_ok {
        return Err(syntax());
    }
    // `prefix` is ASCII, so the byte after it starts a character.
    // RFC 5321 has no space after the colon, but many clients send one: tolerate it.
    let rest = rest[prefix.len()..].trim_start_matches(' ');
    let rest = rest.strip_prefix('<').ok_or_else(syntax)?;
    let end = rest.find('>').ok_or_else(syntax)?;
    let mut address = &rest[..end];
    // Source routes (@a,@b:user@c) are obsolete: drop them as RFC 5321 C allows.
    if address.starts_with('@') {
        address = address.split_once(':').map(|(_, a)| a).ok_or_else(syntax)?;
    }
    let after = &rest[end + 1..];
    if !after.is_empty() && !after.starts_with(' ') {
        return Err(syntax());
    }
    if address.is_empty() && !reverse {
        return Err(syntax());
    }
    // RFC 5321 4.5.1: RCPT TO:<Postmaster> without a domain must be accepted.
    if reverse || !address.eq_ignore_ascii_case("postmaster") {
        validate_address(address)?;
    }
    let mut params = Vec::new();
    for token in after.split(' ').filter(|t| !t.is_empty()) {
        let (k, v) = match token.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (token, None),
        };
        let keyword_ok = !k.is_empty()
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && k.as_bytes()[0].is_ascii_alphanumeric();
        // esmtp-value: any printable ASCII but '=' (and UTF-8 with SMTPUTF8, RFC 6531).
        let value_ok = v.is_none_or(|v| {
            !v.is_empty() && v.chars().all(|c| c != '=' && (c > ' ') && c != '\u{7f}')
        });
        if !keyword_ok || !value_ok {
            return Err(Reply::new(501, "5.5.4", "Malformed parameter"));
        }
        params.push((k.to_ascii_uppercase(), v.map(str::to_string)));
    }
    Ok(PathWithParams {
        address: address.to_string(),
        params,
    })
}

fn validate_address(address: &str) -> Result<(), Reply> {
    if address.len() > 320 {
        return Err(Reply::new(501, "5.1.3", "Address too long"));
    }
    if address
        .chars()
        .any(|c| c.is_control() || c == ' ' || c == '<' || c == '>')
    {
        return Err(Reply::new(501, "5.1.3", "Invalid character in address"));
    }
    if address.is_empty() {
        return Ok(());
    }
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Err(Reply::new(501, "5.1.3", "Address must be local@domain"));
    };
    if local.is_empty() || local.len() > 64 || domain.is_empty() || domain.len() > 255 {
        return Err(Reply::new(501, "5.1.3", "Invalid address"));
    }
    if !local_part_ok(local) {
        return Err(Reply::new(501, "5.1.3", "Invalid local part"));
    }
    Ok(())
}

/// The local part is one RFC 5321 quoted-string, or unquoted text without the specials that
/// would make it read differently elsewhere (an `@` in it, left over from a source route say,
/// makes `<@u@d>` a source route to the upstream). Dots are not checked: `a..b` and a trailing
/// dot are common and unambiguous.
fn local_part_ok(local: &str) -> bool {
    let Some(quoted) = local.strip_prefix('"') else {
        return !local.contains(['@', '"', '\\', '(', ')', ',', ';', ':', '[', ']']);
    };
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            // A quoted-pair: the guard takes the next character, whatever it is, as content;
            // a backslash at the very end has none.
            '\\' if chars.next().is_none() => return false,
            // The closing quote must end the local part.
            '"' => return chars.next().is_none(),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mail_with_params() {
        let c = parse(b"MAIL FROM:<a@b.example> SIZE=100 body=8BITMIME").unwrap();
        let Command::Mail(p) = c else { panic!() };
        assert_eq!(p.address, "a@b.example");
        assert_eq!(p.param("SIZE"), Some(Some("100")));
        assert_eq!(p.param("BODY"), Some(Some("8BITMIME")));
        assert_eq!(p.wire(), "<a@b.example> SIZE=100 BODY=8BITMIME");
    }

    #[test]
    fn null_sender_allowed_only_for_mail() {
        assert!(matches!(parse(b"MAIL FROM:<>"), Ok(Command::Mail(_))));
        assert_eq!(parse(b"RCPT TO:<>").unwrap_err().code(), 501);
    }

    #[test]
    fn domainless_postmaster_only_as_a_recipient() {
        assert!(
            matches!(parse(b"RCPT TO:<Postmaster>"), Ok(Command::Rcpt(p)) if p.address == "Postmaster")
        );
        assert!(parse(b"RCPT TO:<webmaster>").is_err());
        assert!(parse(b"MAIL FROM:<postmaster>").is_err());
    }

    #[test]
    fn rejects_hostile_addresses_and_params() {
        for line in [
            &b"MAIL FROM:<a\x00b@c>"[..],
            b"MAIL FROM:<a b@c>",
            b"MAIL FROM:<a@b>SIZE=1",
            b"MAIL FROM:<a@b> SI_ZE=1",
            b"MAIL FROM:<a@b> =1",
            b"MAIL FROM:<a@b> SIZE==1",
            b"RCPT TO:<a@b> NOTIFY=\x01",
            b"RCPT TO:<ab>",
            b"RCPT TO:<@b>",
            b"RCPT TO:a@b",
            b"MAIL TO:<a@b>",
            "MAIL FRO\u{20ac}<a@x>".as_bytes(),
            "RCPT \u{e9}\u{e9}:<a@x>".as_bytes(),
            "MAIL \u{20ac}".as_bytes(),
        ] {
            let err = parse(line).unwrap_err();
            assert!(err.is_permanent(), "{:?}", String::from_utf8_lossy(line));
        }
    }

    /// A mailbox must mean the same to us and to the upstream (SECURITY.md I12): a local part
    /// with an unquoted `@` (left over after a source route, say) or another special is
    /// ambiguous, and its wire form `<@u@d>` would read as a source route upstream. Found by the
    /// command fuzz target (the wire form did not parse back).
    #[test]
    fn ambiguous_local_parts_are_refused() {
        for line in [
            &b"MAIL FROM:<@r1,@r2:@u@d.example>"[..],
            b"RCPT TO:<@u@d.example>",
            b"RCPT TO:<a@b@c.example>",
            b"RCPT TO:<a\\@b@c.example>",
            b"RCPT TO:<\"a\"b\"@c.example>",
            b"RCPT TO:<a\"b@c.example>",
            b"RCPT TO:<\"unterminated@c.example>",
            b"RCPT TO:<a,b@c.example>",
            b"RCPT TO:<a:b@c.example>",
            b"RCPT TO:<a;b@c.example>",
            b"RCPT TO:<(comment)a@c.example>",
            b"RCPT TO:<[a]@c.example>",
        ] {
            let err = parse(line).unwrap_err();
            assert_eq!(err.code(), 501, "{:?}", String::from_utf8_lossy(line));
        }
        for (line, address) in [
            (&b"RCPT TO:<\"a@b\"@c.example>"[..], "\"a@b\"@c.example"),
            (b"RCPT TO:<\"a\\\"c\"@c.example>", "\"a\\\"c\"@c.example"),
            (b"RCPT TO:<@r1,@r2:u.v+w@d.example>", "u.v+w@d.example"),
            (b"RCPT TO:<a..b.@d.example>", "a..b.@d.example"),
        ] {
            let Ok(Command::Rcpt(p)) = parse(line) else {
                panic!("{:?}", String::from_utf8_lossy(line));
            };
            assert_eq!(p.address, address);
            let again = format!("RCPT TO:{}", p.wire());
            assert_eq!(parse(again.as_bytes()), Ok(Command::Rcpt(p)));
        }
    }

    #[test]
    fn bdat_sizes() {
        assert_eq!(
            parse(b"BDAT 10 LAST").unwrap(),
            Command::Bdat {
                size: 10,
                last: true
            }
        );
        assert_eq!(
            parse(b"BDAT 0").unwrap(),
            Command::Bdat {
                size: 0,
                last: false
            }
        );
        assert!(parse(b"BDAT -1").is_err());
        assert!(parse(b"BDAT 100000000000000000000").is_err());
        assert!(parse(b"BDAT 10 FIRST").is_err());
    }

    #[test]
    fn verbs_are_case_insensitive_and_unknown_is_500() {
        assert_eq!(parse(b"quit").unwrap(), Command::Quit);
        assert_eq!(
            parse(b"ehlo x.example").unwrap(),
            Command::Ehlo("x.example".into())
        );
        assert_eq!(parse(b"FOO").unwrap_err().code(), 500);
        assert_eq!(parse(b"DATA x").unwrap_err().code(), 501);
    }
}
