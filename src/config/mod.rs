//! Configuration file (TOML): one function per section, all reporting into one collector so
//! that every error shows at once. Relative paths are taken relative to the file's directory.
//!
//! Sections: `[server]`, `[store]` and `[smime]` here; `[[listen]]` in `listen.rs` (TLS material
//! loaded there, once), `[upstream]` in `upstream.rs`, `[limits]` in `limits.rs`, `[queue]` in
//! `queue.rs`, `[policy]` in [`crate::policy`]. `files.rs` checks what `serve` will write to;
//! `lenient.rs` reads the parts the `keys` and `queue` commands need.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod files;
mod lenient;
mod limits;
mod listen;
pub mod netlist;
mod queue;
pub mod tls;
mod upstream;

pub use lenient::{queue_dir_from, StoreSettings};
pub use limits::Limits;
pub use listen::{ListenerConfig, ListenerTls};
pub use queue::{default_queue_dir, QueueConfig};
pub use upstream::{UpstreamConfig, UpstreamTarget, UpstreamTls};

use crate::policy::PolicyConfig;

/// One problem in a configuration file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub location: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// All the problems found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    pub file: PathBuf,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.errors {
            writeln!(f, "{}: {e}", self.file.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A validated configuration. Its listener and upstream configurations hold the TLS material
/// already loaded (rustls configurations), so serving does not read those files again.
#[derive(Debug, Clone)]
pub struct Config {
    pub hostname: String,
    pub spool_dir: Option<PathBuf>,
    pub store_path: PathBuf,
    pub listeners: Vec<ListenerConfig>,
    pub upstream: UpstreamConfig,
    pub limits: Limits,
    pub policy: PolicyConfig,
    /// Recipient certificates must chain to these (PEM); None: trusted as imported.
    pub smime_trust_anchors: Option<PathBuf>,
    pub queue: QueueConfig,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    store: Option<RawStore>,
    #[serde(default)]
    listen: Vec<listen::RawListen>,
    upstream: Option<upstream::RawUpstream>,
    #[serde(default)]
    limits: limits::RawLimits,
    #[serde(default)]
    policy: crate::policy::RawPolicy,
    #[serde(default)]
    smime: RawSmime,
    #[serde(default)]
    queue: queue::RawQueue,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSmime {
    trust_anchors: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    hostname: Option<String>,
    spool_dir: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    path: PathBuf,
}

/// Where the section functions report: every problem is kept, checking goes on.
#[derive(Default)]
struct Collector {
    errors: Vec<ConfigError>,
}

impl Collector {
    fn push(&mut self, location: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            location: location.into(),
            message: message.into(),
        });
    }

    /// The keys of `section` that must be greater than 0 (counts, sizes, seconds).
    fn positive(&mut self, section: &'static str) -> Positive<'_> {
        Positive { section, c: self }
    }
}

/// Reads keys that must be greater than 0: a 0 is reported as `section.key` and the default
/// taken, so that the rest of the file is still checked.
struct Positive<'c> {
    section: &'static str,
    c: &'c mut Collector,
}

impl Positive<'_> {
    fn get<T: PartialEq + Default>(&mut self, key: &str, value: Option<T>, default: T) -> T {
        match value {
            Some(v) if v == T::default() => {
                self.c
                    .push(format!("{}.{key}", self.section), "must be greater than 0");
                default
            }
            Some(v) => v,
            None => default,
        }
    }

    fn secs(&mut self, key: &str, value: Option<u64>, default: u64) -> std::time::Duration {
        std::time::Duration::from_secs(self.get(key, value, default))
    }
}

/// A path from the file, relative to the file's directory `base` unless absolute.
fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

impl Config {
    /// Reads and validates a configuration file, loading the TLS material it names so that
    /// every problem shows up now rather than at the first connection.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let fail = |errors| ConfigErrors {
            file: path.to_path_buf(),
            errors,
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            fail(vec![ConfigError {
                location: "file".into(),
                message: e.to_string(),
            }])
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let config = Config::parse(&text, base).map_err(fail)?;
        let errors = config.check_files();
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(fail(errors))
        }
    }

    /// Parses configuration text; relative paths are taken relative to `base`. Each section is
    /// checked even when an earlier one failed, so one run lists every problem.
    pub fn parse(text: &str, base: &Path) -> Result<Config, Vec<ConfigError>> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| vec![syntax_error(text, &e)])?;
        let mut c = Collector::default();
        let hostname = server_hostname(raw.server.hostname, &mut c);
        let store_path = store_path(raw.store, base, &mut c);
        let listeners = listen::section(raw.listen, base, &mut c);
        let upstream = upstream::section(raw.upstream, &hostname, base, &mut c);
        let limits = limits::section(raw.limits, &mut c);
        let queue = queue::section(raw.queue, &store_path, base, &mut c);
        let policy = policy(raw.policy, &mut c);
        match (c.errors.is_empty(), upstream) {
            (true, Some(upstream)) => Ok(Config {
                hostname,
                spool_dir: raw.server.spool_dir.map(|d| resolve(base, &d)),
                store_path,
                listeners,
                upstream,
                limits,
                policy,
                smime_trust_anchors: raw.smime.trust_anchors.map(|a| resolve(base, &a)),
                queue,
            }),
            _ => Err(c.errors),
        }
    }
}

/// A TOML error, located by line when the parser knows where.
fn syntax_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let location = match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].lines().count().max(1);
            format!("line {line}")
        }
        None => "file".into(),
    };
    ConfigError {
        location,
        message: e.message().to_string(),
    }
}

