//! From one accepted message to its plan (pure, time passed in): triggers and facts read
//! from the content, the policy's message-level decisions (a trigger raising encryption,
//! signing), then the copies, each sealed one at a time by [`Sealing::seal`].

use std::sync::Arc;
use std::time::SystemTime;

use super::facts::{read as read_facts, strip_triggers, MessageFacts, RESULT_HEADER};
use super::keys::{KeySource, SenderKeys};
use super::plan::{plan_copies, CopyPlan};
use super::seal::{copy_is_signed, seal_copy, CopySpec, SealError, SealSettings};
use super::{verify, AcceptedRecipient, Envelope, Refusal, Settings};
use crate::address::Address;
use crate::mime;
use crate::policy::{
    decide_recipient, decide_signing, message_sign_mode, EncryptMode, Outcome, SenderFacts,
    SignMode, SigningDecision,
};

/// One copy ready to go upstream.
pub struct ReadyCopy {
    /// Indexes into the transaction's accepted recipients.
    pub recipients: Vec<usize>,
    pub seal: Outcome,
    pub signed: bool,
    pub content: Vec<u8>,
}

/// What happens to a message, decided before anything is sealed or sent.
pub enum Plan {
    /// One copy to every recipient with the content as is (triggers and Bcc removed): the
    /// transaction already open upstream can carry it.
    Passthrough(Vec<u8>),
    /// Copies that each need their own upstream transaction, sealed one at a time so that
    /// memory stays bounded by the message, not by the number of copies.
    Copies(Box<Sealing>),
}

/// The plan and the signing decision it was made with (`policy explain` shows it).
pub struct Planned {
    pub plan: Plan,
    pub sign_mode: SignMode,
    pub signing: SigningDecision,
}

/// The copies of one message and what sealing them needs.
pub struct Sealing {
    content: Vec<u8>,
    copies: Vec<CopyPlan>,
    sender: Arc<SenderKeys>,
    sign: bool,
    wrap: bool,
    result_header: bool,
}

impl Sealing {
    pub fn len(&self) -> usize {
        self.copies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.copies.is_empty()
    }

    /// The recipients (indexes into the transaction's accepted recipients) of copy `i`.
    pub fn recipients(&self, i: usize) -> &[usize] {
        self.copies.get(i).map_or(&[], |c| c.recipients.as_slice())
    }

    /// Copy `i`'s format and whether it is signed.
    pub fn format(&self, i: usize) -> Option<(Outcome, bool)> {
        let c = self.copies.get(i)?;
        Some((c.seal, copy_is_signed(c.seal, &self.sender, self.sign)))
    }

