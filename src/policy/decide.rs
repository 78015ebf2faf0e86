//! The decisions themselves: one per recipient (at RCPT time), one per message for signing.

use super::config::{EncryptMode, Format, PolicyConfig, SignMode};
use crate::address::Address;

/// What the key store found usable for one recipient, now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyAvailability {
    pub smime: bool,
    pub openpgp: bool,
    /// Why keys that exist are not usable (expired, wrong usage...), for explanations.
    pub unusable: Vec<String>,
}

/// How one recipient's copy is sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Smime,
    Openpgp,
    /// Sent as is (opportunistic without a key, or encryption off).
    Plain,
    /// Refused at RCPT: encryption required and no usable key.
    Refuse,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientDecision {
    pub address: String,
    /// The rule that matched (its index in the file), or None for the global policy.
    pub rule: Option<usize>,
    pub rule_match: Option<String>,
    pub encrypt: EncryptMode,
    pub format: Format,
    pub outcome: Outcome,
    pub reason: String,
}

/// Decides how `address` is treated. `raised` is true when the message asked for encryption
/// (subject or header trigger): it makes encryption required whatever the rule says.
pub fn decide_recipient(
    policy: &PolicyConfig,
    address: &Address,
    keys: &KeyAvailability,
    raised: bool,
) -> RecipientDecision {
    let rule = policy.rule_for(address);
    let mut encrypt = rule.and_then(|r| r.encrypt).unwrap_or(policy.encrypt);
    if raised {
        encrypt = EncryptMode::Required;
    }
    let format = rule.and_then(|r| r.format).unwrap_or(policy.format);
    let usable = match format {
        Format::Auto if keys.smime => Some(Outcome::Smime),
        Format::Auto if keys.openpgp => Some(Outcome::Openpgp),
        Format::Smime if keys.smime => Some(Outcome::Smime),
        Format::Openpgp if keys.openpgp => Some(Outcome::Openpgp),
        _ => None,
    };
    let wanted = match format {
        Format::Auto => "S/MIME certificate or OpenPGP key",
        Format::Smime => "S/MIME certificate",
        Format::Openpgp => "OpenPGP key",
    };
    let why_none = if keys.unusable.is_empty() {
        format!("no usable {wanted}")
    } else {
        format!("no usable {wanted} ({})", keys.unusable.join("; "))
    };
    let (outcome, reason) = match (encrypt, usable) {
        (EncryptMode::Off, _) => (Outcome::Plain, "encryption off".to_string()),
        (_, Some(o)) => (
            o,
            format!(
                "usable {} found",
                if o == Outcome::Smime {
                    "S/MIME certificate"
                } else {
                    "OpenPGP key"
                }
            ),
        ),
        (EncryptMode::Opportunistic, None) => {
            (Outcome::Plain, format!("opportunistic: {why_none}"))
        }
        (EncryptMode::Required, None) => (Outcome::Refuse, format!("required: {why_none}")),
    };
    RecipientDecision {
        address: address.as_str().to_string(),
        rule: rule.map(|r| r.index),
        rule_match: rule.map(|r| r.matches.to_string()),
        encrypt,
        format,
        outcome,
        reason,
    }
}

/// The signing mode of a message: the strictest of the global mode and the modes of the rules
/// that matched its recipients.
pub fn message_sign_mode(policy: &PolicyConfig, recipients: &[&Address]) -> SignMode {
    let rank = |m: SignMode| match m {
        SignMode::Off => 0,
        SignMode::WhenPossible => 1,
        SignMode::Required => 2,
    };
    recipients
        .iter()
        .filter_map(|a| policy.rule_for(a).and_then(|r| r.sign))
        .chain(std::iter::once(policy.sign))
        .max_by_key(|m| rank(*m))
        .unwrap_or(policy.sign)
}

/// What is known about the sender of one message.
#[derive(Debug, Clone)]
pub struct SenderFacts<'a> {
    pub envelope_from: &'a str,
    /// How many From header fields the message has.
    pub from_fields: usize,
    /// The mailboxes of those fields.
    pub from_mailboxes: &'a [String],
    /// The identity the client authenticated as (through AUTH), if any.
    pub authenticated: Option<&'a str>,
    /// The listener trusts its unauthenticated clients to send as their envelope sender.
    pub sign_without_auth: bool,
    /// A usable signing identity exists for the sender address.
    pub identity: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigningDecision {
    Sign,
    Unsigned(String),
    Refuse(String),
}

