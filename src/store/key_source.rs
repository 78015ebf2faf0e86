//! The key store as the transform's [`KeySource`] (what the relay and `policy explain` look
//! keys up through), with the store's hand-over protocol: sled allows
//! one process at a time, so when a `sealgate keys` command drops a `write-request` file in the
//! store, the server closes its handle (a watcher checks every 200 ms, and every lookup checks
//! too) and answers lookups with a temporary failure until the file is gone; then it reopens.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use der::Decode;
use x509_cert::Certificate;

use super::sled_store::WRITE_REQUEST;
use super::{Address, KeyStore, SledStore};
use crate::openpgp;
use crate::smime::SigningIdentity;
use crate::transform::{KeySource, KeysUnavailable, RecipientKeys, SenderKeys};

pub struct StoreKeys {
    path: PathBuf,
    anchors: Option<Vec<Vec<u8>>>,
    handle: Mutex<Option<SledStore>>,
    /// Parsed sender identities, by address: parsing an RSA private key for every message costs
    /// as much as signing it. Emptied whenever the store is handed to a key command (so a
    /// removed or replaced key is never used again) and entries live at most [`SENDER_TTL`].
    senders: Mutex<HashMap<String, (Instant, Arc<SenderKeys>)>>,
}

/// How long a parsed sender identity is reused without asking the store again.
const SENDER_TTL: Duration = Duration::from_secs(60);

/// How long a command waits for a serving process to let go of the store.
const COMMAND_LOCK_WAIT: Duration = Duration::from_secs(10);

impl StoreKeys {
    /// Opens the store now, so that a broken store shows at start-up. `anchors_file`: the PEM
    /// trust anchors recipient certificates must chain to (`[smime] trust_anchors`).
    pub fn open(path: PathBuf, anchors_file: Option<&Path>) -> Result<Arc<Self>, KeysUnavailable> {
        let keys = Self::new(path, anchors_file)?;
        keys.with_store(|_| Ok(()))?;
        Ok(keys)
    }

    /// Opens the store for a command (`policy explain`) while a server may be serving from
    /// it: the server is asked to let go for as long as the open takes
    /// ([`super::sled_store::open_for_command`]).
    pub fn open_for_command(
        path: PathBuf,
        anchors_file: Option<&Path>,
    ) -> Result<Arc<Self>, KeysUnavailable> {
        let keys = Self::new(path, anchors_file)?;
        let store = super::sled_store::open_for_command(&keys.path, COMMAND_LOCK_WAIT)
            .map_err(|e| KeysUnavailable(e.to_string()))?
            .with_trust_anchors(keys.anchors.clone());
        if let Ok(mut handle) = keys.handle.lock() {
            *handle = Some(store);
        }
        Ok(keys)
    }

    fn new(path: PathBuf, anchors_file: Option<&Path>) -> Result<Arc<Self>, KeysUnavailable> {
        let anchors = match anchors_file {
            None => None,
            Some(file) => Some(super::x509::load_anchors_file(file).map_err(KeysUnavailable)?),
        };
        Ok(Arc::new(StoreKeys {
            path,
            anchors,
            handle: Mutex::new(None),
            senders: Mutex::new(HashMap::new()),
        }))
    }

    /// Starts the watcher thread that releases the store when a key command asks for it.
    pub fn watch(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(200));
            let Some(keys) = weak.upgrade() else { return };
            keys.release_if_requested();
        });
    }

    fn release_if_requested(&self) -> bool {
        if self.path.join(WRITE_REQUEST).exists() {
            if let Ok(mut h) = self.handle.lock() {
                if h.take().is_some() {
                    tracing::info!(store = %self.path.display(), "key store released for a key command");
                }
            }
            if let Ok(mut cache) = self.senders.lock() {
                cache.clear();
            }
            return true;
        }
        false
    }

    fn with_store<T>(
        &self,
        f: impl FnOnce(&SledStore) -> Result<T, KeysUnavailable>,
    ) -> Result<T, KeysUnavailable> {
        if self.release_if_requested() {
            return Err(KeysUnavailable("being updated by a key command".into()));
        }
        let mut guard = self
            .handle
            .lock()
            .map_err(|_| KeysUnavailable("lock poisoned".into()))?;
        if guard.is_none() {
            let store = SledStore::open(&self.path, Duration::from_millis(500))
                .map_err(|e| KeysUnavailable(e.to_string()))?
                .with_trust_anchors(self.anchors.clone());
            *guard = Some(store);
        }
        match guard.as_ref() {
            Some(store) => f(store),
            None => Err(KeysUnavailable("not open".into())),
        }
    }
}

impl KeySource for StoreKeys {
    fn recipient(&self, address: &str, now: SystemTime) -> Result<RecipientKeys, KeysUnavailable> {
        let Ok(addr) = Address::parse(address) else {
            return Ok(RecipientKeys::default());
        };
        let lookup = self.with_store(|s| {
            s.lookup(&addr, now)
                .map_err(|e| KeysUnavailable(e.to_string()))
        })?;
        let mut keys = RecipientKeys::default();
        for c in &lookup.smime {
            match Certificate::from_der(&c.der) {
                Ok(cert) => keys.smime.push(cert),
                Err(e) => keys.unusable.push(format!("{}: {e}", c.id)),
            }
        }
        for c in lookup.openpgp {
            keys.openpgp
                .push(openpgp::Recipient::pinned(c.cert, address));
        }
        for (id, reasons) in &lookup.unusable {
            let why: Vec<String> = reasons.iter().map(ToString::to_string).collect();
            keys.unusable.push(format!("{id}: {}", why.join(", ")));
        }
        Ok(keys)
    }

    fn sender(&self, address: &str, now: SystemTime) -> Result<Arc<SenderKeys>, KeysUnavailable> {
        let Ok(addr) = Address::parse(address) else {
            return Ok(Arc::new(SenderKeys::default()));
        };
        let cache_key = addr.key().to_string();
        if let Some((at, keys)) = self
            .senders
            .lock()
            .ok()
            .and_then(|c| c.get(&cache_key).cloned())
        {
            if at.elapsed() < SENDER_TTL && !self.release_if_requested() {
                return Ok(keys);
            }
        }
        let found = self.with_store(|s| {
            s.signing_identity(&addr, now)
                .map_err(|e| KeysUnavailable(e.to_string()))
        })?;
        let mut keys = SenderKeys::default();
        for signer in &found.smime {
            let chain: Result<Vec<Certificate>, _> = std::iter::once(&signer.cert)
                .chain(signer.chain.iter())
                .map(|d| Certificate::from_der(d))
                .collect();
            match chain.map(|c| SigningIdentity::from_pkcs8_der(c, &signer.key)) {
                Ok(Ok(id)) => {
                    keys.smime = Some(id);
                    break;
                }
                Ok(Err(e)) => {
                    tracing::warn!(id = %signer.id, error = %e, "S/MIME signing identity unusable")
                }
                Err(e) => {
                    tracing::warn!(id = %signer.id, error = %e, "S/MIME signing certificate unreadable")
                }
            }
        }
        for signer in found.openpgp {
            match openpgp::SigningKey::from_cert(signer.tsk, now) {
                Ok(key) => {
                    keys.openpgp = Some(key);
                    break;
                }
                Err(e) => {
                    tracing::warn!(id = %signer.id, error = %e, "OpenPGP signing key unusable")
                }
            }
        }
        let keys = Arc::new(keys);
        if let Ok(mut cache) = self.senders.lock() {
            cache.insert(cache_key, (Instant::now(), keys.clone()));
        }
        Ok(keys)
    }
}
