//! End of data: the message is planned off the reactor (policy and transform, pure), then
//! sent: as is in the transaction already open upstream, or as copies, each sealed before
//! its own upstream transaction opens (I5), one at a time so memory stays bounded by the
//! message. A later copy that fails goes to the queue ([`super::to_queue`]).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::slot::Slot;
use super::{RelayBackend, Txn};
use crate::policy::Outcome;
use crate::queue::Verdict;
use crate::serve::replies::RelayError;
use crate::smtp::command::PathWithParams;
use crate::smtp::spool::Spool;
use crate::smtp::Reply;
use crate::transform::{self, AcceptedRecipient, Envelope, Plan, ReadyCopy, Refusal, Sealing};
use crate::upstream::{Mail, Phase, UpstreamError};

/// The recipients of a transaction, shared with the blocking threads that seal for them.
pub(super) type Recipients = Arc<Vec<AcceptedRecipient>>;

/// How a copy after the first went.
pub(super) enum LaterCopy {
    Delivered,
    /// It (or its sealing) failed: it and the copies after it go to the queue.
    Failed(super::to_queue::Failed),
}

impl RelayBackend {
    /// The complete message: planned, then sent. The reply is the client's final reply.
    pub(super) async fn deliver(&mut self, content: Spool) -> Result<Reply, RelayError> {
        let txn = self.txn.take().ok_or(RelayError::UpstreamGone)?;
        self.in_transaction()?;
        // The memory budget (SECURITY.md I9): held until the last copy is sent.
        let Some(_memory) = self.pipeline.memory.reserve(content.len()).await else {
            tracing::warn!(session = %self.id, size = content.len(), "sealing memory budget exhausted");
            let _ = self.upstream_rset().await;
            return Err(RelayError::MemoryExhausted);
        };
        let started = Instant::now();
        let mail = txn.mail.clone();
        let (plan, recipients) = match self.plan(content, txn).await {
            Ok(planned) => planned,
            Err(e) => {
                // Refused before anything was sent: close the upstream transaction too.
                let _ = self.upstream_rset().await;
                return Err(e);
            }
        };
        let (summary, result) = match plan {
            Plan::Passthrough(bytes) => ("as is".to_string(), self.send_as_is(bytes).await),
            Plan::Copies(sealing) => {
                let summary = sealing.summary();
                let sealing = Arc::from(sealing);
                (
                    summary,
                    self.send_copies(&mail, sealing, Arc::new(recipients)).await,
                )
            }
        };
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let reply = result.as_ref().map_or_else(|e| e.reply(), Clone::clone);
        tracing::info!(session = %self.id, copies = %summary, elapsed_ms, reply = %reply, "policy applied");
        result
    }

    /// Reads the content and plans the message on a blocking thread.
    async fn plan(
        &self,
        content: Spool,
        txn: Txn,
    ) -> Result<(Plan, Vec<AcceptedRecipient>), RelayError> {
        let pipeline = self.pipeline.clone();
        let authenticated = self.authenticated_as.clone();
        let sign_without_auth = self.sign_without_auth;
        let planned = tokio::task::spawn_blocking(move || {
            let message = content
                .into_bytes()
                .map_err(|e| RelayError::Local(format!("cannot read the spooled message: {e}")))?;
            let envelope = Envelope {
                from: &txn.mail.address,
                authenticated: authenticated.as_deref(),
                sign_without_auth,
                recipients: &txn.recipients,
            };
            let planned = transform::plan_message(
                message,
                &envelope,
                &pipeline.settings,
                pipeline.keys.as_ref(),
                SystemTime::now(),
            )?;
            Ok((planned.plan, txn.recipients))
        })
        .await;
        planned.unwrap_or_else(|e| Err(RelayError::Local(format!("planning task failed: {e}"))))
    }

