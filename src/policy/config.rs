//! The `[policy]` section and its `[[policy.rule]]` entries, validated so that no two rules can
//! claim the same recipient with the same specificity.

use std::fmt;

use serde::Deserialize;

use crate::address::{normalise_domain, Address};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncryptMode {
    /// No usable key: the recipient is refused at RCPT (550 5.7.1).
    Required,
    /// Encrypt when a usable key exists, otherwise send as is.
    Opportunistic,
    /// Never encrypt.
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// S/MIME when a usable certificate exists, else OpenPGP.
    Auto,
    Smime,
    Openpgp,
}

/// S/MIME content encryption. AES-256-CBC is what every client (gpgsm 2.2 included) reads;
/// AES-256-GCM (AuthEnvelopedData) only where every recipient is known to support it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SmimeCipher {
    Aes256Cbc,
    Aes256Gcm,
}

/// S/MIME RSA key transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SmimeKeyTransport {
    RsaPkcs1v15,
    RsaOaep,
}

/// `sign = true | false | "required"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignMode {
    Off,
    /// Sign when the sender has an identity and is entitled to use it.
    WhenPossible,
    /// Refuse the message when it cannot be signed.
    Required,
}

impl<'de> Deserialize<'de> for SignMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(SignMode::WhenPossible),
            Raw::Bool(false) => Ok(SignMode::Off),
            Raw::Text(t) if t == "required" => Ok(SignMode::Required),
            Raw::Text(t) => Err(serde::de::Error::custom(format!(
                "sign must be true, false or \"required\", not {t:?}"
            ))),
        }
    }
}

/// What a rule matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RuleMatch {
    /// `local@domain` (local part compared case-insensitively, domain lower-cased).
    Address(String),
    /// `domain`: that domain only.
    Domain(String),
    /// `*.domain`: the domain and all its subdomains.
    Subdomains(String),
}

impl RuleMatch {
    /// Parses a rule's `match`. Addresses and domains are normalised exactly as recipients are
    /// ([`Address`]: IDNA A-labels, lower case, trailing dot removed), so a rule written with a
    /// U-label or in capitals matches every spelling of the same mailbox.
    pub fn parse(text: &str) -> Result<RuleMatch, String> {
        let t = text.trim();
        if t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("invalid match {text:?}"));
        }
        let domain = |d: &str, what: &str| {
            if d.contains(['@', '*']) || d.ends_with('.') {
                return Err(format!("invalid {what} {text:?}"));
            }
            normalise_domain(d).map_err(|_| format!("invalid {what} {text:?}"))
        };
        if t.contains('@') {
            let address = Address::parse(t).map_err(|_| format!("invalid address {text:?}"))?;
            domain(address.domain(), "address")?;
            return Ok(RuleMatch::Address(address.key().to_string()));
        }
        if let Some(rest) = t.strip_prefix("*.") {
            return Ok(RuleMatch::Subdomains(domain(rest, "wildcard domain")?));
        }
        Ok(RuleMatch::Domain(domain(t, "domain")?))
    }

    /// Specificity of a match for `address` (higher wins), or None.
    pub(crate) fn specificity(&self, address: &Address) -> Option<usize> {
        let domain = address.domain();
        match self {
            RuleMatch::Address(a) => (a == address.key()).then_some(usize::MAX),
            RuleMatch::Domain(d) => (d == domain).then_some(usize::MAX - 1),
            RuleMatch::Subdomains(d) => {
                let hit = domain == d
                    || domain
                        .strip_suffix(d.as_str())
                        .is_some_and(|head| head.ends_with('.'));
                hit.then_some(d.len())
            }
        }
    }
}

