//! Who the client is, told to the upstream (SECURITY.md I13): XCLIENT (the upstream takes the
//! client's address, name, HELO and login for its own relay and abuse checks) or XFORWARD (the
//! upstream logs them). Pure functions: the command lines, xtext (RFC 1891 section 5), and what
//! the upstream's EHLO keyword offers.

use std::net::{IpAddr, SocketAddr};

/// How the client's identity reaches the upstream (`[upstream] forward_client`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardClient {
    /// XCLIENT after the upstream's EHLO; refused or not offered: 451 4.7.0, nothing sent.
    #[default]
    Xclient,
    /// XFORWARD before every MAIL; refused or not offered: 451 4.7.0, nothing sent.
    Xforward,
    /// The upstream sees sealgate's address (it must not trust it for relaying).
    None,
}

/// What is known of a client connection, after any PROXY header.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClientIdentity {
    /// The client's real address and port.
    pub peer: SocketAddr,
    /// The address and port the client connected to.
    pub local: SocketAddr,
    /// The name in the client's EHLO or HELO.
    pub helo: Option<String>,
    /// EHLO (true) or HELO (false).
    pub esmtp: bool,
    /// The login the upstream accepted in AUTH passed through us.
    pub login: Option<String>,
}

/// The longest command line we send (RFC 5321 4.5.3.1.4, XCLIENT_README "Note 1").
pub const MAX_LINE: usize = 512;

/// RFC 1891 xtext: printable ASCII except "+" and "=" as is, everything else "+HH". A value
/// so encoded has no space, CR, LF or "=": a client's HELO cannot add attributes or commands.
pub fn xtext(value: &[u8]) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// Postfix's form of an address: IPv4 dotted, IPv6 with the "IPV6:" prefix (not in []).
fn addr_value(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => format!("IPV6:{v6}"),
        },
    }
}

const UNAVAILABLE: &str = "[UNAVAILABLE]";