    /// The content as is, in the transaction already open upstream.
    async fn send_as_is(&mut self, bytes: Vec<u8>) -> Result<Reply, RelayError> {
        let Slot::InTransaction(txn) = std::mem::replace(&mut self.slot, Slot::Idle) else {
            return Err(RelayError::UpstreamGone);
        };
        match txn.data(&mut Spool::from_bytes(bytes)).await {
            Ok((ready, reply)) => {
                self.slot = Slot::Ready(Box::new(ready));
                Ok(reply.with_enhanced_default())
            }
            Err(e) => Err(self.lost(e)),
        }
    }

    /// Seals and sends the copies one at a time. The first copy's failure is the client's
    /// reply (nothing was accepted yet); a later one's goes to the queue.
    async fn send_copies(
        &mut self,
        mail: &PathWithParams,
        sealing: Arc<Sealing>,
        recipients: Recipients,
    ) -> Result<Reply, RelayError> {
        // The transaction opened for the RCPT verdicts is replaced by one per copy.
        self.upstream_rset().await?;
        self.ready()?;
        self.check_sizes(&sealing, &recipients).await?;
        let total = sealing.len();
        let first = self.seal_one(&sealing, &recipients, 0).await?;
        let mut last = self.first_copy(mail, &recipients, first).await?;
        for i in 1..total {
            if let LaterCopy::Failed(failed) =
                self.later_copy(mail, &sealing, &recipients, i).await?
            {
                return self
                    .queue_rest(mail, &sealing, &recipients, i, failed)
                    .await;
            }
            last = Reply::new(250, "2.0.0", format!("OK: {total} copies accepted"));
        }
        Ok(last.with_enhanced_default())
    }

    /// The first copy: the upstream's verdict is the client's.
    async fn first_copy(
        &mut self,
        mail: &PathWithParams,
        recipients: &Recipients,
        copy: ReadyCopy,
    ) -> Result<Reply, RelayError> {
        let paths = paths_of(recipients, &copy.recipients);
        match self.run_copy(mail, &paths, copy.content).await {
            Ok(r) if r.is_positive() => Ok(r),
            Ok(r) => Ok(r.with_enhanced_default()),
            Err(e) => Err(self.lost(e)),
        }
    }

    /// A copy after the first: delivered, or failed (then queued, or `451` without a queue).
    async fn later_copy(
        &mut self,
        mail: &PathWithParams,
        sealing: &Arc<Sealing>,
        recipients: &Recipients,
        i: usize,
    ) -> Result<LaterCopy, RelayError> {
        use super::to_queue::Failed;
        let copy = match self.seal_one(sealing, recipients, i).await {
            Ok(copy) => copy,
            Err(e) if self.pipeline.queue.is_some() => {
                return Ok(LaterCopy::Failed(Failed::Sealing(e.reply())));
            }
            Err(e) => return Err(RelayError::PartlyDelivered(e.to_string())),
        };
        let paths = paths_of(recipients, &copy.recipients);
        if self.pipeline.queue.is_none() {
            return match self.run_copy(mail, &paths, copy.content).await {
                Ok(r) if r.is_positive() => Ok(LaterCopy::Delivered),
                Ok(r) => Err(RelayError::PartlyDelivered(r.to_string())),
                Err(e) => Err(RelayError::PartlyDelivered(self.lost(e).to_string())),
            };
        }
        // A verdict per recipient; whatever is not delivered is queued.
        let mut content = Spool::from_bytes(copy.content);
        let verdicts = match self.take_ready().await {
            Ok(up) => {
                let client = Some(&self.client);
                let (verdicts, session) =
                    crate::queue::deliver(up, mail, &paths, &mut content, client, &self.id).await;
                match session {
                    Ok(up) => self.slot = Slot::Ready(Box::new(up)),
                    Err(e) => {
                        let _ = self.lost(e);
                    }
                }
                verdicts
            }
            Err(gone) => vec![Verdict::Temporary(gone.reply()); paths.len()],
        };
        if verdicts.iter().all(|v| matches!(v, Verdict::Delivered(_))) {
            return Ok(LaterCopy::Delivered);
        }
        // In memory (never spilled): cannot fail; if it did, never queue an empty copy.
        let content = content
            .into_bytes()
            .map_err(|e| RelayError::Local(format!("sealed copy unreadable: {e}")))?;
        Ok(LaterCopy::Failed(Failed::Delivery {
            recipients: copy.recipients,
            encrypted: matches!(copy.seal, Outcome::Smime | Outcome::Openpgp),
            content,
            verdicts,
        }))
    }

