//! The relay backend: pairs each client session with one upstream session and passes the
//! upstream's verdicts back. Upstream failures become temporary replies; nothing is ever
//! acknowledged that the upstream did not accept (SECURITY.md I3, I4).

use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::inbound::Backend;
use crate::smtp::command::PathWithParams;
use crate::smtp::{Reply, Secret, UpstreamFeatures};
use crate::spool::Spool;
use crate::upstream::{Connector, Ready, UpstreamError};

enum Slot {
    /// No upstream session (not yet opened, or dropped after a failure).
    Idle,
    Connecting(JoinHandle<Result<Ready, UpstreamError>>),
    Ready(Box<Ready>),
    /// The first connection attempt failed; reported at the next MAIL, then retried.
    Failed(UpstreamError),
}

pub struct RelayBackend {
    connector: Arc<Connector>,
    slot: Slot,
    id: String,
    /// The client authenticated through an upstream session that has since been lost.
    auth_lost: bool,
    authenticated: bool,
}

impl RelayBackend {
    /// Starts connecting to the upstream at once, while the client is being greeted.
    pub fn new(connector: Arc<Connector>, id: &str) -> Self {
        let c = connector.clone();
        let handle = tokio::spawn(async move { c.connect().await });
        RelayBackend {
            connector,
            slot: Slot::Connecting(handle),
            id: id.to_string(),
            auth_lost: false,
            authenticated: false,
        }
    }

    /// Waits for a pending connection attempt.
    async fn settle(&mut self) {
        if let Slot::Connecting(handle) = &mut self.slot {
            self.slot = match handle.await {
                Ok(Ok(ready)) => Slot::Ready(Box::new(ready)),
                Ok(Err(e)) => {
                    tracing::warn!(session = %self.id, error = %e, "upstream session failed");
                    Slot::Failed(e)
                }
                Err(e) => Slot::Failed(UpstreamError::Handshake(format!(
                    "connect task failed: {e}"
                ))),
            };
        }
    }

    fn ready(&mut self) -> Option<&mut Ready> {
        match &mut self.slot {
            Slot::Ready(r) => Some(r),
            _ => None,
        }
    }

    /// Drops the upstream session after an error and returns the client's reply.
    fn lost(&mut self, e: UpstreamError) -> Reply {
        tracing::warn!(session = %self.id, error = %e, "upstream session lost");
        self.slot = Slot::Idle;
        if self.authenticated {
            self.auth_lost = true;
        }
        e.client_reply()
    }

    fn gone() -> Reply {
        Reply::new(451, "4.4.2", "Upstream connection lost, try again later")
    }
}

impl Backend for RelayBackend {
    async fn features(&mut self) -> UpstreamFeatures {
        self.settle().await;
        match &self.slot {
            Slot::Ready(r) => r.features(),
            _ => UpstreamFeatures::default(),
        }
    }

    async fn mail(&mut self, path: &PathWithParams) -> Reply {
        self.settle().await;
        if self.auth_lost {
            return Reply::new(
                451,
                "4.4.2",
                "Upstream connection lost; reconnect and authenticate again",
            );
        }
        match std::mem::replace(&mut self.slot, Slot::Idle) {
            Slot::Failed(e) => return e.client_reply(),
            Slot::Idle => match self.connector.connect().await {
                Ok(r) => self.slot = Slot::Ready(Box::new(r)),
                Err(e) => return self.lost(e),
            },
            other => self.slot = other,
        }
        let Some(up) = self.ready() else {
            return Self::gone();
        };
        match up.mail(path).await {
            Ok(reply) => reply.with_enhanced_default(),
            // A session kept idle while the client was slow may have been closed by the
            // upstream: open a fresh one once (nothing was accepted on the old one).
            Err(UpstreamError::Closed(_) | UpstreamError::Io { .. }) if !self.authenticated => {
                tracing::debug!(session = %self.id, "upstream session was closed; reconnecting");
                self.slot = Slot::Idle;
                let mut fresh = match self.connector.connect().await {
                    Ok(r) => r,
                    Err(e) => return self.lost(e),
                };
                let reply = fresh.mail(path).await;
                self.slot = Slot::Ready(Box::new(fresh));
                match reply {
                    Ok(reply) => reply.with_enhanced_default(),
                    Err(e) => self.lost(e),
                }
            }
            Err(e) => self.lost(e),
        }
    }

    async fn rcpt(&mut self, path: &PathWithParams) -> Reply {
        let Some(up) = self.ready() else {
            return Self::gone();
        };
        match up.rcpt(path).await {
            Ok(reply) => reply.with_enhanced_default(),
            Err(e) => self.lost(e),
        }
    }

    async fn message(&mut self, content: &mut Spool) -> Reply {
        let Some(up) = self.ready() else {
            return Self::gone();
        };
        match up.send_message(content).await {
            Ok(reply) => {
                if !reply.is_positive() && !reply.is_transient() && !reply.is_permanent() {
                    // A 1xx/3xx final reply is a protocol error: never pass it off as success.
                    return self.lost(UpstreamError::Malformed {
                        phase: crate::upstream::Phase::FinalReply,
                        source: crate::smtp::ReplyError::Malformed,
                    });
                }
                reply.with_enhanced_default()
            }
            Err(e) => self.lost(e),
        }
    }

    async fn reset(&mut self) {
        if let Some(up) = self.ready() {
            match up.rset().await {
                Ok(r) if r.is_positive() => {}
                Ok(r) => {
                    let _ = self.lost(UpstreamError::Refused {
                        phase: crate::upstream::Phase::Rset,
                        reply: r,
                    });
                }
                Err(e) => {
                    let _ = self.lost(e);
                }
            }
        }
    }

    async fn auth(&mut self, line: &Secret) -> Reply {
        let Some(up) = self.ready() else {
            return Self::gone();
        };
        match up.auth(line).await {
            Ok(reply) => {
                if reply.is_positive() {
                    self.authenticated = true;
                }
                if reply.code() == 334 {
                    reply
                } else {
                    reply.with_enhanced_default()
                }
            }
            Err(e) => self.lost(e),
        }
    }

    async fn close(&mut self) {
        match std::mem::replace(&mut self.slot, Slot::Idle) {
            Slot::Ready(r) => r.quit().await,
            Slot::Connecting(h) => h.abort(),
            _ => {}
        }
    }
}
