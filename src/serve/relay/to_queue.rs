//! A copy failed after earlier copies were accepted: it and every copy not yet sent are
//! sealed and written to the queue, durably, before the client hears 250 (SECURITY.md I4).
//! Encrypted copies are queued sealed, never in plaintext. If the queue cannot take them,
//! nothing of them remains and the client gets `452 4.3.1`.

use std::sync::Arc;

use super::copies::Recipients;
use super::RelayBackend;
use crate::policy::Outcome;
use crate::queue::store::new_id;
use crate::queue::{
    reply_line, unix_now, Meta, Queue, RcptState, Recipient, StoredPath, Verdict, META_VERSION,
};
use crate::serve::replies::RelayError;
use crate::smtp::command::PathWithParams;
use crate::smtp::Reply;
use crate::transform::Sealing;

/// How the copy that sent a message to the queue failed.
pub(super) enum Failed {
    /// It could not be sealed: nothing to queue, its recipients are returned to the sender.
    Sealing(Reply),
    Delivery {
        recipients: Vec<usize>,
        encrypted: bool,
        content: Vec<u8>,
        verdicts: Vec<Verdict>,
    },
}

/// What one queue entry is made of, before it gets its envelope and times.
struct Entry {
    recipients: Vec<Recipient>,
    encrypted: bool,
    content: Vec<u8>,
    reason: String,
}

impl RelayBackend {
    /// Copy `from` failed (`failed`) after copies `0..from` were accepted.
    pub(super) async fn queue_rest(
        &mut self,
        mail: &PathWithParams,
        sealing: &Arc<Sealing>,
        recipients: &Recipients,
        from: usize,
        failed: Failed,
    ) -> Result<Reply, RelayError> {
        let queue = self
            .pipeline
            .queue
            .clone()
            .ok_or(RelayError::PartlyDelivered(
                "no queue for the copies not delivered".into(),
            ))?;
        let total = sealing.len();
        let reason = failure_reason(&failed, from, total);
        let mut batch = queue.batch();
        let mut counts = (0usize, 0usize); // recipients waiting, recipients failed for good
        let mut entry = Some(failed_entry(
            failed,
            sealing,
            recipients,
            from,
            reason.clone(),
        ));
        let mut next = from + 1;
        while let Some(e) = entry.take() {
            counts.0 += e
                .recipients
                .iter()
                .filter(|r| r.state == RcptState::Pending)
                .count();
            counts.1 += e
                .recipients
                .iter()
                .filter(|r| r.state == RcptState::Failed)
                .count();
            let meta = self.meta(&queue, mail, &e);
            if let Err(err) = batch.add(meta, e.content).await {
                batch.abort().await;
                return Err(RelayError::QueueFailed(format!(
                    "{}: {err}",
                    queue.config().dir.display()
                )));
            }
            if next < total {
                let why = format!("copy {} of {total} not sent: {reason}", next + 1);
                entry = Some(self.unsent_entry(sealing, recipients, next, why).await);
                next += 1;
            }
        }
        let queued = batch.len();
        if let Err(err) = batch.commit().await {
            return Err(RelayError::QueueFailed(format!(
                "{}: {err}",
                queue.config().dir.display()
            )));
        }
        tracing::warn!(session = %self.id, accepted = from, total, queued, waiting = counts.0, failed = counts.1,
            queue = %queue.config().dir.display(), reason = %reason, "later copies queued after earlier ones were accepted");
        Ok(Reply::new(
            250,
            "2.0.0",
            format!("OK: {from} of {total} copies accepted, {queued} queued for delivery"),
        ))
    }

    /// Copy `i`, not sent yet: sealed and pending, or failed for good if it cannot be sealed.
    async fn unsent_entry(
        &self,
        sealing: &Arc<Sealing>,
        recipients: &Recipients,
        i: usize,
        reason: String,
    ) -> Entry {
        match self.seal_one(sealing, recipients, i).await {
            Ok(copy) => Entry {
                recipients: copy
                    .recipients
                    .iter()
                    .map(|&r| recipient(recipients, r, RcptState::Pending, None))
                    .collect(),
                encrypted: matches!(copy.seal, Outcome::Smime | Outcome::Openpgp),
                content: copy.content,
                reason,
            },
            Err(e) => unsealed_entry(sealing, recipients, i, &e.reply(), reason),
        }
    }

