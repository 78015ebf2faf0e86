//! Every reply the relay makes itself (rather than passing the upstream's on), in one place:
//! typed reasons in, an SMTP reply with an enhanced status code (RFC 3463) out. The reason's
//! own text goes to the log only; the client's text never names configuration, keys or
//! internal state (SECURITY.md I14).

use crate::address::Address;
use crate::mime::MimeError;
use crate::openpgp::PgpError;
use crate::smime::SmimeError;
use crate::smtp::Reply;
use crate::transform::{Refusal, SealError};
use crate::upstream::UpstreamError;

/// Why the relay answers the client itself.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("{0}")]
    Refused(#[from] Refusal),
    #[error("recipient <{address}> refused by policy: {reason}")]
    RecipientRefused { address: Address, reason: String },
    #[error("bad sender address syntax")]
    BadSender,
    #[error("bad recipient address syntax")]
    BadRecipient,
    #[error("upstream: {0}")]
    Upstream(#[from] UpstreamError),
    #[error("no upstream session")]
    UpstreamGone,
    #[error("the upstream session the client authenticated on was lost")]
    AuthLost,
    #[error("sealing memory budget exhausted")]
    MemoryExhausted,
    #[error("a sealed copy of {size} bytes exceeds the upstream's SIZE {limit}")]
    TooBigOnceSealed { size: u64, limit: u64 },
    #[error("a later copy failed after earlier ones were accepted and there is no queue: {0}")]
    PartlyDelivered(String),
    #[error("cannot write to the queue: {0}")]
    QueueFailed(String),
    #[error("internal error: {0}")]
    Local(String),
}

impl RelayError {
    /// The client's reply.
    pub fn reply(&self) -> Reply {
        match self {
            RelayError::Refused(r) => refusal(r),
            RelayError::RecipientRefused { address, .. } => Reply::new(
                550,
                "5.7.1",
                format!("Encryption is required for <{address}> and no usable key was found"),
            ),
            RelayError::BadSender => Reply::new(553, "5.1.7", "Bad sender address syntax"),
            RelayError::BadRecipient => Reply::new(553, "5.1.3", "Bad recipient address syntax"),
            RelayError::Upstream(e) => upstream(e),
            RelayError::UpstreamGone => {
                Reply::new(451, "4.4.2", "Upstream connection lost, try again later")
            }
            RelayError::AuthLost => Reply::new(
                451,
                "4.4.2",
                "Upstream connection lost; reconnect and authenticate again",
            ),
            RelayError::MemoryExhausted => Reply::new(
                451,
                "4.3.1",
                "Insufficient system resources, try again later",
            ),
            RelayError::TooBigOnceSealed { .. } => Reply::new(
                552,
                "5.3.4",
                "Message too big for the upstream once encrypted and signed",
            ),
            RelayError::PartlyDelivered(_) => Reply::new(
                451,
                "4.3.0",
                "Delivery of part of the copies failed; retry (recipients already served may get a duplicate)",
            ),
            RelayError::QueueFailed(_) => Reply::new(
                452,
                "4.3.1",
                "Insufficient system storage; retry (recipients already served may get a duplicate)",
            ),
            RelayError::Local(_) => local_error(),
        }
    }
}

fn local_error() -> Reply {
    Reply::new(451, "4.3.0", "Local error in processing, try again later")
}

/// A message the transform would not send.
fn refusal(r: &Refusal) -> Reply {
    match r {
        Refusal::EncryptionRequired(address) => Reply::new(
            550,
            "5.7.1",
            format!("Encryption is required for this message and no usable key was found for <{address}>"),
        ),
        Refusal::CannotSign(_) => Reply::new(
            550,
            "5.7.1",
            "Message must be signed and this sender cannot be signed for",
        ),
        Refusal::SigningIncomplete => Reply::new(
            550,
            "5.7.1",
            "Message must be signed and the sender has no identity for every format in use",
        ),
        Refusal::KeysUnavailable(_) => Reply::new(
            451,
            "4.3.0",
            "Key store temporarily unavailable, try again later",
        ),
        Refusal::Seal(e) => sealing(e),
        Refusal::Internal(_) => local_error(),
    }
}

/// A copy that could not be sealed: a message the MIME layer cannot take is refused for good,
/// saying why; any other failure is temporary (keys may be fixed) and nothing was sent.
pub fn sealing(e: &SealError) -> Reply {
    match e {
        SealError::Mime(e)
        | SealError::Smime(SmimeError::Mime(e))
        | SealError::Openpgp(PgpError::Mime(e)) => mime(e),
        SealError::Unsignable(_) => {
            Reply::new(550, "5.7.1", "Message must be signed and cannot be")
        }
        _ => Reply::new(451, "4.7.5", "Cryptographic failure, try again later"),
    }
}

fn mime(e: &MimeError) -> Reply {
    Reply::new(554, "5.6.0", e.reply_text())
}

/// An upstream failure. Every one is temporary (4xx): the client keeps the message and
/// retries; nothing is lost (SECURITY.md I3, I4). The queue records the same reply.
pub fn upstream(e: &UpstreamError) -> Reply {
    match e {
        UpstreamError::Connect(_) => {
            Reply::new(451, "4.4.1", "Upstream server unreachable, try again later")
        }
        UpstreamError::Timeout(_) => {
            Reply::new(451, "4.4.2", "Upstream server timed out, try again later")
        }
        UpstreamError::Closed(_) | UpstreamError::Io { .. } => {
            Reply::new(451, "4.4.2", "Upstream connection lost, try again later")
        }
        UpstreamError::Malformed { .. } => {
            Reply::new(451, "4.5.0", "Upstream protocol error, try again later")
        }
        UpstreamError::Refused { .. } => Reply::new(
            451,
            "4.3.0",
            "Upstream server not available, try again later",
        ),
        UpstreamError::NoStartTls
        | UpstreamError::StartTlsRefused(_)
        | UpstreamError::InjectedAfterStartTls
        | UpstreamError::Handshake(_) => Reply::new(
            454,
            "4.7.0",
            "TLS to the upstream server not available, try again later",
        ),
        UpstreamError::Certificate(_) => Reply::new(
            451,
            "4.7.5",
            "Upstream server certificate could not be verified, try again later",
        ),
        // Never sent without it (SECURITY.md I13): the upstream would take sealgate for
        // the client.
        UpstreamError::Identity(_) | UpstreamError::IdentityRefused { .. } => Reply::new(
            451,
            "4.7.0",
            "Upstream server cannot be told who you are, try again later",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::ReplyError;
    use crate::upstream::{IdentityError, Phase};

    #[test]
    fn a_recipient_refused_by_policy_gets_550_5_7_1_naming_it_and_not_the_reason() {
        let e = RelayError::RecipientRefused {
            address: Address::parse("bob@p.test").unwrap(),
            reason: "rule policy.rule[2]: certificate expired".into(),
        };
        let r = e.reply();
        assert_eq!(r.code(), 550);
        assert_eq!(r.status().map(|s| s.to_string()), Some("5.7.1".into()));
        assert!(r.lines()[0].contains("<bob@p.test>") && r.lines()[0].contains("required"));
        assert!(!r.lines()[0].contains("rule"), "{r}");
        assert!(
            e.to_string().contains("certificate expired"),
            "the log keeps the reason"
        );
    }

    #[test]
    fn internal_reasons_stay_in_the_log() {
        let cases = [
            RelayError::Refused(Refusal::CannotSign("[policy] sign = \"required\"".into())),
            RelayError::Refused(Refusal::KeysUnavailable(crate::transform::KeysUnavailable(
                "/var/lib/sealgate/store: Permission denied".into(),
            ))),
            RelayError::Local("spool /var/spool/x unreadable".into()),
            RelayError::QueueFailed("/var/lib/sealgate/queue: No space left".into()),
        ];
        for e in cases {
            let text = e.reply().to_string();
            for secret in ["policy]", "/var/", "Permission", "No space"] {
                assert!(!text.contains(secret), "{text} leaks {secret}");
            }
        }
    }

    #[test]
    fn every_upstream_failure_is_temporary_with_an_enhanced_code() {
        let io = || std::io::Error::other("x");
        let all = [
            UpstreamError::Connect(io()),
            UpstreamError::Timeout(Phase::FinalReply),
            UpstreamError::Closed(Phase::FinalReply),
            UpstreamError::Io {
                phase: Phase::Content,
                source: io(),
            },
            UpstreamError::Malformed {
                phase: Phase::Ehlo,
                source: ReplyError::Malformed,
            },
            UpstreamError::Refused {
                phase: Phase::Greeting,
                reply: Reply::new(554, "5.0.0", "go away"),
            },
            UpstreamError::NoStartTls,
            UpstreamError::StartTlsRefused(Reply::new(454, "4.7.0", "no")),
            UpstreamError::InjectedAfterStartTls,
            UpstreamError::Certificate("expired".into()),
            UpstreamError::Handshake("protocol version".into()),
            UpstreamError::Identity(IdentityError::NotOffered("XCLIENT")),
            UpstreamError::IdentityRefused {
                phase: Phase::Xclient,
                reply: Reply::new(550, "5.7.0", "insufficient authorization"),
            },
        ];
        for e in all {
            let r = upstream(&e);
            assert!(r.is_transient(), "{e}: {r}");
            assert_eq!(r.status().map(|s| s.0), Some(4), "{e}");
        }
        assert_eq!(upstream(&UpstreamError::NoStartTls).code(), 454);
        let r = upstream(&UpstreamError::Identity(IdentityError::NotOffered(
            "XCLIENT",
        )));
        assert_eq!(
            (r.code(), r.status().map(|s| (s.0, s.1, s.2))),
            (451, Some((4, 7, 0)))
        );
        assert_eq!(
            upstream(&UpstreamError::Certificate(String::new()))
                .status()
                .map(|s| (s.1, s.2)),
            Some((7, 5))
        );
    }
}