/// `[server] hostname`: our name in the greeting and EHLO (default: the system's).
fn server_hostname(configured: Option<String>, c: &mut Collector) -> String {
    let hostname = configured.unwrap_or_else(system_hostname);
    let valid = !hostname.is_empty()
        && hostname
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-.[]:".contains(ch));
    if !valid {
        c.push(
            "server.hostname",
            format!("not a valid host name: {hostname:?}"),
        );
    }
    hostname
}

fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// `[store] path`: required.
fn store_path(store: Option<RawStore>, base: &Path, c: &mut Collector) -> PathBuf {
    match store {
        Some(s) => resolve(base, &s.path),
        None => {
            c.push("store", "missing [store] section with path");
            PathBuf::new()
        }
    }
}

/// `[policy]`, validated by the policy module; its errors join the others.
fn policy(raw: crate::policy::RawPolicy, c: &mut Collector) -> PolicyConfig {
    PolicyConfig::from_raw(raw).unwrap_or_else(|errors| {
        for e in errors {
            c.push(e.location, e.message);
        }
        PolicyConfig::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The errors `Config::parse` reports for `text`, as `location: message`.
    pub(super) fn errors(text: &str) -> Vec<String> {
        Config::parse(text, Path::new("/nonexistent"))
            .err()
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// A self-signed CA certificate (PEM), for `ca_file`.
    pub(super) fn test_ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    /// A directory with `ca.pem` and a valid file using it; `extra` is appended.
    pub(super) fn valid(extra: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), test_ca_pem()).unwrap();
        let text = format!(
            "[store]\npath = \"store\"\n[[listen]]\naddress = \"127.0.0.1:2525\"\ntls = \"none\"\n\
             [upstream]\naddress = \"mx.example.net:25\"\ntls = \"starttls\"\nca_file = \"ca.pem\"\n{extra}"
        );
        (dir, text)
    }

    #[test]
    fn reports_every_error_at_once() {
        let errs = errors(
            r#"
            [[listen]]
            address = "nope"
            tls = "none"
            [[listen]]
            address = "127.0.0.1:25"
            tls = "starttls"
            [upstream]
            address = "mx.example"
            tls = "none"
            forward_client = "maybe"
            [limits]
            max_recipients = 0
            [[policy.rule]]
            match = "a b"
            encrypt = "required"
            "#,
        );
        let joined = errs.join("\n");
        for needle in [
            "store: missing",
            "listen[0].address",
            "listen[1]: cert and key are required",
            "upstream.tls",
            "no plaintext option",
            "upstream.address",
            "upstream.forward_client",
            "limits.max_recipients",
            "policy.rule[0].match",
        ] {
            assert!(joined.contains(needle), "missing {needle:?} in\n{joined}");
        }
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let errs = errors("[store]\npath = \"x\"\n[upstream\n");
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("line 3"), "{errs:?}");
        let errs = errors("[store]\npath = \"x\"\nbogus = 1\n");
        assert!(errs[0].contains("bogus"), "{errs:?}");
    }

    #[test]
    fn minimal_valid_config_gets_defaults() {
        let (dir, text) = valid("");
        let cfg = Config::parse(&text, dir.path()).unwrap();
        let primary = cfg.upstream.primary();
        assert_eq!(
            (primary.server_name.as_str(), primary.port),
            ("mx.example.net", 25)
        );
        assert_eq!(cfg.store_path, dir.path().join("store"));
        assert_eq!(cfg.limits.max_message_size, 52_428_800);
        assert_eq!(cfg.limits.max_command_line, 512);
        assert_eq!(cfg.spool_dir, None);
        assert_eq!(cfg.smime_trust_anchors, None);
        // Fail closed by default: the MTA must learn who the client is (SECURITY.md I13).
        assert_eq!(
            cfg.upstream.forward_client,
            crate::upstream::ForwardClient::Xclient
        );
    }

    #[test]
    fn server_store_and_smime_sections() {
        let (dir, text) = valid(
            "[server]\nhostname = \"relay.example\"\nspool_dir = \"/var/spool/sg\"\n\
             [smime]\ntrust_anchors = \"anchors.pem\"\n",
        );
        let cfg = Config::parse(&text, dir.path()).unwrap();
        assert_eq!(cfg.hostname, "relay.example");
        assert_eq!(cfg.upstream.helo_name, "relay.example");
        assert_eq!(cfg.spool_dir, Some(PathBuf::from("/var/spool/sg")));
        assert_eq!(
            cfg.smime_trust_anchors,
            Some(dir.path().join("anchors.pem"))
        );
        for bad in ["", "a b", "relay_1.example"] {
            let errs = errors(&text.replace("relay.example", bad));
            assert!(
                errs.iter()
                    .any(|e| e
                        .starts_with(&format!("server.hostname: not a valid host name: {bad:?}"))),
                "{bad:?}: {errs:?}"
            );
        }
        let errs = errors(&text.replace("[store]\npath = \"store\"\n", ""));
        assert!(
            errs.contains(&"store: missing [store] section with path".to_string()),
            "{errs:?}"
        );
    }

    /// The production template documents every key: it parses, and the only complaints on a
    /// machine without its files are about those files.
    #[test]
    fn the_deploy_template_is_valid() {
        let text = include_str!("../../deploy/sealgate.toml");
        let errors = Config::parse(text, Path::new("/etc/sealgate"))
            .err()
            .unwrap_or_default();
        for e in &errors {
            assert!(
                e.location.ends_with("cert/key") || e.location.ends_with("ca_file"),
                "{e}"
            );
        }
    }
}
