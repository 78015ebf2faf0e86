//! Encryption and signing policy: pure functions from (configuration, facts, now) to decisions.
//! No I/O here: the caller looks the keys up and passes what it found.
//!
//! Rules match recipients by address or domain; the most specific wins:
//! exact address > exact domain > the longest `*.suffix` wildcard > the global `[policy]` values.

mod config;
mod decide;

pub(crate) use config::RawPolicy;
pub use config::{
    EncryptMode, Format, PolicyConfig, PolicyError, Rule, RuleMatch, SignMode, SmimeCipher,
    SmimeKeyTransport,
};
pub use decide::{
    decide_recipient, decide_signing, message_sign_mode, KeyAvailability, Outcome,
    RecipientDecision, SenderFacts, SigningDecision,
};
