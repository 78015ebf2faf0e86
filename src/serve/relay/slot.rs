//! The client's upstream session: opened at EHLO (or the first MAIL after HELO), told who the
//! client is (XCLIENT/XFORWARD), replaced when the client greets again under another name,
//! reopened once when the upstream closed it while the client was slow, dropped on error.

use super::RelayBackend;
use crate::serve::replies::RelayError;
use crate::smtp::command::PathWithParams;
use crate::smtp::{Reply, UpstreamFeatures};
use crate::transform;
use crate::upstream::{ForwardClient, InTransaction, Mail, Ready, UpstreamError};

pub(super) enum Slot {
    /// No upstream session (not yet opened, or dropped after a failure).
    Idle,
    Ready(Box<Ready>),
    /// The upstream accepted the client's MAIL.
    InTransaction(Box<InTransaction>),
    /// The first connection attempt failed; reported at the next MAIL, then retried.
    Failed(UpstreamError),
}

impl RelayBackend {
    /// Opens an upstream session that knows who the client is.
    async fn open(&mut self) -> Result<Ready, UpstreamError> {
        let ready = self.connector.connect(Some(&self.client)).await?;
        self.told = Some((self.client.helo.clone(), self.client.esmtp));
        Ok(ready)
    }

    /// The upstream session was told another HELO or protocol than the client's current
    /// one. XCLIENT is once per session (after it the upstream sees the client, which it does
    /// not let send XCLIENT), so the session is replaced.
    fn told_otherwise(&self) -> bool {
        self.connector.forward_client() == ForwardClient::Xclient
            && matches!(self.slot, Slot::Ready(_) | Slot::InTransaction(_))
            && self.told.as_ref() != Some(&(self.client.helo.clone(), self.client.esmtp))
    }

    /// The session, outside a transaction.
    pub(super) fn ready(&mut self) -> Result<&mut Ready, RelayError> {
        match &mut self.slot {
            Slot::Ready(r) => Ok(r),
            _ => Err(RelayError::UpstreamGone),
        }
    }

    /// The session, inside the client's transaction.
    pub(super) fn in_transaction(&mut self) -> Result<&mut InTransaction, RelayError> {
        match &mut self.slot {
            Slot::InTransaction(t) => Ok(t),
            _ => Err(RelayError::UpstreamGone),
        }
    }

    /// Takes the session out of the slot, outside any transaction (one still open is reset).
    pub(super) async fn take_ready(&mut self) -> Result<Ready, RelayError> {
        match std::mem::replace(&mut self.slot, Slot::Idle) {
            Slot::Ready(r) => Ok(*r),
            Slot::InTransaction(t) => t.rset().await.map_err(|e| self.lost(e)),
            Slot::Failed(e) => Err(RelayError::Upstream(e)),
            Slot::Idle => Err(RelayError::UpstreamGone),
        }
    }

    /// Where a transaction left the session.
    pub(super) fn keep(&mut self, mail: Mail) -> crate::smtp::Reply {
        match mail {
            Mail::Accepted(t, reply) => {
                self.slot = Slot::InTransaction(Box::new(t));
                reply
            }
            Mail::Refused(r, reply) => {
                self.slot = Slot::Ready(Box::new(r));
                reply
            }
        }
    }

    /// Drops the upstream session after an error; the error is the client's answer.
    pub(super) fn lost(&mut self, e: UpstreamError) -> RelayError {
        tracing::warn!(session = %self.id, error = %e, "upstream session lost");
        self.slot = Slot::Idle;
        if self.authenticated_as.is_some() {
            self.auth_lost = true;
        }
        RelayError::Upstream(e)
    }

    /// The client greeted: the upstream session for it, and the features to announce (SIZE
    /// with the headroom sealing needs).
    pub(super) async fn greeted(&mut self, name: &str, esmtp: bool) -> UpstreamFeatures {
        self.client.helo = Some(name.to_string());
        self.client.esmtp = esmtp;
        if self.told_otherwise() {
            tracing::debug!(session = %self.id, "client greeted again under another name; new upstream session");
            self.close_upstream().await;
        }
        if matches!(self.slot, Slot::Idle) {
            self.slot = match self.open().await {
                Ok(ready) => Slot::Ready(Box::new(ready)),
                Err(e) => {
                    tracing::warn!(session = %self.id, error = %e, "upstream session failed");
                    Slot::Failed(e)
                }
            };
        }
        let mut features = match &self.slot {
            Slot::Ready(r) => r.features(),
            Slot::InTransaction(t) => t.features(),
            _ => return UpstreamFeatures::default(),
        };
        features.size = features.size.map(transform::client_size_limit);
        features
    }

    /// MAIL on the upstream session, opening one if there is none. A session kept idle while
    /// the client was slow may have been closed by the upstream: a fresh one is opened once
    /// (nothing was accepted on the old one), unless the client authenticated on it.
    pub(super) async fn upstream_mail(
        &mut self,
        path: &PathWithParams,
    ) -> Result<Reply, RelayError> {
        let up = match std::mem::replace(&mut self.slot, Slot::Idle) {
            Slot::Failed(e) => return Err(RelayError::Upstream(e)),
            Slot::Idle => self.open().await.map_err(|e| self.lost(e))?,
            other => {
                self.slot = other;
                self.take_ready().await?
            }
        };
        let mail = match up.mail(path, Some(&self.client), &self.id).await {
            Ok(mail) => mail,
            Err(UpstreamError::Closed(_) | UpstreamError::Io { .. })
                if self.authenticated_as.is_none() =>
            {
                tracing::debug!(session = %self.id, "upstream session was closed; reconnecting");
                let fresh = self.open().await.map_err(|e| self.lost(e))?;
                let mail = fresh.mail(path, Some(&self.client), &self.id).await;
                mail.map_err(|e| self.lost(e))?
            }
            Err(e) => return Err(self.lost(e)),
        };
        Ok(self.keep(mail).with_enhanced_default())
    }

    /// Ends the upstream transaction, if one is open; a failure drops the session.
    pub(super) async fn upstream_rset(&mut self) -> Result<(), RelayError> {
        if let Slot::InTransaction(_) = self.slot {
            let ready = self.take_ready().await?;
            self.slot = Slot::Ready(Box::new(ready));
        }
        Ok(())
    }

    pub(super) async fn close_upstream(&mut self) {
        match std::mem::replace(&mut self.slot, Slot::Idle) {
            Slot::Ready(r) => r.quit().await,
            Slot::InTransaction(t) => t.quit().await,
            _ => {}
        }
    }
}
