//! The relay backend: pairs each client session with one upstream session, applies the policy
//! (recipients at RCPT time, the message at end of data), and passes the upstream's verdicts
//! back. Upstream failures become temporary replies; nothing is acknowledged that the upstream
//! did not accept for every copy (SECURITY.md I3, I4, I5, I6).

use std::sync::Arc;
use std::time::SystemTime;

use crate::address::Address;
use crate::policy::{decide_recipient, Outcome};
use crate::queue::store::new_id;
use crate::queue::{
    reply_line, unix_now, Meta, Queue, RcptState, Recipient as QRecipient, StoredPath, Verdict,
    META_VERSION,
};
use crate::serve::driver::Backend;
use crate::smtp::auth::AuthObserver;
use crate::smtp::command::PathWithParams;
use crate::smtp::spool::Spool;
use crate::smtp::{Reply, Secret, UpstreamFeatures};
use crate::transform::{
    self, AcceptedRecipient, Envelope, KeySource, Plan, ReadyCopy, Sealing, Settings,
};
use crate::upstream::{ClientIdentity, Connector, ForwardClient, Phase, Ready, UpstreamError};

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

/// How long a message waits for sealing memory before it gets `451 4.3.1`.
const MEMORY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Message memory that planning and sealing may hold at once over all sessions
/// (`limits.max_sealing_memory`), counted in KiB. A message holds about four times its size
/// while it is planned and sealed (content, canonical form, signed and encrypted copy).
pub struct MemoryBudget {
    permits: Arc<tokio::sync::Semaphore>,
    total_kib: u32,
}

impl MemoryBudget {
    pub fn new(bytes: u64) -> Self {
        let total_kib = u32::try_from((bytes / 1024).max(1)).unwrap_or(u32::MAX);
        MemoryBudget {
            permits: Arc::new(tokio::sync::Semaphore::new(total_kib as usize)),
            total_kib,
        }
    }

    /// What a message of `size` bytes is charged.
    fn charge(&self, size: u64) -> u32 {
        let kib = size.saturating_mul(4) / 1024 + 1;
        u32::try_from(kib).unwrap_or(u32::MAX).min(self.total_kib)
    }

    /// Waits (briefly) for the memory a message of `size` bytes needs.
    async fn reserve(&self, size: u64) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let permits = self.permits.clone().acquire_many_owned(self.charge(size));
        tokio::time::timeout(MEMORY_WAIT, permits).await.ok()?.ok()
    }

    /// KiB currently held by messages being planned or sealed.
    pub fn in_use_kib(&self) -> u32 {
        self.total_kib
            .saturating_sub(u32::try_from(self.permits.available_permits()).unwrap_or(u32::MAX))
    }
}

enum Slot {
    /// No upstream session (not yet opened, or dropped after a failure).
    Idle,
    Ready(Box<Ready>),
    /// The first connection attempt failed; reported at the next MAIL, then retried.
    Failed(UpstreamError),
}