impl fmt::Display for RuleMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleMatch::Address(a) => f.write_str(a),
            RuleMatch::Domain(d) => f.write_str(d),
            RuleMatch::Subdomains(d) => write!(f, "*.{d}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub matches: RuleMatch,
    pub encrypt: Option<EncryptMode>,
    pub format: Option<Format>,
    pub sign: Option<SignMode>,
    /// Position in the file (0-based), for messages.
    pub index: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConfig {
    pub encrypt: EncryptMode,
    pub sign: SignMode,
    pub format: Format,
    pub hide_subject: bool,
    pub encrypt_to_self: bool,
    /// A subject tag that raises a message to "required" (removed before sending).
    pub subject_trigger: Option<String>,
    /// Honour `X-Sealgate-Encrypt: required` (the header never leaves).
    pub header_trigger: bool,
    /// Add an `X-Sealgate-Result` field (what was done to this copy) to every copy that
    /// sealgate changed, for internal routing and audits. Off by default.
    pub result_header: bool,
    pub smime_cipher: SmimeCipher,
    pub smime_key_transport: SmimeKeyTransport,
    /// Opaque signed-data (application/pkcs7-mime) instead of multipart/signed.
    pub smime_opaque_signing: bool,
    /// Autocrypt header with the sender's OpenPGP key on OpenPGP-signed mail.
    pub autocrypt: bool,
    pub rules: Vec<Rule>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            encrypt: EncryptMode::Opportunistic,
            sign: SignMode::WhenPossible,
            format: Format::Auto,
            hide_subject: false,
            encrypt_to_self: false,
            subject_trigger: None,
            header_trigger: true,
            result_header: false,
            smime_cipher: SmimeCipher::Aes256Cbc,
            smime_key_transport: SmimeKeyTransport::RsaPkcs1v15,
            smime_opaque_signing: false,
            autocrypt: false,
            rules: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct PolicyError {
    pub location: String,
    pub message: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicy {
    encrypt: Option<EncryptMode>,
    sign: Option<SignMode>,
    format: Option<Format>,
    hide_subject: Option<bool>,
    encrypt_to_self: Option<bool>,
    subject_trigger: Option<String>,
    header_trigger: Option<bool>,
    result_header: Option<bool>,
    smime_cipher: Option<SmimeCipher>,
    smime_key_transport: Option<SmimeKeyTransport>,
    smime_opaque_signing: Option<bool>,
    autocrypt: Option<bool>,
    #[serde(default)]
    rule: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(rename = "match")]
    matches: String,
    encrypt: Option<EncryptMode>,
    format: Option<Format>,
    sign: Option<SignMode>,
}

impl PolicyConfig {
    /// Validates the raw section; every problem is reported with its location.
    pub(crate) fn from_raw(raw: RawPolicy) -> Result<PolicyConfig, Vec<PolicyError>> {
        let mut errors = Vec::new();
        let mut rules: Vec<Rule> = Vec::new();
        for (index, r) in raw.rule.into_iter().enumerate() {
            let location = format!("policy.rule[{index}]");
            match RuleMatch::parse(&r.matches) {
                Err(message) => errors.push(PolicyError {
                    location: format!("{location}.match"),
                    message,
                }),
                Ok(matches) => {
                    if let Some(other) = rules.iter().find(|o| o.matches == matches) {
                        errors.push(PolicyError {
                            location,
                            message: format!(
                                "match {matches} is already used by policy.rule[{}]: ambiguous",
                                other.index
                            ),
                        });
                        continue;
                    }
                    if r.encrypt.is_none() && r.format.is_none() && r.sign.is_none() {
                        errors.push(PolicyError {
                            location,
                            message: "a rule must set encrypt, format or sign".into(),
                        });
                        continue;
                    }
                    rules.push(Rule {
                        matches,
                        encrypt: r.encrypt,
                        format: r.format,
                        sign: r.sign,
                        index,
                    });
                }
            }
        }
        if let Some(tag) = &raw.subject_trigger {
            if tag.trim().is_empty() {
                errors.push(PolicyError {
                    location: "policy.subject_trigger".into(),
                    message: "must not be empty".into(),
                });
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let d = PolicyConfig::default();
        Ok(PolicyConfig {
            encrypt: raw.encrypt.unwrap_or(d.encrypt),
            sign: raw.sign.unwrap_or(d.sign),
            format: raw.format.unwrap_or(d.format),
            hide_subject: raw.hide_subject.unwrap_or(d.hide_subject),
            encrypt_to_self: raw.encrypt_to_self.unwrap_or(d.encrypt_to_self),
            subject_trigger: raw.subject_trigger,
            header_trigger: raw.header_trigger.unwrap_or(d.header_trigger),
            result_header: raw.result_header.unwrap_or(d.result_header),
            smime_cipher: raw.smime_cipher.unwrap_or(d.smime_cipher),
            smime_key_transport: raw.smime_key_transport.unwrap_or(d.smime_key_transport),
            smime_opaque_signing: raw.smime_opaque_signing.unwrap_or(d.smime_opaque_signing),
            autocrypt: raw.autocrypt.unwrap_or(d.autocrypt),
            rules,
        })
    }

    /// The most specific rule for `address`, if any.
    pub fn rule_for(&self, address: &Address) -> Option<&Rule> {
        self.rules
            .iter()
            .filter_map(|r| r.matches.specificity(address).map(|s| (s, r)))
            .max_by_key(|(s, _)| *s)
            .map(|(_, r)| r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PolicyConfig, Vec<PolicyError>> {
        let raw: RawPolicy = toml::from_str(text).map_err(|e| {
            vec![PolicyError {
                location: "toml".into(),
                message: e.to_string(),
            }]
        })?;
        PolicyConfig::from_raw(raw)
    }

    #[test]
    fn defaults_and_contract_keys() {
        let p = parse("encrypt = \"required\"\nsign = true\nformat = \"smime\"\nhide_subject = true\nencrypt_to_self = true\n").unwrap();
        assert_eq!(p.encrypt, EncryptMode::Required);
        assert_eq!(p.sign, SignMode::WhenPossible);
        assert_eq!(p.format, Format::Smime);
        assert!(p.hide_subject && p.encrypt_to_self);
        let p = parse("").unwrap();
        assert_eq!(p, PolicyConfig::default());
        assert_eq!(
            parse("sign = \"required\"").unwrap().sign,
            SignMode::Required
        );
        assert!(parse("sign = \"maybe\"").is_err());
        assert!(parse("encrypt = \"sometimes\"").is_err());
    }

    #[test]
    fn most_specific_rule_wins() {
        let p = parse(
            r#"
            [[rule]]
            match = "*.example"
            encrypt = "opportunistic"
            [[rule]]
            match = "*.partner.example"
            encrypt = "required"
            [[rule]]
            match = "partner.example"
            format = "smime"
            [[rule]]
            match = "Boss@Partner.Example"
            encrypt = "off"
            "#,
        )
        .unwrap();
        let idx = |a: &str| p.rule_for(&Address::parse(a).unwrap()).map(|r| r.index);
        assert_eq!(idx("boss@PARTNER.example"), Some(3));
        assert_eq!(
            idx("BOSS@partner.example"),
            Some(3),
            "local part case-insensitive"
        );
        assert_eq!(idx("anna@partner.example"), Some(2));
        assert_eq!(idx("anna@eu.partner.example"), Some(1));
        assert_eq!(idx("anna@other.example"), Some(0));
        assert_eq!(idx("anna@example"), Some(0), "*.d matches d itself");
        assert_eq!(
            idx("anna@notpartner.example"),
            Some(0),
            "suffix must be on a label boundary"
        );
        assert_eq!(idx("anna@example.org"), None);
    }

    #[test]
    fn ambiguity_and_bad_matches_are_errors_with_locations() {
        let errs = parse(
            r#"
            [[rule]]
            match = "partner.example"
            encrypt = "required"
            [[rule]]
            match = "PARTNER.example"
            encrypt = "off"
            [[rule]]
            match = "bad domain"
            encrypt = "off"
            [[rule]]
            match = "*.x..y"
            encrypt = "off"
            [[rule]]
            match = "x.example"
            "#,
        )
        .unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(errs.len(), 4, "{text:?}");
        assert!(text[0].starts_with("policy.rule[1]") && text[0].contains("ambiguous"));
        assert!(text[1].starts_with("policy.rule[2].match"));
        assert!(text[2].starts_with("policy.rule[3].match"));
        assert!(text[3].starts_with("policy.rule[4]") && text[3].contains("must set"));
    }
}
