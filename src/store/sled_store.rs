//! [`KeyStore`] on sled 0.34 (kept behind the trait: sled is in maintenance only).
//!
//! Trees:
//! * `keys`: key id -> JSON [`KeyRecord`] (public part and metadata),
//! * `addresses`: `<address match key> NUL <key id>` -> empty (the index by address),
//! * `secrets`: key id -> secret (PKCS#8 DER or binary OpenPGP TSK),
//! * `cas`: key id -> empty, for X.509 CA certificates (intermediates for chain building).
//!
//! Every import and removal is one sled transaction over all trees, followed by `flush()`
//! before success is reported: after a crash the store holds the old or the new state, never
//! half of an import. The store directory is created (or tightened to) mode 0700 and its files
//! set to 0600 after every write.
//!
//! sled holds an exclusive lock on the directory while a process has the store open. A second
//! opener waits up to [`SledStore::open`]'s `lock_wait` for it and then fails with
//! [`StoreError::Locked`]. After every successful write the file `generation` in the store
//! directory is rewritten (a counter), so a serving process can notice a change cheaply.
//!
//! How a serving proxy sees imports without a restart (the "server re-reads on change"
//! choice): a `sealgate keys` command first creates the file [`WRITE_REQUEST`] in the store
//! directory, then waits (up to 10 s) for the lock, and removes the file once it holds the
//! lock. The server, before each lookup, checks for that file (one `stat`); when it exists it
//! drops its `SledStore`. Lookups made while the store is closed or locked fail temporarily
//! (the relay answers 4xx: fail closed). The next lookup after the command has exited
//! reopens the store (about 135 ms at 100,000 keys), and sees the new state.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use zeroize::Zeroizing;

use super::{
    openpgp, Address, Details, ImportReport, KeyId, KeyRecord, KeyStore, NewKey, StoreError,
};

/// File whose presence asks a serving process to close the store (see the module docs).
pub const WRITE_REQUEST: &str = "write-request";

/// Opens the store for a command (`sealgate keys`, `policy explain`) while a server may be
/// serving from it: [`WRITE_REQUEST`] asks the server to let go of the store for as long as
/// the open takes (up to `lock_wait`); the request is withdrawn once the command holds the
/// lock (or gave up), so the server reopens at its next lookup after the command exits.
pub fn open_for_command(path: &Path, lock_wait: Duration) -> Result<SledStore, StoreError> {
    let request = path.join(WRITE_REQUEST);
    let asked = path.is_dir() && std::fs::write(&request, b"").is_ok();
    let store = SledStore::open(path, lock_wait);
    if asked {
        let _ = std::fs::remove_file(&request);
    }
    store
}

/// The sled-backed key store.
pub struct SledStore {
    path: PathBuf,
    db: sled::Db,
    keys: sled::Tree,
    addresses: sled::Tree,
    secrets: sled::Tree,
    cas: sled::Tree,
    anchors: Option<Vec<Vec<u8>>>,
}

fn db_err(e: sled::Error) -> StoreError {
    StoreError::Db(e.to_string())
}

fn index_key(address_key: &str, id: &KeyId) -> Vec<u8> {
    let mut k = Vec::with_capacity(address_key.len() + 1 + id.as_str().len());
    k.extend_from_slice(address_key.as_bytes());
    k.push(0);
    k.extend_from_slice(id.as_str().as_bytes());
    k
}

fn address_keys(record: &KeyRecord) -> Vec<String> {
    record
        .addresses
        .iter()
        .filter_map(|a| Address::parse(a).ok())
        .map(|a| a.key().to_string())
        .collect()
}

