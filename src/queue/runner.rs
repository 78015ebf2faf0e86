//! The queue at run time: taking copies in (from the relay, durably, before the client's 250)
//! and the delivery task `serve` starts: rescans the directory every `scan_interval` (or when
//! woken by the relay), delivers what is due over its own verified-TLS upstream sessions with
//! bounded concurrency, retries with exponential back-off, and sends DSNs.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::dsn::{self, Action, DsnContext};
use super::store::{Claim, QueueDir};
use super::{backoff, deliver, reply_line, unix_now, Counters, Meta, RcptState, Verdict};
use crate::config::QueueConfig;
use crate::smtp::command::PathWithParams;
use crate::smtp::spool::Spool;
use crate::upstream::Connector;

pub struct Queue {
    dir: Arc<QueueDir>,
    cfg: QueueConfig,
    wake: Notify,
    /// Entries being worked on by this process (the `flock` claim covers other processes).
    in_flight: Mutex<HashSet<String>>,
    /// Entries not to be tried again before this instant, whatever their metadata says: an
    /// entry whose state cannot be written (disk full) would otherwise be delivered again at
    /// every scan.
    cooldown: Mutex<HashMap<String, Instant>>,
    pub counters: Counters,
    _lock: std::fs::File,
}

/// Copies being queued for one message: written one by one, committed together (one directory
/// fsync) or removed together.
pub struct Batch {
    queue: Arc<Queue>,
    ids: Vec<String>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Writes one entry (content and metadata fsync'd; not yet durable as a directory entry).
    pub async fn add(&mut self, meta: Meta, content: Vec<u8>) -> io::Result<()> {
        let dir = self.queue.dir.clone();
        let id = meta.id.clone();
        blocking(move || dir.write_entry(&meta, &content)).await?;
        self.ids.push(id);
        Ok(())
    }

    /// Makes the whole batch durable. On failure every entry of the batch is removed.
    pub async fn commit(self) -> io::Result<usize> {
        let dir = self.queue.dir.clone();
        let n = self.ids.len();
        match blocking(move || dir.sync_dir()).await {
            Ok(()) => {
                Counters::add(&self.queue.counters.queued, n as u64);
                self.queue.wake.notify_one();
                Ok(n)
            }
            Err(e) => {
                self.abort().await;
                Err(e)
            }
        }
    }

    /// Removes every entry written so far.
    pub async fn abort(self) {
        let dir = self.queue.dir.clone();
        let ids = self.ids;
        let _ = blocking(move || {
            for id in &ids {
                dir.discard(id);
            }
            dir.sync_dir()
        })
        .await;
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)?
}

impl Queue {
    /// Opens (creating) the directory, takes the server's lock on it and removes what a crash
    /// left uncommitted. Blocking: call it at start.
    pub fn open(cfg: &QueueConfig) -> io::Result<Arc<Queue>> {
        let dir = QueueDir::open(&cfg.dir)?;
        let lock = dir.lock_exclusive()?;
        dir.recover()?;
        Ok(Arc::new(Queue {
            dir: Arc::new(dir),
            cfg: cfg.clone(),
            wake: Notify::new(),
            in_flight: Mutex::new(HashSet::new()),
            cooldown: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            _lock: lock,
        }))
    }

    pub fn dir(&self) -> &QueueDir {
        &self.dir
    }

    pub fn config(&self) -> &QueueConfig {
        &self.cfg
    }

    pub fn batch(self: &Arc<Self>) -> Batch {
        Batch {
            queue: self.clone(),
            ids: Vec::new(),
        }
    }

    fn log_counters(&self) {
        let c = self.counters.snapshot();
        tracing::info!(
            queued = c[0].1,
            retried = c[1].1,
            delivered = c[2].1,
            bounced = c[3].1,
            expired = c[4].1,
            "queue counters"
        );
    }

