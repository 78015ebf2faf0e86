//! Configuration file (TOML): parsing, defaults and validation that reports every error at once.
//!
//! Relative paths in the file are resolved against the directory of the configuration file.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub mod netlist;
pub mod tls;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenTls {
    None,
    Starttls,
    Implicit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamTls {
    Starttls,
    Implicit,
}

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub address: SocketAddr,
    pub tls: ListenTls,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub require_tls: bool,
    /// Clients of this listener may be signed for without AUTH (e.g. the internal MTA's port).
    pub sign_without_auth: bool,
    /// Only these clients may connect (others get 554 at connect); None: any.
    pub allow_from: Option<crate::config::netlist::NetList>,
    /// A PROXY protocol header is expected first, from these addresses only.
    pub proxy: Option<(
        crate::serve::proxy_protocol::Version,
        crate::config::netlist::NetList,
    )>,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub host: String,
    pub port: u16,
    pub tls: UpstreamTls,
    pub ca_file: Option<PathBuf>,
    /// The name the upstream certificate must carry.
    pub server_name: String,
    /// Our name in EHLO to the upstream.
    pub helo_name: String,
    /// How the client's identity reaches the upstream (SECURITY.md I13).
    pub forward_client: crate::upstream::ForwardClient,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_connections: usize,
    pub max_command_line: usize,
    pub max_line_length: usize,
    pub max_errors: usize,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    pub upstream_timeout: Duration,
    pub connect_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Longest life of one client connection, however active.
    pub session_timeout: Duration,
    /// Message bytes kept in memory before spilling to a temporary file.
    pub memory_spool: usize,
    /// Bounds of MIME processing (header section, fields, nesting, parts).
    pub mime: crate::mime::Limits,
    /// Simultaneous connections from one client address.
    pub max_connections_per_ip: usize,
    /// Commands that make no progress (NOOP, RSET, VRFY, HELP, BDAT 0, repeated EHLO/HELO)
    /// tolerated between two messages.
    pub max_junk_commands: usize,
    /// Slowest message content accepted, in bytes per second over each `data_rate_window`.
    pub min_data_rate: u64,
    pub data_rate_window: Duration,
    /// Message bytes that planning and sealing may hold at once, over all sessions.
    pub max_sealing_memory: u64,
}

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

/// The queue directory when `[queue] dir` is not set: `queue` beside the key store.
pub fn default_queue_dir(store_path: &Path) -> PathBuf {
    match store_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.join("queue"),
        _ => PathBuf::from("queue"),
    }
}

/// Reads only the sections a command needs (`T`), leniently: key and queue commands work even
/// when the relay part of the file does not validate. Returns them with a resolver of the
/// file's relative paths.
fn read_lenient<T: serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<(T, impl Fn(&Path) -> PathBuf), ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| one_error(path, "file", e.to_string()))?;
    let partial: T =
        toml::from_str(&text).map_err(|e| one_error(path, "file", e.message().to_string()))?;
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let resolve = move |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    Ok((partial, resolve))
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

