//! The durable queue: copies that the client's upstream session could not deliver after an
//! earlier copy of the same message was accepted. sealgate takes responsibility for them once
//! (SECURITY.md I4: they are on disk, fsync'd, before the client gets 250), retries them with
//! exponential back-off over its own verified-TLS upstream sessions, and returns what fails for
//! good to the sender as a DSN (RFC 3461, RFC 3464).
//!
//! - [`store`]: the directory format, crash recovery, claims.
//! - [`deliver`]: one upstream transaction with a verdict per recipient.
//! - [`dsn`]: the delivery status notification.
//! - [`runner`]: the task `serve` starts.
//! - [`cli`]: `sealgate queue ...`.

pub mod deliver;
pub mod dsn;
pub mod runner;
pub mod store;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::smtp::command::PathWithParams;
use crate::smtp::Reply;

pub use deliver::{deliver, Verdict};
pub use runner::Queue;
pub use store::QueueDir;

/// The format of `<id>.json`.
pub const META_VERSION: u32 = 1;

/// A path with its ESMTP parameters, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPath {
    pub address: String,
    #[serde(default)]
    pub params: Vec<(String, Option<String>)>,
}

impl From<&PathWithParams> for StoredPath {
    fn from(p: &PathWithParams) -> Self {
        StoredPath {
            address: p.address.clone(),
            params: p.params.clone(),
        }
    }
}

impl StoredPath {
    pub fn to_path(&self) -> PathWithParams {
        PathWithParams {
            address: self.address.clone(),
            params: self.params.clone(),
        }
    }

    pub fn param(&self, keyword: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(keyword))
            .and_then(|(_, v)| v.as_deref())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RcptState {
    /// Still to be delivered.
    Pending,
    /// Failed for good (5xx, expiry, bounced by the administrator): a DSN is owed.
    Failed,
    /// Accepted by the upstream.
    Delivered,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub path: StoredPath,
    pub state: RcptState,
    /// The last reply concerning this recipient, e.g. `451 4.3.0 try later`.
    #[serde(default)]
    pub reply: Option<String>,
    /// A failure already reported by DSN, or one that needs none (NOTIFY, null sender).
    #[serde(default)]
    pub reported: bool,
    /// A "delayed" DSN went out for this recipient (NOTIFY=DELAY), or none is wanted.
    #[serde(default)]
    pub delay_reported: bool,
}

/// One queued copy: its envelope and delivery state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub version: u32,
    pub id: String,
    /// The client session the copy came from (to follow it in the log).
    pub session: String,
    /// MAIL FROM with its parameters (RET, ENVID, BODY, SMTPUTF8; never SIZE).
    pub sender: StoredPath,
    pub recipients: Vec<Recipient>,
    /// The copy is encrypted (its content is sealed; a DSN returns only its outer headers).
    pub encrypted: bool,
    /// Seconds since the epoch.
    pub created: u64,
    pub attempts: u32,
    pub next_attempt: u64,
    #[serde(default)]
    pub last_reply: Option<String>,
    /// Why the copy was queued.
    pub reason: String,
    pub size: u64,
    /// `sealgate queue bounce`: return it to the sender now.
    #[serde(default)]
    pub bounce_requested: bool,
    /// The client the copy came from, told to the upstream again at each attempt (XCLIENT /
    /// XFORWARD, SECURITY.md I13). None (entries written before it was recorded): the
    /// upstream sees sealgate.
    #[serde(default)]
    pub client: Option<crate::upstream::ClientIdentity>,
}

impl Meta {
    pub fn pending(&self) -> impl Iterator<Item = &Recipient> {
        self.recipients
            .iter()
            .filter(|r| r.state == RcptState::Pending)
    }

    /// Failed recipients whose DSN has not gone out yet.
    pub fn unreported(&self) -> impl Iterator<Item = &Recipient> {
        self.recipients
            .iter()
            .filter(|r| r.state == RcptState::Failed && !r.reported)
    }

    /// Nothing left to deliver or report: the entry can go.
    pub fn finished(&self) -> bool {
        self.pending().next().is_none() && self.unreported().next().is_none()
    }

    /// Work to do now: a delivery or a DSN whose time has come, or a bounce request. A DSN
    /// that could not go out waits like a delivery (no hot loop while the upstream is down).
    pub fn due(&self, now: u64) -> bool {
        self.bounce_requested || (!self.finished() && self.next_attempt <= now)
    }
}

/// The wait before retry number `attempts + 1` (RFC 5321 4.5.4.1): `initial`, doubling,
/// never more than `max`.
pub fn backoff(attempts: u32, initial: Duration, max: Duration) -> Duration {
    let factor = 1u32
        .checked_shl(attempts.saturating_sub(1))
        .unwrap_or(u32::MAX);
    initial.saturating_mul(factor).min(max)
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A reply in one line, as stored and as shown in a DSN's Diagnostic-Code.
pub fn reply_line(reply: &Reply) -> String {
    let text = String::from_utf8_lossy(&reply.to_bytes())
        .lines()
        .map(|l| l.get(4..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join(" ");
    format!("{} {}", reply.code(), text.trim())
}

/// The numbers the issue asks to expose (logged with every change; metrics come later).
#[derive(Default, Debug)]
pub struct Counters {
    pub queued: AtomicU64,
    pub retried: AtomicU64,
    pub delivered: AtomicU64,
    pub bounced: AtomicU64,
    pub expired: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> [(&'static str, u64); 5] {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("queued", get(&self.queued)),
            ("retried", get(&self.retried)),
            ("delivered", get(&self.delivered)),
            ("bounced", get(&self.bounced)),
            ("expired", get(&self.expired)),
        ]
    }
}

/// Decodes RFC 3461 xtext (`+HH` escapes). Invalid escapes are kept as written.
pub fn xtext_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'+' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_initial_up_to_max() {
        let (i, m) = (Duration::from_secs(300), Duration::from_secs(3600));
        let got: Vec<u64> = (1..=6).map(|a| backoff(a, i, m).as_secs()).collect();
        assert_eq!(got, [300, 600, 1200, 2400, 3600, 3600]);
        assert_eq!(backoff(0, i, m).as_secs(), 300);
        assert_eq!(backoff(u32::MAX, i, m), m);
    }

    #[test]
    fn xtext_is_decoded() {
        assert_eq!(xtext_decode("rfc822;a+2Bb@x"), "rfc822;a+b@x");
        assert_eq!(xtext_decode("abc+3D"), "abc=");
        assert_eq!(xtext_decode("abc+"), "abc+");
        assert_eq!(xtext_decode("a+ZZb"), "a+ZZb");
    }
}