    /// Delivers from the queue until `stop` changes. `hostname` is ours (DSN sender),
    /// `remote` the upstream's (Remote-MTA in DSNs).
    pub async fn run(
        self: Arc<Self>,
        connector: Arc<Connector>,
        hostname: String,
        remote: String,
        mut stop: watch::Receiver<bool>,
    ) {
        let permits = Arc::new(Semaphore::new(self.cfg.concurrency.max(1)));
        let mut tasks = JoinSet::new();
        let names = Arc::new((hostname, remote));
        loop {
            let dir = self.dir.clone();
            match blocking(move || dir.scan()).await {
                Ok(scan) => {
                    for (id, permit) in self.take_due(scan.entries, &permits) {
                        let (queue, connector, names) =
                            (self.clone(), connector.clone(), names.clone());
                        tasks.spawn(async move {
                            queue.work_on(id, &connector, &names).await;
                            drop(permit);
                        });
                    }
                }
                Err(e) => {
                    tracing::error!(queue = %self.cfg.dir.display(), error = %e, "cannot scan the queue")
                }
            }
            while tasks.try_join_next().is_some() {}
            tokio::select! {
                _ = stop.changed() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.cfg.scan_interval) => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        // Attempts in flight are abandoned like in a crash: their entries stay, and a copy
        // the upstream accepted but that was not yet marked may be sent again (at-least-once).
        tasks.shutdown().await;
    }

    /// The entries of a scan to work on now, each marked in flight with its permit: due, not
    /// cooling down, not already in flight; as many as there are permits.
    fn take_due(
        &self,
        entries: Vec<Meta>,
        permits: &Arc<Semaphore>,
    ) -> Vec<(String, OwnedSemaphorePermit)> {
        let now = unix_now();
        let instant = Instant::now();
        let mut cooldown = lock(&self.cooldown);
        cooldown.retain(|_, until| *until > instant);
        let mut busy = lock(&self.in_flight);
        let mut taken = Vec::new();
        for meta in entries {
            if !meta.due(now) || cooldown.contains_key(&meta.id) || busy.contains(&meta.id) {
                continue;
            }
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                break;
            };
            busy.insert(meta.id.clone());
            taken.push((meta.id, permit));
        }
        taken
    }

    /// One attempt on an entry taken by [`Queue::take_due`]; then the entry rests (the scan
    /// interval, or the first retry interval after an error) and is no longer in flight.
    async fn work_on(&self, id: String, connector: &Connector, names: &(String, String)) {
        let pause = match self.attempt(&id, connector, names).await {
            Ok(()) => self.cfg.scan_interval,
            Err(e) => {
                tracing::warn!(entry = %id, error = %e, "queue attempt failed");
                self.cfg.retry_initial
            }
        };
        lock(&self.cooldown).insert(id.clone(), Instant::now() + pause);
        lock(&self.in_flight).remove(&id);
    }

    /// Works on one entry: expiry or bounce request, one delivery attempt, the DSN owed.
    async fn attempt(
        &self,
        id: &str,
        connector: &Connector,
        names: &(String, String),
    ) -> io::Result<()> {
        let Some((claim, mut meta, content)) = self.claim(id).await? else {
            return Ok(());
        };
        let now = unix_now();
        if !meta.due(now) {
            return Ok(());
        }
        self.fail_if_returned_or_expired(&mut meta, now);
        let pending = |m: &Meta| m.pending().next().is_some();
        if pending(&meta) && meta.next_attempt <= now {
            self.try_delivery(&mut meta, connector, content.clone())
                .await;
        }
        let mut dsn_failed = false;
        if meta.unreported().next().is_some() {
            dsn_failed = !self.send_dsn(&mut meta, &content, connector, names).await;
        }
        if pending(&meta) {
            self.send_delay_dsn(&mut meta, &content, connector, names)
                .await;
        }
        if (pending(&meta) && meta.next_attempt <= now) || dsn_failed {
            meta.next_attempt =
                now + backoff(meta.attempts, self.cfg.retry_initial, self.cfg.retry_max).as_secs();
        }
        let finished = meta.finished();
        self.save(meta).await?;
        if finished {
            tracing::info!(entry = %id, "queue entry done");
        }
        drop(claim);
        self.log_counters();
        Ok(())
    }

    /// Claims entry `id` and reads it; None when another process holds it or it is gone.
    async fn claim(&self, id: &str) -> io::Result<Option<(Claim, Meta, Vec<u8>)>> {
        let dir = self.dir.clone();
        let id = id.to_string();
        blocking(move || {
            let Some(claim) = dir.claim(&id)? else {
                return Ok(None);
            };
            let Some(meta) = dir.read_meta(&id)? else {
                return Ok(None);
            };
            let content = dir.read_content(&id)?;
            Ok(Some((claim, meta, content)))
        })
        .await
    }

