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