/// Why the identity cannot be forwarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the upstream does not offer {0}")]
    NotOffered(&'static str),
    #[error("the upstream does not accept the {attribute} attribute of {command}")]
    AttributeMissing {
        command: &'static str,
        attribute: &'static str,
    },
    #[error("the {0} command would exceed 512 octets")]
    TooLong(&'static str),
}

impl ClientIdentity {
    /// The name we use in our EHLO/HELO after XCLIENT (the upstream takes it as the client's
    /// HELO): the client's own when it is printable ASCII, else the client's address literal
    /// (RFC 5321 4.1.3), never bytes that could change the command.
    pub fn helo_for_upstream(&self) -> String {
        match &self.helo {
            Some(h) if !h.is_empty() && h.bytes().all(|b| (b'!'..=b'~').contains(&b)) => h.clone(),
            _ => match self.peer.ip() {
                IpAddr::V4(v4) => format!("[{v4}]"),
                IpAddr::V6(v6) => format!("[IPv6:{v6}]"),
            },
        }
    }

    fn helo_value(&self) -> String {
        match &self.helo {
            Some(h) => xtext(h.as_bytes()),
            None => UNAVAILABLE.into(),
        }
    }

    /// `XCLIENT ADDR=... PORT=... NAME=[UNAVAILABLE] HELO=... PROTO=... [LOGIN=...]
    /// DESTADDR=... DESTPORT=...`, with the attributes the upstream offers (ADDR must be).
    /// Reverse DNS is not looked up: NAME is `[UNAVAILABLE]`. A HELO too long for one line
    /// is sent as `[UNAVAILABLE]`; a second XCLIENT is not an option (after the first the
    /// upstream sees the client's address, which it does not let send XCLIENT).
    pub fn xclient(&self, offered: &[String]) -> Result<String, IdentityError> {
        let has = |a: &str| offered.iter().any(|o| o == a);
        if !has("ADDR") {
            return Err(IdentityError::AttributeMissing {
                command: "XCLIENT",
                attribute: "ADDR",
            });
        }
        if self.login.is_some() && !has("LOGIN") {
            // Without it the upstream would treat an authenticated client as anonymous (or,
            // worse, keep our own AUTH): refuse rather than guess.
            return Err(IdentityError::AttributeMissing {
                command: "XCLIENT",
                attribute: "LOGIN",
            });
        }
        let build = |helo: String| {
            let mut attrs = vec![format!(
                "ADDR={}",
                xtext(addr_value(self.peer.ip()).as_bytes())
            )];
            let mut push = |name: &str, value: String| {
                if has(name) {
                    attrs.push(format!("{name}={value}"));
                }
            };
            push("PORT", self.peer.port().to_string());
            push("NAME", UNAVAILABLE.into());
            push("HELO", helo);
            push("PROTO", if self.esmtp { "ESMTP" } else { "SMTP" }.into());
            if let Some(login) = &self.login {
                push("LOGIN", xtext(login.as_bytes()));
            }
            push("DESTADDR", xtext(addr_value(self.local.ip()).as_bytes()));
            push("DESTPORT", self.local.port().to_string());
            format!("XCLIENT {}", attrs.join(" "))
        };
        let line = build(self.helo_value());
        if line.len() + 2 <= MAX_LINE {
            return Ok(line);
        }
        let line = build(UNAVAILABLE.into());
        if line.len() + 2 <= MAX_LINE {
            return Ok(line);
        }
        Err(IdentityError::TooLong("XCLIENT"))
    }

    /// `XFORWARD ADDR=... NAME=[UNAVAILABLE] PORT=... HELO=... PROTO=... IDENT=... SOURCE=REMOTE`
    /// with the attributes the upstream offers (ADDR must be). `ident` identifies the session
    /// in our log (sealgate keeps no queue).
    pub fn xforward(&self, offered: &[String], ident: &str) -> Result<String, IdentityError> {
        let has = |a: &str| offered.iter().any(|o| o == a);
        if !has("ADDR") {
            return Err(IdentityError::AttributeMissing {
                command: "XFORWARD",
                attribute: "ADDR",
            });
        }
        let build = |helo: String| {
            let mut attrs = vec![format!(
                "ADDR={}",
                xtext(addr_value(self.peer.ip()).as_bytes())
            )];
            let mut push = |name: &str, value: String| {
                if has(name) {
                    attrs.push(format!("{name}={value}"));
                }
            };
            push("NAME", UNAVAILABLE.into());
            push("PORT", self.peer.port().to_string());
            push("HELO", helo);
            push("PROTO", if self.esmtp { "ESMTP" } else { "SMTP" }.into());
            push("IDENT", xtext(ident.as_bytes()));
            push("SOURCE", "REMOTE".into());
            format!("XFORWARD {}", attrs.join(" "))
        };
        let line = build(self.helo_value());
        if line.len() + 2 <= MAX_LINE {
            return Ok(line);
        }
        let line = build(UNAVAILABLE.into());
        if line.len() + 2 <= MAX_LINE {
            return Ok(line);
        }
        Err(IdentityError::TooLong("XFORWARD"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(helo: &str) -> ClientIdentity {
        ClientIdentity {
            peer: "192.0.2.7:4711".parse().unwrap(),
            local: "127.0.0.1:25".parse().unwrap(),
            helo: Some(helo.into()),
            esmtp: true,
            login: None,
        }
    }

    fn all(list: &str) -> Vec<String> {
        list.split(' ').map(String::from).collect()
    }

    #[test]
    fn xtext_encodes_everything_that_could_change_the_command() {
        assert_eq!(xtext(b"mx.example"), "mx.example");
        assert_eq!(xtext(b"a+b=c d"), "a+2Bb+3Dc+20d");
        assert_eq!(xtext(b"x\r\nRCPT"), "x+0D+0ARCPT");
        assert_eq!(xtext("é".as_bytes()), "+C3+A9");
        assert_eq!(xtext(b""), "");
        // Every byte: the output is printable ASCII without space or "=", and decodes back.
        let every: Vec<u8> = (0..=255u8).collect();
        let enc = xtext(&every);
        assert!(enc.bytes().all(|b| (b'!'..=b'~').contains(&b) && b != b'='));
        let mut dec = Vec::new();
        let mut it = enc.bytes();
        while let Some(b) = it.next() {
            if b == b'+' {
                let h: String = [it.next().unwrap(), it.next().unwrap()]
                    .iter()
                    .map(|&c| c as char)
                    .collect();
                dec.push(u8::from_str_radix(&h, 16).unwrap());
            } else {
                dec.push(b);
            }
        }
        assert_eq!(dec, every);
    }

    #[test]
    fn xclient_line_as_postfix_reads_it() {
        let offered = all("NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT");
        assert_eq!(
            id("client.example").xclient(&offered).unwrap(),
            "XCLIENT ADDR=192.0.2.7 PORT=4711 NAME=[UNAVAILABLE] HELO=client.example PROTO=ESMTP DESTADDR=127.0.0.1 DESTPORT=25"
        );
        let mut v6 = id("h");
        v6.peer = "[2001:db8::1]:25".parse().unwrap();
        v6.esmtp = false;
        v6.login = Some("alice@example.org".into());
        assert_eq!(
            v6.xclient(&offered).unwrap(),
            "XCLIENT ADDR=IPV6:2001:db8::1 PORT=25 NAME=[UNAVAILABLE] HELO=h PROTO=SMTP LOGIN=alice@example.org DESTADDR=127.0.0.1 DESTPORT=25"
        );
        // Only what is offered; ADDR is a must, and so is LOGIN for an authenticated client.
        assert_eq!(
            id("h").xclient(&all("ADDR HELO")).unwrap(),
            "XCLIENT ADDR=192.0.2.7 HELO=h"
        );
        assert!(id("h").xclient(&all("NAME HELO")).is_err());
        assert!(v6.xclient(&all("ADDR HELO")).is_err());
    }

    #[test]
    fn a_hostile_helo_cannot_add_attributes_and_the_line_stays_short() {
        let offered = all("NAME ADDR PROTO HELO PORT LOGIN DESTADDR DESTPORT");
        let line = id("x LOGIN=root ADDR=10.0.0.1").xclient(&offered).unwrap();
        assert_eq!(line.matches("ADDR=").count(), 2, "{line}"); // ADDR and DESTADDR
        assert!(!line.contains(" LOGIN="), "{line}");
        assert!(
            line.contains("HELO=x+20LOGIN+3Droot+20ADDR+3D10.0.0.1"),
            "{line}"
        );
        let long = id(&"é".repeat(250)).xclient(&offered).unwrap();
        assert!(long.len() + 2 <= MAX_LINE);
        assert!(long.contains("HELO=[UNAVAILABLE]"), "{long}");
        let mut huge = id("h");
        huge.login = Some("l".repeat(600));
        assert_eq!(
            huge.xclient(&offered),
            Err(IdentityError::TooLong("XCLIENT"))
        );
    }

    #[test]
    fn xforward_line() {
        let offered = all("NAME ADDR PROTO HELO SOURCE PORT IDENT");
        assert_eq!(
            id("c.example").xforward(&offered, "1a2b000003").unwrap(),
            "XFORWARD ADDR=192.0.2.7 NAME=[UNAVAILABLE] PORT=4711 HELO=c.example PROTO=ESMTP IDENT=1a2b000003 SOURCE=REMOTE"
        );
        assert!(id("c").xforward(&all("NAME HELO"), "x").is_err());
    }

    #[test]
    fn helo_for_upstream_never_carries_what_the_command_cannot() {
        assert_eq!(id("mx.example").helo_for_upstream(), "mx.example");
        assert_eq!(id("[192.0.2.7]").helo_for_upstream(), "[192.0.2.7]");
        assert_eq!(id("é.example").helo_for_upstream(), "[192.0.2.7]");
        let mut none = id("x");
        none.helo = None;
        none.peer = "[2001:db8::2]:1".parse().unwrap();
        assert_eq!(none.helo_for_upstream(), "[IPv6:2001:db8::2]");
    }
}
