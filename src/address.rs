//! The one mail address type: every comparison of addresses in sealgate (policy rules, key
//! lookups, Bcc planning, signing entitlement, explain, the log) goes through it, so no
//! spelling of a mailbox escapes a rule (SECURITY.md I12).
//!
//! An address `local@domain` is parsed once (RCPT, MAIL, a header mailbox, a certificate's
//! address) and normalised as follows:
//!
//! 1. Surrounding white space and one pair of angle brackets (`<a@b>`) are removed.
//! 2. It is split at the **last** `@`; both sides must be non-empty.
//! 3. The **domain** is converted with IDNA (UTS #46, STD3 rules) to A-labels, which also
//!    lower-cases it; one trailing dot is dropped (`bob@partner.example.` is the mailbox MTAs
//!    deliver to as `bob@partner.example`). `Bücher.Example` becomes `xn--bcher-kva.example`.
//! 4. A **quoted local part** whose content is a plain dot-atom is the same mailbox as the
//!    dot-atom (RFC 5321 4.1.2): `"bob"@x` is `bob@x`, `"b\ob"@x` is `bob@x`. A quoted local part
//!    that needs its quotes stays quoted, as written.
//! 5. The **local part is kept as written** otherwise (it is what [`Address::as_str`] shows and
//!    what the upstream receives), but it is *matched* case-insensitively: the match key
//!    ([`Address::key`]) uses its Unicode lower-case form. So `Alice@Example.ORG` and
//!    `alice@example.org` find the same keys and the same rules.
//!
//! Control characters, white space and a second layer of brackets are refused anywhere outside
//! a quoted local part, so an address can never smuggle a separator into an index key.

use std::fmt;

/// Why a string is not an address we can index or look up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// No `@`, or nothing before or after it.
    #[error("not an address of the form local@domain: {0:?}")]
    Syntax(String),
    /// A control character, white space or angle bracket inside the address.
    #[error("address contains a forbidden character: {0:?}")]
    ForbiddenChar(String),
    /// The domain is not a valid (internationalised) domain name.
    #[error("invalid domain in address {0:?}")]
    Domain(String),
}

/// A normalised mail address (see the module documentation for the rule).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    display: String,
    key: String,
}

impl Address {
    /// Normalises `input` by the module's rule.
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        let mut s = input.trim();
        if let Some(inner) = s.strip_prefix('<').and_then(|r| r.strip_suffix('>')) {
            s = inner;
        }
        // RFC 5321 4.5.1: "Postmaster" without a domain is a valid recipient (the server's
        // own postmaster). It has no domain: no domain rule matches it, no key names it.
        if s.eq_ignore_ascii_case("postmaster") {
            return Ok(Address {
                display: s.to_string(),
                key: "postmaster".into(),
            });
        }
        let (local, domain) = s
            .rsplit_once('@')
            .ok_or_else(|| AddressError::Syntax(input.to_string()))?;
        let local =
            local_part(local).ok_or_else(|| AddressError::ForbiddenChar(input.to_string()))?;
        if domain
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '<' || c == '>')
        {
            return Err(AddressError::ForbiddenChar(input.to_string()));
        }
        if local.is_empty() || domain.is_empty() {
            return Err(AddressError::Syntax(input.to_string()));
        }
        let domain =
            normalise_domain(domain).map_err(|_| AddressError::Domain(input.to_string()))?;
        let display = format!("{local}@{domain}");
        let key = format!("{}@{domain}", local.to_lowercase());
        Ok(Address { display, key })
    }

    /// The domain part (lower-case A-labels).
    pub fn domain(&self) -> &str {
        self.display.rsplit_once('@').map_or("", |(_, d)| d)
    }

    /// The address as shown: local part as written, domain in lower-case A-labels.
    pub fn as_str(&self) -> &str {
        &self.display
    }

    /// The match key: lower-cased local part and normalised domain. Two addresses are the
    /// same mailbox for sealgate exactly when their keys are equal.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// True when both addresses normalise to the same match key.
    pub fn matches(&self, other: &Address) -> bool {
        self.key == other.key
    }
}

/// A domain as every comparison sees it: IDNA A-labels (lower case), one trailing dot removed.
/// An error when it is not a valid (internationalised) domain name.
pub fn normalise_domain(domain: &str) -> Result<String, AddressError> {
    let invalid = || AddressError::Domain(domain.to_string());
    let trimmed = domain.strip_suffix('.').unwrap_or(domain);
    if trimmed.is_empty() {
        return Err(invalid());
    }
    let ascii = idna::domain_to_ascii_cow(trimmed.as_bytes(), idna::AsciiDenyList::STD3)
        .map_err(|_| invalid())?;
    if ascii.is_empty() || ascii.contains('@') || ascii.starts_with('.') || ascii.contains("..") {
        return Err(invalid());
    }
    Ok(ascii.into_owned())
}

