//! The relay: pairs each client session with one upstream session, applies the policy
//! (recipients at RCPT time, the message at end of data), and passes the upstream's verdicts
//! back. Nothing is acknowledged that the upstream did not accept for every copy or the queue
//! did not take durably (SECURITY.md I3, I4, I5, I6).
//!
//! [`slot`] keeps the upstream session, [`copies`] plans, seals and sends the copies,
//! [`to_queue`] hands what a later copy could not deliver to the queue, [`memory`] bounds the
//! memory of sealing. Every reply the relay makes itself comes from [`crate::serve::replies`].

mod copies;
mod memory;
mod slot;
mod to_queue;

use std::sync::Arc;
use std::time::SystemTime;

pub use memory::MemoryBudget;

use crate::address::Address;
use crate::queue::Queue;
use crate::serve::driver::Backend;
use crate::serve::replies::RelayError;
use crate::smtp::auth::AuthObserver;
use crate::smtp::command::PathWithParams;
use crate::smtp::spool::Spool;
use crate::smtp::{Reply, Secret, UpstreamFeatures};
use crate::transform::{self, AcceptedRecipient, KeySource, KeysUnavailable, Settings};
use crate::upstream::{ClientIdentity, Connector};
use slot::Slot;

/// What every session of a server shares: the policy, the sealing settings, the keys, and the
/// memory budget of planning and sealing.
pub struct Pipeline {
    pub settings: Settings,
    pub keys: Arc<dyn KeySource>,
    pub memory: MemoryBudget,
    /// Where copies go that fail after an earlier copy was accepted; `None`: such a failure
    /// answers `451 4.3.0` (the client retries; duplicates possible).
    pub queue: Option<Arc<Queue>>,
}

/// The transaction as accepted so far.
struct Txn {
    mail: PathWithParams,
    recipients: Vec<AcceptedRecipient>,
}

pub struct RelayBackend {
    connector: Arc<Connector>,
    pipeline: Arc<Pipeline>,
    slot: Slot,
    id: String,
    txn: Option<Txn>,
    /// Follows AUTH exchanges to learn whom the client authenticated as.
    auth: AuthObserver,
    /// The identity the upstream accepted in AUTH.
    authenticated_as: Option<String>,
    /// The client authenticated through an upstream session that has since been lost.
    auth_lost: bool,
    /// The listener lets unauthenticated clients be signed for.
    sign_without_auth: bool,
    /// Who the client is, for XCLIENT / XFORWARD (SECURITY.md I13).
    client: ClientIdentity,
    /// The HELO name and protocol the current upstream session was given by XCLIENT.
    told: Option<(Option<String>, bool)>,
}

impl RelayBackend {
    /// No upstream session yet: it is opened at the client's EHLO (or, after HELO, its first
    /// MAIL), so port scanners and idle sockets never open TLS sessions to the real MTA.
    /// `peer` is the client's real address (after any PROXY header), `local` where it
    /// connected.
    pub fn new(
        connector: Arc<Connector>,
        pipeline: Arc<Pipeline>,
        id: &str,
        sign_without_auth: bool,
        peer: std::net::SocketAddr,
        local: std::net::SocketAddr,
    ) -> Self {
        RelayBackend {
            client: ClientIdentity {
                peer,
                local,
                helo: None,
                esmtp: true,
                login: None,
            },
            told: None,
            connector,
            pipeline,
            slot: Slot::Idle,
            id: id.to_string(),
            txn: None,
            auth: AuthObserver::default(),
            authenticated_as: None,
            auth_lost: false,
            sign_without_auth,
        }
    }

    /// The one place a relay error becomes the client's reply; its reason goes to the log.
    fn answer(&self, result: Result<Reply, RelayError>) -> Reply {
        match result {
            Ok(reply) => reply,
            Err(e) => {
                match &e {
                    RelayError::Local(_) | RelayError::QueueFailed(_) => {
                        tracing::error!(session = %self.id, reason = %e, "answered with a local error")
                    }
                    _ => tracing::info!(session = %self.id, reason = %e, "refused"),
                }
                e.reply()
            }
        }
    }

