//! `[upstream]`: the MTA mail is relayed to, always over verified TLS. The trust anchors
//! (`ca_file`, or the system's) are loaded here, once, into the rustls client configuration.

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

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub host: String,
    pub port: u16,
    pub tls: UpstreamTls,
    /// Verifies the upstream's chain against `ca_file` (or the system's roots); TLS >= 1.2.
    pub client_tls: Arc<rustls::ClientConfig>,
    /// The name the upstream certificate must carry.
    pub server_name: String,
    /// Our name in EHLO to the upstream.
    pub helo_name: String,
    /// How the client's identity reaches the upstream (SECURITY.md I13).
    pub forward_client: ForwardClient,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    address: String,
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
    let hostport = split_host_port(&u.address);
    if hostport.is_none() {
        c.push(
            "upstream.address",
            format!("expected host:port, got {:?}", u.address),
        );
    }
    let ca_file = u.ca_file.map(|f| resolve(base, &f));
    let client_tls = tls::client_config(ca_file.as_deref())
        .map_err(|e| c.push("upstream.ca_file", e.to_string()))
        .ok();
    let forward_client = forward_client(u.forward_client.as_deref(), c);
    let (tls, (host, port), forward_client) = (tls_mode?, hostport?, forward_client?);
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
        client_tls: client_tls?,
        server_name,
        helo_name: u.helo_name.unwrap_or_else(|| hostname.to_string()),
        forward_client,
    })
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
        assert_eq!((u.host.as_str(), u.port), ("mx.example.net", 25));
        assert_eq!(u.tls, UpstreamTls::Implicit);
        assert_eq!(u.server_name, "relay.example");
        assert_eq!(u.helo_name, "me.example");
        assert_eq!(u.forward_client, ForwardClient::Xforward);
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
