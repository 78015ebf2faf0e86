//! From one accepted message to the copies sent upstream: triggers, policy decisions that need
//! the content (signing, Bcc), copy planning and sealing. Pure except for the key lookups,
//! which go through [`KeySource`]; the relay runs it on a blocking thread.

mod facts;
mod keys;
mod plan;
mod seal;
mod verify;

use std::sync::Arc;
use std::time::SystemTime;

pub use facts::{read as read_facts, strip_triggers, MessageFacts, RESULT_HEADER, TRIGGER_HEADER};
pub use keys::{KeySource, KeysUnavailable, RecipientKeys, SenderKeys};
pub use plan::{plan_copies, CopyPlan};
pub use seal::{copy_is_signed, seal_copy, CopySpec, SealError, SealSettings};

use crate::address::Address;
use crate::mime;
use crate::policy::{
    decide_recipient, decide_signing, message_sign_mode, Outcome, PolicyConfig, RecipientDecision,
    SenderFacts, SignMode, SigningDecision,
};
use crate::smtp::Reply;

/// One accepted recipient of the transaction, with what was decided at RCPT time.
pub struct AcceptedRecipient {
    /// Parsed once at RCPT; what the upstream was given and every decision was made for.
    pub address: Address,
    pub decision: RecipientDecision,
    pub keys: RecipientKeys,
}

/// The envelope as accepted so far.
pub struct Envelope<'a> {
    pub from: &'a str,
    pub authenticated: Option<&'a str>,
    /// The listener allows signing for clients that did not authenticate.
    pub sign_without_auth: bool,
    pub recipients: &'a [AcceptedRecipient],
}

/// One copy ready to go upstream.
pub struct ReadyCopy {
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