/// The local part as compared: a quoted string whose content is a dot-atom loses its quotes
/// (and its quoted-pairs); any other quoted string is kept as written. `None` when it holds
/// a character no local part may hold (controls; white space, brackets outside quotes).
fn local_part(local: &str) -> Option<String> {
    if let Some(quoted) = local
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .filter(|_| local.len() >= 2)
    {
        let mut content = String::with_capacity(quoted.len());
        let mut chars = quoted.chars();
        while let Some(c) = chars.next() {
            let c = if c == '\\' { chars.next()? } else { c };
            if c.is_control() {
                return None;
            }
            content.push(c);
        }
        return Some(if is_dot_atom(&content) {
            content
        } else {
            local.to_string()
        });
    }
    let forbidden = |c: char| c.is_control() || c.is_whitespace() || c == '<' || c == '>';
    (!local.chars().any(forbidden)).then(|| local.to_string())
}

/// RFC 5322 dot-atom-text (with RFC 6531's UTF-8 characters): atoms separated by single dots.
fn is_dot_atom(s: &str) -> bool {
    let atext = |c: char| {
        c.is_ascii_alphanumeric()
            || "!#$%&'*+-/=?^_`{|}~".contains(c)
            || (!c.is_ascii() && !c.is_control() && !c.is_whitespace())
    };
    !s.is_empty()
        && s.split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(atext))
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({:?})", self.display)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_lowercased_local_kept_but_matched_case_insensitively() {
        let a = Address::parse("Alice@Example.ORG").unwrap();
        assert_eq!(a.as_str(), "Alice@example.org");
        assert_eq!(a.key(), "alice@example.org");
        assert!(a.matches(&Address::parse("alice@EXAMPLE.org.").unwrap()));
    }

    #[test]
    fn idna_to_a_labels() {
        let a = Address::parse("<bob@Bücher.Example>").unwrap();
        assert_eq!(a.as_str(), "bob@xn--bcher-kva.example");
        let b = Address::parse("bob@xn--bcher-kva.example").unwrap();
        assert!(a.matches(&b));
    }

    #[test]
    fn refuses_garbage() {
        for bad in [
            "",
            "alice",
            "@x.test",
            "alice@",
            "a b@x.test",
            "a\r\n@x.test",
            "a@x\0.test",
            "<<a@x.test>>",
            "a@exa mple.org",
            "a@bad_domain!.org",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn quoted_local_parts_reduced_when_equivalent() {
        let plain = Address::parse("bob@partner.example").unwrap();
        for spelling in [
            "\"bob\"@partner.example",
            "\"b\\ob\"@partner.example",
            "BOB@partner.example.",
            "<Bob@PARTNER.Example>",
        ] {
            assert!(
                Address::parse(spelling).unwrap().matches(&plain),
                "{spelling}"
            );
        }
        assert_eq!(
            Address::parse("\"bob\"@partner.example").unwrap().as_str(),
            "bob@partner.example"
        );
        // Quotes that are needed stay.
        let spaced = Address::parse("\"bob smith\"@x.test").unwrap();
        assert_eq!(spaced.as_str(), "\"bob smith\"@x.test");
        assert!(!spaced.matches(&Address::parse("bobsmith@x.test").unwrap()));
        assert!(Address::parse("\"a\rb\"@x.test").is_err());
        assert!(Address::parse("\"a.\"@x.test").unwrap().as_str() == "\"a.\"@x.test");
        assert!(Address::parse("a@x..test").is_err());
    }

    #[test]
    fn domainless_postmaster_is_an_address_without_domain() {
        let p = Address::parse("<Postmaster>").unwrap();
        assert_eq!(
            (p.as_str(), p.key(), p.domain()),
            ("Postmaster", "postmaster", "")
        );
        assert!(!p.matches(&Address::parse("postmaster@x.test").unwrap()));
        assert!(Address::parse("webmaster").is_err());
    }

    #[test]
    fn last_at_splits() {
        let a = Address::parse("\"a@b\"@x.test").unwrap();
        assert_eq!(a.as_str(), "\"a@b\"@x.test");
    }
}
