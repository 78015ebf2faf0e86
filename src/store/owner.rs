//! Who may open a key store: the user who owns its directory.
//!
//! The service reads its store as the `sealgate` user. A `sealgate keys` command run as root on
//! that store would leave root-owned files behind (sled's snapshot and log files, the
//! `generation` counter) that the service then cannot open ("Permission denied"), and root
//! writing by name into a directory another user controls is an invitation to symlink tricks.
//! Fixing ownership afterwards (chown) would have the same problem and would have to chase
//! every file sled creates. So the store is opened only by the owner of its directory: anyone
//! else is refused before anything is written, with the command to run instead.
//!
//! * The store directory exists: its owner must be the effective user.
//! * It does not exist yet: root may not create it inside a directory owned by another user
//!   (the nearest existing ancestor decides). Other users are left to the file permissions.

use std::path::Path;

use super::StoreError;

/// The effective user id of this process.
#[cfg(unix)]
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid() has no preconditions, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}

/// The name of user `uid` from /etc/passwd, or `uid N` when it has none there.
pub fn user_name(uid: u32) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let id: u32 = fields.nth(1)?.parse().ok()?;
            (id == uid && !name.is_empty()).then(|| name.to_string())
        })
        .next()
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// What to tell the user: who owns the store (or the directory it would be created in), who
/// they are, and what to do instead.
fn not_owner_message(
    path: &Path,
    exists: bool,
    dir: &Path,
    owner: u32,
    me: u32,
    command: Option<&str>,
) -> String {
    let name = user_name(owner);
    // sudo takes a user without a name as #uid.
    let sudo_user = if name.starts_with("uid ") {
        format!("'#{owner}'")
    } else {
        name.clone()
    };
    let whose = if exists {
        format!("the key store {} belongs to {name}", path.display())
    } else {
        format!(
            "the key store {} would be created in {}, which belongs to {name}",
            path.display(),
            dir.display()
        )
    };
    let me_name = user_name(me);
    let run = match command {
        Some(c) => format!("sealgate {c} ..."),
        None => "sealgate ...".to_string(),
    };
    if me == 0 {
        format!(
            "{whose}, but this runs as root: files it wrote there could not be read by the \
             service. Run it as the store's owner instead, e.g. `sudo -u {sudo_user} {run}`"
        )
    } else {
        // Typically the service user facing a store that root made: ownership is the fix.
        format!(
            "{whose}, not to {me_name} who runs this: give the store to {me_name} \
             (e.g. `chown -R {me_name}: {}`), or run as {name} (`sudo -u {sudo_user} ...`)",
            path.display()
        )
    }
}

/// Refuses (with [`StoreError::NotOwner`]) to open the store at `path` as a user other than
/// the owner of its directory; see the module documentation. `command` (e.g. `"keys"`) makes
/// the suggested command line precise.
#[cfg(unix)]
pub fn check_owner(path: &Path, command: Option<&str>) -> Result<(), StoreError> {
    use std::os::unix::fs::MetadataExt;

    let me = effective_uid();
    let mut probe = Some(path);
    let mut exists = true;
    while let Some(p) = probe {
        let p = if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        };
        match std::fs::metadata(p) {
            Ok(meta) => {
                let owner = meta.uid();
                let refuse = if exists {
                    owner != me
                } else {
                    me == 0 && owner != 0
                };
                if !refuse {
                    return Ok(());
                }
                return Err(StoreError::NotOwner(not_owner_message(
                    path, exists, p, owner, me, command,
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                exists = false;
                // "." stands for the empty parent of a relative path: nothing above it.
                probe = if p == Path::new(".") {
                    None
                } else {
                    p.parent()
                };
            }
            // Anything else (e.g. no search permission): opening reports it.
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

/// Without Unix ownership there is nothing to check.
#[cfg(not(unix))]
pub fn check_owner(_path: &Path, _command: Option<&str>) -> Result<(), StoreError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_root_and_unknown_uids() {
        assert_eq!(user_name(0), "root");
        assert_eq!(user_name(4_000_000_000), "uid 4000000000");
    }

    #[test]
    fn own_directory_and_missing_store_below_it_are_fine() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(check_owner(dir.path(), None).is_ok());
        assert!(check_owner(&dir.path().join("a/b/store"), None).is_ok());
    }
}