    async fn mail(&mut self, path: &PathWithParams) -> Result<Reply, RelayError> {
        self.txn = None;
        // The reverse-path in the one canonical form (the null path `<>` stays as it is).
        let mut path = path.clone();
        if !path.address.is_empty() {
            let address = Address::parse(&path.address).map_err(|_| RelayError::BadSender)?;
            path.address = address.as_str().to_string();
        }
        if self.auth_lost {
            return Err(RelayError::AuthLost);
        }
        let reply = self.upstream_mail(&path).await?;
        if reply.is_positive() {
            self.txn = Some(Txn {
                mail: path,
                recipients: Vec::new(),
            });
        }
        Ok(reply)
    }

    async fn rcpt(&mut self, path: &PathWithParams) -> Result<Reply, RelayError> {
        // Parsed once: the rules, the keys, the copies and the upstream all see this one form
        // (SECURITY.md I12), so no spelling of a mailbox escapes a rule.
        let address = Address::parse(&path.address).map_err(|_| RelayError::BadRecipient)?;
        let mut path = path.clone();
        path.address = address.as_str().to_string();
        // The store may be busy (handed to a key command) for a moment: not on the reactor.
        let pipeline = self.pipeline.clone();
        let upstream_path = path.clone();
        let decided = tokio::task::spawn_blocking(move || {
            let policy = &pipeline.settings.policy;
            transform::decide_at_rcpt(
                policy,
                pipeline.keys.as_ref(),
                path,
                address,
                SystemTime::now(),
            )
        })
        .await
        .unwrap_or_else(|e| Err(KeysUnavailable(e.to_string())));
        let recipient = decided.map_err(|e| RelayError::Refused(e.into()))?;
        if recipient.decision.outcome == crate::policy::Outcome::Refuse {
            return Err(RelayError::RecipientRefused {
                address: recipient.address,
                reason: recipient.decision.reason,
            });
        }
        let reply = match self.in_transaction()?.rcpt(&upstream_path).await {
            Ok(reply) => reply.with_enhanced_default(),
            Err(e) => return Err(self.lost(e)),
        };
        if let (true, Some(txn)) = (reply.is_positive(), self.txn.as_mut()) {
            txn.recipients.push(recipient);
        }
        Ok(reply)
    }

    async fn auth(&mut self, line: &Secret) -> Result<Reply, RelayError> {
        let reply = match self.ready()?.auth(line).await {
            Ok(reply) => reply,
            Err(e) => return Err(self.lost(e)),
        };
        if let Some(user) = self.auth.observe(line.expose(), &reply) {
            // A later upstream session (after a new EHLO) is told the login by XCLIENT.
            self.client.login = Some(user.clone()).filter(|u| !u.is_empty());
            self.authenticated_as = Some(user);
        }
        Ok(if reply.code() == 334 {
            reply
        } else {
            reply.with_enhanced_default()
        })
    }
}

impl Backend for RelayBackend {
    async fn features(&mut self, name: &str, esmtp: bool) -> UpstreamFeatures {
        self.greeted(name, esmtp).await
    }

    async fn mail(&mut self, path: &PathWithParams) -> Reply {
        let result = RelayBackend::mail(self, path).await;
        self.answer(result)
    }

    async fn rcpt(&mut self, path: &PathWithParams) -> Reply {
        let result = RelayBackend::rcpt(self, path).await;
        self.answer(result)
    }

    async fn message(&mut self, content: Spool) -> Reply {
        let result = self.deliver(content).await;
        self.answer(result)
    }

    async fn reset(&mut self) {
        self.txn = None;
        let _ = self.upstream_rset().await;
    }

    async fn auth(&mut self, line: &Secret) -> Reply {
        let result = RelayBackend::auth(self, line).await;
        self.answer(result)
    }

    async fn close(&mut self) {
        self.close_upstream().await
    }
}