/// The queue directory named by a configuration file, read leniently (for `sealgate queue`).
pub fn queue_dir_from(path: &Path) -> Result<PathBuf, ConfigErrors> {
    #[derive(Deserialize)]
    struct Partial {
        store: Option<RawStore>,
        queue: Option<toml::Value>,
    }
    let (partial, resolve) = read_lenient::<Partial>(path)?;
    if let Some(dir) = partial
        .queue
        .as_ref()
        .and_then(|q| q.get("dir"))
        .and_then(|d| d.as_str())
    {
        return Ok(resolve(Path::new(dir)));
    }
    let store = partial
        .store
        .ok_or_else(|| one_error(path, "store", "missing [store] section with path".into()))?;
    Ok(default_queue_dir(&resolve(&store.path)))
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
        let (partial, resolve) = read_lenient::<Partial>(path)?;
        let store = partial
            .store
            .ok_or_else(|| one_error(path, "store", "missing [store] section with path".into()))?;
        Ok(StoreSettings {
            store_path: resolve(&store.path),
            trust_anchors: partial.smime.trust_anchors.as_deref().map(resolve),
        })
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    store: Option<RawStore>,
    #[serde(default)]
    listen: Vec<RawListen>,
    upstream: Option<RawUpstream>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    policy: crate::policy::RawPolicy,
    #[serde(default)]
    smime: RawSmime,
    #[serde(default)]
    queue: RawQueue,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    dir: Option<PathBuf>,
    retry_initial: Option<u64>,
    retry_max: Option<u64>,
    max_age: Option<u64>,
    concurrency: Option<u64>,
    scan_interval: Option<u64>,
    delay_warning: Option<u64>,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    address: String,
    tls: ListenTls,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    #[serde(default)]
    require_tls: bool,
    #[serde(default)]
    sign_without_auth: bool,
    allow_from: Option<Vec<String>>,
    proxy_protocol: Option<String>,
    proxy_from: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    address: String,
    tls: String,
    ca_file: Option<PathBuf>,
    server_name: Option<String>,
    helo_name: Option<String>,
    forward_client: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_message_size: Option<u64>,
    max_recipients: Option<usize>,
    max_connections: Option<usize>,
    max_command_line: Option<usize>,
    max_line_length: Option<usize>,
    max_errors: Option<usize>,
    command_timeout: Option<u64>,
    data_timeout: Option<u64>,
    upstream_timeout: Option<u64>,
    connect_timeout: Option<u64>,
    shutdown_grace: Option<u64>,
    session_timeout: Option<u64>,
    memory_spool: Option<usize>,
    max_header_bytes: Option<usize>,
    max_header_fields: Option<usize>,
    max_mime_depth: Option<usize>,
    max_mime_parts: Option<usize>,
    max_connections_per_ip: Option<usize>,
    max_junk_commands: Option<usize>,
    min_data_rate: Option<u64>,
    data_rate_window: Option<u64>,
    max_sealing_memory: Option<u64>,
}

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

    /// What `serve` needs from the file system beyond the TLS material `parse` already loaded:
    /// the trust anchors parse, the store belongs to this user (or would be created by it, see
    /// [`crate::store::owner`]), and the store and spool directories (or the directories they
    /// would be created in) can be written by this user. `check-config` and `serve` both come
    /// through here ([`Config::load`]), so a configuration that passes the check starts.
    fn check_files(&self) -> Vec<ConfigError> {
        let mut c = Collector { errors: Vec::new() };
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

    /// Parses configuration text; relative paths are taken relative to `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Config, Vec<ConfigError>> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let location = match e.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].lines().count().max(1);
                    format!("line {line}")
                }
                None => "file".into(),
            };
            vec![ConfigError {
                location,
                message: e.message().to_string(),
            }]
        })?;
        let mut c = Collector { errors: Vec::new() };
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };

        let hostname = raw.server.hostname.unwrap_or_else(system_hostname);
        if hostname.is_empty()
            || !hostname
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-.[]:".contains(ch))
        {
            c.push(
                "server.hostname",
                format!("not a valid host name: {hostname:?}"),
            );
        }

        let store_path = match raw.store {
            Some(s) => resolve(&s.path),
            None => {
                c.push("store", "missing [store] section with path");
                PathBuf::new()
            }
        };

        if raw.listen.is_empty() {
            c.push("listen", "at least one [[listen]] section is required");
        }
        let mut listeners = Vec::new();
        for (i, l) in raw.listen.into_iter().enumerate() {
            let at = format!("listen[{i}]");
            let address = match l.address.parse::<SocketAddr>() {
                Ok(a) => a,
                Err(_) => {
                    c.push(
                        format!("{at}.address"),
                        format!("not an IP:port address: {:?}", l.address),
                    );
                    continue;
                }
            };
            let cert = l.cert.as_deref().map(resolve);
            let key = l.key.as_deref().map(resolve);
            if l.tls == ListenTls::None {
                if l.require_tls {
                    c.push(
                        format!("{at}.require_tls"),
                        "require_tls needs tls = \"starttls\"",
                    );
                }
            } else {
                match (&cert, &key) {
                    (Some(cert), Some(key)) => {
                        if let Err(e) = tls::server_config(cert, key) {
                            c.push(format!("{at}.cert/key"), e.to_string());
                        }
                    }
                    _ => c.push(
                        at.clone(),
                        "cert and key are required unless tls = \"none\"",
                    ),
                }
            }
            let allow_from = match l
                .allow_from
                .as_deref()
                .map(crate::config::netlist::NetList::parse)
            {
                None => None,
                Some(Ok(list)) => Some(list),
                Some(Err(e)) => {
                    c.push(format!("{at}.allow_from"), e);
                    None
                }
            };
            if l.sign_without_auth && l.allow_from.is_none() {
                // Anyone who can connect could have mail signed in any sender's name (I8).
                c.push(
                    format!("{at}.sign_without_auth"),
                    "needs allow_from: the clients trusted to be signed for without AUTH",
                );
            }
            use crate::serve::proxy_protocol::Version;
            let version = match l.proxy_protocol.as_deref() {
                None | Some("off") => None,
                Some("v1") => Some(Version::V1),
                Some("v2") => Some(Version::V2),
                Some(other) => {
                    c.push(
                        format!("{at}.proxy_protocol"),
                        format!("{other:?}: must be \"v1\", \"v2\" or \"off\""),
                    );
                    None
                }
            };
            let proxy_from = match l
                .proxy_from
                .as_deref()
                .map(crate::config::netlist::NetList::parse)
            {
                None => None,
                Some(Ok(list)) => Some(list),
                Some(Err(e)) => {
                    c.push(format!("{at}.proxy_from"), e);
                    None
                }
            };
            let proxy = match (version, proxy_from, l.proxy_from.is_some()) {
                (Some(v), Some(from), _) => Some((v, from)),
                (Some(_), None, false) => {
                    // Anyone could claim any address (and pass allow_from, and XCLIENT).
                    c.push(
                        format!("{at}.proxy_from"),
                        "required with proxy_protocol: the load balancers' addresses",
                    );
                    None
                }
                (None, _, true) if matches!(l.proxy_protocol.as_deref(), None | Some("off")) => {
                    c.push(
                        format!("{at}.proxy_from"),
                        "set, but proxy_protocol is off (ambiguous: set proxy_protocol too)",
                    );
                    None
                }
                _ => None,
            };
            listeners.push(ListenerConfig {
                address,
                tls: l.tls,
                cert,
                key,
                require_tls: l.require_tls,
                sign_without_auth: l.sign_without_auth,
                allow_from,
                proxy,
            });
        }

        let upstream = match raw.upstream {
            None => {
                c.push("upstream", "missing [upstream] section");
                None
            }
            Some(u) => {
                let tls_mode = match u.tls.as_str() {
                    "starttls" => Some(UpstreamTls::Starttls),
                    "implicit" => Some(UpstreamTls::Implicit),
                    other => {
                        c.push(
                            "upstream.tls",
                            format!("{other:?}: must be \"starttls\" or \"implicit\" (TLS to the upstream is mandatory; there is no plaintext option)"),
                        );
                        None
                    }
                };
                let hostport = split_host_port(&u.address);
                if hostport.is_none() {
                    c.push(
                        "upstream.address",
                        format!("expected host:port, got {:?}", u.address),
                    );
                }
                let ca_file = u.ca_file.as_deref().map(resolve);
                if let Err(e) = tls::root_store(ca_file.as_deref()) {
                    c.push("upstream.ca_file", e.to_string());
                }
                use crate::upstream::ForwardClient;
                let forward_client = match u.forward_client.as_deref() {
                    None | Some("xclient") => Some(ForwardClient::Xclient),
                    Some("xforward") => Some(ForwardClient::Xforward),
                    Some("none") => Some(ForwardClient::None),
                    Some(other) => {
                        c.push(
                            "upstream.forward_client",
                            format!("{other:?}: must be \"xclient\", \"xforward\" or \"none\""),
                        );
                        None
                    }
                };
                match (tls_mode, hostport, forward_client) {
                    (Some(tls), Some((host, port)), Some(forward_client)) => {
                        let server_name = u.server_name.unwrap_or_else(|| host.clone());
                        if rustls_pki_types::ServerName::try_from(server_name.clone()).is_err() {
                            c.push(
                                "upstream.server_name",
                                format!("not a valid name: {server_name:?}"),
                            );
                        }
                        Some(UpstreamConfig {
                            host,
                            port,
                            tls,
                            ca_file,
                            server_name,
                            helo_name: u.helo_name.unwrap_or_else(|| hostname.clone()),
                            forward_client,
                        })
                    }
                    _ => None,
                }
            }
        };

        let l = raw.limits;
        let mut positive = |name: &str, v: Option<u64>, default: u64| -> u64 {
            match v {
                Some(0) => {
                    c.push(format!("limits.{name}"), "must be greater than 0");
                    default
                }
                Some(v) => v,
                None => default,
            }
        };
        let limits = Limits {
            max_message_size: positive("max_message_size", l.max_message_size, 50 * 1024 * 1024),
            max_recipients: positive("max_recipients", l.max_recipients.map(|v| v as u64), 1000)
                as usize,
            max_connections: positive("max_connections", l.max_connections.map(|v| v as u64), 1000)
                as usize,
            max_command_line: positive(
                "max_command_line",
                l.max_command_line.map(|v| v as u64),
                512,
            ) as usize,
            max_line_length: positive(
                "max_line_length",
                l.max_line_length.map(|v| v as u64),
                128 * 1024,
            ) as usize,
            max_errors: positive("max_errors", l.max_errors.map(|v| v as u64), 20) as usize,
            command_timeout: Duration::from_secs(positive(
                "command_timeout",
                l.command_timeout,
                300,
            )),
            data_timeout: Duration::from_secs(positive("data_timeout", l.data_timeout, 180)),
            upstream_timeout: Duration::from_secs(positive(
                "upstream_timeout",
                l.upstream_timeout,
                300,
            )),
            connect_timeout: Duration::from_secs(positive(
                "connect_timeout",
                l.connect_timeout,
                30,
            )),
            shutdown_grace: Duration::from_secs(positive("shutdown_grace", l.shutdown_grace, 30)),
            session_timeout: Duration::from_secs(positive(
                "session_timeout",
                l.session_timeout,
                3600,
            )),
            memory_spool: positive(
                "memory_spool",
                l.memory_spool.map(|v| v as u64),
                1024 * 1024,
            ) as usize,
            mime: {
                let d = crate::mime::Limits::default();
                let mut limit = |name: &str, v: Option<usize>, default: usize| {
                    positive(name, v.map(|v| v as u64), default as u64) as usize
                };
                crate::mime::Limits {
                    max_header_bytes: limit(
                        "max_header_bytes",
                        l.max_header_bytes,
                        d.max_header_bytes,
                    ),
                    max_header_fields: limit(
                        "max_header_fields",
                        l.max_header_fields,
                        d.max_header_fields,
                    ),
                    max_depth: limit("max_mime_depth", l.max_mime_depth, d.max_depth),
                    max_parts: limit("max_mime_parts", l.max_mime_parts, d.max_parts),
                }
            },
            max_connections_per_ip: positive(
                "max_connections_per_ip",
                l.max_connections_per_ip.map(|v| v as u64),
                20,
            ) as usize,
            max_junk_commands: positive(
                "max_junk_commands",
                l.max_junk_commands.map(|v| v as u64),
                100,
            ) as usize,
            // 0 turns the check off (a link known to be that slow).
            min_data_rate: l.min_data_rate.unwrap_or(1024),
            data_rate_window: Duration::from_secs(positive(
                "data_rate_window",
                l.data_rate_window,
                30,
            )),
            max_sealing_memory: positive(
                "max_sealing_memory",
                l.max_sealing_memory,
                4 * 1024 * 1024 * 1024,
            ),
        };
        if limits.max_sealing_memory < limits.max_message_size {
            c.push(
                "limits.max_sealing_memory",
                "must be at least max_message_size (one message must fit)",
            );
        }
        if limits.max_connections > 1_000_000 {
            c.push("limits.max_connections", "must be at most 1000000");
        }
        if limits.max_command_line < 512 {
            c.push(
                "limits.max_command_line",
                "must be at least 512 (RFC 5321 4.5.3.1.4)",
            );
        }

        let q = raw.queue;
        let mut positive = |name: &str, v: Option<u64>, default: u64| -> u64 {
            if v == Some(0) {
                c.push(format!("queue.{name}"), "must be greater than 0");
            }
            v.filter(|&v| v > 0).unwrap_or(default)
        };
        let queue = QueueConfig {
            dir: match &q.dir {
                Some(d) => resolve(d),
                None => default_queue_dir(&store_path),
            },
            retry_initial: Duration::from_secs(positive("retry_initial", q.retry_initial, 300)),
            retry_max: Duration::from_secs(positive("retry_max", q.retry_max, 4 * 3600)),
            max_age: Duration::from_secs(positive("max_age", q.max_age, 5 * 86_400)),
            concurrency: positive("concurrency", q.concurrency, 4) as usize,
            scan_interval: Duration::from_secs(positive("scan_interval", q.scan_interval, 5)),
            delay_warning: Duration::from_secs(positive(
                "delay_warning",
                q.delay_warning,
                4 * 3600,
            )),
        };
        if queue.retry_max < queue.retry_initial {
            c.push("queue.retry_max", "must be at least retry_initial");
        }

        let policy = match PolicyConfig::from_raw(raw.policy) {
            Ok(p) => p,
            Err(errors) => {
                for e in errors {
                    c.push(e.location, e.message);
                }
                PolicyConfig::default()
            }
        };

        match (c.errors.is_empty(), upstream) {
            (true, Some(upstream)) => Ok(Config {
                hostname,
                spool_dir: raw.server.spool_dir.as_deref().map(resolve),
                store_path,
                listeners,
                upstream,
                limits,
                policy,
                smime_trust_anchors: raw.smime.trust_anchors.as_deref().map(resolve),
                queue,
            }),
            _ => Err(c.errors),
        }
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

