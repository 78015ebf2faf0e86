//! `[upstream]`: the MTA mail is relayed to, always over verified TLS: one `address` or a list
//! tried in order (failover). The trust anchors (`ca_file`, or the system's) are loaded here, once,
//! into the rustls client configuration.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::{resolve, tls, Collector};
use crate::upstream::ForwardClient;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamTls {
    Starttls,
    Implicit,
}

/// One address of `[upstream] address`, with the name its certificate must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTarget {
    pub host: String,
    pub port: u16,
    /// `server_name` when set (for every address), else `host`.
    pub server_name: String,
}

impl fmt::Display for UpstreamTarget {
    /// `host:port`, with brackets around an IPv6 host.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Tried in this order until one gives a ready session; never empty.
    pub targets: Vec<UpstreamTarget>,
    pub tls: UpstreamTls,
    /// Verifies the upstream's chain against `ca_file` (or the system's roots); TLS >= 1.2.
    pub client_tls: Arc<rustls::ClientConfig>,
    /// Our name in EHLO to the upstream.
    pub helo_name: String,
    /// How the client's identity reaches the upstream (SECURITY.md I13).
    pub forward_client: ForwardClient,
}

impl UpstreamConfig {
    /// The first address: the one named in logs and reports when no session says otherwise.
    pub fn primary(&self) -> &UpstreamTarget {
        &self.targets[0]
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    /// `"host:port"` or a list of them.
    address: toml::Value,
    tls: String,
    ca_file: Option<PathBuf>,
    server_name: Option<String>,
    helo_name: Option<String>,
    forward_client: Option<String>,
}

/// `[upstream]`: required. `hostname` is our EHLO name unless `helo_name` says otherwise.
pub(super) fn section(
    raw: Option<RawUpstream>,
    hostname: &str,
    base: &Path,
    c: &mut Collector,
) -> Option<UpstreamConfig> {
    let Some(u) = raw else {
        c.push("upstream", "missing [upstream] section");
        return None;
    };
    let tls_mode = tls_mode(&u.tls, c);
    let addresses = addresses(&u.address, c);
    let ca_file = u.ca_file.map(|f| resolve(base, &f));
    let client_tls = tls::client_config(ca_file.as_deref())
        .map_err(|e| c.push("upstream.ca_file", e.to_string()))
        .ok();
    let forward_client = forward_client(u.forward_client.as_deref(), c);
    let targets = targets(addresses?, u.server_name.as_deref(), c);
    Some(UpstreamConfig {
        targets: targets?,
        tls: tls_mode?,
        client_tls: client_tls?,
        helo_name: u.helo_name.unwrap_or_else(|| hostname.to_string()),
        forward_client: forward_client?,
    })
}

/// `address`: one `"host:port"` or a non-empty list of them; every bad entry is reported.
fn addresses(value: &toml::Value, c: &mut Collector) -> Option<Vec<(String, u16)>> {
    let entries: Vec<(String, &toml::Value)> = match value {
        toml::Value::Array(list) if list.is_empty() => {
            c.push(
                "upstream.address",
                "empty list: at least one \"host:port\" is needed",
            );
            return None;
        }
        toml::Value::Array(list) => list
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("upstream.address[{i}]"), v))
            .collect(),
        one => vec![("upstream.address".into(), one)],
    };
    let count = entries.len();
    let mut out = Vec::new();
    for (at, entry) in entries {
        match entry.as_str().and_then(split_host_port) {
            Some(hostport) => out.push(hostport),
            None => c.push(at, format!("expected \"host:port\", got {entry}")),
        }
    }
    (out.len() == count).then_some(out)
}

/// Each address with the name to verify: `server_name` for all when set, else its own host.
fn targets(
    addresses: Vec<(String, u16)>,
    server_name: Option<&str>,
    c: &mut Collector,
) -> Option<Vec<UpstreamTarget>> {
    let targets: Vec<UpstreamTarget> = addresses
        .into_iter()
        .map(|(host, port)| UpstreamTarget {
            server_name: server_name.map_or_else(|| host.clone(), str::to_string),
            host,
            port,
        })
        .collect();
    let mut valid = true;
    for t in &targets {
        if rustls_pki_types::ServerName::try_from(t.server_name.clone()).is_err() {
            valid = false;
            if server_name.is_some() {
                let name = &t.server_name;
                c.push(
                    "upstream.server_name",
                    format!("not a valid name: {name:?}"),
                );
                break; // one name for all: reported once
            }
            c.push(
                "upstream.address",
                format!(
                    "host {:?} is not a name a certificate can show (set server_name)",
                    t.host
                ),
            );
        }
    }
    valid.then_some(targets)
}

fn tls_mode(mode: &str, c: &mut Collector) -> Option<UpstreamTls> {
    match mode {
        "starttls" => Some(UpstreamTls::Starttls),
        "implicit" => Some(UpstreamTls::Implicit),
        other => {
            c.push(
                "upstream.tls",
                format!("{other:?}: must be \"starttls\" or \"implicit\" (TLS to the upstream is mandatory; there is no plaintext option)"),
            );
            None
        }
    }
}

