//! The one address normalisation rule, used for indexing keys and for every lookup.
//!
//! An address `local@domain` is normalised as follows:
//!
//! 1. Surrounding white space and one pair of angle brackets (`<a@b>`) are removed.
//! 2. It is split at the **last** `@`; both sides must be non-empty.
//! 3. The **domain** is converted with IDNA (UTS #46, STD3 rules) to A-labels, which also
//!    lower-cases it; one trailing dot is dropped. `Bücher.Example` becomes
//!    `xn--bcher-kva.example`.
//! 4. The **local part is kept as written** (it is what [`Address::as_str`] shows), but it is
//!    *matched* case-insensitively: the match key ([`Address::key`]) uses its Unicode lower-case
//!    form. So `Alice@Example.ORG` and `alice@example.org` find the same keys, while the key still
//!    displays the spelling that was in the certificate.
//!
//! Control characters, white space and a second layer of brackets are refused anywhere, so an
//! address can never smuggle a separator into an index key.

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
        if s.chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '<' || c == '>')
        {
            return Err(AddressError::ForbiddenChar(input.to_string()));
        }
        let (local, domain) = s
            .rsplit_once('@')
            .ok_or_else(|| AddressError::Syntax(input.to_string()))?;
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        if local.is_empty() || domain.is_empty() {
            return Err(AddressError::Syntax(input.to_string()));
        }
        let ascii = idna::domain_to_ascii_cow(domain.as_bytes(), idna::AsciiDenyList::STD3)
            .map_err(|_| AddressError::Domain(input.to_string()))?;
        if ascii.is_empty() || ascii.contains('@') {
            return Err(AddressError::Domain(input.to_string()));
        }
        let display = format!("{local}@{ascii}");
        let key = format!("{}@{ascii}", local.to_lowercase());
        Ok(Address { display, key })
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
    fn last_at_splits() {
        let a = Address::parse("\"a@b\"@x.test").unwrap();
        assert_eq!(a.as_str(), "\"a@b\"@x.test");
    }
}
