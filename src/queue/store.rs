//! The queue directory: one entry per queued copy, as two files.
//!
//! - `<id>.msg`: the copy exactly as it goes upstream (sealed when it is to be encrypted), 0600,
//!   written once and never changed.
//! - `<id>.json`: the envelope and delivery state ([`Meta`]). It is the commit point: an entry
//!   exists once its `.json` does. It is replaced atomically (temporary file, fsync, rename).
//!
//! A new entry: `.msg` written and fsync'd, `.json` written to a temporary name, fsync'd and
//! renamed, and the directory fsync'd once for the whole batch before the client gets 250.
//! A crash before the rename leaves an orphan `.msg` or temporary file, removed at the next start
//! (nobody was told 250 for it). An entry that cannot be read is moved into `corrupt/`.
//!
//! Claims: whoever works on an entry (a delivery, a `sealgate queue` command) holds an
//! exclusive `flock` on its `.msg`. The kernel drops it when the process dies, so a claim
//! never outlives a crash. The server holds `flock` on `.lock` for its life: one server per
//! directory.
//!
//! Everything here is blocking file I/O: call it off the async reactor.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

use super::Meta;

/// Largest `.json` accepted (a copy has at most `max_recipients` recipients of 512 octets).
const MAX_META: u64 = 16 * 1024 * 1024;

pub struct QueueDir {
    dir: PathBuf,
}

/// An exclusive claim on one entry; released when dropped (or when the process dies).
pub struct Claim {
    _file: File,
}

/// What [`QueueDir::scan`] found.
#[derive(Default)]
pub struct Scan {
    pub entries: Vec<Meta>,
    /// Entries moved into `corrupt/`, with why.
    pub corrupt: Vec<(String, String)>,
}

/// An entry id: what [`new_id`] makes. Anything else (`..`, `/`) is refused by the CLI and the
/// scanner, so an id never names a file outside the directory.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// A new, unique, sortable entry id: creation time, then randomness.
pub fn new_id(now: u64) -> String {
    format!("{now:011x}-{:016x}", rand::random::<u64>())
}