    /// Fails the waiting recipients of an entry the administrator bounced, or of one older
    /// than `max_age`.
    fn fail_if_returned_or_expired(&self, meta: &mut Meta, now: u64) {
        if meta.bounce_requested {
            meta.bounce_requested = false;
            fail_pending(
                meta,
                "550 5.0.0 Returned to the sender by the administrator",
            );
        } else if meta.pending().next().is_some()
            && now.saturating_sub(meta.created) >= self.cfg.max_age.as_secs()
        {
            let last = meta.last_reply.clone().unwrap_or_default();
            let n = fail_pending(
                meta,
                &format!("451 4.4.7 Delivery time expired; last reply: {last}"),
            );
            Counters::add(&self.counters.expired, n);
            tracing::warn!(entry = %meta.id, session = %meta.session, recipients = n, "queued copy expired");
        }
    }

    /// Writes the entry's new state durably, or removes it when nothing is left to do for it.
    async fn save(&self, meta: Meta) -> io::Result<()> {
        let dir = self.dir.clone();
        blocking(move || {
            if meta.finished() {
                dir.remove(&meta.id)
            } else {
                dir.write_meta(&meta)?;
                dir.sync_dir()
            }
        })
        .await
    }

    async fn try_delivery(&self, meta: &mut Meta, connector: &Connector, content: Vec<u8>) {
        meta.attempts = meta.attempts.saturating_add(1);
        Counters::add(&self.counters.retried, 1);
        let idx: Vec<usize> = (0..meta.recipients.len())
            .filter(|&i| meta.recipients[i].state == RcptState::Pending)
            .collect();
        let rcpts: Vec<PathWithParams> = idx
            .iter()
            .map(|&i| meta.recipients[i].path.to_path())
            .collect();
        let up = match connector.connect(meta.client.as_ref()).await {
            Ok(up) => up,
            Err(e) => {
                let line = format!("{} ({e})", reply_line(&crate::serve::replies::upstream(&e)));
                tracing::info!(entry = %meta.id, attempt = meta.attempts, error = %e, "queued copy: upstream unavailable");
                for &i in &idx {
                    meta.recipients[i].reply = Some(line.clone());
                }
                meta.last_reply = Some(line);
                return;
            }
        };
        let (verdicts, session) = deliver(
            up,
            &meta.sender.to_path(),
            &rcpts,
            &mut Spool::from_bytes(content),
            meta.client.as_ref(),
            &meta.id,
        )
        .await;
        let error = match session {
            Ok(up) => {
                up.quit().await;
                None
            }
            Err(e) => Some(e),
        };
        let (mut delivered, mut failed) = (0u64, 0u64);
        for (&i, v) in idx.iter().zip(&verdicts) {
            let r = &mut meta.recipients[i];
            r.reply = Some(reply_line(v.reply()));
            match v {
                Verdict::Delivered(_) => {
                    r.state = RcptState::Delivered;
                    delivered += 1;
                }
                Verdict::Permanent(_) => {
                    r.state = RcptState::Failed;
                    failed += 1;
                }
                Verdict::Temporary(_) => {}
            }
            meta.last_reply = r.reply.clone();
        }
        Counters::add(&self.counters.delivered, delivered);
        tracing::info!(entry = %meta.id, session = %meta.session, attempt = meta.attempts, delivered, failed,
            waiting = idx.len() as u64 - delivered - failed, last_reply = meta.last_reply.as_deref().unwrap_or(""),
            error = error.as_ref().map(ToString::to_string).unwrap_or_default(), "queue delivery attempt");
    }

    /// Sends the DSN owed for failed recipients; false when it must be tried again later.
    async fn send_dsn(
        &self,
        meta: &mut Meta,
        content: &[u8],
        connector: &Connector,
        names: &(String, String),
    ) -> bool {
        let idx: Vec<usize> = (0..meta.recipients.len())
            .filter(|&i| {
                let r = &meta.recipients[i];
                r.state == RcptState::Failed && !r.reported
            })
            .collect();
        let null_sender = meta.sender.address.is_empty();
        let (wanted, quiet): (Vec<usize>, Vec<usize>) = idx
            .into_iter()
            .partition(|&i| !null_sender && dsn::notify_failure(&meta.recipients[i]));
        for &i in &quiet {
            meta.recipients[i].reported = true;
            tracing::info!(entry = %meta.id, recipient = %meta.recipients[i].path.address,
                null_sender, "failed for good; no DSN (null sender or NOTIFY)");
        }
        if wanted.is_empty() {
            return true;
        }
        let done = self
            .send_report(meta, &wanted, Action::Failed, content, connector, names)
            .await;
        if done {
            for &i in &wanted {
                meta.recipients[i].reported = true;
            }
        }
        done
    }

