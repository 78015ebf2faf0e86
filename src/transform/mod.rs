//! From one accepted message to the copies sent upstream: triggers, policy decisions that need
//! the content (signing, Bcc), copy planning and sealing. Pure except for the key lookups,
//! which go through [`KeySource`]; the relay runs it on a blocking thread.

mod facts;
mod keys;
mod plan;
mod seal;
mod store_keys;

use std::time::SystemTime;

pub use facts::{read as read_facts, strip_triggers, MessageFacts, TRIGGER_HEADER};
pub use keys::{KeySource, KeysUnavailable, NoKeys, RecipientKeys, SenderKeys};
pub use plan::{plan_copies, CopyPlan};
pub use seal::{copy_is_signed, seal_copy, CopySpec, SealError, SealSettings};
pub use store_keys::StoreKeys;

use crate::policy::{
    decide_recipient, decide_signing, message_sign_mode, Outcome, PolicyConfig, RecipientDecision,
    SenderFacts, SignMode, SigningDecision,
};
use crate::smtp::Reply;

/// One accepted recipient of the transaction, with what was decided at RCPT time.
pub struct AcceptedRecipient {
    pub address: String,
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

pub enum Sealed {
    /// One copy to every recipient with the content as is (triggers removed): the transaction
    /// already open upstream can carry it.
    Passthrough(Vec<u8>),
    /// Copies that each need their own upstream transaction.
    Copies(Vec<ReadyCopy>),
}

impl Sealed {
    /// A short, content-free description for the message's log line.
    pub fn summary(&self) -> String {
        match self {
            Sealed::Passthrough(_) => "as is".into(),
            Sealed::Copies(copies) => copies
                .iter()
                .map(|c| {
                    let kind = match c.seal {
                        Outcome::Smime => "smime",
                        Outcome::Openpgp => "openpgp",
                        Outcome::Plain => "plain",
                        Outcome::Refuse => "refused",
                    };
                    format!(
                        "{kind}{}x{}",
                        if c.signed { "+signed" } else { "" },
                        c.recipients.len()
                    )
                })
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

/// Everything the transform needs from the configuration.
pub struct Settings {
    pub policy: PolicyConfig,
    pub seal: SealSettings,
}

/// Decides and seals. Errors are the client's final reply; nothing has been sent upstream.
pub fn seal_message(
    message: &[u8],
    envelope: &Envelope<'_>,
    settings: &Settings,
    keys: &dyn KeySource,
    now: SystemTime,
) -> Result<Sealed, Reply> {
    let policy = &settings.policy;
    let limits = &settings.seal.limits;
    let mail_error = |e: crate::mime::MimeError| SealError::Mime(e).client_reply();
    let (content, raised) = strip_triggers(message, policy, limits).map_err(mail_error)?;
    let facts = read_facts(&content, limits).map_err(mail_error)?;

    // A trigger makes encryption required for everyone: fail closed for recipients without keys.
    let outcomes: Vec<(String, Outcome)> = envelope
        .recipients
        .iter()
        .map(|r| {
            let decision = if raised {
                decide_recipient(policy, &r.address, &r.keys.availability(), true)
            } else {
                r.decision.clone()
            };
            (r.address.clone(), decision.outcome)
        })
        .collect();
    if let Some((address, _)) = outcomes.iter().find(|(_, o)| *o == Outcome::Refuse) {
        return Err(Reply::new(
            550,
            "5.7.1",
            format!("Encryption is required for this message and no usable key was found for <{address}>"),
        ));
    }

    // Already encrypted by the client: sent as is (never opened, never re-sealed) - unless a
    // recipient requires encryption: the label is only the client's word, so such recipients
    // get it wrapped in our own encryption (it is still never opened: SECURITY.md I6, I10).
    let required = raised
        || envelope
            .recipients
            .iter()
            .any(|r| r.decision.encrypt == crate::policy::EncryptMode::Required);
    if facts.protection.is_encrypted() && !required {
        return Ok(Sealed::Passthrough(content));
    }
    let wrap = facts.protection.is_protected();

    let addresses: Vec<&str> = envelope
        .recipients
        .iter()
        .map(|r| r.address.as_str())
        .collect();
    let mode = message_sign_mode(policy, &addresses);
    let sender = if mode == SignMode::Off || envelope.from.is_empty() {
        SenderKeys::default()
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
            return Err(Reply::new(
                550,
                "5.7.1",
                format!("Message must be signed and cannot be: {why}"),
            ))
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
            return Ok(Sealed::Passthrough(content));
        }
    }
    let mut copies = Vec::with_capacity(plan.len());
    for copy in plan {
        let spec = CopySpec {
            seal: copy.seal,
            recipients: copy
                .recipients
                .iter()
                .filter_map(|&i| envelope.recipients.get(i))
                .map(|r| &r.keys)
                .collect(),
            sign,
            wrap,
        };
        let sealed = seal_copy(&content, &spec, &sender, &settings.seal, now).map_err(|e| {
            tracing::warn!(error = %e, "sealing failed");
            e.client_reply()
        })?;
        let signed = copy_is_signed(copy.seal, &sender, sign);
        let content = if policy.result_header {
            with_result_header(sealed, copy.seal, signed)
        } else {
            sealed
        };
        copies.push(ReadyCopy {
            signed,
            recipients: copy.recipients,
            seal: copy.seal,
            content,
        });
    }
    Ok(Sealed::Copies(copies))
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
        "X-Sealgate-Result: encrypted={encrypted}; signed={}\r\n",
        if signed { "yes" } else { "no" }
    )
    .into_bytes();
    out.extend_from_slice(&content);
    out
}