impl QueueDir {
    /// The directory, created (0700) if missing.
    pub fn open(dir: &Path) -> io::Result<QueueDir> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        Ok(QueueDir {
            dir: dir.to_path_buf(),
        })
    }

    /// Opens an existing directory without creating it (the CLI on a directory not yet made).
    pub fn existing(dir: &Path) -> io::Result<QueueDir> {
        if !dir.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: no queue directory", dir.display()),
            ));
        }
        Ok(QueueDir {
            dir: dir.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn msg(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.msg"))
    }

    fn meta(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn temp(&self, id: &str) -> PathBuf {
        self.dir.join(format!(".{id}.json.tmp"))
    }

    /// Held by the server for its life: a second server on the same directory would deliver
    /// the same entries.
    pub fn lock_exclusive(&self) -> io::Result<File> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(self.dir.join(".lock"))?;
        flock(&file, FlockOperation::NonBlockingLockExclusive).map_err(|_| {
            io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{}: used by another running sealgate", self.dir.display()),
            )
        })?;
        Ok(file)
    }

    /// Removes what a crash before a commit left behind: temporary files and `.msg` files
    /// without `.json`. Only at start, before anything writes new entries.
    pub fn recover(&self) -> io::Result<usize> {
        let mut removed = 0;
        for dirent in fs::read_dir(&self.dir)? {
            let name = dirent?.file_name();
            let Some(name) = name.to_str() else { continue };
            let orphan = if name.starts_with('.') && name.ends_with(".tmp") {
                true
            } else if let Some(id) = name.strip_suffix(".msg") {
                !self.meta(id).exists()
            } else {
                false
            };
            if orphan {
                tracing::info!(queue = %self.dir.display(), file = name, "removing an uncommitted queue file");
                fs::remove_file(self.dir.join(name))?;
                removed += 1;
            }
        }
        if removed > 0 {
            self.sync_dir()?;
        }
        Ok(removed)
    }

    /// Writes one new entry (content, then metadata) without the directory fsync: call
    /// [`QueueDir::sync_dir`] once after the batch. On error nothing of this entry remains.
    pub fn write_entry(&self, meta: &Meta, content: &[u8]) -> io::Result<()> {
        let result = self.write_entry_inner(meta, content);
        if result.is_err() {
            self.discard(&meta.id);
        }
        result
    }

    fn write_entry_inner(&self, meta: &Meta, content: &[u8]) -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(self.msg(&meta.id))?;
        f.write_all(content)?;
        f.sync_all()?;
        drop(f);
        self.write_meta(meta)
    }

    /// Replaces an entry's metadata atomically (temporary file, fsync, rename).
    pub fn write_meta(&self, meta: &Meta) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(meta).map_err(io::Error::other)?;
        let temp = self.temp(&meta.id);
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&temp, self.meta(&meta.id))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }

    /// Makes the renames and removals so far durable.
    pub fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    /// Removes an entry (best effort: used to undo a batch that could not be committed).
    pub fn discard(&self, id: &str) {
        let _ = fs::remove_file(self.meta(id));
        let _ = fs::remove_file(self.temp(id));
        let _ = fs::remove_file(self.msg(id));
    }

    /// Deletes an entry for good: the metadata first (the commit point), then the content.
    pub fn remove(&self, id: &str) -> io::Result<()> {
        match fs::remove_file(self.meta(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        match fs::remove_file(self.msg(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        self.sync_dir()
    }

    /// Claims an entry; `None` when someone else holds it or it is gone.
    pub fn claim(&self, id: &str) -> io::Result<Option<Claim>> {
        let file = match File::open(self.msg(id)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(Claim { _file: file })),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads one entry's metadata; `Ok(None)` when it does not exist (any more).
    pub fn read_meta(&self, id: &str) -> io::Result<Option<Meta>> {
        let path = self.meta(id);
        let bytes = match read_bounded(&path, MAX_META) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let meta: Meta = serde_json::from_slice(&bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        if meta.id != id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("names entry {:?}", meta.id),
            ));
        }
        if !self.msg(id).is_file() {
            // Deleted (metadata first, then content) between our two reads: gone, not corrupt.
            if !path.exists() {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "content file missing",
            ));
        }
        Ok(Some(meta))
    }

    /// The content of an entry.
    pub fn read_content(&self, id: &str) -> io::Result<Vec<u8>> {
        fs::read(self.msg(id))
    }

    /// Every committed entry, oldest first; unreadable ones are moved into `corrupt/` with a
    /// log line. An entry that cannot be opened (permissions) is skipped with a log line: one
    /// bad file never stops the queue.
    pub fn scan(&self) -> io::Result<Scan> {
        self.scan_with(true)
    }

    /// Like [`QueueDir::scan`] but changes nothing: corrupt entries are only reported (the
    /// CLI's `list`, which may run as another user than the server).
    pub fn scan_readonly(&self) -> io::Result<Scan> {
        self.scan_with(false)
    }

    fn scan_with(&self, move_corrupt: bool) -> io::Result<Scan> {
        let mut ids = Vec::new();
        for dirent in fs::read_dir(&self.dir)? {
            let name = dirent?.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(id) = name.strip_suffix(".json") {
                if !name.starts_with('.') {
                    ids.push(id.to_string());
                }
            }
        }
        ids.sort();
        let mut scan = Scan::default();
        for id in ids {
            let result = if valid_id(&id) {
                self.read_meta(&id)
            } else {
                Err(io::Error::new(io::ErrorKind::InvalidData, "not a queue id"))
            };
            match result {
                Ok(Some(meta)) => scan.entries.push(meta),
                Ok(None) => {}
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    let why = e.to_string();
                    if move_corrupt {
                        tracing::error!(queue = %self.dir.display(), entry = %id, error = %why, "corrupt queue entry moved aside into corrupt/");
                        self.move_aside(&id)?;
                    }
                    scan.corrupt.push((id, why));
                }
                Err(e) => {
                    tracing::error!(queue = %self.dir.display(), entry = %id, error = %e, "queue entry unreadable; skipped");
                }
            }
        }
        Ok(scan)
    }

    fn move_aside(&self, id: &str) -> io::Result<()> {
        let aside = self.dir.join("corrupt");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&aside)?;
        for name in [format!("{id}.json"), format!("{id}.msg")] {
            match fs::rename(self.dir.join(&name), aside.join(&name)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        self.sync_dir()
    }
}

fn read_bounded(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let f = File::open(path)?;
    let mut out = Vec::new();
    f.take(max + 1).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "too large"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{RcptState, Recipient, StoredPath, META_VERSION};
    use std::os::unix::fs::PermissionsExt;

    fn meta(id: &str) -> Meta {
        Meta {
            version: META_VERSION,
            id: id.into(),
            session: "s1".into(),
            sender: StoredPath {
                address: "a@example.org".into(),
                params: vec![("RET".into(), Some("HDRS".into()))],
            },
            recipients: vec![Recipient {
                path: StoredPath {
                    address: "b@example.net".into(),
                    params: vec![],
                },
                state: RcptState::Pending,
                reply: Some("451 4.3.0 later".into()),
                reported: false,
                delay_reported: false,
            }],
            encrypted: true,
            created: 1,
            attempts: 1,
            next_attempt: 2,
            last_reply: None,
            reason: "test".into(),
            size: 5,
            bounce_requested: false,
            client: None,
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != ".lock")
            .collect();
        v.sort();
        v
    }

    #[test]
    fn entries_round_trip_private_and_claimed_once() {
        let tmp = tempfile::tempdir().unwrap();
        let q = QueueDir::open(&tmp.path().join("q")).unwrap();
        let id = new_id(1);
        assert!(valid_id(&id));
        q.write_entry(&meta(&id), b"hello").unwrap();
        q.sync_dir().unwrap();
        let mode = fs::metadata(q.path().join(format!("{id}.msg")))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let scan = q.scan().unwrap();
        assert_eq!(scan.entries, vec![meta(&id)]);
        assert_eq!(q.read_content(&id).unwrap(), b"hello");
        let first = q.claim(&id).unwrap().expect("first claim");
        assert!(q.claim(&id).unwrap().is_none(), "claimed twice");
        drop(first);
        assert!(q.claim(&id).unwrap().is_some());
        q.remove(&id).unwrap();
        assert!(names(q.path()).is_empty());
        assert!(q.claim(&id).unwrap().is_none());
    }

    #[test]
    fn a_failed_write_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let q = QueueDir::open(tmp.path()).unwrap();
        let id = new_id(1);
        // The metadata's temporary name is taken by a directory: the write fails after the
        // content was written; neither file may remain.
        fs::create_dir(q.temp(&id)).unwrap();
        assert!(q.write_entry(&meta(&id), b"content").is_err());
        fs::remove_dir(q.temp(&id)).unwrap();
        assert!(names(q.path()).is_empty(), "{:?}", names(q.path()));
    }

    #[test]
    fn recovery_removes_uncommitted_files_only() {
        let tmp = tempfile::tempdir().unwrap();
        let q = QueueDir::open(tmp.path()).unwrap();
        let (a, b) = (new_id(1), new_id(2));
        q.write_entry(&meta(&a), b"kept").unwrap();
        fs::write(q.path().join(format!("{b}.msg")), b"orphan").unwrap();
        fs::write(q.temp(&b), b"{").unwrap();
        assert_eq!(q.recover().unwrap(), 2);
        assert_eq!(
            names(q.path()),
            vec![format!("{a}.json"), format!("{a}.msg")]
        );
    }

    #[test]
    fn corrupt_entries_are_moved_aside_never_a_crash() {
        let tmp = tempfile::tempdir().unwrap();
        let q = QueueDir::open(tmp.path()).unwrap();
        let good = new_id(1);
        q.write_entry(&meta(&good), b"ok").unwrap();
        let torn = new_id(2);
        q.write_entry(&meta(&torn), b"x").unwrap();
        let path = q.meta(&torn);
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let no_content = new_id(3);
        q.write_entry(&meta(&no_content), b"x").unwrap();
        fs::remove_file(q.msg(&no_content)).unwrap();
        let wrong_id = new_id(4);
        q.write_entry(&meta(&wrong_id), b"x").unwrap();
        fs::write(q.meta(&wrong_id), serde_json::to_vec(&meta(&good)).unwrap()).unwrap();
        fs::write(q.path().join("..evil.json"), b"{}").unwrap();
        fs::write(q.path().join("not-hex!.json"), b"{}").unwrap();

        let scan = q.scan().unwrap();
        assert_eq!(scan.entries.len(), 1);
        assert_eq!(scan.entries[0].id, good);
        let mut aside: Vec<String> = scan.corrupt.iter().map(|c| c.0.clone()).collect();
        aside.sort();
        let mut want = vec![torn.clone(), no_content, wrong_id, "not-hex!".to_string()];
        want.sort();
        assert_eq!(aside, want);
        assert!(q
            .path()
            .join("corrupt")
            .join(format!("{torn}.msg"))
            .exists());
        // A second scan finds only the good one and moves nothing.
        let again = q.scan().unwrap();
        assert_eq!(again.entries.len(), 1);
        assert!(again.corrupt.is_empty());
    }

    #[test]
    fn one_server_per_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let q = QueueDir::open(tmp.path()).unwrap();
        let held = q.lock_exclusive().unwrap();
        assert!(q.lock_exclusive().is_err());
        drop(held);
        assert!(q.lock_exclusive().is_ok());
    }
}
