//! What can go wrong with the upstream, and what the client is told about it.

use std::fmt;

use crate::smtp::{Reply, ReplyError};

/// Where in the upstream conversation something happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Connect,
    Greeting,
    Ehlo,
    StartTls,
    Handshake,
    Auth,
    Xclient,
    Xforward,
    Mail,
    Rcpt,
    Data,
    Content,
    FinalReply,
    Rset,
    Quit,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Phase::Connect => "connect",
            Phase::Greeting => "greeting",
            Phase::Ehlo => "EHLO",
            Phase::StartTls => "STARTTLS",
            Phase::Handshake => "TLS handshake",
            Phase::Auth => "AUTH",
            Phase::Xclient => "XCLIENT",
            Phase::Xforward => "XFORWARD",
            Phase::Mail => "MAIL",
            Phase::Rcpt => "RCPT",
            Phase::Data => "DATA",
            Phase::Content => "message content",
            Phase::FinalReply => "final reply",
            Phase::Rset => "RSET",
            Phase::Quit => "QUIT",
        };
        f.write_str(s)
    }
}

/// A failure of the upstream session. The connection is unusable afterwards.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to upstream: {0}")]
    Connect(std::io::Error),
    #[error("upstream timed out during {0}")]
    Timeout(Phase),
    #[error("upstream closed the connection during {0}")]
    Closed(Phase),
    #[error("I/O error with upstream during {phase}: {source}")]
    Io {
        phase: Phase,
        source: std::io::Error,
    },
    #[error("malformed upstream reply during {phase}: {source}")]
    Malformed { phase: Phase, source: ReplyError },
    #[error("upstream refused the session at {phase}: {reply}")]
    Refused { phase: Phase, reply: Reply },
    #[error("upstream does not offer STARTTLS")]
    NoStartTls,
    #[error("upstream refused STARTTLS: {0}")]
    StartTlsRefused(Reply),
    #[error("upstream sent bytes after its 220 to STARTTLS")]
    InjectedAfterStartTls,
    #[error("upstream certificate not accepted: {0}")]
    Certificate(String),
    #[error("TLS handshake with upstream failed: {0}")]
    Handshake(String),
    /// forward_client is configured and the upstream cannot take the client's identity.
    #[error("client identity not forwarded: {0}")]
    Identity(#[from] super::IdentityError),
    #[error("upstream refused {phase}: {reply}")]
    IdentityRefused { phase: Phase, reply: Reply },
}

impl UpstreamError {
    /// The reply the client gets. Every upstream failure is temporary (4xx): the client keeps
    /// the message and retries; nothing is lost (SECURITY.md I3, I4).
    pub fn client_reply(&self) -> Reply {
        match self {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
            UpstreamError::Identity(super::super::IdentityError::NotOffered("XCLIENT")),
            UpstreamError::IdentityRefused {
                phase: Phase::Xclient,
                reply: Reply::new(550, "5.7.0", "insufficient authorization"),
            },
        ];
        for e in all {
            let r = e.client_reply();
            assert!(r.is_transient(), "{e}: {r}");
            assert_eq!(r.status().map(|s| s.0), Some(4), "{e}");
        }
        assert_eq!(UpstreamError::NoStartTls.client_reply().code(), 454);
        let r = UpstreamError::Identity(super::super::IdentityError::NotOffered("XCLIENT"))
            .client_reply();
        assert_eq!(
            (r.code(), r.status().map(|s| (s.0, s.1, s.2))),
            (451, Some((4, 7, 0)))
        );
        assert_eq!(
            UpstreamError::Certificate(String::new())
                .client_reply()
                .status()
                .map(|s| (s.1, s.2)),
            Some((7, 5))
        );
    }
}