fn split_host_port(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port.parse().ok()?;
    if host.is_empty() {
        return None;
    }
    Some((host.to_string(), port))
}

fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        Config::parse(text, Path::new("/nonexistent"))
            .err()
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect()
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
    fn sign_without_auth_needs_allow_from() {
        let text = |extra: &str| {
            format!(
                "[store]\npath = \"s\"\n[[listen]]\naddress = \"127.0.0.1:25\"\ntls = \"none\"\n{extra}\n[upstream]\naddress = \"mx:25\"\ntls = \"starttls\"\n"
            )
        };
        let errs = errors(&text("sign_without_auth = true"));
        assert!(
            errs.iter()
                .any(|e| e.starts_with("listen[0].sign_without_auth: needs allow_from")),
            "{errs:?}"
        );
        let errs = errors(&text(
            "sign_without_auth = true\nallow_from = [\"10.0.0.0/8\", \"::1\"]",
        ));
        assert!(!errs.iter().any(|e| e.starts_with("listen[0]")), "{errs:?}");
        let errs = errors(&text("allow_from = [\"10.0.0.0/8\", \"nope\"]"));
        assert!(
            errs.iter()
                .any(|e| e.starts_with("listen[0].allow_from: \"nope\"")),
            "{errs:?}"
        );
        let errs = errors(&text("allow_from = []"));
        assert!(
            errs.iter().any(|e| e.starts_with("listen[0].allow_from")),
            "{errs:?}"
        );
    }

    #[test]
    fn proxy_protocol_needs_proxy_from_and_the_reverse() {
        let text = |extra: &str| {
            format!(
                "[store]\npath = \"s\"\n[[listen]]\naddress = \"127.0.0.1:25\"\ntls = \"none\"\n{extra}\n[upstream]\naddress = \"mx:25\"\ntls = \"starttls\"\n"
            )
        };
        let listen_errors = |extra: &str| {
            errors(&text(extra))
                .into_iter()
                .filter(|e| e.starts_with("listen[0]"))
                .collect::<Vec<_>>()
        };
        assert!(listen_errors("proxy_protocol = \"v2\"")[0].contains("proxy_from: required"));
        assert!(listen_errors("proxy_from = [\"10.0.0.1\"]")[0].contains("proxy_protocol is off"));
        assert!(
            listen_errors("proxy_protocol = \"v3\"\nproxy_from = [\"10.0.0.1\"]")[0]
                .contains("proxy_protocol")
        );
        assert!(listen_errors("proxy_protocol = \"v1\"\nproxy_from = [\"10.0.0.1\"]").is_empty());
        assert!(listen_errors("proxy_protocol = \"off\"").is_empty());
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
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), test_ca_pem()).unwrap();
        let text = r#"
            [store]
            path = "store"
            [[listen]]
            address = "127.0.0.1:2525"
            tls = "none"
            [upstream]
            address = "mx.example.net:25"
            tls = "starttls"
            ca_file = "ca.pem"
        "#;
        let cfg = Config::parse(text, dir.path()).unwrap();
        assert_eq!(cfg.upstream.server_name, "mx.example.net");
        assert_eq!(cfg.upstream.port, 25);
        assert_eq!(cfg.store_path, dir.path().join("store"));
        assert_eq!(cfg.limits.max_message_size, 52_428_800);
        assert_eq!(cfg.limits.max_command_line, 512);
        // Fail closed by default: the MTA must learn who the client is (SECURITY.md I13).
        assert_eq!(
            cfg.upstream.forward_client,
            crate::upstream::ForwardClient::Xclient
        );
    }

    #[test]
    fn queue_defaults_beside_the_store_and_checks_its_keys() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), test_ca_pem()).unwrap();
        let base = "[store]\npath = \"data/store\"\n[[listen]]\naddress = \"127.0.0.1:2525\"\ntls = \"none\"\n[upstream]\naddress = \"mx.example.net:25\"\ntls = \"starttls\"\nca_file = \"ca.pem\"\n";
        let cfg = Config::parse(base, dir.path()).unwrap();
        assert_eq!(cfg.queue.dir, dir.path().join("data/queue"));
        assert_eq!(cfg.queue.retry_initial, Duration::from_secs(300));
        assert_eq!(cfg.queue.max_age, Duration::from_secs(5 * 86_400));
        assert_eq!(cfg.queue.concurrency, 4);
        let path = dir.path().join("s.toml");
        std::fs::write(&path, base).unwrap();
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
            errs.contains("queue.retry_max") && errs.contains("queue.concurrency"),
            "{errs}"
        );
        std::fs::write(&path, custom).unwrap();
        assert_eq!(queue_dir_from(&path).unwrap(), PathBuf::from("/var/q"));
    }

    fn test_ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
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