    /// A short, content-free description for the message's log line.
    pub fn summary(&self) -> String {
        (0..self.len())
            .filter_map(|i| Some((self.format(i)?, self.recipients(i).len())))
            .map(|((seal, signed), n)| {
                let kind = match seal {
                    Outcome::Smime => "smime",
                    Outcome::Openpgp => "openpgp",
                    Outcome::Plain => "plain",
                    Outcome::Refuse => "refused",
                };
                format!("{kind}{}x{n}", if signed { "+signed" } else { "" })
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// An upper bound of copy `i`'s size once sealed, without sealing it: canonicalisation
    /// may re-encode 8-bit content (at most 1.4x), the signature and certificates add a little,
    /// and S/MIME or PGP/MIME encryption wraps the result in base64 again (1.4x with line
    /// ends). Used to decide cheaply that a copy certainly fits the upstream's SIZE.
    pub fn size_bound(&self, i: usize) -> u64 {
        let content = self.content.len() as u64;
        let canonical = content.saturating_mul(14) / 10 + 64 * 1024;
        let recipients = self.copies.get(i).map_or(0, |c| c.recipients.len()) as u64;
        match self.copies.get(i).map(|c| c.seal) {
            Some(Outcome::Smime | Outcome::Openpgp) => {
                canonical.saturating_mul(14) / 10 + recipients.saturating_add(1) * 2048 + 8192
            }
            _ => canonical,
        }
    }

    /// Seals copy `i` (CPU work: call it off the async reactor).
    pub fn seal(
        &self,
        i: usize,
        recipients: &[AcceptedRecipient],
        settings: &SealSettings,
        now: SystemTime,
    ) -> Result<ReadyCopy, Refusal> {
        let copy = self
            .copies
            .get(i)
            .ok_or(Refusal::Internal("no such copy"))?;
        let spec = CopySpec {
            seal: copy.seal,
            recipients: copy
                .recipients
                .iter()
                .filter_map(|&r| recipients.get(r))
                .map(|r| &r.keys)
                .collect(),
            sign: self.sign,
            wrap: self.wrap,
        };
        let sealed = seal_copy(&self.content, &spec, &self.sender, settings, now)?;
        let signed = copy_is_signed(copy.seal, &self.sender, self.sign);
        let content = if self.result_header {
            with_result_header(sealed, copy.seal, signed)
        } else {
            sealed
        };
        Ok(ReadyCopy {
            recipients: copy.recipients.clone(),
            seal: copy.seal,
            signed,
            content,
        })
    }
}

/// Decides what happens to a message; nothing has been sent upstream yet.
pub fn plan_message(
    message: Vec<u8>,
    envelope: &Envelope<'_>,
    settings: &Settings,
    keys: &dyn KeySource,
    now: SystemTime,
) -> Result<Planned, Refusal> {
    let policy = &settings.policy;
    let limits = &settings.seal.limits;
    let (content, raised) = strip_triggers(message, policy, limits).map_err(SealError::Mime)?;
    let facts = read_facts(&content, limits).map_err(SealError::Mime)?;
    let outcomes = outcomes(envelope, settings, raised)?;

    let addresses: Vec<&Address> = envelope.recipients.iter().map(|r| &r.address).collect();
    let sign_mode = message_sign_mode(policy, &addresses);
    // Already encrypted by the client (the label checked against the structure): sent as is,
    // never opened, never re-sealed - unless a recipient requires encryption by our policy:
    // then it is wrapped in our own encryption (still never opened: SECURITY.md I6, I10).
    // A label without an encrypted structure is treated as plain content and sealed.
    let required = raised
        || envelope
            .recipients
            .iter()
            .any(|r| r.decision.encrypt == EncryptMode::Required);
    if !required
        && facts.protection.is_encrypted()
        && verify::really_encrypted(&content, facts.protection, limits)
    {
        let why = "the client encrypted the message: sent as is".to_string();
        return Ok(passthrough(
            content,
            settings,
            sign_mode,
            SigningDecision::Unsigned(why),
        ));
    }
    let wrap = facts.protection.is_protected();
    let (sender, signing) = signing(envelope, &facts, sign_mode, keys, now)?;
    let sign = matches!(signing, SigningDecision::Sign) && !wrap;

    let copies = plan_copies(&outcomes, &facts.visible);
    if sign_mode == SignMode::Required
        && copies
            .iter()
            .any(|c| !copy_is_signed(c.seal, &sender, sign))
    {
        return Err(Refusal::SigningIncomplete);
    }
    if let [only] = copies.as_slice() {
        if only.seal == Outcome::Plain && !sign {
            return Ok(passthrough(content, settings, sign_mode, signing));
        }
    }
    let sealing = Sealing {
        content,
        copies,
        sender,
        sign,
        wrap,
        result_header: policy.result_header,
    };
    Ok(Planned {
        plan: Plan::Copies(Box::new(sealing)),
        sign_mode,
        signing,
    })
}

/// The content as is (header section refolded) in the transaction already open upstream.
fn passthrough(
    content: Vec<u8>,
    settings: &Settings,
    sign_mode: SignMode,
    signing: SigningDecision,
) -> Planned {
    let content = mime::refold_header_section(content, &settings.seal.limits);
    Planned {
        plan: Plan::Passthrough(content),
        sign_mode,
        signing,
    }
}

/// Each recipient's (match key, outcome). A trigger makes encryption required for everyone:
/// fail closed for recipients without keys. Planning compares match keys (one canonical
/// form, SECURITY.md I12).
fn outcomes(
    envelope: &Envelope<'_>,
    settings: &Settings,
    raised: bool,
) -> Result<Vec<(String, Outcome)>, Refusal> {
    let mut outcomes = Vec::with_capacity(envelope.recipients.len());
    for r in envelope.recipients {
        let outcome = if raised {
            decide_recipient(&settings.policy, &r.address, &r.keys.availability(), true).outcome
        } else {
            r.decision.outcome
        };
        if outcome == Outcome::Refuse {
            return Err(Refusal::EncryptionRequired(r.address.clone()));
        }
        outcomes.push((r.address.key().to_string(), outcome));
    }
    Ok(outcomes)
}

/// The sender's keys and the signing decision for this message.
fn signing(
    envelope: &Envelope<'_>,
    facts: &MessageFacts,
    mode: SignMode,
    keys: &dyn KeySource,
    now: SystemTime,
) -> Result<(Arc<SenderKeys>, SigningDecision), Refusal> {
    let sender = if mode == SignMode::Off || envelope.from.is_empty() {
        Arc::new(SenderKeys::default())
    } else {
        keys.sender(envelope.from, now)?
    };
    let signing = decide_signing(
        mode,
        &SenderFacts {
            envelope_from: envelope.from,
            from_fields: facts.from_fields,
            from_mailboxes: &facts.from_mailboxes,
            authenticated: envelope.authenticated,
            sign_without_auth: envelope.sign_without_auth,
            identity: sender.any(),
        },
    );
    if let SigningDecision::Refuse(why) = signing {
        return Err(Refusal::CannotSign(why));
    }
    Ok((sender, signing))
}

/// Prepends `X-Sealgate-Result: encrypted=smime; signed=yes` (names the formats only: nothing
/// about keys or content).
fn with_result_header(content: Vec<u8>, seal: Outcome, signed: bool) -> Vec<u8> {
    let encrypted = match seal {
        Outcome::Smime => "smime",
        Outcome::Openpgp => "openpgp",
        _ => "no",
    };
    let mut out = format!(
        "{RESULT_HEADER}: encrypted={encrypted}; signed={}\r\n",
        if signed { "yes" } else { "no" }
    )
    .into_bytes();
    out.extend_from_slice(&content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyConfig;
    use crate::smtp::command::PathWithParams;
    use crate::transform::{decide_at_rcpt, KeysUnavailable, RecipientKeys};
    use der::DecodePem;

    /// Keys in memory: an S/MIME certificate for bob@example.test, nothing else.
    struct Keys;

    impl KeySource for Keys {
        fn recipient(
            &self,
            address: &str,
            _: SystemTime,
        ) -> Result<RecipientKeys, KeysUnavailable> {
            let mut keys = RecipientKeys::default();
            if address == "bob@example.test" {
                let pem = include_bytes!("../../keys/demo/bob-rsa2048.pem");
                keys.smime
                    .push(x509_cert::Certificate::from_pem(pem).expect("demo certificate"));
            }
            Ok(keys)
        }
        fn sender(&self, _: &str, _: SystemTime) -> Result<Arc<SenderKeys>, KeysUnavailable> {
            Ok(Arc::new(SenderKeys::default()))
        }
    }

    fn settings(policy: PolicyConfig) -> Settings {
        Settings::new(&policy, crate::mime::Limits::default())
    }

    fn accepted(settings: &Settings, to: &[&str]) -> Vec<AcceptedRecipient> {
        to.iter()
            .map(|a| {
                let address = Address::parse(a).expect("address");
                let path = PathWithParams {
                    address: a.to_string(),
                    params: Vec::new(),
                };
                decide_at_rcpt(&settings.policy, &Keys, path, address, SystemTime::now())
                    .expect("keys")
            })
            .collect()
    }

    fn plan(
        policy: PolicyConfig,
        to: &[&str],
        message: &str,
    ) -> Result<(Planned, Vec<AcceptedRecipient>), Refusal> {
        let settings = settings(policy);
        let recipients = accepted(&settings, to);
        let envelope = Envelope {
            from: "alice@example.org",
            authenticated: None,
            sign_without_auth: true,
            recipients: &recipients,
        };
        let planned = plan_message(
            message.as_bytes().to_vec(),
            &envelope,
            &settings,
            &Keys,
            SystemTime::now(),
        )?;
        Ok((planned, recipients))
    }

    const TEXT: &str = "From: alice@example.org\r\nTo: bob@example.test, carol@example.net\r\n\
                        Subject: hi\r\n\r\nhello\r\n";

    fn unsigned() -> PolicyConfig {
        PolicyConfig {
            sign: SignMode::Off,
            ..PolicyConfig::default()
        }
    }

    #[test]
    fn no_key_and_no_signing_is_sent_as_is() {
        let (p, _) = plan(unsigned(), &["carol@example.net"], TEXT).expect("planned");
        assert!(matches!(p.plan, Plan::Passthrough(_)));
    }

    #[test]
    fn one_copy_per_format_and_an_encrypted_bcc_gets_its_own() {
        let (p, _) = plan(unsigned(), &["bob@example.test", "carol@example.net"], TEXT).unwrap();
        let Plan::Copies(s) = p.plan else {
            panic!("copies expected")
        };
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s.format(0), s.recipients(0)),
            (Some((Outcome::Smime, false)), &[0][..])
        );
        assert_eq!(
            (s.format(1), s.recipients(1)),
            (Some((Outcome::Plain, false)), &[1][..])
        );
        // bob is not in To/Cc here: his encrypted copy names nobody else's key.
        let bcc = "From: alice@example.org\r\nTo: carol@example.net\r\n\r\nhello\r\n";
        let (p, _) = plan(unsigned(), &["carol@example.net", "bob@example.test"], bcc).unwrap();
        let Plan::Copies(s) = p.plan else {
            panic!("copies expected")
        };
        assert_eq!(s.recipients(1), &[1]);
    }

    #[test]
    fn a_trigger_without_a_key_refuses_the_message_naming_the_recipient() {
        let policy = PolicyConfig {
            header_trigger: true,
            ..unsigned()
        };
        let msg = format!("{}: required\r\n{TEXT}", super::super::TRIGGER_HEADER);
        let refused = plan(policy, &["bob@example.test", "carol@example.net"], &msg);
        match refused {
            Err(Refusal::EncryptionRequired(a)) => assert_eq!(a.as_str(), "carol@example.net"),
            other => panic!("expected a refusal, got {:?}", other.err()),
        }
    }

    #[test]
    fn required_signing_without_an_identity_is_refused_with_the_reason_for_the_log() {
        let policy = PolicyConfig {
            sign: SignMode::Required,
            ..PolicyConfig::default()
        };
        match plan(policy, &["carol@example.net"], TEXT) {
            Err(Refusal::CannotSign(why)) => assert!(!why.is_empty()),
            other => panic!("expected CannotSign, got {:?}", other.err()),
        }
    }

    #[test]
    fn opportunistic_signing_without_an_identity_sends_unsigned() {
        let (p, _) = plan(PolicyConfig::default(), &["carol@example.net"], TEXT).unwrap();
        assert!(matches!(p.signing, SigningDecision::Unsigned(_)));
        assert!(matches!(p.plan, Plan::Passthrough(_)));
    }
}
