//! What `serve` needs from the file system beyond the TLS material the sections loaded: the
//! S/MIME trust anchors parse, and the store, spool and queue directories can be written.

use std::path::Path;

use super::{Collector, Config, ConfigError};

impl Config {
    /// The trust anchors parse, the store belongs to this user (or would be created by it, see
    /// [`crate::store::owner`]), and the store and spool directories (or the directories they
    /// would be created in) can be written by this user. `check-config` and `serve` both come
    /// through here ([`Config::load`]), so a configuration that passes the check starts.
    pub(super) fn check_files(&self) -> Vec<ConfigError> {
        let mut c = Collector::default();
        if let Some(file) = &self.smime_trust_anchors {
            if let Err(e) = crate::store::x509::load_anchors_file(file) {
                c.push("smime.trust_anchors", e);
            }
        }
        // The owner first: root can write anywhere, yet serve would refuse a store that
        // belongs to another user (the service's), see store::owner.
        if let Err(e) = crate::store::check_owner(&self.store_path, None) {
            c.push("store.path", e.to_string());
        } else if let Err(e) = writable_dir(&self.store_path) {
            c.push("store.path", e);
        }
        if let Some(dir) = &self.spool_dir {
            if let Err(e) = writable_dir(dir) {
                c.push("server.spool_dir", e);
            }
        }
        if let Err(e) = writable_dir(&self.queue.dir) {
            c.push("queue.dir", e);
        }
        c.errors
    }
}

/// `dir` (or, when it does not exist yet, the nearest existing directory above it, where it
/// would be created) accepts a new file from this user. Probed by creating and removing a file:
/// permission bits alone do not tell (ACLs, read-only mounts, root without CAP_DAC_OVERRIDE).
fn writable_dir(dir: &Path) -> Result<(), String> {
    let mut existing = dir;
    while !existing.exists() {
        existing = match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
    }
    if !existing.is_dir() {
        return Err(format!("{} is not a directory", existing.display()));
    }
    tempfile::Builder::new()
        .prefix(".sealgate-check-")
        .tempfile_in(existing)
        .map(drop)
        .map_err(|e| {
            if existing == dir {
                format!("{}: cannot write here: {e}", dir.display())
            } else {
                format!(
                    "{}: cannot be created in {}: {e}",
                    dir.display(),
                    existing.display()
                )
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_to_be_created_is_checked_where_it_would_be() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(writable_dir(dir.path()), Ok(()));
        assert_eq!(writable_dir(&dir.path().join("a/b/c")), Ok(()));
        assert!(!dir.path().join("a").exists(), "the check creates nothing");
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        let err = writable_dir(&file.join("below")).unwrap_err();
        assert_eq!(err, format!("{} is not a directory", file.display()));
    }
}