fn forward_client(value: Option<&str>, c: &mut Collector) -> Option<ForwardClient> {
    match value {
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
    }
}

/// `host:port`, `[v6]:port` or `v6:port` (the last colon separates the port).
fn split_host_port(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port.parse().ok()?;
    if host.is_empty() {
        return None;
    }
    Some((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{errors, valid};
    use super::super::Config;
    use super::*;

    #[test]
    fn host_port_forms() {
        let split = |a: &str| split_host_port(a);
        assert_eq!(split("mx.example:25"), Some(("mx.example".into(), 25)));
        assert_eq!(split("[::1]:465"), Some(("::1".into(), 465)));
        assert_eq!(split("mx.example"), None);
        assert_eq!(split(":25"), None);
        assert_eq!(split("mx.example:smtp"), None);
    }

    #[test]
    fn every_key_is_read() {
        let (dir, text) = valid("");
        let text = text.replace(
            "tls = \"starttls\"\nca_file",
            "tls = \"implicit\"\nserver_name = \"relay.example\"\nhelo_name = \"me.example\"\n\
             forward_client = \"xforward\"\nca_file",
        );
        let u = Config::parse(&text, dir.path()).unwrap().upstream;
        assert_eq!(u.targets, [target("mx.example.net", 25, "relay.example")]);
        assert_eq!(u.tls, UpstreamTls::Implicit);
        assert_eq!(u.helo_name, "me.example");
        assert_eq!(u.forward_client, ForwardClient::Xforward);
    }

    fn target(host: &str, port: u16, server_name: &str) -> UpstreamTarget {
        UpstreamTarget {
            host: host.into(),
            port,
            server_name: server_name.into(),
        }
    }

    /// The `[upstream]` of a valid file with `address = {address}` and `extra` lines.
    fn with_address(address: &str, extra: &str) -> Result<UpstreamConfig, Vec<String>> {
        let (dir, text) = valid(extra);
        let text = text.replace(
            "address = \"mx.example.net:25\"",
            &format!("address = {address}"),
        );
        Config::parse(&text, dir.path())
            .map(|c| c.upstream)
            .map_err(|e| e.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn a_list_of_addresses_is_tried_in_order() {
        let u = with_address(r#"["mx1.example:25", "[::1]:2525", "10.0.0.3:465"]"#, "").unwrap();
        assert_eq!(
            u.targets,
            [
                target("mx1.example", 25, "mx1.example"),
                target("::1", 2525, "::1"),
                target("10.0.0.3", 465, "10.0.0.3"),
            ]
        );
        assert_eq!(u.targets[1].to_string(), "[::1]:2525");
        assert_eq!(u.targets[2].to_string(), "10.0.0.3:465");
        // server_name, when set, is the name every address must show.
        let u = with_address(
            r#"["mx1.example:25", "mx2.example:25"]"#,
            "server_name = \"relay.example\"\n",
        )
        .unwrap();
        let names: Vec<_> = u.targets.iter().map(|t| t.server_name.as_str()).collect();
        assert_eq!(names, ["relay.example", "relay.example"]);
    }

    #[test]
    fn a_single_string_is_one_address() {
        let u = with_address(r#""mx.example:587""#, "").unwrap();
        assert_eq!(u.targets, [target("mx.example", 587, "mx.example")]);
        let u = with_address(r#"["mx.example:587"]"#, "").unwrap();
        assert_eq!(u.targets, [target("mx.example", 587, "mx.example")]);
    }

    #[test]
    fn bad_address_lists_are_named() {
        assert_eq!(
            with_address("[]", "").unwrap_err(),
            ["upstream.address: empty list: at least one \"host:port\" is needed"]
        );
        assert_eq!(
            with_address(r#"["mx1.example:25", "mx2.example", 25]"#, "").unwrap_err(),
            [
                "upstream.address[1]: expected \"host:port\", got \"mx2.example\"",
                "upstream.address[2]: expected \"host:port\", got 25",
            ]
        );
        assert_eq!(
            with_address("25", "").unwrap_err(),
            ["upstream.address: expected \"host:port\", got 25"]
        );
        assert_eq!(
            with_address(r#"["mx.example:25", "bad name:25"]"#, "").unwrap_err(),
            ["upstream.address: host \"bad name\" is not a name a certificate can show (set server_name)"]
        );
    }

    #[test]
    fn bad_values_are_named() {
        let errs = errors(
            "[upstream]\naddress = \"mx:25\"\ntls = \"starttls\"\nca_file = \"missing.pem\"\n\
             server_name = \"not a name\"\nforward_client = \"none\"\n",
        );
        let upstream: Vec<_> = errs.iter().filter(|e| e.starts_with("upstream")).collect();
        assert_eq!(
            upstream,
            [
                "upstream.ca_file: /nonexistent/missing.pem: No such file or directory (os error 2)",
                "upstream.server_name: not a valid name: \"not a name\"",
            ],
            "{errs:?}"
        );
        let errs = errors("[store]\npath = \"s\"\n");
        assert!(errs.contains(&"upstream: missing [upstream] section".to_string()));
    }
}
