//! Lenient reads for the commands that need only part of the file (`keys`, `queue`): they work
//! even when the relay part does not validate (e.g. certificates not installed yet).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::queue::default_queue_dir;
use super::{resolve, ConfigError, ConfigErrors, RawSmime, RawStore};

/// Reads only the sections a command needs (`T`), leniently. Returns them with the directory
/// the file's relative paths are relative to.
fn read_lenient<T: serde::de::DeserializeOwned>(path: &Path) -> Result<(T, PathBuf), ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| one_error(path, "file", e.to_string()))?;
    let partial: T =
        toml::from_str(&text).map_err(|e| one_error(path, "file", e.message().to_string()))?;
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    Ok((partial, base))
}

fn one_error(path: &Path, location: &str, message: String) -> ConfigErrors {
    ConfigErrors {
        file: path.to_path_buf(),
        errors: vec![ConfigError {
            location: location.into(),
            message,
        }],
    }
}

fn required_store(path: &Path, store: Option<RawStore>) -> Result<RawStore, ConfigErrors> {
    store.ok_or_else(|| one_error(path, "store", "missing [store] section with path".into()))
}

/// The queue directory named by a configuration file, read leniently (for `sealgate queue`).
pub fn queue_dir_from(path: &Path) -> Result<PathBuf, ConfigErrors> {
    #[derive(Deserialize)]
    struct Partial {
        store: Option<RawStore>,
        queue: Option<toml::Value>,
    }
    let (partial, base) = read_lenient::<Partial>(path)?;
    if let Some(dir) = partial
        .queue
        .as_ref()
        .and_then(|q| q.get("dir"))
        .and_then(|d| d.as_str())
    {
        return Ok(resolve(&base, Path::new(dir)));
    }
    let store = required_store(path, partial.store)?;
    Ok(default_queue_dir(&resolve(&base, &store.path)))
}

/// What the `keys` commands need: read leniently, so that key management works even when the
/// relay part of the file does not validate (e.g. certificates not installed yet).
pub struct StoreSettings {
    pub store_path: PathBuf,
    pub trust_anchors: Option<PathBuf>,
}

impl StoreSettings {
    pub fn load(path: &Path) -> Result<StoreSettings, ConfigErrors> {
        #[derive(Deserialize)]
        struct Partial {
            store: Option<RawStore>,
            #[serde(default)]
            smime: RawSmime,
        }
        let (partial, base) = read_lenient::<Partial>(path)?;
        let store = required_store(path, partial.store)?;
        Ok(StoreSettings {
            store_path: resolve(&base, &store.path),
            trust_anchors: partial.smime.trust_anchors.map(|a| resolve(&base, &a)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relay_part_need_not_validate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        // No [[listen]], no [upstream]: Config::load would refuse this file.
        std::fs::write(
            &path,
            "[store]\npath = \"data/store\"\n[smime]\ntrust_anchors = \"/etc/a.pem\"\n",
        )
        .unwrap();
        let settings = StoreSettings::load(&path).unwrap();
        assert_eq!(settings.store_path, dir.path().join("data/store"));
        assert_eq!(settings.trust_anchors, Some(PathBuf::from("/etc/a.pem")));
        assert_eq!(
            queue_dir_from(&path).unwrap(),
            dir.path().join("data/queue")
        );
        std::fs::write(&path, "[smime]\n").unwrap();
        let err = StoreSettings::load(&path).err().unwrap().to_string();
        assert_eq!(
            err,
            format!(
                "{}: store: missing [store] section with path\n",
                path.display()
            )
        );
        assert!(queue_dir_from(&path).is_err());
    }
}