    /// A short, content-free description for the message's log line.
    pub fn summary(&self) -> String {
        self.copies
            .iter()
            .map(|c| {
                let kind = match c.seal {
                    Outcome::Smime => "smime",
                    Outcome::Openpgp => "openpgp",
                    Outcome::Plain => "plain",
                    Outcome::Refuse => "refused",
                };
                let signed = copy_is_signed(c.seal, &self.sender, self.sign);
                format!(
                    "{kind}{}x{}",
                    if signed { "+signed" } else { "" },
                    c.recipients.len()
                )
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

    /// Seals copy `i` (CPU work: call it off the async reactor). Errors are the client's reply.
    pub fn seal(
        &self,
        i: usize,
        recipients: &[AcceptedRecipient],
        settings: &SealSettings,
        now: SystemTime,
    ) -> Result<ReadyCopy, Reply> {
        let copy = self.copies.get(i).ok_or_else(|| {
            Reply::new(451, "4.3.0", "Local error in processing, try again later")
        })?;
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
        let sealed = seal_copy(&self.content, &spec, &self.sender, settings, now).map_err(|e| {
            tracing::warn!(error = %e, "sealing failed");
            e.client_reply()
        })?;
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

/// How much larger than the client's message a sealed copy typically gets (base64 of a CMS or
/// OpenPGP packet around canonical content), in percent.
pub const SEALING_GROWTH_PERCENT: u64 = 140;

/// The SIZE to announce to clients when the upstream announces `upstream` (0: no limit): the
/// headroom lets a message of that size still fit once sealed, so a size refusal is decided
/// before anything is sent, not after a first copy was accepted.
pub fn client_size_limit(upstream: u64) -> u64 {
    if upstream == 0 {
        return 0;
    }
    (upstream / SEALING_GROWTH_PERCENT).saturating_mul(100)
        + upstream % SEALING_GROWTH_PERCENT * 100 / SEALING_GROWTH_PERCENT
}

/// Everything the transform needs from the configuration.
pub struct Settings {
    pub policy: PolicyConfig,
    pub seal: SealSettings,
}

/// Decides what happens to a message. Errors are the client's final reply; nothing has been
/// sent upstream.
pub fn plan_message(
    message: Vec<u8>,
    envelope: &Envelope<'_>,
    settings: &Settings,
    keys: &dyn KeySource,
    now: SystemTime,
) -> Result<Plan, Reply> {
    let policy = &settings.policy;
    let limits = &settings.seal.limits;
    let mail_error = |e: crate::mime::MimeError| SealError::Mime(e).client_reply();
    let (content, raised) = strip_triggers(message, policy, limits).map_err(mail_error)?;
    let facts = read_facts(&content, limits).map_err(mail_error)?;

    // A trigger makes encryption required for everyone: fail closed for recipients without keys.
    // Planning compares match keys (one canonical form, SECURITY.md I12).
    let outcomes: Vec<(String, Outcome)> = envelope
        .recipients
        .iter()
        .map(|r| {
            let decision = if raised {
                decide_recipient(policy, &r.address, &r.keys.availability(), true)
            } else {
                r.decision.clone()
            };
            (r.address.key().to_string(), decision.outcome)
        })
        .collect();
    if let Some(i) = outcomes.iter().position(|(_, o)| *o == Outcome::Refuse) {
        let address = envelope
            .recipients
            .get(i)
            .map_or("", |r| r.address.as_str());
        return Err(Reply::new(
            550,
            "5.7.1",
            format!("Encryption is required for this message and no usable key was found for <{address}>"),
        ));
    }

    // Already encrypted by the client (the label checked against the structure): sent as is,
    // never opened, never re-sealed - unless a recipient requires encryption by our policy:
    // then it is wrapped in our own encryption (still never opened: SECURITY.md I6, I10).
    // A label without an encrypted structure is treated as plain content and sealed.
    let required = raised
        || envelope
            .recipients
            .iter()
            .any(|r| r.decision.encrypt == crate::policy::EncryptMode::Required);
    let client_encrypted = facts.protection.is_encrypted()
        && verify::really_encrypted(&content, facts.protection, limits);
    if client_encrypted && !required {
        return Ok(Plan::Passthrough(mime::refold_header_section(
            content, limits,
        )));
    }
    let wrap = facts.protection.is_protected();

    let addresses: Vec<&Address> = envelope.recipients.iter().map(|r| &r.address).collect();
    let mode = message_sign_mode(policy, &addresses);
    let sender = if mode == SignMode::Off || envelope.from.is_empty() {
        Arc::new(SenderKeys::default())
    } else {
        keys.sender(envelope.from, now).map_err(|e| {
            tracing::warn!(error = %e, "sender keys unavailable");
            Reply::new(
                451,
                "4.3.0",
                "Key store temporarily unavailable, try again later",
            )
        })?
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
    let sign = match signing {
        SigningDecision::Sign => !wrap,
        SigningDecision::Unsigned(_) => false,
        SigningDecision::Refuse(why) => {
            // The reason names our configuration: it goes to the log, never to the client
            // (SECURITY.md I14).
            tracing::info!(reason = %why, "message must be signed and cannot be");
            return Err(Reply::new(
                550,
                "5.7.1",
                "Message must be signed and this sender cannot be signed for",
            ));
        }
    };

    let plan = plan_copies(&outcomes, &facts.visible);
    if mode == SignMode::Required && plan.iter().any(|c| !copy_is_signed(c.seal, &sender, sign)) {
        return Err(Reply::new(
            550,
            "5.7.1",
            "Message must be signed and the sender has no identity for every format in use",
        ));
    }
    if let [only] = plan.as_slice() {
        if only.seal == Outcome::Plain && !sign {
            return Ok(Plan::Passthrough(mime::refold_header_section(
                content, limits,
            )));
        }
    }
    Ok(Plan::Copies(Box::new(Sealing {
        content,
        copies: plan,
        sender,
        sign,
        wrap,
        result_header: policy.result_header,
    })))
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

    #[test]
    fn client_size_limit_leaves_sealing_headroom() {
        assert_eq!(client_size_limit(0), 0, "no limit stays no limit");
        assert_eq!(client_size_limit(140), 100);
        assert_eq!(client_size_limit(200_000), 142_857);
        assert_eq!(client_size_limit(52_428_800), 37_449_142);
        assert!(client_size_limit(u64::MAX) < u64::MAX);
    }
}