/// The transaction as accepted so far: `paths[i]` is the RCPT of `accepted[i]`.
struct Txn {
    mail: PathWithParams,
    paths: Vec<PathWithParams>,
    accepted: Vec<AcceptedRecipient>,
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
            && matches!(self.slot, Slot::Ready(_))
            && self.told.as_ref() != Some(&(self.client.helo.clone(), self.client.esmtp))
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
        if self.authenticated_as.is_some() {
            self.auth_lost = true;
        }
        e.client_reply()
    }

    fn gone() -> Reply {
        Reply::new(451, "4.4.2", "Upstream connection lost, try again later")
    }

    fn note_auth(&mut self, line: &Secret, reply: &Reply) {
        if let Some(user) = self.auth.observe(line.expose(), reply) {
            // A later upstream session (after a new EHLO) is told the login by XCLIENT.
            self.client.login = Some(user.clone()).filter(|u| !u.is_empty());
            self.authenticated_as = Some(user);
        }
    }

    /// Runs one copy as its own upstream transaction. A recipient the upstream now refuses
    /// fails the whole copy: every recipient of it was promised delivery at RCPT time.
    async fn run_copy(
        &mut self,
        mail: &PathWithParams,
        rcpts: &[&PathWithParams],
        content: Vec<u8>,
    ) -> Result<Reply, UpstreamError> {
        let Slot::Ready(up) = &mut self.slot else {
            return Err(UpstreamError::Closed(Phase::Mail));
        };
        // The sealed size differs from what the client declared.
        let mut mail = mail.clone();
        mail.params.retain(|(k, _)| k != "SIZE");
        let reply = up.mail(&mail, Some(&self.client), &self.id).await?;
        if !reply.is_positive() {
            return Ok(reply.with_enhanced_default());
        }
        for rcpt in rcpts {
            let reply = up.rcpt(rcpt).await?;
            if !reply.is_positive() {
                up.rset().await?;
                return Ok(reply.with_enhanced_default());
            }
        }
        up.send_message(&mut Spool::from_bytes(content)).await
    }

    /// Every copy must fit the upstream's SIZE before the first one is sent: a copy refused
    /// for its size after others were accepted would make the client retry (and duplicate)
    /// for ever. Copies whose bound is above the limit are sealed to measure them.
    async fn check_sizes(
        &mut self,
        sealing: &Arc<Sealing>,
        accepted: &Arc<Vec<AcceptedRecipient>>,
    ) -> Result<(), Reply> {
        let limit = match self.ready().and_then(|up| up.features().size) {
            Some(limit) if limit > 0 => limit,
            _ => return Ok(()),
        };
        for i in 0..sealing.len() {
            if sealing.size_bound(i) <= limit {
                continue;
            }
            let (s, a, p) = (sealing.clone(), accepted.clone(), self.pipeline.clone());
            let size = tokio::task::spawn_blocking(move || {
                s.seal(i, &a, &p.settings.seal, SystemTime::now())
                    .map(|c| c.content.len() as u64)
            })
            .await
            .unwrap_or(Ok(0))?;
            if size > limit {
                tracing::info!(session = %self.id, copy = i, size, limit, "sealed copy exceeds the upstream's SIZE");
                return Err(Reply::new(
                    552,
                    "5.3.4",
                    "Message too big for the upstream once encrypted and signed",
                ));
            }
        }
        Ok(())
    }

    /// Seals and sends the copies one at a time (memory bounded by the message, not by the
    /// number of copies). Each copy is sealed before its transaction opens (I5).
    async fn send_copies(
        &mut self,
        mail: &PathWithParams,
        paths: &[PathWithParams],
        sealing: Arc<Sealing>,
        accepted: Arc<Vec<AcceptedRecipient>>,
    ) -> Reply {
        let Some(up) = self.ready() else {
            return Self::gone();
        };
        // The transaction opened for the RCPT verdicts is replaced by one per copy.
        match up.rset().await {
            Ok(r) if r.is_positive() => {}
            Ok(r) => {
                return self.lost(UpstreamError::Refused {
                    phase: Phase::Rset,
                    reply: r,
                })
            }
            Err(e) => return self.lost(e),
        }
        let total = sealing.len();
        // Every copy's recipients index both lists: a mismatch would drop a recipient unseen.
        if paths.len() != accepted.len() {
            tracing::error!(session = %self.id, "recipient lists out of step");
            return Reply::new(451, "4.3.0", "Local error in processing, try again later");
        }
        if let Err(reply) = self.check_sizes(&sealing, &accepted).await {
            return reply;
        }
        let mut done = 0;
        let mut last = Reply::new(250, "2.0.0", "OK");
        for i in 0..total {
            let copy = match self.seal_one(&sealing, &accepted, i).await {
                Ok(copy) => copy,
                Err(reply) if done == 0 => return reply,
                Err(reply) => {
                    let failed = Failed::Sealing(reply);
                    return self
                        .queue_rest(mail, paths, &sealing, &accepted, i, failed, done)
                        .await;
                }
            };
            let rcpts: Vec<PathWithParams> = copy
                .recipients
                .iter()
                .filter_map(|&r| paths.get(r).cloned())
                .collect();
            // The first copy: its failure is the client's reply (nothing was accepted yet).
            if done == 0 || self.pipeline.queue.is_none() {
                let refs: Vec<&PathWithParams> = rcpts.iter().collect();
                let failure = match self.run_copy(mail, &refs, copy.content).await {
                    Ok(r) if r.is_positive() => {
                        done += 1;
                        last = r;
                        continue;
                    }
                    Ok(r) => r.with_enhanced_default(),
                    Err(e) => self.lost(e),
                };
                if done == 0 {
                    return failure;
                }
                tracing::warn!(session = %self.id, accepted = done, total, reply = %failure, "a later copy failed after earlier ones were accepted and there is no queue");
                return Reply::new(
                    451,
                    "4.3.0",
                    "Delivery of part of the copies failed; retry (recipients already served may get a duplicate)",
                );
            }
            // A later copy: a verdict per recipient; whatever is not delivered is queued.
            let mut content = Spool::from_bytes(copy.content);
            let (verdicts, error) = match &mut self.slot {
                Slot::Ready(up) => {
                    crate::queue::deliver(
                        up,
                        mail,
                        &rcpts,
                        &mut content,
                        Some(&self.client),
                        &self.id,
                    )
                    .await
                }
                _ => {
                    let gone = Verdict::Temporary(Self::gone());
                    (vec![gone; rcpts.len()], None)
                }
            };
            if let Some(e) = error {
                let _ = self.lost(e);
            }
            if verdicts.iter().all(|v| matches!(v, Verdict::Delivered(_))) {
                done += 1;
                continue;
            }
            // In memory (never spilled): cannot fail; if it did, never queue an empty copy.
            let content = match content.into_bytes() {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(session = %self.id, error = %e, "sealed copy unreadable");
                    return Reply::new(451, "4.3.0", "Local error in processing, try again later");
                }
            };
            let failed = Failed::Delivery {
                recipients: copy.recipients,
                encrypted: matches!(copy.seal, Outcome::Smime | Outcome::Openpgp),
                content,
                verdicts,
            };
            return self
                .queue_rest(mail, paths, &sealing, &accepted, i, failed, done)
                .await;
        }
        if total == 1 {
            last.with_enhanced_default()
        } else {
            Reply::new(250, "2.0.0", format!("OK: {total} copies accepted"))
        }
    }

    async fn seal_one(
        &self,
        sealing: &Arc<Sealing>,
        accepted: &Arc<Vec<AcceptedRecipient>>,
        i: usize,
    ) -> Result<ReadyCopy, Reply> {
        let (s, a, p) = (sealing.clone(), accepted.clone(), self.pipeline.clone());
        let sealed =
            tokio::task::spawn_blocking(move || s.seal(i, &a, &p.settings.seal, SystemTime::now()))
                .await;
        sealed.unwrap_or_else(|e| {
            tracing::error!(session = %self.id, error = %e, "sealing task failed");
            Err(Reply::new(
                451,
                "4.3.0",
                "Local error in processing, try again later",
            ))
        })
    }

    /// Copy `from` failed after earlier copies were accepted: it and every copy not yet sent
    /// are sealed and written to the queue, durably, before the client hears 250 (I4). If the
    /// queue cannot take them, nothing of them remains and the client gets `452 4.3.1`.
    #[allow(clippy::too_many_arguments)]
    async fn queue_rest(
        &mut self,
        mail: &PathWithParams,
        paths: &[PathWithParams],
        sealing: &Arc<Sealing>,
        accepted: &Arc<Vec<AcceptedRecipient>>,
        from: usize,
        failed: Failed,
        done: usize,
    ) -> Reply {
        let Some(queue) = self.pipeline.queue.clone() else {
            return Reply::new(451, "4.3.0", "Local error in processing, try again later");
        };
        let total = sealing.len();
        let now = unix_now();
        let initial = queue.config().retry_initial.as_secs();
        let mut sender = StoredPath::from(mail);
        sender.params.retain(|(k, _)| k != "SIZE");
        let new_meta =
            |recipients: Vec<QRecipient>, encrypted: bool, size: usize, reason: String| {
                let tried = recipients.iter().any(|r| r.reply.is_some());
                // Due at once when a DSN is owed (RFC 3464: a permanent failure is reported now).
                let wait = recipients.iter().any(|r| r.state == RcptState::Pending)
                    && !recipients.iter().any(|r| r.state == RcptState::Failed);
                let last_reply = recipients.iter().find_map(|r| r.reply.clone());
                Meta {
                    version: META_VERSION,
                    id: new_id(now),
                    session: self.id.clone(),
                    sender: sender.clone(),
                    recipients,
                    encrypted,
                    created: now,
                    attempts: u32::from(tried),
                    next_attempt: if wait { now + initial } else { 0 },
                    last_reply,
                    reason,
                    size: size as u64,
                    bounce_requested: false,
                    client: Some(self.client.clone()),
                }
            };
        let rcpt = |r: usize, state: RcptState, reply: Option<String>| QRecipient {
            path: paths.get(r).map(StoredPath::from).unwrap_or(StoredPath {
                address: String::new(),
                params: Vec::new(),
            }),
            state,
            reply,
            reported: false,
            delay_reported: false,
        };
        let mut entries: Vec<(Meta, Vec<u8>)> = Vec::new();
        let mut batch = queue.batch();
        let mut summary = (0usize, 0usize); // recipients waiting, recipients failed for good
        let reason = match &failed {
            Failed::Delivery { verdicts, .. } => verdicts
                .iter()
                .find(|v| !matches!(v, Verdict::Delivered(_)))
                .map(|v| format!("copy {} of {total}: {}", from + 1, reply_line(v.reply())))
                .unwrap_or_default(),
            Failed::Sealing(r) => {
                format!("copy {} of {total} not sealed: {}", from + 1, reply_line(r))
            }
        };
        match failed {
            Failed::Delivery {
                recipients,
                encrypted,
                content,
                verdicts,
            } => {
                let rs = recipients
                    .iter()
                    .zip(&verdicts)
                    .map(|(&r, v)| {
                        let state = match v {
                            Verdict::Delivered(_) => RcptState::Delivered,
                            Verdict::Temporary(_) => RcptState::Pending,
                            Verdict::Permanent(_) => RcptState::Failed,
                        };
                        rcpt(r, state, Some(reply_line(v.reply())))
                    })
                    .collect();
                entries.push((
                    new_meta(rs, encrypted, content.len(), reason.clone()),
                    content,
                ));
            }
            Failed::Sealing(reply) => {
                // Nothing sealed to keep (and never the plaintext): returned to the sender.
                let rs = sealing
                    .recipients(from)
                    .iter()
                    .map(|&r| rcpt(r, RcptState::Failed, Some(reply_line(&reply))))
                    .collect();
                entries.push((new_meta(rs, true, 0, reason.clone()), Vec::new()));
            }
        }
        let mut next = from + 1;
        loop {
            for (meta, content) in entries.drain(..) {
                summary.0 += meta.pending().count();
                summary.1 += meta
                    .recipients
                    .iter()
                    .filter(|r| r.state == RcptState::Failed)
                    .count();
                let id = meta.id.clone();
                if let Err(e) = batch.add(meta, content).await {
                    tracing::error!(session = %self.id, entry = %id, queue = %queue.config().dir.display(), error = %e, "cannot write to the queue");
                    batch.abort().await;
                    return Self::no_room();
                }
            }
            if next >= total {
                break;
            }
            let j = next;
            next += 1;
            let why = format!("copy {} of {total} not sent: {reason}", j + 1);
            match self.seal_one(sealing, accepted, j).await {
                Ok(copy) => {
                    let rs = copy
                        .recipients
                        .iter()
                        .map(|&r| rcpt(r, RcptState::Pending, None))
                        .collect();
                    let encrypted = matches!(copy.seal, Outcome::Smime | Outcome::Openpgp);
                    entries.push((
                        new_meta(rs, encrypted, copy.content.len(), why),
                        copy.content,
                    ));
                }
                Err(reply) => {
                    let rs = sealing
                        .recipients(j)
                        .iter()
                        .map(|&r| rcpt(r, RcptState::Failed, Some(reply_line(&reply))))
                        .collect();
                    entries.push((new_meta(rs, true, 0, why), Vec::new()));
                }
            }
        }
        let queued = batch.len();
        if let Err(e) = batch.commit().await {
            tracing::error!(session = %self.id, queue = %queue.config().dir.display(), error = %e, "cannot commit to the queue");
            return Self::no_room();
        }
        tracing::warn!(session = %self.id, accepted = done, total, queued, waiting = summary.0, failed = summary.1,
            queue = %queue.config().dir.display(), reason = %reason, "later copies queued after earlier ones were accepted");
        Reply::new(
            250,
            "2.0.0",
            format!("OK: {done} of {total} copies accepted, {queued} queued for delivery"),
        )
    }

    fn no_room() -> Reply {
        Reply::new(
            452,
            "4.3.1",
            "Insufficient system storage; retry (recipients already served may get a duplicate)",
        )
    }
}