    /// The queue's record of an entry: the envelope without SIZE (the sealed size differs),
    /// due at once when a DSN is owed (RFC 3464: a permanent failure is reported now), else
    /// after the first retry interval.
    fn meta(&self, queue: &Queue, mail: &PathWithParams, e: &Entry) -> Meta {
        let now = unix_now();
        let mut sender = StoredPath::from(mail);
        sender.params.retain(|(k, _)| k != "SIZE");
        let tried = e.recipients.iter().any(|r| r.reply.is_some());
        let wait = e.recipients.iter().any(|r| r.state == RcptState::Pending)
            && !e.recipients.iter().any(|r| r.state == RcptState::Failed);
        Meta {
            version: META_VERSION,
            id: new_id(now),
            session: self.id.clone(),
            sender,
            recipients: e.recipients.clone(),
            encrypted: e.encrypted,
            created: now,
            attempts: u32::from(tried),
            next_attempt: if wait {
                now + queue.config().retry_initial.as_secs()
            } else {
                0
            },
            last_reply: e.recipients.iter().find_map(|r| r.reply.clone()),
            reason: e.reason.clone(),
            size: e.content.len() as u64,
            bounce_requested: false,
            client: Some(self.client.clone()),
        }
    }
}

/// The log's and the queue's words for the first failure.
fn failure_reason(failed: &Failed, from: usize, total: usize) -> String {
    match failed {
        Failed::Delivery { verdicts, .. } => verdicts
            .iter()
            .find(|v| !matches!(v, Verdict::Delivered(_)))
            .map(|v| format!("copy {} of {total}: {}", from + 1, reply_line(v.reply())))
            .unwrap_or_default(),
        Failed::Sealing(r) => format!("copy {} of {total} not sealed: {}", from + 1, reply_line(r)),
    }
}

/// The entry of the copy that failed: each recipient's verdict kept.
fn failed_entry(
    failed: Failed,
    sealing: &Sealing,
    recipients: &Recipients,
    from: usize,
    reason: String,
) -> Entry {
    match failed {
        Failed::Delivery {
            recipients: copy,
            encrypted,
            content,
            verdicts,
        } => Entry {
            recipients: copy
                .iter()
                .zip(&verdicts)
                .map(|(&r, v)| {
                    let state = match v {
                        Verdict::Delivered(_) => RcptState::Delivered,
                        Verdict::Temporary(_) => RcptState::Pending,
                        Verdict::Permanent(_) => RcptState::Failed,
                    };
                    recipient(recipients, r, state, Some(reply_line(v.reply())))
                })
                .collect(),
            encrypted,
            content,
            reason,
        },
        Failed::Sealing(reply) => unsealed_entry(sealing, recipients, from, &reply, reason),
    }
}

/// A copy that could not be sealed: nothing to keep (and never the plaintext); its
/// recipients are returned to the sender.
fn unsealed_entry(
    sealing: &Sealing,
    recipients: &Recipients,
    i: usize,
    reply: &Reply,
    reason: String,
) -> Entry {
    Entry {
        recipients: sealing
            .recipients(i)
            .iter()
            .map(|&r| recipient(recipients, r, RcptState::Failed, Some(reply_line(reply))))
            .collect(),
        encrypted: true,
        content: Vec::new(),
        reason,
    }
}

fn recipient(
    recipients: &Recipients,
    r: usize,
    state: RcptState,
    reply: Option<String>,
) -> Recipient {
    Recipient {
        path: recipients
            .get(r)
            .map(|a| StoredPath::from(&a.path))
            .unwrap_or(StoredPath {
                address: String::new(),
                params: Vec::new(),
            }),
        state,
        reply,
        reported: false,
        delay_reported: false,
    }
}
