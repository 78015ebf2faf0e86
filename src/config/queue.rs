//! `[queue]`: where copies that could not be delivered on the client's session wait, and how
//! often they are retried.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{resolve, Collector};

/// The durable queue (`[queue]`): copies that could not be delivered on the client's session.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Default: `queue` next to the key store (`/var/lib/sealgate/store` -> `/var/lib/sealgate/queue`).
    pub dir: PathBuf,
    /// First retry after this; each later one waits twice as long, up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// A copy still undelivered after this long is returned to its sender (DSN).
    pub max_age: Duration,
    /// Deliveries from the queue at once (each its own upstream session).
    pub concurrency: usize,
    /// How often the directory is rescanned (entries due, `sealgate queue retry`/`bounce`).
    pub scan_interval: Duration,
    /// A recipient that asked for NOTIFY=DELAY gets one "delayed" DSN once its copy has
    /// waited this long.
    pub delay_warning: Duration,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQueue {
    dir: Option<PathBuf>,
    retry_initial: Option<u64>,
    retry_max: Option<u64>,
    max_age: Option<u64>,
    concurrency: Option<usize>,
    scan_interval: Option<u64>,
    delay_warning: Option<u64>,
}

/// The queue directory when `[queue] dir` is not set: `queue` beside the key store.
pub fn default_queue_dir(store_path: &Path) -> PathBuf {
    match store_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.join("queue"),
        _ => PathBuf::from("queue"),
    }
}

/// `[queue]`: every key optional; durations in seconds, all greater than 0.
pub(super) fn section(
    q: RawQueue,
    store_path: &Path,
    base: &Path,
    c: &mut Collector,
) -> QueueConfig {
    let mut p = c.positive("queue");
    let queue = QueueConfig {
        dir: match &q.dir {
            Some(d) => resolve(base, d),
            None => default_queue_dir(store_path),
        },
        retry_initial: p.secs("retry_initial", q.retry_initial, 300),
        retry_max: p.secs("retry_max", q.retry_max, 4 * 3600),
        max_age: p.secs("max_age", q.max_age, 5 * 86_400),
        concurrency: p.get("concurrency", q.concurrency, 4),
        scan_interval: p.secs("scan_interval", q.scan_interval, 5),
        delay_warning: p.secs("delay_warning", q.delay_warning, 4 * 3600),
    };
    if queue.retry_max < queue.retry_initial {
        c.push("queue.retry_max", "must be at least retry_initial");
    }
    queue
}

#[cfg(test)]
mod tests {
    use super::super::tests::{errors, valid};
    use super::super::{queue_dir_from, Config};
    use super::*;

    #[test]
    fn queue_defaults_beside_the_store_and_checks_its_keys() {
        let (dir, base) = valid("");
        let base = base.replace("path = \"store\"", "path = \"data/store\"");
        let cfg = Config::parse(&base, dir.path()).unwrap();
        assert_eq!(cfg.queue.dir, dir.path().join("data/queue"));
        assert_eq!(cfg.queue.retry_initial, Duration::from_secs(300));
        assert_eq!(cfg.queue.max_age, Duration::from_secs(5 * 86_400));
        assert_eq!(cfg.queue.concurrency, 4);
        let path = dir.path().join("s.toml");
        std::fs::write(&path, &base).unwrap();
        assert_eq!(
            queue_dir_from(&path).unwrap(),
            dir.path().join("data/queue")
        );
        let custom = format!("{base}[queue]\ndir = \"/var/q\"\nretry_initial = 60\nretry_max = 30\nconcurrency = 0\nbogus = 1\n");
        let errs = errors(&custom).join("\n");
        assert!(errs.contains("bogus"), "{errs}");
        let custom = custom.replace("bogus = 1\n", "");
        let errs = errors(&custom).join("\n");
        assert!(
            errs.contains("queue.retry_max: must be at least retry_initial")
                && errs.contains("queue.concurrency: must be greater than 0"),
            "{errs}"
        );
        std::fs::write(&path, custom).unwrap();
        assert_eq!(queue_dir_from(&path).unwrap(), PathBuf::from("/var/q"));
    }

    #[test]
    fn every_key_is_read() {
        let (dir, base) = valid(
            "[queue]\ndir = \"q\"\nretry_initial = 10\nretry_max = 20\nmax_age = 30\n\
             concurrency = 2\nscan_interval = 1\ndelay_warning = 40\n",
        );
        let q = Config::parse(&base, dir.path()).unwrap().queue;
        assert_eq!(q.dir, dir.path().join("q"));
        let secs = [
            q.retry_initial,
            q.retry_max,
            q.max_age,
            q.scan_interval,
            q.delay_warning,
        ];
        assert_eq!(secs.map(|d| d.as_secs()), [10, 20, 30, 1, 40]);
        assert_eq!(q.concurrency, 2);
        assert_eq!(
            default_queue_dir(Path::new("store")),
            PathBuf::from("queue")
        );
    }
}