/// How the copy that sent a message to the queue failed.
enum Failed {
    /// It could not be sealed: nothing to queue, its recipients are returned to the sender.
    Sealing(Reply),
    Delivery {
        recipients: Vec<usize>,
        encrypted: bool,
        content: Vec<u8>,
        verdicts: Vec<Verdict>,
    },
}

impl Backend for RelayBackend {
    async fn features(&mut self, name: &str, esmtp: bool) -> UpstreamFeatures {
        self.client.helo = Some(name.to_string());
        self.client.esmtp = esmtp;
        if self.told_otherwise() {
            tracing::debug!(session = %self.id, "client greeted again under another name; new upstream session");
            self.close().await;
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
        match &self.slot {
            Slot::Ready(r) => {
                let mut features = r.features();
                features.size = features.size.map(transform::client_size_limit);
                features
            }
            _ => UpstreamFeatures::default(),
        }
    }

    async fn mail(&mut self, path: &PathWithParams) -> Reply {
        self.txn = None;
        // The reverse-path in the one canonical form (the null path `<>` stays as it is).
        let mut path = path.clone();
        if !path.address.is_empty() {
            match Address::parse(&path.address) {
                Ok(a) => path.address = a.as_str().to_string(),
                Err(_) => return Reply::new(553, "5.1.7", "Bad sender address syntax"),
            }
        }
        let path = &path;
        if self.auth_lost {
            return Reply::new(
                451,
                "4.4.2",
                "Upstream connection lost; reconnect and authenticate again",
            );
        }
        match std::mem::replace(&mut self.slot, Slot::Idle) {
            Slot::Failed(e) => return e.client_reply(),
            Slot::Idle => match self.open().await {
                Ok(r) => self.slot = Slot::Ready(Box::new(r)),
                Err(e) => return self.lost(e),
            },
            other => self.slot = other,
        }
        let Slot::Ready(up) = &mut self.slot else {
            return Self::gone();
        };
        let reply = match up.mail(path, Some(&self.client), &self.id).await {
            Ok(reply) => reply.with_enhanced_default(),
            // A session kept idle while the client was slow may have been closed by the
            // upstream: open a fresh one once (nothing was accepted on the old one).
            Err(UpstreamError::Closed(_) | UpstreamError::Io { .. })
                if self.authenticated_as.is_none() =>
            {
                tracing::debug!(session = %self.id, "upstream session was closed; reconnecting");
                self.slot = Slot::Idle;
                let mut fresh = match self.open().await {
                    Ok(r) => r,
                    Err(e) => return self.lost(e),
                };
                let reply = fresh.mail(path, Some(&self.client), &self.id).await;
                self.slot = Slot::Ready(Box::new(fresh));
                match reply {
                    Ok(reply) => reply.with_enhanced_default(),
                    Err(e) => return self.lost(e),
                }
            }
            Err(e) => return self.lost(e),
        };
        if reply.is_positive() {
            self.txn = Some(Txn {
                mail: path.clone(),
                paths: Vec::new(),
                accepted: Vec::new(),
            });
        }
        reply
    }

    async fn rcpt(&mut self, path: &PathWithParams) -> Reply {
        // Parsed once: the rules, the keys, the copies and the upstream all see this one form
        // (SECURITY.md I12), so no spelling of a mailbox escapes a rule.
        let Ok(address) = Address::parse(&path.address) else {
            return Reply::new(553, "5.1.3", "Bad recipient address syntax");
        };
        let mut path = path.clone();
        path.address = address.as_str().to_string();
        // The store may be busy (handed to a key command) for a moment: not on the reactor.
        let source = self.pipeline.keys.clone();
        let lookup = address.clone();
        let looked_up = tokio::task::spawn_blocking(move || {
            source.recipient(lookup.as_str(), SystemTime::now())
        })
        .await;
        let keys =
            match looked_up.unwrap_or_else(|e| Err(transform::KeysUnavailable(e.to_string()))) {
                Ok(k) => k,
                Err(e) => {
                    tracing::warn!(session = %self.id, error = %e, "recipient keys unavailable");
                    return Reply::new(
                        451,
                        "4.3.0",
                        "Key store temporarily unavailable, try again later",
                    );
                }
            };
        let decision = decide_recipient(
            &self.pipeline.settings.policy,
            &address,
            &keys.availability(),
            false,
        );
        if let Some(refusal) = decision.refusal() {
            tracing::info!(session = %self.id, recipient = %address, reason = %decision.reason, "recipient refused by policy");
            return refusal;
        }
        let Some(up) = self.ready() else {
            return Self::gone();
        };
        let reply = match up.rcpt(&path).await {
            Ok(reply) => reply.with_enhanced_default(),
            Err(e) => return self.lost(e),
        };
        if let (true, Some(txn)) = (reply.is_positive(), self.txn.as_mut()) {
            txn.paths.push(path);
            txn.accepted.push(AcceptedRecipient {
                address,
                decision,
                keys,
            });
        }
        reply
    }

    async fn message(&mut self, content: Spool) -> Reply {
        let Some(txn) = self.txn.take() else {
            return Self::gone();
        };
        if self.ready().is_none() {
            return Self::gone();
        }
        // Transform first, upstream DATA after (I5): read the content, decide and seal, all off
        // the async reactor.
        let Txn {
            mail,
            paths,
            accepted,
        } = txn;
        // The memory budget (SECURITY.md I9): held until the last copy is sent.
        let Some(_memory) = self.pipeline.memory.reserve(content.len()).await else {
            tracing::warn!(session = %self.id, size = content.len(), "sealing memory budget exhausted");
            self.reset().await;
            return Reply::new(
                451,
                "4.3.1",
                "Insufficient system resources, try again later",
            );
        };
        let pipeline = self.pipeline.clone();
        let authenticated = self.authenticated_as.clone();
        let sign_without_auth = self.sign_without_auth;
        let from = mail.address.clone();
        let started = std::time::Instant::now();
        let planned = tokio::task::spawn_blocking(move || {
            let message = match content.into_bytes() {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read spooled message");
                    return Err(Reply::new(
                        451,
                        "4.3.0",
                        "Local error in processing, try again later",
                    ));
                }
            };
            let envelope = Envelope {
                from: &from,
                authenticated: authenticated.as_deref(),
                sign_without_auth,
                recipients: &accepted,
            };
            let plan = transform::plan_message(
                message,
                &envelope,
                &pipeline.settings,
                pipeline.keys.as_ref(),
                SystemTime::now(),
            );
            plan.map(|p| (p, accepted))
        })
        .await;
        let (plan, accepted) = match planned {
            Ok(Ok(planned)) => planned,
            Ok(Err(reply)) => {
                // Refused before anything was sent: close the upstream transaction too.
                self.reset().await;
                return reply;
            }
            Err(e) => {
                tracing::error!(session = %self.id, error = %e, "policy task failed");
                self.reset().await;
                return Reply::new(451, "4.3.0", "Local error in processing, try again later");
            }
        };
        let (summary, reply) = match plan {
            Plan::Passthrough(bytes) => {
                let Some(up) = self.ready() else {
                    return Self::gone();
                };
                let reply = match up.send_message(&mut Spool::from_bytes(bytes)).await {
                    Ok(reply)
                        if reply.is_positive() || reply.is_transient() || reply.is_permanent() =>
                    {
                        reply.with_enhanced_default()
                    }
                    // A 1xx/3xx final reply is a protocol error: never pass it off as success.
                    Ok(_) => self.lost(UpstreamError::Malformed {
                        phase: Phase::FinalReply,
                        source: crate::smtp::ReplyError::Malformed,
                    }),
                    Err(e) => self.lost(e),
                };
                ("as is".to_string(), reply)
            }
            Plan::Copies(sealing) => {
                let summary = sealing.summary();
                let reply = self
                    .send_copies(&mail, &paths, Arc::from(sealing), Arc::new(accepted))
                    .await;
                (summary, reply)
            }
        };
        let elapsed_ms = started.elapsed().as_millis() as u64;
        tracing::info!(session = %self.id, copies = %summary, elapsed_ms, reply = %reply, "policy applied");
        reply
    }

    async fn reset(&mut self) {
        self.txn = None;
        if let Some(up) = self.ready() {
            match up.rset().await {
                Ok(r) if r.is_positive() => {}
                Ok(r) => {
                    let _ = self.lost(UpstreamError::Refused {
                        phase: Phase::Rset,
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
                self.note_auth(line, &reply);
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
        if let Slot::Ready(r) = std::mem::replace(&mut self.slot, Slot::Idle) {
            r.quit().await
        }
    }
}