fn decode(id: &[u8], v: &[u8]) -> Result<KeyRecord, StoreError> {
    serde_json::from_slice(v).map_err(|e| StoreError::Corrupt {
        id: String::from_utf8_lossy(id).into_owned(),
        reason: e.to_string(),
    })
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_: &Path, _: u32) -> std::io::Result<()> {
    Ok(())
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Sets directories under `dir` to 0700 and files to 0600.
fn tighten(dir: &Path) -> Result<(), StoreError> {
    set_mode(dir, 0o700).map_err(io_err(dir))?;
    let entries = std::fs::read_dir(dir).map_err(io_err(dir))?;
    for e in entries {
        let e = e.map_err(io_err(dir))?;
        let p = e.path();
        let ft = e.file_type().map_err(io_err(&p))?;
        if ft.is_dir() {
            tighten(&p)?;
        } else if ft.is_file() {
            set_mode(&p, 0o600).map_err(io_err(&p))?;
        }
    }
    Ok(())
}

impl SledStore {
    /// Opens (creating if needed) the store at `path`, waiting up to `lock_wait` when another
    /// process holds it.
    ///
    /// Refuses a store whose directory belongs to another user ([`super::owner`]).
    pub fn open(path: &Path, lock_wait: Duration) -> Result<Self, StoreError> {
        super::owner::check_owner(path, None)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(io_err(path))?;
        }
        #[cfg(not(unix))]
        std::fs::create_dir_all(path).map_err(io_err(path))?;
        set_mode(path, 0o700).map_err(io_err(path))?;
        let start = Instant::now();
        let db = loop {
            match sled::Config::new().path(path).open() {
                Ok(db) => break db,
                Err(sled::Error::Io(e)) if e.to_string().contains("lock") => {
                    if start.elapsed() >= lock_wait {
                        return Err(StoreError::Locked(path.display().to_string()));
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(db_err(e)),
            }
        };
        let tree = |n: &str| db.open_tree(n).map_err(db_err);
        let store = SledStore {
            keys: tree("keys")?,
            addresses: tree("addresses")?,
            secrets: tree("secrets")?,
            cas: tree("cas")?,
            db,
            path: path.to_path_buf(),
            anchors: None,
        };
        tighten(path)?;
        Ok(store)
    }

    /// Requires S/MIME recipient certificates to chain to these anchors (DER).
    pub fn with_trust_anchors(mut self, anchors: Option<Vec<Vec<u8>>>) -> Self {
        self.anchors = anchors;
        self
    }

    /// The store directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of stored keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is stored.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The change counter (see the module documentation); 0 for a store never written.
    pub fn generation(path: &Path) -> u64 {
        std::fs::read_to_string(path.join("generation"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    fn committed(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(db_err)?;
        let next = Self::generation(&self.path).wrapping_add(1);
        let tmp = self.path.join("generation.tmp");
        std::fs::write(&tmp, format!("{next}\n")).map_err(io_err(&tmp))?;
        let dst = self.path.join("generation");
        std::fs::rename(&tmp, &dst).map_err(io_err(&dst))?;
        tighten(&self.path)
    }
}

/// Combines a stored record with a newly imported key of the same id.
fn merge_into(old: Option<KeyRecord>, new: &NewKey) -> Result<KeyRecord, StoreError> {
    let mut rec = new.record.clone();
    let Some(old) = old else {
        return Ok(rec);
    };
    if let (Details::Openpgp(_), Details::Openpgp(_)) = (&old.details, &new.record.details) {
        let corrupt = |reason: String| StoreError::Corrupt {
            id: old.id.to_string(),
            reason,
        };
        let a = openpgp::from_bytes(&old.public).map_err(corrupt)?;
        let b = openpgp::from_bytes(&new.record.public).map_err(corrupt)?;
        let merged = openpgp::merge(a, b).map_err(corrupt)?;
        let merged = merged.strip_secret_key_material();
        let info = openpgp::info(&merged);
        rec.addresses = info.addresses.clone();
        rec.details = Details::Openpgp(info);
        rec.public = openpgp::public_bytes(&merged).map_err(corrupt)?;
    }
    rec.has_secret = old.has_secret || new.secret.is_some();
    if rec.chain.is_empty() {
        rec.chain = old.chain;
    }
    Ok(rec)
}

impl KeyStore for SledStore {
    fn import(&self, keys: Vec<NewKey>) -> Result<ImportReport, StoreError> {
        let result = (&self.keys, &self.addresses, &self.secrets, &self.cas).transaction(
            |(kt, at, st, ct)| {
                let mut report = ImportReport::default();
                for new in &keys {
                    let id = &new.record.id;
                    let old = match kt.get(id.as_str().as_bytes())? {
                        Some(v) => Some(
                            decode(id.as_str().as_bytes(), &v)
                                .map_err(ConflictableTransactionError::Abort)?,
                        ),
                        None => None,
                    };
                    if let Some(old) = &old {
                        for a in address_keys(old) {
                            at.remove(index_key(&a, id))?;
                        }
                    }
                    let existed = old.is_some();
                    let rec = merge_into(old, new).map_err(ConflictableTransactionError::Abort)?;
                    let json = serde_json::to_vec(&rec).map_err(|e| {
                        ConflictableTransactionError::Abort(StoreError::Db(e.to_string()))
                    })?;
                    kt.insert(id.as_str().as_bytes(), json)?;
                    for a in address_keys(&rec) {
                        at.insert(index_key(&a, id), &[][..])?;
                    }
                    if let Some(secret) = &new.secret {
                        st.insert(id.as_str().as_bytes(), secret.as_slice())?;
                    }
                    if rec.is_ca() {
                        ct.insert(id.as_str().as_bytes(), &[][..])?;
                    }
                    if !report.added.contains(id) && !report.updated.contains(id) {
                        if existed {
                            report.updated.push(id.clone());
                        } else {
                            report.added.push(id.clone());
                        }
                    }
                }
                Ok(report)
            },
        );
        let report = match result {
            Ok(r) => r,
            Err(TransactionError::Abort(e)) => return Err(e),
            Err(TransactionError::Storage(e)) => return Err(db_err(e)),
        };
        self.committed()?;
        Ok(report)
    }

    fn remove(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        let result = (&self.keys, &self.addresses, &self.secrets, &self.cas).transaction(
            |(kt, at, st, ct)| {
                let k = id.as_str().as_bytes();
                let Some(v) = kt.remove(k)? else {
                    return Ok(None);
                };
                let rec = decode(k, &v).map_err(ConflictableTransactionError::Abort)?;
                for a in address_keys(&rec) {
                    at.remove(index_key(&a, id))?;
                }
                st.remove(k)?;
                ct.remove(k)?;
                Ok(Some(rec))
            },
        );
        let removed = match result {
            Ok(r) => r,
            Err(TransactionError::Abort(e)) => return Err(e),
            Err(TransactionError::Storage(e)) => return Err(db_err(e)),
        };
        if removed.is_some() {
            self.committed()?;
        }
        Ok(removed)
    }

    fn get(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        let k = id.as_str().as_bytes();
        match self.keys.get(k).map_err(db_err)? {
            Some(v) => decode(k, &v).map(Some),
            None => Ok(None),
        }
    }

    fn ids_for(&self, address: &Address) -> Result<Vec<KeyId>, StoreError> {
        let mut prefix = address.key().as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.addresses.scan_prefix(&prefix) {
            let (k, _) = item.map_err(db_err)?;
            let id = std::str::from_utf8(&k[prefix.len()..])
                .ok()
                .and_then(KeyId::parse);
            if let Some(id) = id {
                out.push(id);
            }
        }
        Ok(out)
    }

    fn secret(&self, id: &KeyId) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        Ok(self
            .secrets
            .get(id.as_str().as_bytes())
            .map_err(db_err)?
            .map(|v| Zeroizing::new(v.to_vec())))
    }

    fn list(&self) -> Result<Vec<KeyRecord>, StoreError> {
        self.keys
            .iter()
            .map(|item| {
                let (k, v) = item.map_err(db_err)?;
                decode(&k, &v)
            })
            .collect()
    }

    fn find(&self, prefix: &str) -> Result<Vec<KeyId>, StoreError> {
        let q: String = prefix
            .chars()
            .filter(|c| !c.is_whitespace() && *c != ':')
            .collect::<String>()
            .to_ascii_lowercase();
        let (kind, q) = if let Some(r) = q.strip_prefix("x509") {
            (Some("x509"), r.to_string())
        } else if let Some(r) = q.strip_prefix("pgp") {
            (Some("pgp"), r.to_string())
        } else if let Some(r) = q.strip_prefix("0x") {
            (None, r.to_string())
        } else {
            (None, q)
        };
        if q.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for item in self.keys.iter().keys() {
            let k = item.map_err(db_err)?;
            let Some(id) = std::str::from_utf8(&k).ok().and_then(KeyId::parse) else {
                continue;
            };
            let (idkind, fpr) = id.as_str().split_once(':').unwrap_or(("", ""));
            if kind.is_some_and(|k| k != idkind) {
                continue;
            }
            let fpr = fpr.to_ascii_lowercase();
            let keyid_match = idkind == "pgp" && q.len() == 16 && fpr.ends_with(&q);
            if fpr.starts_with(&q) || keyid_match {
                out.push(id);
            }
        }
        Ok(out)
    }

    fn ca_certs(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut out = Vec::new();
        for item in self.cas.iter().keys() {
            let k = item.map_err(db_err)?;
            if let Some(v) = self.keys.get(&k).map_err(db_err)? {
                out.push(decode(&k, &v)?.public);
            }
        }
        Ok(out)
    }

    fn trust_anchors(&self) -> Option<&[Vec<u8>]> {
        self.anchors.as_deref()
    }
}
