//! From one accepted message to the copies sent upstream: triggers, policy decisions that need
//! the content (signing, Bcc), copy planning and sealing. Pure except for the key lookups,
//! which go through [`KeySource`]; the relay runs it on a blocking thread.

mod facts;
mod keys;
mod message;
mod plan;
mod seal;
mod verify;

use std::time::SystemTime;

pub use facts::{read as read_facts, strip_triggers, MessageFacts, RESULT_HEADER, TRIGGER_HEADER};
pub use keys::{KeySource, KeysUnavailable, RecipientKeys, SenderKeys};
pub use message::{plan_message, Plan, Planned, ReadyCopy, Sealing};
pub use plan::{plan_copies, CopyPlan};
pub use seal::{copy_is_signed, seal_copy, CopySpec, SealError, SealSettings};

use crate::address::Address;
use crate::policy::{decide_recipient, PolicyConfig, RecipientDecision};
use crate::smtp::command::PathWithParams;

/// One accepted recipient of the transaction: the RCPT as the upstream was given it, and what
/// was decided for it at RCPT time. The one record of a recipient from RCPT to its copy.
pub struct AcceptedRecipient {
    /// The RCPT path with its parameters (NOTIFY, ORCPT), in the canonical form.
    pub path: PathWithParams,
    /// Parsed once at RCPT; what the upstream was given and every decision was made for.
    pub address: Address,
    pub decision: RecipientDecision,
    pub keys: RecipientKeys,
}

/// The RCPT-time decision for one recipient: its keys, looked up now, and the policy's
/// verdict on them. The relay and `policy explain` both call this.
pub fn decide_at_rcpt(
    policy: &PolicyConfig,
    keys: &dyn KeySource,
    path: PathWithParams,
    address: Address,
    now: SystemTime,
) -> Result<AcceptedRecipient, KeysUnavailable> {
    let found = keys.recipient(address.as_str(), now)?;
    let decision = decide_recipient(policy, &address, &found.availability(), false);
    Ok(AcceptedRecipient {
        path,
        address,
        decision,
        keys: found,
    })
}

/// The envelope as accepted so far.
pub struct Envelope<'a> {
    pub from: &'a str,
    pub authenticated: Option<&'a str>,
    /// The listener allows signing for clients that did not authenticate.
    pub sign_without_auth: bool,
    pub recipients: &'a [AcceptedRecipient],
}

/// Why a message is not sent as planned (nothing of it went upstream). The relay turns each
/// into the client's reply in one place (`serve::replies`); this text is for the log only
/// and may name configuration (SECURITY.md I14).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("encryption required by the message and no usable key for <{0}>")]
    EncryptionRequired(Address),
    #[error("signing required and the sender cannot be signed for: {0}")]
    CannotSign(String),
    #[error("signing required and the sender has no identity for every format in use")]
    SigningIncomplete,
    #[error(transparent)]
    KeysUnavailable(#[from] KeysUnavailable),
    #[error("sealing failed: {0}")]
    Seal(#[from] SealError),
    #[error("internal error: {0}")]
    Internal(&'static str),
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

impl Settings {
    /// The policy and the sealing settings it implies, under the MIME limits.
    pub fn new(policy: &PolicyConfig, limits: crate::mime::Limits) -> Self {
        Settings {
            policy: policy.clone(),
            seal: SealSettings::from_policy(policy, limits),
        }
    }
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