    /// Runs one copy as its own upstream transaction. A recipient the upstream now refuses
    /// fails the whole copy: every recipient of it was promised delivery at RCPT time.
    async fn run_copy(
        &mut self,
        mail: &PathWithParams,
        rcpts: &[PathWithParams],
        content: Vec<u8>,
    ) -> Result<Reply, UpstreamError> {
        let Ok(up) = self.take_ready().await else {
            return Err(UpstreamError::Closed(Phase::Mail));
        };
        // The sealed size differs from what the client declared.
        let mut mail = mail.clone();
        mail.params.retain(|(k, _)| k != "SIZE");
        let mut txn = match up.mail(&mail, Some(&self.client), &self.id).await? {
            Mail::Accepted(txn, _) => txn,
            refused @ Mail::Refused(..) => return Ok(self.keep(refused).with_enhanced_default()),
        };
        for rcpt in rcpts {
            let reply = txn.rcpt(rcpt).await?;
            if !reply.is_positive() {
                self.slot = Slot::Ready(Box::new(txn.rset().await?));
                return Ok(reply.with_enhanced_default());
            }
        }
        let (ready, reply) = txn.data(&mut Spool::from_bytes(content)).await?;
        self.slot = Slot::Ready(Box::new(ready));
        Ok(reply)
    }

    /// Every copy must fit the upstream's SIZE before the first one is sent: a copy refused
    /// for its size after others were accepted would make the client retry (and duplicate)
    /// for ever. Copies whose bound is above the limit are sealed to measure them.
    async fn check_sizes(
        &mut self,
        sealing: &Arc<Sealing>,
        recipients: &Recipients,
    ) -> Result<(), RelayError> {
        let limit = match self.ready()?.features().size {
            Some(limit) if limit > 0 => limit,
            _ => return Ok(()),
        };
        for i in 0..sealing.len() {
            if sealing.size_bound(i) > limit {
                let size = self.seal_one(sealing, recipients, i).await?.content.len() as u64;
                if size > limit {
                    return Err(RelayError::TooBigOnceSealed { size, limit });
                }
            }
        }
        Ok(())
    }

    /// Seals copy `i` on a blocking thread.
    pub(super) async fn seal_one(
        &self,
        sealing: &Arc<Sealing>,
        recipients: &Recipients,
        i: usize,
    ) -> Result<ReadyCopy, RelayError> {
        let (s, r, p) = (sealing.clone(), recipients.clone(), self.pipeline.clone());
        let sealed =
            tokio::task::spawn_blocking(move || s.seal(i, &r, &p.settings.seal, SystemTime::now()))
                .await;
        match sealed {
            Ok(Ok(copy)) => Ok(copy),
            Ok(Err(refusal)) => {
                if let Refusal::Seal(e) = &refusal {
                    tracing::warn!(session = %self.id, copy = i, error = %e, "sealing failed");
                }
                Err(RelayError::Refused(refusal))
            }
            Err(e) => Err(RelayError::Local(format!("sealing task failed: {e}"))),
        }
    }
}

/// The RCPT paths of a copy's recipients.
pub(super) fn paths_of(recipients: &Recipients, copy: &[usize]) -> Vec<PathWithParams> {
    copy.iter()
        .filter_map(|&r| recipients.get(r).map(|a| a.path.clone()))
        .collect()
}