/// Signs only for a sender the client is entitled to use (SECURITY.md I8): exactly one From
/// field with exactly one mailbox, equal to the envelope sender (case-insensitively), and, when
/// the client authenticated, the authenticated identity is that same address.
pub fn decide_signing(mode: SignMode, facts: &SenderFacts<'_>) -> SigningDecision {
    if mode == SignMode::Off {
        return SigningDecision::Unsigned("signing off".into());
    }
    let entitled = entitlement(facts);
    let problem = match (&entitled, facts.identity) {
        (Err(why), _) => Some(why.clone()),
        (Ok(()), false) => Some(format!("no signing identity for <{}>", facts.envelope_from)),
        (Ok(()), true) => None,
    };
    match (problem, mode) {
        (None, _) => SigningDecision::Sign,
        (Some(why), SignMode::Required) => SigningDecision::Refuse(why),
        (Some(why), _) => SigningDecision::Unsigned(why),
    }
}

fn entitlement(f: &SenderFacts<'_>) -> Result<(), String> {
    if f.envelope_from.is_empty() {
        return Err("null envelope sender".into());
    }
    if f.from_fields != 1 || f.from_mailboxes.len() != 1 {
        return Err(format!(
            "ambiguous From ({} field(s), {} mailbox(es))",
            f.from_fields,
            f.from_mailboxes.len()
        ));
    }
    // One canonical form for every side of the comparison (SECURITY.md I12).
    let key = |a: &str| Address::parse(a).map(|a| a.key().to_string()).ok();
    let sender = key(f.envelope_from).ok_or("envelope sender is not a valid address")?;
    if key(&f.from_mailboxes[0]).as_ref() != Some(&sender) {
        return Err("From header differs from the envelope sender".into());
    }
    match f.authenticated {
        Some(user) if key(user).as_ref() != Some(&sender) => {
            Err::<(), String>("authenticated identity may not send as this sender".into())
        }
        Some(_) => Ok(()),
        None if f.sign_without_auth => Ok(()),
        None => Err("client not authenticated (and listen.sign_without_auth is off)".into()),
    }?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::config::{Rule, RuleMatch};
    use super::*;

    fn addr(a: &str) -> Address {
        Address::parse(a).unwrap()
    }

    fn policy(encrypt: EncryptMode, format: Format) -> PolicyConfig {
        PolicyConfig {
            encrypt,
            format,
            ..PolicyConfig::default()
        }
    }

    fn keys(smime: bool, openpgp: bool) -> KeyAvailability {
        KeyAvailability {
            smime,
            openpgp,
            unusable: vec![],
        }
    }

    #[test]
    fn every_mode_format_and_key_combination() {
        use EncryptMode::*;
        use Outcome as O;
        let cases = [
            // encrypt, format, smime key, pgp key => outcome
            (Required, Format::Auto, true, true, O::Smime),
            (Required, Format::Auto, false, true, O::Openpgp),
            (Required, Format::Auto, false, false, O::Refuse),
            (Required, Format::Smime, false, true, O::Refuse),
            (Required, Format::Openpgp, true, false, O::Refuse),
            (Required, Format::Openpgp, true, true, O::Openpgp),
            (Opportunistic, Format::Auto, true, false, O::Smime),
            (Opportunistic, Format::Auto, false, false, O::Plain),
            (Opportunistic, Format::Smime, false, true, O::Plain),
            (Opportunistic, Format::Openpgp, false, true, O::Openpgp),
            (Off, Format::Auto, true, true, O::Plain),
            (Off, Format::Smime, true, true, O::Plain),
        ];
        for (mode, format, s, p, expected) in cases {
            let d = decide_recipient(&policy(mode, format), &addr("a@x.test"), &keys(s, p), false);
            assert_eq!(d.outcome, expected, "{mode:?} {format:?} smime={s} pgp={p}");
        }
    }

    #[test]
    fn refusal_keeps_why_the_keys_are_unusable() {
        let mut k = keys(false, false);
        k.unusable.push("certificate expired".into());
        let d = decide_recipient(
            &policy(EncryptMode::Required, Format::Auto),
            &addr("bob@p.test"),
            &k,
            false,
        );
        assert_eq!(d.outcome, Outcome::Refuse);
        assert!(d.reason.contains("certificate expired"), "{}", d.reason);
    }

    #[test]
    fn rules_override_the_global_policy_and_triggers_raise_to_required() {
        let mut p = policy(EncryptMode::Opportunistic, Format::Auto);
        p.rules.push(Rule {
            matches: RuleMatch::parse("partner.example").unwrap(),
            encrypt: Some(EncryptMode::Required),
            format: Some(Format::Smime),
            sign: None,
            index: 0,
        });
        p.rules.push(Rule {
            matches: RuleMatch::parse("news@partner.example").unwrap(),
            encrypt: Some(EncryptMode::Off),
            format: None,
            sign: None,
            index: 1,
        });
        let d = decide_recipient(&p, &addr("a@partner.example"), &keys(false, true), false);
        assert_eq!((d.outcome, d.rule), (Outcome::Refuse, Some(0)));
        let d = decide_recipient(&p, &addr("news@partner.example"), &keys(true, true), false);
        assert_eq!((d.outcome, d.rule), (Outcome::Plain, Some(1)));
        let d = decide_recipient(&p, &addr("a@elsewhere.test"), &keys(false, false), false);
        assert_eq!((d.outcome, d.rule), (Outcome::Plain, None));
        let d = decide_recipient(&p, &addr("a@elsewhere.test"), &keys(false, false), true);
        assert_eq!(d.outcome, Outcome::Refuse, "trigger raises to required");
        let d = decide_recipient(&p, &addr("news@partner.example"), &keys(false, true), true);
        assert_eq!(
            d.outcome,
            Outcome::Openpgp,
            "trigger overrides encrypt = off"
        );
    }

    fn facts<'a>(
        from: &'a str,
        mailboxes: &'a [String],
        fields: usize,
        auth: Option<&'a str>,
        identity: bool,
    ) -> SenderFacts<'a> {
        SenderFacts {
            envelope_from: from,
            from_fields: fields,
            from_mailboxes: mailboxes,
            authenticated: auth,
            sign_without_auth: true,
            identity,
        }
    }

    #[test]
    fn signing_only_for_an_entitled_sender() {
        let one = vec!["Alice@X.test".to_string()];
        let two = vec!["alice@x.test".to_string(), "eve@x.test".to_string()];
        let other = vec!["eve@x.test".to_string()];
        use SignMode::*;
        let sign = |mode, f: &SenderFacts<'_>| decide_signing(mode, f);
        assert_eq!(
            sign(WhenPossible, &facts("alice@x.test", &one, 1, None, true)),
            SigningDecision::Sign
        );
        assert_eq!(
            sign(
                WhenPossible,
                &facts("alice@x.test", &one, 1, Some("ALICE@x.test"), true)
            ),
            SigningDecision::Sign
        );
        for f in [
            facts("alice@x.test", &one, 2, None, true),
            facts("alice@x.test", &two, 1, None, true),
            facts("alice@x.test", &other, 1, None, true),
            facts("alice@x.test", &one, 1, Some("eve@x.test"), true),
            facts("alice@x.test", &one, 1, Some("alice"), true),
            facts("alice@x.test", &one, 1, None, false),
            facts("", &one, 1, None, true),
        ] {
            assert!(
                matches!(sign(WhenPossible, &f), SigningDecision::Unsigned(_)),
                "{f:?}"
            );
            assert!(
                matches!(sign(Required, &f), SigningDecision::Refuse(_)),
                "{f:?}"
            );
            assert!(
                matches!(sign(Off, &f), SigningDecision::Unsigned(_)),
                "{f:?}"
            );
        }
        assert!(matches!(
            sign(Off, &facts("alice@x.test", &one, 1, None, true)),
            SigningDecision::Unsigned(_)
        ));
        // Not authenticated, on a listener that does not trust its clients: never signed.
        let untrusted = SenderFacts {
            sign_without_auth: false,
            ..facts("alice@x.test", &one, 1, None, true)
        };
        assert!(matches!(
            sign(WhenPossible, &untrusted),
            SigningDecision::Unsigned(_)
        ));
        assert!(matches!(
            sign(Required, &untrusted),
            SigningDecision::Refuse(_)
        ));
        let authenticated = SenderFacts {
            sign_without_auth: false,
            ..facts("alice@x.test", &one, 1, Some("alice@x.test"), true)
        };
        assert_eq!(sign(WhenPossible, &authenticated), SigningDecision::Sign);
    }

    #[test]
    fn message_sign_mode_is_the_strictest() {
        let mut p = PolicyConfig::default();
        p.rules.push(Rule {
            matches: RuleMatch::parse("*.bank.test").unwrap(),
            encrypt: None,
            format: None,
            sign: Some(SignMode::Required),
            index: 0,
        });
        assert_eq!(
            message_sign_mode(&p, &[&addr("a@x.test")]),
            SignMode::WhenPossible
        );
        assert_eq!(
            message_sign_mode(&p, &[&addr("a@x.test"), &addr("b@eu.bank.test")]),
            SignMode::Required
        );
        p.sign = SignMode::Off;
        assert_eq!(message_sign_mode(&p, &[&addr("a@x.test")]), SignMode::Off);
    }

    mod spellings {
        use super::*;
        use proptest::prelude::*;

        /// Rules of every kind that could catch `partner.example` mailboxes.
        fn ruled() -> PolicyConfig {
            let mut p = policy(EncryptMode::Opportunistic, Format::Auto);
            for (i, (m, e)) in [
                ("partner.example", EncryptMode::Required),
                ("*.b\u{fc}cher.example", EncryptMode::Required),
                ("News@Partner.Example", EncryptMode::Off),
            ]
            .into_iter()
            .enumerate()
            {
                p.rules.push(Rule {
                    matches: RuleMatch::parse(m).unwrap(),
                    encrypt: Some(e),
                    format: None,
                    sign: None,
                    index: i,
                });
            }
            p
        }

        /// A spelling the upstream would deliver to the same mailbox as `local@domain`.
        fn respell(
            local: &str,
            domain: &str,
            flips: &[bool],
            quote: bool,
            dot: bool,
            ulabel: bool,
        ) -> String {
            let flip = |s: &str, off: usize| -> String {
                s.chars()
                    .enumerate()
                    .map(|(i, c)| {
                        if flips
                            .get((i + off) % flips.len().max(1))
                            .copied()
                            .unwrap_or(false)
                        {
                            c.to_ascii_uppercase()
                        } else {
                            c
                        }
                    })
                    .collect()
            };
            let local = flip(local, 0);
            let local = if quote { format!("\"{local}\"") } else { local };
            let domain = if ulabel {
                domain.replace("xn--bcher-kva", "b\u{fc}cher")
            } else {
                domain.to_string()
            };
            let domain = flip(&domain, 3);
            format!("{local}@{domain}{}", if dot { "." } else { "" })
        }

        proptest! {
            /// SECURITY.md I12: for any two spellings of one mailbox, the same decision.
            #[test]
            fn every_spelling_of_a_mailbox_gets_the_same_decision(
                local in "[a-z0-9][a-z0-9._+-]{0,10}[a-z0-9]|news",
                domain in prop::sample::select(vec![
                    "partner.example", "eu.xn--bcher-kva.example", "xn--bcher-kva.example", "other.test",
                ]),
                a in (prop::collection::vec(any::<bool>(), 1..8), any::<bool>(), any::<bool>(), any::<bool>()),
                b in (prop::collection::vec(any::<bool>(), 1..8), any::<bool>(), any::<bool>(), any::<bool>()),
                smime in any::<bool>(),
                raised in any::<bool>(),
            ) {
                prop_assume!(!local.contains(".."));
                let p = ruled();
                let one = respell(&local, domain, &a.0, a.1, a.2, a.3);
                let two = respell(&local, domain, &b.0, b.1, b.2, b.3);
                let (x, y) = (Address::parse(&one).unwrap(), Address::parse(&two).unwrap());
                prop_assert_eq!(x.key(), y.key());
                let k = keys(smime, false);
                let (dx, dy) = (decide_recipient(&p, &x, &k, raised), decide_recipient(&p, &y, &k, raised));
                prop_assert_eq!((dx.outcome, dx.rule, dx.encrypt), (dy.outcome, dy.rule, dy.encrypt), "{} vs {}", one, two);
            }
        }

        #[test]
        fn known_spellings_hit_the_rule() {
            let p = ruled();
            for spelling in [
                "bob@partner.example.",
                "\"bob\"@partner.example",
                "BOB@PARTNER.EXAMPLE",
                "a@eu.B\u{fc}cher.example",
                "a@EU.XN--BCHER-KVA.EXAMPLE.",
            ] {
                let d = decide_recipient(&p, &addr(spelling), &keys(false, false), false);
                assert_eq!(d.outcome, Outcome::Refuse, "{spelling}");
            }
            let d = decide_recipient(
                &p,
                &addr("\"NEWS\"@partner.example."),
                &keys(false, false),
                false,
            );
            assert_eq!((d.outcome, d.rule), (Outcome::Plain, Some(2)));
        }
    }
}