    /// One "delayed" DSN per recipient that asked for it (NOTIFY=DELAY) once its copy has
    /// waited `delay_warning`. A failure to send it is retried at the next attempt.
    async fn send_delay_dsn(
        &self,
        meta: &mut Meta,
        content: &[u8],
        connector: &Connector,
        names: &(String, String),
    ) {
        let now = unix_now();
        if meta.sender.address.is_empty()
            || now.saturating_sub(meta.created) < self.cfg.delay_warning.as_secs()
        {
            return;
        }
        let wanted: Vec<usize> = (0..meta.recipients.len())
            .filter(|&i| {
                let r = &meta.recipients[i];
                r.state == RcptState::Pending && !r.delay_reported && dsn::notify_delay(r)
            })
            .collect();
        if wanted.is_empty() {
            return;
        }
        let action = Action::Delayed {
            retry_until: meta.created + self.cfg.max_age.as_secs(),
        };
        if self
            .send_report(meta, &wanted, action, content, connector, names)
            .await
        {
            for &i in &wanted {
                meta.recipients[i].delay_reported = true;
            }
        }
    }

    /// Builds and sends a DSN about recipients `idx` to the envelope sender, from `<>`. True
    /// when it is done with (accepted, or refused for good, or too old to keep trying).
    async fn send_report(
        &self,
        meta: &Meta,
        idx: &[usize],
        action: Action,
        content: &[u8],
        connector: &Connector,
        names: &(String, String),
    ) -> bool {
        let now = unix_now();
        let about: Vec<&super::Recipient> = idx.iter().map(|&i| &meta.recipients[i]).collect();
        let report = dsn::build(
            meta,
            &about,
            content,
            &DsnContext {
                hostname: &names.0,
                remote: &names.1,
                now,
                action,
            },
        );
        let outcome = send_notification(connector, meta, report).await;
        let kind = match action {
            Action::Failed => "failure",
            Action::Delayed { .. } => "delay",
        };
        match &outcome {
            Some(Verdict::Delivered(_)) => {
                if action == Action::Failed {
                    Counters::add(&self.counters.bounced, idx.len() as u64);
                }
                tracing::info!(entry = %meta.id, session = %meta.session, sender = %meta.sender.address, recipients = idx.len(), kind, "DSN sent");
                true
            }
            Some(Verdict::Permanent(r)) => {
                tracing::error!(entry = %meta.id, sender = %meta.sender.address, reply = %r, kind, "DSN refused for good; dropped");
                true
            }
            // Give up on a DSN that could not go out for twice the queue lifetime.
            _ if now.saturating_sub(meta.created) > 2 * self.cfg.max_age.as_secs() => {
                tracing::error!(entry = %meta.id, sender = %meta.sender.address, reply = ?r_of(&outcome), kind, "DSN undeliverable for too long; dropped");
                true
            }
            _ => {
                tracing::warn!(entry = %meta.id, reply = ?r_of(&outcome), kind, "DSN not sent; will retry");
                false
            }
        }
    }
}

/// Sends `report` from `<>` to the sender of the queued copy `meta`; the upstream's verdict
/// (None when the session ended before one).
async fn send_notification(connector: &Connector, meta: &Meta, report: Vec<u8>) -> Option<Verdict> {
    let mut mail = PathWithParams {
        address: String::new(),
        params: Vec::new(),
    };
    if report.iter().any(|&b| b >= 0x80) {
        mail.params.push(("BODY".into(), Some("8BITMIME".into())));
    }
    let to = PathWithParams {
        address: meta.sender.address.clone(),
        params: Vec::new(),
    };
    // A notification is sealgate's own mail: the upstream sees sealgate as its client.
    match connector.connect(None).await {
        Ok(up) => {
            let (v, session) = deliver(
                up,
                &mail,
                std::slice::from_ref(&to),
                &mut Spool::from_bytes(report),
                None,
                &meta.id,
            )
            .await;
            if let Ok(up) = session {
                up.quit().await;
            }
            v.into_iter().next()
        }
        Err(e) => Some(Verdict::Temporary(crate::serve::replies::upstream(&e))),
    }
}

/// Locks a mutex; a panic elsewhere while it was held does not make its map unusable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn r_of(v: &Option<Verdict>) -> Option<String> {
    v.as_ref().map(|v| reply_line(v.reply()))
}

/// Marks every pending recipient failed with `reply`; returns how many.
fn fail_pending(meta: &mut Meta, reply: &str) -> u64 {
    let mut n = 0;
    for r in &mut meta.recipients {
        if r.state == RcptState::Pending {
            r.state = RcptState::Failed;
            r.reply = Some(reply.to_string());
            n += 1;
        }
    }
    n
}
